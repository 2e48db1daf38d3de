//! Distributed mode: `sluice worker`. The worker joins a controller, receives its complete
//! assignment as a stream and runs exactly that: the planning instance of some connectors
//! (validate, plan, submit the task configs) and some tasks, each task in its own connector
//! process. Statuses go back to the controller as they change. The worker keeps running what
//! it has while the controller is unreachable, and rejoins when it returns.
//!
//! Source offsets live in a Kafka topic (`offset.storage.topic`), so a task that moves resumes
//! where it stopped on its previous worker; sink offsets are the consumer group's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use sluice_proto::api::v1 as api;
use sluice_proto::cluster::v1::{self as wire, worker_control_client::WorkerControlClient};
use sluice_proto::connector::v1::{self as proto, ConnectorType};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint};

use crate::host::plugins::PluginRegistry;
use crate::host::process::{ConnectorProcess, PluginCommand};
use crate::lease::Lease;
use crate::mode::admin;
use crate::mode::standalone::ConfigErrors;
use crate::restart::{Fatal, Next, Restarts};
use crate::runner::{
    consumer_config, plan_tasks, producer_config, run_process, ConnectorSpec, WorkerContext,
};
use crate::settings::WorkerSettings;
use crate::task::metrics::Counters;
use crate::task::offsets::{OffsetStore, DEFAULT_OFFSET_TOPIC};
use crate::task::Transactions;
use sluice_model::{ConfigFile, ConnectorConfig, TransactionBoundary, UnitKey};

const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
const REJOIN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a running task's newly used topics are looked for.
const TOPICS_INTERVAL: Duration = Duration::from_millis(500);
/// Status changes within this window go to the controller in one report.
const STATUS_DEBOUNCE: Duration = Duration::from_millis(50);

/// Applies logger levels (logger → level, "root" for the default) to this process's logging.
pub type LogControl = Arc<dyn Fn(&BTreeMap<String, String>) -> Result<(), String> + Send + Sync>;

pub struct WorkerOptions {
    /// The controller's URL, e.g. `http://127.0.0.1:8083`.
    pub controller: String,
    pub worker_id: String,
    /// A Kafka Connect worker file; `None` for defaults.
    pub worker_file: Option<PathBuf>,
    /// Overrides `bootstrap.servers`.
    pub kafka: Option<String>,
    /// Tasks this worker wants at most; 0 for no limit.
    pub capacity: u32,
    pub builtin_plugins: Vec<PluginCommand>,
    /// Changes this process's log levels (cluster-scoped levels from the controller).
    pub log_control: Option<LogControl>,
    pub initial_levels: BTreeMap<String, String>,
    /// How long a graceful stop may take once asked for ([`crate::stop::bounded`]).
    pub shutdown_timeout: Duration,
}

/// What every unit of this worker shares.
struct Shared {
    worker_id: String,
    client: WorkerControlClient<Channel>,
    settings: WorkerSettings,
    registry: PluginRegistry,
    ctx: WorkerContext,
    statuses: mpsc::UnboundedSender<StatusUpdate>,
    log_control: Option<LogControl>,
    levels: std::sync::Mutex<BTreeMap<String, String>>,
    /// The controller's cluster id, from the first assignment.
    cluster_id: std::sync::OnceLock<String>,
    lease: Arc<Lease>,
    /// Every task spawned beside the units (answers to the controller, units draining away,
    /// the offsets topic's creation): shutdown waits for them all.
    tasks: TaskTracker,
}

/// A unit's state, trace and topics used.
type UnitState = (api::State, String, Vec<String>);

/// A unit's new state, or `None` when the unit stopped for good here (released).
struct StatusUpdate {
    key: UnitKey,
    state: Option<UnitState>,
}

impl Shared {
    fn report(&self, key: &UnitKey, state: api::State, trace: impl Into<String>) {
        self.report_with_topics(key, state, trace, Vec::new());
    }

    fn report_with_topics(
        &self,
        key: &UnitKey,
        state: api::State,
        trace: impl Into<String>,
        topics: Vec<String>,
    ) {
        let _ = self.statuses.send(StatusUpdate {
            key: key.clone(),
            state: Some((state, trace.into(), topics)),
        });
    }

    /// Exactly-once settings of a source connector on this worker, checked against what the
    /// connector declares.
    fn transactions(
        &self,
        settings: &ConnectorConfig,
        kind: ConnectorType,
        class: &proto::ConnectorClass,
    ) -> anyhow::Result<Option<Transactions>> {
        if kind != ConnectorType::Source {
            return Ok(None);
        }
        if !self.settings.exactly_once_source {
            if settings.exactly_once_required {
                return Err(Fatal(format!(
                    "exactly.once.support=required, but worker {} runs with exactly.once.source.support disabled",
                    self.worker_id
                ))
                .into());
            }
            return Ok(None);
        }
        if settings.exactly_once_required
            && class.exactly_once() != proto::ExactlyOnceSupport::Supported
        {
            return Err(Fatal(format!(
                "exactly.once.support=required, but connector {} does not declare exactly-once support",
                class.class_name
            ))
            .into());
        }
        if settings.transaction_boundary == TransactionBoundary::Connector
            && !class.defines_transaction_boundaries
        {
            return Err(Fatal(format!(
                "transaction.boundary=connector, but connector {} does not define transaction boundaries",
                class.class_name
            ))
            .into());
        }
        let cluster = self.cluster_id.get().map_or("sluice", String::as_str);
        Ok(Some(Transactions {
            id_prefix: format!("{cluster}-{}", settings.name),
            boundary: settings.transaction_boundary,
            interval: settings
                .transaction_interval
                .unwrap_or(self.settings.offset_flush_interval),
            lease: self.lease.clone(),
        }))
    }

    /// Resolves a connector config from the controller into what the runner needs.
    fn spec(&self, connector: &wire::ConnectorConfig) -> anyhow::Result<ConnectorSpec> {
        let mut values: BTreeMap<String, String> = connector.config.clone().into_iter().collect();
        values
            .entry("name".into())
            .or_insert_with(|| connector.name.clone());
        let file = ConfigFile::from_values(format!("connector {}", connector.name), values);
        let settings = ConnectorConfig::from_file(&file)?;
        let (plugin, class) = self.registry.resolve(&settings.class).ok_or_else(|| {
            anyhow!(
                "no connector plugin named {} on worker {}",
                settings.class,
                self.worker_id
            )
        })?;
        let kind = ConnectorType::try_from(class.r#type).unwrap_or(ConnectorType::Unspecified);
        if kind == ConnectorType::Sink {
            let issues = settings.sink_issues();
            if !issues.is_empty() {
                return Err(file.first_issue(issues).into());
            }
        }
        Ok(ConnectorSpec {
            name: settings.name.clone(),
            class: class.class_name.clone(),
            kind,
            command: plugin.command.clone(),
            tasks_max: settings.tasks_max,
            key_converter: self.settings.converter("key", &file, &settings.values)?,
            value_converter: self.settings.converter("value", &file, &settings.values)?,
            transforms: settings.transforms.clone(),
            topics: settings.topics.clone(),
            topics_regex: settings.topics_regex.clone(),
            restart: settings.restart.clone(),
            errors: settings.errors.clone(),
            transactions: self.transactions(&settings, kind, class)?,
            config: plugin.complete_config(&class.class_name, &settings.values),
        })
    }
}

/// Runs the worker until `shutdown`, then stops its tasks (they drain and commit) and returns.
pub async fn run(options: WorkerOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let one = |e| ConfigErrors(vec![e]);
    let file = match &options.worker_file {
        Some(path) => ConfigFile::load(path).map_err(one)?,
        None => ConfigFile::from_values("(worker flags)", BTreeMap::new()),
    };
    let mut settings = WorkerSettings::from_file(&file).map_err(one)?;
    if let Some(kafka) = &options.kafka {
        settings.bootstrap_servers = Some(kafka.clone());
    }
    let bootstrap = settings.bootstrap_servers.clone().ok_or_else(|| {
        anyhow!("no Kafka to use: give --kafka HOST:PORT or bootstrap.servers in the worker file")
    })?;
    let endpoint = Endpoint::from_shared(options.controller.clone())
        .with_context(|| format!("--controller {}: not a URL", options.controller))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    let client = WorkerControlClient::new(endpoint.connect_lazy());

    let registry = PluginRegistry::discover(
        options.builtin_plugins,
        &settings.plugin_path,
        settings.plugin_discovery,
    )
    .await?;
    let plugins = plugin_classes(&registry);
    let producer_config = producer_config(&bootstrap, settings.client_overrides("producer."));
    crate::kafka::log::health().probe_with(producer_config.clone());
    let consumer_config = consumer_config(&bootstrap, settings.client_overrides("consumer."));
    let offsets_topic = settings
        .values
        .get("offset.storage.topic")
        .cloned()
        .unwrap_or_else(|| DEFAULT_OFFSET_TOPIC.to_string());
    let number = |key: &str, default: i32| -> anyhow::Result<i32> {
        match settings.values.get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|n: &i32| *n > 0 || (*n == -1 && key.ends_with("factor")))
                .ok_or_else(|| anyhow!("{key}: invalid value {v:?}: expected a positive integer")),
        }
    };
    // Kafka Connect's defaults: 25 partitions; the broker's default replication.
    let partitions = number("offset.storage.partitions", 25)?;
    let replication = number("offset.storage.replication.factor", -1)?;
    let mut admin_config = rdkafka::ClientConfig::new();
    admin_config.set("bootstrap.servers", &bootstrap);
    for (k, v) in settings.client_overrides("admin.") {
        admin_config.set(k, v);
    }
    let background = CancellationToken::new();
    let tasks = TaskTracker::new();
    // In the background: a broker that never answers CreateTopics (the embedded one) must not
    // hold the worker back; until the topic exists, offset flushes fail and are retried.
    tasks.spawn({
        let topic = offsets_topic.clone();
        let stop = background.clone();
        async move {
            let create = crate::task::offsets::ensure_offsets_topic(
                &admin_config,
                &topic,
                partitions,
                replication,
            );
            tokio::select! {
                _ = create => {}
                _ = stop.cancelled() => {}
            }
        }
    });
    let offsets = Arc::new(OffsetStore::kafka(
        &offsets_topic,
        &producer_config,
        &consumer_config,
    )?);
    let (statuses, status_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        cluster_id: std::sync::OnceLock::new(),
        lease: Arc::default(),
        worker_id: options.worker_id.clone(),
        client,
        ctx: WorkerContext {
            producer_config,
            consumer_config,
            offsets: offsets.clone(),
            flush_interval: settings.offset_flush_interval,
            task_shutdown_timeout: settings.task_shutdown_timeout,
            stop_failures: Default::default(),
        },
        settings,
        registry,
        statuses,
        log_control: options.log_control.clone(),
        levels: std::sync::Mutex::new(options.initial_levels.clone()),
        tasks,
    });
    tracing::info!(
        worker = %options.worker_id,
        controller = %options.controller,
        kafka = %bootstrap,
        plugins = plugins.len(),
        "worker starting"
    );

    let generation = Arc::new(AtomicU64::new(0));
    let joined = Arc::new(Notify::new());
    let (assignments, assignment_rx) = watch::channel(None);
    let join = wire::JoinRequest {
        worker_id: options.worker_id.clone(),
        plugins,
        capacity: options.capacity,
        version: env!("CARGO_PKG_VERSION").to_string(),
        broken_plugins: shared
            .registry
            .broken
            .iter()
            .map(|(command, reason)| api::BrokenPlugin {
                command: command.to_string(),
                reason: reason.clone(),
                workers: Vec::new(),
            })
            .collect(),
    };
    let control = tokio::spawn(control(
        shared.clone(),
        join,
        assignments,
        generation.clone(),
        joined.clone(),
        background.clone(),
    ));
    let reporter = tokio::spawn(report_statuses(
        shared.clone(),
        status_rx,
        generation,
        joined,
        background.clone(),
    ));
    let flusher = tokio::spawn(crate::task::offsets::flush_every(
        offsets.clone(),
        shared.ctx.flush_interval,
        background.clone(),
    ));

    let limit = options.shutdown_timeout;
    let stop_failures = shared.ctx.stop_failures.clone();
    let work = async {
        supervise(shared.clone(), assignment_rx, shutdown.clone()).await;
        // Units are stopped and flushed; the reporter sends the last statuses before it ends.
        background.cancel();
        let _ = tokio::join!(control, reporter, flusher);
        shared.tasks.close();
        shared.tasks.wait().await;
        offsets
            .flush()
            .await
            .context("write source offsets at shutdown")?;
        crate::stop::check_clean(&stop_failures, &offsets)
    };
    crate::stop::bounded(work, &shutdown, limit, Some(&offsets)).await
}

/// The classes this worker can run, with their config definitions, as the controller sees
/// them.
fn plugin_classes(registry: &PluginRegistry) -> Vec<wire::PluginClass> {
    let mut classes = Vec::new();
    for plugin in &registry.plugins {
        for class in &plugin.info.connectors {
            let configs = plugin
                .configs
                .get(&class.class_name)
                .map(|defs| defs.iter().map(config_key).collect())
                .unwrap_or_default();
            classes.push(wire::PluginClass {
                class_name: class.class_name.clone(),
                aliases: class.aliases.clone(),
                r#type: class.r#type,
                version: class.version.clone(),
                configs,
            });
        }
    }
    classes
}

fn config_key(def: &proto::ConfigDef) -> api::ConfigKey {
    use proto::{ConfigType as T, Importance as I};
    let r#type = match T::try_from(def.r#type).unwrap_or(T::Unspecified) {
        T::Int => "INT",
        T::Long => "LONG",
        T::Double => "DOUBLE",
        T::Boolean => "BOOLEAN",
        T::List => "LIST",
        T::Class => "CLASS",
        T::Password => "PASSWORD",
        T::String | T::Unspecified => "STRING",
    };
    let importance = match I::try_from(def.importance).unwrap_or(I::Unspecified) {
        I::High => "HIGH",
        I::Low => "LOW",
        I::Medium | I::Unspecified => "MEDIUM",
    };
    api::ConfigKey {
        name: def.name.clone(),
        r#type: r#type.into(),
        required: def.default_value.is_none(),
        default_value: def.default_value.clone(),
        importance: importance.into(),
        documentation: def.documentation.clone(),
        group: def.group.clone(),
        display_name: def.display_name.clone(),
        valid_values: def.valid_values.clone(),
    }
}

/// How often to heartbeat for the controller's worker timeout: several times within it, so
/// that one slow heartbeat neither lets the lease of exactly-once tasks run out nor gets the
/// worker declared dead.
fn heartbeat_period(worker_timeout: Duration) -> Duration {
    if worker_timeout.is_zero() {
        return HEARTBEAT_INTERVAL;
    }
    (worker_timeout / 5).clamp(Duration::from_millis(50), HEARTBEAT_INTERVAL)
}

/// A heartbeat ticker whose first tick is `first` away.
fn heartbeat_ticker(first: Duration, period: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// Joins the controller and forwards its assignments; heartbeats; rejoins with backoff
/// whenever the stream breaks or the controller asks. Never gives up.
async fn control(
    shared: Arc<Shared>,
    join: wire::JoinRequest,
    assignments: watch::Sender<Option<(u64, wire::Assignment)>>,
    generation: Arc<AtomicU64>,
    joined: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut client = shared.client.clone();
    let mut backoff = Duration::from_millis(100);
    let mut unreachable_since: Option<Instant> = None;
    let mut period = HEARTBEAT_INTERVAL;
    while !stop.is_cancelled() {
        let attempt = tokio::time::timeout(RPC_TIMEOUT, client.join(join.clone())).await;
        match attempt {
            Ok(Ok(response)) => {
                if let Some(since) = unreachable_since.take() {
                    tracing::info!(
                        "controller reachable again after {:.1} s; rejoined",
                        since.elapsed().as_secs_f64()
                    );
                } else {
                    tracing::info!(worker = %shared.worker_id, "joined the controller");
                }
                backoff = Duration::from_millis(100);
                let join = shared.lease.joined();
                joined.notify_one();
                let mut stream = response.into_inner();
                let request = wire::RequestsRequest {
                    worker_id: shared.worker_id.clone(),
                };
                let mut requests = match tokio::time::timeout(RPC_TIMEOUT, client.requests(request))
                    .await
                {
                    Ok(Ok(r)) => Some(r.into_inner()),
                    _ => {
                        tracing::warn!("cannot open the request stream; offsets requests will go to other workers");
                        None
                    }
                };
                // The first heartbeat at once: tasks of the new assignment wait for it.
                let mut ticker = heartbeat_ticker(Duration::ZERO, period);
                loop {
                    tokio::select! {
                        message = stream.message() => match message {
                            Ok(Some(a)) => {
                                generation.store(a.generation, Ordering::Relaxed);
                                tracing::info!(
                                    generation = a.generation,
                                    planning = a.planning.len(),
                                    tasks = a.tasks.len(),
                                    "assignment"
                                );
                                assignments.send_replace(Some((join, a)));
                            }
                            Ok(None) => {
                                tracing::warn!("the controller closed the assignment stream");
                                break;
                            }
                            Err(s) => {
                                tracing::warn!("assignment stream broken: {}", s.message());
                                break;
                            }
                        },
                        request = next_request(&mut requests) => match request {
                            Some(request) => {
                                let shared = shared.clone();
                                let tasks = shared.tasks.clone();
                                tasks.spawn(async move {
                                    let response = handle_request(&shared, request).await;
                                    let mut client = shared.client.clone();
                                    if let Err(s) = client.respond(response).await {
                                        tracing::warn!("answer the controller: {}", s.message());
                                    }
                                });
                            }
                            None => requests = None,
                        },
                        _ = ticker.tick() => {
                            let request = wire::HeartbeatRequest {
                                worker_id: shared.worker_id.clone(),
                                generation: generation.load(Ordering::Relaxed),
                            };
                            let sent = tokio::time::Instant::now();
                            let beat = tokio::time::timeout(RPC_TIMEOUT, client.heartbeat(request)).await;
                            if let Ok(Ok(r)) = beat {
                                let r = r.into_inner();
                                if r.rejoin {
                                    tracing::warn!("the controller no longer knows this worker; rejoining");
                                    break;
                                }
                                let timeout = Duration::from_millis(r.worker_timeout_ms);
                                shared.lease.renew(sent, timeout);
                                if heartbeat_period(timeout) != period {
                                    period = heartbeat_period(timeout);
                                    ticker = heartbeat_ticker(period, period);
                                }
                            }
                        }
                        _ = stop.cancelled() => return,
                    }
                }
            }
            Ok(Err(s)) => {
                if unreachable_since.is_none() {
                    tracing::warn!(
                        "cannot join the controller ({}); tasks keep running, retrying",
                        s.message()
                    );
                }
            }
            Err(_) => {
                if unreachable_since.is_none() {
                    tracing::warn!(
                        "the controller did not answer the join within {RPC_TIMEOUT:?}; retrying"
                    );
                }
            }
        }
        unreachable_since.get_or_insert_with(Instant::now);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        // No slower than the heartbeats: a controller back within the lease of
        // exactly-once tasks finds this worker rejoined before the lease runs out.
        backoff = (backoff * 2).min(REJOIN_BACKOFF_MAX).min(period);
    }
}

/// Carries out a request of the controller: a logger level here, offsets in `admin`.
async fn handle_request(shared: &Shared, request: wire::WorkerRequest) -> wire::WorkerResponse {
    let Some(wire::worker_request::Kind::SetLogLevel(set)) = &request.kind else {
        return admin::handle(
            &shared.worker_id,
            request,
            &shared.ctx.offsets,
            &shared.ctx.consumer_config,
        )
        .await;
    };
    let result = match &shared.log_control {
        None => wire::worker_response::Result::Error("logging cannot be changed here".into()),
        Some(control) => {
            let mut levels = shared.levels.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = levels.clone();
            next.insert(set.logger.clone(), set.level.to_lowercase());
            match control(&next) {
                Ok(()) => {
                    *levels = next;
                    tracing::info!(logger = %set.logger, level = %set.level, "logger level set by the controller");
                    wire::worker_response::Result::Done(wire::Done {})
                }
                Err(e) => wire::worker_response::Result::Invalid(e),
            }
        }
    };
    wire::WorkerResponse {
        worker_id: shared.worker_id.clone(),
        id: request.id,
        result: Some(result),
    }
}

/// The next request from the controller; pending forever once the stream is gone.
async fn next_request(
    requests: &mut Option<tonic::Streaming<wire::WorkerRequest>>,
) -> Option<wire::WorkerRequest> {
    match requests {
        Some(stream) => stream.message().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// Sends status changes to the controller within `STATUS_DEBOUNCE`, and the full set after
/// every (re)join. A failed report is retried.
async fn report_statuses(
    shared: Arc<Shared>,
    mut updates: mpsc::UnboundedReceiver<StatusUpdate>,
    generation: Arc<AtomicU64>,
    joined: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut client = shared.client.clone();
    let mut current: BTreeMap<UnitKey, UnitState> = BTreeMap::new();
    let mut changed: BTreeMap<UnitKey, UnitState> = BTreeMap::new();
    let mut released: BTreeSet<UnitKey> = BTreeSet::new();
    let mut full = false;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut last = false;
    loop {
        let wake =
            retry_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            update = updates.recv() => {
                let Some(update) = update else { return };
                apply(&mut current, &mut changed, &mut released, update);
                tokio::time::sleep(STATUS_DEBOUNCE).await;
                while let Ok(update) = updates.try_recv() {
                    apply(&mut current, &mut changed, &mut released, update);
                }
            }
            _ = joined.notified() => full = true,
            _ = tokio::time::sleep_until(wake), if retry_at.is_some() => {}
            _ = stop.cancelled() => {
                // The units have stopped: what they reported last goes out before the end.
                while let Ok(update) = updates.try_recv() {
                    apply(&mut current, &mut changed, &mut released, update);
                }
                if changed.is_empty() && released.is_empty() && !full {
                    return;
                }
                last = true;
            }
        }
        if !full && changed.is_empty() && released.is_empty() {
            continue;
        }
        let listed = if full { &current } else { &changed };
        let report = wire::StatusReport {
            worker_id: shared.worker_id.clone(),
            generation: generation.load(Ordering::Relaxed),
            full,
            statuses: listed
                .iter()
                .map(|(unit, (state, trace, topics))| wire::UnitStatus {
                    connector: unit.connector.to_string(),
                    task: unit.wire_task(),
                    state: *state as i32,
                    trace: trace.clone(),
                    topics: topics.clone(),
                })
                .collect(),
            released: released
                .iter()
                .map(|unit| wire::UnitRef {
                    connector: unit.connector.to_string(),
                    task: unit.wire_task(),
                })
                .collect(),
        };
        let sent = tokio::time::timeout(RPC_TIMEOUT, client.report_status(report)).await;
        if last {
            if !matches!(sent, Ok(Ok(_))) {
                tracing::warn!("the last statuses did not reach the controller");
            }
            return;
        }
        match sent {
            Ok(Ok(_)) => {
                full = false;
                changed.clear();
                released.clear();
                retry_at = None;
            }
            _ => {
                // The controller may be down: send everything once it is back.
                full = true;
                changed.clear();
                retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            }
        }
    }
}

fn apply(
    current: &mut BTreeMap<UnitKey, UnitState>,
    changed: &mut BTreeMap<UnitKey, UnitState>,
    released: &mut BTreeSet<UnitKey>,
    update: StatusUpdate,
) {
    match update.state {
        Some(state) => {
            released.remove(&update.key);
            current.insert(update.key.clone(), state.clone());
            changed.insert(update.key, state);
        }
        None => {
            current.remove(&update.key);
            changed.remove(&update.key);
            released.insert(update.key);
        }
    }
}

/// A unit running here: a connector's planning instance or one task.
struct Running {
    /// What it was started with; a different fingerprint restarts it.
    fingerprint: String,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// What one unit should run, from an assignment.
enum Work {
    Planning(wire::ConnectorConfig),
    Task(wire::ConnectorConfig, wire::TaskAssignment),
}

/// Makes the running units match each assignment: stops what is no longer assigned (or
/// changed), starts what is new. A replaced unit starts only after its predecessor stopped
/// and committed. On `shutdown`, stops everything and waits.
async fn supervise(
    shared: Arc<Shared>,
    mut assignments: watch::Receiver<Option<(u64, wire::Assignment)>>,
    shutdown: CancellationToken,
) {
    let mut units: BTreeMap<UnitKey, Running> = BTreeMap::new();
    // Units stopped without a replacement, until they have drained: one that comes back
    // (a stop then a resume) waits for its predecessor as a replacement does.
    let mut draining: BTreeMap<UnitKey, watch::Receiver<bool>> = BTreeMap::new();
    loop {
        tokio::select! {
            changed = assignments.changed() => if changed.is_err() { break },
            _ = shutdown.cancelled() => break,
        }
        draining.retain(|_, done| !*done.borrow());
        let Some((join, assignment)) = assignments.borrow_and_update().clone() else {
            continue;
        };
        if !assignment.cluster_id.is_empty() {
            shared
                .cluster_id
                .get_or_init(|| assignment.cluster_id.clone());
        }
        let desired = desired_units(&assignment);
        let mut previous: BTreeMap<UnitKey, JoinHandle<()>> = BTreeMap::new();
        let stale: Vec<UnitKey> = units
            .iter()
            .filter(|(key, unit)| desired.get(*key).map(|d| &d.0) != Some(&unit.fingerprint))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(unit) = units.remove(&key) {
                unit.stop.cancel();
                previous.insert(key.clone(), unit.handle);
            }
        }
        // Units that stopped and are not replaced still finish in the background.
        for (key, (fingerprint, work)) in desired {
            if units.contains_key(&key) {
                continue;
            }
            let stop = CancellationToken::new();
            let before: Option<Predecessor> = match previous.remove(&key) {
                Some(handle) => Some(Box::pin(async move {
                    let _ = handle.await;
                })),
                None => draining.remove(&key).map(|mut done| -> Predecessor {
                    Box::pin(async move {
                        let _ = done.wait_for(|d| *d).await;
                    })
                }),
            };
            let handle = tokio::spawn(run_unit(
                shared.clone(),
                key.clone(),
                work,
                before,
                stop.clone(),
            ));
            units.insert(
                key,
                Running {
                    fingerprint,
                    stop,
                    handle,
                },
            );
        }
        // Units taken away finish in the background; once drained and committed they are
        // released, and the controller lets their new owner start them.
        for (key, handle) in previous {
            let statuses = shared.statuses.clone();
            let (done_tx, done_rx) = watch::channel(false);
            draining.insert(key.clone(), done_rx);
            shared.tasks.spawn(async move {
                let _ = handle.await;
                let _ = statuses.send(StatusUpdate { key, state: None });
                let _ = done_tx.send(true);
            });
        }
        // Whatever moved away is told to stop: the lease may say "yours" again.
        shared.lease.applied(join);
    }
    tracing::info!("stopping: draining tasks and committing offsets");
    // Stops that failed before this one (units that moved) were handled then.
    shared.ctx.stop_failures.take();
    for unit in units.values() {
        unit.stop.cancel();
    }
    for (_, unit) in units {
        let _ = unit.handle.await;
    }
    for (_, mut done) in draining {
        let _ = done.wait_for(|d| *d).await;
    }
}

fn desired_units(assignment: &wire::Assignment) -> BTreeMap<UnitKey, (String, Work)> {
    let configs: BTreeMap<&str, &wire::ConnectorConfig> = assignment
        .connectors
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let mut units = BTreeMap::new();
    for name in &assignment.planning {
        let Some(config) = configs.get(name.as_str()) else {
            continue;
        };
        let fingerprint = format!(
            "{}/{}/{}",
            config.config_version, config.restart_epoch, config.target_state
        );
        units.insert(
            UnitKey::planning(name),
            (fingerprint, Work::Planning((*config).clone())),
        );
    }
    for task in &assignment.tasks {
        let Some(config) = configs.get(task.connector.as_str()) else {
            continue;
        };
        let task_config: BTreeMap<&String, &String> = task.config.iter().collect();
        let framework: BTreeMap<&String, &String> = config
            .config
            .iter()
            .filter(|(k, _)| sluice_model::keys::worker_reads(k))
            .collect();
        let fingerprint = serde_json::json!([
            task_config,
            framework,
            task.restart_epoch,
            config.target_state
        ])
        .to_string();
        units.insert(
            UnitKey::task(&task.connector, task.task),
            (fingerprint, Work::Task((*config).clone(), task.clone())),
        );
    }
    units
}

/// Completes when a unit's predecessor (same connector and task) has stopped here.
type Predecessor = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn run_unit(
    shared: Arc<Shared>,
    key: UnitKey,
    work: Work,
    before: Option<Predecessor>,
    stop: CancellationToken,
) {
    if let Some(before) = before {
        before.await;
    }
    if stop.is_cancelled() {
        return;
    }
    match work {
        Work::Planning(config) => run_planning(&shared, &key, config, &stop).await,
        Work::Task(config, task) => run_task(&shared, &key, config, task, &stop).await,
    }
}

/// The connector instance: validates and plans its tasks for this config version, submits
/// them, reports the connector's state, then keeps the instance's process while the connector
/// watches its source and asks for re-plans (Monitor). Restarted with backoff on failure.
async fn run_planning(
    shared: &Shared,
    key: &UnitKey,
    config: wire::ConnectorConfig,
    stop: &CancellationToken,
) {
    let mut restarts = Restarts::new(match shared.spec(&config) {
        Ok(spec) => spec.restart,
        // The instance fails below with this error, naming the key.
        Err(_) => Default::default(),
    });
    loop {
        let started = Instant::now();
        match connector_instance(shared, key, &config, stop).await {
            Ok(()) => return,
            Err(e) if stop.is_cancelled() => {
                tracing::debug!(connector = %config.name, "planning stopped: {e:#}");
                return;
            }
            Err(e) => {
                if !restart_after(shared, key, &mut restarts, e, started, stop).await {
                    return;
                }
            }
        }
    }
}

/// After a unit's failure: RESTARTING with the failure as its trace while the restart delay
/// runs (true: run it again), or FAILED past the restart limit or on a fatal error until the
/// unit is stopped (false). A manual restart replaces the unit, and with it the count.
async fn restart_after(
    shared: &Shared,
    key: &UnitKey,
    restarts: &mut Restarts,
    error: anyhow::Error,
    started: Instant,
    stop: &CancellationToken,
) -> bool {
    let unit = match key.task {
        Some(task) => format!("task {task}"),
        None => "connector".into(),
    };
    match restarts.on_failure(&error, started.elapsed()) {
        Next::Restart { delay, attempt } => {
            let limit = restarts.limit();
            tracing::error!(connector = %key.connector, "{unit} failed, restart {attempt} of {limit} in {delay:?}: {error:#}");
            shared.report(
                key,
                api::State::Restarting,
                format!("restart {attempt} of {limit} in {delay:?} after: {error:#}"),
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => true,
                _ = stop.cancelled() => false,
            }
        }
        Next::GiveUp(why) => {
            tracing::error!(connector = %key.connector, "{unit} FAILED ({why}): {error:#}");
            shared.report(key, api::State::Failed, format!("{why}: {error:#}"));
            stop.cancelled().await;
            false
        }
    }
}

/// One life of the connector instance's process. `Ok` when stopped.
async fn connector_instance(
    shared: &Shared,
    key: &UnitKey,
    config: &wire::ConnectorConfig,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let spec = shared.spec(config)?;
    let process = ConnectorProcess::launch(&spec.command, &spec.name).await?;
    let mut client = process.client.clone();
    let watched = async {
        validate(&mut client, &spec).await?;
        plan(shared, &mut client, &spec, config, stop).await?;
        let state = if config.target_state == api::TargetState::Paused as i32 {
            api::State::Paused
        } else {
            api::State::Running
        };
        shared.report(key, state, "");
        let request = proto::MonitorRequest {
            connector_class: spec.class.clone(),
            config: spec.config.clone().into_iter().collect(),
        };
        let mut events = match client.monitor(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(false),
            Err(s) => bail!("monitor: {}", s.message()),
        };
        loop {
            tokio::select! {
                event = events.message() => match event {
                    Ok(Some(proto::MonitorEvent { kind: Some(proto::monitor_event::Kind::Reconfigure(r)) })) => {
                        tracing::info!(connector = %spec.name, reason = %r.reason, "the connector asks for its tasks to be planned again");
                        plan(shared, &mut client, &spec, config, stop).await?;
                    }
                    Ok(Some(_)) => {}
                    // The connector will never ask: its process is not needed any more.
                    Ok(None) => return Ok(false),
                    Err(s) => bail!("monitor stream broke: {}", s.message()),
                },
                reason = process.exited() => bail!("{reason}"),
                _ = stop.cancelled() => return Ok(true),
            }
        }
    }
    .await;
    process.shutdown().await;
    match watched? {
        true => Ok(()),
        false => {
            stop.cancelled().await;
            Ok(())
        }
    }
}

async fn validate(
    client: &mut crate::host::process::Client,
    spec: &ConnectorSpec,
) -> anyhow::Result<()> {
    let validation = client
        .validate(proto::ValidateRequest {
            connector_class: spec.class.clone(),
            config: spec.config.clone().into_iter().collect(),
        })
        .await
        .map_err(|s| anyhow!("validate: {}", s.message()))?
        .into_inner();
    if !validation.errors.is_empty() {
        let problems: Vec<String> = validation
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.name, e.message))
            .collect();
        bail!("invalid configuration: {}", problems.join("; "));
    }
    Ok(())
}

/// Plans the tasks and submits their configs; the controller rolls the tasks whose configs
/// changed.
async fn plan(
    shared: &Shared,
    client: &mut crate::host::process::Client,
    spec: &ConnectorSpec,
    config: &wire::ConnectorConfig,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let tasks = plan_tasks(client, spec).await?;
    let request = wire::SubmitTaskConfigsRequest {
        worker_id: shared.worker_id.clone(),
        connector: config.name.clone(),
        config_version: config.config_version,
        tasks: tasks
            .into_iter()
            .map(|config| wire::TaskConfig {
                config: config.into_iter().collect(),
            })
            .collect(),
        r#type: spec.kind as i32,
    };
    // The controller may be restarting: keep trying until it takes the configs.
    let mut controller = shared.client.clone();
    let mut backoff = Duration::from_millis(200);
    loop {
        match tokio::time::timeout(RPC_TIMEOUT, controller.submit_task_configs(request.clone()))
            .await
        {
            Ok(Ok(r)) => {
                if !r.into_inner().accepted {
                    tracing::info!(connector = %config.name, "task configs were for an older config version; ignored");
                }
                return Ok(());
            }
            Ok(Err(s)) => {
                tracing::warn!(connector = %config.name, "submit task configs: {}", s.message())
            }
            Err(_) => tracing::warn!(connector = %config.name, "submit task configs: no answer"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => bail!("stopped"),
        }
        backoff = (backoff * 2).min(REJOIN_BACKOFF_MAX);
    }
}

/// One task in its own connector process, restarted with backoff when it fails.
async fn run_task(
    shared: &Shared,
    key: &UnitKey,
    config: wire::ConnectorConfig,
    task: wire::TaskAssignment,
    stop: &CancellationToken,
) {
    if config.target_state == api::TargetState::Paused as i32 {
        shared.report(key, api::State::Paused, "");
        stop.cancelled().await;
        return;
    }
    let spec = match shared.spec(&config) {
        Ok(spec) => spec,
        Err(e) => {
            shared.report(key, api::State::Failed, format!("{e:#}"));
            stop.cancelled().await;
            return;
        }
    };
    let counters = Arc::new(Counters::default());
    let task_config: BTreeMap<String, String> = task.config.into_iter().collect();
    let mut restarts = Restarts::new(spec.restart.clone());
    loop {
        let started = Instant::now();
        let run = run_process(
            &spec,
            &shared.ctx,
            &counters,
            stop,
            Some(vec![(task.task, task_config.clone())]),
            |_| shared.report(key, api::State::Running, ""),
        );
        // While it runs, newly used topics go to the controller with the RUNNING state.
        let topics = async {
            let mut known = 0;
            let mut ticker = tokio::time::interval(TOPICS_INTERVAL);
            loop {
                ticker.tick().await;
                let topics = counters.topics();
                if topics.len() != known {
                    known = topics.len();
                    let topics = topics.into_iter().collect();
                    shared.report_with_topics(key, api::State::Running, "", topics);
                }
            }
        };
        let result = tokio::select! {
            result = run => result,
            _ = topics => unreachable!("the topics watch never ends"),
        };
        match result {
            Ok(()) => return,
            Err(e) if stop.is_cancelled() => {
                tracing::warn!(connector = %spec.name, task = task.task, "stopped after failure: {e:#}");
                shared.ctx.stop_failures.record(crate::stop::StopFailure {
                    unit: format!("task {}-{}", spec.name, task.task),
                    connector: spec.name.to_string(),
                    source: spec.kind != ConnectorType::Sink,
                    error: format!("{e:#}"),
                });
                return;
            }
            Err(e) => {
                if !restart_after(shared, key, &mut restarts, e, started, stop).await {
                    return;
                }
            }
        }
    }
}
