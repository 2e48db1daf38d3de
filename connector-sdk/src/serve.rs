//! The server side of the connector protocol: one gRPC service on a Unix socket that drives the
//! plugin's connectors and tasks.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use futures::{Stream, StreamExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::codegen::http;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::batch::{SinkCodec, SinkFrame};
use crate::proto::connector_server::{Connector as ConnectorRpc, ConnectorServer};
use crate::proto::{
    self, sink_request, sink_response, source_request, source_response, H2_CONNECTION_WINDOW,
    H2_MAX_FRAME, H2_STREAM_WINDOW, MAX_MESSAGE_BYTES,
};
use crate::shared::SharedMemory;
use crate::source::{SourceCodec, SourceOut};
use crate::task::{SinkTaskContext, SourceTaskContext};
use crate::{Config, ConnectorEntry, Plugin, SinkBatch, SourceBatchWriter, TaskError};

pub use crate::proto::{ENV_PROTOCOL_VERSIONS, ENV_SOCKET};

/// Largest number of records the SDK asks a source task for in one poll.
const MAX_POLL_RECORDS: u64 = 4096;
/// Features this SDK implements beyond the v1 baseline.
const FEATURES: &[&str] = &[proto::FEATURE_SINK_SHARED_MEMORY];

/// Sets up logging to stderr and a runtime, serves `plugin`, and exits the process.
pub fn main(plugin: Plugin) -> ! {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    crate::tune_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start runtime: {e}");
            std::process::exit(1);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Spans go where the worker's go, when it exports them.
    let (traces, exporter) = match std::env::var(sluice_telemetry::ENV_OTLP_ENDPOINT) {
        Ok(endpoint) => {
            let _runtime = runtime.enter();
            let attributes = [("sluice.plugin", plugin.name.clone())];
            match sluice_telemetry::otlp_layer(&endpoint, "sluice-connector", attributes) {
                Ok((layer, exporter)) => (Some(layer), Some(exporter)),
                Err(e) => {
                    eprintln!("warning: no traces: {e:#}");
                    (None, None)
                }
            }
        }
        Err(_) => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(traces)
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .try_init();
    let result = runtime.block_on(serve(plugin));
    // What is left of the spans goes before the exit.
    drop(exporter);
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Serves `plugin` on the socket named by [`ENV_SOCKET`] until the worker calls `Shutdown` or
/// goes away (its end of our stdin closes).
pub async fn serve(plugin: Plugin) -> anyhow::Result<()> {
    let socket = std::env::var(ENV_SOCKET).with_context(|| {
        format!("{ENV_SOCKET} is not set: this program is a Sluice connector, started by a worker")
    })?;
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("bind connector socket {socket}"))?;
    exit_with_parent();

    let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
    let plugin = Arc::new(plugin);
    let service = Service {
        plugin: plugin.clone(),
        shutdown: shutdown_tx,
    };
    let server = Routes {
        service: ConnectorServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        plugin,
    };
    tonic::transport::Server::builder()
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_frame_size(Some(H2_MAX_FRAME))
        // A span per call, in the trace of the worker's call.
        .layer(sluice_telemetry::ServerSpans::new(|path| {
            path.ends_with("/Heartbeat")
        }))
        .add_service(server)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            let _ = shutdown_rx.wait_for(|stop| *stop).await;
        })
        .await
        .context("serve connector protocol")?;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// The worker holds the write end of our stdin; when it closes, the worker is gone (even after
/// SIGKILL), and a connector must not outlive its worker.
fn exit_with_parent() {
    let spawned = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(|| {
            let mut sink = std::io::sink();
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut sink);
            tracing::debug!("worker went away (stdin closed); exiting");
            sluice_telemetry::flush();
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch for the worker's exit: {e}");
    }
}

struct Service {
    plugin: Arc<Plugin>,
    shutdown: watch::Sender<bool>,
}

impl Service {
    fn entry(&self, class: &str) -> Result<&ConnectorEntry, Status> {
        entry(&self.plugin, class)
    }
}

fn entry<'p>(plugin: &'p Plugin, class: &str) -> Result<&'p ConnectorEntry, Status> {
    plugin.find(class).ok_or_else(|| {
        Status::not_found(format!(
            "plugin {} has no connector class {class:?}",
            plugin.name
        ))
    })
}

const SINK_PATH: &str = "/sluice.connector.v1.Connector/Sink";
const SOURCE_PATH: &str = "/sluice.connector.v1.Connector/Source";

/// The connector service, with its Sink and Source methods answered by [`SinkRpc`] and
/// [`SourceRpc`]: a sink stream's batches are read by the SDK's own decoder (a [`SinkBatch`]
/// keeps the bytes it arrived in) and a source stream's are sent as the task wrote them,
/// which the generated service, one prost type per message, cannot do.
#[derive(Clone)]
struct Routes {
    service: ConnectorServer<Service>,
    plugin: Arc<Plugin>,
}

impl tonic::server::NamedService for Routes {
    const NAME: &'static str = <ConnectorServer<Service> as tonic::server::NamedService>::NAME;
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Routes {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let plugin = self.plugin.clone();
        match request.uri().path() {
            SINK_PATH => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(SinkCodec).apply_max_message_size_config(
                    Some(MAX_MESSAGE_BYTES),
                    Some(MAX_MESSAGE_BYTES),
                );
                Ok(grpc.streaming(SinkRpc { plugin }, request).await)
            }),
            SOURCE_PATH => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(SourceCodec).apply_max_message_size_config(
                    Some(MAX_MESSAGE_BYTES),
                    Some(MAX_MESSAGE_BYTES),
                );
                Ok(grpc.streaming(SourceRpc { plugin }, request).await)
            }),
            _ => self.service.call(request),
        }
    }
}

/// The Sink method: opens the task the stream's first message names and drives it.
struct SinkRpc {
    plugin: Arc<Plugin>,
}

impl tonic::server::StreamingService<SinkFrame> for SinkRpc {
    type Response = proto::SinkResponse;
    type ResponseStream = BoxStream<proto::SinkResponse>;
    type Future = tonic::codegen::BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<SinkFrame>>) -> Self::Future {
        let plugin = self.plugin.clone();
        Box::pin(async move {
            let mut incoming = request.into_inner();
            let open = match incoming.message().await? {
                Some(SinkFrame::Other(proto::SinkRequest {
                    kind: Some(sink_request::Kind::Open(open)),
                })) => open,
                _ => {
                    return Err(Status::invalid_argument(
                        "a sink stream must start with open",
                    ))
                }
            };
            let ConnectorEntry::Sink(connector) = entry(&plugin, &open.connector_class)? else {
                return Err(Status::invalid_argument(format!(
                    "{} is not a sink connector",
                    open.connector_class
                )));
            };
            let task = connector.task();
            let (tx, rx) = mpsc::channel(8);
            let starting = tracing::info_span!(
                "start sink task",
                connector = %open.connector_name,
                task = open.task_id
            );
            tokio::spawn(run_sink(task, open, incoming, tx, starting));
            let stream: Self::ResponseStream = Box::pin(ReceiverStream::new(rx));
            Ok(Response::new(stream))
        })
    }
}

/// The Source method: opens the task the stream's first message names and drives it.
struct SourceRpc {
    plugin: Arc<Plugin>,
}

impl tonic::server::StreamingService<proto::SourceRequest> for SourceRpc {
    type Response = SourceOut;
    type ResponseStream = BoxStream<SourceOut>;
    type Future = tonic::codegen::BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<proto::SourceRequest>>) -> Self::Future {
        let plugin = self.plugin.clone();
        Box::pin(async move {
            let mut incoming = request.into_inner();
            let open = match incoming.message().await? {
                Some(proto::SourceRequest {
                    kind: Some(source_request::Kind::Open(open)),
                }) => open,
                _ => {
                    return Err(Status::invalid_argument(
                        "a source stream must start with open",
                    ))
                }
            };
            let ConnectorEntry::Source(connector) = entry(&plugin, &open.connector_class)? else {
                return Err(Status::invalid_argument(format!(
                    "{} is not a source connector",
                    open.connector_class
                )));
            };
            let task = connector.task();
            let (tx, rx) = mpsc::channel(8);
            let starting = tracing::info_span!(
                "start source task",
                connector = %open.connector_name,
                task = open.task_id
            );
            tokio::spawn(run_source(task, open, incoming, tx, starting));
            let stream: Self::ResponseStream = Box::pin(ReceiverStream::new(rx));
            Ok(Response::new(stream))
        })
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ConnectorRpc for Service {
    async fn handshake(
        &self,
        request: Request<proto::HandshakeRequest>,
    ) -> Result<Response<proto::HandshakeResponse>, Status> {
        let request = request.into_inner();
        let version = proto::PROTOCOL_VERSIONS
            .iter()
            .filter(|v| request.protocol_versions.contains(v))
            .max()
            .copied()
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "no common protocol version: worker speaks {:?}, connector speaks {:?}",
                    request.protocol_versions,
                    proto::PROTOCOL_VERSIONS
                ))
            })?;
        let features = request
            .features
            .into_iter()
            .filter(|f| FEATURES.contains(&f.as_str()))
            .collect();
        Ok(Response::new(proto::HandshakeResponse {
            protocol_version: version,
            features,
            plugin: Some(self.plugin.info()),
        }))
    }

    async fn describe(
        &self,
        request: Request<proto::DescribeRequest>,
    ) -> Result<Response<proto::DescribeResponse>, Status> {
        let entry = self.entry(&request.get_ref().connector_class)?;
        Ok(Response::new(proto::DescribeResponse {
            configs: entry.info().config_defs(),
        }))
    }

    async fn validate(
        &self,
        request: Request<proto::ValidateRequest>,
    ) -> Result<Response<proto::ValidateResponse>, Status> {
        let request = request.into_inner();
        let entry = self.entry(&request.connector_class)?;
        let config: Config = request.config.into_iter().collect();
        Ok(Response::new(proto::ValidateResponse {
            errors: entry.info().validate(&config),
        }))
    }

    async fn plan(
        &self,
        request: Request<proto::PlanRequest>,
    ) -> Result<Response<proto::PlanResponse>, Status> {
        let request = request.into_inner();
        let entry = self.entry(&request.connector_class)?;
        let config: Config = request.config.into_iter().collect();
        let max_tasks = request.max_tasks.max(1) as usize;
        let mut tasks = entry
            .info()
            .plan(&config, max_tasks)
            .map_err(|e| Status::invalid_argument(e.message))?;
        tasks.truncate(max_tasks);
        Ok(Response::new(proto::PlanResponse {
            tasks: tasks
                .into_iter()
                .map(|c| proto::TaskConfig {
                    config: c.into_map().into_iter().collect(),
                })
                .collect(),
        }))
    }

    type MonitorStream = BoxStream<proto::MonitorEvent>;

    async fn monitor(
        &self,
        request: Request<proto::MonitorRequest>,
    ) -> Result<Response<Self::MonitorStream>, Status> {
        let request = request.into_inner();
        let entry = self.entry(&request.connector_class)?;
        let config: Config = request.config.into_iter().collect();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        entry.info().monitor(&config, crate::Reconfigure { tx });
        let events = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|reason| {
            Ok(proto::MonitorEvent {
                kind: Some(proto::monitor_event::Kind::Reconfigure(
                    proto::Reconfigure { reason },
                )),
            })
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn heartbeat(
        &self,
        request: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatResponse>, Status> {
        Ok(Response::new(proto::HeartbeatResponse {
            nonce: request.get_ref().nonce,
        }))
    }

    type SourceStream = BoxStream<proto::SourceResponse>;

    async fn source(
        &self,
        _request: Request<Streaming<proto::SourceRequest>>,
    ) -> Result<Response<Self::SourceStream>, Status> {
        // `Routes` answers the Source method before this service sees it.
        Err(Status::internal("source streams are served by SourceRpc"))
    }

    type SinkStream = BoxStream<proto::SinkResponse>;

    async fn sink(
        &self,
        _request: Request<Streaming<proto::SinkRequest>>,
    ) -> Result<Response<Self::SinkStream>, Status> {
        // `Routes` answers the Sink method before this service sees it.
        Err(Status::internal("sink streams are served by SinkRpc"))
    }

    async fn shutdown(
        &self,
        _request: Request<proto::ShutdownRequest>,
    ) -> Result<Response<proto::ShutdownResponse>, Status> {
        let _ = self.shutdown.send(true);
        // Streams still open would hold the server; the worker has already closed them, and
        // a hard deadline keeps a stuck task from keeping the process alive.
        tokio::spawn(async {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            tracing::warn!("shutdown deadline passed; exiting");
            std::process::exit(0);
        });
        Ok(Response::new(proto::ShutdownResponse {}))
    }
}

/// Flow-control state of one source stream, shared between the request reader and the driver.
#[derive(Default)]
struct SourceFlow {
    records: AtomicU64,
    bytes: AtomicI64,
    acked: AtomicU64,
    stop: AtomicBool,
    closed: AtomicBool,
    wake: Notify,
    commits: crate::CommitSignal,
}

impl SourceFlow {
    fn can_send(&self) -> bool {
        self.records.load(Ordering::Acquire) > 0 && self.bytes.load(Ordering::Acquire) > 0
    }
}

async fn read_source_requests(
    mut incoming: Streaming<proto::SourceRequest>,
    flow: Arc<SourceFlow>,
) {
    loop {
        match incoming.message().await {
            Ok(Some(request)) => match request.kind {
                Some(source_request::Kind::Credit(credit)) => {
                    flow.records.fetch_add(credit.records, Ordering::AcqRel);
                    let bytes = i64::try_from(credit.bytes).unwrap_or(i64::MAX);
                    flow.bytes.fetch_add(bytes, Ordering::AcqRel);
                }
                Some(source_request::Kind::Ack(ack)) => {
                    flow.acked.fetch_max(ack.batch_seq, Ordering::AcqRel);
                    flow.commits.fire();
                }
                Some(source_request::Kind::Stop(_)) => flow.stop.store(true, Ordering::Release),
                Some(source_request::Kind::Open(_)) | None => {
                    tracing::warn!("ignoring unexpected message on a source stream");
                }
            },
            Ok(None) | Err(_) => {
                flow.closed.store(true, Ordering::Release);
                flow.stop.store(true, Ordering::Release);
                flow.wake.notify_one();
                return;
            }
        }
        flow.wake.notify_one();
    }
}

type Sender<T> = mpsc::Sender<Result<T, Status>>;

async fn send_source(tx: &Sender<SourceOut>, kind: source_response::Kind) -> bool {
    tx.send(Ok(SourceOut::Message(Box::new(proto::SourceResponse {
        kind: Some(kind),
    }))))
    .await
    .is_ok()
}

async fn run_source(
    mut task: Box<dyn crate::SourceTask>,
    open: proto::SourceOpen,
    incoming: Streaming<proto::SourceRequest>,
    tx: Sender<SourceOut>,
    starting: tracing::Span,
) {
    let flow = Arc::new(SourceFlow::default());
    let reader = tokio::spawn(read_source_requests(incoming, flow.clone()));
    let (errors, mut errant) = crate::ErrantRecordReporter::channel();
    let ctx = SourceTaskContext {
        errors,
        commits: flow.commits.clone(),
        connector_name: open.connector_name,
        task_id: open.task_id,
        config: open.config.into_iter().collect(),
        positions: open
            .positions
            .into_iter()
            .map(|p| (p.partition, p.offset))
            .collect(),
    };
    let result = match task.start(ctx).instrument(starting).await {
        Ok(()) => {
            if send_source(&tx, source_response::Kind::Opened(proto::SourceOpened {})).await {
                drive_source(task.as_mut(), &flow, &tx, &mut errant).await
            } else {
                Ok(())
            }
        }
        Err(e) => Err(e),
    };
    let result = match result {
        Ok(()) => task.stop().await,
        Err(e) => {
            let _ = task.stop().await;
            Err(e)
        }
    };
    if let Err(e) = result {
        tracing::error!("source task failed: {e}");
        send_source(&tx, source_response::Kind::Error(e.into_proto())).await;
    }
    reader.abort();
}

/// Positions of one sent batch, awaiting the worker's acknowledgement.
struct PendingBatch {
    seq: u64,
    positions: Vec<(Arc<str>, String)>,
}

async fn drive_source(
    task: &mut dyn crate::SourceTask,
    flow: &SourceFlow,
    tx: &Sender<SourceOut>,
    errant: &mut tokio::sync::mpsc::UnboundedReceiver<proto::RecordError>,
) -> Result<(), TaskError> {
    let mut seq = 0u64;
    let mut pending: VecDeque<PendingBatch> = VecDeque::new();
    let mut writer = SourceBatchWriter::new(0);
    while !flow.stop.load(Ordering::Acquire) {
        commit_acked(task, flow, &mut pending).await?;
        if !flow.can_send() {
            flow.wake.notified().await;
            continue;
        }
        let max = flow.records.load(Ordering::Acquire).min(MAX_POLL_RECORDS) as usize;
        task.poll_into(&mut writer, max).await?;
        // Bad records the poll reported go first: the worker handles them before the batch.
        while let Ok(e) = errant.try_recv() {
            if !send_source(tx, source_response::Kind::RecordError(e)).await {
                return Ok(());
            }
        }
        if writer.is_empty() {
            continue;
        }
        if writer.len() > max {
            return Err(TaskError::fatal(format!(
                "poll returned {} records when asked for at most {max}",
                writer.len()
            )));
        }
        seq += 1;
        let batch = writer.finish(seq);
        flow.records
            .fetch_sub(batch.records as u64, Ordering::AcqRel);
        flow.bytes.fetch_sub(batch.bytes as i64, Ordering::AcqRel);
        pending.push_back(PendingBatch {
            seq,
            positions: batch.positions,
        });
        if tx.send(Ok(SourceOut::Batch(batch.frame))).await.is_err() {
            return Ok(());
        }
    }
    if flow.closed.load(Ordering::Acquire) {
        return Ok(());
    }
    // Asked to stop: everything polled is sent; report the last batch and wait for its ack so
    // the task hears of every commit before it stops.
    if !send_source(
        tx,
        source_response::Kind::Stopped(proto::SourceStopped {
            last_batch_seq: seq,
        }),
    )
    .await
    {
        return Ok(());
    }
    while flow.acked.load(Ordering::Acquire) < seq && !flow.closed.load(Ordering::Acquire) {
        flow.wake.notified().await;
    }
    commit_acked(task, flow, &mut pending).await
}

async fn commit_acked(
    task: &mut dyn crate::SourceTask,
    flow: &SourceFlow,
    pending: &mut VecDeque<PendingBatch>,
) -> Result<(), TaskError> {
    let acked = flow.acked.load(Ordering::Acquire);
    if pending.front().is_none_or(|b| b.seq > acked) {
        return Ok(());
    }
    let mut latest: HashMap<Arc<str>, String> = HashMap::new();
    while let Some(batch) = pending.front() {
        if batch.seq > acked {
            break;
        }
        if let Some(batch) = pending.pop_front() {
            latest.extend(batch.positions);
        }
    }
    if latest.is_empty() {
        return Ok(());
    }
    let positions: Vec<_> = latest.into_iter().collect();
    task.commit(&positions).await
}

async fn send_sink(tx: &Sender<proto::SinkResponse>, kind: sink_response::Kind) -> bool {
    tx.send(Ok(proto::SinkResponse { kind: Some(kind) }))
        .await
        .is_ok()
}

async fn run_sink(
    mut task: Box<dyn crate::SinkTask>,
    open: proto::SinkOpen,
    mut incoming: Streaming<SinkFrame>,
    tx: Sender<proto::SinkResponse>,
    starting: tracing::Span,
) {
    let (released_tx, mut released) = mpsc::unbounded_channel();
    // Without it the worker sends every batch through the socket, as to any connector.
    let shared = open.shared_memory.as_ref().and_then(|memory| {
        SharedMemory::map(memory, released_tx)
            .inspect_err(|e| tracing::warn!("sink batches come through the socket: {e:#}"))
            .ok()
    });
    let (errors, mut errant) = crate::ErrantRecordReporter::channel();
    let ctx = SinkTaskContext {
        errors,
        connector_name: open.connector_name,
        task_id: open.task_id,
        config: open.config.into_iter().collect(),
    };
    let mut result = task.start(ctx).instrument(starting).await;
    let opened = proto::SinkOpened {
        shared_memory: shared.is_some(),
    };
    if result.is_ok() && send_sink(&tx, sink_response::Kind::Opened(opened)).await {
        let mut stream = SinkStream {
            incoming: &mut incoming,
            tx: &tx,
            errant: &mut errant,
            shared: shared.as_ref(),
            released: &mut released,
        };
        result = stream.drive(task.as_mut()).await;
    }
    let stopped = task.stop().await;
    match result.and(stopped) {
        Ok(()) => {
            // What the task let go of as it stopped, before saying it stopped.
            send_released(&tx, &mut released).await;
            send_sink(&tx, sink_response::Kind::Stopped(proto::SinkStopped {})).await;
        }
        Err(e) => {
            tracing::error!("sink task failed: {e}");
            send_sink(&tx, sink_response::Kind::Error(e.into_proto())).await;
        }
    }
}

/// A sink task's stream, as [`run_sink`] drives it once the task started.
struct SinkStream<'a> {
    incoming: &'a mut Streaming<SinkFrame>,
    tx: &'a Sender<proto::SinkResponse>,
    errant: &'a mut tokio::sync::mpsc::UnboundedReceiver<proto::RecordError>,
    shared: Option<&'a SharedMemory>,
    /// Shared batches the task let go of.
    released: &'a mut tokio::sync::mpsc::UnboundedReceiver<u64>,
}

impl SinkStream<'_> {
    async fn drive(&mut self, task: &mut dyn crate::SinkTask) -> Result<(), TaskError> {
        while let Some(frame) = self.incoming.next().await {
            let reply = match frame {
                Err(_) => return Ok(()),
                Ok(SinkFrame::Batch(batch)) => put_batch(task, batch).await?,
                Ok(SinkFrame::Other(request)) => match request.kind {
                    // Never here (a batch arrives as a SinkBatch), but put all the same.
                    Some(sink_request::Kind::Batch(batch)) => {
                        put_batch(task, SinkBatch::from_records(batch.seq, &batch.records)).await?
                    }
                    Some(sink_request::Kind::SharedBatch(shared)) => {
                        let Some(memory) = self.shared else {
                            return Err(TaskError::fatal(format!(
                                "shared sink batch {} arrived, but no shared memory is mapped",
                                shared.seq
                            )));
                        };
                        put_batch(task, memory.batch(&shared)?).await?
                    }
                    Some(sink_request::Kind::Flush(flush)) => {
                        let offsets = task.flush(flush.offsets).await?;
                        sink_response::Kind::Flushed(proto::FlushResponse {
                            flush_id: flush.flush_id,
                            offsets,
                        })
                    }
                    Some(sink_request::Kind::Assigned(assigned)) => {
                        let offsets = task.open(assigned.partitions).await?;
                        sink_response::Kind::Positions(proto::PartitionPositions {
                            id: assigned.id,
                            offsets,
                        })
                    }
                    Some(sink_request::Kind::Stop(_)) => return Ok(()),
                    Some(sink_request::Kind::Open(_)) | None => {
                        tracing::warn!("ignoring unexpected message on a sink stream");
                        continue;
                    }
                },
            };
            // Bad records reported by the call go before its reply: before the batch's ack
            // (put) or the flush's answer (a sink that writes at flush time), so before any
            // commit past them.
            while let Ok(e) = self.errant.try_recv() {
                if !send_sink(self.tx, sink_response::Kind::RecordError(e)).await {
                    return Ok(());
                }
            }
            if !send_sink(self.tx, reply).await {
                return Ok(());
            }
            // Batches let go of by now (a task that keeps one releases it with a later reply).
            if !send_released(self.tx, self.released).await {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Tells the worker which shared batches were let go of since last told; `false` when the
/// stream is gone.
async fn send_released(
    tx: &Sender<proto::SinkResponse>,
    released: &mut tokio::sync::mpsc::UnboundedReceiver<u64>,
) -> bool {
    let mut seqs = Vec::new();
    while let Ok(seq) = released.try_recv() {
        seqs.push(seq);
    }
    seqs.is_empty()
        || send_sink(
            tx,
            sink_response::Kind::Released(proto::SharedReleased { seqs }),
        )
        .await
}

/// The batch put; its acknowledgement.
async fn put_batch(
    task: &mut dyn crate::SinkTask,
    batch: SinkBatch,
) -> Result<sink_response::Kind, TaskError> {
    let seq = batch.seq();
    task.put_batch(batch).await?;
    Ok(sink_response::Kind::Ack(proto::SinkBatchAck { seq }))
}
