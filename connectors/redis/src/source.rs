//! `RedisStreamSource`: the Redis Kafka Connector's `RedisStreamSourceConnector`. Each task is
//! one consumer of a consumer group on the stream (XREADGROUP), so tasks share the stream's
//! entries. With `redis.stream.delivery=at-least-once` (the default) an entry stays pending
//! in the group until Kafka has its record and the worker committed it; only then is it
//! acknowledged (XACK). A task that restarts (after a crash, SIGKILL included) first reads its
//! own pending entries again, and entries another consumer left pending longer than
//! `redis.stream.claim.min.idle.ms` are claimed (XAUTOCLAIM): nothing is lost, and what was
//! not acknowledged is delivered again. `at-most-once` reads with NOACK: entries are
//! acknowledged on receipt.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::Value as Reply;
use sluice_connector_sdk::proto::{
    self, data, value, ConfigDef, ConfigType, Data, ExactlyOnceSupport, FieldError, Importance,
    MapEntry, MapValue, Schema, SchemaType, StructValue, Structured,
};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, ErrantRecordReporter, SourceConnector, SourceRecord,
    SourceTask, SourceTaskContext, TaskError,
};

use crate::{connection_defs, Connection};

const TOPIC: &str = "topic";
const STREAM: &str = "redis.stream.name";
const OFFSET: &str = "redis.stream.offset";
const BLOCK: &str = "redis.stream.block";
const DELIVERY: &str = "redis.stream.delivery";
const GROUP: &str = "redis.stream.consumer.group";
const CONSUMER: &str = "redis.stream.consumer.name";
const BATCH_SIZE: &str = "batch.size";
const CLAIM_IDLE: &str = "redis.stream.claim.min.idle.ms";
/// Set by `plan` on each task: its index, for `${task}`.
const TASK_INDEX: &str = "redis.task";

const TOKEN_STREAM: &str = "${stream}";
const TOKEN_TASK: &str = "${task}";
const AT_LEAST_ONCE: &str = "at-least-once";
const AT_MOST_ONCE: &str = "at-most-once";
/// The value's schema name, as the Redis Kafka Connector names it.
const VALUE_SCHEMA: &str = "com.redis.kafka.connect.stream.Value";

pub struct RedisStreamSource;

impl Connector for RedisStreamSource {
    fn class_name(&self) -> &'static str {
        "RedisStreamSource"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "com.redis.kafka.connect.RedisStreamSourceConnector",
            "RedisStreamSourceConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Reads a Redis stream through a consumer group; entries are acknowledged once Kafka has them"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let mut defs = connection_defs();
        defs.extend([
            ConfigDefBuilder::new(STREAM, ConfigType::String)
                .importance(Importance::High)
                .doc("Name of the Redis stream to read from")
                .build(),
            ConfigDefBuilder::new(TOPIC, ConfigType::String)
                .default_value(TOKEN_STREAM)
                .importance(Importance::Medium)
                .doc("The topic to write to; ${stream} stands for the stream's name")
                .build(),
            ConfigDefBuilder::new(OFFSET, ConfigType::String)
                .default_value("0-0")
                .importance(Importance::Medium)
                .doc("Where a new consumer group starts: an entry ID (0-0: the whole stream) or $ (new entries only)")
                .build(),
            ConfigDefBuilder::new(DELIVERY, ConfigType::String)
                .default_value(AT_LEAST_ONCE)
                .valid_values(&[AT_LEAST_ONCE, AT_MOST_ONCE])
                .importance(Importance::Medium)
                .doc("at-least-once: acknowledge an entry once Kafka has its record; at-most-once: on receipt")
                .build(),
            ConfigDefBuilder::new(GROUP, ConfigType::String)
                .default_value("kafka-consumer-group")
                .importance(Importance::Medium)
                .doc("The stream's consumer group, created when missing")
                .build(),
            ConfigDefBuilder::new(CONSUMER, ConfigType::String)
                .default_value("consumer-${task}")
                .importance(Importance::Medium)
                .doc("Each task's consumer name; ${task} stands for the task's index")
                .build(),
            ConfigDefBuilder::new(BLOCK, ConfigType::Long)
                .default_value("100")
                .importance(Importance::Low)
                .doc("Milliseconds a read waits for new entries (XREADGROUP BLOCK)")
                .build(),
            ConfigDefBuilder::new(BATCH_SIZE, ConfigType::Int)
                .default_value("1000")
                .importance(Importance::Low)
                .doc("Entries read at most per command (COUNT)")
                .build(),
            ConfigDefBuilder::new(CLAIM_IDLE, ConfigType::Long)
                .default_value("60000")
                .importance(Importance::Low)
                .doc("Entries another consumer of the group left pending this many milliseconds are claimed and delivered again (XAUTOCLAIM); 0: never")
                .build(),
        ]);
        defs
    }

    fn validate(&self, config: &Config) -> Vec<FieldError> {
        let mut errors = config.validate_against(&self.config_defs());
        if let Err(e) = Connection::from_config(config) {
            errors.push(FieldError {
                name: crate::URI.into(),
                message: e.message,
            });
        }
        if config.get(STREAM).is_some_and(|s| s.trim().is_empty()) {
            errors.push(FieldError {
                name: STREAM.into(),
                message: "must name a stream".into(),
            });
        }
        errors
    }

    /// One task per consumer, at most `tasks.max`; one in all when the consumer name does not
    /// tell the tasks apart (`${task}`).
    fn plan(&self, config: &Config, max_tasks: usize) -> Result<Vec<Config>, TaskError> {
        let tasks = if config
            .get_or(CONSUMER, "consumer-${task}")
            .contains(TOKEN_TASK)
        {
            max_tasks.max(1)
        } else {
            1
        };
        Ok((0..tasks)
            .map(|i| {
                let mut task = config.clone();
                task.set(TASK_INDEX, i.to_string());
                task
            })
            .collect())
    }
}

impl SourceConnector for RedisStreamSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(StreamTask::default())
    }

    /// Entries not acknowledged are delivered again: at least once.
    fn exactly_once_support(&self) -> ExactlyOnceSupport {
        ExactlyOnceSupport::Unsupported
    }
}

#[derive(Default)]
struct StreamTask {
    connection: Option<Connection>,
    conn: Option<MultiplexedConnection>,
    stream: String,
    group: String,
    consumer: String,
    topic: String,
    block_ms: usize,
    batch: usize,
    at_most_once: bool,
    claim_idle: Duration,
    /// `{"stream": …, "consumer": …}`: the task's source partition.
    partition: Option<Arc<str>>,
    /// IDs delivered and not yet acknowledged, in the order their records were polled.
    unacked: VecDeque<String>,
    in_flight: HashSet<String>,
    /// While the task reads its own pending entries again (after a restart): the ID after
    /// which to go on; `None` once they are all read.
    backlog: Option<String>,
    /// When to look for entries other consumers left pending, and from where.
    next_claim: Option<Instant>,
    claim_cursor: String,
    value_schema: Option<Schema>,
    errors: Option<ErrantRecordReporter>,
}

#[async_trait]
impl SourceTask for StreamTask {
    async fn start(&mut self, ctx: SourceTaskContext) -> Result<(), TaskError> {
        let config = &ctx.config;
        let connection = Connection::from_config(config)?;
        self.stream = config.required(STREAM)?.to_string();
        self.group = config.get_or(GROUP, "kafka-consumer-group").to_string();
        let task = config.get_or(TASK_INDEX, "0");
        self.consumer = config
            .get_or(CONSUMER, "consumer-${task}")
            .replace(TOKEN_TASK, task);
        self.topic = config
            .get_or(TOPIC, TOKEN_STREAM)
            .replace(TOKEN_STREAM, &self.stream);
        self.block_ms = config.parse_or(BLOCK, 100usize)?;
        self.batch = config.parse_or(BATCH_SIZE, 1000usize)?.max(1);
        self.at_most_once = config.get_or(DELIVERY, AT_LEAST_ONCE) == AT_MOST_ONCE;
        self.claim_idle = Duration::from_millis(config.parse_or(CLAIM_IDLE, 60_000u64)?);
        self.partition = Some(Arc::from(
            serde_json::json!({ "stream": self.stream, "consumer": self.consumer }).to_string(),
        ));
        self.value_schema = Some(value_schema());
        self.errors = Some(ctx.errors.clone());
        // Reads must be able to block longer than the command timeout lets them.
        let timeout_ms = connection.timeout.as_millis() as usize;
        if self.block_ms >= timeout_ms {
            self.block_ms = timeout_ms / 2;
        }
        let mut conn = connection.connect().await?;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(config.get_or(OFFSET, "0-0"))
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => {
                tracing::info!(stream = %self.stream, group = %self.group, "created the consumer group")
            }
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(connection.error(e)),
        }
        // Our own pending entries first: delivered before a crash, never acknowledged.
        self.backlog = (!self.at_most_once).then(|| "0-0".to_string());
        self.next_claim = (!self.at_most_once && !self.claim_idle.is_zero()).then(Instant::now);
        self.claim_cursor = "0-0".into();
        self.conn = Some(conn);
        self.connection = Some(connection);
        Ok(())
    }

    async fn poll(&mut self, max_records: usize) -> Result<Vec<SourceRecord>, TaskError> {
        let count = max_records.min(self.batch).max(1);
        let entries = if self.next_claim.is_some_and(|at| at <= Instant::now()) {
            self.claim(count).await?
        } else if let Some(after) = self.backlog.clone() {
            let entries = self.read(&after, count, None).await?;
            match entries.last() {
                Some(last) => self.backlog = Some(last.id.clone()),
                None => {
                    tracing::debug!(consumer = %self.consumer, "pending entries read again");
                    self.backlog = None;
                }
            }
            entries
        } else {
            self.read(">", count, Some(self.block_ms)).await?
        };
        let mut records = Vec::with_capacity(entries.len());
        for entry in entries {
            if !self.at_most_once {
                if !self.in_flight.insert(entry.id.clone()) {
                    continue; // claimed while its record is on its way already
                }
                self.unacked.push_back(entry.id.clone());
            }
            if let Some(record) = self.record(entry) {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Acknowledges every entry up to the committed one, in the order they were polled.
    async fn commit(&mut self, positions: &[(Arc<str>, String)]) -> Result<(), TaskError> {
        let Some(partition) = &self.partition else {
            return Ok(());
        };
        let Some((_, offset)) = positions.iter().find(|(p, _)| p == partition) else {
            return Ok(());
        };
        let committed = serde_json::from_str::<serde_json::Value>(offset)
            .ok()
            .and_then(|o| o.get("offset")?.as_str().map(str::to_string))
            .ok_or_else(|| {
                TaskError::fatal(format!("committed offset {offset} has no entry ID"))
            })?;
        if !self.in_flight.contains(&committed) {
            return Ok(());
        }
        let mut ids = Vec::new();
        while let Some(id) = self.unacked.pop_front() {
            self.in_flight.remove(&id);
            let last = id == committed;
            ids.push(id);
            if last {
                break;
            }
        }
        let (Some(conn), Some(connection)) = (self.conn.as_mut(), &self.connection) else {
            return Ok(());
        };
        for chunk in ids.chunks(1000) {
            let _: i64 = redis::cmd("XACK")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(chunk)
                .query_async(conn)
                .await
                .map_err(|e| connection.error(e))?;
        }
        Ok(())
    }
}

impl StreamTask {
    /// XREADGROUP from `id` (`>`: entries never delivered; otherwise this consumer's pending
    /// entries after `id`).
    async fn read(
        &mut self,
        id: &str,
        count: usize,
        block: Option<usize>,
    ) -> Result<Vec<Entry>, TaskError> {
        let (Some(conn), Some(connection)) = (self.conn.as_mut(), &self.connection) else {
            return Err(TaskError::fatal("the task was not started"));
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(ms) = block {
            cmd.arg("BLOCK").arg(ms);
        }
        if self.at_most_once {
            cmd.arg("NOACK");
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(id);
        let reply: Reply = cmd
            .query_async(conn)
            .await
            .map_err(|e| connection.error(e))?;
        let mut entries = Vec::new();
        if let Reply::Nil = reply {
            return Ok(entries);
        }
        for stream in items(&reply, "XREADGROUP")? {
            let parts = items(stream, "XREADGROUP stream")?;
            if let Some(list) = parts.get(1) {
                entries.extend(parse_entries(list)?);
            }
        }
        self.forget_deleted(&mut entries).await?;
        Ok(entries)
    }

    /// XAUTOCLAIM: entries other consumers left pending longer than the claim interval.
    async fn claim(&mut self, count: usize) -> Result<Vec<Entry>, TaskError> {
        let (Some(conn), Some(connection)) = (self.conn.as_mut(), &self.connection) else {
            return Err(TaskError::fatal("the task was not started"));
        };
        let reply: Reply = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.claim_idle.as_millis() as u64)
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(conn)
            .await
            .map_err(|e| connection.error(e))?;
        let parts = items(&reply, "XAUTOCLAIM")?;
        let cursor = parts
            .first()
            .and_then(text)
            .ok_or_else(|| malformed("XAUTOCLAIM", "no cursor"))?;
        let mut entries = match parts.get(1) {
            Some(list) => parse_entries(list)?,
            None => Vec::new(),
        };
        if !entries.is_empty() {
            tracing::info!(
                consumer = %self.consumer,
                claimed = entries.len(),
                "claimed entries other consumers left pending"
            );
        }
        if cursor == "0-0" {
            self.next_claim = Some(Instant::now() + self.claim_idle);
        }
        self.claim_cursor = cursor;
        self.forget_deleted(&mut entries).await?;
        Ok(entries)
    }

    /// Pending entries that were deleted from the stream (XDEL, trimming) come back without
    /// fields: nothing to deliver, so they are acknowledged at once.
    async fn forget_deleted(&mut self, entries: &mut Vec<Entry>) -> Result<(), TaskError> {
        let deleted: Vec<String> = entries
            .iter()
            .filter(|e| e.fields.is_none())
            .map(|e| e.id.clone())
            .collect();
        if deleted.is_empty() {
            return Ok(());
        }
        entries.retain(|e| e.fields.is_some());
        let (Some(conn), Some(connection)) = (self.conn.as_mut(), &self.connection) else {
            return Ok(());
        };
        tracing::warn!(
            count = deleted.len(),
            "pending entries no longer in the stream; acknowledging them"
        );
        let _: i64 = redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&deleted)
            .query_async(conn)
            .await
            .map_err(|e| connection.error(e))?;
        Ok(())
    }

    /// The entry's record: key its ID, value `{id, body, stream}` as the Redis Kafka Connector
    /// writes it, timestamp the ID's milliseconds. An entry whose fields are not text is
    /// reported (dead-letter queue or a failed task, per `errors.tolerance`) instead.
    fn record(&self, entry: Entry) -> Option<SourceRecord> {
        let fields = entry.fields.unwrap_or_default();
        let mut entries = Vec::with_capacity(fields.len());
        for (name, value) in fields {
            match (String::from_utf8(name), String::from_utf8(value)) {
                (Ok(name), Ok(value)) => entries.push(MapEntry {
                    key: Some(string(name)),
                    value: Some(string(value)),
                }),
                _ => {
                    if let Some(errors) = &self.errors {
                        errors.source_record(
                            &self.topic,
                            sluice_connector_sdk::data::string(entry.id.as_str()),
                            Data::default(),
                            format!(
                                "stream {} entry {}: a field name or value is not UTF-8 text",
                                self.stream, entry.id
                            ),
                        );
                    }
                    return None;
                }
            }
        }
        let timestamp_ms = entry
            .id
            .split('-')
            .next()
            .and_then(|ms| ms.parse::<i64>().ok());
        let value = Data {
            kind: Some(data::Kind::Structured(Structured {
                schema: self.value_schema.clone(),
                value: Some(proto::Value {
                    kind: Some(value::Kind::Struct(StructValue {
                        fields: vec![
                            string(entry.id.clone()),
                            proto::Value {
                                kind: Some(value::Kind::Map(MapValue { entries })),
                            },
                            string(self.stream.clone()),
                        ],
                        names: Vec::new(),
                    })),
                }),
            })),
        };
        let offset = serde_json::json!({ "offset": entry.id }).to_string();
        Some(SourceRecord {
            source_partition: self.partition.clone(),
            source_offset: Some(offset),
            topic: self.topic.clone(),
            key: sluice_connector_sdk::data::string(entry.id),
            value,
            timestamp_ms,
            ..SourceRecord::default()
        })
    }
}

/// A stream entry as read: `None` fields for an entry deleted while pending.
struct Entry {
    id: String,
    fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// `[[id, [field, value, …] | nil], …]`.
fn parse_entries(list: &Reply) -> Result<Vec<Entry>, TaskError> {
    let mut entries = Vec::new();
    for entry in items(list, "stream entries")? {
        let parts = items(entry, "stream entry")?;
        let id = parts
            .first()
            .and_then(text)
            .ok_or_else(|| malformed("stream entry", "no ID"))?;
        let fields = match parts.get(1) {
            None | Some(Reply::Nil) => None,
            Some(fields) => {
                let flat = items(fields, "stream entry fields")?;
                if flat.len() % 2 != 0 {
                    return Err(malformed("stream entry fields", "an odd number of items"));
                }
                Some(
                    flat.chunks(2)
                        .map(|pair| Ok((bytes(&pair[0])?, bytes(&pair[1])?)))
                        .collect::<Result<Vec<_>, TaskError>>()?,
                )
            }
        };
        entries.push(Entry { id, fields });
    }
    Ok(entries)
}

fn items<'a>(reply: &'a Reply, what: &str) -> Result<&'a [Reply], TaskError> {
    match reply {
        Reply::Array(items) | Reply::Set(items) => Ok(items),
        Reply::Nil => Ok(&[]),
        other => Err(malformed(what, &format!("{other:?} instead of an array"))),
    }
}

fn text(reply: &Reply) -> Option<String> {
    match reply {
        Reply::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Reply::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn bytes(reply: &Reply) -> Result<Vec<u8>, TaskError> {
    match reply {
        Reply::BulkString(b) => Ok(b.clone()),
        Reply::SimpleString(s) => Ok(s.clone().into_bytes()),
        Reply::Int(i) => Ok(i.to_string().into_bytes()),
        other => Err(malformed("stream entry field", &format!("{other:?}"))),
    }
}

fn malformed(what: &str, detail: &str) -> TaskError {
    TaskError::fatal(format!("Redis answered a malformed {what}: {detail}"))
}

fn string(s: impl Into<String>) -> proto::Value {
    proto::Value {
        kind: Some(value::Kind::String(s.into())),
    }
}

/// `struct {id: string, body: map<string, string>, stream: string}`, named as the Redis Kafka
/// Connector names it.
fn value_schema() -> Schema {
    let primitive = |t: SchemaType| Schema {
        r#type: t as i32,
        ..Schema::default()
    };
    let field = |name: &str, schema: Schema| proto::Field {
        name: name.into(),
        schema: Some(Box::new(schema)),
    };
    Schema {
        r#type: SchemaType::Struct as i32,
        name: Some(VALUE_SCHEMA.into()),
        fields: vec![
            field("id", primitive(SchemaType::String)),
            field(
                "body",
                Schema {
                    r#type: SchemaType::Map as i32,
                    key_schema: Some(Box::new(primitive(SchemaType::String))),
                    value_schema: Some(Box::new(primitive(SchemaType::String))),
                    ..Schema::default()
                },
            ),
            field("stream", primitive(SchemaType::String)),
        ],
        ..Schema::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn entries_are_read_in_order_with_deleted_ones_marked() {
        let reply = Reply::Array(vec![
            Reply::Array(vec![
                bulk("1-0"),
                Reply::Array(vec![bulk("a"), bulk("1"), bulk("b"), bulk("2")]),
            ]),
            Reply::Array(vec![bulk("2-0"), Reply::Nil]),
        ]);
        let entries = parse_entries(&reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(
            entries[0].fields.as_deref().unwrap(),
            [
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]
        );
        assert!(entries[1].fields.is_none());
    }

    #[test]
    fn a_malformed_reply_is_an_error_naming_it() {
        let odd = Reply::Array(vec![Reply::Array(vec![
            bulk("1-0"),
            Reply::Array(vec![bulk("a")]),
        ])]);
        let e = parse_entries(&odd).err().unwrap();
        assert!(e.message.contains("odd number"), "{}", e.message);
        let e = parse_entries(&Reply::Int(3)).err().unwrap();
        assert!(e.message.contains("stream entries"), "{}", e.message);
    }

    #[test]
    fn plan_gives_each_task_its_own_consumer_only_when_the_name_tells_them_apart() {
        let config = Config::from([(STREAM, "s")]);
        assert_eq!(RedisStreamSource.plan(&config, 3).unwrap().len(), 3);
        let fixed = Config::from([(STREAM, "s"), (CONSUMER, "one")]);
        assert_eq!(RedisStreamSource.plan(&fixed, 3).unwrap().len(), 1);
    }
}
