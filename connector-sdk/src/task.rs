//! The task traits connector authors implement, and the errors they return.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::proto::{self, Data, Header, TopicPartitionOffset};
use crate::{Config, SourceBatchWriter};

/// A task failure. `retriable` failures are worth a restart; fatal ones need a new configuration.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    pub message: String,
    pub trace: String,
    pub retriable: bool,
}

impl TaskError {
    pub fn fatal(message: impl Into<String>) -> Self {
        TaskError {
            message: message.into(),
            trace: String::new(),
            retriable: false,
        }
    }

    pub fn retriable(message: impl Into<String>) -> Self {
        TaskError {
            retriable: true,
            ..TaskError::fatal(message)
        }
    }

    pub(crate) fn into_proto(self) -> proto::TaskError {
        proto::TaskError {
            message: self.message,
            trace: self.trace,
            retriable: self.retriable,
        }
    }
}

impl From<std::io::Error> for TaskError {
    fn from(e: std::io::Error) -> Self {
        TaskError::retriable(e.to_string())
    }
}

impl From<anyhow::Error> for TaskError {
    fn from(e: anyhow::Error) -> Self {
        TaskError {
            message: format!("{e:#}"),
            trace: format!("{e:?}"),
            retriable: false,
        }
    }
}

/// Reports single bad records without failing the task (Kafka Connect's
/// `ErrantRecordReporter`): the worker applies the connector's `errors.tolerance` (dead-letter
/// queue, or failing the task). Reports are sent before the task's next batch (source) or
/// before the current batch is acknowledged (sink).
#[derive(Clone, Debug)]
pub struct ErrantRecordReporter {
    tx: tokio::sync::mpsc::UnboundedSender<proto::RecordError>,
}

impl ErrantRecordReporter {
    /// A reporter and the receiving end the SDK drains; unbounded because a task reports at
    /// most what it was given or polled.
    pub(crate) fn channel() -> (
        ErrantRecordReporter,
        tokio::sync::mpsc::UnboundedReceiver<proto::RecordError>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (ErrantRecordReporter { tx }, rx)
    }

    /// A reporter whose reports go nowhere, for tests of a task outside a worker.
    pub fn detached() -> ErrantRecordReporter {
        ErrantRecordReporter::channel().0
    }

    /// A sink record the task could not write; the worker sends the original to the
    /// dead-letter queue.
    pub fn sink_record(&self, record: &proto::SinkRecord, message: impl Into<String>) {
        let _ = self.tx.send(proto::RecordError {
            topic: record.topic.clone(),
            partition: Some(record.partition),
            offset: Some(record.offset),
            message: message.into(),
            ..proto::RecordError::default()
        });
    }

    /// A sink record read in place that the task could not write (as [`Self::sink_record`]).
    pub fn sink_record_ref(&self, record: &crate::SinkRecordRef<'_>, message: impl Into<String>) {
        self.sink_coordinates(&record.topic, record.partition, record.offset, message);
    }

    /// A sink record the task could not write, known by its coordinates only (the worker
    /// reads it back from Kafka for the dead-letter queue).
    pub fn sink_coordinates(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        message: impl Into<String>,
    ) {
        let _ = self.tx.send(proto::RecordError {
            topic: topic.to_string(),
            partition: Some(partition),
            offset: Some(offset),
            message: message.into(),
            ..proto::RecordError::default()
        });
    }

    /// A source record the task could not produce (unreadable input), as it has it.
    pub fn source_record(&self, topic: &str, key: Data, value: Data, message: impl Into<String>) {
        let _ = self.tx.send(proto::RecordError {
            topic: topic.to_string(),
            key: Some(key),
            value: Some(value),
            message: message.into(),
            ..proto::RecordError::default()
        });
    }
}

/// What a source task starts with.
#[derive(Clone, Debug)]
pub struct SourceTaskContext {
    pub connector_name: String,
    pub task_id: u32,
    pub config: Config,
    /// Committed offsets by source partition, both as JSON text.
    pub positions: HashMap<String, String>,
    pub errors: ErrantRecordReporter,
    /// Says when the worker acknowledged batches whose positions `commit` has not heard of.
    pub commits: CommitSignal,
}

/// Wakes a poll that waits for data when there is something to commit. The SDK calls
/// [`SourceTask::commit`] between polls only, so a task that releases its input on commit (a
/// broker's acknowledgements) and waits in `poll` for input the broker holds back until then
/// (a prefetch or receive window full of unacknowledged messages) should also wait for
/// [`pending`](CommitSignal::pending) and return what it has (nothing, maybe) when it fires.
#[derive(Clone, Debug, Default)]
pub struct CommitSignal(Arc<tokio::sync::Notify>);

impl CommitSignal {
    /// Completes once the worker acknowledged a batch since the last time it completed (at
    /// once if that happened while nobody waited). Cancel-safe.
    pub async fn pending(&self) {
        self.0.notified().await
    }

    pub(crate) fn fire(&self) {
        self.0.notify_one()
    }
}

impl SourceTaskContext {
    /// The committed offset of `partition` (a JSON object, as the task wrote it), if any.
    pub fn offset(&self, partition: &str) -> Option<serde_json::Value> {
        self.positions
            .get(partition)
            .and_then(|o| serde_json::from_str(o).ok())
    }
}

/// A record produced by a source task.
#[derive(Clone, Debug, Default)]
pub struct SourceRecord {
    /// The source partition (a JSON object as text); share one `Arc` across records.
    pub source_partition: Option<Arc<str>>,
    /// The source offset (a JSON object as text) reached once this record is committed.
    pub source_offset: Option<String>,
    pub topic: String,
    pub kafka_partition: Option<i32>,
    pub key: Data,
    pub value: Data,
    pub headers: Vec<Header>,
    pub timestamp_ms: Option<i64>,
    /// With `transaction.boundary=connector`: commit or abort the open transaction after this
    /// record.
    pub transaction: proto::TransactionBoundary,
}

/// A running source task. The SDK calls `poll` only while the worker has granted credit, and
/// never cancels a `poll` in progress, so a poll may own its progress without extra bookkeeping.
#[async_trait]
pub trait SourceTask: Send + 'static {
    async fn start(&mut self, ctx: SourceTaskContext) -> Result<(), TaskError>;

    /// Up to `max_records` new records; an empty vector when there is nothing yet. When idle,
    /// return within about a second so that stops are seen promptly.
    async fn poll(&mut self, max_records: usize) -> Result<Vec<SourceRecord>, TaskError>;

    /// Writes up to `max_records` new records into `batch` (none when there is nothing yet),
    /// as [`poll`](Self::poll) returns them. The default calls `poll` and writes what it
    /// returns; a task that lends its records from its own buffers
    /// ([`SourceBatchWriter::push_ref`]) overrides this instead and allocates nothing per
    /// record. `poll` is then never called.
    async fn poll_into(
        &mut self,
        batch: &mut SourceBatchWriter,
        max_records: usize,
    ) -> Result<(), TaskError> {
        let records = self.poll(max_records).await?;
        if records.len() > max_records {
            return Err(TaskError::fatal(format!(
                "poll returned {} records when asked for at most {max_records}",
                records.len()
            )));
        }
        for record in &records {
            batch.push(record);
        }
        Ok(())
    }

    /// Positions (partition, offset) that are now durable in Kafka and committed.
    async fn commit(&mut self, positions: &[(Arc<str>, String)]) -> Result<(), TaskError> {
        let _ = positions;
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), TaskError> {
        Ok(())
    }
}

/// What a sink task starts with.
#[derive(Clone, Debug)]
pub struct SinkTaskContext {
    pub connector_name: String,
    pub task_id: u32,
    pub config: Config,
    pub errors: ErrantRecordReporter,
}

/// A running sink task.
#[async_trait]
pub trait SinkTask: Send + 'static {
    async fn start(&mut self, ctx: SinkTaskContext) -> Result<(), TaskError>;

    /// Takes a batch of records; they need not be durable before `flush`.
    async fn put(&mut self, records: Vec<proto::SinkRecord>) -> Result<(), TaskError>;

    /// Takes a batch as it arrived. The default decodes its records and calls `put`; a task
    /// that reads them in place ([`crate::SinkBatch::records`]: no allocation or copy per
    /// plain record) overrides this instead.
    async fn put_batch(&mut self, batch: crate::SinkBatch) -> Result<(), TaskError> {
        self.put(batch.into_records()?).await
    }

    /// The task was given `partitions` (Kafka Connect's `open`). A sink that stores its Kafka
    /// offsets in its own system, atomically with the data, returns them (the next offset to
    /// read per partition) and the worker starts there: exactly-once delivery into it. The
    /// default starts at the consumer group's committed offsets.
    async fn open(
        &mut self,
        partitions: Vec<proto::TopicPartition>,
    ) -> Result<Vec<TopicPartitionOffset>, TaskError> {
        let _ = partitions;
        Ok(Vec::new())
    }

    /// Makes everything put so far durable and returns the offsets that are safe to commit
    /// (Kafka Connect's `preCommit`); the default returns `offsets` after nothing.
    async fn flush(
        &mut self,
        offsets: Vec<TopicPartitionOffset>,
    ) -> Result<Vec<TopicPartitionOffset>, TaskError> {
        Ok(offsets)
    }

    async fn stop(&mut self) -> Result<(), TaskError> {
        Ok(())
    }
}
