//! MySqlCdcSource's task: the snapshot (a reader on its own connection, in one consistent
//! transaction) and then the binlog, read as a replica reads it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Value as My};
use serde_json::json;
use sluice_connector_sdk::proto::{Data, Value};
use sluice_connector_sdk::{SourceRecord, SourceTask, SourceTaskContext, TaskError};
use sluice_debezium::{heartbeat, now_micros, snapshot_completed, Filter, SnapshotMode};
use tokio::sync::mpsc;

use crate::server::{
    binlog_files, check_binlog, master_position, my_error, query, quote, Settings, FILTER_KEYS,
    HEARTBEAT, HEARTBEAT_PREFIX, SKIPPED, SNAPSHOT_FETCH, SNAPSHOT_MODE, SYSTEM_DATABASES,
    TOMBSTONES, TOPIC_PREFIX,
};
use crate::table::{Events, Place, Table};
use crate::types::Origin;

/// How long an idle poll waits for the binlog before returning nothing.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// MariaDB's GTID event, which opens a transaction in its binlog.
const MARIADB_GTID_EVENT: u8 = 0xa2;
/// The server's heartbeat on a quiet binlog.
const HEARTBEAT_EVENT: u8 = 0x1b;
/// An event the server made up for the stream (not at a position of the binlog).
const ARTIFICIAL: u16 = 0x20;

/// What the snapshot reader sends.
pub(crate) enum Item {
    /// The binlog position the snapshot is consistent with.
    Position(String, u64),
    Table(Arc<Table>),
    Row(Vec<My>),
    /// Every table was read.
    Done,
}

/// The snapshot in progress.
pub(crate) struct Snapshot {
    pub(crate) items: mpsc::Receiver<Result<Item, TaskError>>,
    pub(crate) reader: tokio::task::JoinHandle<()>,
    pub(crate) position: Option<(String, u64)>,
    pub(crate) current: Option<Arc<Table>>,
    pub(crate) ts_us: i64,
    /// The last row read, held back so that the snapshot's last record can say so.
    pub(crate) held: Option<(Arc<Table>, Vec<Value>)>,
    pub(crate) emitted: bool,
    pub(crate) rows: u64,
}

/// A transaction being read from the binlog.
pub(crate) struct Tx {
    /// Where it begins: a restart reads the binlog from here.
    pub(crate) file: String,
    pub(crate) start: u64,
    /// Changes of it so far.
    pub(crate) changes: u64,
    pub(crate) ts_us: i64,
    pub(crate) thread: Option<u32>,
    pub(crate) gtid: Option<String>,
}

/// The binlog stream.
pub(crate) struct Stream {
    pub(crate) binlog: BinlogStream,
    pub(crate) file: String,
    /// The end of the last event read: where the next one begins.
    pub(crate) pos: u64,
    pub(crate) tx: Option<Tx>,
    /// Whether events end in a checksum (the server's `binlog_checksum` is not NONE).
    pub(crate) checksums: bool,
    /// Whether the format description event was read.
    pub(crate) described: bool,
    /// Changes up to (file, transaction start, change number) were committed before this start.
    pub(crate) skip: Option<(String, u64, u64)>,
}

#[derive(Default)]
pub(crate) struct CdcTask {
    pub(crate) settings: Option<Settings>,
    pub(crate) prefix: String,
    pub(crate) filter: Filter,
    pub(crate) partition: Option<Arc<str>>,
    pub(crate) fetch: usize,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) heartbeat_topic: String,
    pub(crate) last_heartbeat: Option<Instant>,
    pub(crate) tombstones: bool,
    pub(crate) skipped: Vec<String>,
    /// Catalog lookups while streaming.
    pub(crate) catalog: Option<Conn>,
    /// Tables by (database, name); `None` for those the filter leaves out. Emptied by DDL.
    pub(crate) tables: HashMap<(String, String), Option<Arc<Table>>>,
    pub(crate) snapshot: Option<Snapshot>,
    /// `initial_only`: no binlog after the snapshot.
    pub(crate) snapshot_only: bool,
    pub(crate) stream: Option<Stream>,
    pub(crate) pending: VecDeque<SourceRecord>,
    pub(crate) events: Events,
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
pub(crate) fn starts_with_word(statement: &str, word: &str) -> bool {
    statement
        .get(..word.len())
        .is_some_and(|w| w.eq_ignore_ascii_case(word))
        && statement[word.len()..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_')
}

pub(crate) fn no_catalog() -> TaskError {
    TaskError::fatal("no catalog session")
}

/// Reads the snapshot on a connection of its own and sends it, row by row, to `items`.
pub(crate) async fn read_snapshot_tables(
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
    pub(crate) async fn begin_snapshot(&mut self, settings: &Settings) -> Result<(), TaskError> {
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

    pub(crate) async fn start_stream(
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
    pub(crate) async fn read_snapshot(&mut self, max: usize) -> Result<(), TaskError> {
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
    pub(crate) async fn read_stream(&mut self, max: usize) -> Result<(), TaskError> {
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

    pub(crate) fn maybe_heartbeat(&mut self) {
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

    pub(crate) async fn on_event(&mut self, event: Event) -> Result<(), TaskError> {
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
    pub(crate) async fn table(
        &mut self,
        db: &str,
        name: &str,
    ) -> Result<Option<Arc<Table>>, TaskError> {
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

    pub(crate) async fn on_rows(
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
pub(crate) fn plain_row(
    mut row: mysql_async::binlog::row::BinlogRow,
) -> Result<Vec<My>, TaskError> {
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
pub(crate) fn snapshot_record(
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
