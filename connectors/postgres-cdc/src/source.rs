//! `PostgresCdcSource`: Debezium's PostgreSQL connector with its keys and its envelope. A
//! snapshot read in the transaction the replication slot exported, then the slot's stream
//! (`pgoutput`), so that nothing falls between them and nothing is read twice; the slot's
//! confirmed position moves only when the worker reports the records before it committed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use serde_json::json;
use sluice_connector_sdk::proto::{
    ConfigDef, ConfigType, Data, FieldError, Importance, Schema, SchemaType, Value,
};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, SourceConnector, SourceRecord, SourceTask,
    SourceTaskContext, TaskError,
};
use sluice_debezium::{
    envelope, envelope_schema, heartbeat, now_micros, patterns, row_schema, snapshot_completed,
    snapshot_schema, structured, Filter, FilterKeys, SnapshotMode,
};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::pgoutput::{self, Datum, Message};
use crate::types::{self, field, int, null, plain, string, structure, PgType};

const HOSTNAME: &str = "database.hostname";
const PORT: &str = "database.port";
const USER: &str = "database.user";
const PASSWORD: &str = "database.password";
const DBNAME: &str = "database.dbname";
const TOPIC_PREFIX: &str = "topic.prefix";
const SLOT: &str = "slot.name";
const PUBLICATION: &str = "publication.name";
const AUTOCREATE: &str = "publication.autocreate.mode";
const PLUGIN: &str = "plugin.name";
const TABLE_INCLUDE: &str = "table.include.list";
const TABLE_EXCLUDE: &str = "table.exclude.list";
const SCHEMA_INCLUDE: &str = "schema.include.list";
const SCHEMA_EXCLUDE: &str = "schema.exclude.list";
const SNAPSHOT_MODE: &str = "snapshot.mode";
const SNAPSHOT_FETCH: &str = "snapshot.fetch.size";
const HEARTBEAT: &str = "heartbeat.interval.ms";
const HEARTBEAT_PREFIX: &str = "topic.heartbeat.prefix";
const TOMBSTONES: &str = "tombstones.on.delete";
const SKIPPED: &str = "skipped.operations";
const FILTER_KEYS: FilterKeys = FilterKeys {
    container_include: SCHEMA_INCLUDE,
    container_exclude: SCHEMA_EXCLUDE,
    table_include: TABLE_INCLUDE,
    table_exclude: TABLE_EXCLUDE,
};

/// How long an idle poll waits for the stream before returning nothing.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// Seconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
pub struct PostgresCdcSource;

impl Connector for PostgresCdcSource {
    fn class_name(&self) -> &'static str {
        "PostgresCdcSource"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "io.debezium.connector.postgresql.PostgresConnector",
            "PostgresConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Change data capture from PostgreSQL (logical replication, pgoutput) in Debezium's envelope, with Debezium's keys"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let def = ConfigDefBuilder::new;
        vec![
            def(HOSTNAME, ConfigType::String)
                .importance(Importance::High)
                .doc("The PostgreSQL server's host")
                .build(),
            def(PORT, ConfigType::Int)
                .default_value("5432")
                .importance(Importance::High)
                .doc("The PostgreSQL server's port")
                .build(),
            def(USER, ConfigType::String)
                .importance(Importance::High)
                .doc("A user with the REPLICATION attribute (and, to create the publication, ownership of the tables)")
                .build(),
            def(PASSWORD, ConfigType::Password)
                .default_value("")
                .importance(Importance::High)
                .doc("The user's password")
                .build(),
            def(DBNAME, ConfigType::String)
                .importance(Importance::High)
                .doc("The database to capture")
                .build(),
            def(TOPIC_PREFIX, ConfigType::String)
                .importance(Importance::High)
                .doc("The logical server name: topics are <prefix>.<schema>.<table>, and it names the offsets")
                .build(),
            def(SLOT, ConfigType::String)
                .default_value("debezium")
                .doc("The logical replication slot (created when missing)")
                .build(),
            def(PUBLICATION, ConfigType::String)
                .default_value("dbz_publication")
                .doc("The publication the slot streams")
                .build(),
            def(AUTOCREATE, ConfigType::String)
                .default_value("all_tables")
                .valid_values(&["all_tables", "disabled", "filtered"])
                .doc("all_tables: create the publication FOR ALL TABLES when missing; filtered: for the included tables, kept in step on each start; disabled: it must exist")
                .build(),
            def(PLUGIN, ConfigType::String)
                .default_value("pgoutput")
                .valid_values(&["pgoutput"])
                .doc("The logical decoding plugin; only PostgreSQL's built-in pgoutput")
                .build(),
            def(TABLE_INCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching schema.table of the tables to capture; empty for all")
                .build(),
            def(TABLE_EXCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching schema.table of tables not to capture")
                .build(),
            def(SCHEMA_INCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching the schemas to capture; empty for all")
                .build(),
            def(SCHEMA_EXCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching schemas not to capture")
                .build(),
            def(SNAPSHOT_MODE, ConfigType::String)
                .default_value("initial")
                .valid_values(&["initial", "always", "never", "no_data", "initial_only"])
                .doc("initial: snapshot the tables unless a snapshot completed, then stream; always: snapshot on every start; never/no_data: stream only; initial_only: snapshot and stop")
                .build(),
            def(SNAPSHOT_FETCH, ConfigType::Int)
                .default_value("10240")
                .doc("Rows fetched at a time during the snapshot")
                .build(),
            def(HEARTBEAT, ConfigType::Int)
                .default_value("0")
                .doc("Milliseconds between heartbeat records (0: none); they let the slot advance while captured tables are quiet")
                .build(),
            def(HEARTBEAT_PREFIX, ConfigType::String)
                .default_value("__debezium-heartbeat")
                .doc("Heartbeats go to <this>.<topic.prefix>")
                .build(),
            def(TOMBSTONES, ConfigType::Boolean)
                .default_value("true")
                .doc("Follow each delete with a tombstone (null value) of the same key")
                .build(),
            def(SKIPPED, ConfigType::List)
                .default_value("t")
                .doc("Operations not to emit: c, u, d, t (truncate), or none")
                .build(),
        ]
    }

    fn validate(&self, config: &Config) -> Vec<FieldError> {
        let mut errors = config.validate_against(&self.config_defs());
        for key in FILTER_KEYS.all() {
            if let Err(e) = patterns(config, key) {
                errors.push(FieldError {
                    name: key.into(),
                    message: e.message,
                });
            }
        }
        if !errors.is_empty() {
            return errors;
        }
        let settings = match Settings::from_config(config) {
            Ok(s) => s,
            Err(e) => {
                errors.push(FieldError {
                    name: HOSTNAME.into(),
                    message: e.message,
                });
                return errors;
            }
        };
        let checked = sluice_connector_jdbc::block_on(async move {
            let client = settings.connect().await?;
            check_wal_level(&client).await
        });
        if let Err(e) = checked {
            errors.push(FieldError {
                name: HOSTNAME.into(),
                message: e.message,
            });
        }
        errors
    }

    fn plan(&self, config: &Config, _max_tasks: usize) -> Result<Vec<Config>, TaskError> {
        // One slot, one stream: one task, as Debezium's PostgreSQL connector.
        Ok(vec![config.clone()])
    }
}

impl SourceConnector for PostgresCdcSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(CdcTask::default())
    }
}

/// The connection keys.
#[derive(Clone)]
struct Settings {
    host: String,
    port: u16,
    user: String,
    password: String,
    dbname: String,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Settings, TaskError> {
        Ok(Settings {
            host: config.required(HOSTNAME)?.trim().to_string(),
            port: config.parse_or(PORT, 5432u16)?,
            user: config.required(USER)?.trim().to_string(),
            password: config.get_or(PASSWORD, "").to_string(),
            dbname: config.required(DBNAME)?.trim().to_string(),
        })
    }

    fn session_options() -> String {
        types::SESSION_SETTINGS
            .iter()
            .map(|(k, v)| format!("-c {k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A plain SQL session (catalog, publication, snapshot).
    async fn connect(&self) -> Result<Client, TaskError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("sluice-postgres-cdc")
            .options(Settings::session_options())
            .connect_timeout(Duration::from_secs(10));
        if !self.password.is_empty() {
            config.password(&self.password);
        }
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| pg_error(&format!("connect to {}:{}", self.host, self.port), e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("PostgreSQL connection ended: {e}");
            }
        });
        Ok(client)
    }

    /// A replication session, waiting for commands before it streams.
    async fn replication(
        &self,
        slot: &str,
        publication: &str,
    ) -> Result<ReplicationClient, TaskError> {
        let config = ReplicationConfig::new(
            self.host.clone(),
            self.user.clone(),
            self.password.clone(),
            self.dbname.clone(),
            slot.to_string(),
            publication.to_string(),
        )
        .with_port(self.port)
        .with_status_interval(Duration::from_secs(1))
        .with_wakeup_interval(Duration::from_secs(1))
        .with_options(Settings::session_options());
        ReplicationClient::connect_gated(config)
            .await
            .map_err(|e| TaskError::retriable(format!("open a replication session: {e}")))
    }
}

fn pg_error(context: &str, e: tokio_postgres::Error) -> TaskError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    };
    TaskError::retriable(format!("{context}: {detail}"))
}

async fn check_wal_level(client: &Client) -> Result<(), TaskError> {
    let row = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(|e| pg_error("read wal_level", e))?;
    let level: String = row.get(0);
    if level != "logical" {
        return Err(TaskError::fatal(format!(
            "the PostgreSQL server's wal_level is {level:?}, and change data capture needs \"logical\": run ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf) and restart the server"
        )));
    }
    Ok(())
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A captured column.
#[derive(Clone, Debug)]
struct Column {
    name: String,
    ty: PgType,
    optional: bool,
}

/// A captured table with its Debezium schemas, built once per relation.
struct Table {
    schema: String,
    name: String,
    columns: Vec<Column>,
    /// Primary key columns, in key order.
    key: Vec<usize>,
    topic: String,
    key_schema: Option<Schema>,
    envelope: Schema,
}

impl Table {
    fn new(prefix: &str, schema: &str, name: &str, columns: Vec<Column>, key: Vec<usize>) -> Table {
        let base = format!("{prefix}.{schema}.{name}");
        let row = row_schema(
            &base,
            "Value",
            columns
                .iter()
                .map(|c| field(&c.name, c.ty.schema(c.optional)))
                .collect(),
            true,
        );
        let key_schema = (!key.is_empty()).then(|| {
            row_schema(
                &base,
                "Key",
                key.iter()
                    .map(|&i| field(&columns[i].name, columns[i].ty.schema(false)))
                    .collect(),
                false,
            )
        });
        let envelope = envelope_schema(&base, row, source_schema());
        Table {
            schema: schema.to_string(),
            name: name.to_string(),
            columns,
            key,
            topic: base,
            key_schema,
            envelope,
        }
    }

    /// The row's values from a tuple; `old` fills TOASTed values the tuple did not carry.
    fn values(&self, datums: &[Datum], old: Option<&[Value]>) -> Result<Vec<Value>, TaskError> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| match datums.get(i) {
                Some(Datum::Text(bytes)) => {
                    let text = std::str::from_utf8(bytes)
                        .map_err(|_| self.error(c, "a value that is not UTF-8 text".to_string()))?;
                    c.ty.value(text).map_err(|e| self.error(c, e))
                }
                Some(Datum::UnchangedToast) => Ok(old
                    .and_then(|o| o.get(i).cloned())
                    .unwrap_or_else(|| c.ty.unavailable(c.optional))),
                Some(Datum::Binary(_)) => {
                    Err(self.error(c, "a binary value where text was asked for".into()))
                }
                // Absent from a key-only old row: null, or the type's zero when NOT NULL.
                Some(Datum::Null) | None if c.optional => Ok(null()),
                Some(Datum::Null) | None => Ok(c.ty.zero()),
            })
            .collect()
    }

    /// A row of the snapshot, in text.
    fn snapshot_values(
        &self,
        row: &tokio_postgres::SimpleQueryRow,
    ) -> Result<Vec<Value>, TaskError> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| match row.get(i) {
                Some(text) => c.ty.value(text).map_err(|e| self.error(c, e)),
                None if c.optional => Ok(null()),
                None => Ok(c.ty.zero()),
            })
            .collect()
    }

    fn error(&self, column: &Column, message: String) -> TaskError {
        TaskError::fatal(format!(
            "{}.{} column {:?}: {message}",
            self.schema, self.name, column.name
        ))
    }

    fn key(&self, values: &[Value]) -> Data {
        match &self.key_schema {
            Some(schema) => structured(
                schema.clone(),
                structure(self.key.iter().map(|&i| values[i].clone()).collect()),
            ),
            None => Data::default(),
        }
    }
}

fn source_schema() -> Schema {
    Schema {
        r#type: SchemaType::Struct as i32,
        optional: false,
        name: Some("io.debezium.connector.postgresql.Source".into()),
        fields: vec![
            field("version", plain(SchemaType::String, false)),
            field("connector", plain(SchemaType::String, false)),
            field("name", plain(SchemaType::String, false)),
            field("ts_ms", plain(SchemaType::Int64, false)),
            field("snapshot", snapshot_schema()),
            field("db", plain(SchemaType::String, false)),
            field("sequence", plain(SchemaType::String, true)),
            field("ts_us", plain(SchemaType::Int64, true)),
            field("ts_ns", plain(SchemaType::Int64, true)),
            field("schema", plain(SchemaType::String, false)),
            field("table", plain(SchemaType::String, false)),
            field("txId", plain(SchemaType::Int64, true)),
            field("lsn", plain(SchemaType::Int64, true)),
            field("xmin", plain(SchemaType::Int64, true)),
        ],
        ..Schema::default()
    }
}

/// Where an event came from, for `source`.
struct Origin<'a> {
    /// Commit (or snapshot) time, epoch microseconds.
    ts_us: i64,
    snapshot: &'a str,
    sequence: Option<String>,
    tx_id: Option<i64>,
    lsn: Option<i64>,
}

/// A transaction being read from the stream.
struct Tx {
    xid: u32,
    /// The commit record's LSN: the transaction's place in the stream.
    commit_lsn: u64,
    ts_us: i64,
    /// Events of this transaction so far.
    events: u64,
}

/// The snapshot in progress.
struct Snapshot {
    client: Client,
    tables: VecDeque<(String, String)>,
    /// The table whose cursor is open.
    current: Option<Arc<Table>>,
    /// The slot's consistent point (0 without a slot).
    lsn: u64,
    ts_us: i64,
    /// The last row read, held back so that the snapshot's last record can say so.
    held: Option<(Arc<Table>, Vec<Value>)>,
    emitted: bool,
    rows: u64,
}

/// The replication stream.
struct Stream {
    client: ReplicationClient,
    relations: HashMap<u32, Option<Arc<Table>>>,
    tx: Option<Tx>,
    /// The LSN of the last commit read, for `source.sequence`.
    last_commit: Option<u64>,
    /// A position every change before which was read: the end of the last commit, or the
    /// server's position in a keepalive between transactions.
    quiet_lsn: u64,
    /// Events up to (commit LSN, event number) were committed before this start.
    skip: Option<(u64, u64)>,
    acked: u64,
}

#[derive(Default)]
struct CdcTask {
    settings: Option<Settings>,
    prefix: String,
    slot: String,
    publication: String,
    filter: Filter,
    partition: Option<Arc<str>>,
    fetch: usize,
    heartbeat: Option<Duration>,
    heartbeat_topic: String,
    last_heartbeat: Option<Instant>,
    tombstones: bool,
    skipped: Vec<String>,
    /// Catalog lookups while streaming.
    catalog: Option<Client>,
    snapshot: Option<Snapshot>,
    /// The replication session: waiting (during a snapshot) or streaming.
    replication: Option<ReplicationClient>,
    stream: Option<Stream>,
    pending: VecDeque<SourceRecord>,
    /// `initial_only` finished its snapshot.
    done: bool,
    events: Events,
}

/// Columns of a table from the catalog: name, type, modifier, NOT NULL, place in the
/// primary key.
async fn catalog_columns(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<(String, u32, i32, bool, Option<i32>)>, TaskError> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid::int8, a.atttypmod, a.attnotnull, \
               (SELECT array_position(i.indkey::int2[], a.attnum)::int4 FROM pg_index i \
                 WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(|e| pg_error(&format!("read the columns of {schema}.{table}"), e))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, i64>(1) as u32,
                r.get::<_, i32>(2),
                r.get::<_, bool>(3),
                r.get::<_, Option<i32>>(4),
            )
        })
        .collect())
}

fn key_order(positions: &[Option<i32>]) -> Vec<usize> {
    let mut key: Vec<(i32, usize)> = positions
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.map(|p| (p, i)))
        .collect();
    key.sort();
    key.into_iter().map(|(_, i)| i).collect()
}

/// The tables the publication carries that the filter keeps.
async fn published_tables(
    client: &Client,
    publication: &str,
    filter: &Filter,
) -> Result<Vec<(String, String)>, TaskError> {
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2",
            &[&publication],
        )
        .await
        .map_err(|e| pg_error("list the publication's tables", e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .filter(|(s, t)| filter.keeps(s, t))
        .collect())
}

#[async_trait]
impl SourceTask for CdcTask {
    async fn start(&mut self, ctx: SourceTaskContext) -> Result<(), TaskError> {
        let config = &ctx.config;
        let settings = Settings::from_config(config)?;
        self.prefix = config.required(TOPIC_PREFIX)?.trim().to_string();
        self.slot = config.get_or(SLOT, "debezium").trim().to_string();
        self.publication = config
            .get_or(PUBLICATION, "dbz_publication")
            .trim()
            .to_string();
        self.filter = Filter::from_config(config, FILTER_KEYS)?;
        self.fetch = config.parse_or(SNAPSHOT_FETCH, 10_240usize)?.max(1);
        let heartbeat = config.parse_or(HEARTBEAT, 0u64)?;
        self.heartbeat = (heartbeat > 0).then(|| Duration::from_millis(heartbeat));
        self.heartbeat_topic = format!(
            "{}.{}",
            config
                .get_or(HEARTBEAT_PREFIX, "__debezium-heartbeat")
                .trim(),
            self.prefix
        );
        self.tombstones = config.parse_or(TOMBSTONES, true)?;
        self.skipped = sluice_connector_jdbc::list(config.get_or(SKIPPED, "t"));
        let plugin = config.get_or(PLUGIN, "pgoutput").trim();
        if plugin != "pgoutput" {
            return Err(TaskError::fatal(format!(
                "{PLUGIN} {plugin:?} is not supported: use pgoutput, PostgreSQL's built-in plugin"
            )));
        }
        let mode_text = config.get_or(SNAPSHOT_MODE, "initial");
        let mode = SnapshotMode::parse(mode_text)
            .ok_or_else(|| TaskError::fatal(format!("invalid {SNAPSHOT_MODE} {mode_text:?}")))?;
        let partition: Arc<str> = json!({ "server": self.prefix }).to_string().into();
        self.partition = Some(partition.clone());
        self.events = Events {
            prefix: self.prefix.clone(),
            dbname: settings.dbname.clone(),
            partition: partition.clone(),
        };

        let client = settings.connect().await?;
        check_wal_level(&client).await?;
        self.ensure_publication(&client, config.get_or(AUTOCREATE, "all_tables").trim())
            .await?;

        let offset = ctx.offset(&partition);
        match &offset {
            Some(o) => tracing::info!("resuming after offset {o}"),
            None => tracing::info!("no stored offset"),
        }
        let snapshot_done = snapshot_completed(offset.as_ref());
        let snapshot = match mode {
            SnapshotMode::Never => false,
            SnapshotMode::Always => true,
            SnapshotMode::Initial | SnapshotMode::InitialOnly | SnapshotMode::WhenNeeded => {
                !snapshot_done
            }
        };
        if mode == SnapshotMode::InitialOnly {
            if snapshot {
                let snap = settings.connect().await?;
                snap.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await
                    .map_err(|e| pg_error("begin the snapshot", e))?;
                self.begin_snapshot(snap, 0).await?;
            } else {
                self.done = true;
            }
            self.catalog = Some(client);
            self.settings = Some(settings);
            return Ok(());
        }

        let slot = client
            .query_opt(
                "SELECT plugin::text, database::text, active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .map_err(|e| pg_error("look up the replication slot", e))?;
        if let Some(row) = &slot {
            let (plugin, database): (Option<String>, Option<String>) = (row.get(0), row.get(1));
            if plugin.as_deref() != Some("pgoutput")
                || database.as_deref() != Some(&settings.dbname)
            {
                return Err(TaskError::fatal(format!(
                    "replication slot {:?} exists for plugin {plugin:?} on database {database:?}, not pgoutput on {:?}: choose another {SLOT}",
                    self.slot, settings.dbname
                )));
            }
            if snapshot {
                // A snapshot needs the slot's exported snapshot: the slot is made again.
                if let Some(pid) = row.get::<_, Option<i32>>(2) {
                    return Err(TaskError::retriable(format!(
                        "replication slot {:?} is in use by server process {pid}",
                        self.slot
                    )));
                }
                client
                    .execute("SELECT pg_drop_replication_slot($1)", &[&self.slot])
                    .await
                    .map_err(|e| pg_error("drop the replication slot to snapshot again", e))?;
            }
        }
        let mut replication = settings.replication(&self.slot, &self.publication).await?;
        if snapshot {
            let rows = replication
                .simple_query(&format!(
                    "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                    quote(&self.slot)
                ))
                .await
                .map_err(|e| {
                    TaskError::retriable(format!("create replication slot {:?}: {e}", self.slot))
                })?;
            let text = |i: usize| -> Option<String> {
                rows.first()?
                    .get(i)?
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
            };
            let (Some(lsn), Some(name)) = (text(1), text(2)) else {
                return Err(TaskError::retriable(
                    "CREATE_REPLICATION_SLOT answered no snapshot",
                ));
            };
            let lsn = Lsn::parse(&lsn)
                .map_err(|e| TaskError::retriable(format!("the slot's consistent point: {e}")))?;
            let snap = settings.connect().await?;
            snap.batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                name.replace('\'', "''")
            ))
            .await
            .map_err(|e| pg_error("import the slot's snapshot", e))?;
            tracing::info!(
                "replication slot {:?} created at {}; snapshot {name} begins",
                self.slot,
                lsn.to_pg_string()
            );
            self.replication = Some(replication);
            self.begin_snapshot(snap, lsn.as_u64()).await?;
        } else {
            if slot.is_none() {
                if offset.is_some() {
                    tracing::warn!(
                        "replication slot {:?} is gone: it is created again, and changes made while it was missing are not captured",
                        self.slot
                    );
                }
                replication
                    .simple_query(&format!(
                        "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
                        quote(&self.slot)
                    ))
                    .await
                    .map_err(|e| {
                        TaskError::retriable(format!(
                            "create replication slot {:?}: {e}",
                            self.slot
                        ))
                    })?;
            }
            let skip = offset.as_ref().and_then(|o| {
                Some((
                    o.get("lsn_commit")?.as_u64()?,
                    o.get("event").and_then(|e| e.as_u64()).unwrap_or(u64::MAX),
                ))
            });
            self.start_stream(replication, skip).await?;
        }
        self.catalog = Some(client);
        self.settings = Some(settings);
        Ok(())
    }

    async fn poll(&mut self, max_records: usize) -> Result<Vec<SourceRecord>, TaskError> {
        let max = max_records.max(1);
        if self.pending.is_empty() {
            if self.snapshot.is_some() {
                self.read_snapshot(max).await?;
            } else if self.stream.is_some() {
                self.read_stream(max).await?;
            } else {
                tokio::time::sleep(IDLE_WAIT).await;
            }
        }
        let take = max.min(self.pending.len());
        Ok(self.pending.drain(..take).collect())
    }

    async fn commit(&mut self, positions: &[(Arc<str>, String)]) -> Result<(), TaskError> {
        let (Some(stream), Some(partition)) = (self.stream.as_mut(), self.partition.as_ref())
        else {
            return Ok(());
        };
        let Some((_, offset)) = positions.iter().rev().find(|(p, _)| p == partition) else {
            return Ok(());
        };
        let lsn = serde_json::from_str::<serde_json::Value>(offset)
            .ok()
            .and_then(|o| o.get("lsn_commit")?.as_u64());
        if let Some(lsn) = lsn.filter(|&l| l > stream.acked) {
            stream.acked = lsn;
            stream.client.update_applied_lsn(Lsn::from_u64(lsn));
        }
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), TaskError> {
        if let Some(mut stream) = self.stream.take() {
            // Let the last confirmation reach the server before the session ends.
            if stream.client.feedback_pending_since().is_some() {
                tokio::time::sleep(Duration::from_millis(1200)).await;
            }
            let _ = stream.client.shutdown().await;
        }
        Ok(())
    }
}

impl CdcTask {
    async fn ensure_publication(&self, client: &Client, mode: &str) -> Result<(), TaskError> {
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&self.publication],
            )
            .await
            .map_err(|e| pg_error("look up the publication", e))?
            .is_some();
        let name = quote(&self.publication);
        match mode {
            "disabled" if !exists => Err(TaskError::fatal(format!(
                "publication {:?} does not exist and {AUTOCREATE} is disabled: create it (CREATE PUBLICATION {name} FOR TABLE …)",
                self.publication
            ))),
            "disabled" => Ok(()),
            "all_tables" if exists => Ok(()),
            "all_tables" => client
                .batch_execute(&format!("CREATE PUBLICATION {name} FOR ALL TABLES"))
                .await
                .map_err(|e| pg_error(&format!("create publication {:?}", self.publication), e)),
            "filtered" => {
                let rows = client
                    .query(
                        "SELECT table_schema::text, table_name::text FROM information_schema.tables \
                         WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') \
                         ORDER BY 1, 2",
                        &[],
                    )
                    .await
                    .map_err(|e| pg_error("list tables", e))?;
                let tables: Vec<String> = rows
                    .iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                    .filter(|(s, t)| self.filter.keeps(s, t))
                    .map(|(s, t)| format!("{}.{}", quote(&s), quote(&t)))
                    .collect();
                if tables.is_empty() {
                    return Err(TaskError::fatal(format!(
                        "no table matches {TABLE_INCLUDE}/{SCHEMA_INCLUDE}: the filtered publication would be empty"
                    )));
                }
                let verb = if exists { "ALTER PUBLICATION" } else { "CREATE PUBLICATION" };
                let set = if exists { "SET TABLE" } else { "FOR TABLE" };
                client
                    .batch_execute(&format!("{verb} {name} {set} {}", tables.join(", ")))
                    .await
                    .map_err(|e| pg_error(&format!("make publication {:?}", self.publication), e))
            }
            other => Err(TaskError::fatal(format!("invalid {AUTOCREATE} {other:?}"))),
        }
    }

    async fn begin_snapshot(&mut self, client: Client, lsn: u64) -> Result<(), TaskError> {
        let tables = published_tables(&client, &self.publication, &self.filter).await?;
        tracing::info!("snapshot of {} tables", tables.len());
        self.snapshot = Some(Snapshot {
            client,
            tables: tables.into(),
            current: None,
            lsn,
            ts_us: now_micros(),
            held: None,
            emitted: false,
            rows: 0,
        });
        Ok(())
    }

    async fn start_stream(
        &mut self,
        mut client: ReplicationClient,
        skip: Option<(u64, u64)>,
    ) -> Result<(), TaskError> {
        client
            .start()
            .await
            .map_err(|e| TaskError::retriable(format!("start replication: {e}")))?;
        client.wait_started().await.map_err(|e| {
            TaskError::retriable(format!("start replication from slot {:?}: {e}", self.slot))
        })?;
        tracing::info!("streaming from replication slot {:?}", self.slot);
        self.stream = Some(Stream {
            client,
            relations: HashMap::new(),
            tx: None,
            last_commit: None,
            quiet_lsn: 0,
            skip,
            acked: 0,
        });
        self.last_heartbeat = Some(Instant::now());
        Ok(())
    }

    /// Up to `max` more rows of the snapshot; at its end, the stream starts.
    async fn read_snapshot(&mut self, max: usize) -> Result<(), TaskError> {
        let Some(snap) = self.snapshot.as_mut() else {
            return Ok(());
        };
        while self.pending.len() < max {
            let Some(table) = snap.current.clone() else {
                let Some((schema, name)) = snap.tables.pop_front() else {
                    break;
                };
                let columns = catalog_columns(&snap.client, &schema, &name).await?;
                let key = key_order(&columns.iter().map(|c| c.4).collect::<Vec<_>>());
                let columns = columns
                    .into_iter()
                    .map(|(name, oid, typmod, not_null, _)| Column {
                        name,
                        ty: PgType::of(oid, typmod),
                        optional: !not_null,
                    })
                    .collect();
                let table = Arc::new(Table::new(&self.prefix, &schema, &name, columns, key));
                snap.client
                    .batch_execute(&format!(
                        "DECLARE sluice_snapshot NO SCROLL CURSOR FOR SELECT * FROM {}.{}",
                        quote(&schema),
                        quote(&name)
                    ))
                    .await
                    .map_err(|e| pg_error(&format!("read {schema}.{name}"), e))?;
                snap.current = Some(table);
                continue;
            };
            let messages = snap
                .client
                .simple_query(&format!(
                    "FETCH FORWARD {} FROM sluice_snapshot",
                    self.fetch
                ))
                .await
                .map_err(|e| pg_error(&format!("read {}.{}", table.schema, table.name), e))?;
            let mut rows = 0;
            for message in messages {
                if let SimpleQueryMessage::Row(row) = message {
                    rows += 1;
                    snap.rows += 1;
                    let values = table.snapshot_values(&row)?;
                    if let Some((t, v)) = snap.held.replace((table.clone(), values)) {
                        let marker = if snap.emitted { "true" } else { "first" };
                        snap.emitted = true;
                        let record = snapshot_record(&self.events, snap, &t, v, marker, false);
                        self.pending.push_back(record);
                    }
                }
            }
            if rows == 0 {
                snap.client
                    .batch_execute("CLOSE sluice_snapshot")
                    .await
                    .map_err(|e| pg_error("close the snapshot cursor", e))?;
                snap.current = None;
            }
        }
        if snap.current.is_some() || !snap.tables.is_empty() {
            return Ok(());
        }
        // The snapshot is read: its last record says so, and the stream begins.
        let Some(snap) = self.snapshot.take() else {
            return Ok(());
        };
        if let Some((t, v)) = &snap.held {
            let record = snapshot_record(&self.events, &snap, t, v.clone(), "last", true);
            self.pending.push_back(record);
        }
        snap.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg_error("end the snapshot", e))?;
        tracing::info!(
            "snapshot complete: {} rows; {} records to send",
            snap.rows,
            self.pending.len()
        );
        match self.replication.take() {
            Some(replication) => self.start_stream(replication, None).await?,
            None => self.done = true,
        }
        Ok(())
    }

    /// Events from the stream until `max` records are pending or it is quiet for a while.
    async fn read_stream(&mut self, max: usize) -> Result<(), TaskError> {
        let deadline = Instant::now() + IDLE_WAIT;
        while self.pending.len() < max {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(());
            };
            let wait = if self.pending.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let event = match tokio::time::timeout(wait, stream.client.recv()).await {
                Err(_) => break,
                Ok(Ok(Some(event))) => event,
                Ok(Ok(None)) => {
                    return Err(TaskError::retriable("the replication stream ended"));
                }
                Ok(Err(e)) => {
                    return Err(TaskError::retriable(format!("replication stream: {e}")));
                }
            };
            self.on_event(event).await?;
            if wait.is_zero() && self.pending.is_empty() && Instant::now() >= deadline {
                break;
            }
        }
        self.maybe_heartbeat();
        Ok(())
    }

    fn maybe_heartbeat(&mut self) {
        let (Some(every), Some(stream)) = (self.heartbeat, self.stream.as_ref()) else {
            return;
        };
        if stream.tx.is_some()
            || !self.pending.is_empty()
            || self.last_heartbeat.is_some_and(|at| at.elapsed() < every)
        {
            return;
        }
        self.last_heartbeat = Some(Instant::now());
        let position = stream.quiet_lsn.max(stream.acked);
        self.pending.push_back(heartbeat(
            self.partition.clone(),
            json!({ "lsn_commit": position, "event": 0 }).to_string(),
            &self.heartbeat_topic,
            &self.prefix,
        ));
    }

    async fn on_event(&mut self, event: ReplicationEvent) -> Result<(), TaskError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => {
                stream.tx = Some(Tx {
                    xid,
                    commit_lsn: final_lsn.as_u64(),
                    ts_us: commit_time_micros + PG_EPOCH_MICROS,
                    events: 0,
                });
            }
            ReplicationEvent::Commit { lsn, end_lsn, .. } => {
                stream.tx = None;
                stream.last_commit = Some(lsn.as_u64());
                stream.quiet_lsn = stream.quiet_lsn.max(end_lsn.as_u64());
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                if stream.tx.is_none() {
                    stream.quiet_lsn = stream.quiet_lsn.max(wal_end.as_u64());
                }
            }
            ReplicationEvent::XLogData {
                wal_start, data, ..
            } => {
                let message = pgoutput::decode(&data).map_err(|e| {
                    TaskError::fatal(format!(
                        "undecodable pgoutput message at {}: {e}",
                        wal_start.to_pg_string()
                    ))
                })?;
                self.on_message(message, wal_start.as_u64()).await?;
            }
            ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(())
    }

    async fn on_message(&mut self, message: Message, lsn: u64) -> Result<(), TaskError> {
        if let Message::Relation {
            id,
            namespace,
            name,
            columns,
            ..
        } = &message
        {
            let table = if self.filter.keeps(namespace, name) {
                let catalog = self
                    .catalog
                    .as_ref()
                    .ok_or_else(|| TaskError::fatal("no catalog session"))?;
                let known = catalog_columns(catalog, namespace, name).await?;
                let lookup = |n: &str| known.iter().find(|c| c.0 == n);
                let key = key_order(
                    &columns
                        .iter()
                        .map(|c| lookup(&c.name).and_then(|k| k.4))
                        .collect::<Vec<_>>(),
                );
                let columns = columns
                    .iter()
                    .map(|c| Column {
                        name: c.name.clone(),
                        ty: PgType::of(c.type_oid, c.type_modifier),
                        optional: !lookup(&c.name).is_some_and(|k| k.3),
                    })
                    .collect();
                Some(Arc::new(Table::new(
                    &self.prefix,
                    namespace,
                    name,
                    columns,
                    key,
                )))
            } else {
                None
            };
            if let Some(stream) = self.stream.as_mut() {
                stream.relations.insert(*id, table);
            }
            return Ok(());
        }
        let relation_ids: Vec<u32> = match &message {
            Message::Insert { relation, .. }
            | Message::Update { relation, .. }
            | Message::Delete { relation, .. } => vec![*relation],
            Message::Truncate { relations, .. } => relations.clone(),
            _ => return Ok(()),
        };
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        let Some(tx) = stream.tx.as_mut() else {
            return Err(TaskError::fatal(format!(
                "a change at {} outside a transaction",
                Lsn::from_u64(lsn).to_pg_string()
            )));
        };
        tx.events += 1;
        let position = (tx.commit_lsn, tx.events);
        if stream.skip.is_some_and(|s| position <= s) {
            return Ok(());
        }
        let offset = json!({
            "lsn_commit": tx.commit_lsn,
            "event": tx.events,
            "txId": tx.xid,
            "ts_usec": tx.ts_us,
            "lsn": lsn,
        })
        .to_string();
        let sequence =
            json!([stream.last_commit.map(|l| l.to_string()), lsn.to_string()]).to_string();
        let origin = Origin {
            ts_us: tx.ts_us,
            snapshot: "false",
            sequence: Some(sequence),
            tx_id: Some(i64::from(tx.xid)),
            lsn: Some(lsn as i64),
        };
        let mut tables = Vec::new();
        for id in &relation_ids {
            match stream.relations.get(id) {
                Some(Some(t)) => tables.push(t.clone()),
                Some(None) => {}
                None => {
                    return Err(TaskError::fatal(format!(
                        "a change of relation {id}, which the stream has not described"
                    )))
                }
            }
        }
        let Some(table) = tables.first().cloned() else {
            return Ok(());
        };
        let op = match &message {
            Message::Insert { .. } => "c",
            Message::Update { .. } => "u",
            Message::Delete { .. } => "d",
            _ => "t",
        };
        if self.skipped.iter().any(|s| s == op) {
            return Ok(());
        }
        let mut out = Vec::new();
        match message {
            Message::Insert { new, .. } => {
                let after = table.values(&new, None)?;
                out.push(self.change(&table, "c", None, Some(after), &origin, &offset));
            }
            Message::Update {
                old, key_only, new, ..
            } => {
                let before = old.as_ref().map(|o| table.values(o, None)).transpose()?;
                let after = table.values(&new, before.as_deref())?;
                match before {
                    // The key changed: Debezium's delete, tombstone and create.
                    Some(before) if key_only => {
                        out.extend(self.delete(&table, before, &origin, &offset));
                        out.push(self.change(&table, "c", None, Some(after), &origin, &offset));
                    }
                    before => {
                        out.push(self.change(&table, "u", before, Some(after), &origin, &offset))
                    }
                }
            }
            Message::Delete { old, .. } => {
                let before = table.values(&old, None)?;
                out.extend(self.delete(&table, before, &origin, &offset));
            }
            _ => {
                for t in &tables {
                    let mut record = self.change(t, "t", None, None, &origin, &offset);
                    record.key = Data::default();
                    out.push(record);
                }
            }
        }
        self.pending.extend(out);
        Ok(())
    }

    fn delete(
        &self,
        table: &Table,
        before: Vec<Value>,
        origin: &Origin,
        offset: &str,
    ) -> Vec<SourceRecord> {
        let record = self.change(table, "d", Some(before), None, origin, offset);
        let mut out = vec![record];
        if self.tombstones {
            let mut tombstone = out[0].clone();
            tombstone.value = Data::default();
            out.push(tombstone);
        }
        out
    }

    /// A change event in Debezium's envelope.
    fn change(
        &self,
        table: &Table,
        op: &str,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
        origin: &Origin,
        offset: &str,
    ) -> SourceRecord {
        self.events
            .record(table, op, before, after, origin, offset.to_string())
    }
}

/// A snapshot row's read event; `marker` is `source.snapshot` (first, true, last).
fn snapshot_record(
    events: &Events,
    snap: &Snapshot,
    table: &Table,
    values: Vec<Value>,
    marker: &str,
    last: bool,
) -> SourceRecord {
    let offset = json!({
        "snapshot": true,
        "last_snapshot_record": last,
        "lsn": snap.lsn,
        "ts_usec": snap.ts_us,
    })
    .to_string();
    let origin = Origin {
        ts_us: snap.ts_us,
        snapshot: marker,
        sequence: None,
        tx_id: None,
        lsn: (snap.lsn > 0).then_some(snap.lsn as i64),
    };
    events.record(table, "r", None, Some(values), &origin, offset)
}

/// What names every event: the logical server (`topic.prefix`), the database, and the
/// source partition.
#[derive(Default)]
struct Events {
    prefix: String,
    dbname: String,
    partition: Arc<str>,
}

impl Events {
    /// A change event in Debezium's envelope.
    fn record(
        &self,
        table: &Table,
        op: &str,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
        origin: &Origin,
        offset: String,
    ) -> SourceRecord {
        let (prefix, dbname) = (self.prefix.as_str(), self.dbname.as_str());
        let key = match (&after, &before) {
            (Some(values), _) | (None, Some(values)) => table.key(values),
            (None, None) => Data::default(),
        };
        let source = structure(vec![
            string(env!("CARGO_PKG_VERSION")),
            string("postgresql"),
            string(prefix),
            int(origin.ts_us.div_euclid(1000)),
            string(origin.snapshot),
            string(dbname),
            origin.sequence.as_deref().map_or_else(null, string),
            int(origin.ts_us),
            int(origin.ts_us.saturating_mul(1000)),
            string(&table.schema),
            string(&table.name),
            origin.tx_id.map_or_else(null, int),
            origin.lsn.map_or_else(null, int),
            null(),
        ]);
        let value = envelope(before, after, source, op);
        SourceRecord {
            source_partition: Some(self.partition.clone()),
            source_offset: Some(offset),
            topic: table.topic.clone(),
            kafka_partition: None,
            key,
            value: structured(table.envelope.clone(), value),
            headers: Vec::new(),
            timestamp_ms: None,
            transaction: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_fields_are_in_debeziums_order() {
        let table = Table::new(
            "srv",
            "public",
            "t",
            vec![
                Column {
                    name: "id".into(),
                    ty: PgType::Int32,
                    optional: false,
                },
                Column {
                    name: "v".into(),
                    ty: PgType::String,
                    optional: true,
                },
            ],
            vec![0],
        );
        let names: Vec<&str> = table
            .envelope
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "before",
                "after",
                "source",
                "transaction",
                "op",
                "ts_ms",
                "ts_us",
                "ts_ns"
            ]
        );
        assert_eq!(
            table.envelope.name.as_deref(),
            Some("srv.public.t.Envelope")
        );
        assert_eq!(table.topic, "srv.public.t");
        let source = source_schema();
        let names: Vec<&str> = source.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "version",
                "connector",
                "name",
                "ts_ms",
                "snapshot",
                "db",
                "sequence",
                "ts_us",
                "ts_ns",
                "schema",
                "table",
                "txId",
                "lsn",
                "xmin"
            ]
        );
        assert_eq!(key_order(&[None, Some(2), Some(1)]), vec![2, 1]);
    }
}
