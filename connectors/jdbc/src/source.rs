//! `JdbcSource`: Confluent's JdbcSourceConnector for PostgreSQL and MariaDB/MySQL. Tables
//! (or one query) are read in `bulk`, `incrementing`, `timestamp` or `timestamp+incrementing`
//! mode into Connect structs named after the table, with Confluent's source partitions and
//! offsets, so that a restart resumes right after the last committed row.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use sluice_connector_sdk::proto::{
    data as proto_data, value, ConfigDef, ConfigType, Data, Field, FieldError, Importance, Schema,
    SchemaType, StructValue, Structured, Value,
};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, Reconfigure, SourceConnector, SourceRecord, SourceTask,
    SourceTaskContext, TaskError,
};

use crate::db::{self, Column, ConnectionSettings, Db, Streamed, TableId};
use crate::url::Dialect;
use crate::value::{Cell, NumericMapping};
use crate::{block_on, connection_defs, list};

const MODE: &str = "mode";
const INCREMENTING_COLUMN: &str = "incrementing.column.name";
const TIMESTAMP_COLUMN: &str = "timestamp.column.name";
const TIMESTAMP_DELAY: &str = "timestamp.delay.interval.ms";
const TIMESTAMP_INITIAL: &str = "timestamp.initial";
const VALIDATE_NON_NULL: &str = "validate.non.null";
const TABLE_WHITELIST: &str = "table.whitelist";
const TABLE_BLACKLIST: &str = "table.blacklist";
const TABLE_INCLUDE: &str = "table.include.list";
const TABLE_EXCLUDE: &str = "table.exclude.list";
const QUERY: &str = "query";
const QUERY_SUFFIX: &str = "query.suffix";
const TOPIC_PREFIX: &str = "topic.prefix";
const POLL_INTERVAL: &str = "poll.interval.ms";
const BATCH_MAX_ROWS: &str = "batch.max.rows";
const TABLE_POLL_INTERVAL: &str = "table.poll.interval.ms";
const NUMERIC_MAPPING: &str = "numeric.mapping";
const DB_TIMEZONE: &str = "db.timezone";
/// Set by `plan`: the task's tables, a JSON array of `[schema, table]`.
const TASK_TABLES: &str = "tables";

/// How long an idle poll waits at most before returning nothing.
const IDLE_WAIT: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Bulk,
    Incrementing,
    Timestamp,
    TimestampIncrementing,
}

impl Mode {
    fn parse(text: &str) -> Option<Mode> {
        match text.trim() {
            "bulk" => Some(Mode::Bulk),
            "incrementing" => Some(Mode::Incrementing),
            "timestamp" => Some(Mode::Timestamp),
            "timestamp+incrementing" => Some(Mode::TimestampIncrementing),
            _ => None,
        }
    }

    fn incrementing(self) -> bool {
        matches!(self, Mode::Incrementing | Mode::TimestampIncrementing)
    }

    fn timestamp(self) -> bool {
        matches!(self, Mode::Timestamp | Mode::TimestampIncrementing)
    }
}

pub struct JdbcSource;

impl Connector for JdbcSource {
    fn class_name(&self) -> &'static str {
        "JdbcSource"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "io.confluent.connect.jdbc.JdbcSourceConnector",
            "JdbcSourceConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Reads tables of PostgreSQL or MariaDB/MySQL (or one query) into Kafka, with Confluent's JDBC source keys"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let mut defs = connection_defs();
        defs.extend([
            ConfigDefBuilder::new(MODE, ConfigType::String)
                .importance(Importance::High)
                .valid_values(&["bulk", "incrementing", "timestamp", "timestamp+incrementing"])
                .doc("bulk: the whole table each poll; incrementing: rows with a larger incrementing.column.name; timestamp: rows with a newer timestamp.column.name; timestamp+incrementing: both, so rows with equal timestamps are never skipped")
                .build(),
            ConfigDefBuilder::new(INCREMENTING_COLUMN, ConfigType::String)
                .default_value("")
                .doc("A strictly increasing integer column; empty: each table's auto-increment (serial, identity) column")
                .build(),
            ConfigDefBuilder::new(TIMESTAMP_COLUMN, ConfigType::List)
                .default_value("")
                .doc("Timestamp columns; with several, the first non-null (COALESCE) is the row's timestamp")
                .build(),
            ConfigDefBuilder::new(TIMESTAMP_DELAY, ConfigType::Long)
                .default_value("0")
                .doc("Only rows older than the database's current time minus this are read, so transactions with earlier timestamps can commit first")
                .build(),
            ConfigDefBuilder::new(TIMESTAMP_INITIAL, ConfigType::String)
                .default_value("")
                .doc("Epoch milliseconds to start from when no offset is stored; -1 for the current time; empty for the beginning")
                .build(),
            ConfigDefBuilder::new(VALIDATE_NON_NULL, ConfigType::Boolean)
                .default_value("true")
                .doc("Refuse incrementing/timestamp columns that are nullable")
                .build(),
            ConfigDefBuilder::new(TABLE_WHITELIST, ConfigType::List)
                .default_value("")
                .doc("Tables to read (name or schema.name); empty for all")
                .build(),
            ConfigDefBuilder::new(TABLE_BLACKLIST, ConfigType::List)
                .default_value("")
                .doc("Tables not to read")
                .build(),
            ConfigDefBuilder::new(TABLE_INCLUDE, ConfigType::List)
                .default_value("")
                .doc("Newer name of table.whitelist")
                .build(),
            ConfigDefBuilder::new(TABLE_EXCLUDE, ConfigType::List)
                .default_value("")
                .doc("Newer name of table.blacklist")
                .build(),
            ConfigDefBuilder::new(QUERY, ConfigType::String)
                .default_value("")
                .doc("Read this query instead of tables (one task); the mode's WHERE clause is appended to it")
                .build(),
            ConfigDefBuilder::new(QUERY_SUFFIX, ConfigType::String)
                .default_value("")
                .doc("Appended to every generated query")
                .build(),
            ConfigDefBuilder::new(TOPIC_PREFIX, ConfigType::String)
                .importance(Importance::High)
                .doc("Topic of a table: this prefix and the table's name; of a query: this prefix")
                .build(),
            ConfigDefBuilder::new(POLL_INTERVAL, ConfigType::Int)
                .default_value("5000")
                .doc("How often each table is queried for new rows")
                .build(),
            ConfigDefBuilder::new(BATCH_MAX_ROWS, ConfigType::Int)
                .default_value("100")
                .doc("Rows read per query")
                .build(),
            ConfigDefBuilder::new(TABLE_POLL_INTERVAL, ConfigType::Long)
                .default_value("60000")
                .doc("How often the table list is read; a change plans the tasks again")
                .build(),
            ConfigDefBuilder::new(NUMERIC_MAPPING, ConfigType::String)
                .default_value("none")
                .valid_values(&["none", "precision_only", "best_fit"])
                .doc("NUMERIC/DECIMAL columns: none: Decimal; precision_only: integers for scale 0; best_fit: integers or FLOAT64 when the precision allows")
                .build(),
            ConfigDefBuilder::new(DB_TIMEZONE, ConfigType::String)
                .default_value("UTC")
                .valid_values(&["UTC"])
                .doc("Time zone of timestamps without one; UTC only")
                .build(),
        ]);
        defs
    }

    fn validate(&self, config: &Config) -> Vec<FieldError> {
        let mut errors = config.validate_against(&self.config_defs());
        let error = |name: &str, message: String| FieldError {
            name: name.into(),
            message,
        };
        if let Some(mode) = config.get(MODE).and_then(Mode::parse) {
            let query = !config.get_or(QUERY, "").trim().is_empty();
            if mode.incrementing()
                && query
                && config.get_or(INCREMENTING_COLUMN, "").trim().is_empty()
            {
                errors.push(error(
                    INCREMENTING_COLUMN,
                    format!(
                        "mode {} on a query needs an incrementing column (tables default to their auto-increment column)",
                        config.get_or(MODE, "")
                    ),
                ));
            }
            if mode.timestamp() && list(config.get_or(TIMESTAMP_COLUMN, "")).is_empty() {
                errors.push(error(
                    TIMESTAMP_COLUMN,
                    format!("mode {} needs a timestamp column", config.get_or(MODE, "")),
                ));
            }
        }
        if let Some(initial) = config.get(TIMESTAMP_INITIAL).map(str::trim) {
            if !initial.is_empty() && initial.parse::<i64>().is_err() {
                errors.push(error(
                    TIMESTAMP_INITIAL,
                    format!(
                        "invalid value {initial:?}: expected epoch milliseconds, -1 or nothing"
                    ),
                ));
            }
        }
        let whitelist = !list(config.get_or(TABLE_WHITELIST, "")).is_empty()
            || !list(config.get_or(TABLE_INCLUDE, "")).is_empty();
        let blacklist = !list(config.get_or(TABLE_BLACKLIST, "")).is_empty()
            || !list(config.get_or(TABLE_EXCLUDE, "")).is_empty();
        if whitelist && blacklist {
            errors.push(error(
                TABLE_BLACKLIST,
                "give a list of tables to read or a list not to read, not both".into(),
            ));
        }
        if errors.iter().any(|e| e.name.starts_with("connection.")) {
            return errors;
        }
        match ConnectionSettings::from_config(config) {
            Err(e) => errors.push(error(db::CONNECTION_URL, e.message)),
            Ok(settings) => {
                let once = ConnectionSettings {
                    attempts: 1,
                    ..settings
                };
                if let Err(e) = block_on(async move { once.connect().await.map(drop) }) {
                    errors.push(error(db::CONNECTION_URL, e.message));
                }
            }
        }
        errors
    }

    fn plan(&self, config: &Config, max_tasks: usize) -> Result<Vec<Config>, TaskError> {
        if !config.get_or(QUERY, "").trim().is_empty() {
            let mut task = config.clone();
            task.set(TASK_TABLES, "[]");
            return Ok(vec![task]);
        }
        let settings = ConnectionSettings::from_config(config)?;
        let filter = TableFilter::from_config(config);
        let tables = block_on(async move {
            let mut db = settings.connect().await?;
            db.list_tables().await
        })?;
        let tables: Vec<TableId> = tables.into_iter().filter(|t| filter.keeps(t)).collect();
        if tables.is_empty() {
            tracing::warn!("no tables to read yet; the task idles until one appears");
        }
        // Contiguous groups, as Kafka's ConnectorUtils.groupPartitions makes them.
        let groups = max_tasks.clamp(1, tables.len().max(1));
        let per = tables.len() / groups;
        let extra = tables.len() % groups;
        let mut at = 0;
        Ok((0..groups)
            .map(|i| {
                let n = per + usize::from(i < extra);
                let mine: Vec<[&str; 2]> = tables[at..at + n]
                    .iter()
                    .map(|t| [t.schema.as_str(), t.name.as_str()])
                    .collect();
                at += n;
                let mut task = config.clone();
                task.set(TASK_TABLES, json!(mine).to_string());
                task
            })
            .collect())
    }

    fn monitor(&self, config: &Config, reconfigure: Reconfigure) {
        if !config.get_or(QUERY, "").trim().is_empty() {
            return;
        }
        let Ok(settings) = ConnectionSettings::from_config(config) else {
            return;
        };
        let filter = TableFilter::from_config(config);
        let every = Duration::from_millis(
            config
                .parse_or(TABLE_POLL_INTERVAL, 60_000u64)
                .unwrap_or(60_000),
        );
        std::thread::spawn(move || {
            let list_now = || -> Option<Vec<TableId>> {
                let settings = settings.clone();
                let tables = block_on(async move {
                    let mut db = settings.connect().await?;
                    db.list_tables().await
                });
                match tables {
                    Ok(t) => Some(t.into_iter().filter(|t| filter.keeps(t)).collect()),
                    Err(e) => {
                        tracing::warn!("listing tables failed: {}", e.message);
                        None
                    }
                }
            };
            let mut seen = list_now();
            let mut last = Instant::now();
            while !reconfigure.is_closed() {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() < every {
                    continue;
                }
                last = Instant::now();
                let now = list_now();
                if now.is_some() && now != seen {
                    let reason = format!(
                        "the tables to read changed: {:?}",
                        now.iter()
                            .flatten()
                            .map(TableId::qualified)
                            .collect::<Vec<_>>()
                    );
                    seen = now;
                    if !reconfigure.request(reason) {
                        return;
                    }
                }
            }
        });
    }
}

impl SourceConnector for JdbcSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(JdbcSourceTask::default())
    }
}

/// `table.whitelist`/`table.blacklist` (and their newer names): entries match a table's name
/// or `schema.name`.
#[derive(Clone)]
struct TableFilter {
    include: HashSet<String>,
    exclude: HashSet<String>,
}

impl TableFilter {
    fn from_config(config: &Config) -> TableFilter {
        let set = |a: &str, b: &str| -> HashSet<String> {
            list(config.get_or(a, ""))
                .into_iter()
                .chain(list(config.get_or(b, "")))
                .collect()
        };
        TableFilter {
            include: set(TABLE_WHITELIST, TABLE_INCLUDE),
            exclude: set(TABLE_BLACKLIST, TABLE_EXCLUDE),
        }
    }

    fn keeps(&self, table: &TableId) -> bool {
        let named =
            |set: &HashSet<String>| set.contains(&table.name) || set.contains(&table.qualified());
        (self.include.is_empty() || named(&self.include)) && !named(&self.exclude)
    }
}

/// Where a table's reading stands: the offset reached (Confluent's
/// `TimestampIncrementingOffset`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Offset {
    incrementing: Option<i64>,
    /// Microseconds since the epoch.
    timestamp: Option<i64>,
}

impl Offset {
    fn to_json(self) -> String {
        let mut map = serde_json::Map::new();
        if let Some(i) = self.incrementing {
            map.insert("incrementing".into(), json!(i));
        }
        if let Some(us) = self.timestamp {
            map.insert("timestamp".into(), json!(us.div_euclid(1000)));
            map.insert(
                "timestamp_nanos".into(),
                json!(us.rem_euclid(1_000_000) * 1000),
            );
        }
        serde_json::Value::Object(map).to_string()
    }

    fn from_json(value: &serde_json::Value) -> Offset {
        let timestamp = value.get("timestamp").and_then(|t| t.as_i64()).map(|ms| {
            let nanos = value
                .get("timestamp_nanos")
                .and_then(|n| n.as_i64())
                .unwrap_or(ms.rem_euclid(1000) * 1_000_000);
            ms.div_euclid(1000) * 1_000_000 + nanos / 1000
        });
        Offset {
            incrementing: value.get("incrementing").and_then(|i| i.as_i64()),
            timestamp,
        }
    }
}

/// One table (or the query) a task reads.
struct Querier {
    table: Option<TableId>,
    topic: String,
    partition: Arc<str>,
    /// `SELECT * FROM "schema"."table"` or the user's query.
    select: String,
    /// The struct schema's name: the table's name (none for a query).
    schema_name: Option<String>,
    /// The incrementing column: configured, or the table's auto-increment column.
    incrementing: String,
    offset: Offset,
    next_run: Instant,
    pending: VecDeque<SourceRecord>,
    /// Checked once, on the first query.
    checked: bool,
    /// Bulk mode: the read of the whole table in progress.
    bulk: Option<BulkRead>,
}

/// A bulk read of a table, streamed from a connection of its own.
struct BulkRead {
    rows: tokio::sync::mpsc::Receiver<Result<Streamed, TaskError>>,
    columns: Vec<Column>,
}

#[derive(Default)]
struct JdbcSourceTask {
    db: Option<Db>,
    settings: Option<ConnectionSettings>,
    mode: Option<Mode>,
    incrementing: String,
    timestamps: Vec<String>,
    delay_us: i64,
    validate_non_null: bool,
    suffix: String,
    poll_interval: Duration,
    batch: usize,
    mapping: Option<NumericMapping>,
    queriers: Vec<Querier>,
    turn: usize,
    warned: HashSet<String>,
}

#[async_trait]
impl SourceTask for JdbcSourceTask {
    async fn start(&mut self, ctx: SourceTaskContext) -> Result<(), TaskError> {
        let config = &ctx.config;
        let mode = Mode::parse(config.required(MODE)?).ok_or_else(|| {
            TaskError::fatal(format!("invalid {MODE} {:?}", config.get_or(MODE, "")))
        })?;
        self.mode = Some(mode);
        self.incrementing = config.get_or(INCREMENTING_COLUMN, "").trim().to_string();
        self.timestamps = list(config.get_or(TIMESTAMP_COLUMN, ""));
        if mode.timestamp() && self.timestamps.is_empty() {
            return Err(TaskError::fatal(format!("mode needs {TIMESTAMP_COLUMN}")));
        }
        self.delay_us = config.parse_or(TIMESTAMP_DELAY, 0i64)?.saturating_mul(1000);
        self.validate_non_null = config.parse_or(VALIDATE_NON_NULL, true)?;
        self.suffix = config.get_or(QUERY_SUFFIX, "").trim().to_string();
        self.poll_interval = Duration::from_millis(config.parse_or(POLL_INTERVAL, 5000u64)?);
        self.batch = config.parse_or(BATCH_MAX_ROWS, 100usize)?.max(1);
        self.mapping = Some(
            NumericMapping::parse(config.get_or(NUMERIC_MAPPING, "none")).ok_or_else(|| {
                TaskError::fatal(format!(
                    "invalid {NUMERIC_MAPPING} {:?}",
                    config.get_or(NUMERIC_MAPPING, "")
                ))
            })?,
        );
        let prefix = config.required(TOPIC_PREFIX)?.to_string();
        let settings = ConnectionSettings::from_config(config)?;
        let mut db = settings.connect().await?;
        let initial = match config.get(TIMESTAMP_INITIAL).map(str::trim) {
            None | Some("") => 0,
            Some("-1") => db.current_timestamp().await?,
            Some(ms) => ms
                .parse::<i64>()
                .map_err(|_| TaskError::fatal(format!("invalid {TIMESTAMP_INITIAL} {ms:?}")))?
                .saturating_mul(1000),
        };
        let fresh = Offset {
            incrementing: mode.incrementing().then_some(-1),
            timestamp: mode.timestamp().then_some(initial),
        };
        let query = config.get_or(QUERY, "").trim().to_string();
        let tables: Vec<(String, String)> = if query.is_empty() {
            serde_json::from_str::<Vec<(String, String)>>(config.get_or(TASK_TABLES, "[]"))
                .map_err(|e| TaskError::fatal(format!("invalid task key {TASK_TABLES}: {e}")))?
        } else {
            Vec::new()
        };
        let now = Instant::now();
        if !query.is_empty() {
            if mode.incrementing() && self.incrementing.is_empty() {
                return Err(TaskError::fatal(format!(
                    "mode {} on a query needs {INCREMENTING_COLUMN}",
                    config.get_or(MODE, "")
                )));
            }
            let partition = json!({ "query": "query" }).to_string();
            self.queriers.push(Querier {
                table: None,
                topic: prefix.clone(),
                offset: stored(&ctx, &[&partition], mode, fresh),
                partition: partition.into(),
                select: query,
                schema_name: None,
                incrementing: self.incrementing.clone(),
                next_run: now,
                pending: VecDeque::new(),
                checked: false,
                bulk: None,
            });
        }
        for (schema, name) in tables {
            let table = TableId { schema, name };
            let incrementing = if mode.incrementing() && self.incrementing.is_empty() {
                db.auto_increment_column(&table).await?.ok_or_else(|| {
                    TaskError::fatal(format!(
                        "{} has no auto-increment column: set {INCREMENTING_COLUMN}",
                        table.qualified()
                    ))
                })?
            } else {
                self.incrementing.clone()
            };
            let partition = if mode == Mode::Bulk {
                json!({ "table": table.name }).to_string()
            } else {
                json!({ "protocol": "1", "table": table.qualified() }).to_string()
            };
            // Confluent's protocol 0 partition, read when no protocol 1 offset exists.
            let legacy = json!({ "table": table.name }).to_string();
            self.queriers.push(Querier {
                topic: format!("{prefix}{}", table.name),
                offset: stored(&ctx, &[&partition, &legacy], mode, fresh),
                partition: partition.into(),
                select: format!("SELECT * FROM {}", db.table(&table)),
                schema_name: Some(table.name.clone()),
                incrementing,
                table: Some(table),
                next_run: now,
                pending: VecDeque::new(),
                checked: false,
                bulk: None,
            });
        }
        for q in &self.queriers {
            tracing::info!(
                "reading {} into {} from {}",
                q.table
                    .as_ref()
                    .map_or("the query".into(), TableId::qualified),
                q.topic,
                if q.offset == fresh {
                    "the start".into()
                } else {
                    q.offset.to_json()
                }
            );
        }
        self.db = Some(db);
        self.settings = Some(settings);
        Ok(())
    }

    async fn poll(&mut self, max_records: usize) -> Result<Vec<SourceRecord>, TaskError> {
        if self.queriers.is_empty() {
            tokio::time::sleep(IDLE_WAIT).await;
            return Ok(Vec::new());
        }
        let n = self.queriers.len();
        // A table with rows already read first, then any table whose time has come.
        let now = Instant::now();
        let ready = (0..n)
            .map(|i| (self.turn + i) % n)
            .find(|&i| !self.queriers[i].pending.is_empty())
            .or_else(|| {
                (0..n)
                    .map(|i| (self.turn + i) % n)
                    .find(|&i| self.queriers[i].next_run <= now)
            });
        let Some(i) = ready else {
            let next = self
                .queriers
                .iter()
                .map(|q| q.next_run)
                .min()
                .unwrap_or(now);
            tokio::time::sleep(next.saturating_duration_since(now).min(IDLE_WAIT)).await;
            return Ok(Vec::new());
        };
        self.turn = (i + 1) % n;
        if self.queriers[i].pending.is_empty() {
            if let Err(e) = self.run_query(i).await {
                if e.retriable {
                    // The connection may be gone: reconnect before the next query.
                    self.db = None;
                }
                return Err(e);
            }
        }
        let pending = &mut self.queriers[i].pending;
        let take = max_records.max(1).min(pending.len());
        Ok(pending.drain(..take).collect())
    }
}

/// The stored offset of the first of `partitions` that has one.
fn stored(ctx: &SourceTaskContext, partitions: &[&str], mode: Mode, fresh: Offset) -> Offset {
    if mode == Mode::Bulk {
        return fresh;
    }
    partitions
        .iter()
        .find_map(|p| ctx.offset(p))
        .map(|o| {
            let read = Offset::from_json(&o);
            Offset {
                incrementing: read.incrementing.or(fresh.incrementing),
                timestamp: read.timestamp.or(fresh.timestamp),
            }
        })
        .unwrap_or(fresh)
}

impl JdbcSourceTask {
    fn placeholder(&self, n: usize) -> String {
        match self.db.as_ref().map(Db::dialect) {
            Some(Dialect::Postgres) => format!("${n}"),
            _ => "?".into(),
        }
    }

    /// One query of table `i`; its rows become the table's pending records.
    async fn run_query(&mut self, i: usize) -> Result<(), TaskError> {
        if self.mode == Some(Mode::Bulk) {
            return self.run_bulk(i).await;
        }
        if self.db.is_none() {
            let settings = self
                .settings
                .clone()
                .ok_or_else(|| TaskError::fatal("task not started"))?;
            self.db = Some(settings.connect().await?);
        }
        let mode = self.mode.unwrap_or(Mode::Bulk);
        let mapping = self.mapping.unwrap_or(NumericMapping::None);
        let dialect = self.db.as_ref().map_or(Dialect::Postgres, Db::dialect);
        let q = |c: &str| db::quote(dialect, c);
        let ts_expr = match self.timestamps.as_slice() {
            [one] => q(one),
            many => format!(
                "COALESCE({})",
                many.iter().map(|c| q(c)).collect::<Vec<_>>().join(",")
            ),
        };
        let inc = q(&self.queriers[i].incrementing);
        let offset = self.queriers[i].offset;
        let mut params = Vec::new();
        let mut sql = self.queriers[i].select.clone();
        let end = if mode.timestamp() {
            let db = self
                .db
                .as_mut()
                .ok_or_else(|| TaskError::fatal("no connection"))?;
            Some(db.current_timestamp().await? - self.delay_us)
        } else {
            None
        };
        let limited = mode != Mode::Bulk;
        match mode {
            Mode::Bulk => {}
            Mode::Incrementing => {
                sql.push_str(&format!(
                    " WHERE {inc} > {} ORDER BY {inc} ASC",
                    self.placeholder(1)
                ));
                params.push(Cell::Int(offset.incrementing.unwrap_or(-1)));
            }
            Mode::Timestamp => {
                sql.push_str(&format!(
                    " WHERE {ts_expr} > {} AND {ts_expr} < {} ORDER BY {ts_expr} ASC",
                    self.placeholder(1),
                    self.placeholder(2)
                ));
                params.push(Cell::Timestamp(offset.timestamp.unwrap_or(0)));
                params.push(Cell::Timestamp(end.unwrap_or(0)));
            }
            Mode::TimestampIncrementing => {
                sql.push_str(&format!(
                    " WHERE {ts_expr} < {} AND (({ts_expr} = {} AND {inc} > {}) OR {ts_expr} > {}) ORDER BY {ts_expr},{inc} ASC",
                    self.placeholder(1),
                    self.placeholder(2),
                    self.placeholder(3),
                    self.placeholder(4)
                ));
                let begin = offset.timestamp.unwrap_or(0);
                params.push(Cell::Timestamp(end.unwrap_or(0)));
                params.push(Cell::Timestamp(begin));
                params.push(Cell::Int(offset.incrementing.unwrap_or(-1)));
                params.push(Cell::Timestamp(begin));
            }
        }
        if !self.suffix.is_empty() {
            sql.push(' ');
            sql.push_str(&self.suffix);
        }
        if limited {
            sql.push_str(&format!(" LIMIT {}", self.batch));
        }
        let db = self
            .db
            .as_mut()
            .ok_or_else(|| TaskError::fatal("no connection"))?;
        let mut rows = db.query(&sql, &params, mapping).await?;
        if mode == Mode::Timestamp && rows.rows.len() == self.batch {
            // Rows sharing the last timestamp may continue past the limit: leave them for
            // the next query, which starts after the timestamp before them; when every row
            // shares it, read all rows of that timestamp at once.
            let at = self.locate(&rows.columns, &self.queriers[i].incrementing)?;
            let last = row_timestamp(rows.rows.last().map(Vec::as_slice).unwrap_or(&[]), &at);
            let keep = rows
                .rows
                .iter()
                .rposition(|r| row_timestamp(r, &at) != last)
                .map_or(0, |p| p + 1);
            if keep > 0 {
                rows.rows.truncate(keep);
            } else if let Some(last) = last {
                let mut all = self.queriers[i].select.clone();
                all.push_str(&format!(" WHERE {ts_expr} = {}", self.placeholder(1)));
                if !self.suffix.is_empty() {
                    all.push(' ');
                    all.push_str(&self.suffix);
                }
                let db = self
                    .db
                    .as_mut()
                    .ok_or_else(|| TaskError::fatal("no connection"))?;
                rows = db.query(&all, &[Cell::Timestamp(last)], mapping).await?;
            }
        }
        let full = limited && rows.rows.len() >= self.batch;
        self.records(i, rows.columns, rows.rows)?;
        let querier = &mut self.queriers[i];
        querier.next_run = if full {
            Instant::now()
        } else {
            Instant::now() + self.poll_interval
        };
        Ok(())
    }

    /// The next `batch.max.rows` rows of table `i` in bulk mode. The whole table is read once
    /// per poll interval, streamed from a connection of its own, `batch.max.rows` rows at a
    /// time (Confluent's fetch size): a table of any size is never held in memory.
    async fn run_bulk(&mut self, i: usize) -> Result<(), TaskError> {
        let mapping = self.mapping.unwrap_or(NumericMapping::None);
        if self.queriers[i].bulk.is_none() {
            let settings = self
                .settings
                .clone()
                .ok_or_else(|| TaskError::fatal("task not started"))?;
            let mut sql = self.queriers[i].select.clone();
            if !self.suffix.is_empty() {
                sql.push(' ');
                sql.push_str(&self.suffix);
            }
            let (tx, mut rows) = tokio::sync::mpsc::channel(self.batch.max(1));
            tokio::spawn(async move {
                let read = async {
                    let mut db = settings.connect().await?;
                    db.stream(&sql, mapping, &tx).await
                };
                if let Err(e) = read.await {
                    let _ = tx.send(Err(e)).await;
                }
            });
            let columns = match rows.recv().await {
                Some(Ok(Streamed::Columns(columns))) => columns,
                Some(Err(e)) => return Err(e),
                _ => {
                    return Err(TaskError::retriable(
                        "the bulk query ended before its columns",
                    ))
                }
            };
            self.queriers[i].bulk = Some(BulkRead { rows, columns });
        }
        let (mut rows, mut done, mut failed) = (Vec::new(), false, None);
        let mut columns = Vec::new();
        if let Some(bulk) = self.queriers[i].bulk.as_mut() {
            columns = bulk.columns.clone();
            while rows.len() < self.batch {
                match bulk.rows.recv().await {
                    Some(Ok(Streamed::Row(row))) => rows.push(row),
                    Some(Ok(Streamed::Columns(_))) => {}
                    Some(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                    None => {
                        done = true;
                        break;
                    }
                }
            }
        }
        if let Some(e) = failed {
            self.queriers[i].bulk = None;
            return Err(e);
        }
        if done {
            self.queriers[i].bulk = None;
        }
        self.records(i, columns, rows)?;
        self.queriers[i].next_run = if done {
            Instant::now() + self.poll_interval
        } else {
            Instant::now()
        };
        Ok(())
    }

    /// Where the offset columns are in a result: (incrementing, timestamps).
    fn locate(
        &self,
        columns: &[Column],
        incrementing: &str,
    ) -> Result<(Option<usize>, Vec<usize>), TaskError> {
        let find = |name: &str| {
            columns
                .iter()
                .position(|c| c.name == name)
                .or_else(|| {
                    columns
                        .iter()
                        .position(|c| c.name.eq_ignore_ascii_case(name))
                })
                .ok_or_else(|| {
                    TaskError::fatal(format!(
                        "column {name:?} is not among the columns read: {}",
                        columns
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
        };
        let mode = self.mode.unwrap_or(Mode::Bulk);
        let inc = if mode.incrementing() {
            Some(find(incrementing)?)
        } else {
            None
        };
        let ts = if mode.timestamp() {
            self.timestamps
                .iter()
                .map(|t| find(t))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        Ok((inc, ts))
    }

    fn records(
        &mut self,
        i: usize,
        columns: Vec<Column>,
        rows: Vec<Vec<Cell>>,
    ) -> Result<(), TaskError> {
        let at = self.locate(&columns, &self.queriers[i].incrementing)?;
        let what = self.queriers[i]
            .table
            .as_ref()
            .map_or("the query".to_string(), TableId::qualified);
        if !self.queriers[i].checked {
            self.queriers[i].checked = true;
            if self.validate_non_null {
                for idx in at.0.iter().chain(&at.1) {
                    let c = &columns[*idx];
                    if c.optional {
                        return Err(TaskError::fatal(format!(
                            "cannot make incremental queries of {what} on column {:?}: it is nullable (make it NOT NULL or set {VALIDATE_NON_NULL}=false)",
                            c.name
                        )));
                    }
                }
            }
        }
        for c in &columns {
            if c.kind.is_none() && self.warned.insert(format!("{what}.{}", c.name)) {
                tracing::warn!(
                    "column {:?} of {what} has type {}, which has no Connect type; it is left out",
                    c.name,
                    c.type_name
                );
            }
        }
        let kept: Vec<usize> = (0..columns.len())
            .filter(|&c| columns[c].kind.is_some())
            .collect();
        let schema = Schema {
            r#type: SchemaType::Struct as i32,
            optional: false,
            name: self.queriers[i].schema_name.clone(),
            fields: kept
                .iter()
                .map(|&c| Field {
                    name: columns[c].name.clone(),
                    schema: columns[c]
                        .kind
                        .as_ref()
                        .map(|k| k.schema(columns[c].optional)),
                })
                .collect(),
            ..Schema::default()
        };
        let mode = self.mode.unwrap_or(Mode::Bulk);
        let querier = &mut self.queriers[i];
        for row in rows {
            let mut fields = Vec::with_capacity(kept.len());
            for &c in &kept {
                let column = &columns[c];
                let cell = row.get(c).unwrap_or(&Cell::Null);
                let kind = column
                    .kind
                    .as_ref()
                    .ok_or_else(|| TaskError::fatal("no kind"))?;
                let value = if *cell == Cell::Null && !column.optional {
                    return Err(TaskError::fatal(format!(
                        "column {:?} of {what} is NOT NULL but a row has null",
                        column.name
                    )));
                } else {
                    kind.value(cell).map_err(|e| {
                        TaskError::fatal(format!("column {:?} of {what}: {e}", column.name))
                    })?
                };
                fields.push(value);
            }
            let offset = if mode == Mode::Bulk {
                None
            } else {
                if let Some(idx) = at.0 {
                    querier.offset.incrementing = Some(match row.get(idx) {
                        Some(Cell::Int(v)) => *v,
                        Some(Cell::Decimal(t)) => t.parse().map_err(|_| {
                            TaskError::fatal(format!(
                                "incrementing value {t} of {what} is not an integer"
                            ))
                        })?,
                        other => {
                            return Err(TaskError::fatal(format!(
                                "incrementing column of {what} holds {other:?}, not an integer"
                            )))
                        }
                    });
                }
                if !at.1.is_empty() {
                    match row_timestamp(&row, &at) {
                        Some(ts) => querier.offset.timestamp = Some(ts),
                        None => {
                            return Err(TaskError::fatal(format!(
                                "a row of {what} has no timestamp in {:?}",
                                self.timestamps
                            )))
                        }
                    }
                }
                Some(querier.offset.to_json())
            };
            querier.pending.push_back(SourceRecord {
                source_partition: Some(querier.partition.clone()),
                source_offset: offset,
                topic: querier.topic.clone(),
                key: sluice_connector_sdk::data::null(),
                value: Data {
                    kind: Some(proto_data::Kind::Structured(Structured {
                        schema: Some(schema.clone()),
                        value: Some(Value {
                            kind: Some(value::Kind::Struct(StructValue {
                                fields,
                                ..StructValue::default()
                            })),
                        }),
                    })),
                },
                ..SourceRecord::default()
            });
        }
        Ok(())
    }
}

/// The row's timestamp: the first non-null timestamp column (COALESCE), in microseconds.
fn row_timestamp(row: &[Cell], at: &(Option<usize>, Vec<usize>)) -> Option<i64> {
    at.1.iter().find_map(|&i| match row.get(i) {
        Some(Cell::Timestamp(us)) => Some(*us),
        Some(Cell::Date(d)) => Some(i64::from(*d) * 86_400_000_000),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_keep_confluents_fields() {
        let o = Offset {
            incrementing: Some(42),
            timestamp: Some(1_700_000_000_123_456),
        };
        let text = o.to_json();
        assert_eq!(
            text,
            r#"{"incrementing":42,"timestamp":1700000000123,"timestamp_nanos":123456000}"#
        );
        let back = Offset::from_json(&serde_json::from_str(&text).unwrap());
        assert_eq!(back, o);
    }

    #[test]
    fn filters_match_names_and_qualified_names() {
        let filter = TableFilter::from_config(&Config::from([(TABLE_WHITELIST, "a, public.b")]));
        let t = |s: &str, n: &str| TableId {
            schema: s.into(),
            name: n.into(),
        };
        assert!(filter.keeps(&t("public", "a")));
        assert!(filter.keeps(&t("public", "b")));
        assert!(!filter.keeps(&t("other", "b")));
        let filter = TableFilter::from_config(&Config::from([(TABLE_EXCLUDE, "x")]));
        assert!(!filter.keeps(&t("s", "x")));
        assert!(filter.keeps(&t("s", "y")));
    }
}
