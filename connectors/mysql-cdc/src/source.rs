//! `MySqlCdcSource`: Debezium's MySQL connector with its keys and its envelope, for MariaDB
//! and MySQL. A snapshot read in a consistent-snapshot transaction whose binlog position the
//! server names (MariaDB's `binlog_snapshot_file`/`_position`, or MySQL's position under a
//! brief global read lock), then the binlog from that position as a replica reads it: nothing
//! falls between them and nothing is read twice. Each event's offset names the transaction's
//! first event and how many changes of it were sent, so a restart reads the transaction again
//! and skips what was committed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Row, Value as My};
use serde_json::json;
use sluice_connector_sdk::proto::{
    ConfigDef, ConfigType, Data, FieldError, Importance, Schema, SchemaType, Value,
};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, SourceConnector, SourceRecord, SourceTask,
    SourceTaskContext, TaskError,
};
use sluice_debezium::{
    envelope, envelope_schema, field, heartbeat, int, now_micros, null, patterns, plain,
    row_schema, snapshot_completed, snapshot_schema, string, structure, structured, Filter,
    FilterKeys, SnapshotMode,
};
use tokio::sync::mpsc;

use crate::types::{ColumnInfo, MyType, Origin};

const HOSTNAME: &str = "database.hostname";
const PORT: &str = "database.port";
const USER: &str = "database.user";
const PASSWORD: &str = "database.password";
const SERVER_ID: &str = "database.server.id";
const TOPIC_PREFIX: &str = "topic.prefix";
const DATABASE_INCLUDE: &str = "database.include.list";
const DATABASE_EXCLUDE: &str = "database.exclude.list";
const TABLE_INCLUDE: &str = "table.include.list";
const TABLE_EXCLUDE: &str = "table.exclude.list";
const SNAPSHOT_MODE: &str = "snapshot.mode";
const SNAPSHOT_FETCH: &str = "snapshot.fetch.size";
const HEARTBEAT: &str = "heartbeat.interval.ms";
const HEARTBEAT_PREFIX: &str = "topic.heartbeat.prefix";
const TOMBSTONES: &str = "tombstones.on.delete";
const SKIPPED: &str = "skipped.operations";
const SCHEMA_CHANGES: &str = "include.schema.changes";
const HISTORY_TOPIC: &str = "schema.history.internal.kafka.topic";
const HISTORY_SERVERS: &str = "schema.history.internal.kafka.bootstrap.servers";
const FILTER_KEYS: FilterKeys = FilterKeys {
    container_include: DATABASE_INCLUDE,
    container_exclude: DATABASE_EXCLUDE,
    table_include: TABLE_INCLUDE,
    table_exclude: TABLE_EXCLUDE,
};
/// Databases that are the server's own, never captured.
const SYSTEM_DATABASES: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// How long an idle poll waits for the binlog before returning nothing.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// MariaDB's GTID event, which opens a transaction in its binlog.
const MARIADB_GTID_EVENT: u8 = 0xa2;
/// The server's heartbeat on a quiet binlog.
const HEARTBEAT_EVENT: u8 = 0x1b;
/// An event the server made up for the stream (not at a position of the binlog).
const ARTIFICIAL: u16 = 0x20;

pub struct MySqlCdcSource;

impl Connector for MySqlCdcSource {
    fn class_name(&self) -> &'static str {
        "MySqlCdcSource"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "io.debezium.connector.mysql.MySqlConnector",
            "MySqlConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Change data capture from MariaDB and MySQL (the row-based binlog) in Debezium's envelope, with Debezium's keys"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let def = ConfigDefBuilder::new;
        vec![
            def(HOSTNAME, ConfigType::String)
                .importance(Importance::High)
                .doc("The server's host")
                .build(),
            def(PORT, ConfigType::Int)
                .default_value("3306")
                .importance(Importance::High)
                .doc("The server's port")
                .build(),
            def(USER, ConfigType::String)
                .importance(Importance::High)
                .doc("A user with SELECT, RELOAD, REPLICATION SLAVE and REPLICATION CLIENT")
                .build(),
            def(PASSWORD, ConfigType::Password)
                .default_value("")
                .importance(Importance::High)
                .doc("The user's password")
                .build(),
            // A string, so that "unset" can choose one: two replicas with one id cut each
            // other off, so Debezium's default is random too.
            def(SERVER_ID, ConfigType::String)
                .default_value("")
                .importance(Importance::High)
                .doc("The replica server id the connector reads the binlog as; unique among the server's replicas (default: 5400-6399 by process)")
                .build(),
            def(TOPIC_PREFIX, ConfigType::String)
                .importance(Importance::High)
                .doc("The logical server name: topics are <prefix>.<database>.<table>, and it names the offsets")
                .build(),
            def(DATABASE_INCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching the databases to capture; empty for all")
                .build(),
            def(DATABASE_EXCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching databases not to capture")
                .build(),
            def(TABLE_INCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching database.table of the tables to capture; empty for all")
                .build(),
            def(TABLE_EXCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching database.table of tables not to capture")
                .build(),
            def(SNAPSHOT_MODE, ConfigType::String)
                .default_value("initial")
                .valid_values(&[
                    "initial",
                    "initial_only",
                    "when_needed",
                    "always",
                    "never",
                    "no_data",
                    "schema_only",
                ])
                .doc("initial: snapshot unless a snapshot completed, then read the binlog; when_needed: also when the stored binlog file is gone; always: on every start; never/no_data/schema_only: binlog only; initial_only: snapshot and stop")
                .build(),
            def(SNAPSHOT_FETCH, ConfigType::Int)
                .default_value("10240")
                .doc("Rows of the snapshot read ahead of the worker")
                .build(),
            def(HEARTBEAT, ConfigType::Int)
                .default_value("0")
                .doc("Milliseconds between heartbeat records (0: none); they carry the binlog position while captured tables are quiet")
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
                .doc("Operations not to emit: c, u, d, or none")
                .build(),
            def(SCHEMA_CHANGES, ConfigType::Boolean)
                .default_value("true")
                .doc("Accepted for Debezium files; schema change events are not produced (the schema is read from information_schema)")
                .build(),
            def(HISTORY_TOPIC, ConfigType::String)
                .default_value("")
                .doc("Accepted for Debezium files and not used: no schema history topic is kept")
                .build(),
            def(HISTORY_SERVERS, ConfigType::String)
                .default_value("")
                .doc("Accepted for Debezium files and not used")
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
                let key = if e.message.starts_with(SERVER_ID) {
                    SERVER_ID
                } else {
                    HOSTNAME
                };
                errors.push(FieldError {
                    name: key.into(),
                    message: e.message,
                });
                return errors;
            }
        };
        let checked = sluice_connector_jdbc::block_on(async move {
            let mut conn = settings.connect().await?;
            let checked = check_binlog(&mut conn).await;
            let _ = conn.disconnect().await;
            checked
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
        // One binlog, one reader: one task, as Debezium's MySQL connector.
        Ok(vec![config.clone()])
    }
}

impl SourceConnector for MySqlCdcSource {
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
    server_id: u32,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Settings, TaskError> {
        let server_id = match config.get_or(SERVER_ID, "").trim() {
            "" => 5400 + std::process::id() % 1000,
            text => text.parse().map_err(|_| {
                TaskError::fatal(format!(
                    "{SERVER_ID} {text:?} is not a server id (1 to 4294967295)"
                ))
            })?,
        };
        Ok(Settings {
            host: config.required(HOSTNAME)?.trim().to_string(),
            port: config.parse_or(PORT, 3306u16)?,
            user: config.required(USER)?.trim().to_string(),
            password: config.get_or(PASSWORD, "").to_string(),
            server_id,
        })
    }

    async fn connect(&self) -> Result<Conn, TaskError> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()).filter(|p| !p.is_empty()))
            .prefer_socket(false)
            .init(vec!["SET time_zone = '+00:00'", "SET NAMES utf8mb4"]);
        tokio::time::timeout(Duration::from_secs(10), Conn::new(opts))
            .await
            .map_err(|_| {
                TaskError::retriable(format!(
                    "connect to {}:{}: timed out after 10 s",
                    self.host, self.port
                ))
            })?
            .map_err(|e| my_error(&format!("connect to {}:{}", self.host, self.port), e))
    }
}

fn my_error(context: &str, e: mysql_async::Error) -> TaskError {
    TaskError::retriable(format!("{context}: {e}"))
}

async fn query<T: mysql_async::prelude::FromRow + Send + 'static>(
    conn: &mut Conn,
    sql: &str,
) -> Result<Vec<T>, TaskError> {
    conn.query(sql).await.map_err(|e| my_error(sql, e))
}

/// Refuses a server whose binlog a change data capture cannot read rows from.
async fn check_binlog(conn: &mut Conn) -> Result<(), TaskError> {
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = query(
        conn,
        "SELECT CAST(@@log_bin AS CHAR), @@binlog_format, @@binlog_row_image",
    )
    .await?;
    let Some((log_bin, format, image)) = rows.into_iter().next() else {
        return Err(TaskError::retriable(
            "the server answered no binlog settings",
        ));
    };
    if !matches!(log_bin.as_deref(), Some("1" | "ON")) {
        return Err(TaskError::fatal(
            "the server's binary log is off, and change data capture reads it: start the server with log_bin (e.g. --log-bin=binlog), binlog_format=ROW and a server_id",
        ));
    }
    let format = format.unwrap_or_default();
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(TaskError::fatal(format!(
            "the server's binlog_format is {format}, and change data capture needs ROW: SET GLOBAL binlog_format = 'ROW' (and binlog_format=ROW in the server's configuration)"
        )));
    }
    let image = image.unwrap_or_default();
    if !image.eq_ignore_ascii_case("FULL") {
        return Err(TaskError::fatal(format!(
            "the server's binlog_row_image is {image}, and change data capture needs FULL: SET GLOBAL binlog_row_image = 'FULL'"
        )));
    }
    Ok(())
}

/// The server's binlog files.
async fn binlog_files(conn: &mut Conn) -> Result<Vec<String>, TaskError> {
    let rows: Vec<Row> = query(conn, "SHOW BINARY LOGS").await?;
    Ok(rows
        .into_iter()
        .filter_map(|mut r| r.take::<String, _>(0))
        .collect())
}

/// The server's current binlog position.
async fn master_position(conn: &mut Conn) -> Result<(String, u64), TaskError> {
    let rows: Vec<Row> = query(conn, "SHOW MASTER STATUS").await?;
    let mut row = rows
        .into_iter()
        .next()
        .ok_or_else(|| TaskError::fatal("SHOW MASTER STATUS is empty: is log_bin on?"))?;
    match (row.take::<String, _>(0), row.take::<u64, _>(1)) {
        (Some(file), Some(pos)) => Ok((file, pos)),
        _ => Err(TaskError::retriable(
            "SHOW MASTER STATUS answered no position",
        )),
    }
}

fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// A captured column.
#[derive(Clone, Debug)]
struct Column {
    name: String,
    ty: MyType,
    optional: bool,
    /// Its place in the table's rows (columns the connector leaves out have one too).
    index: usize,
}

/// A captured table with its Debezium schemas, built from `information_schema`.
struct Table {
    db: String,
    name: String,
    /// Every column of the table, the captured ones among them.
    width: usize,
    columns: Vec<Column>,
    /// Primary key columns (places in `columns`), in key order.
    key: Vec<usize>,
    topic: String,
    key_schema: Option<Schema>,
    envelope: Schema,
}

impl Table {
    /// The table's definition now; `None` when it does not exist.
    async fn load(
        conn: &mut Conn,
        prefix: &str,
        db: &str,
        name: &str,
    ) -> Result<Option<Table>, TaskError> {
        type ColumnRow = (
            String,
            String,
            String,
            String,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<String>,
        );
        let rows: Vec<ColumnRow> = conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, \
                   NUMERIC_SCALE, DATETIME_PRECISION, CHARACTER_SET_NAME \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
                (db, name),
            )
            .await
            .map_err(|e| my_error(&format!("read the columns of {db}.{name}"), e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let key_names: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
                 ORDER BY ORDINAL_POSITION",
                (db, name),
            )
            .await
            .map_err(|e| my_error(&format!("read the primary key of {db}.{name}"), e))?;
        let width = rows.len();
        let mut columns = Vec::new();
        for (index, row) in rows.into_iter().enumerate() {
            let (column, data_type, column_type, nullable, precision, scale, dt, charset) = row;
            let info = ColumnInfo {
                data_type: &data_type,
                column_type: &column_type,
                precision,
                scale,
                datetime_precision: dt,
                charset: charset.as_deref(),
            };
            match MyType::of(&info) {
                Some(ty) => columns.push(Column {
                    name: column,
                    ty,
                    optional: nullable.eq_ignore_ascii_case("YES"),
                    index,
                }),
                None => tracing::warn!(
                    "{db}.{name} column {column:?} of type {column_type} is left out of the events: the type is not supported"
                ),
            }
        }
        let key = key_names
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        Ok(Some(Table::new(prefix, db, name, width, columns, key)))
    }

    fn new(
        prefix: &str,
        db: &str,
        name: &str,
        width: usize,
        columns: Vec<Column>,
        key: Vec<usize>,
    ) -> Table {
        let base = format!("{prefix}.{db}.{name}");
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
                    .map(|&i: &usize| field(&columns[i].name, columns[i].ty.schema(false)))
                    .collect(),
                false,
            )
        });
        Table {
            db: db.to_string(),
            name: name.to_string(),
            width,
            columns,
            key,
            topic: base.clone(),
            key_schema,
            envelope: envelope_schema(&base, row, source_schema()),
        }
    }

    /// The event values of a row of the table's width.
    fn values(&self, mut row: Vec<My>, origin: Origin) -> Result<Vec<Value>, TaskError> {
        if row.len() != self.width {
            return Err(TaskError::fatal(format!(
                "{}.{}: a row of {} columns where the table has {}: its definition changed after the row was written (a DDL while the connector was stopped?)",
                self.db,
                self.name,
                row.len(),
                self.width
            )));
        }
        self.columns
            .iter()
            .map(|c| {
                let value = std::mem::replace(&mut row[c.index], My::NULL);
                c.ty.value(value, origin, c.optional).map_err(|e| {
                    TaskError::fatal(format!(
                        "{}.{} column {:?}: {e}",
                        self.db, self.name, c.name
                    ))
                })
            })
            .collect()
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

    fn key_changed(&self, before: &[Value], after: &[Value]) -> bool {
        self.key.iter().any(|&i| before[i] != after[i])
    }
}

fn source_schema() -> Schema {
    Schema {
        r#type: SchemaType::Struct as i32,
        optional: false,
        name: Some("io.debezium.connector.mysql.Source".into()),
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
            field("table", plain(SchemaType::String, true)),
            field("server_id", plain(SchemaType::Int64, false)),
            field("gtid", plain(SchemaType::String, true)),
            field("file", plain(SchemaType::String, false)),
            field("pos", plain(SchemaType::Int64, false)),
            field("row", plain(SchemaType::Int32, false)),
            field("thread", plain(SchemaType::Int64, true)),
            field("query", plain(SchemaType::String, true)),
        ],
        ..Schema::default()
    }
}

/// Where an event came from, for `source`.
struct Place<'a> {
    /// Commit (or snapshot) time, epoch microseconds.
    ts_us: i64,
    snapshot: &'a str,
    server_id: u32,
    gtid: Option<&'a str>,
    file: &'a str,
    pos: u64,
    row: usize,
    thread: Option<u32>,
}

/// What names every event: the logical server (`topic.prefix`) and the source partition.
#[derive(Default)]
struct Events {
    prefix: String,
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
        origin: &Place,
        offset: String,
    ) -> SourceRecord {
        let key = match (&after, &before) {
            (Some(values), _) | (None, Some(values)) => table.key(values),
            (None, None) => Data::default(),
        };
        let source = structure(vec![
            string(env!("CARGO_PKG_VERSION")),
            string("mysql"),
            string(&self.prefix),
            int(origin.ts_us.div_euclid(1000)),
            string(origin.snapshot),
            string(&table.db),
            null(),
            int(origin.ts_us),
            int(origin.ts_us.saturating_mul(1000)),
            string(&table.name),
            int(i64::from(origin.server_id)),
            origin.gtid.map_or_else(null, string),
            string(origin.file),
            int(origin.pos as i64),
            int(origin.row as i64),
            origin.thread.map_or_else(null, |t| int(i64::from(t))),
            null(),
        ]);
        SourceRecord {
            source_partition: Some(self.partition.clone()),
            source_offset: Some(offset),
            topic: table.topic.clone(),
            kafka_partition: None,
            key,
            value: structured(table.envelope.clone(), envelope(before, after, source, op)),
            headers: Vec::new(),
            timestamp_ms: None,
            transaction: Default::default(),
        }
    }
}

/// What the snapshot reader sends.
enum Item {
    /// The binlog position the snapshot is consistent with.
    Position(String, u64),
    Table(Arc<Table>),
    Row(Vec<My>),
    /// Every table was read.
    Done,
}

/// The snapshot in progress.
struct Snapshot {
    items: mpsc::Receiver<Result<Item, TaskError>>,
    reader: tokio::task::JoinHandle<()>,
    position: Option<(String, u64)>,
    current: Option<Arc<Table>>,
    ts_us: i64,
    /// The last row read, held back so that the snapshot's last record can say so.
    held: Option<(Arc<Table>, Vec<Value>)>,
    emitted: bool,
    rows: u64,
}

/// A transaction being read from the binlog.
struct Tx {
    /// Where it begins: a restart reads the binlog from here.
    file: String,
    start: u64,
    /// Changes of it so far.
    changes: u64,
    ts_us: i64,
    thread: Option<u32>,
    gtid: Option<String>,
}

/// The binlog stream.
struct Stream {
    binlog: BinlogStream,
    file: String,
    /// The end of the last event read: where the next one begins.
    pos: u64,
    tx: Option<Tx>,
    /// Whether events end in a checksum (the server's `binlog_checksum` is not NONE).
    checksums: bool,
    /// Whether the format description event was read.
    described: bool,
    /// Changes up to (file, transaction start, change number) were committed before this start.
    skip: Option<(String, u64, u64)>,
}

#[derive(Default)]
struct CdcTask {
    settings: Option<Settings>,
    prefix: String,
    filter: Filter,
    partition: Option<Arc<str>>,
    fetch: usize,
    heartbeat: Option<Duration>,
    heartbeat_topic: String,
    last_heartbeat: Option<Instant>,
    tombstones: bool,
    skipped: Vec<String>,
    /// Catalog lookups while streaming.
    catalog: Option<Conn>,
    /// Tables by (database, name); `None` for those the filter leaves out. Emptied by DDL.
    tables: HashMap<(String, String), Option<Arc<Table>>>,
    snapshot: Option<Snapshot>,
    /// `initial_only`: no binlog after the snapshot.
    snapshot_only: bool,
    stream: Option<Stream>,
    pending: VecDeque<SourceRecord>,
    events: Events,
}

#[async_trait]
impl SourceTask for CdcTask {
    async fn start(&mut self, ctx: SourceTaskContext) -> Result<(), TaskError> {
        let config = &ctx.config;
        let settings = Settings::from_config(config)?;
        self.prefix = config.required(TOPIC_PREFIX)?.trim().to_string();
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
        let mode_text = config.get_or(SNAPSHOT_MODE, "initial");
        let mode = SnapshotMode::parse(mode_text)
            .ok_or_else(|| TaskError::fatal(format!("invalid {SNAPSHOT_MODE} {mode_text:?}")))?;
        let partition: Arc<str> = json!({ "server": self.prefix }).to_string().into();
        self.partition = Some(partition.clone());
        self.events = Events {
            prefix: self.prefix.clone(),
            partition: partition.clone(),
        };

        let mut conn = settings.connect().await?;
        check_binlog(&mut conn).await?;
        let offset = ctx.offset(&partition);
        match &offset {
            Some(o) => tracing::info!("resuming after offset {o}"),
            None => tracing::info!("no stored offset"),
        }
        let stored = offset.as_ref().and_then(|o| {
            Some((
                o.get("file")?.as_str()?.to_string(),
                o.get("pos")?.as_u64()?,
                o.get("event").and_then(|e| e.as_u64()).unwrap_or(0),
            ))
        });
        let files = binlog_files(&mut conn).await?;
        let stored_gone = stored
            .as_ref()
            .is_some_and(|(file, ..)| !files.contains(file));
        let mut snapshot = match mode {
            SnapshotMode::Never => false,
            SnapshotMode::Always => true,
            SnapshotMode::Initial | SnapshotMode::InitialOnly => {
                !snapshot_completed(offset.as_ref())
            }
            SnapshotMode::WhenNeeded => !snapshot_completed(offset.as_ref()) || stored_gone,
        };
        let in_snapshot = offset
            .as_ref()
            .is_some_and(|o| o.get("snapshot").and_then(|s| s.as_bool()) == Some(true));
        if !snapshot && stored_gone && mode != SnapshotMode::InitialOnly {
            let file = stored.as_ref().map_or("", |s| s.0.as_str());
            return Err(TaskError::fatal(format!(
                "the binlog file {file:?} the stored offset names is no longer on the server (purged): the changes since cannot be read; set {SNAPSHOT_MODE}=when_needed to take a new snapshot, or reset the connector's offsets"
            )));
        }
        if mode == SnapshotMode::InitialOnly {
            self.snapshot_only = true;
            snapshot = snapshot && !snapshot_completed(offset.as_ref());
        }
        self.catalog = Some(conn);
        if snapshot {
            self.begin_snapshot(&settings).await?;
        } else if !self.snapshot_only {
            let (file, pos, skip) = match stored {
                // A snapshot offset: the binlog from the snapshot's position.
                Some((file, pos, _)) if in_snapshot => (file, pos, None),
                Some((file, pos, changes)) => {
                    let skip = (changes > 0).then(|| (file.clone(), pos, changes));
                    (file, pos, skip)
                }
                None => {
                    let catalog = self.catalog.as_mut().ok_or_else(no_catalog)?;
                    let (file, pos) = master_position(catalog).await?;
                    (file, pos, None)
                }
            };
            self.start_stream(&settings, file, pos, skip).await?;
        }
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

    async fn stop(&mut self) -> Result<(), TaskError> {
        if let Some(snapshot) = self.snapshot.take() {
            snapshot.reader.abort();
        }
        if let Some(stream) = self.stream.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.binlog.close()).await;
        }
        if let Some(conn) = self.catalog.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.disconnect()).await;
        }
        Ok(())
    }
}

/// Whether `statement` begins with `word` (any case) as a whole word.
fn starts_with_word(statement: &str, word: &str) -> bool {
    statement
        .get(..word.len())
        .is_some_and(|w| w.eq_ignore_ascii_case(word))
        && statement[word.len()..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_')
}

fn no_catalog() -> TaskError {
    TaskError::fatal("no catalog session")
}

/// Reads the snapshot on a connection of its own and sends it, row by row, to `items`.
async fn read_snapshot_tables(
    settings: Settings,
    prefix: String,
    filter: Filter,
    items: mpsc::Sender<Result<Item, TaskError>>,
) {
    let result = async {
        let mut conn = settings.connect().await?;
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(|e| my_error("set the snapshot's isolation level", e))?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .map_err(|e| my_error("begin the snapshot", e))?;
        // MariaDB names the binlog position of the transaction's snapshot; MySQL needs a
        // global read lock while it begins one.
        let status: Vec<(String, String)> =
            query(&mut conn, "SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
        let lookup = |name: &str| {
            status
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let position = match (
            lookup("binlog_snapshot_file").filter(|f| !f.is_empty()),
            lookup("binlog_snapshot_position").and_then(|p| p.parse::<u64>().ok()),
        ) {
            (Some(file), Some(pos)) => (file, pos),
            _ => {
                conn.query_drop("COMMIT")
                    .await
                    .map_err(|e| my_error("end the first snapshot attempt", e))?;
                conn.query_drop("FLUSH TABLES WITH READ LOCK")
                    .await
                    .map_err(|e| my_error("lock the tables to begin the snapshot", e))?;
                conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                    .await
                    .map_err(|e| my_error("begin the snapshot", e))?;
                let position = master_position(&mut conn).await;
                conn.query_drop("UNLOCK TABLES")
                    .await
                    .map_err(|e| my_error("unlock the tables", e))?;
                position?
            }
        };
        tracing::info!("snapshot at binlog {}:{}", position.0, position.1);
        if items
            .send(Ok(Item::Position(position.0, position.1)))
            .await
            .is_err()
        {
            return Ok(());
        }
        let tables: Vec<(String, String)> = query(
            &mut conn,
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY 1, 2",
        )
        .await?;
        let tables: Vec<(String, String)> = tables
            .into_iter()
            .filter(|(db, t)| !SYSTEM_DATABASES.contains(&db.as_str()) && filter.keeps(db, t))
            .collect();
        tracing::info!("snapshot of {} tables", tables.len());
        for (db, name) in tables {
            let Some(table) = Table::load(&mut conn, &prefix, &db, &name).await? else {
                continue;
            };
            if items.send(Ok(Item::Table(Arc::new(table)))).await.is_err() {
                return Ok(());
            }
            let sql = format!("SELECT * FROM {}.{}", quote(&db), quote(&name));
            let mut result = conn
                .exec_iter(sql.as_str(), ())
                .await
                .map_err(|e| my_error(&format!("read {db}.{name}"), e))?;
            while let Some(row) = result
                .next()
                .await
                .map_err(|e| my_error(&format!("read {db}.{name}"), e))?
            {
                if items.send(Ok(Item::Row(row.unwrap()))).await.is_err() {
                    return Ok(());
                }
            }
        }
        conn.query_drop("COMMIT")
            .await
            .map_err(|e| my_error("end the snapshot", e))?;
        let _ = items.send(Ok(Item::Done)).await;
        let _ = conn.disconnect().await;
        Ok::<(), TaskError>(())
    }
    .await;
    if let Err(e) = result {
        let _ = items.send(Err(e)).await;
    }
}

impl CdcTask {
    async fn begin_snapshot(&mut self, settings: &Settings) -> Result<(), TaskError> {
        let (sender, items) = mpsc::channel(self.fetch);
        let reader = tokio::spawn(read_snapshot_tables(
            settings.clone(),
            self.prefix.clone(),
            self.filter.clone(),
            sender,
        ));
        self.snapshot = Some(Snapshot {
            items,
            reader,
            position: None,
            current: None,
            ts_us: now_micros(),
            held: None,
            emitted: false,
            rows: 0,
        });
        Ok(())
    }

    async fn start_stream(
        &mut self,
        settings: &Settings,
        file: String,
        pos: u64,
        skip: Option<(String, u64, u64)>,
    ) -> Result<(), TaskError> {
        let mut conn = settings.connect().await?;
        // Heartbeats every 5 s show a live connection on a quiet server (nanoseconds).
        conn.query_drop("SET @master_heartbeat_period = 5000000000")
            .await
            .map_err(|e| my_error("ask for binlog heartbeats", e))?;
        let checksum: Vec<String> = query(&mut conn, "SELECT @@GLOBAL.binlog_checksum").await?;
        let checksums = checksum
            .first()
            .is_some_and(|c| !c.eq_ignore_ascii_case("NONE"));
        let request = BinlogStreamRequest::new(settings.server_id)
            .with_filename(file.as_bytes())
            .with_pos(pos);
        let binlog = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| my_error(&format!("read the binlog from {file}:{pos}"), e))?;
        tracing::info!("reading the binlog from {file}:{pos}");
        self.stream = Some(Stream {
            binlog,
            file,
            pos,
            tx: None,
            checksums,
            described: false,
            skip,
        });
        self.last_heartbeat = Some(Instant::now());
        Ok(())
    }

    /// Up to `max` more rows of the snapshot; at its end, the binlog.
    async fn read_snapshot(&mut self, max: usize) -> Result<(), TaskError> {
        let Some(snap) = self.snapshot.as_mut() else {
            return Ok(());
        };
        let mut done = false;
        while self.pending.len() < max {
            let item = match snap.items.recv().await {
                Some(item) => item?,
                None => return Err(TaskError::retriable("the snapshot reader stopped")),
            };
            match item {
                Item::Position(file, pos) => snap.position = Some((file, pos)),
                Item::Table(table) => snap.current = Some(table),
                Item::Row(row) => {
                    let table = snap
                        .current
                        .clone()
                        .ok_or_else(|| TaskError::fatal("a snapshot row before its table"))?;
                    let values = table.values(row, Origin::Snapshot)?;
                    snap.rows += 1;
                    if let Some((t, v)) = snap.held.replace((table, values)) {
                        let marker = if snap.emitted { "true" } else { "first" };
                        snap.emitted = true;
                        let record = snapshot_record(&self.events, snap, &t, v, marker, false);
                        self.pending.push_back(record);
                    }
                }
                Item::Done => {
                    done = true;
                    break;
                }
            }
        }
        if !done {
            return Ok(());
        }
        // The snapshot is read: its last record says so, and the binlog follows.
        let Some(snap) = self.snapshot.take() else {
            return Ok(());
        };
        if let Some((t, v)) = &snap.held {
            let record = snapshot_record(&self.events, &snap, t, v.clone(), "last", true);
            self.pending.push_back(record);
        }
        tracing::info!(
            "snapshot complete: {} rows; {} records to send",
            snap.rows,
            self.pending.len()
        );
        if !self.snapshot_only {
            let (file, pos) = snap
                .position
                .ok_or_else(|| TaskError::fatal("the snapshot named no binlog position"))?;
            let settings = self.settings.clone().ok_or_else(no_catalog)?;
            self.start_stream(&settings, file, pos, None).await?;
        }
        Ok(())
    }

    /// Events from the binlog until `max` records are pending or it is quiet for a while.
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
            let event = match tokio::time::timeout(wait, stream.binlog.next()).await {
                Err(_) => break,
                Ok(Some(Ok(event))) => event,
                Ok(None) => return Err(TaskError::retriable("the binlog stream ended")),
                Ok(Some(Err(e))) => return Err(my_error("binlog stream", e)),
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
        self.pending.push_back(heartbeat(
            self.partition.clone(),
            json!({ "file": stream.file, "pos": stream.pos, "event": 0 }).to_string(),
            &self.heartbeat_topic,
            &self.prefix,
        ));
    }

    async fn on_event(&mut self, event: Event) -> Result<(), TaskError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        let header = event.header();
        let start = stream.pos;
        let artificial = header.flags_raw() & ARTIFICIAL != 0;
        // A heartbeat's position is the server's, not one in the stream read.
        let heartbeat = header.event_type_raw() == HEARTBEAT_EVENT;
        if header.log_pos() != 0 && !artificial && !heartbeat {
            stream.pos = u64::from(header.log_pos());
        }
        let ts_us = i64::from(header.timestamp()) * 1_000_000;
        let server_id = header.server_id();
        if header.event_type_raw() == MARIADB_GTID_EVENT {
            // MariaDB opens each transaction with its GTID (seq_no u64, domain u32, flags).
            let data = event.data();
            let gtid = (data.len() >= 12).then(|| {
                let seq = u64::from_le_bytes(data[0..8].try_into().unwrap_or_default());
                let domain = u32::from_le_bytes(data[8..12].try_into().unwrap_or_default());
                format!("{domain}-{server_id}-{seq}")
            });
            stream.tx = Some(Tx {
                file: stream.file.clone(),
                start,
                changes: 0,
                ts_us,
                thread: None,
                gtid,
            });
            return Ok(());
        }
        let data = event.read_data().map_err(|e| {
            TaskError::fatal(format!(
                "an unreadable binlog event at {}:{start}: {e}",
                stream.file
            ))
        })?;
        let Some(data) = data else {
            return Ok(());
        };
        match data {
            EventData::RotateEvent(rotate) => {
                let mut name = rotate.name_raw();
                // The rotate that opens the stream comes before the format description, so
                // its checksum is read as part of the name.
                if !stream.described && stream.checksums && name.len() > 4 {
                    name = &name[..name.len() - 4];
                }
                stream.file = String::from_utf8_lossy(name).into_owned();
                stream.pos = rotate.position();
            }
            EventData::FormatDescriptionEvent(_) => stream.described = true,
            EventData::QueryEvent(q) => {
                let sql = q.query();
                let statement = sql.trim();
                if statement.eq_ignore_ascii_case("BEGIN") {
                    match stream.tx.as_mut() {
                        // MariaDB's GTID opened it already.
                        Some(tx) => tx.thread = Some(q.thread_id()).filter(|&t| t > 0),
                        None => {
                            stream.tx = Some(Tx {
                                file: stream.file.clone(),
                                start,
                                changes: 0,
                                ts_us,
                                thread: Some(q.thread_id()).filter(|&t| t > 0),
                                gtid: None,
                            })
                        }
                    }
                } else if statement.eq_ignore_ascii_case("COMMIT")
                    || statement.eq_ignore_ascii_case("ROLLBACK")
                {
                    stream.tx = None;
                } else if statement.starts_with('#')
                    || starts_with_word(statement, "SAVEPOINT")
                    || starts_with_word(statement, "XA")
                {
                    // Comments (MariaDB's stand-ins for events a replica would not know),
                    // savepoints and XA steps change no table.
                } else {
                    // DDL (committed on its own): the tables are read again when next used.
                    tracing::debug!("statement in the binlog: {statement}");
                    stream.tx = None;
                    self.tables.clear();
                }
            }
            EventData::XidEvent(_) => stream.tx = None,
            EventData::RowsEvent(rows) => self.on_rows(&rows, start, server_id, ts_us).await?,
            _ => {}
        }
        Ok(())
    }

    /// The table a binlog row event names, from the cache or `information_schema`.
    async fn table(&mut self, db: &str, name: &str) -> Result<Option<Arc<Table>>, TaskError> {
        let key = (db.to_string(), name.to_string());
        if let Some(known) = self.tables.get(&key) {
            return Ok(known.clone());
        }
        let table = if !SYSTEM_DATABASES.contains(&db) && self.filter.keeps(db, name) {
            let catalog = self.catalog.as_mut().ok_or_else(no_catalog)?;
            Table::load(catalog, &self.prefix, db, name)
                .await?
                .map(Arc::new)
        } else {
            None
        };
        self.tables.insert(key, table.clone());
        Ok(table)
    }

    async fn on_rows(
        &mut self,
        rows: &RowsEventData<'_>,
        event_pos: u64,
        server_id: u32,
        ts_us: i64,
    ) -> Result<(), TaskError> {
        let Some(stream) = self.stream.as_ref() else {
            return Ok(());
        };
        let table_id = rows.table_id();
        let Some(tme) = stream.binlog.get_tme(table_id) else {
            return Err(TaskError::fatal(format!(
                "a row event for table id {table_id}, which no table map event described"
            )));
        };
        let (db, name) = (
            tme.database_name().into_owned(),
            tme.table_name().into_owned(),
        );
        let Some(table) = self.table(&db, &name).await? else {
            // Rows of a table nobody captures still count in no transaction's changes.
            return Ok(());
        };
        let op = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => "c",
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => "d",
            _ => "u",
        };
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        let Some(tme) = stream.binlog.get_tme(table_id) else {
            return Ok(());
        };
        let mut images = Vec::new();
        for image in rows.rows(tme) {
            let (before, after) = image.map_err(|e| {
                TaskError::fatal(format!(
                    "an unreadable row of {db}.{name} at {}:{event_pos}: {e}",
                    stream.file
                ))
            })?;
            images.push((before.map(plain_row), after.map(plain_row)));
        }
        let Some(tx) = stream.tx.as_mut() else {
            return Err(TaskError::fatal(format!(
                "a row event at {}:{event_pos} outside a transaction",
                stream.file
            )));
        };
        let skip_op = self.skipped.iter().any(|s| s == op);
        let mut out = Vec::new();
        for (row, (before, after)) in images.into_iter().enumerate() {
            tx.changes += 1;
            let skipped = stream.skip.as_ref().is_some_and(|(file, start, changes)| {
                file == &tx.file && *start == tx.start && tx.changes <= *changes
            });
            if skipped || skip_op {
                continue;
            }
            let offset = json!({
                "file": tx.file,
                "pos": tx.start,
                "event": tx.changes,
                "row": row,
                "server_id": server_id,
                "ts_sec": tx.ts_us / 1_000_000,
            })
            .to_string();
            let origin = Place {
                ts_us: if tx.ts_us > 0 { tx.ts_us } else { ts_us },
                snapshot: "false",
                server_id,
                gtid: tx.gtid.as_deref(),
                file: &stream.file,
                pos: event_pos,
                row,
                thread: tx.thread,
            };
            let before = before
                .map(|r| table.values(r?, Origin::Binlog))
                .transpose()?;
            let after = after
                .map(|r| table.values(r?, Origin::Binlog))
                .transpose()?;
            let events = &self.events;
            let change = |op: &str, before: Option<Vec<Value>>, after: Option<Vec<Value>>| {
                events.record(&table, op, before, after, &origin, offset.clone())
            };
            match (op, before, after) {
                ("c", _, after) => out.push(change("c", None, after)),
                ("d", before, _) => {
                    let record = change("d", before, None);
                    if self.tombstones {
                        let mut tombstone = record.clone();
                        tombstone.value = Data::default();
                        out.push(record);
                        out.push(tombstone);
                    } else {
                        out.push(record);
                    }
                }
                // The key changed: Debezium's delete, tombstone and create.
                (_, Some(before), Some(after)) if table.key_changed(&before, &after) => {
                    let record = change("d", Some(before), None);
                    let tombstone = self.tombstones.then(|| {
                        let mut t = record.clone();
                        t.value = Data::default();
                        t
                    });
                    out.push(record);
                    out.extend(tombstone);
                    out.push(change("c", None, Some(after)));
                }
                (_, before, after) => out.push(change("u", before, after)),
            }
        }
        self.pending.extend(out);
        Ok(())
    }
}

/// A binlog row as plain values (JSON documents as their text; absent columns as NULL).
fn plain_row(mut row: mysql_async::binlog::row::BinlogRow) -> Result<Vec<My>, TaskError> {
    (0..row.len())
        .map(|i| match row.take(i) {
            None => Ok(My::NULL),
            Some(v) => {
                My::try_from(v).map_err(|e| TaskError::fatal(format!("a binlog value: {e}")))
            }
        })
        .collect()
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
    let (file, pos) = snap
        .position
        .as_ref()
        .map_or(("", 0), |(f, p)| (f.as_str(), *p));
    let offset = json!({
        "snapshot": true,
        "last_snapshot_record": last,
        "file": file,
        "pos": pos,
        "ts_sec": snap.ts_us / 1_000_000,
    })
    .to_string();
    let origin = Place {
        ts_us: snap.ts_us,
        snapshot: marker,
        server_id: 0,
        gtid: None,
        file,
        pos,
        row: 0,
        thread: None,
    };
    events.record(table, "r", None, Some(values), &origin, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_block_is_in_debeziums_order() {
        let names: Vec<String> = source_schema().fields.into_iter().map(|f| f.name).collect();
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
                "table",
                "server_id",
                "gtid",
                "file",
                "pos",
                "row",
                "thread",
                "query"
            ]
        );
    }
}
