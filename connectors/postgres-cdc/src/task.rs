//! The PostgresCdcSource task: the snapshot, read in the transaction the replication slot
//! exported, then the slot's stream; the slot's confirmed position moves only when the
//! worker reports the records before it committed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use serde_json::json;
use sluice_connector_sdk::proto::{Data, Value};
use sluice_connector_sdk::{SourceRecord, SourceTask, SourceTaskContext, TaskError};
use sluice_debezium::{heartbeat, now_micros, snapshot_completed, Filter, SnapshotMode};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::pgoutput::{self, Message};
use crate::server::{
    catalog_columns, check_wal_level, key_order, pg_error, published_tables, quote, Settings,
    AUTOCREATE, FILTER_KEYS, HEARTBEAT, HEARTBEAT_PREFIX, IDLE_WAIT, PG_EPOCH_MICROS, PLUGIN,
    PUBLICATION, SCHEMA_INCLUDE, SKIPPED, SLOT, SNAPSHOT_FETCH, SNAPSHOT_MODE, TABLE_INCLUDE,
    TOMBSTONES, TOPIC_PREFIX,
};
use crate::table::{Column, Events, Origin, Table};
use crate::types::PgType;

/// A transaction being read from the stream.
pub(crate) struct Tx {
    pub(crate) xid: u32,
    /// The commit record's LSN: the transaction's place in the stream.
    pub(crate) commit_lsn: u64,
    pub(crate) ts_us: i64,
    /// Events of this transaction so far.
    pub(crate) events: u64,
}

/// The snapshot in progress.
pub(crate) struct Snapshot {
    pub(crate) client: Client,
    pub(crate) tables: VecDeque<(String, String)>,
    /// The table whose cursor is open.
    pub(crate) current: Option<Arc<Table>>,
    /// The slot's consistent point (0 without a slot).
    pub(crate) lsn: u64,
    pub(crate) ts_us: i64,
    /// The last row read, held back so that the snapshot's last record can say so.
    pub(crate) held: Option<(Arc<Table>, Vec<Value>)>,
    pub(crate) emitted: bool,
    pub(crate) rows: u64,
}

/// The replication stream.
pub(crate) struct Stream {
    pub(crate) client: ReplicationClient,
    pub(crate) relations: HashMap<u32, Option<Arc<Table>>>,
    pub(crate) tx: Option<Tx>,
    /// The LSN of the last commit read, for `source.sequence`.
    pub(crate) last_commit: Option<u64>,
    /// A position every change before which was read: the end of the last commit, or the
    /// server's position in a keepalive between transactions.
    pub(crate) quiet_lsn: u64,
    /// Events up to (commit LSN, event number) were committed before this start.
    pub(crate) skip: Option<(u64, u64)>,
    pub(crate) acked: u64,
}

#[derive(Default)]
pub(crate) struct CdcTask {
    pub(crate) settings: Option<Settings>,
    pub(crate) prefix: String,
    pub(crate) slot: String,
    pub(crate) publication: String,
    pub(crate) filter: Filter,
    pub(crate) partition: Option<Arc<str>>,
    pub(crate) fetch: usize,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) heartbeat_topic: String,
    pub(crate) last_heartbeat: Option<Instant>,
    pub(crate) tombstones: bool,
    pub(crate) skipped: Vec<String>,
    /// Catalog lookups while streaming.
    pub(crate) catalog: Option<Client>,
    pub(crate) snapshot: Option<Snapshot>,
    /// The replication session: waiting (during a snapshot) or streaming.
    pub(crate) replication: Option<ReplicationClient>,
    pub(crate) stream: Option<Stream>,
    pub(crate) pending: VecDeque<SourceRecord>,
    /// `initial_only` finished its snapshot.
    pub(crate) done: bool,
    pub(crate) events: Events,
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
    pub(crate) async fn ensure_publication(
        &self,
        client: &Client,
        mode: &str,
    ) -> Result<(), TaskError> {
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

    pub(crate) async fn begin_snapshot(
        &mut self,
        client: Client,
        lsn: u64,
    ) -> Result<(), TaskError> {
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

    pub(crate) async fn start_stream(
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
    pub(crate) async fn read_snapshot(&mut self, max: usize) -> Result<(), TaskError> {
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
        let position = stream.quiet_lsn.max(stream.acked);
        self.pending.push_back(heartbeat(
            self.partition.clone(),
            json!({ "lsn_commit": position, "event": 0 }).to_string(),
            &self.heartbeat_topic,
            &self.prefix,
        ));
    }

    pub(crate) async fn on_event(&mut self, event: ReplicationEvent) -> Result<(), TaskError> {
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

    pub(crate) async fn on_message(&mut self, message: Message, lsn: u64) -> Result<(), TaskError> {
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
                out.push(self.events.record(
                    &table,
                    "c",
                    None,
                    Some(after),
                    &origin,
                    offset.clone(),
                ));
            }
            Message::Update {
                old, key_only, new, ..
            } => {
                let before = old.as_ref().map(|o| table.values(o, None)).transpose()?;
                let after = table.values(&new, before.as_deref())?;
                let (op, before) = match before {
                    // The key changed: Debezium's delete, tombstone and create.
                    Some(before) if key_only => {
                        out.extend(self.delete(&table, before, &origin, &offset));
                        ("c", None)
                    }
                    before => ("u", before),
                };
                out.push(self.events.record(
                    &table,
                    op,
                    before,
                    Some(after),
                    &origin,
                    offset.clone(),
                ));
            }
            Message::Delete { old, .. } => {
                let before = table.values(&old, None)?;
                out.extend(self.delete(&table, before, &origin, &offset));
            }
            _ => {
                for t in &tables {
                    let mut record =
                        self.events
                            .record(t, "t", None, None, &origin, offset.clone());
                    record.key = Data::default();
                    out.push(record);
                }
            }
        }
        self.pending.extend(out);
        Ok(())
    }

    pub(crate) fn delete(
        &self,
        table: &Table,
        before: Vec<Value>,
        origin: &Origin,
        offset: &str,
    ) -> Vec<SourceRecord> {
        let record = self
            .events
            .record(table, "d", Some(before), None, origin, offset.to_string());
        let mut out = vec![record];
        if self.tombstones {
            let mut tombstone = out[0].clone();
            tombstone.value = Data::default();
            out.push(tombstone);
        }
        out
    }
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
