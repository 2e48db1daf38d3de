//! The source data path of one task: credits to the connector, batches through the converters
//! into an idempotent producer, positions committed only once Kafka acknowledged every record
//! of a batch and of all batches before it.

use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::host::process::Conn;
use anyhow::{anyhow, bail, Context as _};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, ThreadedProducer};
use sluice_proto::connector::v1::{self as proto, source_request, source_response};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use sluice_data::converter::{
    dead_letter_bytes, ConversionError, Converter, DATA_EXCEPTION, HEADER_CONVERTER,
};
use sluice_data::record::Record;

use crate::restart::task_error;
use crate::task::errors::{report_text, FailedRecord, Failure, Stage};
use crate::task::offsets::OffsetStore;
use crate::task::{TaskSpec, Transactions};

mod delivery;
mod transactional;
pub mod wire;

use delivery::{send_with_backpressure, AtLeastOnce, DeliveryContext, DeliveryTracker};
use transactional::Transactional;
use wire::{Incoming, PlainRecord, SourceFrame, WireBatch};

/// Records and bytes the connector may have in flight towards the producer: granted when the
/// stream opens, returned batch by batch. Enough to keep the producer busy (its own queue
/// batches ahead), small enough that the connector and the worker hold little.
pub const CREDIT_RECORDS: u64 = 10_000;
pub const CREDIT_BYTES: u64 = 8 * 1024 * 1024;

/// A record's key and value as Kafka bytes, and its headers.
type Converted<'r> = (
    Option<Cow<'r, [u8]>>,
    Option<Cow<'r, [u8]>>,
    Option<OwnedHeaders>,
);

/// Everything one source task needs besides its connector process.
pub struct SourceTaskRunner {
    pub task: TaskSpec,
    pub producer_config: ClientConfig,
    pub offsets: Arc<OffsetStore>,
    /// On an exactly-once worker: records and their offsets are committed in transactions.
    pub transactions: Option<Transactions>,
    /// How long an ending task waits for Kafka to acknowledge what it holds
    /// (`task.shutdown.graceful.timeout.ms`).
    pub drain_timeout: Duration,
}

type Sender = mpsc::Sender<proto::SourceRequest>;

/// What the connector sent that a task's loop acts on.
enum Event {
    /// A batch, and the credit it used (worked out by the reader, off the pipeline's loop).
    Batch(Box<WireBatch>, source_request::Kind),
    Stopped,
    RecordError(Box<proto::RecordError>),
}

/// Sorts a message of the source stream: the task's own failure and a broken or closed stream
/// are errors; `None` for nothing to do.
fn event(message: Result<Option<SourceFrame>, tonic::Status>) -> anyhow::Result<Option<Event>> {
    match message {
        Ok(Some(SourceFrame::Batch(batch))) => {
            let credit = credit_of(&batch);
            Ok(Some(Event::Batch(Box::new(batch), credit)))
        }
        Ok(Some(SourceFrame::Other(response))) => Ok(match response.kind {
            // A batch is always read as one; an empty message means nothing.
            Some(source_response::Kind::Batch(_)) | Some(source_response::Kind::Opened(_)) => None,
            None => None,
            Some(source_response::Kind::Stopped(_)) => Some(Event::Stopped),
            Some(source_response::Kind::RecordError(e)) => Some(Event::RecordError(Box::new(e))),
            Some(source_response::Kind::Error(e)) => return Err(task_error("task failed", e)),
        }),
        Ok(None) => bail!("connector closed the source stream"),
        Err(s) => bail!("source stream broke: {}", s.message()),
    }
}

/// The credit a batch used: its records and its encoded size, as the connector debited them.
fn credit_of(batch: &WireBatch) -> source_request::Kind {
    source_request::Kind::Credit(proto::Credit {
        records: batch.records.len() as u64,
        bytes: batch.encoded_len as u64,
    })
}

/// The credit the connector holds, as the worker counts it: what was granted, less what its
/// batches used. A batch it had no credit for is a connector flooding the worker.
#[derive(Default)]
struct Held {
    records: AtomicI64,
    bytes: AtomicI64,
}

impl Held {
    /// Counts credit granted; called before the grant is sent, so a batch sent on it is never
    /// read before it is counted.
    fn grant(&self, credit: &source_request::Kind) {
        if let source_request::Kind::Credit(c) = credit {
            self.records.fetch_add(c.records as i64, Ordering::AcqRel);
            self.bytes.fetch_add(c.bytes as i64, Ordering::AcqRel);
        }
    }

    /// Takes a batch's cost out of the credit, or fails when the connector had not the credit
    /// to send it (docs/connector-protocol.md, "Credits").
    fn debit(&self, batch: &WireBatch) -> anyhow::Result<()> {
        let records = self.records.load(Ordering::Acquire);
        let bytes = self.bytes.load(Ordering::Acquire);
        let count = batch.records.len() as i64;
        if count > records || bytes <= 0 {
            bail!(
                "the connector sent a batch of {count} records ({} bytes) while it held credit                  for {records} records and {bytes} bytes: it does not keep to its credit",
                batch.encoded_len
            );
        }
        self.records.fetch_sub(count, Ordering::AcqRel);
        self.bytes
            .fetch_sub(batch.encoded_len as i64, Ordering::AcqRel);
        Ok(())
    }
}

/// Reads and decodes the source stream beside the pipeline's loop, so the next batch is read
/// while the last one is converted and produced. Ends after passing on an error, or when the
/// loop is gone.
async fn read_events(
    mut responses: tonic::Streaming<SourceFrame>,
    held: Arc<Held>,
    out: mpsc::Sender<anyhow::Result<Event>>,
) {
    loop {
        let Some(mut event) = event(responses.message().await).transpose() else {
            continue;
        };
        if let Ok(Event::Batch(batch, _)) = &event {
            if let Err(e) = held.debit(batch) {
                event = Err(e);
            }
        }
        let failed = event.is_err();
        if out.send(event).await.is_err() || failed {
            return;
        }
    }
}

async fn send(tx: &Sender, kind: source_request::Kind) {
    // A closed stream is noticed on the response side; nothing to do here.
    let _ = tx.send(proto::SourceRequest { kind: Some(kind) }).await;
}

impl SourceTaskRunner {
    /// Runs the task until `stop` (a clean drain) or a failure. Either way, every record handed
    /// to the producer is waited for and its position committed (at-least-once), or the open
    /// transaction is aborted (exactly-once), before returning.
    pub async fn run(&self, channel: Conn, stop: CancellationToken) -> anyhow::Result<()> {
        let (tx, rx) = mpsc::channel(64);
        match &self.transactions {
            None => {
                let tracker = Arc::new(DeliveryTracker::default());
                let producer = self.producer(self.producer_config.clone(), &tracker)?;
                let mut delivery = Delivery::AtLeastOnce(AtLeastOnce { producer, tracker });
                let result = self.pipeline(channel, rx, &tx, &mut delivery, &stop).await;
                match delivery {
                    Delivery::AtLeastOnce(d) => d.finish(self, &tx, result).await,
                    Delivery::Transactional(_) => result,
                }
            }
            Some(transactions) => {
                let transactional = Transactional::start(self, transactions).await?;
                let mut delivery = Delivery::Transactional(Box::new(transactional));
                let result = self.pipeline(channel, rx, &tx, &mut delivery, &stop).await;
                if let (Err(_), Delivery::Transactional(d)) = (&result, &delivery) {
                    d.abandon(self).await;
                }
                result
            }
        }
    }

    /// The one loop of the source pipeline, whichever the delivery: batches in, credits back,
    /// settlements (commits of completed batches, or transactions ended by the clock) as they
    /// fall due, and a clean stop on `stop`. Settling comes first: acks before new reads.
    async fn pipeline(
        &self,
        channel: Conn,
        rx: mpsc::Receiver<proto::SourceRequest>,
        tx: &Sender,
        delivery: &mut Delivery<'_>,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let held = Arc::new(Held::default());
        let responses = self.open(channel, rx, tx, &held).await?;
        // One decoded batch waits while the loop works on the one before it.
        let (events_tx, mut events) = mpsc::channel(1);
        let _reader = AbortOnDropHandle::new(tokio::spawn(read_events(
            responses,
            held.clone(),
            events_tx,
        )));
        let mut due = delivery.due();
        let mut stopping = false;
        loop {
            tokio::select! {
                biased;
                _ = due.next() => delivery.settle(self, tx).await?,
                _ = stop.cancelled(), if !stopping => {
                    stopping = true;
                    send(tx, source_request::Kind::Stop(proto::Stop {})).await;
                }
                event = events.recv() => match event
                    .ok_or_else(|| anyhow!("the source stream's reader ended"))??
                {
                    Event::Batch(batch, credit) => {
                        // Credit is returned exactly as the connector debited it: records,
                        // and the encoded size of the batch message.
                        delivery.produce(self, tx, *batch).await?;
                        held.grant(&credit);
                        send(tx, credit).await;
                    }
                    Event::Stopped => return delivery.stopped(self, tx).await,
                    Event::RecordError(e) => self.record_error(*e).await?,
                },
            }
        }
    }

    fn producer(
        &self,
        config: ClientConfig,
        tracker: &Arc<DeliveryTracker>,
    ) -> anyhow::Result<Arc<ThreadedProducer<DeliveryContext>>> {
        Ok(Arc::new(
            config
                .create_with_context(DeliveryContext {
                    tracker: tracker.clone(),
                    log: crate::kafka::log::KafkaLog::new(format!(
                        "source task {}-{} producer",
                        self.task.connector, self.task.task_id
                    )),
                })
                .context("create producer")?,
        ))
    }

    /// Reads the committed positions, opens the task's stream and grants the first credit.
    async fn open(
        &self,
        channel: Conn,
        rx: mpsc::Receiver<proto::SourceRequest>,
        tx: &Sender,
        held: &Held,
    ) -> anyhow::Result<tonic::Streaming<SourceFrame>> {
        let positions = self
            .offsets
            .positions(&self.task.connector)
            .await
            .context("read committed source offsets")?;
        send(
            tx,
            source_request::Kind::Open(proto::SourceOpen {
                connector_class: self.task.class.clone(),
                connector_name: self.task.connector.clone(),
                task_id: self.task.task_id,
                config: self.task.config.clone().into_iter().collect(),
                positions,
            }),
        )
        .await;
        let (responses, _) = self
            .task
            .open_stream(wire::open(channel, ReceiverStream::new(rx)), "source")
            .await?;
        let credit = source_request::Kind::Credit(proto::Credit {
            records: CREDIT_RECORDS,
            bytes: CREDIT_BYTES,
        });
        held.grant(&credit);
        send(tx, credit).await;
        Ok(responses)
    }

    /// Converts one record of a batch read from `frame` and hands it to the producer (waiting
    /// while its queue is full); returns the converted size, or `None` when the error policy
    /// skipped the record (its conversion failed and `errors.tolerance=all`). `last_topic`
    /// spares a topic note per record.
    async fn send_record(
        &self,
        producer: &ThreadedProducer<DeliveryContext>,
        record: Incoming,
        frame: &[u8],
        seq: u64,
        last_topic: &mut Option<String>,
    ) -> anyhow::Result<Option<u64>> {
        let record = match record {
            Incoming::Plain(plain) => {
                if let Some(sent) = self
                    .send_plain(producer, &plain, frame, seq, last_topic)
                    .await?
                {
                    return Ok(Some(sent));
                }
                plain
                    .decode(frame)
                    .context("decode a record of the source stream")?
            }
            Incoming::Decoded(record) => *record,
        };
        self.send_decoded(producer, record, seq, last_topic).await
    }

    /// A record read in place, sent from the frame when no transform applies and both
    /// converters take its key and value as they are; `None` (nothing sent) otherwise.
    async fn send_plain(
        &self,
        producer: &ThreadedProducer<DeliveryContext>,
        record: &PlainRecord,
        frame: &[u8],
        seq: u64,
        last_topic: &mut Option<String>,
    ) -> anyhow::Result<Option<u64>> {
        let conversion = &self.task.conversion;
        if !conversion.transforms.is_empty() {
            return Ok(None);
        }
        let (Some(key), Some(value)) = (
            conversion.key.from_connect_plain(record.key(frame)),
            conversion.value.from_connect_plain(record.value(frame)),
        ) else {
            return Ok(None);
        };
        let topic = record.topic(frame);
        if topic.is_empty() {
            bail!("connector sent a record with no topic");
        }
        if last_topic.as_deref() != Some(topic) {
            self.task.counters.note_topic(topic);
            *last_topic = Some(topic.to_string());
        }
        let bytes = (key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len)) as u64;
        let mut out: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, seq as usize);
        if let Some(k) = key {
            out = out.key(k);
        }
        if let Some(v) = value {
            out = out.payload(v);
        }
        if let Some(p) = record.kafka_partition {
            out = out.partition(p);
        }
        if let Some(ts) = record.timestamp_ms {
            out = out.timestamp(ts);
        }
        send_with_backpressure(producer, out, topic).await?;
        Ok(Some(bytes))
    }

    /// [`SourceTaskRunner::send_record`] for a record decoded whole: through the transforms
    /// and converters.
    async fn send_decoded(
        &self,
        producer: &ThreadedProducer<DeliveryContext>,
        record: proto::SourceRecord,
        seq: u64,
        last_topic: &mut Option<String>,
    ) -> anyhow::Result<Option<u64>> {
        if record.topic.is_empty() {
            bail!("connector sent a record with no topic");
        }
        let record = if self.task.conversion.transforms.is_empty() {
            record
        } else {
            // Moved into the chain, not copied; what a failure report needs of it is kept
            // aside first, and its contents only when the error policy will show them.
            let failed = if self.task.errors.needs_contents() {
                failed_source_record(&record)
            } else {
                FailedRecord {
                    topic: record.topic.clone(),
                    ..FailedRecord::default()
                }
            };
            match self.task.conversion.transforms.apply(to_record(record)) {
                Ok(Some(r)) => from_record(r),
                // Dropped by a transform (Filter): done with, like a delivered record.
                Ok(None) => return Ok(None),
                Err(failure) => {
                    let error = failure.to_string();
                    let report = Failure {
                        stage: Stage::Transformation,
                        class: &failure.class,
                        exception: DATA_EXCEPTION,
                        error: &error,
                        retriable: false,
                    };
                    self.task.errors.report(&report, &failed).await?;
                    return Ok(None);
                }
            }
        };
        if record.topic.is_empty() {
            bail!("a transform left a record with no topic");
        }
        if last_topic.as_deref() != Some(record.topic.as_str()) {
            self.task.counters.note_topic(&record.topic);
            *last_topic = Some(record.topic.clone());
        }
        let mut converted = self.convert(&record);
        if matches!(&converted, Err(f) if f.error.retriable) {
            // Something the converter needs is away (its schema registry): wait for it as
            // errors.retry.* allow before the error policy decides.
            converted = self
                .task
                .errors
                .retry(|| {
                    std::future::ready(self.convert(&record).map_err(|f| {
                        let retriable = f.error.retriable;
                        (f, retriable)
                    }))
                })
                .await;
        }
        let (key, value, headers) = match converted {
            Ok(converted) => converted,
            Err(f) => {
                let failure = Failure {
                    stage: f.stage,
                    class: f.class,
                    exception: DATA_EXCEPTION,
                    error: &f.error,
                    retriable: f.error.retriable,
                };
                self.task
                    .errors
                    .report(&failure, &failed_source_record(&record))
                    .await?;
                return Ok(None);
            }
        };
        let bytes =
            (key.as_ref().map_or(0, |k| k.len()) + value.as_ref().map_or(0, |v| v.len())) as u64;
        let mut out: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&record.topic, seq as usize);
        if let Some(k) = &key {
            out = out.key(k.as_ref());
        }
        if let Some(v) = &value {
            out = out.payload(v.as_ref());
        }
        if let Some(p) = record.kafka_partition {
            out = out.partition(p);
        }
        if let Some(ts) = record.timestamp_ms {
            out = out.timestamp(ts);
        }
        if let Some(headers) = headers {
            out = out.headers(headers);
        }
        send_with_backpressure(producer, out, &record.topic).await?;
        Ok(Some(bytes))
    }

    /// Converts a record's key, value and headers (borrowing what is the record's own bytes);
    /// a failure names its stage and converter.
    fn convert<'r>(
        &self,
        record: &'r proto::SourceRecord,
    ) -> Result<Converted<'r>, ConvertFailure> {
        let one = |stage, converter: &Converter, data: Option<&'r proto::Data>| {
            converter
                .from_connect_borrowed(&record.topic, data)
                .map_err(|error| ConvertFailure {
                    stage,
                    class: converter.kind().class_name(),
                    error,
                })
        };
        let key = one(
            Stage::KeyConverter,
            &self.task.conversion.key,
            record.key.as_ref(),
        )?;
        let value = one(
            Stage::ValueConverter,
            &self.task.conversion.value,
            record.value.as_ref(),
        )?;
        let headers = match record.headers.is_empty() {
            true => None,
            false => Some(
                self.headers(&record.headers)
                    .map_err(|error| ConvertFailure {
                        stage: Stage::HeaderConverter,
                        class: HEADER_CONVERTER,
                        error,
                    })?,
            ),
        };
        Ok((key, value, headers))
    }

    /// A record the connector could not read: the error policy decides.
    async fn record_error(&self, e: proto::RecordError) -> anyhow::Result<()> {
        let error = report_text(&e);
        let failure = Failure::reported(Stage::TaskPoll, &self.task.class, &error);
        let failed = FailedRecord {
            topic: e.topic.clone(),
            key: dead_letter_bytes(e.key.as_ref()),
            value: dead_letter_bytes(e.value.as_ref()),
            ..FailedRecord::default()
        };
        self.task.errors.report(&failure, &failed).await
    }

    fn headers(&self, headers: &[proto::Header]) -> Result<OwnedHeaders, ConversionError> {
        let mut out = OwnedHeaders::new_with_capacity(headers.len());
        for header in headers {
            let value = sluice_data::converter::header_bytes(header.value.as_ref())
                .map_err(|e| ConversionError::new(format!("header {}: {e}", header.key)))?;
            out = out.insert(Header {
                key: &header.key,
                value: value.as_deref(),
            });
        }
        Ok(out)
    }
}

/// How the pipeline's records reach Kafka and when their positions commit.
enum Delivery<'a> {
    AtLeastOnce(AtLeastOnce),
    Transactional(Box<Transactional<'a>>),
}

/// What falls due besides the connector's messages: delivery reports that completed batches
/// (at-least-once), the clock of `transaction.boundary=interval`, or nothing.
enum Due {
    Progress(Arc<DeliveryTracker>),
    Every(tokio::time::Interval),
    Never,
}

impl Due {
    async fn next(&mut self) {
        match self {
            Due::Progress(tracker) => tracker.progress.notified().await,
            Due::Every(ticker) => {
                ticker.tick().await;
            }
            Due::Never => std::future::pending().await,
        }
    }
}

impl Delivery<'_> {
    fn due(&self) -> Due {
        match self {
            Delivery::AtLeastOnce(d) => Due::Progress(d.tracker.clone()),
            Delivery::Transactional(d) => match d.interval() {
                Some(every) => {
                    let mut ticker = tokio::time::interval(every);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    Due::Every(ticker)
                }
                None => Due::Never,
            },
        }
    }

    async fn produce(
        &mut self,
        runner: &SourceTaskRunner,
        tx: &Sender,
        batch: WireBatch,
    ) -> anyhow::Result<()> {
        match self {
            Delivery::AtLeastOnce(d) => d.produce(runner, batch).await,
            Delivery::Transactional(d) => d.produce(runner, tx, batch).await,
        }
    }

    /// What fell due: commit completed batches, or end the transaction.
    async fn settle(&mut self, runner: &SourceTaskRunner, tx: &Sender) -> anyhow::Result<()> {
        match self {
            Delivery::AtLeastOnce(d) => d.commit_completed(runner, tx).await,
            Delivery::Transactional(d) => d.end(runner, tx, true).await,
        }
    }

    /// The connector stopped cleanly: a transaction still open commits, whatever the
    /// boundary; at-least-once commits in `finish`.
    async fn stopped(&mut self, runner: &SourceTaskRunner, tx: &Sender) -> anyhow::Result<()> {
        match self {
            Delivery::AtLeastOnce(_) => Ok(()),
            Delivery::Transactional(d) => d.end(runner, tx, true).await,
        }
    }
}

/// The last offset of each source partition among `records` (positions are strings the
/// connector chose; the latest wins), checked against the batch's partitions.
fn last_positions<'r>(
    partitions: &[String],
    records: impl IntoIterator<Item = (Option<u32>, &'r str)>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut last: Vec<Option<&str>> = vec![None; partitions.len()];
    for (partition, offset) in records {
        if let (Some(p), false) = (partition, offset.is_empty()) {
            let slot = last.get_mut(p as usize).ok_or_else(|| {
                anyhow!(
                    "record refers to source partition {p}, batch has {}",
                    partitions.len()
                )
            })?;
            *slot = Some(offset);
        }
    }
    Ok(partitions
        .iter()
        .zip(last)
        .filter_map(|(p, o)| o.map(|o| (p.clone(), o.to_string())))
        .collect())
}

/// A conversion failure of a source record: which stage and converter, and why.
struct ConvertFailure {
    stage: Stage,
    class: &'static str,
    error: ConversionError,
}

impl std::fmt::Display for ConvertFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.stage.name(), self.class, self.error)
    }
}

/// A source record that failed, as far as it is known before it reached Kafka.
fn failed_source_record(record: &proto::SourceRecord) -> FailedRecord {
    FailedRecord {
        topic: record.topic.clone(),
        key: dead_letter_bytes(record.key.as_ref()),
        value: dead_letter_bytes(record.value.as_ref()),
        ..FailedRecord::default()
    }
}

/// A source record as transforms see it, moved.
fn to_record(r: proto::SourceRecord) -> Record {
    Record {
        topic: r.topic,
        kafka_partition: r.kafka_partition,
        offset: None,
        key: r.key,
        value: r.value,
        timestamp_ms: r.timestamp_ms,
        headers: r.headers,
    }
}

/// A transformed record, as far as sending it needs (its source position stays with the
/// original).
fn from_record(r: Record) -> proto::SourceRecord {
    proto::SourceRecord {
        topic: r.topic,
        kafka_partition: r.kafka_partition,
        key: r.key,
        value: r.value,
        headers: r.headers,
        timestamp_ms: r.timestamp_ms,
        ..proto::SourceRecord::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: Option<u32>, offset: &str) -> proto::SourceRecord {
        proto::SourceRecord {
            partition,
            offset: offset.into(),
            ..Default::default()
        }
    }

    #[test]
    fn last_positions_keep_the_latest_offset_of_each_partition() {
        let partitions = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let records = [
            record(Some(0), "1"),
            record(Some(1), "7"),
            record(Some(0), "2"),
            record(None, "ignored"),
            record(Some(2), ""),
        ];
        let positions = || records.iter().map(|r| (r.partition, r.offset.as_str()));
        assert_eq!(
            last_positions(&partitions, positions()).unwrap(),
            [("a".into(), "2".into()), ("b".into(), "7".into())]
        );
        let e = last_positions(&partitions[..1], positions()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "record refers to source partition 1, batch has 1"
        );
    }
}
