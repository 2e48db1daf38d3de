//! The sink data path of one task: a consumer in group `connect-<name>` polled on its own
//! thread, records converted and batched, a bounded window of batches to the connector, and
//! offsets committed only after the connector flushed them. Batches cross in their wire form,
//! written as records are read ([`wire`]).

mod fetch;
pub mod shared;
mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::{Bytes, BytesMut};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use sluice_proto::codec::SliceDecoder;
use sluice_proto::connector::v1::{self as proto, data, sink_request, sink_response};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::host::process::Conn;
use sluice_data::converter::{ConversionError, Converter, Passthrough, DATA_EXCEPTION};
use sluice_data::record::Record;

use self::fetch::{FetchQueue, Fetched, ForwardTo};
use self::shared::SharedMemory;
use self::wire::{Consumed, Outgoing, Records};
use crate::restart::task_error;
use crate::task::errors::{report_text, ErrorReporter, FailedRecord, Failure, Stage};
use crate::task::{Conversion, TaskSpec};

const MAX_BATCH_RECORDS: usize = 4096;
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// What a batch's buffer holds before it must grow: `MAX_BATCH_BYTES` of keys and values and
/// room for the fields around them.
const BATCH_CAPACITY: usize = MAX_BATCH_BYTES + 512 * 1024;
/// How long the poller waits to fill a batch once it has a record.
const BATCH_LINGER: Duration = Duration::from_millis(5);
/// Batches sent to the connector and not yet taken by it.
const WINDOW: usize = 4;
/// The memory a task shares with its connector (feature `sink.shared_memory`): room for two
/// windows of full batches, so batches the connector still holds after acknowledging them
/// rarely send one through the socket. Only the pages batches were written to are resident.
const SHARED_BYTES: usize = 2 * WINDOW * BATCH_CAPACITY;
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

pub struct SinkTaskRunner {
    pub task: TaskSpec,
    pub consumer_config: ClientConfig,
    pub topics: Vec<String>,
    pub topics_regex: Option<String>,
    pub flush_interval: Duration,
    /// The connector agreed to feature `sink.shared_memory` in its handshake.
    pub shared_memory: bool,
}

/// Records polled and converted, with the next offset per partition they reach.
struct Polled {
    /// `SinkBatch.records`, encoded.
    records: Bytes,
    count: usize,
    /// Messages read from Kafka for it (`count` and the ones the error policy skipped).
    read: usize,
    offsets: Vec<((String, i32), i64)>,
    bytes: u64,
}

type Sender = mpsc::Sender<Outgoing>;

/// How long an assignment waits for the connector's stored positions.
const POSITIONS_TIMEOUT: Duration = Duration::from_secs(30);

/// Newly assigned partitions and where to send the connector's answer.
type PositionsQuery = (
    Vec<proto::TopicPartition>,
    std::sync::mpsc::SyncSender<Vec<proto::TopicPartitionOffset>>,
);

type SinkConsumer = BaseConsumer<SinkContext>;

/// The sink consumer's rebalance handling: before fetching from newly assigned partitions,
/// the connector is asked for the offsets it stored itself (an exactly-once sink), and the
/// partitions start there; the others start at the group's committed offsets.
struct SinkContext {
    /// Unbounded: at most one query per rebalance, and the poll thread waits for its answer.
    ask: mpsc::UnboundedSender<PositionsQuery>,
    log: crate::kafka::log::KafkaLog,
    /// Where the poll thread takes fetched messages from: newly assigned partitions are
    /// forwarded there before they are assigned.
    forward_to: ForwardTo,
}

impl rdkafka::ClientContext for SinkContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ConsumerContext for SinkContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::consumer::RebalanceProtocol;
        use rdkafka::types::RDKafkaRespErr as E;
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions: Vec<proto::TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| proto::TopicPartition {
                        topic: e.topic().to_string(),
                        partition: e.partition(),
                    })
                    .collect();
                // This runs on the poll thread, which may block: the task's stream asks the
                // connector and answers.
                let (reply, answer) = std::sync::mpsc::sync_channel(1);
                let positions = match self.ask.send((partitions, reply)) {
                    Ok(()) => answer.recv_timeout(POSITIONS_TIMEOUT).ok(),
                    Err(_) => None,
                };
                for e in tpl.elements() {
                    self.forward_to.forward(consumer, e.topic(), e.partition());
                }
                for p in positions.unwrap_or_default() {
                    if tpl.find_partition(&p.topic, p.partition).is_some() {
                        tracing::info!(topic = %p.topic, partition = p.partition, offset = p.offset, "starting where the sink stored its offset");
                        let _ = tpl.set_partition_offset(
                            &p.topic,
                            p.partition,
                            Offset::Offset(p.offset),
                        );
                    }
                }
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(
                    "consumer rebalance: {}",
                    rdkafka::error::RDKafkaErrorCode::from(other)
                );
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!("consumer rebalance: {e}");
        }
    }
}

async fn send(tx: &Sender, kind: sink_request::Kind) {
    let _ = tx.send(kind.into()).await;
}

/// Opens the connector's Sink call on `channel`. The request body is written here rather
/// than by tonic's encoder, which would copy every batch into its own buffer: each message
/// goes out as [`wire::grpc_frames`], a batch's records as the bytes the poll thread wrote.
/// The responses are decoded as every client decodes them.
async fn open_sink(
    mut channel: Conn,
    requests: mpsc::Receiver<Outgoing>,
) -> Result<tonic::Response<tonic::Streaming<proto::SinkResponse>>, tonic::Status> {
    use futures::StreamExt as _;
    use sluice_proto::connector::v1::MAX_MESSAGE_BYTES;
    use tower::{Service as _, ServiceExt as _};
    let frames = ReceiverStream::new(requests).flat_map(|item| {
        let (head, records) = wire::grpc_frames(item);
        futures::stream::iter(
            std::iter::once(head)
                .chain(records)
                .map(|data| Ok::<_, tonic::Status>(http_body::Frame::data(data))),
        )
    });
    let request = tonic::codegen::http::Request::builder()
        .method(tonic::codegen::http::Method::POST)
        .uri("/sluice.connector.v1.Connector/Sink")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::StreamBody::new(
            frames,
        )))
        .map_err(|e| tonic::Status::internal(format!("sink call: {e}")))?;
    let response = channel
        .ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connector socket: {e}")))?
        .call(request)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connector socket: {e}")))?;
    // A call refused at once answers with its status in the headers (trailers-only).
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        if status.code() != tonic::Code::Ok {
            return Err(status);
        }
    }
    let status = response.status();
    let (head, body) = response.into_parts();
    Ok(tonic::Response::from_parts(
        tonic::metadata::MetadataMap::from_headers(head.headers),
        tonic::Streaming::new_response(
            SliceDecoder::<proto::SinkResponse>::default(),
            body,
            status,
            None,
            Some(MAX_MESSAGE_BYTES),
        ),
        head.extensions,
    ))
}

/// How often the consumer lag metric is worked out while batches flow (and at every flush).
const LAG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl SinkTaskRunner {
    pub async fn run(&self, channel: Conn, stop: CancellationToken) -> anyhow::Result<()> {
        let (ask_tx, asks) = mpsc::unbounded_channel();
        let consumer: Arc<SinkConsumer> = Arc::new(
            self.consumer_config
                .create_with_context(SinkContext {
                    ask: ask_tx,
                    forward_to: ForwardTo::default(),
                    log: crate::kafka::log::KafkaLog::new(format!(
                        "sink task {}-{} consumer",
                        self.task.connector, self.task.task_id
                    )),
                })
                .context("create consumer")?,
        );
        let subscription: Vec<String> = match &self.topics_regex {
            // librdkafka treats a subscription starting with ^ as a regex.
            Some(regex) if regex.starts_with('^') => vec![regex.clone()],
            Some(regex) => vec![format!("^{regex}")],
            None => self.topics.clone(),
        };
        let names: Vec<&str> = subscription.iter().map(String::as_str).collect();
        consumer.subscribe(&names).context("subscribe")?;

        let polling = Arc::new(AtomicBool::new(true));
        let (batch_tx, batch_rx) = mpsc::channel(WINDOW);
        let poller = {
            let consumer = consumer.clone();
            let polling = polling.clone();
            let pipeline = self.task.conversion.clone();
            let errors = self.task.errors.clone();
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                poll_loop(&consumer, &pipeline, &errors, &runtime, &polling, &batch_tx)
            })
        };
        let result = self.stream(channel, &consumer, batch_rx, asks, &stop).await;
        polling.store(false, Ordering::Release);
        let _ = poller.await;
        result
    }

    async fn stream(
        &self,
        channel: Conn,
        consumer: &Arc<SinkConsumer>,
        mut batches: mpsc::Receiver<anyhow::Result<Polled>>,
        mut asks: mpsc::UnboundedReceiver<PositionsQuery>,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        // Assignments waiting for the connector's stored positions, by request id.
        let mut waiting: BTreeMap<
            u64,
            std::sync::mpsc::SyncSender<Vec<proto::TopicPartitionOffset>>,
        > = BTreeMap::new();
        let mut ask_id = 0u64;
        let (tx, rx) = mpsc::channel(WINDOW + 4);
        // Offered in the open; used once the connector says it mapped it.
        let offered = match self.shared_memory {
            true => SharedMemory::create(SHARED_BYTES)
                .inspect_err(|e| {
                    tracing::warn!("sink batches go through the socket: shared memory: {e}")
                })
                .ok(),
            false => None,
        };
        send(
            &tx,
            sink_request::Kind::Open(proto::SinkOpen {
                connector_class: self.task.class.clone(),
                connector_name: self.task.connector.clone(),
                task_id: self.task.task_id,
                config: self.task.config.clone().into_iter().collect(),
                shared_memory: offered.as_ref().map(SharedMemory::describe),
            }),
        )
        .await;
        let (mut responses, opened) = self
            .task
            .open_stream(open_sink(channel, rx), "sink")
            .await?;
        // The connector mapped the memory offered: batches go there from now on.
        let mut shared = offered.filter(|_| opened.shared_memory);
        // Batches sent through shared memory and through the socket, told at the end.
        let (mut in_shared, mut in_socket) = (0u64, 0u64);

        let mut seq = 0u64;
        let mut in_flight = 0usize;
        // When each batch in flight was sent: acknowledgements come in order.
        let mut batch_sent_at: std::collections::VecDeque<std::time::Instant> =
            std::collections::VecDeque::new();
        // Next offset per partition of everything sent to the connector.
        let mut sent: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut sent_since_flush = false;
        let mut flush_id = 0u64;
        let mut flushing: Option<u64> = None;
        let mut final_flush: Option<u64> = None;
        let mut stopping = false;
        let mut lag_at = std::time::Instant::now();
        let mut ticker = tokio::time::interval(self.flush_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;

        loop {
            tokio::select! {
                biased;
                message = responses.message() => match message {
                    Ok(Some(proto::SinkResponse { kind: Some(kind) })) => match kind {
                        sink_response::Kind::Ack(_) => {
                            in_flight = in_flight.saturating_sub(1);
                            if let Some(sent_at) = batch_sent_at.pop_front() {
                                self.task.metrics.put_batch_time.observe(sent_at.elapsed().as_secs_f64());
                            }
                            self.task.metrics.sink_batches_in_flight.set(in_flight as i64);
                        }
                        sink_response::Kind::Flushed(flushed) => {
                            // Periodic commits are asynchronous, as Kafka Connect's are: a lost
                            // one only means redelivery, and waiting on it would stall the stream.
                            // The final one is waited for.
                            let mode = if final_flush == Some(flushed.flush_id) {
                                CommitMode::Sync
                            } else {
                                CommitMode::Async
                            };
                            commit(consumer, &flushed.offsets, &sent, mode).await?;
                            self.task.metrics.offset_commit_completion.inc();
                            flushing = None;
                            // A task that holds records back (Kafka Connect's preCommit below
                            // what was put: files not uploaded yet) is asked again at the next
                            // tick even when nothing new arrives, so its time-based rotation
                            // and the commit after it happen on an idle topic too.
                            if holds_back(&flushed.offsets, &sent) {
                                sent_since_flush = true;
                            }
                            if final_flush == Some(flushed.flush_id) {
                                send(&tx, sink_request::Kind::Stop(proto::Stop {})).await;
                            } else if stopping {
                                flush_id += 1;
                                final_flush = Some(flush_id);
                                flushing = final_flush;
                                send(&tx, flush_request(flush_id, &sent)).await;
                            }
                        }
                        sink_response::Kind::Stopped(_) => {
                            tracing::info!(
                                connector = %self.task.connector,
                                task = self.task.task_id,
                                "sink stream ended: {in_shared} batches in shared memory, {in_socket} through the socket"
                            );
                            return Ok(());
                        }
                        sink_response::Kind::Error(e) => {
                            return Err(task_error("task failed", e));
                        }
                        sink_response::Kind::Opened(_) => {}
                        sink_response::Kind::Released(released) => {
                            if let Some(shared) = &mut shared {
                                released.seqs.into_iter().for_each(|seq| shared.release(seq));
                            }
                        }
                        sink_response::Kind::RecordError(e) => self.record_error(e).await?,
                        sink_response::Kind::Positions(p) => {
                            if let Some(reply) = waiting.remove(&p.id) {
                                let _ = reply.send(p.offsets);
                            }
                        }
                    },
                    Ok(Some(_)) => {}
                    Ok(None) => bail!("connector closed the sink stream"),
                    Err(s) => bail!("sink stream broke: {}", s.message()),
                },
                Some((partitions, reply)) = asks.recv() => {
                    ask_id += 1;
                    waiting.insert(ask_id, reply);
                    send(&tx, sink_request::Kind::Assigned(proto::PartitionsAssigned {
                        id: ask_id,
                        partitions,
                    })).await;
                }
                _ = stop.cancelled(), if !stopping => {
                    stopping = true;
                    if flushing.is_none() {
                        flush_id += 1;
                        final_flush = Some(flush_id);
                        flushing = final_flush;
                        send(&tx, flush_request(flush_id, &sent)).await;
                    }
                }
                _ = ticker.tick(), if flushing.is_none() && !stopping => {
                    // Also while idle: the lag of the last batches settles after them.
                    self.task.metrics.sink_consumer_lag.set(fetch::lag(consumer, &sent));
                    lag_at = std::time::Instant::now();
                    if !sent_since_flush {
                        continue;
                    }
                    flush_id += 1;
                    flushing = Some(flush_id);
                    sent_since_flush = false;
                    send(&tx, flush_request(flush_id, &sent)).await;
                }
                polled = batches.recv(), if in_flight < WINDOW && !stopping => {
                    let Some(polled) = polled else {
                        bail!("consumer thread ended");
                    };
                    let polled = polled?;
                    seq += 1;
                    in_flight += 1;
                    sent_since_flush = true;
                    self.task.counters.add(polled.count as u64, polled.bytes);
                    self.task.metrics.sink_record_read.inc_by(polled.read as u64);
                    self.task.metrics.sink_record_send.inc_by(polled.count as u64);
                    self.task.metrics.sink_batches_in_flight.set(in_flight as i64);
                    batch_sent_at.push_back(std::time::Instant::now());
                    for ((topic, _), _) in &polled.offsets {
                        self.task.counters.note_topic(topic);
                    }
                    sent.extend(polled.offsets);
                    // Off the per-batch path: at most once a LAG_INTERVAL, and at each flush.
                    if lag_at.elapsed() >= LAG_INTERVAL {
                        self.task.metrics.sink_consumer_lag.set(fetch::lag(consumer, &sent));
                        lag_at = std::time::Instant::now();
                    }
                    let outgoing = match shared.as_mut().and_then(|s| s.write(seq, &polled.records)) {
                        Some(batch) => {
                            in_shared += 1;
                            sink_request::Kind::SharedBatch(batch).into()
                        }
                        None => {
                            in_socket += 1;
                            Outgoing::Batch { seq, records: polled.records }
                        }
                    };
                    let _ = tx.send(outgoing).await;
                }
            }
        }
    }
}

fn flush_request(flush_id: u64, sent: &BTreeMap<(String, i32), i64>) -> sink_request::Kind {
    sink_request::Kind::Flush(proto::FlushRequest {
        flush_id,
        offsets: sent
            .iter()
            .map(|((topic, partition), offset)| proto::TopicPartitionOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            })
            .collect(),
    })
}

/// Whether the connector's flush answer is behind what was sent to it for some partition.
fn holds_back(
    flushed: &[proto::TopicPartitionOffset],
    sent: &BTreeMap<(String, i32), i64>,
) -> bool {
    flushed.iter().any(|tpo| {
        sent.get(&(tpo.topic.clone(), tpo.partition))
            .is_some_and(|&limit| tpo.offset < limit)
    })
}

/// Commits what the connector flushed, never beyond what was sent to it.
async fn commit(
    consumer: &Arc<SinkConsumer>,
    flushed: &[proto::TopicPartitionOffset],
    sent: &BTreeMap<(String, i32), i64>,
    mode: CommitMode,
) -> anyhow::Result<()> {
    let mut list = TopicPartitionList::new();
    for tpo in flushed {
        let Some(&limit) = sent.get(&(tpo.topic.clone(), tpo.partition)) else {
            continue;
        };
        let offset = tpo.offset.min(limit);
        list.add_partition_offset(&tpo.topic, tpo.partition, Offset::Offset(offset))
            .with_context(|| format!("commit {}-{}", tpo.topic, tpo.partition))?;
    }
    if list.count() == 0 {
        return Ok(());
    }
    let consumer = consumer.clone();
    let result = tokio::task::spawn_blocking(move || consumer.commit(&list, mode))
        .await
        .context("offset commit")?;
    if let Err(e) = result {
        // A commit refused after a rebalance only means these records may be seen again.
        tracing::warn!(
            "offset commit failed; records since the last commit may be redelivered: {e}"
        );
    }
    Ok(())
}

/// Messages taken from the fetch queue at a time.
const FETCH_BATCH: usize = 1024;

/// One batch being filled by the poll thread.
struct Filling {
    records: Records,
    offsets: Vec<((String, i32), i64)>,
    bytes: u64,
    size: usize,
    /// Messages read from Kafka into it, skipped ones included.
    read: usize,
}

impl Filling {
    fn full(&self) -> bool {
        self.records.len() >= MAX_BATCH_RECORDS || self.size >= MAX_BATCH_BYTES
    }
}

/// Polls, converts and batches records until `polling` turns false or the receiver is gone.
fn poll_loop(
    consumer: &SinkConsumer,
    pipeline: &Conversion,
    errors: &ErrorReporter,
    runtime: &tokio::runtime::Handle,
    polling: &AtomicBool,
    out: &mpsc::Sender<anyhow::Result<Polled>>,
) {
    let fetch = FetchQueue::new(consumer, &consumer.context().forward_to);
    poll_batches(consumer, &fetch, pipeline, errors, runtime, polling, out);
}

fn poll_batches(
    consumer: &SinkConsumer,
    fetch: &FetchQueue<'_>,
    pipeline: &Conversion,
    errors: &ErrorReporter,
    runtime: &tokio::runtime::Handle,
    polling: &AtomicBool,
    out: &mpsc::Sender<anyhow::Result<Polled>>,
) {
    let passthrough = pipeline.passthrough();
    let mut spare = BytesMut::new();
    let mut fetched = Fetched::with_capacity(FETCH_BATCH);
    let take = |batch: &mut Filling, consumed: &Consumed<'_>| -> Result<(), ()> {
        // A record that cannot be converted is handled by the error policy: the task fails,
        // or the record goes to the dead-letter queue (written before its offset can be
        // committed) and is skipped.
        batch.read += 1;
        let mut written = pipeline.write(consumed, passthrough, &mut batch.records);
        if matches!(&written, Err(f) if f.retriable) {
            // Something a converter needs is away (its schema registry): wait for it as
            // errors.retry.* allow before the error policy decides.
            written = runtime.block_on(errors.retry(|| {
                std::future::ready(
                    pipeline
                        .write(consumed, passthrough, &mut batch.records)
                        .map_err(|f| {
                            let retriable = f.retriable;
                            (f, retriable)
                        }),
                )
            }));
        }
        if let Err(f) = written {
            let failure = Failure {
                stage: f.stage,
                class: &f.class,
                exception: DATA_EXCEPTION,
                error: &f.message,
                retriable: f.retriable,
            };
            if let Err(e) = runtime.block_on(errors.report(&failure, &failed_record(consumed))) {
                let _ = out.blocking_send(Err(e));
                return Err(());
            }
        }
        let len = consumed.value.map_or(0, <[u8]>::len) + consumed.key.map_or(0, <[u8]>::len);
        batch.size += len;
        batch.bytes += len as u64;
        match batch.offsets.last_mut() {
            Some(((t, p), next)) if *p == consumed.partition && t == consumed.topic => {
                *next = consumed.offset + 1;
            }
            _ => batch.offsets.push((
                (consumed.topic.to_string(), consumed.partition),
                consumed.offset + 1,
            )),
        }
        Ok(())
    };
    while polling.load(Ordering::Acquire) {
        let mut batch = Filling {
            records: Records::reusing(&mut spare, BATCH_CAPACITY),
            offsets: Vec::new(),
            bytes: 0,
            size: 0,
            read: 0,
        };
        let mut deadline: Option<Instant> = None;
        while !batch.full() {
            // Rebalances, errors and logs arrive on the consumer's own queue (and a message of
            // a partition not forwarded, which should not happen, is taken all the same).
            while let Some(polled) = consumer.poll(Duration::ZERO) {
                match polled {
                    Err(e) => consumer.context().log.consumer_error(e),
                    Ok(message) => {
                        if with_consumed(&message, |consumed| take(&mut batch, consumed)).is_err() {
                            return;
                        }
                        consumer.context().log.reachable();
                        deadline.get_or_insert_with(|| Instant::now() + BATCH_LINGER);
                    }
                }
            }
            // What the queue holds is taken without a wait once a batch has begun; only when
            // it runs dry does the batch wait out what is left of its linger. An empty batch
            // waits for its first message alone: a wait for a whole batch would hold it.
            let wait = match deadline {
                None => POLL_TIMEOUT,
                Some(d) => d.saturating_duration_since(Instant::now()),
            };
            let room = (MAX_BATCH_RECORDS - batch.records.len()).min(FETCH_BATCH);
            match deadline {
                None => fetch.consume(wait, 1, &mut fetched),
                Some(_) => {
                    fetch.consume(Duration::ZERO, room, &mut fetched);
                    if fetched.is_empty() && !wait.is_zero() {
                        fetch.consume(wait, room, &mut fetched);
                    }
                }
            }
            if fetched.is_empty() {
                if deadline.is_some_and(|d| Instant::now() >= d) || deadline.is_none() {
                    break;
                }
                continue;
            }
            for i in 0..fetched.len() {
                match fetched.with(i, |consumed| take(&mut batch, consumed)) {
                    Ok(Ok(())) => consumer.context().log.reachable(),
                    Ok(Err(())) => return,
                    Err(e) => consumer.context().log.consumer_error(e),
                }
            }
            fetched.clear();
            let now = Instant::now();
            let d = *deadline.get_or_insert(now + BATCH_LINGER);
            if now >= d {
                break;
            }
        }
        // A batch of skipped records only moves offsets: it is sent all the same.
        if batch.offsets.is_empty() {
            // Nothing polled: the buffer waits for the next batch.
            drop(batch.records.freeze_into(&mut spare));
            continue;
        }
        let polled = Polled {
            read: batch.read,
            count: batch.records.len(),
            records: batch.records.freeze_into(&mut spare),
            offsets: batch.offsets,
            bytes: batch.bytes,
        };
        if out.blocking_send(Ok(polled)).is_err() {
            return;
        }
    }
}

impl SinkTaskRunner {
    /// A record the connector could not write: the error policy decides. The original is
    /// read back from Kafka for the dead-letter queue (errant records are rare; the window of
    /// batches is not kept for them).
    async fn record_error(&self, e: proto::RecordError) -> anyhow::Result<()> {
        let error = report_text(&e);
        let failure = Failure::reported(Stage::TaskPut, &self.task.class, &error);
        let mut failed = FailedRecord {
            topic: e.topic.clone(),
            partition: e.partition,
            offset: e.offset,
            ..FailedRecord::default()
        };
        if let (Some(partition), Some(offset), true) = (
            e.partition,
            e.offset,
            self.task.errors.policy().dlq_topic.is_some(),
        ) {
            let config = self.consumer_config.clone();
            let topic = e.topic.clone();
            match tokio::task::spawn_blocking(move || {
                fetch_record(&config, &topic, partition, offset)
            })
            .await
            {
                Ok(Ok(original)) => failed = original,
                Ok(Err(fetch)) => {
                    tracing::warn!(connector = %self.task.connector, "read back {}-{partition}@{offset} for the dead-letter queue: {fetch:#}", e.topic)
                }
                Err(join) => {
                    tracing::warn!(connector = %self.task.connector, "read back a record: {join}")
                }
            }
        }
        self.task.errors.report(&failure, &failed).await
    }
}

/// Reads one record back from Kafka by its coordinates.
fn fetch_record(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> anyhow::Result<FailedRecord> {
    let mut config = config.clone();
    config.set("group.id", "sluice-dead-letter-reader");
    let consumer: BaseConsumer<crate::kafka::log::KafkaLog> = config
        .create_with_context(crate::kafka::log::KafkaLog::new(
            "dead-letter record reader",
        ))
        .context("create a consumer")?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&list)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match consumer.poll(POLL_TIMEOUT) {
            Some(Ok(m)) if m.offset() == offset => return Ok(with_consumed(&m, failed_record)),
            Some(Ok(m)) if m.offset() > offset => bail!("offset {offset} no longer exists"),
            Some(Err(e)) => bail!("{e}"),
            _ => {}
        }
    }
    bail!("not read within 10 s")
}

/// The consumed record as it was, for the dead-letter queue.
fn failed_record(consumed: &Consumed<'_>) -> FailedRecord {
    FailedRecord {
        topic: consumed.topic.to_string(),
        partition: Some(consumed.partition),
        offset: Some(consumed.offset),
        key: consumed.key.map(<[u8]>::to_vec),
        value: consumed.value.map(<[u8]>::to_vec),
        headers: consumed
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
            .collect(),
    }
}

/// A record the pipeline could not process: the stage and class that failed, and why.
struct PipelineFailure {
    stage: Stage,
    class: String,
    message: String,
    retriable: bool,
}

impl std::fmt::Display for PipelineFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.stage.name(),
            self.class,
            self.message
        )
    }
}

/// The sink's side of a conversion: a consumed message into the record the connector gets.
impl Conversion {
    /// How both converters pass bytes through when no transform is configured: then a
    /// record is written to the wire straight from the message.
    fn passthrough(&self) -> Option<(Passthrough, Passthrough)> {
        match (
            self.transforms.is_empty(),
            self.key.passthrough(),
            self.value.passthrough(),
        ) {
            (true, Some(key), Some(value)) => Some((key, value)),
            _ => None,
        }
    }

    /// Writes `message` to `records` as the connector gets it: straight from its bytes when
    /// `passthrough` allows, else converted and transformed (nothing when a transform dropped
    /// it).
    fn write(
        &self,
        message: &Consumed<'_>,
        passthrough: Option<(Passthrough, Passthrough)>,
        records: &mut Records,
    ) -> Result<(), PipelineFailure> {
        if passthrough.is_some_and(|(key, value)| records.push_passthrough(message, key, value)) {
            return Ok(());
        }
        if let Some(record) = self.process(message)? {
            records.push(&record);
        }
        Ok(())
    }

    /// Converts, then transforms; `None` when a transform dropped the record. A failure names
    /// the stage and the class that failed.
    fn process(
        &self,
        message: &Consumed<'_>,
    ) -> Result<Option<proto::SinkRecord>, PipelineFailure> {
        let record =
            convert(message, &self.key, &self.value).map_err(|(stage, converter, e)| {
                PipelineFailure {
                    stage,
                    class: converter.kind().class_name().to_string(),
                    message: e.message,
                    retriable: e.retriable,
                }
            })?;
        if self.transforms.is_empty() {
            return Ok(Some(record));
        }
        let (partition, offset) = (record.partition, record.offset);
        let out = self
            .transforms
            .apply(Record {
                topic: record.topic,
                kafka_partition: Some(partition),
                offset: Some(offset),
                key: record.key,
                value: record.value,
                timestamp_ms: record.timestamp_ms,
                headers: record.headers,
            })
            .map_err(|f| PipelineFailure {
                stage: Stage::Transformation,
                class: f.class.clone(),
                message: f.to_string(),
                retriable: false,
            })?;
        // The Kafka coordinates stay the consumed record's: they are what offsets commit.
        Ok(out.map(|r| proto::SinkRecord {
            topic: r.topic,
            partition,
            offset,
            key: r.key,
            value: r.value,
            headers: r.headers,
            timestamp_ms: r.timestamp_ms,
        }))
    }
}

/// Converts a consumed record; a failure names the stage and the converter.
fn convert<'c>(
    message: &Consumed<'_>,
    key: &'c Converter,
    value: &'c Converter,
) -> Result<proto::SinkRecord, (Stage, &'c Converter, ConversionError)> {
    let topic = message.topic;
    let key = key
        .to_connect(topic, message.key)
        .map_err(|e| (Stage::KeyConverter, key, e))?;
    let value = value
        .to_connect(topic, message.value)
        .map_err(|e| (Stage::ValueConverter, value, e))?;
    let headers = message
        .headers
        .iter()
        .map(|(key, value)| proto::Header {
            key: key.to_string(),
            value: value.map(|v| proto::Data {
                kind: Some(data::Kind::Raw(v.to_vec())),
            }),
        })
        .collect();
    Ok(proto::SinkRecord {
        topic: topic.to_string(),
        partition: message.partition,
        offset: message.offset,
        key: Some(key),
        value: Some(value),
        headers,
        timestamp_ms: message.timestamp_ms,
    })
}

/// `f` of a message polled from the consumer's own queue, as the wire needs it.
fn with_consumed<R>(
    message: &rdkafka::message::BorrowedMessage<'_>,
    f: impl FnOnce(&Consumed<'_>) -> R,
) -> R {
    // In order; no allocation when there are none.
    let headers: Vec<(&str, Option<&[u8]>)> = message
        .headers()
        .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default();
    f(&Consumed {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        value: message.payload(),
        headers: &headers,
        timestamp_ms: message.timestamp().to_millis(),
    })
}
