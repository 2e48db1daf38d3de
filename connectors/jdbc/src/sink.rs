//! `JdbcSink`: Confluent's JdbcSinkConnector for PostgreSQL and MariaDB/MySQL. Records become
//! rows by `insert.mode` and `pk.mode`; tables are created and evolved from record schemas;
//! tombstones delete. Each write is one transaction; with `offsets.storage=table` the Kafka
//! offsets are stored in the same transaction and answered on partition assignment, so every
//! record is applied exactly once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use sluice_connector_sdk::proto::{
    ConfigDef, ConfigType, FieldError, Importance, SinkRecord, TopicPartition, TopicPartitionOffset,
};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, ErrantRecordReporter, SinkConnector, SinkTask,
    SinkTaskContext, TaskError,
};

mod records;
mod sql;

use records::Op;
use sql::upsert_offset;

use crate::db::{self, ConnectionSettings, Db, TableId};
use crate::url::Dialect;
use crate::value::{Cell, NumericMapping};
use crate::{block_on, connection_defs, list};

const INSERT_MODE: &str = "insert.mode";
const PK_MODE: &str = "pk.mode";
const PK_FIELDS: &str = "pk.fields";
const FIELDS_WHITELIST: &str = "fields.whitelist";
const AUTO_CREATE: &str = "auto.create";
const AUTO_EVOLVE: &str = "auto.evolve";
const DELETE_ENABLED: &str = "delete.enabled";
const TABLE_NAME_FORMAT: &str = "table.name.format";
const BATCH_SIZE: &str = "batch.size";
const MAX_RETRIES: &str = "max.retries";
const RETRY_BACKOFF: &str = "retry.backoff.ms";
const DB_TIMEZONE: &str = "db.timezone";
const OFFSETS_STORAGE: &str = "offsets.storage";
const OFFSETS_TABLE: &str = "offsets.table.name";

const KAFKA_PK_DEFAULTS: [&str; 3] = ["__connect_topic", "__connect_partition", "__connect_offset"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InsertMode {
    Insert,
    Upsert,
    Update,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PkMode {
    None,
    Kafka,
    RecordKey,
    RecordValue,
}

pub struct JdbcSink;

impl Connector for JdbcSink {
    fn class_name(&self) -> &'static str {
        "JdbcSink"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "io.confluent.connect.jdbc.JdbcSinkConnector",
            "JdbcSinkConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Writes records to tables of PostgreSQL or MariaDB/MySQL, with Confluent's JDBC sink keys"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let mut defs = connection_defs();
        defs.extend([
            ConfigDefBuilder::new(INSERT_MODE, ConfigType::String)
                .default_value("insert")
                .importance(Importance::High)
                .valid_values(&["insert", "upsert", "update"])
                .doc("insert: INSERT; upsert: INSERT … ON CONFLICT (PostgreSQL) / ON DUPLICATE KEY UPDATE (MariaDB/MySQL); update: UPDATE")
                .build(),
            ConfigDefBuilder::new(PK_MODE, ConfigType::String)
                .default_value("none")
                .importance(Importance::High)
                .valid_values(&["none", "kafka", "record_key", "record_value"])
                .doc("Where the primary key comes from: nowhere, the record's topic/partition/offset, its key, or fields of its value")
                .build(),
            ConfigDefBuilder::new(PK_FIELDS, ConfigType::List)
                .default_value("")
                .doc("kafka: three column names (default __connect_topic,__connect_partition,__connect_offset); record_key: key fields (all if empty; one name for a primitive key); record_value: value fields (all if empty)")
                .build(),
            ConfigDefBuilder::new(FIELDS_WHITELIST, ConfigType::List)
                .default_value("")
                .doc("Value fields to write; empty for all")
                .build(),
            ConfigDefBuilder::new(AUTO_CREATE, ConfigType::Boolean)
                .default_value("false")
                .doc("CREATE TABLE from the record schema when the table is missing")
                .build(),
            ConfigDefBuilder::new(AUTO_EVOLVE, ConfigType::Boolean)
                .default_value("false")
                .doc("ALTER TABLE … ADD for fields the table lacks (optional fields, as nullable columns)")
                .build(),
            ConfigDefBuilder::new(DELETE_ENABLED, ConfigType::Boolean)
                .default_value("false")
                .doc("A record with a null value deletes the row of its key (needs pk.mode=record_key)")
                .build(),
            ConfigDefBuilder::new(TABLE_NAME_FORMAT, ConfigType::String)
                .default_value("${topic}")
                .doc("The table of a record; ${topic} is its topic; schema.table names a schema")
                .build(),
            ConfigDefBuilder::new(BATCH_SIZE, ConfigType::Int)
                .default_value("3000")
                .doc("Rows written per transaction at most")
                .build(),
            ConfigDefBuilder::new(MAX_RETRIES, ConfigType::Int)
                .default_value("10")
                .doc("Retries of a write that failed for a reason that may pass (connection lost, deadlock)")
                .build(),
            ConfigDefBuilder::new(RETRY_BACKOFF, ConfigType::Int)
                .default_value("3000")
                .doc("Milliseconds between retries")
                .build(),
            ConfigDefBuilder::new(DB_TIMEZONE, ConfigType::String)
                .default_value("UTC")
                .valid_values(&["UTC"])
                .doc("Time zone of timestamps written; UTC only")
                .build(),
            ConfigDefBuilder::new(OFFSETS_STORAGE, ConfigType::String)
                .default_value("kafka")
                .valid_values(&["kafka", "table"])
                .doc("kafka: offsets committed to the consumer group after each write (at least once); table: offsets stored in offsets.table.name in the same transaction as the rows and read back on assignment (exactly once)")
                .build(),
            ConfigDefBuilder::new(OFFSETS_TABLE, ConfigType::String)
                .default_value("sluice_sink_offsets")
                .doc("With offsets.storage=table: the table holding each connector's next offset per topic partition")
                .build(),
        ]);
        defs
    }

    fn validate(&self, config: &Config) -> Vec<FieldError> {
        let mut errors = config.validate_against(&self.config_defs());
        let error = |name: &str, message: &str| FieldError {
            name: name.into(),
            message: message.into(),
        };
        let pk = config.get_or(PK_MODE, "none");
        if config.get_or(DELETE_ENABLED, "false").trim() == "true" && pk != "record_key" {
            errors.push(error(
                DELETE_ENABLED,
                "deletes need pk.mode=record_key (the key names the row)",
            ));
        }
        if matches!(config.get_or(INSERT_MODE, "insert"), "upsert" | "update") && pk == "none" {
            errors.push(error(
                PK_MODE,
                "upsert and update need a primary key: set pk.mode to kafka, record_key or record_value",
            ));
        }
        if pk == "kafka" {
            let fields = list(config.get_or(PK_FIELDS, ""));
            if !fields.is_empty() && fields.len() != 3 {
                errors.push(error(
                    PK_FIELDS,
                    "with pk.mode=kafka, give three names (topic, partition, offset) or none",
                ));
            }
        }
        if errors.iter().any(|e| e.name.starts_with("connection.")) {
            return errors;
        }
        match ConnectionSettings::from_config(config) {
            Err(e) => errors.push(error(db::CONNECTION_URL, &e.message)),
            Ok(settings) => {
                let once = ConnectionSettings {
                    attempts: 1,
                    ..settings
                };
                if let Err(e) = block_on(async move { once.connect().await.map(drop) }) {
                    errors.push(error(db::CONNECTION_URL, &e.message));
                }
            }
        }
        errors
    }

    fn plan(&self, config: &Config, max_tasks: usize) -> Result<Vec<Config>, TaskError> {
        Ok(vec![config.clone(); max_tasks.max(1)])
    }
}

impl SinkConnector for JdbcSink {
    fn task(&self) -> Box<dyn SinkTask> {
        Box::new(JdbcSinkTask::default())
    }
}

#[derive(Default)]
struct JdbcSinkTask {
    connector: String,
    settings: Option<ConnectionSettings>,
    db: Option<Db>,
    errors: Option<ErrantRecordReporter>,
    insert: Option<InsertMode>,
    pk: Option<PkMode>,
    pk_fields: Vec<String>,
    whitelist: Vec<String>,
    auto_create: bool,
    auto_evolve: bool,
    delete_enabled: bool,
    table_format: String,
    batch_size: usize,
    max_retries: u32,
    backoff: Duration,
    offsets_table: Option<TableId>,
    /// With `offsets.storage=table`: the lock each connection takes first.
    lock: Option<String>,
    default_schema: String,
    /// Per table, its columns by lower-cased name → actual name.
    tables: HashMap<TableId, HashMap<String, String>>,
    buffer: Vec<Op>,
}

#[async_trait]
impl SinkTask for JdbcSinkTask {
    async fn start(&mut self, ctx: SinkTaskContext) -> Result<(), TaskError> {
        let config = &ctx.config;
        self.connector = ctx.connector_name.clone();
        self.errors = Some(ctx.errors.clone());
        self.insert = Some(match config.get_or(INSERT_MODE, "insert").trim() {
            "insert" => InsertMode::Insert,
            "upsert" => InsertMode::Upsert,
            "update" => InsertMode::Update,
            other => return Err(TaskError::fatal(format!("invalid {INSERT_MODE} {other:?}"))),
        });
        self.pk = Some(match config.get_or(PK_MODE, "none").trim() {
            "none" => PkMode::None,
            "kafka" => PkMode::Kafka,
            "record_key" => PkMode::RecordKey,
            "record_value" => PkMode::RecordValue,
            other => return Err(TaskError::fatal(format!("invalid {PK_MODE} {other:?}"))),
        });
        self.pk_fields = list(config.get_or(PK_FIELDS, ""));
        if self.pk == Some(PkMode::Kafka) && self.pk_fields.is_empty() {
            self.pk_fields = KAFKA_PK_DEFAULTS.iter().map(|s| s.to_string()).collect();
        }
        if self.pk == Some(PkMode::Kafka) && self.pk_fields.len() != 3 {
            return Err(TaskError::fatal(format!(
                "with pk.mode=kafka, {PK_FIELDS} names three columns (topic, partition, offset), not {:?}",
                self.pk_fields
            )));
        }
        self.whitelist = list(config.get_or(FIELDS_WHITELIST, ""));
        self.auto_create = config.parse_or(AUTO_CREATE, false)?;
        self.auto_evolve = config.parse_or(AUTO_EVOLVE, false)?;
        self.delete_enabled = config.parse_or(DELETE_ENABLED, false)?;
        self.table_format = config
            .get_or(TABLE_NAME_FORMAT, "${topic}")
            .trim()
            .to_string();
        self.batch_size = config.parse_or(BATCH_SIZE, 3000usize)?.max(1);
        self.max_retries = config.parse_or(MAX_RETRIES, 10u32)?;
        self.backoff = Duration::from_millis(config.parse_or(RETRY_BACKOFF, 3000u64)?);
        let settings = ConnectionSettings::from_config(config)?;
        let mut db = settings.connect().await?;
        self.default_schema = db.default_schema().await?;
        if config.get_or(OFFSETS_STORAGE, "kafka").trim() == "table" {
            let table = self.table_id(config.get_or(OFFSETS_TABLE, "sluice_sink_offsets"));
            let q = |c: &str| db.quote(c);
            let text = match db.dialect() {
                Dialect::Postgres => "TEXT",
                Dialect::MySql => "VARCHAR(255)",
            };
            db.execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} ({} {text} NOT NULL, {} {text} NOT NULL, {} INT NOT NULL, {} BIGINT NOT NULL, PRIMARY KEY ({}, {}, {}))",
                db.table(&table),
                q("connector"),
                q("topic"),
                q("partition"),
                q("next_offset"),
                q("connector"),
                q("topic"),
                q("partition"),
            ))
            .await?;
            self.offsets_table = Some(table);
            self.lock = Some(format!("{}/{}", ctx.connector_name, ctx.task_id));
        }
        self.settings = Some(settings);
        // Every connection of an exactly-once task holds the task's lock (see `connection`).
        drop(db);
        self.connection().await?;
        Ok(())
    }

    async fn open(
        &mut self,
        partitions: Vec<TopicPartition>,
    ) -> Result<Vec<TopicPartitionOffset>, TaskError> {
        let Some(table) = self.offsets_table.clone() else {
            return Ok(Vec::new());
        };
        let connector = self.connector.clone();
        let db = self.connection().await?;
        let sql = match db.dialect() {
            Dialect::Postgres => format!(
                "SELECT \"topic\", \"partition\", \"next_offset\" FROM {} WHERE \"connector\" = $1",
                db.table(&table)
            ),
            Dialect::MySql => format!(
                "SELECT `topic`, `partition`, `next_offset` FROM {} WHERE `connector` = ?",
                db.table(&table)
            ),
        };
        let rows = db
            .query(&sql, &[Cell::Text(connector)], NumericMapping::None)
            .await?;
        let stored: HashMap<(String, i64), i64> = rows
            .rows
            .into_iter()
            .filter_map(|r| match (r.first(), r.get(1), r.get(2)) {
                (Some(Cell::Text(t)), Some(Cell::Int(p)), Some(Cell::Int(o))) => {
                    Some(((t.clone(), *p), *o))
                }
                _ => None,
            })
            .collect();
        let found: Vec<TopicPartitionOffset> = partitions
            .into_iter()
            .filter_map(|tp| {
                stored
                    .get(&(tp.topic.clone(), i64::from(tp.partition)))
                    .map(|&offset| TopicPartitionOffset {
                        topic: tp.topic,
                        partition: tp.partition,
                        offset,
                    })
            })
            .collect();
        tracing::info!(
            "resuming from the offsets stored in {}: {}",
            table.qualified(),
            found
                .iter()
                .map(|o| format!("{}-{}@{}", o.topic, o.partition, o.offset))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(found)
    }

    async fn put(&mut self, records: Vec<SinkRecord>) -> Result<(), TaskError> {
        for record in records {
            match self.op(&record) {
                Ok(Some(op)) => self.buffer.push(op),
                Ok(None) => {}
                Err(message) => self.report(&record, message)?,
            }
            if self.buffer.len() >= self.batch_size {
                self.write(None).await?;
            }
        }
        // As Confluent's sink: what was put is written now (at most `batch.size` rows a
        // transaction), not held until the worker's next offset flush.
        self.write(None).await
    }

    async fn flush(
        &mut self,
        offsets: Vec<TopicPartitionOffset>,
    ) -> Result<Vec<TopicPartitionOffset>, TaskError> {
        self.write(Some(&offsets)).await?;
        Ok(offsets)
    }

    async fn stop(&mut self) -> Result<(), TaskError> {
        // What was put but not flushed is delivered again (its offsets were not committed).
        self.buffer.clear();
        Ok(())
    }
}

impl JdbcSinkTask {
    fn table_id(&self, name: &str) -> TableId {
        match name.split_once('.') {
            Some((schema, table)) => TableId {
                schema: schema.to_string(),
                name: table.to_string(),
            },
            None => TableId {
                schema: self.default_schema.clone(),
                name: name.to_string(),
            },
        }
    }

    async fn connection(&mut self) -> Result<&mut Db, TaskError> {
        if self.db.is_none() {
            let settings = self
                .settings
                .clone()
                .ok_or_else(|| TaskError::fatal("task not started"))?;
            let mut db = settings.connect().await?;
            if let Some(name) = &self.lock {
                // A previous instance of this task (its process not gone yet after a crash of
                // its worker) could still commit: wait until its connection ended.
                db.lock(name, Duration::from_secs(60)).await?;
            }
            self.db = Some(db);
        }
        self.db
            .as_mut()
            .ok_or_else(|| TaskError::fatal("no connection"))
    }

    /// A record the task cannot write goes to the worker's `errors.*` handling (the
    /// dead-letter queue, or failing the task when errors are not tolerated).
    fn report(&self, record: &SinkRecord, message: String) -> Result<(), TaskError> {
        let coordinates = format!(
            "record at (topic='{}',partition={},offset={})",
            record.topic, record.partition, record.offset
        );
        tracing::warn!("{coordinates}: {message}");
        match &self.errors {
            Some(errors) => {
                errors.sink_record(record, message);
                Ok(())
            }
            None => Err(TaskError::fatal(format!("{coordinates}: {message}"))),
        }
    }

    /// Writes the buffer (and, with `offsets.storage=table`, the offsets) in one transaction,
    /// retrying what may pass; when the database refuses a row, each row is written alone so
    /// that only the refused ones are reported.
    async fn write(&mut self, flushed: Option<&[TopicPartitionOffset]>) -> Result<(), TaskError> {
        if self.buffer.is_empty() && (flushed.is_none() || self.offsets_table.is_none()) {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.buffer);
        // A table that cannot be made ready fails the task (Confluent's behaviour): it is no
        // fault of single records.
        if let Err(e) = self.prepare_tables(&ops).await {
            self.buffer = ops;
            return Err(e);
        }
        let offsets = match flushed {
            Some(o) => o.to_vec(),
            None => next_offsets(&ops),
        };
        match self.write_with_retries(&ops, &offsets).await {
            Ok(()) => Ok(()),
            Err(e) if e.retriable => Err(e),
            Err(e) => {
                tracing::warn!(
                    "writing {} rows failed ({}); writing them one by one to find the refused ones",
                    ops.len(),
                    e.message
                );
                for op in ops {
                    let one = std::slice::from_ref(&op);
                    let offsets = next_offsets(one);
                    if let Err(e) = self.write_with_retries(one, &offsets).await {
                        if e.retriable {
                            return Err(e);
                        }
                        self.report(&op.record, e.message)?;
                    }
                }
                if flushed.is_some() && self.offsets_table.is_some() {
                    self.write_with_retries(&[], &offsets).await?;
                }
                Ok(())
            }
        }
    }

    async fn write_with_retries(
        &mut self,
        ops: &[Op],
        offsets: &[TopicPartitionOffset],
    ) -> Result<(), TaskError> {
        let mut attempt = 0;
        loop {
            match self.write_once(ops, offsets).await {
                Ok(()) => return Ok(()),
                Err(e) if e.retriable && attempt < self.max_retries => {
                    attempt += 1;
                    tracing::warn!(
                        "write failed (attempt {attempt} of {}): {}; retrying in {:?}",
                        self.max_retries + 1,
                        e.message,
                        self.backoff
                    );
                    self.db = None;
                    self.tables.clear();
                    tokio::time::sleep(self.backoff).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn write_once(
        &mut self,
        ops: &[Op],
        offsets: &[TopicPartitionOffset],
    ) -> Result<(), TaskError> {
        self.prepare_tables(ops).await?;
        let dialect = self.connection().await?.dialect();
        // Consecutive ops of one shape share a statement, built once.
        let mut batches: Vec<(String, Vec<Vec<Cell>>)> = Vec::new();
        let mut previous: Option<&Op> = None;
        for op in ops {
            match (previous, batches.last_mut()) {
                (Some(p), Some((_, rows))) if p.same_shape(op) => rows.push(self.bound(op)),
                _ => batches.push((self.statement(dialect, op)?, vec![self.bound(op)])),
            }
            previous = Some(op);
        }
        if let Some(table) = &self.offsets_table {
            if !offsets.is_empty() {
                let sql = upsert_offset(dialect, table);
                let rows = offsets
                    .iter()
                    .map(|o| {
                        vec![
                            Cell::Text(self.connector.clone()),
                            Cell::Text(o.topic.clone()),
                            Cell::Int(i64::from(o.partition)),
                            Cell::Int(o.offset),
                        ]
                    })
                    .collect();
                batches.push((sql, rows));
            }
        }
        if batches.is_empty() {
            return Ok(());
        }
        let db = self.connection().await?;
        let counts = db.transaction(&batches).await?;
        if self.insert == Some(InsertMode::Update) && counts.iter().take(ops.len()).any(|&c| c == 0)
        {
            tracing::debug!("some updates matched no row");
        }
        Ok(())
    }
}

/// A record's coordinates, all a report of it needs (the worker reads the original back).
fn coordinates(record: &SinkRecord) -> SinkRecord {
    SinkRecord {
        topic: record.topic.clone(),
        partition: record.partition,
        offset: record.offset,
        ..SinkRecord::default()
    }
}

/// Per partition, the offset after the last of `ops`.
fn next_offsets(ops: &[Op]) -> Vec<TopicPartitionOffset> {
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for op in ops {
        let entry = next
            .entry((op.record.topic.clone(), op.record.partition))
            .or_insert(0);
        *entry = (*entry).max(op.record.offset + 1);
    }
    next.into_iter()
        .map(|((topic, partition), offset)| TopicPartitionOffset {
            topic,
            partition,
            offset,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_needs_record_key_for_deletes_and_a_key_for_upserts() {
        let config = Config::from([
            (db::CONNECTION_URL, "jdbc:postgresql://127.0.0.1:1/x"),
            (DELETE_ENABLED, "true"),
            (INSERT_MODE, "upsert"),
            (db::CONNECTION_ATTEMPTS, "1"),
        ]);
        let errors = JdbcSink.validate(&config);
        let names: Vec<_> = errors.iter().map(|e| e.name.as_str()).collect();
        assert!(names.contains(&DELETE_ENABLED), "{errors:?}");
        assert!(names.contains(&PK_MODE), "{errors:?}");
        assert!(names.contains(&db::CONNECTION_URL), "{errors:?}");
    }
}
