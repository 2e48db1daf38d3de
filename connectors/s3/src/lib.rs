//! The `s3` connector plugin: `S3Sink`, Confluent's S3 sink connector
//! (`io.confluent.connect.s3.S3SinkConnector`) with its keys, for Amazon S3 and S3-compatible
//! stores (`store.url`).
//!
//! Records of a Kafka partition collect in files, one per encoded partition
//! (`partitioner.class`); the files are uploaded, all of them, when the partition has
//! `flush.size` records written since the last upload, when a record's timestamp is
//! `rotate.interval.ms` past the first one's, or when the wall clock passes the next multiple
//! of `rotate.schedule.interval.ms`. An object is named
//! `<topics.dir>/<topic>/<encoded partition>/<topic>+<kafka partition>+<start offset>.<ext>`
//! (the offset zero-padded to `file.name.offset.zero.pad.width`), and the offsets the worker
//! commits are the start offsets of the files not uploaded yet. After a crash the worker
//! resumes at a file's start, the same records make the same file, and its upload replaces
//! the object with the same bytes: exactly once by construction, as long as the rotation is
//! repeatable (`flush.size`, and `rotate.interval.ms` with `timestamp.extractor` Record or
//! RecordField; the wall clock is not repeatable).
//!
//! A file larger than `s3.part.size` is sent as a multipart upload: completed, or aborted
//! when it fails; an upload a killed task left unfinished is aborted when its partition is
//! next opened. Nothing half-written is ever an object.

mod format;
mod partitioner;
mod store;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sluice_connector_sdk::proto::{
    ConfigDef, ConfigType, FieldError, Importance, SinkRecord, TopicPartition, TopicPartitionOffset,
};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, ErrantRecordReporter, Plugin, SinkBatch, SinkConnector,
    SinkRecordRef, SinkTask, SinkTaskContext, TaskError,
};

use format::{Body, Encoded, FileSchema, Format};
use partitioner::{Extractor, Partitioner};
use store::Store;

const TOPICS_DIR: &str = "topics.dir";
const DIRECTORY_DELIM: &str = "directory.delim";
const FILE_DELIM: &str = "file.delim";
const FLUSH_SIZE: &str = "flush.size";
const ROTATE_INTERVAL: &str = "rotate.interval.ms";
const ROTATE_SCHEDULE: &str = "rotate.schedule.interval.ms";
const PAD_WIDTH: &str = "file.name.offset.zero.pad.width";
const NULL_VALUES: &str = "behavior.on.null.values";

/// The `s3` plugin: S3Sink.
pub fn plugin() -> Plugin {
    Plugin::new("s3", env!("CARGO_PKG_VERSION")).sink(S3Sink)
}

pub struct S3Sink;

impl Connector for S3Sink {
    fn class_name(&self) -> &'static str {
        "S3Sink"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec!["io.confluent.connect.s3.S3SinkConnector", "S3SinkConnector"]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Writes each Kafka partition's records to S3 objects named by topic, partition and start offset (exactly once by construction)"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let def = ConfigDefBuilder::define;
        use ConfigType::{Int, Long, Password, String as Text};
        use Importance::{High, Low, Medium};
        vec![
            def(store::BUCKET, Text, None, High, "The bucket to write to (it must exist)"),
            def(store::REGION, Text, Some("us-west-2"), Medium, "The bucket's region"),
            def(store::STORE_URL, Text, Some(""), High, "The endpoint of an S3-compatible store (http://host:port); empty: Amazon S3"),
            def(store::PATH_STYLE, ConfigType::Boolean, Some("true"), Low, "Whether the bucket is addressed in the path (true) or as a host name"),
            def(store::ACCESS_KEY, Text, Some(""), High, "The access key id; empty: the environment (AWS_ACCESS_KEY_ID, ...) or the shared credentials file"),
            def(store::SECRET_KEY, Password, Some(""), High, "The secret access key"),
            def(store::PART_SIZE, Int, Some("26214400"), Low, "Bytes per part of a multipart upload; a file up to this size is one PUT (at least 5 MiB)"),
            def(store::RETRIES, Int, Some("3"), Low, "Retries of a failed S3 request (5xx, 408, 429, a broken connection) before the put fails"),
            def(store::BACKOFF, Long, Some("200"), Low, "The first retry's backoff in milliseconds; it doubles per retry"),
            def(TOPICS_DIR, Text, Some("topics"), High, "The folder the topics' folders are in"),
            def(DIRECTORY_DELIM, Text, Some("/"), Low, "The delimiter between folders"),
            def(FILE_DELIM, Text, Some("+"), Low, "The delimiter between topic, partition and offset in a file name"),
            def(FLUSH_SIZE, Int, None, High, "Records of a Kafka partition per upload"),
            def(ROTATE_INTERVAL, Long, Some("-1"), Medium, "Upload a partition's files when a record's timestamp (timestamp.extractor) is this many ms past the first one's; -1: off"),
            def(ROTATE_SCHEDULE, Long, Some("-1"), Medium, "Upload a partition's files each time the wall clock passes a multiple of this many ms; -1: off (not repeatable after a crash)"),
            def(PAD_WIDTH, Int, Some("10"), Low, "Digits of the start offset in a file name, zero-padded"),
            def(NULL_VALUES, Text, Some("fail"), Low, "A record with a null value: fail (reported to errors.*, the dead-letter queue when tolerated) or ignore"),
            def(format::FORMAT, Text, Some(format::JSON), High, "JsonFormat, AvroFormat or ByteArrayFormat (io.confluent.connect.s3.format.*)"),
            def(format::AVRO_CODEC, Text, Some("null"), Low, "AvroFormat's codec: null or deflate"),
            def(format::BYTES_EXTENSION, Text, Some(".bin"), Low, "ByteArrayFormat's file extension"),
            def(format::BYTES_SEPARATOR, Text, Some("\n"), Low, "ByteArrayFormat's separator after each value"),
            def(format::COMPRESSION, Text, Some("none"), Low, "none or gzip: JsonFormat and ByteArrayFormat files gzipped (.gz)"),
            def(format::COMPRESSION_LEVEL, Int, Some("-1"), Low, "gzip's level, 0 to 9, or -1 for the default"),
            def(partitioner::PARTITIONER, Text, Some(partitioner::DEFAULT), High, "DefaultPartitioner, FieldPartitioner, TimeBasedPartitioner, DailyPartitioner or HourlyPartitioner (io.confluent.connect.storage.partitioner.*)"),
            def(partitioner::FIELD_NAME, Text, Some(""), Medium, "FieldPartitioner's fields, comma-separated"),
            def(partitioner::PATH_FORMAT, Text, Some(""), Medium, "TimeBasedPartitioner's Joda-Time path format, e.g. 'year'=YYYY/'month'=MM/'day'=dd/'hour'=HH"),
            def(partitioner::DURATION, Long, Some("-1"), Medium, "TimeBasedPartitioner's partition length in milliseconds"),
            def(partitioner::TIMEZONE, Text, Some(""), Medium, "Time-based partitioners' timezone: UTC or an offset such as +02:00"),
            def(partitioner::EXTRACTOR, Text, Some("Wallclock"), Medium, "Where a record's time comes from: Wallclock, Record or RecordField"),
            def(partitioner::TIMESTAMP_FIELD, Text, Some("timestamp"), Low, "RecordField's field (dotted for a nested one)"),
        ]
    }

    fn validate(&self, config: &Config) -> Vec<FieldError> {
        let mut errors = config.validate_against(&self.config_defs());
        let mut add = |(name, message): (String, String)| errors.push(FieldError { name, message });
        if let Err(e) = Settings::from_config(config) {
            add(e);
        }
        if let Err(e) = Store::from_config(config) {
            let key = if e.message.contains("credentials") || e.message.contains(store::SECRET_KEY)
            {
                store::ACCESS_KEY
            } else {
                store::BUCKET
            };
            add((key.into(), e.message));
        }
        errors
    }
}

impl SinkConnector for S3Sink {
    fn task(&self) -> Box<dyn SinkTask> {
        Box::new(S3SinkTask::default())
    }
}

/// What a task reads from its config, besides the store.
struct Settings {
    topics_dir: String,
    delim: String,
    file_delim: String,
    flush_size: usize,
    rotate_interval: Option<i64>,
    rotate_schedule: Option<i64>,
    pad_width: usize,
    ignore_nulls: bool,
    format: Format,
    partitioner: Partitioner,
    extractor: Extractor,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Settings, (String, String)> {
        let int = |key: &str, default: i64| -> Result<i64, (String, String)> {
            match config.get(key).map(str::trim) {
                None | Some("") => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| (key.to_string(), format!("{v:?} is not a number"))),
            }
        };
        let flush_size = match config.get(FLUSH_SIZE) {
            None => return Err((FLUSH_SIZE.into(), "missing: records per upload".into())),
            Some(_) => int(FLUSH_SIZE, 0)?,
        };
        if flush_size < 1 {
            return Err((FLUSH_SIZE.into(), "must be at least 1".into()));
        }
        let positive = |v: i64| (v > 0).then_some(v);
        let ignore_nulls = match config.get_or(NULL_VALUES, "fail").trim() {
            "fail" => false,
            "ignore" => true,
            other => {
                return Err((
                    NULL_VALUES.into(),
                    format!("{other:?} is not fail or ignore"),
                ))
            }
        };
        Ok(Settings {
            topics_dir: config
                .get_or(TOPICS_DIR, "topics")
                .trim_matches('/')
                .to_string(),
            delim: config.get_or(DIRECTORY_DELIM, "/").to_string(),
            file_delim: config.get_or(FILE_DELIM, "+").to_string(),
            flush_size: flush_size as usize,
            rotate_interval: positive(int(ROTATE_INTERVAL, -1)?),
            rotate_schedule: positive(int(ROTATE_SCHEDULE, -1)?),
            pad_width: int(PAD_WIDTH, 10)?.clamp(1, 19) as usize,
            ignore_nulls,
            format: Format::from_config(config)?,
            partitioner: Partitioner::from_config(config)?,
            extractor: Extractor::from_config(config)?,
        })
    }

    /// The folder of a topic's objects.
    fn topic_dir(&self, topic: &str) -> String {
        if self.topics_dir.is_empty() {
            format!("{topic}{}", self.delim)
        } else {
            format!("{}{}{topic}{}", self.topics_dir, self.delim, self.delim)
        }
    }

    /// The start of the file names of a Kafka partition's objects.
    fn file_prefix(&self, topic: &str, partition: i32) -> String {
        format!("{topic}{}{partition}{}", self.file_delim, self.file_delim)
    }

    fn key(&self, topic: &str, partition: i32, encoded: &str, start: i64) -> String {
        format!(
            "{}{encoded}{}{}{start:0width$}{}",
            self.topic_dir(topic),
            self.delim,
            self.file_prefix(topic, partition),
            self.format.extension(),
            width = self.pad_width
        )
    }
}

/// A file being written: where it starts and what it holds so far.
struct OpenFile {
    start: i64,
    body: Body,
}

/// The files of one Kafka partition not uploaded yet.
#[derive(Default)]
struct PartitionWriter {
    files: HashMap<String, OpenFile>,
    /// Records in the files.
    records: usize,
    /// The timestamp of the first record in the files (rotate.interval.ms).
    base_timestamp: Option<i64>,
    /// The encoded partition of the last record (a time-based partitioner rotates on a change).
    current: Option<String>,
    /// Wall-clock time of the next scheduled rotation.
    next_scheduled: Option<i64>,
    /// The next offset expected; a smaller one means the worker went back (a rebalance or a
    /// restart of the consumer): what is open is dropped and written again.
    next_offset: Option<i64>,
    /// The Avro schema of the open files.
    schema: Option<Arc<FileSchema>>,
}

impl PartitionWriter {
    fn first_open_offset(&self) -> Option<i64> {
        self.files.values().map(|f| f.start).min()
    }
}

#[derive(Default)]
struct S3SinkTask {
    settings: Option<Settings>,
    store: Option<Store>,
    writers: HashMap<(String, i32), PartitionWriter>,
    errors: Option<ErrantRecordReporter>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[async_trait]
impl SinkTask for S3SinkTask {
    async fn start(&mut self, ctx: SinkTaskContext) -> Result<(), TaskError> {
        let settings = Settings::from_config(&ctx.config)
            .map_err(|(key, message)| TaskError::fatal(format!("{key}: {message}")))?;
        // The store's own retries cover every call, with backoff: rust-s3's (a process-wide
        // setting) are off.
        s3::set_retries(0);
        let store = Store::from_config(&ctx.config)?;
        store.check(&settings.topics_dir).await?;
        self.settings = Some(settings);
        self.store = Some(store);
        self.errors = Some(ctx.errors.clone());
        Ok(())
    }

    /// Drops what is open for the partitions (the worker reads them again from the committed
    /// offset) and aborts multipart uploads a killed task left for them.
    async fn open(
        &mut self,
        partitions: Vec<TopicPartition>,
    ) -> Result<Vec<TopicPartitionOffset>, TaskError> {
        let (Some(settings), Some(store)) = (&self.settings, &self.store) else {
            return Ok(Vec::new());
        };
        let mut topics: HashMap<&str, Vec<String>> = HashMap::new();
        for p in &partitions {
            self.writers.remove(&(p.topic.clone(), p.partition));
            topics
                .entry(&p.topic)
                .or_default()
                .push(settings.file_prefix(&p.topic, p.partition));
        }
        for (topic, prefixes) in topics {
            let aborted = store
                .abort_left(&settings.topic_dir(topic), |file| {
                    prefixes.iter().any(|p| file.starts_with(p.as_str()))
                })
                .await?;
            if aborted > 0 {
                tracing::info!(topic, aborted, "aborted multipart uploads left unfinished");
            }
        }
        Ok(Vec::new())
    }

    async fn put(&mut self, records: Vec<SinkRecord>) -> Result<(), TaskError> {
        self.put_batch(SinkBatch::from_records(0, &records)).await
    }

    async fn put_batch(&mut self, batch: SinkBatch) -> Result<(), TaskError> {
        let records = batch.records()?;
        let now = now_ms();
        for record in &records {
            self.write(record, now).await?;
        }
        Ok(())
    }

    /// Uploads what a scheduled rotation is due for; the offsets safe to commit are, per
    /// partition, the start of its first file not uploaded (or everything put, when none).
    async fn flush(
        &mut self,
        offsets: Vec<TopicPartitionOffset>,
    ) -> Result<Vec<TopicPartitionOffset>, TaskError> {
        let now = now_ms();
        let due: Vec<(String, i32)> = self
            .writers
            .iter()
            .filter(|(_, w)| w.records > 0 && w.next_scheduled.is_some_and(|t| now >= t))
            .map(|(tp, _)| tp.clone())
            .collect();
        for (topic, partition) in due {
            self.commit(&topic, partition).await?;
        }
        Ok(offsets
            .into_iter()
            .map(|mut o| {
                if let Some(first) = self
                    .writers
                    .get(&(o.topic.clone(), o.partition))
                    .and_then(PartitionWriter::first_open_offset)
                {
                    o.offset = o.offset.min(first);
                }
                o
            })
            .collect())
    }
}

impl S3SinkTask {
    fn report(&self, record: &SinkRecordRef<'_>, message: String) {
        if let Some(errors) = &self.errors {
            errors.sink_record_ref(record, message);
        }
    }

    async fn write(&mut self, record: &SinkRecordRef<'_>, now: i64) -> Result<(), TaskError> {
        let settings = self
            .settings
            .as_ref()
            .ok_or_else(|| TaskError::fatal("the task was not started"))?;
        let tp = (record.topic.to_string(), record.partition);
        let writer = self.writers.entry(tp.clone()).or_default();
        if writer.next_offset.is_some_and(|next| record.offset < next) {
            tracing::info!(
                topic = %tp.0,
                partition = tp.1,
                offset = record.offset,
                "the worker went back: dropping the open files to write them again"
            );
            *writer = PartitionWriter::default();
        }
        writer.next_offset = Some(record.offset + 1);
        if record.value.is_null() {
            if !settings.ignore_nulls {
                self.report(
                    record,
                    format!("the value is null ({NULL_VALUES} is fail; ignore skips such records)"),
                );
            }
            return Ok(());
        }
        let prepared = (|| {
            let ts = settings.extractor.timestamp(record, now)?;
            let encoded = settings.partitioner.encode(record, ts, &settings.delim)?;
            let payload = settings.format.encode(record)?;
            Ok::<_, String>((ts, encoded, payload))
        })();
        let (ts, encoded, payload) = match prepared {
            Ok(p) => p,
            Err(message) => {
                self.report(record, message);
                return Ok(());
            }
        };
        // An Avro schema unlike the open files' starts new files.
        let mut schema_change = None;
        if let Encoded::Avro { text, .. } = &payload {
            let writer = &self.writers[&tp];
            if writer.schema.as_ref().is_none_or(|s| &s.text != text) {
                match FileSchema::parse(text.clone()) {
                    Ok(s) => schema_change = Some(Arc::new(s)),
                    Err(message) => {
                        self.report(record, message);
                        return Ok(());
                    }
                }
            }
        }
        let writer = &self.writers[&tp];
        let rotate = writer.records > 0
            && (schema_change.is_some()
                || settings.rotate_interval.is_some_and(|interval| {
                    writer
                        .base_timestamp
                        .is_some_and(|base| ts - base >= interval)
                        || (settings.partitioner.time_based()
                            && writer.current.as_deref() != Some(encoded.as_str()))
                })
                || writer.next_scheduled.is_some_and(|t| now >= t));
        if rotate {
            self.commit(&tp.0, tp.1).await?;
        }
        let settings = self.settings.as_ref().expect("started");
        let writer = self
            .writers
            .get_mut(&tp)
            .expect("the writer was made above");
        if let Some(schema) = schema_change {
            writer.schema = Some(schema);
        }
        let file = writer
            .files
            .entry(encoded.clone())
            .or_insert_with(|| OpenFile {
                start: record.offset,
                body: settings.format.new_body(writer.schema.as_ref()),
            });
        if let Err(message) = file.body.push(payload) {
            let empty = match &file.body {
                Body::Lines(b) => b.is_empty(),
                Body::Avro { values, .. } => values.is_empty(),
            };
            if empty {
                writer.files.remove(&encoded);
            }
            self.report(record, message);
            return Ok(());
        }
        writer.records += 1;
        writer.base_timestamp.get_or_insert(ts);
        writer.current = Some(encoded);
        if let Some(interval) = settings.rotate_schedule {
            writer
                .next_scheduled
                .get_or_insert((now.div_euclid(interval) + 1) * interval);
        }
        if writer.records >= settings.flush_size {
            self.commit(&tp.0, tp.1).await?;
        }
        Ok(())
    }

    /// Uploads every open file of a partition, then forgets them.
    async fn commit(&mut self, topic: &str, partition: i32) -> Result<(), TaskError> {
        let (Some(settings), Some(store)) = (&self.settings, &self.store) else {
            return Err(TaskError::fatal("the task was not started"));
        };
        let key = (topic.to_string(), partition);
        let Some(writer) = self.writers.get_mut(&key) else {
            return Ok(());
        };
        let files = std::mem::take(&mut writer.files);
        writer.records = 0;
        writer.base_timestamp = None;
        writer.current = None;
        writer.next_scheduled = None;
        let content_type = settings.format.content_type();
        let mut files: Vec<(String, OpenFile)> = files.into_iter().collect();
        files.sort_by_key(|(_, f)| f.start);
        for (encoded, file) in files {
            let object = settings.key(topic, partition, &encoded, file.start);
            let body = file
                .body
                .finish(&settings.format)
                .map_err(|e| TaskError::fatal(format!("{object}: {e}")))?;
            store.upload(&object, &body, content_type).await?;
            tracing::debug!(object, bytes = body.len(), "uploaded");
        }
        Ok(())
    }
}
