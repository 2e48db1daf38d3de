//! `RedisSink`: the Redis Kafka Connector's `RedisSinkConnector`. Each record becomes one
//! command (`redis.command`): SET or HSET at `<redis.key><redis.separator><record key>`
//! (a null value deletes the key), XADD, LPUSH, RPUSH or SADD at `redis.key` (the record key
//! is the list or set member; a null value removes a set member), or DEL. `${topic}` in
//! `redis.key` stands for the record's topic. A batch is sent as one pipeline and waited for:
//! a put returns once Redis has replied to every command, so a flush only ever reports what
//! Redis confirmed.
//!
//! The next offset per partition is stored in Redis at each flush, under
//! `sluice:sink-offset:<connector>:<topic>:<partition>` (the Redis Kafka Connector's key
//! leaves out the connector, so two connectors reading one topic would share offsets), and
//! the task starts from it. With `redis.multiexec=true` each batch and its
//! offsets go in one atomic step (a Lua script: Redis runs it whole or not at all, as
//! MULTI/EXEC): a restart resumes exactly after the last batch Redis applied, so no command
//! is applied twice (exactly once, even for XADD and LPUSH).
//!
//! Those offsets move past a bad record in the same step, before the worker has written it to
//! the dead-letter queue; so the step also records it, in the list
//! `sluice:sink-errant:<connector>` (`topic TAB partition TAB offset TAB reason`). A task
//! opening a partition reports again what the list holds for it (a worker killed before the
//! record reached the dead-letter queue), and an entry leaves the list only once a later flush
//! shows the worker is past it: a bad record is never lost, at worst written to the
//! dead-letter queue twice.
//!
//! A record Redis refuses (a key holding another type) or that the command cannot take (no
//! key, a value of the wrong shape) is reported with the reason, for `errors.tolerance` and
//! the dead-letter queue; a lost connection fails the put as retriable.

use std::collections::BTreeMap;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use sluice_connector_sdk::proto::{
    data, value, ConfigDef, ConfigType, FieldError, Importance, SinkRecord, TopicPartition,
    TopicPartitionOffset,
};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, DataRef, ErrantRecordReporter, SinkBatch, SinkConnector,
    SinkRecordRef, SinkTask, SinkTaskContext, TaskError,
};

use crate::{connection_defs, Connection};

const COMMAND: &str = "redis.command";
const KEY: &str = "redis.key";
const SEPARATOR: &str = "redis.separator";
const MULTIEXEC: &str = "redis.multiexec";

const TOKEN_TOPIC: &str = "${topic}";
const COMMANDS: &[&str] = &["SET", "HSET", "XADD", "LPUSH", "RPUSH", "SADD", "DEL"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Set,
    Hset,
    Xadd,
    Lpush,
    Rpush,
    Sadd,
    Del,
}

impl Command {
    fn parse(text: &str) -> Option<Command> {
        Some(match text.trim().to_ascii_uppercase().as_str() {
            "SET" => Command::Set,
            "HSET" => Command::Hset,
            "XADD" => Command::Xadd,
            "LPUSH" => Command::Lpush,
            "RPUSH" => Command::Rpush,
            "SADD" => Command::Sadd,
            "DEL" => Command::Del,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Command::Set => "SET",
            Command::Hset => "HSET",
            Command::Xadd => "XADD",
            Command::Lpush => "LPUSH",
            Command::Rpush => "RPUSH",
            Command::Sadd => "SADD",
            Command::Del => "DEL",
        }
    }

    /// Whether the command writes at `redis.key` itself (a collection), not at a key per record.
    fn collection(self) -> bool {
        matches!(
            self,
            Command::Xadd | Command::Lpush | Command::Rpush | Command::Sadd
        )
    }
}

pub struct RedisSink;

impl Connector for RedisSink {
    fn class_name(&self) -> &'static str {
        "RedisSink"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "com.redis.kafka.connect.RedisSinkConnector",
            "RedisSinkConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Writes records to Redis as strings, hashes, stream entries, list or set members"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let mut defs = connection_defs();
        defs.extend([
            ConfigDefBuilder::new(COMMAND, ConfigType::String)
                .default_value("XADD")
                .valid_values(COMMANDS)
                .importance(Importance::High)
                .doc("What each record becomes: SET, HSET, XADD, LPUSH, RPUSH, SADD or DEL")
                .build(),
            ConfigDefBuilder::new(KEY, ConfigType::String)
                .default_value(TOKEN_TOPIC)
                .importance(Importance::Medium)
                .doc("The key space (SET, HSET, DEL: <key space><separator><record key>) or the key (XADD, LPUSH, RPUSH, SADD); ${topic} stands for the record's topic; empty: the record key itself (SET, HSET, DEL)")
                .build(),
            ConfigDefBuilder::new(SEPARATOR, ConfigType::String)
                .default_value(":")
                .importance(Importance::Medium)
                .doc("Between the key space and the record key")
                .build(),
            ConfigDefBuilder::new(MULTIEXEC, ConfigType::Boolean)
                .default_value("false")
                .importance(Importance::Medium)
                .doc("Each batch and its offsets in one atomic step (a Lua script, as MULTI/EXEC): nothing applied twice after a restart")
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
        if let Some(command) = config.get(COMMAND).and_then(Command::parse) {
            if command.collection() && config.get_or(KEY, TOKEN_TOPIC).is_empty() {
                errors.push(FieldError {
                    name: KEY.into(),
                    message: format!("{} writes at one key: it cannot be empty", command.name()),
                });
            }
        }
        errors
    }
}

impl SinkConnector for RedisSink {
    fn task(&self) -> Box<dyn SinkTask> {
        Box::new(RedisSinkTask::default())
    }
}

#[derive(Default)]
struct RedisSinkTask {
    connector: String,
    connection: Option<Connection>,
    conn: Option<MultiplexedConnection>,
    command: Option<Command>,
    key: String,
    separator: String,
    multiexec: bool,
    errors: Option<ErrantRecordReporter>,
    /// The next offset per partition, as far as Redis has the records.
    written: BTreeMap<(String, i32), i64>,
    /// Bad records in the errant list (multiexec) reported since the last flush, and those
    /// reported before it: the worker had them in the dead-letter queue before it asked for
    /// this flush, so they leave the list at it.
    errant_recent: Vec<String>,
    errant_settled: Vec<String>,
}

/// Applies a multiexec batch atomically: each command under `redis.pcall` (a refused one does
/// not stop the others), a refused command's record appended to the errant list, the bad
/// records found before sending appended too, then the offsets set. Returns, per refused
/// command, its number (from 1) and its errant entry.
///
/// ARGV: errant list key, number of commands, per command (argument count, errant entry
/// prefix, arguments...), number of entries known bad, the entries, number of offsets, per
/// offset (key, value).
const APPLY: &str = r#"
local errant = ARGV[1]
local i = 2
local refused = {}
local n = tonumber(ARGV[i]); i = i + 1
for c = 1, n do
  local argc = tonumber(ARGV[i])
  local at = ARGV[i + 1]
  local args = {}
  for a = 1, argc do args[a] = ARGV[i + 1 + a] end
  i = i + 2 + argc
  local r = redis.pcall(unpack(args))
  if type(r) == 'table' and r.err then
    local entry = at .. '\t' .. r.err
    redis.call('RPUSH', errant, entry)
    refused[#refused + 1] = tostring(c)
    refused[#refused + 1] = entry
  end
end
local k = tonumber(ARGV[i]); i = i + 1
for e = 1, k do redis.call('RPUSH', errant, ARGV[i]); i = i + 1 end
local m = tonumber(ARGV[i]); i = i + 1
for o = 1, m do redis.call('SET', ARGV[i], ARGV[i + 1]); i = i + 2 end
return refused
"#;

#[async_trait]
impl SinkTask for RedisSinkTask {
    async fn start(&mut self, ctx: SinkTaskContext) -> Result<(), TaskError> {
        let config = &ctx.config;
        let connection = Connection::from_config(config)?;
        self.connector = ctx.connector_name.clone();
        let command = config.get_or(COMMAND, "XADD");
        self.command = Some(Command::parse(command).ok_or_else(|| {
            TaskError::fatal(format!("{COMMAND}: {command:?} is not one of {COMMANDS:?}"))
        })?);
        self.key = config.get_or(KEY, TOKEN_TOPIC).to_string();
        self.separator = config.get_or(SEPARATOR, ":").to_string();
        self.multiexec = config.parse_or(MULTIEXEC, false)?;
        self.errors = Some(ctx.errors.clone());
        self.conn = Some(connection.connect().await?);
        self.connection = Some(connection);
        Ok(())
    }

    /// Starts each partition at the offset stored with the data, when there is one.
    async fn open(
        &mut self,
        partitions: Vec<TopicPartition>,
    ) -> Result<Vec<TopicPartitionOffset>, TaskError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        if self.multiexec {
            self.restore_errant(&partitions).await?;
        }
        let (Some(conn), Some(connection)) = (self.conn.as_mut(), &self.connection) else {
            return Ok(Vec::new());
        };
        let keys: Vec<String> = partitions
            .iter()
            .map(|p| offset_key(&self.connector, &p.topic, p.partition))
            .collect();
        let stored: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(conn)
            .await
            .map_err(|e| connection.error(e))?;
        let mut out = Vec::new();
        for (p, text) in partitions.iter().zip(stored) {
            let Some(text) = text else { continue };
            let offset = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("offset")?.as_i64())
                .ok_or_else(|| {
                    TaskError::fatal(format!(
                        "{}: {text:?} is not a stored offset",
                        offset_key(&self.connector, &p.topic, p.partition)
                    ))
                })?;
            tracing::info!(topic = %p.topic, partition = p.partition, offset, "starting at the offset stored in Redis");
            self.written.insert((p.topic.clone(), p.partition), offset);
            out.push(TopicPartitionOffset {
                topic: p.topic.clone(),
                partition: p.partition,
                offset,
            });
        }
        Ok(out)
    }

    async fn put(&mut self, records: Vec<SinkRecord>) -> Result<(), TaskError> {
        self.put_batch(SinkBatch::from_records(0, &records)).await
    }

    async fn put_batch(&mut self, batch: SinkBatch) -> Result<(), TaskError> {
        let records = batch.records()?;
        // Which record each command writes, and the command.
        let mut sent: Vec<(&SinkRecordRef<'_>, redis::Cmd)> = Vec::with_capacity(records.len());
        // Bad records found before sending: their errant entries (multiexec).
        let mut bad: Vec<String> = Vec::new();
        // The next offset per partition of the batch (a few partitions: no map, no allocation
        // per record).
        let mut next: Vec<(&str, i32, i64)> = Vec::new();
        for record in &records {
            let at = next
                .iter_mut()
                .rev()
                .find(|(t, p, _)| *p == record.partition && *t == &*record.topic);
            match at {
                Some(n) => n.2 = record.offset + 1,
                None => next.push((&record.topic, record.partition, record.offset + 1)),
            }
            match self.command_for(record) {
                Ok(cmd) => sent.push((record, cmd)),
                Err(message) => {
                    if self.multiexec {
                        bad.push(errant_entry(record, &message));
                    }
                    self.report(record, message);
                }
            }
        }
        let written = next
            .iter()
            .map(|(t, p, o)| ((t.to_string(), *p), *o))
            .collect::<Vec<_>>();
        if self.multiexec {
            self.apply_atomically(&sent, bad, &next).await?;
        } else if !sent.is_empty() {
            self.apply_pipelined(sent).await?;
        }
        self.written.extend(written);
        Ok(())
    }

    /// Everything put is in Redis already (each put waited for its replies); the offsets are
    /// stored beside it.
    async fn flush(
        &mut self,
        offsets: Vec<TopicPartitionOffset>,
    ) -> Result<Vec<TopicPartitionOffset>, TaskError> {
        let mut offsets = offsets;
        if self.multiexec {
            self.settle_errant().await?;
            // Not past a bad record whose entry is still in the list: the worker asks again
            // at its next tick (a sink holding records back), and that flush settles it.
            for entry in &self.errant_settled {
                let Some((topic, partition, offset, _)) = parse_errant(entry) else {
                    continue;
                };
                for tpo in offsets.iter_mut() {
                    if tpo.topic == topic && tpo.partition == partition {
                        tpo.offset = tpo.offset.min(offset);
                    }
                }
            }
        }
        if !self.multiexec && !self.written.is_empty() {
            let (Some(conn), Some(connection)) = (self.conn.as_mut(), &self.connection) else {
                return Ok(offsets);
            };
            let pairs: Vec<(String, String)> = self
                .written
                .iter()
                .map(|((t, p), o)| (offset_key(&self.connector, t, *p), offset_value(t, *p, *o)))
                .collect();
            let () = redis::cmd("MSET")
                .arg(&pairs)
                .query_async(conn)
                .await
                .map_err(|e| connection.error(e))?;
        }
        Ok(offsets)
    }
}

impl RedisSinkTask {
    fn errant_key(&self) -> String {
        format!("sluice:sink-errant:{}", self.connector)
    }

    /// One pipeline of the batch's commands, waited for; a refused command's record is
    /// reported.
    async fn apply_pipelined(
        &mut self,
        sent: Vec<(&SinkRecordRef<'_>, redis::Cmd)>,
    ) -> Result<(), TaskError> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let (records, commands): (Vec<_>, Vec<_>) = sent.into_iter().unzip();
        for cmd in commands {
            pipe.add_command(cmd);
        }
        let (Some(conn), Some(connection)) = (self.conn.as_mut(), &self.connection) else {
            return Err(TaskError::fatal("the task was not started"));
        };
        let replies: Vec<redis::RedisResult<redis::Value>> = pipe
            .query_async(conn)
            .await
            .map_err(|e| connection.error(e))?;
        for (record, reply) in records.iter().zip(&replies) {
            if let Err(e) = reply {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    return Err(connection.error(e.clone()));
                }
                self.report(record, format!("Redis refused the command: {e}"));
            }
        }
        Ok(())
    }

    /// The batch, its bad records' errant entries and its offsets in one step (`APPLY`).
    async fn apply_atomically(
        &mut self,
        sent: &[(&SinkRecordRef<'_>, redis::Cmd)],
        bad: Vec<String>,
        next: &[(&str, i32, i64)],
    ) -> Result<(), TaskError> {
        let mut eval = redis::cmd("EVAL");
        eval.arg(APPLY)
            .arg(0)
            .arg(self.errant_key())
            .arg(sent.len());
        for (record, cmd) in sent {
            eval.arg(cmd.args_iter().len()).arg(errant_at(record));
            for arg in cmd.args_iter() {
                if let redis::Arg::Simple(bytes) = arg {
                    eval.arg(bytes);
                }
            }
        }
        eval.arg(bad.len());
        for entry in &bad {
            eval.arg(entry);
        }
        eval.arg(next.len());
        for (topic, partition, offset) in next {
            eval.arg(offset_key(&self.connector, topic, *partition))
                .arg(offset_value(topic, *partition, *offset));
        }
        let (Some(conn), Some(connection)) = (self.conn.as_mut(), &self.connection) else {
            return Err(TaskError::fatal("the task was not started"));
        };
        let refused: Vec<String> = eval
            .query_async(conn)
            .await
            .map_err(|e| connection.error(e))?;
        self.errant_recent.extend(bad);
        for pair in refused.chunks(2) {
            let [number, entry] = pair else { continue };
            let record = number
                .parse::<usize>()
                .ok()
                .and_then(|n| sent.get(n.checked_sub(1)?));
            if let Some((record, _)) = record {
                let reason = parse_errant(entry).map_or("", |e| e.3);
                self.report(record, format!("Redis refused the command: {reason}"));
            }
            self.errant_recent.push(entry.clone());
        }
        Ok(())
    }

    /// Reports again the errant entries of `partitions` a killed task left in the list.
    async fn restore_errant(&mut self, partitions: &[TopicPartition]) -> Result<(), TaskError> {
        let key = self.errant_key();
        let (Some(conn), Some(connection)) = (self.conn.as_mut(), &self.connection) else {
            return Ok(());
        };
        let entries: Vec<String> = redis::cmd("LRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await
            .map_err(|e| connection.error(e))?;
        for entry in entries {
            let Some((topic, partition, offset, reason)) = parse_errant(&entry) else {
                tracing::warn!(
                    key,
                    entry,
                    "an errant entry that is not topic, partition, offset, reason"
                );
                continue;
            };
            if !partitions
                .iter()
                .any(|p| p.topic == topic && p.partition == partition)
            {
                continue;
            }
            tracing::info!(
                topic,
                partition,
                offset,
                "reporting again a bad record a stopped task left unsettled"
            );
            if let Some(errors) = &self.errors {
                errors.sink_coordinates(topic, partition, offset, reason);
            }
            self.errant_recent.push(entry);
        }
        Ok(())
    }

    /// Removes from the errant list the entries reported before the last flush: the worker
    /// asks for one flush at a time, so before it asked for this one it had the answer to the
    /// last, and before that answer every report made until then (a report goes before the
    /// reply of the call that made it), each in the dead-letter queue.
    async fn settle_errant(&mut self) -> Result<(), TaskError> {
        let settled = std::mem::replace(
            &mut self.errant_settled,
            std::mem::take(&mut self.errant_recent),
        );
        if settled.is_empty() {
            return Ok(());
        }
        let key = self.errant_key();
        let (Some(conn), Some(connection)) = (self.conn.as_mut(), &self.connection) else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        for entry in &settled {
            pipe.cmd("LREM").arg(&key).arg(1).arg(entry).ignore();
        }
        let () = pipe
            .query_async(conn)
            .await
            .map_err(|e| connection.error(e))?;
        Ok(())
    }

    fn report(&self, record: &SinkRecordRef<'_>, message: String) {
        if let Some(errors) = &self.errors {
            errors.sink_record_ref(record, message);
        }
    }

    /// The command that writes `record`, or why none can.
    fn command_for(&self, record: &SinkRecordRef<'_>) -> Result<redis::Cmd, String> {
        let command = self.command.ok_or("the task was not started")?;
        let keyspace = self.key.replace(TOKEN_TOPIC, &record.topic);
        let record_key = || -> Result<Vec<u8>, String> {
            record.key.scalar_bytes().map(|b| b.into_owned()).ok_or_else(|| {
                "the record key must be a string or bytes (StringConverter or ByteArrayConverter)"
                    .to_string()
            })
        };
        let key = || -> Result<Vec<u8>, String> {
            let own = record_key()?;
            if keyspace.is_empty() {
                return Ok(own);
            }
            let mut key = format!("{keyspace}{}", self.separator).into_bytes();
            key.extend_from_slice(&own);
            Ok(key)
        };
        let tombstone = record.value.is_null();
        let mut cmd;
        match command {
            Command::Set if tombstone => {
                cmd = redis::cmd("DEL");
                cmd.arg(key()?);
            }
            Command::Set => {
                let value = record.value.scalar_bytes().ok_or(
                    "the value must be a string, bytes or a number for SET (StringConverter or ByteArrayConverter)",
                )?;
                cmd = redis::cmd("SET");
                cmd.arg(key()?).arg(value);
            }
            Command::Hset if tombstone => {
                cmd = redis::cmd("DEL");
                cmd.arg(key()?);
            }
            Command::Hset | Command::Xadd => {
                let fields = fields_of(&record.value).ok_or(
                    "the value must be a struct or a map for HSET and XADD (JsonConverter or a schema'd converter)",
                )?;
                if fields.is_empty() {
                    return Err("the value has no fields to write".into());
                }
                if command == Command::Hset {
                    cmd = redis::cmd("HSET");
                    cmd.arg(key()?);
                } else {
                    cmd = redis::cmd("XADD");
                    cmd.arg(&keyspace).arg("*");
                }
                for (name, value) in fields {
                    cmd.arg(name).arg(value);
                }
            }
            Command::Lpush | Command::Rpush => {
                cmd = redis::cmd(if command == Command::Lpush {
                    "LPUSH"
                } else {
                    "RPUSH"
                });
                cmd.arg(&keyspace).arg(record_key()?);
            }
            Command::Sadd => {
                cmd = redis::cmd(if tombstone { "SREM" } else { "SADD" });
                cmd.arg(&keyspace).arg(record_key()?);
            }
            Command::Del => {
                cmd = redis::cmd("DEL");
                cmd.arg(key()?);
            }
        }
        Ok(cmd)
    }
}

/// The key under which connector `connector` stores the next offset of `topic`/`partition`.
/// A bad record's entry in the errant list: `topic TAB partition TAB offset TAB reason`.
fn errant_entry(record: &SinkRecordRef<'_>, reason: &str) -> String {
    format!("{}\t{reason}", errant_at(record))
}

/// The start of a record's errant entry (`APPLY` appends the reason Redis gave).
fn errant_at(record: &SinkRecordRef<'_>) -> String {
    format!("{}\t{}\t{}", record.topic, record.partition, record.offset)
}

/// An errant entry's topic, partition, offset and reason; `None` for anything else.
fn parse_errant(entry: &str) -> Option<(&str, i32, i64, &str)> {
    let mut fields = entry.splitn(4, '\t');
    Some((
        fields.next()?,
        fields.next()?.parse().ok()?,
        fields.next()?.parse().ok()?,
        fields.next().unwrap_or_default(),
    ))
}

fn offset_key(connector: &str, topic: &str, partition: i32) -> String {
    format!("sluice:sink-offset:{connector}:{topic}:{partition}")
}

fn offset_value(topic: &str, partition: i32, offset: i64) -> String {
    serde_json::json!({ "topic": topic, "partition": partition, "offset": offset }).to_string()
}

/// A struct's fields (names from its schema) or a map's entries, as name/value bytes;
/// null fields are left out, nested values written as their text. `None` for anything else.
fn fields_of(data: &DataRef<'_>) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let DataRef::Data(d) = data else {
        return None;
    };
    let data::Kind::Structured(s) = d.kind.as_ref()? else {
        return None;
    };
    let text = |v: &sluice_connector_sdk::proto::Value| -> Option<Vec<u8>> {
        let kind = v.kind.as_ref()?;
        if let value::Kind::Null(_) = kind {
            return None;
        }
        sluice_connector_sdk::data::primitive_bytes(kind)
            .map(|b| b.into_owned())
            .or_else(|| {
                let wrapped = sluice_connector_sdk::proto::Data {
                    kind: Some(data::Kind::Structured(
                        sluice_connector_sdk::proto::Structured {
                            schema: None,
                            value: Some(v.clone()),
                        },
                    )),
                };
                sluice_connector_sdk::data::to_text(&wrapped).map(|t| t.into_owned().into_bytes())
            })
    };
    match s.value.as_ref()?.kind.as_ref()? {
        value::Kind::Struct(st) => {
            let names: Vec<&str> = match &s.schema {
                Some(schema) if !schema.fields.is_empty() => {
                    schema.fields.iter().map(|f| f.name.as_str()).collect()
                }
                _ => st.names.iter().map(String::as_str).collect(),
            };
            Some(
                names
                    .iter()
                    .zip(&st.fields)
                    .filter_map(|(name, v)| Some((name.as_bytes().to_vec(), text(v)?)))
                    .collect(),
            )
        }
        value::Kind::Map(m) => Some(
            m.entries
                .iter()
                .filter_map(|e| Some((text(e.key.as_ref()?)?, text(e.value.as_ref()?)?)))
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_connector_sdk::proto::{
        self, Field, MapEntry, MapValue, Schema, SchemaType, StructValue, Structured,
    };
    use sluice_connector_sdk::PlainData;

    fn structured(schema: Option<Schema>, kind: value::Kind) -> DataRef<'static> {
        DataRef::Data(Box::new(proto::Data {
            kind: Some(data::Kind::Structured(Structured {
                schema,
                value: Some(proto::Value { kind: Some(kind) }),
            })),
        }))
    }

    fn v(kind: value::Kind) -> proto::Value {
        proto::Value { kind: Some(kind) }
    }

    #[test]
    fn structs_and_maps_become_fields_and_other_shapes_do_not() {
        let schema = Schema {
            r#type: SchemaType::Struct as i32,
            fields: ["id", "name", "gone"]
                .into_iter()
                .map(|n| Field {
                    name: n.into(),
                    schema: None,
                })
                .collect(),
            ..Schema::default()
        };
        let row = structured(
            Some(schema),
            value::Kind::Struct(StructValue {
                fields: vec![
                    v(value::Kind::Int(7)),
                    v(value::Kind::String("ann".into())),
                    v(value::Kind::Null(true)),
                ],
                names: Vec::new(),
            }),
        );
        assert_eq!(
            fields_of(&row).unwrap(),
            [
                (b"id".to_vec(), b"7".to_vec()),
                (b"name".to_vec(), b"ann".to_vec())
            ]
        );
        let map = structured(
            None,
            value::Kind::Map(MapValue {
                entries: vec![MapEntry {
                    key: Some(v(value::Kind::String("k".into()))),
                    value: Some(v(value::Kind::Boolean(true))),
                }],
            }),
        );
        assert_eq!(
            fields_of(&map).unwrap(),
            [(b"k".to_vec(), b"true".to_vec())]
        );
        let text = DataRef::Plain(PlainData::String {
            schema: None,
            text: "x",
        });
        assert!(fields_of(&text).is_none());
        assert_eq!(&*text.scalar_bytes().unwrap(), b"x");
        assert!(map.scalar_bytes().is_none());
        assert!(DataRef::Plain(PlainData::Null).scalar_bytes().is_none());
    }

    #[test]
    fn commands_parse_in_any_case_and_collections_are_told_apart() {
        assert_eq!(Command::parse(" hset "), Some(Command::Hset));
        assert_eq!(Command::parse("JSONSET"), None);
        assert!(Command::Xadd.collection() && !Command::Set.collection());
        assert_eq!(offset_key("c", "t", 3), "sluice:sink-offset:c:t:3");
    }
}
