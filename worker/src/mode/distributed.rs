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

use crate::link::{Link, LinkSecurity};
use anyhow::{anyhow, Context as _};
use sluice_proto::api::v1 as api;
use sluice_proto::cluster::v1::{self as wire, worker_control_client::WorkerControlClient};
use sluice_proto::connector::v1 as proto;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::host::plugins::{PluginEntry, PluginRegistry};
use crate::mode::admin;
use crate::mode::standalone::ConfigErrors;
use crate::runner::{consumer_config, producer_config, WorkerContext};
use crate::settings::WorkerSettings;
use crate::task::offsets::{OffsetStore, DEFAULT_OFFSET_TOPIC};
use crate::unit::{supervise, Planner, StatusUpdate, UnitHost, UnitState};
use sluice_model::{ConfigFile, UnitKey, WorkerId};

const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
const REJOIN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Status changes within this window go to the controller in one report.
const STATUS_DEBOUNCE: Duration = Duration::from_millis(50);

/// Applies logger levels (logger → level, "root" for the default) to this process's logging.
pub type LogControl = Arc<dyn Fn(&BTreeMap<String, String>) -> Result<(), String> + Send + Sync>;

pub struct WorkerOptions {
    /// The controller's URL, e.g. `http://127.0.0.1:9083`.
    pub controller: String,
    pub worker_id: String,
    /// A Kafka Connect worker file; `None` for defaults.
    pub worker_file: Option<PathBuf>,
    /// Overrides `bootstrap.servers`.
    pub kafka: Option<String>,
    /// Tasks this worker wants at most; 0 for no limit.
    pub capacity: u32,
    pub builtin_plugins: Vec<PluginEntry>,
    /// Changes this process's log levels (cluster-scoped levels from the controller).
    pub log_control: Option<LogControl>,
    pub initial_levels: BTreeMap<String, String>,
    /// How long a graceful stop may take once asked for ([`crate::stop::bounded`]).
    pub shutdown_timeout: Duration,
    /// TLS and the token for the controller.
    pub security: LinkSecurity,
}

/// What the worker's control loop, status reporter and request handlers share.
struct Shared {
    host: Arc<UnitHost>,
    client: WorkerControlClient<Link>,
    log_control: Option<LogControl>,
    levels: std::sync::Mutex<BTreeMap<String, String>>,
}

/// Runs the worker until `shutdown`, then stops its tasks (they drain and commit) and returns.
pub async fn run(options: WorkerOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let one = |e| ConfigErrors(vec![e]);
    let file = match &options.worker_file {
        Some(path) => ConfigFile::load(path).map_err(one)?,
        None => ConfigFile::from_values("(worker flags)", BTreeMap::new()),
    };
    let mut settings = WorkerSettings::from_file(&file).map_err(one)?;
    crate::isolation::configure(settings.isolation.clone());
    if let Some(kafka) = &options.kafka {
        settings.bootstrap_servers = Some(kafka.clone());
    }
    let bootstrap = settings.bootstrap_servers.clone().ok_or_else(|| {
        anyhow!("no Kafka to use: give --kafka HOST:PORT or bootstrap.servers in the worker file")
    })?;
    let client = WorkerControlClient::new(
        options
            .security
            .lazy(&options.controller, Duration::from_secs(2))
            .with_context(|| format!("--controller {}", options.controller))?,
    );

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
    let ctx = WorkerContext {
        producer_config,
        consumer_config,
        offsets: offsets.clone(),
        flush_interval: settings.offset_flush_interval,
        task_shutdown_timeout: settings.task_shutdown_timeout,
        stop_failures: Default::default(),
    };
    let host = Arc::new(UnitHost::new(
        WorkerId::new(options.worker_id.clone()),
        settings,
        registry,
        ctx,
        statuses,
        Planner::Controller(client.clone()),
        Arc::default(),
        tasks,
    ));
    crate::metrics::worker().watch_lease(host.lease.clone());
    let shared = Arc::new(Shared {
        host: host.clone(),
        client,
        log_control: options.log_control.clone(),
        levels: std::sync::Mutex::new(options.initial_levels.clone()),
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
        broken_plugins: host
            .registry
            .broken
            .iter()
            .map(|(command, reason)| api::BrokenPlugin {
                command: command.to_string(),
                reason: reason.clone(),
                workers: Vec::new(),
            })
            .collect(),
        accepts_deltas: true,
    };
    let control = tokio::spawn(control(
        shared.clone(),
        join,
        assignments,
        generation.clone(),
        joined.clone(),
        background.clone(),
        shutdown.clone(),
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
        host.ctx.flush_interval,
        background.clone(),
    ));

    let limit = options.shutdown_timeout;
    let stop_failures = host.ctx.stop_failures.clone();
    let work = async {
        supervise(host.clone(), assignment_rx, shutdown.clone()).await;
        // Units are stopped and flushed; the reporter sends the last statuses before it ends.
        background.cancel();
        let _ = tokio::join!(control, reporter, flusher);
        host.tasks.close();
        host.tasks.wait().await;
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
/// whenever the stream breaks or the controller asks. Never gives up. Cancels `leave` (the
/// worker's own stop) when the controller says the worker was drained.
#[allow(clippy::too_many_arguments)]
async fn control(
    shared: Arc<Shared>,
    join: wire::JoinRequest,
    assignments: watch::Sender<Option<(u64, wire::Assignment)>>,
    generation: Arc<AtomicU64>,
    joined: Arc<Notify>,
    stop: CancellationToken,
    leave: CancellationToken,
) {
    let mut client = shared.client.clone();
    let mut backoff = Duration::from_millis(100);
    let mut unreachable_since: Option<Instant> = None;
    let mut period = HEARTBEAT_INTERVAL;
    // Whether this worker stopped its units because the controller may have moved them.
    let mut released = false;
    let mut last_join = 0;
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
                    tracing::info!(worker = %shared.host.worker_id, "joined the controller");
                }
                backoff = Duration::from_millis(100);
                let join = shared.host.lease.joined();
                last_join = join;
                released = false;
                joined.notify_one();
                let mut stream = response.into_inner();
                // What this stream has assigned so far: deltas apply to it.
                let mut held: Option<wire::Assignment> = None;
                let request = wire::RequestsRequest {
                    worker_id: shared.host.worker_id.to_string(),
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
                                let Some(a) = receive(&mut held, a) else {
                                    break; // rejoin: the controller then sends it whole
                                };
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
                                let tasks = shared.host.tasks.clone();
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
                                worker_id: shared.host.worker_id.to_string(),
                                generation: generation.load(Ordering::Relaxed),
                            };
                            let sent = tokio::time::Instant::now();
                            // Bounded by a few periods, not RPC_TIMEOUT, and by the lease: a
                            // lost link is noticed, and the lease checked below, in time.
                            let wait = shared.host.lease.until_expired().map_or(RPC_TIMEOUT, |left| left.max(Duration::from_millis(50)));
                            let beat = tokio::time::timeout((period * 3).min(RPC_TIMEOUT).min(wait), client.heartbeat(request)).await;
                            if let Ok(Ok(r)) = beat {
                                let r = r.into_inner();
                                if r.rejoin {
                                    tracing::warn!("the controller no longer knows this worker; rejoining");
                                    break;
                                }
                                if r.leave && !leave.is_cancelled() {
                                    tracing::info!("drained: every unit moved to other workers; exiting");
                                    leave.cancel();
                                }
                                let timeout = Duration::from_millis(r.worker_timeout_ms);
                                shared.host.lease.renew(sent, timeout);
                                if heartbeat_period(timeout) != period {
                                    period = heartbeat_period(timeout);
                                    ticker = heartbeat_ticker(period, period);
                                }
                                // Acknowledged again on the same stream: the controller never
                                // let go of this worker (it would have dropped the stream), so
                                // nothing moved and the assignment stands.
                                if released && !shared.host.lease.expired() {
                                    if let Some(held) = &held {
                                        tracing::info!("the controller answers again and kept this worker's assignment; restarting its units");
                                        assignments.send_replace(Some((join, held.clone())));
                                    }
                                    released = false;
                                }
                            }
                            released = released || release(&shared, &assignments, join, &generation);
                        }
                        _ = stop.cancelled() => return,
                    }
                }
            }
            Ok(Err(s)) => {
                if unreachable_since.is_none() {
                    tracing::warn!(
                        "cannot join the controller ({}); units keep running for the worker timeout, retrying",
                        crate::link::reason(&s)
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
        released = released || release(&shared, &assignments, last_join, &generation);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        // No slower than the heartbeats: a controller back within the lease of
        // exactly-once tasks finds this worker rejoined before the lease runs out.
        backoff = (backoff * 2).min(REJOIN_BACKOFF_MAX).min(period);
    }
}

/// Once the lease expired (no word from the controller for a whole worker timeout, so it may
/// have given this worker's units to others), stops every unit here, as Kafka Connect's
/// workers stop their tasks once they lose the group coordinator; a rejoin brings the new
/// assignment. Returns whether the units are released (none run here now).
fn release(
    shared: &Shared,
    assignments: &watch::Sender<Option<(u64, wire::Assignment)>>,
    join: u64,
    generation: &AtomicU64,
) -> bool {
    if !shared.host.lease.expired() {
        return false;
    }
    let running = assignments
        .borrow()
        .as_ref()
        .is_some_and(|(_, a)| !a.planning.is_empty() || !a.tasks.is_empty());
    if !running {
        return true;
    }
    tracing::warn!("no word from the controller for the worker timeout: it may have moved this worker's units, so they stop here");
    assignments.send_replace(Some((
        join,
        wire::Assignment {
            generation: generation.load(Ordering::Relaxed),
            ..Default::default()
        },
    )));
    true
}

/// Carries out a request of the controller: a logger level here, offsets in `admin`.
async fn handle_request(shared: &Shared, request: wire::WorkerRequest) -> wire::WorkerResponse {
    let Some(wire::worker_request::Kind::SetLogLevel(set)) = &request.kind else {
        return admin::handle(
            &shared.host.worker_id,
            request,
            &shared.host.ctx.offsets,
            &shared.host.ctx.consumer_config,
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
        worker_id: shared.host.worker_id.to_string(),
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
            worker_id: shared.host.worker_id.to_string(),
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

/// The assignment the worker holds once `received` arrived on a stream where `held` is what
/// arrived before; `None` (and a warning) for a delta that does not apply to it.
fn receive(
    held: &mut Option<wire::Assignment>,
    received: wire::Assignment,
) -> Option<wire::Assignment> {
    let base = held.take();
    let now = match base {
        Some(base) if received.delta && received.base_generation == base.generation => {
            base.then(received)
        }
        _ if received.delta => {
            tracing::warn!(
                base = received.base_generation,
                "an assignment delta for an assignment this worker does not hold; rejoining"
            );
            return None;
        }
        _ => received,
    };
    *held = Some(now.clone());
    Some(now)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(name: &str) -> wire::ConnectorConfig {
        wire::ConnectorConfig {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn deltas_apply_to_the_held_generation_only() {
        let mut held = None;
        let delta = |base, generation, name: &str| wire::Assignment {
            generation,
            delta: true,
            base_generation: base,
            connectors: vec![connector(name)],
            planning: vec![name.into()],
            ..Default::default()
        };
        assert!(
            receive(&mut held, delta(0, 1, "a")).is_none(),
            "nothing held yet"
        );
        let whole = wire::Assignment {
            generation: 2,
            connectors: vec![connector("a")],
            planning: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(receive(&mut held, whole).unwrap().planning, ["a"]);
        let now = receive(&mut held, delta(2, 5, "b")).unwrap();
        assert_eq!(
            (now.generation, now.planning.clone()),
            (5, vec!["a".to_string(), "b".into()])
        );
        assert!(!now.delta);
        assert!(
            receive(&mut held, delta(4, 6, "c")).is_none(),
            "not the held generation"
        );
    }
}
