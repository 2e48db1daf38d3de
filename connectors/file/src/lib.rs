//! File connectors with Kafka's FileStreamSource/FileStreamSink configuration: the source
//! follows a growing file like `tail -f` and resumes at its byte position; the sink appends
//! one line per record.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_connector_sdk::proto::{
    ConfigDef, ConfigType, Importance, SinkRecord, TopicPartition, TopicPartitionOffset,
};
use sluice_connector_sdk::{
    data, Config, ConfigDefBuilder, Connector, ErrantRecordReporter, Plugin, SinkBatch,
    SinkConnector, SinkTask, SinkTaskContext, SourceConnector, SourceRecord, SourceTask,
    SourceTaskContext, TaskError,
};
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

const FILE: &str = "file";
const TOPIC: &str = "topic";
const BATCH_SIZE: &str = "batch.size";
const DEFAULT_BATCH_SIZE: usize = 2000;
/// How long an idle poll waits before returning nothing.
const IDLE_WAIT: Duration = Duration::from_millis(100);
const READ_CHUNK: usize = 64 * 1024;

/// The `file` plugin: FileStreamSource and FileStreamSink.
pub fn plugin() -> Plugin {
    Plugin::new("file", env!("CARGO_PKG_VERSION"))
        .source(FileStreamSource)
        .sink(FileStreamSink)
}

pub struct FileStreamSource;

impl Connector for FileStreamSource {
    fn class_name(&self) -> &'static str {
        "FileStreamSource"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "org.apache.kafka.connect.file.FileStreamSourceConnector",
            "FileStreamSourceConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Reads lines of a file into a topic, following it as it grows"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        vec![
            ConfigDefBuilder::new(FILE, ConfigType::String)
                .importance(Importance::High)
                .doc("Source filename")
                .build(),
            ConfigDefBuilder::new(TOPIC, ConfigType::String)
                .importance(Importance::High)
                .doc("The topic to publish data to")
                .build(),
            ConfigDefBuilder::new(BATCH_SIZE, ConfigType::Int)
                .default_value("2000")
                .importance(Importance::Low)
                .doc("The maximum number of records the source task can read from the file each time it is polled")
                .build(),
        ]
    }

    fn validate(&self, config: &Config) -> Vec<sluice_connector_sdk::proto::FieldError> {
        let mut errors = config.validate_against(&self.config_defs());
        if let Ok(n) = config.parse_or::<i32>(BATCH_SIZE, 1) {
            if n < 1 {
                errors.push(sluice_connector_sdk::proto::FieldError {
                    name: BATCH_SIZE.into(),
                    message: format!("invalid value {n}: must be at least 1"),
                });
            }
        }
        if config.get(TOPIC).is_some_and(|t| t.contains(',')) {
            errors.push(sluice_connector_sdk::proto::FieldError {
                name: TOPIC.into(),
                message: "must be a single topic, not a list".into(),
            });
        }
        errors
    }
}

impl SourceConnector for FileStreamSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(FileSourceTask::default())
    }

    /// Every line carries the byte position after it.
    fn exactly_once_support(&self) -> sluice_connector_sdk::proto::ExactlyOnceSupport {
        sluice_connector_sdk::proto::ExactlyOnceSupport::Supported
    }
}

#[derive(Default)]
struct FileSourceTask {
    path: String,
    topic: String,
    batch_size: usize,
    partition: Option<Arc<str>>,
    file: Option<File>,
    /// File position of `buf[0]`.
    position: u64,
    buf: Vec<u8>,
    errors: Option<ErrantRecordReporter>,
}

impl FileSourceTask {
    /// Opens the file at the committed position; a missing file is waited for, like Kafka does.
    async fn open(&mut self) -> Result<bool, TaskError> {
        match File::open(&self.path).await {
            Ok(mut file) => {
                file.seek(std::io::SeekFrom::Start(self.position)).await?;
                tracing::info!(file = %self.path, position = self.position, "reading");
                self.file = Some(file);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(file = %self.path, "file not found, waiting for it to be created");
                Ok(false)
            }
            Err(e) => Err(TaskError::retriable(format!("open {}: {e}", self.path))),
        }
    }

    /// Takes complete lines from the buffer, up to `max` records in all.
    fn take_lines(&mut self, max: usize, out: &mut Vec<SourceRecord>) {
        let mut start = 0;
        while out.len() < max {
            let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let end = start + nl;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let offset = self.position + end as u64 + 1;
            match std::str::from_utf8(line) {
                Ok(text) => out.push(SourceRecord {
                    source_partition: self.partition.clone(),
                    source_offset: Some(format!("{{\"position\":{offset}}}")),
                    topic: self.topic.clone(),
                    value: data::string(text),
                    ..SourceRecord::default()
                }),
                // Not text: reported as it is (the worker's error policy decides), never
                // mangled into replacement characters.
                Err(e) => {
                    if let Some(errors) = &self.errors {
                        let at = self.position + start as u64;
                        errors.source_record(
                            &self.topic,
                            data::null(),
                            data::raw(line),
                            format!(
                                "{}: the line at byte {at} is not valid UTF-8 ({e})",
                                self.path
                            ),
                        );
                    }
                }
            }
            start = end + 1;
        }
        self.buf.drain(..start);
        self.position += start as u64;
    }
}

#[async_trait]
impl SourceTask for FileSourceTask {
    async fn start(&mut self, ctx: SourceTaskContext) -> Result<(), TaskError> {
        self.path = ctx.config.required(FILE)?.to_string();
        self.topic = ctx.config.required(TOPIC)?.to_string();
        self.batch_size = ctx.config.parse_or(BATCH_SIZE, DEFAULT_BATCH_SIZE)?.max(1);
        self.errors = Some(ctx.errors.clone());
        let partition = serde_json::json!({ "filename": self.path }).to_string();
        if let Some(offset) = ctx.offset(&partition) {
            self.position = offset
                .get("position")
                .and_then(|p| p.as_u64())
                .ok_or_else(|| {
                    TaskError::fatal(format!("stored offset {offset} has no position"))
                })?;
        }
        self.partition = Some(partition.into());
        Ok(())
    }

    async fn poll(&mut self, max_records: usize) -> Result<Vec<SourceRecord>, TaskError> {
        let max = max_records.min(self.batch_size);
        let mut records = Vec::new();
        if self.file.is_none() && !self.open().await? {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Ok(records);
        }
        loop {
            self.take_lines(max, &mut records);
            if records.len() >= max {
                return Ok(records);
            }
            let Some(file) = self.file.as_mut() else {
                return Ok(records);
            };
            let len = self.buf.len();
            self.buf.resize(len + READ_CHUNK, 0);
            let n = file.read(&mut self.buf[len..]).await;
            self.buf.truncate(len + *n.as_ref().unwrap_or(&0));
            let n = n.map_err(|e| TaskError::retriable(format!("read {}: {e}", self.path)))?;
            if n == 0 {
                if records.is_empty() {
                    tokio::time::sleep(IDLE_WAIT).await;
                }
                return Ok(records);
            }
        }
    }
}

pub struct FileStreamSink;

impl Connector for FileStreamSink {
    fn class_name(&self) -> &'static str {
        "FileStreamSink"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "FileStreamSinkConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Appends the value of each record to a file, one line per record"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        vec![
            ConfigDefBuilder::new(FILE, ConfigType::String)
                .importance(Importance::High)
                .doc("Destination filename")
                .build(),
            ConfigDefBuilder::new(OFFSETS_FILE, ConfigType::String)
                .default_value("")
                .importance(Importance::Low)
                .doc("Exactly-once: the sink keeps its Kafka offsets and the length of the data file in this file, replaced atomically after each flush; on start it cuts the data file back to that length and resumes from those offsets, so nothing is written twice")
                .build(),
        ]
    }
}

/// Sluice's key: where an exactly-once FileStreamSink keeps its offsets.
const OFFSETS_FILE: &str = "offsets.file";

/// What an exactly-once file sink stores after each flush.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct StoredOffsets {
    /// The data file's length when these offsets were stored.
    length: u64,
    /// (topic, partition) → next offset to read.
    offsets: Vec<(String, i32, i64)>,
}

impl SinkConnector for FileStreamSink {
    fn task(&self) -> Box<dyn SinkTask> {
        Box::new(FileSinkTask::default())
    }
}

#[derive(Default)]
struct FileSinkTask {
    path: String,
    out: Option<File>,
    buf: Vec<u8>,
    errors: Option<ErrantRecordReporter>,
    /// With `offsets.file`: where, and what was stored last.
    offsets_file: Option<std::path::PathBuf>,
    stored: std::collections::BTreeMap<(String, i32), i64>,
}

impl FileSinkTask {
    async fn write_buffered(&mut self) -> Result<(), TaskError> {
        let Some(out) = self.out.as_mut() else {
            return Err(TaskError::fatal("write before start"));
        };
        let written = match out.write_all(&self.buf).await {
            Ok(()) => out.flush().await,
            Err(e) => Err(e),
        };
        written.map_err(|e| TaskError::retriable(format!("write {}: {e}", self.path)))?;
        self.buf.clear();
        Ok(())
    }
}

/// Replaces `path` with `bytes` atomically and durably: temporary file, fsync, rename, fsync
/// of the directory.
fn replace_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("offsets")
    ));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Truncates a last line that has no newline: the tail of a write cut short by a kill. Its
/// record was never flushed, so its offset was never committed and Kafka delivers it again.
async fn cut_torn_line(file: &File) -> std::io::Result<()> {
    let file = file.try_clone().await?.into_std().await;
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = &file;
        let len = file.metadata()?.len();
        let mut end = len;
        let mut chunk = vec![0u8; 64 * 1024];
        while end > 0 {
            let start = end.saturating_sub(chunk.len() as u64);
            let n = (end - start) as usize;
            file.seek(SeekFrom::Start(start))?;
            file.read_exact(&mut chunk[..n])?;
            match chunk[..n].iter().rposition(|&b| b == b'\n') {
                Some(i) => {
                    end = start + i as u64 + 1;
                    break;
                }
                None => end = start,
            }
        }
        if end < len {
            tracing::warn!(removed = len - end, "cutting off a torn last line");
            file.set_len(end)?;
        }
        Ok(())
    })
    .await
    .map_err(std::io::Error::other)?
}

#[async_trait]
impl SinkTask for FileSinkTask {
    async fn start(&mut self, ctx: SinkTaskContext) -> Result<(), TaskError> {
        self.path = ctx.config.required(FILE)?.to_string();
        self.errors = Some(ctx.errors.clone());
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)
            .await
            .map_err(|e| TaskError::retriable(format!("open {}: {e}", self.path)))?;
        self.offsets_file = ctx
            .config
            .get(OFFSETS_FILE)
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from);
        if let Some(path) = &self.offsets_file {
            let stored: StoredOffsets = match std::fs::read(path) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    TaskError::fatal(format!("{}: not an offsets file: {e}", path.display()))
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoredOffsets::default(),
                Err(e) => {
                    return Err(TaskError::retriable(format!(
                        "read {}: {e}",
                        path.display()
                    )))
                }
            };
            // Whatever was written after the last stored offsets is written again from them.
            let len = file.metadata().await?.len();
            if len > stored.length {
                tracing::warn!(
                    removed = len - stored.length,
                    "cutting the data file back to its last stored offsets"
                );
                file.set_len(stored.length).await?;
            }
            self.stored = stored
                .offsets
                .into_iter()
                .map(|(t, p, o)| ((t, p), o))
                .collect();
        }
        cut_torn_line(&file)
            .await
            .map_err(|e| TaskError::retriable(format!("repair {}: {e}", self.path)))?;
        self.out = Some(file);
        Ok(())
    }

    async fn put(&mut self, records: Vec<SinkRecord>) -> Result<(), TaskError> {
        self.put_batch(SinkBatch::from_records(0, &records)).await
    }

    /// The records' values as lines, read in place from the batch.
    async fn put_batch(&mut self, batch: SinkBatch) -> Result<(), TaskError> {
        for record in batch.records()? {
            if let Some(bytes) = record.value.bytes() {
                if let Err(e) = std::str::from_utf8(bytes) {
                    // A line of text cannot hold it: reported, not mangled.
                    if let Some(errors) = &self.errors {
                        errors.sink_record_ref(
                            &record,
                            format!("the value is not valid UTF-8 ({e})"),
                        );
                    }
                    continue;
                }
            }
            let text = record.value.text();
            self.buf
                .extend_from_slice(text.as_deref().unwrap_or("null").as_bytes());
            self.buf.push(b'\n');
        }
        // One write per batch: the lines are in the file as soon as Kafka's FileStreamSink
        // has them there (it writes every record), and durable (fsync) at each flush. Writes
        // end on a record boundary, but a process killed mid-write can still leave half a
        // line; `start` cuts it off (see `cut_torn_line`).
        if !self.buf.is_empty() {
            self.write_buffered().await?;
        }
        Ok(())
    }

    async fn open(
        &mut self,
        partitions: Vec<TopicPartition>,
    ) -> Result<Vec<TopicPartitionOffset>, TaskError> {
        Ok(partitions
            .into_iter()
            .filter_map(|p| {
                let offset = *self.stored.get(&(p.topic.clone(), p.partition))?;
                Some(TopicPartitionOffset {
                    topic: p.topic,
                    partition: p.partition,
                    offset,
                })
            })
            .collect())
    }

    async fn flush(
        &mut self,
        offsets: Vec<TopicPartitionOffset>,
    ) -> Result<Vec<TopicPartitionOffset>, TaskError> {
        self.write_buffered().await?;
        let Some(out) = self.out.as_mut() else {
            return Ok(offsets);
        };
        out.sync_data().await?;
        if let Some(path) = self.offsets_file.clone() {
            for o in &offsets {
                self.stored.insert((o.topic.clone(), o.partition), o.offset);
            }
            let stored = StoredOffsets {
                length: out.metadata().await?.len(),
                offsets: self
                    .stored
                    .iter()
                    .map(|((t, p), o)| (t.clone(), *p, *o))
                    .collect(),
            };
            let bytes = serde_json::to_vec(&stored).map_err(|e| TaskError::fatal(e.to_string()))?;
            tokio::task::spawn_blocking(move || replace_file(&path, &bytes))
                .await
                .map_err(|e| TaskError::retriable(e.to_string()))?
                .map_err(|e| TaskError::retriable(format!("store offsets: {e}")))?;
        }
        Ok(offsets)
    }

    async fn stop(&mut self) -> Result<(), TaskError> {
        if self.out.is_some() {
            self.write_buffered().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sink_start_cuts_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        // A long torn tail, longer than one read chunk, after two whole lines.
        let torn = "x".repeat(100_000);
        std::fs::write(&path, format!("a\nbb\n{torn}")).unwrap();
        let ctx = SinkTaskContext {
            connector_name: "c".into(),
            task_id: 0,
            config: Config::from([("file", path.to_str().unwrap())]),
            errors: ErrantRecordReporter::detached(),
        };
        let mut task = FileSinkTask::default();
        task.start(ctx.clone()).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nbb\n");
        task.put(Vec::new()).await.unwrap();
        // A whole file is left alone, and so is a file of one torn line: it is cut to empty.
        let mut again = FileSinkTask::default();
        again.start(ctx.clone()).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nbb\n");
        std::fs::write(&path, "torn").unwrap();
        FileSinkTask::default().start(ctx).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }

    #[tokio::test]
    async fn an_exactly_once_sink_cuts_back_to_its_stored_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let offsets = dir.path().join("out.offsets");
        let ctx = SinkTaskContext {
            connector_name: "c".into(),
            task_id: 0,
            config: Config::from([
                ("file", path.to_str().unwrap()),
                ("offsets.file", offsets.to_str().unwrap()),
            ]),
            errors: ErrantRecordReporter::detached(),
        };
        let record = |offset: i64| SinkRecord {
            topic: "t".into(),
            partition: 0,
            offset,
            value: Some(data::string(format!("line {offset}"))),
            ..SinkRecord::default()
        };
        let mut task = FileSinkTask::default();
        task.start(ctx.clone()).await.unwrap();
        task.put(vec![record(0), record(1)]).await.unwrap();
        let at = |offset| TopicPartitionOffset {
            topic: "t".into(),
            partition: 0,
            offset,
        };
        task.flush(vec![at(2)]).await.unwrap();
        // Written but never flushed: a crash now.
        task.put(vec![record(2)]).await.unwrap();
        task.write_buffered().await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "line 0\nline 1\nline 2\n"
        );

        let mut again = FileSinkTask::default();
        again.start(ctx).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line 0\nline 1\n");
        let partitions = vec![
            TopicPartition {
                topic: "t".into(),
                partition: 0,
            },
            TopicPartition {
                topic: "t".into(),
                partition: 1,
            },
        ];
        assert_eq!(again.open(partitions).await.unwrap(), vec![at(2)]);
    }

    #[tokio::test]
    async fn source_reads_lines_and_resumes_at_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "a\r\nbb\nccc").unwrap();
        let config = Config::from([("file", path.to_str().unwrap()), ("topic", "t")]);
        let ctx = SourceTaskContext {
            connector_name: "c".into(),
            task_id: 0,
            config: config.clone(),
            positions: Default::default(),
            errors: ErrantRecordReporter::detached(),
            commits: Default::default(),
        };
        let mut task = FileSourceTask::default();
        task.start(ctx.clone()).await.unwrap();
        let records = task.poll(10).await.unwrap();
        let lines: Vec<_> = records
            .iter()
            .map(|r| data::to_text(&r.value).unwrap().into_owned())
            .collect();
        assert_eq!(lines, ["a", "bb"]);
        let last = records.last().unwrap();
        assert_eq!(last.source_offset.as_deref(), Some("{\"position\":6}"));

        // The partial line is emitted once completed, and a restart resumes after "a".
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all_sync(b"\n");
        let records = task.poll(10).await.unwrap();
        assert_eq!(data::to_text(&records[0].value).unwrap(), "ccc");

        let partition = last.source_partition.clone().unwrap().to_string();
        let mut resumed = FileSourceTask::default();
        let mut ctx = ctx;
        ctx.positions
            .insert(partition, "{\"position\":3}".to_string());
        resumed.start(ctx).await.unwrap();
        let records = resumed.poll(1).await.unwrap();
        assert_eq!(data::to_text(&records[0].value).unwrap(), "bb");
    }

    trait WriteAllSync {
        fn write_all_sync(self, bytes: &[u8]);
    }

    impl WriteAllSync for std::fs::File {
        fn write_all_sync(mut self, bytes: &[u8]) {
            std::io::Write::write_all(&mut self, bytes).unwrap();
        }
    }
}
