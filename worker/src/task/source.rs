//! The source data path of one task: credits to the connector, batches through the converters
//! into an idempotent producer, positions committed only once Kafka acknowledged every record
//! of a batch and of all batches before it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use sluice_proto::connector::v1::{self as proto, source_request, source_response};
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use sluice_data::converter::{
    dead_letter_bytes, ConversionError, Converter, DATA_EXCEPTION, HEADER_CONVERTER,
};
use sluice_data::record::Record;
use sluice_data::transforms::Chain;

use crate::host::process::Client;
use crate::lease::Lapsed;
use crate::restart::{task_error, Fatal};
use crate::task::errors::{report_text, ErrorReporter, FailedRecord, Failure, Stage};
use crate::task::metrics::Counters;
use crate::task::offsets::OffsetStore;
use crate::task::{OpenedSender, Transactions};
use sluice_model::TransactionBoundary;

/// Records and bytes the connector may have in flight towards the producer.
const CREDIT_RECORDS: u64 = 50_000;
const CREDIT_BYTES: u64 = 64 * 1024 * 1024;

/// Everything one source task needs besides its connector process.
pub struct SourceTaskRunner {
    pub connector: String,
    pub class: String,
    pub task_id: u32,
    pub config: std::collections::BTreeMap<String, String>,
    pub key_converter: Converter,
    pub value_converter: Converter,
    /// Applied to each record before its conversion.
    pub transforms: Arc<Chain>,
    pub producer_config: ClientConfig,
    pub offsets: Arc<OffsetStore>,
    pub counters: Arc<Counters>,
    /// Told the task id once the connector opened the task.
    pub opened: OpenedSender,
    /// On an exactly-once worker: records and their offsets are committed in transactions.
    pub transactions: Option<Transactions>,
    /// Records that fail conversion: `errors.tolerance`, log, dead-letter queue.
    pub errors: Arc<ErrorReporter>,
    /// How long an ending task waits for Kafka to acknowledge what it holds
    /// (`task.shutdown.graceful.timeout.ms`).
    pub drain_timeout: Duration,
}

/// A batch handed to the producer and not yet fully acknowledged.
struct InFlight {
    seq: u64,
    remaining: usize,
    positions: Vec<(String, String)>,
}

/// Counts delivery reports per batch; completes batches strictly in order.
#[derive(Default)]
struct DeliveryTracker {
    state: Mutex<TrackerState>,
    progress: Notify,
}

#[derive(Default)]
struct TrackerState {
    in_flight: VecDeque<InFlight>,
    completed: Vec<InFlight>,
    failure: Option<String>,
}

impl DeliveryTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, seq: u64, records: usize, positions: Vec<(String, String)>) {
        let mut state = self.lock();
        state.in_flight.push_back(InFlight {
            seq,
            remaining: records,
            positions,
        });
        if Self::complete_front(&mut state) {
            self.progress.notify_one();
        }
    }

    fn delivered(&self, seq: u64, error: Option<String>) {
        let mut state = self.lock();
        if let Some(e) = error {
            // Positions stop advancing at the first failed record: nothing after it commits.
            state.failure.get_or_insert(e);
            self.progress.notify_one();
            return;
        }
        let Some(front) = state.in_flight.front().map(|b| b.seq) else {
            return;
        };
        let index = seq.wrapping_sub(front) as usize;
        if let Some(batch) = state.in_flight.get_mut(index) {
            batch.remaining = batch.remaining.saturating_sub(1);
        }
        if Self::complete_front(&mut state) {
            self.progress.notify_one();
        }
    }

    fn complete_front(state: &mut TrackerState) -> bool {
        let mut any = false;
        while state.failure.is_none() && state.in_flight.front().is_some_and(|b| b.remaining == 0) {
            if let Some(batch) = state.in_flight.pop_front() {
                state.completed.push(batch);
                any = true;
            }
        }
        any
    }

    fn take(&self) -> (Vec<InFlight>, Option<String>) {
        let mut state = self.lock();
        (std::mem::take(&mut state.completed), state.failure.clone())
    }
}

struct DeliveryContext {
    tracker: Arc<DeliveryTracker>,
    log: crate::kafka::log::KafkaLog,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let error = result.as_ref().err().map(|(e, _)| e.to_string());
        if error.is_none() {
            self.log.reachable();
        }
        self.tracker.delivered(seq as u64, error);
    }
}

type Sender = mpsc::Sender<proto::SourceRequest>;

/// Hands a record to the producer, waiting while its queue is full.
async fn send_with_backpressure<'a>(
    producer: &ThreadedProducer<DeliveryContext>,
    mut record: BaseRecord<'a, [u8], [u8], usize>,
    topic: &str,
) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((e, _)) => bail!("produce to {topic}: {e}"),
        }
    }
}

/// What the connector sent that a task's loop acts on.
enum Event {
    Batch(Box<proto::SourceBatch>),
    Stopped,
    RecordError(Box<proto::RecordError>),
}

/// Sorts a message of the source stream: the task's own failure and a broken or closed stream
/// are errors; `None` for nothing to do.
fn event(
    message: Result<Option<proto::SourceResponse>, tonic::Status>,
) -> anyhow::Result<Option<Event>> {
    match message {
        Ok(Some(proto::SourceResponse { kind: Some(kind) })) => Ok(match kind {
            source_response::Kind::Batch(batch) => Some(Event::Batch(Box::new(batch))),
            source_response::Kind::Stopped(_) => Some(Event::Stopped),
            source_response::Kind::RecordError(e) => Some(Event::RecordError(Box::new(e))),
            source_response::Kind::Error(e) => return Err(task_error("task failed", e)),
            source_response::Kind::Opened(_) => None,
        }),
        Ok(Some(_)) => Ok(None),
        Ok(None) => bail!("connector closed the source stream"),
        Err(s) => bail!("source stream broke: {}", s.message()),
    }
}

/// The credit a batch used: its records and its encoded size, as the connector debited them.
fn credit_of(batch: &proto::SourceBatch) -> source_request::Kind {
    source_request::Kind::Credit(proto::Credit {
        records: batch.records.len() as u64,
        bytes: batch.encoded_len() as u64,
    })
}

async fn send(tx: &Sender, kind: source_request::Kind) {
    // A closed stream is noticed on the response side; nothing to do here.
    let _ = tx.send(proto::SourceRequest { kind: Some(kind) }).await;
}

impl SourceTaskRunner {
    /// Runs the task until `stop` (a clean drain) or a failure. Either way, every record handed
    /// to the producer is waited for and its position committed before returning.
    pub async fn run(&self, mut client: Client, stop: CancellationToken) -> anyhow::Result<()> {
        if let Some(transactions) = &self.transactions {
            return self
                .run_transactional(transactions, &mut client, &stop)
                .await;
        }
        let tracker = Arc::new(DeliveryTracker::default());
        let producer = self.producer(self.producer_config.clone(), &tracker)?;
        let (tx, rx) = mpsc::channel(64);
        let result = async {
            let responses = self.open(&mut client, rx, &tx).await?;
            self.stream(responses, &tx, &producer, &tracker, &stop)
                .await
        }
        .await;

        let flusher = producer.clone();
        let timeout = self.drain_timeout;
        let drained = tokio::task::spawn_blocking(move || flusher.flush(timeout)).await;
        let committed = self.commit_completed(&tracker, &tx).await;
        drop(tx);
        // Whoever runs this task next (here or on another worker) starts from here.
        let flushed = self.offsets.flush().await;
        result?;
        match drained {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!(
                "records not acknowledged by Kafka within {timeout:?} (task.shutdown.graceful.timeout.ms): {e}"
            ),
            Err(e) => bail!("producer flush: {e}"),
        }
        committed?;
        flushed.context("flush source offsets")
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
                        self.connector, self.task_id
                    )),
                })
                .context("create producer")?,
        ))
    }

    /// Reads the committed positions, opens the task's stream and grants the first credit.
    async fn open(
        &self,
        client: &mut Client,
        rx: mpsc::Receiver<proto::SourceRequest>,
        tx: &Sender,
    ) -> anyhow::Result<tonic::Streaming<proto::SourceResponse>> {
        let positions = self
            .offsets
            .positions(&self.connector)
            .await
            .context("read committed source offsets")?;
        send(
            tx,
            source_request::Kind::Open(proto::SourceOpen {
                connector_class: self.class.clone(),
                connector_name: self.connector.clone(),
                task_id: self.task_id,
                config: self.config.clone().into_iter().collect(),
                positions,
            }),
        )
        .await;
        let mut responses = client
            .source(ReceiverStream::new(rx))
            .await
            .map_err(|s| anyhow!("open source stream: {}", s.message()))?
            .into_inner();
        match responses.message().await {
            Ok(Some(proto::SourceResponse {
                kind: Some(source_response::Kind::Opened(_)),
            })) => {
                let _ = self.opened.send(self.task_id);
            }
            Ok(Some(proto::SourceResponse {
                kind: Some(source_response::Kind::Error(e)),
            })) => return Err(task_error("task failed to start", e)),
            Ok(_) => bail!("connector did not open the source stream"),
            Err(s) => bail!("open source stream: {}", s.message()),
        }
        send(
            tx,
            source_request::Kind::Credit(proto::Credit {
                records: CREDIT_RECORDS,
                bytes: CREDIT_BYTES,
            }),
        )
        .await;
        Ok(responses)
    }

    async fn stream(
        &self,
        mut responses: tonic::Streaming<proto::SourceResponse>,
        tx: &Sender,
        producer: &ThreadedProducer<DeliveryContext>,
        tracker: &DeliveryTracker,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut stopping = false;
        loop {
            tokio::select! {
                biased;
                _ = tracker.progress.notified() => self.commit_completed(tracker, tx).await?,
                _ = stop.cancelled(), if !stopping => {
                    stopping = true;
                    send(tx, source_request::Kind::Stop(proto::Stop {})).await;
                }
                message = responses.message() => match event(message)? {
                    Some(Event::Batch(batch)) => {
                        // Credit is returned exactly as the connector debited it: records,
                        // and the encoded size of the batch message.
                        let credit = credit_of(&batch);
                        self.produce(producer, tracker, *batch).await?;
                        send(tx, credit).await;
                    }
                    Some(Event::Stopped) => return Ok(()),
                    Some(Event::RecordError(e)) => self.record_error(*e).await?,
                    None => {}
                },
            }
        }
    }

    /// Converts and enqueues one batch, counting the converted bytes.
    async fn produce(
        &self,
        producer: &ThreadedProducer<DeliveryContext>,
        tracker: &DeliveryTracker,
        batch: proto::SourceBatch,
    ) -> anyhow::Result<()> {
        let mut last: Vec<Option<&str>> = vec![None; batch.partitions.len()];
        for record in &batch.records {
            if let (Some(p), false) = (record.partition, record.offset.is_empty()) {
                let slot = last.get_mut(p as usize).ok_or_else(|| {
                    anyhow!(
                        "record refers to source partition {p}, batch has {}",
                        batch.partitions.len()
                    )
                })?;
                *slot = Some(&record.offset);
            }
        }
        let positions = batch
            .partitions
            .iter()
            .zip(last)
            .filter_map(|(p, o)| o.map(|o| (p.clone(), o.to_string())))
            .collect();
        tracker.register(batch.seq, batch.records.len(), positions);

        let (mut bytes, mut sent) = (0u64, 0u64);
        let mut last_topic: Option<String> = None;
        for record in &batch.records {
            match self
                .send_record(producer, record, batch.seq, &mut last_topic)
                .await?
            {
                Some(n) => {
                    bytes += n;
                    sent += 1;
                }
                // Skipped by the error policy: nothing to wait for.
                None => tracker.delivered(batch.seq, None),
            }
        }
        self.counters.add(sent, bytes);
        Ok(())
    }

    /// Converts one record and hands it to the producer (waiting while its queue is full);
    /// returns the converted size, or `None` when the error policy skipped the record (its
    /// conversion failed and `errors.tolerance=all`). `last_topic` spares a topic note per
    /// record.
    async fn send_record(
        &self,
        producer: &ThreadedProducer<DeliveryContext>,
        record: &proto::SourceRecord,
        seq: u64,
        last_topic: &mut Option<String>,
    ) -> anyhow::Result<Option<u64>> {
        if record.topic.is_empty() {
            bail!("connector sent a record with no topic");
        }
        let transformed;
        let record = if self.transforms.is_empty() {
            record
        } else {
            match self.transforms.apply(to_record(record)) {
                Ok(Some(r)) => {
                    transformed = from_record(r);
                    &transformed
                }
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
                    self.errors
                        .report(&report, &failed_source_record(record))
                        .await?;
                    return Ok(None);
                }
            }
        };
        if record.topic.is_empty() {
            bail!("a transform left a record with no topic");
        }
        if last_topic.as_deref() != Some(record.topic.as_str()) {
            self.counters.note_topic(&record.topic);
            *last_topic = Some(record.topic.clone());
        }
        let mut converted = self.convert(record);
        if matches!(&converted, Err(f) if f.error.retriable) {
            // Something the converter needs is away (its schema registry): wait for it as
            // errors.retry.* allow before the error policy decides.
            converted = self
                .errors
                .retry(|| {
                    std::future::ready(self.convert(record).map_err(|f| {
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
                self.errors
                    .report(&failure, &failed_source_record(record))
                    .await?;
                return Ok(None);
            }
        };
        let bytes = (key.as_ref().map_or(0, Vec::len) + value.as_ref().map_or(0, Vec::len)) as u64;
        let mut out: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&record.topic, seq as usize);
        if let Some(k) = &key {
            out = out.key(k.as_slice());
        }
        if let Some(v) = &value {
            out = out.payload(v.as_slice());
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

    /// Converts a record's key, value and headers; a failure names its stage and converter.
    #[allow(clippy::type_complexity)]
    fn convert(
        &self,
        record: &proto::SourceRecord,
    ) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>, Option<OwnedHeaders>), ConvertFailure> {
        let one = |stage, converter: &Converter, data: Option<&proto::Data>| {
            converter
                .from_connect(&record.topic, data)
                .map_err(|error| ConvertFailure {
                    stage,
                    class: converter.kind().class_name(),
                    error,
                })
        };
        let key = one(
            Stage::KeyConverter,
            &self.key_converter,
            record.key.as_ref(),
        )?;
        let value = one(
            Stage::ValueConverter,
            &self.value_converter,
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
        let failure = Failure::reported(Stage::TaskPoll, &self.class, &error);
        let failed = FailedRecord {
            topic: e.topic.clone(),
            key: dead_letter_bytes(e.key.as_ref()),
            value: dead_letter_bytes(e.value.as_ref()),
            ..FailedRecord::default()
        };
        self.errors.report(&failure, &failed).await
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

    /// Commits the positions of completed batches and acknowledges them to the connector.
    async fn commit_completed(&self, tracker: &DeliveryTracker, tx: &Sender) -> anyhow::Result<()> {
        let (completed, failure) = tracker.take();
        if let Some(last) = completed.last().map(|b| b.seq) {
            self.offsets.commit(
                &self.connector,
                completed
                    .iter()
                    .flat_map(|b| b.positions.iter().map(|(p, o)| (p.as_str(), o.as_str()))),
            );
            send(
                tx,
                source_request::Kind::Ack(proto::SourceAck { batch_seq: last }),
            )
            .await;
        }
        match failure {
            Some(e) => bail!("Kafka did not accept a record: {e}"),
            None => Ok(()),
        }
    }
}

/// How long an exactly-once task waits for the transaction coordinator (init, commit, abort).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The open transaction of an exactly-once task.
#[derive(Default)]
struct Transaction {
    open: bool,
    /// Latest offset per source partition of the records in the transaction.
    positions: BTreeMap<String, String>,
    /// The last batch whose records are all in this or an earlier transaction.
    through: Option<u64>,
    /// Last acknowledged batch.
    acked: Option<u64>,
    records: u64,
    bytes: u64,
}

/// A transactional call failed: fatal (fenced: another instance of this task started, so this
/// one must stop for good) or not (the task restarts from its committed offsets).
fn transaction_error(what: &str, e: KafkaError) -> anyhow::Error {
    let fatal = match &e {
        KafkaError::Transaction(t) => t.is_fatal(),
        _ => false,
    };
    if fatal {
        anyhow::Error::new(Fatal(format!(
            "{what}: {e} (this task was fenced: another instance of it started, so this one stops for good)"
        )))
    } else {
        anyhow!("{what}: {e}")
    }
}

type TxProducer = Arc<ThreadedProducer<DeliveryContext>>;

/// What every step of an exactly-once task needs.
struct TxContext<'a> {
    transactions: &'a Transactions,
    producer: &'a TxProducer,
    tx: &'a Sender,
    offsets_topic: &'a str,
    /// The lease's lapse count when the task started.
    epoch: u64,
}

/// Waits until every record handed to the producer has its delivery report. The producer's
/// own flush (which `commit_transaction` calls) sleeps in steps of 100 ms while the polling
/// thread serves the reports: each commit would take at least that long.
async fn wait_delivered(producer: &TxProducer) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + TRANSACTION_TIMEOUT;
    while producer.in_flight_count() > 0 {
        if tokio::time::Instant::now() > deadline {
            bail!("records not acknowledged by Kafka within {TRANSACTION_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Runs a blocking transactional call off the runtime.
async fn blocking(
    producer: &TxProducer,
    what: &str,
    call: impl FnOnce(&ThreadedProducer<DeliveryContext>) -> rdkafka::error::KafkaResult<()>
        + Send
        + 'static,
) -> anyhow::Result<()> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || call(&producer))
        .await
        .with_context(|| format!("{what}: worker thread"))?
        .map_err(|e| transaction_error(what, e))
}

impl SourceTaskRunner {
    /// Exactly-once (KIP-618): a transactional producer whose `transactional.id` is this
    /// task's, so starting fences every earlier instance (and aborts its open transaction)
    /// before the offsets are read. Records and their source offsets are committed in one
    /// transaction, at the configured boundary; the connector hears of a batch (ack) only
    /// once its transaction committed.
    async fn run_transactional(
        &self,
        transactions: &Transactions,
        client: &mut Client,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let offsets_topic = self
            .offsets
            .kafka_topic()
            .ok_or_else(|| anyhow!("exactly-once source tasks keep their offsets in Kafka"))?
            .to_string();
        let transactional_id = format!("{}-{}", transactions.id_prefix, self.task_id);
        let mut config = self.producer_config.clone();
        config.set("transactional.id", &transactional_id);
        let tracker = Arc::new(DeliveryTracker::default());
        let producer = self.producer(config, &tracker)?;
        // Owned as of a heartbeat the controller acknowledged after this task was assigned.
        let epoch = transactions.lease.epoch();
        transactions.lease.check(epoch, TRANSACTION_TIMEOUT).await?;
        blocking(&producer, "initialize transactions", |p| {
            p.init_transactions(TRANSACTION_TIMEOUT)
        })
        .await?;
        tracing::debug!(connector = %self.connector, task = self.task_id, %transactional_id, "transactions initialized");

        let (tx, rx) = mpsc::channel(64);
        let mut txn = Transaction::default();
        let result = async {
            let responses = self.open(client, rx, &tx).await?;
            let mut ctx = TxContext {
                transactions,
                producer: &producer,
                tx: &tx,
                offsets_topic: &offsets_topic,
                epoch,
            };
            self.stream_transactional(&mut ctx, responses, &mut txn, stop)
                .await
        }
        .await;
        if result.is_err() && txn.open {
            tracing::warn!(connector = %self.connector, task = self.task_id, records = txn.records, "aborting the open transaction");
            // Best effort: the next instance's initialization aborts it anyway.
            let _ = blocking(&producer, "abort transaction", |p| {
                p.abort_transaction(TRANSACTION_TIMEOUT)
            })
            .await;
        }
        result
    }

    async fn stream_transactional(
        &self,
        ctx: &mut TxContext<'_>,
        mut responses: tonic::Streaming<proto::SourceResponse>,
        txn: &mut Transaction,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (transactions, tx) = (ctx.transactions, ctx.tx);
        let mut ticker = tokio::time::interval(transactions.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let by_interval = transactions.boundary == TransactionBoundary::Interval;
        let mut stopping = false;
        loop {
            tokio::select! {
                biased;
                _ = ticker.tick(), if by_interval => {
                    self.end_transaction(ctx, txn, true).await?;
                }
                _ = stop.cancelled(), if !stopping => {
                    stopping = true;
                    send(tx, source_request::Kind::Stop(proto::Stop {})).await;
                }
                message = responses.message() => match event(message)? {
                    Some(Event::Batch(batch)) => {
                        let credit = credit_of(&batch);
                        self.produce_transactional(ctx, txn, &batch).await?;
                        if transactions.boundary == TransactionBoundary::Poll {
                            self.end_transaction(ctx, txn, true).await?;
                        }
                        send(tx, credit).await;
                    }
                    // A clean stop commits what is open, whatever the boundary.
                    Some(Event::Stopped) => return self.end_transaction(ctx, txn, true).await,
                    Some(Event::RecordError(e)) => self.record_error(*e).await?,
                    None => {}
                },
            }
        }
    }

    /// Adds a batch's records to the open transaction (beginning one when none is), ending
    /// transactions where the connector marks it (`transaction.boundary=connector`).
    async fn produce_transactional(
        &self,
        ctx: &TxContext<'_>,
        txn: &mut Transaction,
        batch: &proto::SourceBatch,
    ) -> anyhow::Result<()> {
        let (transactions, producer) = (ctx.transactions, ctx.producer);
        let mut last_topic: Option<String> = None;
        let count = batch.records.len();
        for (i, record) in batch.records.iter().enumerate() {
            if !txn.open {
                // Nothing reaches Kafka unless the task is still ours: a lapse found only at
                // commit time would leave records of an aborted transaction behind.
                transactions
                    .lease
                    .check(ctx.epoch, TRANSACTION_TIMEOUT)
                    .await?;
                producer
                    .begin_transaction()
                    .map_err(|e| transaction_error("begin transaction", e))?;
                txn.open = true;
            }
            if let Some(bytes) = self
                .send_record(producer, record, batch.seq, &mut last_topic)
                .await?
            {
                txn.bytes += bytes;
                txn.records += 1;
            }
            if let (Some(p), false) = (record.partition, record.offset.is_empty()) {
                let partition = batch.partitions.get(p as usize).ok_or_else(|| {
                    anyhow!(
                        "record refers to source partition {p}, batch has {}",
                        batch.partitions.len()
                    )
                })?;
                txn.positions
                    .insert(partition.clone(), record.offset.clone());
            }
            if i + 1 == count {
                txn.through = Some(batch.seq);
            }
            if transactions.boundary == TransactionBoundary::Connector {
                match record.transaction() {
                    proto::TransactionBoundary::Commit => {
                        self.end_transaction(ctx, txn, true).await?
                    }
                    proto::TransactionBoundary::Abort => {
                        self.end_transaction(ctx, txn, false).await?
                    }
                    proto::TransactionBoundary::Unspecified => {}
                }
            }
        }
        if count == 0 {
            txn.through = Some(batch.seq);
        }
        Ok(())
    }

    /// Commits (with the source offsets of its records, written to the offsets topic in the
    /// same transaction) or aborts the open transaction, then acknowledges the batches it
    /// completed.
    async fn end_transaction(
        &self,
        ctx: &TxContext<'_>,
        txn: &mut Transaction,
        commit: bool,
    ) -> anyhow::Result<()> {
        let (producer, tx, offsets_topic) = (ctx.producer, ctx.tx, ctx.offsets_topic);
        if txn.open {
            if commit {
                // Still this task's: no other worker can have started it meanwhile. Checked
                // before waiting for delivery: records still queued here are purged by an
                // abort and never reach the broker.
                ctx.transactions
                    .lease
                    .check(ctx.epoch, TRANSACTION_TIMEOUT)
                    .await?;
                let keys: Vec<(String, &String)> = txn
                    .positions
                    .iter()
                    .map(|(p, o)| (crate::task::offsets::record_key(&self.connector, p), o))
                    .collect();
                for (key, offset) in &keys {
                    let record: BaseRecord<'_, [u8], [u8], usize> =
                        BaseRecord::with_opaque_to(offsets_topic, usize::MAX)
                            .key(key.as_bytes())
                            .payload(offset.as_bytes());
                    send_with_backpressure(producer, record, offsets_topic).await?;
                }
                let started = std::time::Instant::now();
                wait_delivered(producer).await?;
                // Again, as late as can be: the worker may have been frozen meanwhile.
                if !ctx.transactions.lease.holds(ctx.epoch) {
                    return Err(Lapsed.into());
                }
                blocking(producer, "commit transaction", |p| {
                    p.commit_transaction(TRANSACTION_TIMEOUT)
                })
                .await?;
                if !ctx.transactions.lease.holds(ctx.epoch) {
                    // Frozen in the commit itself. Kafka fenced it if the task moved
                    // meanwhile; a broker that does not fence took it, and may now hold
                    // these records twice.
                    tracing::warn!(connector = %self.connector, task = self.task_id, records = txn.records, "committed a transaction while this worker's lease ran out");
                }
                tracing::trace!(connector = %self.connector, task = self.task_id, records = txn.records, elapsed = ?started.elapsed(), "transaction committed");
                self.offsets.committed_durably(
                    &self.connector,
                    txn.positions.iter().map(|(p, o)| (p.as_str(), o.as_str())),
                );
                self.counters.add(txn.records, txn.bytes);
            } else {
                blocking(producer, "abort transaction", |p| {
                    p.abort_transaction(TRANSACTION_TIMEOUT)
                })
                .await?;
                tracing::debug!(connector = %self.connector, task = self.task_id, records = txn.records, "the connector aborted a transaction");
            }
            txn.open = false;
            txn.positions.clear();
            txn.records = 0;
            txn.bytes = 0;
        }
        if txn.through > txn.acked {
            if let Some(seq) = txn.through {
                send(
                    tx,
                    source_request::Kind::Ack(proto::SourceAck { batch_seq: seq }),
                )
                .await;
            }
            txn.acked = txn.through;
        }
        Ok(())
    }
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

/// A source record as transforms see it.
fn to_record(r: &proto::SourceRecord) -> Record {
    Record {
        topic: r.topic.clone(),
        kafka_partition: r.kafka_partition,
        offset: None,
        key: r.key.clone(),
        value: r.value.clone(),
        timestamp_ms: r.timestamp_ms,
        headers: r.headers.clone(),
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

    #[test]
    fn batches_complete_in_order_and_stop_at_a_failure() {
        let t = DeliveryTracker::default();
        t.register(1, 2, vec![("p".into(), "1".into())]);
        t.register(2, 1, vec![("p".into(), "2".into())]);
        t.delivered(2, None);
        assert!(t.take().0.is_empty(), "batch 2 must wait for batch 1");
        t.delivered(1, None);
        t.delivered(1, None);
        let (done, failure) = t.take();
        assert_eq!(done.iter().map(|b| b.seq).collect::<Vec<_>>(), [1, 2]);
        assert!(failure.is_none());

        t.register(3, 2, vec![]);
        t.register(4, 0, vec![]);
        t.delivered(3, Some("boom".into()));
        t.delivered(3, None);
        let (done, failure) = t.take();
        assert!(done.is_empty());
        assert_eq!(failure.as_deref(), Some("boom"));
    }
}
