//! Datagen: deterministic records of a configured size, count, rate and key cardinality, each
//! carrying its task and sequence number so that tests can count loss and duplicates; plus a
//! null sink that discards what it is given, for benchmarks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sluice_connector_sdk::proto::{
    data as proto_data, ConfigDef, ConfigType, Data, ExactlyOnceSupport, FieldError, Importance,
    SchemaType, SinkRecord, Structured, TransactionBoundary,
};
use sluice_connector_sdk::{
    data, Config, ConfigDefBuilder, Connector, PlainData, Plugin, SinkBatch, SinkConnector,
    SinkTask, SinkTaskContext, SourceBatchWriter, SourceConnector, SourceRecord, SourceRecordRef,
    SourceTask, SourceTaskContext, TaskError,
};

const TOPIC: &str = "topic";
const RECORD_SIZE: &str = "record.size";
const COUNT: &str = "count";
const RATE: &str = "rate";
const KEY_CARDINALITY: &str = "key.cardinality";
const LABELS_FILE: &str = "labels.file";
const CRASH_FILE: &str = "fault.crash.file";
const COMMIT_EVERY: &str = "transaction.commit.every";
const INVALID_EVERY: &str = "fault.invalid.every";
/// Set by `plan` from `labels.file`: the task's line of that file.
const TASK_LABEL: &str = "datagen.label";
/// Set by `plan` on each task: its index and the number of tasks.
const TASK_INDEX: &str = "datagen.task";
const TASK_COUNT: &str = "datagen.tasks";

/// The `datagen` plugin: DatagenSource and NullSink.
pub fn plugin() -> Plugin {
    Plugin::new("datagen", env!("CARGO_PKG_VERSION"))
        .source(DatagenSource)
        .sink(NullSink)
}

/// The value datagen writes for `(task, seq)`, exactly `size` bytes when `size` allows:
/// `"<task>:<seq>:"` followed by padding whose `i`-th byte is letter `(seq + i) mod 26`,
/// copied in runs of the alphabet.
pub fn record_value(task: u32, seq: u64, size: usize) -> String {
    let mut value = String::new();
    write_value(&mut value, task, seq, size);
    value
}

/// [`record_value`] into `value`, replacing what it held.
fn write_value(value: &mut String, task: u32, seq: u64, size: usize) {
    const ALPHABET_TWICE: &str = "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz";
    value.clear();
    // The head is at most 32 bytes (10 digits of a u32, 20 of a u64, two colons).
    value.reserve(size.max(32));
    // itoa, not `write!`: the formatting machinery was a tenth of a datagen task's time.
    value.push_str(itoa::Buffer::new().format(task));
    value.push(':');
    value.push_str(itoa::Buffer::new().format(seq));
    value.push(':');
    let mut pad = size.saturating_sub(value.len());
    let mut at = (seq % 26) as usize;
    while pad > 0 {
        let n = pad.min(26);
        value.push_str(&ALPHABET_TWICE[at..at + n]);
        at = (at + n) % 26;
        pad -= n;
    }
}

/// The source offset of record `seq`: `{"seq":<seq>}`.
fn seq_offset(seq: u64) -> String {
    let mut offset = String::new();
    write_offset(&mut offset, seq);
    offset
}

/// [`seq_offset`] into `offset`, replacing what it held.
fn write_offset(offset: &mut String, seq: u64) {
    offset.clear();
    offset.push_str("{\"seq\":");
    offset.push_str(itoa::Buffer::new().format(seq));
    offset.push('}');
}

/// The key of record `seq` with key cardinality `cardinality` (> 0): `key-<n>`.
fn write_key(key: &mut String, task: u32, tasks: u64, cardinality: u64, seq: u64) {
    let k = (seq * tasks + u64::from(task)) % cardinality;
    key.clear();
    key.push_str("key-");
    key.push_str(itoa::Buffer::new().format(k));
}

/// Parses a value written by [`record_value`] into `(task, seq)`.
pub fn parse_value(value: &str) -> Option<(u32, u64)> {
    let mut parts = value.splitn(3, ':');
    let task = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some((task, seq))
}

pub struct DatagenSource;

impl Connector for DatagenSource {
    fn class_name(&self) -> &'static str {
        "DatagenSource"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec!["Datagen", "sluice.DatagenSource"]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Generates deterministic, sequence-numbered records"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        vec![
            ConfigDefBuilder::new(TOPIC, ConfigType::String)
                .importance(Importance::High)
                .doc("The topic to write to")
                .build(),
            ConfigDefBuilder::new(RECORD_SIZE, ConfigType::Int)
                .default_value("100")
                .doc("Size of each value in bytes")
                .build(),
            ConfigDefBuilder::new(COUNT, ConfigType::Long)
                .default_value("0")
                .doc("Records to generate across all tasks; 0 for no end")
                .build(),
            ConfigDefBuilder::new(RATE, ConfigType::Double)
                .default_value("0")
                .doc("Records per second across all tasks; 0 for as fast as possible")
                .build(),
            ConfigDefBuilder::new(KEY_CARDINALITY, ConfigType::Long)
                .default_value("1000")
                .doc("Number of distinct keys; 0 for null keys")
                .build(),
            ConfigDefBuilder::new(LABELS_FILE, ConfigType::String)
                .default_value("")
                .doc("A file of labels, one per line: task i's config carries line i, and a change of the file asks the worker to plan the tasks again (task reconfiguration)")
                .build(),
            ConfigDefBuilder::new(COMMIT_EVERY, ConfigType::Long)
                .default_value("0")
                .doc("With transaction.boundary=connector: each task commits a transaction after every this many records (its sequence numbers), 0 never")
                .build(),
            ConfigDefBuilder::new(INVALID_EVERY, ConfigType::Long)
                .default_value("0")
                .importance(Importance::Low)
                .doc("Fault injection: every this many records (by sequence number) the value is invalid for its schema (a null for a required string), so that converters fail on it; 0 never")
                .build(),
            ConfigDefBuilder::new(CRASH_FILE, ConfigType::String)
                .default_value("")
                .importance(Importance::Low)
                .doc("Fault injection: while this file exists, a task's process exits abruptly (status 70) at its next poll")
                .build(),
        ]
    }

    fn validate(&self, config: &Config) -> Vec<FieldError> {
        let mut errors = config.validate_against(&self.config_defs());
        for key in [RECORD_SIZE, COUNT, KEY_CARDINALITY] {
            if config.parse_or::<i64>(key, 0).is_ok_and(|v| v < 0) {
                errors.push(FieldError {
                    name: key.into(),
                    message: "must not be negative".into(),
                });
            }
        }
        if config
            .parse_or::<f64>(RATE, 0.0)
            .is_ok_and(|v| v < 0.0 || !v.is_finite())
        {
            errors.push(FieldError {
                name: RATE.into(),
                message: "must be a non-negative number".into(),
            });
        }
        errors
    }

    fn plan(&self, config: &Config, max_tasks: usize) -> Result<Vec<Config>, TaskError> {
        let count: u64 = config.parse_or(COUNT, 0)?;
        let rate: f64 = config.parse_or(RATE, 0.0)?;
        let tasks = max_tasks.max(1) as u64;
        let labels: Vec<String> = match config.get(LABELS_FILE).filter(|p| !p.is_empty()) {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| TaskError::retriable(format!("read {LABELS_FILE} {path}: {e}")))?
                .lines()
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        };
        Ok((0..tasks)
            .map(|i| {
                let mut task = config.clone();
                task.set(TASK_INDEX, i.to_string());
                task.set(TASK_COUNT, tasks.to_string());
                if count > 0 {
                    task.set(
                        COUNT,
                        (count / tasks + u64::from(i < count % tasks)).to_string(),
                    );
                }
                task.set(RATE, (rate / tasks as f64).to_string());
                if let Some(label) = labels.get(i as usize) {
                    task.set(TASK_LABEL, label.clone());
                }
                task
            })
            .collect())
    }

    fn monitor(&self, config: &Config, reconfigure: sluice_connector_sdk::Reconfigure) {
        let Some(path) = config.get(LABELS_FILE).filter(|p| !p.is_empty()) else {
            return;
        };
        let path = path.to_string();
        std::thread::spawn(move || {
            let mut seen = std::fs::read_to_string(&path).ok();
            while !reconfigure.is_closed() {
                std::thread::sleep(Duration::from_millis(200));
                let now = std::fs::read_to_string(&path).ok();
                if now != seen {
                    seen = now;
                    if !reconfigure.request(format!("{path} changed")) {
                        return;
                    }
                }
            }
        });
    }
}

impl SourceConnector for DatagenSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(DatagenTask::default())
    }

    /// Each record's offset is its sequence number: a task resumes right after it.
    fn exactly_once_support(&self) -> ExactlyOnceSupport {
        ExactlyOnceSupport::Supported
    }

    fn defines_transaction_boundaries(&self) -> bool {
        true
    }
}

#[derive(Default)]
struct DatagenTask {
    topic: String,
    task: u32,
    tasks: u64,
    size: usize,
    /// Records this task generates in all; `None` for no end.
    count: Option<u64>,
    rate: f64,
    cardinality: u64,
    partition: Option<Arc<str>>,
    crash_file: Option<String>,
    commit_every: u64,
    invalid_every: u64,
    next_seq: u64,
    started: Option<(Instant, u64)>,
    buffers: Buffers,
}

#[async_trait]
impl SourceTask for DatagenTask {
    async fn start(&mut self, ctx: SourceTaskContext) -> Result<(), TaskError> {
        let config = &ctx.config;
        self.topic = config.required(TOPIC)?.to_string();
        self.task = config.parse_or(TASK_INDEX, ctx.task_id)?;
        self.tasks = config.parse_or(TASK_COUNT, 1)?;
        self.size = config.parse_or(RECORD_SIZE, 100)?;
        self.count = Some(config.parse_or(COUNT, 0u64)?).filter(|&c| c > 0);
        self.rate = config.parse_or(RATE, 0.0)?;
        self.cardinality = config.parse_or(KEY_CARDINALITY, 1000)?;
        self.commit_every = config.parse_or(COMMIT_EVERY, 0)?;
        self.invalid_every = config.parse_or(INVALID_EVERY, 0)?;
        self.crash_file = config
            .get(CRASH_FILE)
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        let partition = serde_json::json!({ "datagen.task": self.task }).to_string();
        if let Some(offset) = ctx.offset(&partition) {
            let last = offset
                .get("seq")
                .and_then(|s| s.as_u64())
                .ok_or_else(|| TaskError::fatal(format!("stored offset {offset} has no seq")))?;
            self.next_seq = last + 1;
        }
        self.partition = Some(partition.into());
        Ok(())
    }

    async fn poll(&mut self, max_records: usize) -> Result<Vec<SourceRecord>, TaskError> {
        let n = self.due(max_records).await;
        let records = (self.next_seq..self.next_seq + n)
            .map(|seq| {
                let mut record = self.invalid(seq).unwrap_or_else(|| SourceRecord {
                    source_partition: self.partition.clone(),
                    source_offset: Some(seq_offset(seq)),
                    topic: self.topic.clone(),
                    value: data::string(record_value(self.task, seq, self.size)),
                    transaction: self.transaction(seq),
                    ..SourceRecord::default()
                });
                if self.cardinality > 0 {
                    let mut key = String::new();
                    write_key(&mut key, self.task, self.tasks, self.cardinality, seq);
                    record.key = data::string(key);
                }
                record
            })
            .collect();
        self.next_seq += n;
        Ok(records)
    }

    /// The records written in place from the task's own buffers: no allocation per record.
    async fn poll_into(
        &mut self,
        batch: &mut SourceBatchWriter,
        max_records: usize,
    ) -> Result<(), TaskError> {
        let n = self.due(max_records).await;
        fn string(text: &str) -> PlainData<'_> {
            PlainData::String {
                schema: Some(SchemaType::String as i32),
                text,
            }
        }
        let mut buffers = std::mem::take(&mut self.buffers);
        for seq in self.next_seq..self.next_seq + n {
            if self.cardinality > 0 {
                write_key(
                    &mut buffers.key,
                    self.task,
                    self.tasks,
                    self.cardinality,
                    seq,
                );
            }
            let key = if self.cardinality > 0 {
                string(&buffers.key)
            } else {
                PlainData::Null
            };
            if let Some(mut invalid) = self.invalid(seq) {
                if self.cardinality > 0 {
                    invalid.key = data::string(buffers.key.as_str());
                }
                batch.push(&invalid);
                continue;
            }
            write_offset(&mut buffers.offset, seq);
            write_value(&mut buffers.value, self.task, seq, self.size);
            batch.push_ref(&SourceRecordRef {
                source_partition: self.partition.as_ref(),
                source_offset: Some(&buffers.offset),
                topic: &self.topic,
                key,
                value: string(&buffers.value),
                transaction: self.transaction(seq),
                ..SourceRecordRef::default()
            });
        }
        self.buffers = buffers;
        self.next_seq += n;
        Ok(())
    }
}

impl DatagenTask {
    /// How many records the next poll makes, at most `max_records`: none (after a short
    /// sleep) once `count` are made or while the rate allows none. Crashes first when the
    /// crash file exists.
    async fn due(&mut self, max_records: usize) -> u64 {
        if let Some(path) = &self.crash_file {
            if std::path::Path::new(path).exists() {
                eprintln!(
                    "datagen task {}: {path} exists; crashing as asked",
                    self.task
                );
                std::process::exit(70);
            }
        }
        let mut n = max_records as u64;
        if let Some(count) = self.count {
            n = n.min(count.saturating_sub(self.next_seq));
            if n == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return 0;
            }
        }
        if self.rate > 0.0 {
            let (since, first) = *self.started.get_or_insert((Instant::now(), self.next_seq));
            let allowed = (since.elapsed().as_secs_f64() * self.rate) as u64 + 1;
            let sent = self.next_seq - first;
            if allowed <= sent {
                let wait = Duration::from_secs_f64((sent + 1) as f64 / self.rate)
                    .saturating_sub(since.elapsed());
                tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
                return 0;
            }
            n = n.min(allowed - sent);
        }
        n
    }

    /// With `fault.invalid.every`, record `seq` when it is one of the invalid ones: a required
    /// string with no value, which no converter that checks schemas accepts.
    fn invalid(&self, seq: u64) -> Option<SourceRecord> {
        if self.invalid_every == 0 || !(seq + 1).is_multiple_of(self.invalid_every) {
            return None;
        }
        Some(SourceRecord {
            source_partition: self.partition.clone(),
            source_offset: Some(seq_offset(seq)),
            topic: self.topic.clone(),
            value: Data {
                kind: Some(proto_data::Kind::Structured(Structured {
                    schema: Some(data::schema(SchemaType::String, false)),
                    value: None,
                })),
            },
            transaction: self.transaction(seq),
            ..SourceRecord::default()
        })
    }

    /// With `transaction.commit.every`, a commit after every that many records.
    fn transaction(&self, seq: u64) -> TransactionBoundary {
        if self.commit_every > 0 && (seq + 1).is_multiple_of(self.commit_every) {
            TransactionBoundary::Commit
        } else {
            TransactionBoundary::Unspecified
        }
    }
}

/// A task's reusable text: the key, offset and value of the record being written.
#[derive(Default)]
struct Buffers {
    key: String,
    offset: String,
    value: String,
}

/// Discards every record; flushes succeed at once.
pub struct NullSink;

impl Connector for NullSink {
    fn class_name(&self) -> &'static str {
        "NullSink"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec!["sluice.NullSink"]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Discards records; for benchmarks"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        Vec::new()
    }
}

impl SinkConnector for NullSink {
    fn task(&self) -> Box<dyn SinkTask> {
        Box::new(NullSinkTask)
    }
}

struct NullSinkTask;

#[async_trait]
impl SinkTask for NullSinkTask {
    async fn start(&mut self, _ctx: SinkTaskContext) -> Result<(), TaskError> {
        Ok(())
    }

    async fn put(&mut self, _records: Vec<SinkRecord>) -> Result<(), TaskError> {
        Ok(())
    }

    /// Reads every record in place, as a sink writing them would, then drops them.
    async fn put_batch(&mut self, batch: SinkBatch) -> Result<(), TaskError> {
        batch.records()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_configured_size_and_parse_back() {
        assert_eq!(seq_offset(12345), r#"{"seq":12345}"#);
        assert_eq!(seq_offset(u64::MAX), format!("{{\"seq\":{}}}", u64::MAX));
        let v = record_value(2, 12345, 100);
        assert_eq!(v.len(), 100);
        assert_eq!(parse_value(&v), Some((2, 12345)));
        assert_eq!(record_value(0, 1, 100), record_value(0, 1, 100));
        // The padding continues the alphabet from the sequence number, across runs.
        for (seq, size) in [
            (0, 0),
            (3, 5),
            (25, 60),
            (26, 100),
            (999_999, 1024),
            (7, 31),
        ] {
            let v = record_value(1, seq, size);
            let head = format!("1:{seq}:");
            assert_eq!(v.len(), size.max(head.len()));
            for (i, b) in v.bytes().skip(head.len()).enumerate() {
                assert_eq!(
                    b,
                    b'a' + ((seq as usize + i) % 26) as u8,
                    "{seq} {size} {i}"
                );
            }
        }
    }

    #[test]
    fn plan_splits_count_and_rate() {
        let config = Config::from([("topic", "t"), ("count", "10"), ("rate", "30")]);
        let tasks = DatagenSource.plan(&config, 3).unwrap();
        let counts: Vec<_> = tasks.iter().map(|t| t.get("count").unwrap()).collect();
        assert_eq!(counts, ["4", "3", "3"]);
        assert_eq!(tasks[1].get("rate"), Some("10"));
        assert_eq!(tasks[2].get(TASK_INDEX), Some("2"));
    }

    #[tokio::test]
    async fn task_generates_its_count_and_resumes_after_the_committed_seq() {
        let config = Config::from([("topic", "t"), ("count", "5")]);
        let mut ctx = SourceTaskContext {
            connector_name: "d".into(),
            task_id: 0,
            config,
            positions: Default::default(),
            errors: sluice_connector_sdk::ErrantRecordReporter::detached(),
            commits: Default::default(),
        };
        let mut task = DatagenTask::default();
        task.start(ctx.clone()).await.unwrap();
        assert_eq!(task.poll(3).await.unwrap().len(), 3);
        assert_eq!(task.poll(10).await.unwrap().len(), 2);
        assert!(task.poll(10).await.unwrap().is_empty());

        ctx.positions
            .insert("{\"datagen.task\":0}".into(), "{\"seq\":2}".into());
        let mut resumed = DatagenTask::default();
        resumed.start(ctx).await.unwrap();
        let records = resumed.poll(10).await.unwrap();
        let seqs: Vec<_> = records
            .iter()
            .map(|r| parse_value(&data::to_text(&r.value).unwrap()).unwrap().1)
            .collect();
        assert_eq!(seqs, [3, 4]);
    }

    /// The records a task writes in place are the ones its `poll` returns, keys, invalid
    /// records and transaction boundaries included.
    #[tokio::test]
    async fn records_written_in_place_are_the_polled_ones() {
        let config = Config::from([
            ("topic", "t"),
            ("count", "40"),
            ("record.size", "70"),
            ("key.cardinality", "7"),
            ("fault.invalid.every", "9"),
            ("transaction.commit.every", "4"),
        ]);
        let ctx = SourceTaskContext {
            connector_name: "d".into(),
            task_id: 0,
            config,
            positions: Default::default(),
            errors: sluice_connector_sdk::ErrantRecordReporter::detached(),
            commits: Default::default(),
        };
        let (mut polled, mut written) = (DatagenTask::default(), DatagenTask::default());
        polled.start(ctx.clone()).await.unwrap();
        written.start(ctx).await.unwrap();
        for max in [25, 25] {
            let mut expected = SourceBatchWriter::default();
            for record in polled.poll(max).await.unwrap() {
                expected.push(&record);
            }
            let mut batch = SourceBatchWriter::default();
            written.poll_into(&mut batch, max).await.unwrap();
            let (batch, expected) = (batch.into_batch().unwrap(), expected.into_batch().unwrap());
            assert_eq!(batch, expected);
            assert!(batch.records.iter().any(|r| r.transaction != 0));
            assert!(batch.records.iter().any(|r| r.key != Some(data::null())));
        }
    }
}
