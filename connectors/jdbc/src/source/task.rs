//! The JdbcSource task: one `Querier` per table with Confluent's source partition and
//! offset, each poll running the mode's keyset query (`LIMIT batch.max.rows`), or in bulk mode
//! a reader on a connection of its own streaming the table a page a poll.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use sluice_connector_sdk::proto::{
    data as proto_data, value, Data, Field, Schema, SchemaType, StructValue, Structured, Value,
};
use sluice_connector_sdk::{SourceRecord, SourceTask, SourceTaskContext, TaskError};

use crate::db::{self, Column, ConnectionSettings, Db, Streamed, TableId};
use crate::list;
use crate::url::Dialect;
use crate::value::{Cell, NumericMapping};

use super::{
    Mode, BATCH_MAX_ROWS, IDLE_WAIT, INCREMENTING_COLUMN, MODE, NUMERIC_MAPPING, POLL_INTERVAL,
    QUERY, QUERY_SUFFIX, TASK_TABLES, TIMESTAMP_COLUMN, TIMESTAMP_DELAY, TIMESTAMP_INITIAL,
    TOPIC_PREFIX, VALIDATE_NON_NULL,
};

/// Where a table's reading stands: the offset reached (Confluent's
/// `TimestampIncrementingOffset`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Offset {
    pub(super) incrementing: Option<i64>,
    /// Microseconds since the epoch.
    pub(super) timestamp: Option<i64>,
}

impl Offset {
    pub(super) fn to_json(self) -> String {
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

    pub(super) fn from_json(value: &serde_json::Value) -> Offset {
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
pub(super) struct JdbcSourceTask {
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
                        .map(|k| Box::new(k.schema(columns[c].optional))),
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
