//! The controller's view of the cluster: desired state (connectors from the store) and observed
//! state (workers and their status reports), reconciled into one placement per generation and
//! pushed to each worker as its complete assignment.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sluice_proto::api::v1 as api;
use sluice_proto::cluster::v1 as wire;
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tonic::Status;

use crate::error::ApiError;
use crate::scheduler::{self, Placement, Slot, Unit, Work};
use crate::store::{ConnectorRecord, State, StatusRecord, Store, TargetState, WorkerRecord};

pub type AssignmentSender = mpsc::Sender<Result<wire::Assignment, Status>>;
pub type RequestSender = mpsc::Sender<Result<wire::WorkerRequest, Status>>;

/// How long a request to a worker (offsets) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests in flight to workers, and the streams they go out on.
#[derive(Default)]
pub struct Requests {
    next_id: u64,
    streams: BTreeMap<String, RequestSender>,
    pending: BTreeMap<u64, oneshot::Sender<wire::WorkerResponse>>,
}

impl Requests {
    /// Sends `request` (with a fresh id) to `worker`: the id and where its answer arrives, or
    /// `None` when the worker has no open stream or it is full.
    fn send(
        &mut self,
        worker: &str,
        mut request: wire::WorkerRequest,
    ) -> Option<(u64, oneshot::Receiver<wire::WorkerResponse>)> {
        self.next_id += 1;
        request.id = self.next_id;
        self.streams.get(worker)?.try_send(Ok(request)).ok()?;
        let (tx, rx) = oneshot::channel();
        self.pending.insert(self.next_id, tx);
        Some((self.next_id, rx))
    }
}

fn log_level_request(logger: String, level: String) -> wire::WorkerRequest {
    wire::WorkerRequest {
        id: 0,
        connector: None,
        r#type: 0,
        kind: Some(wire::worker_request::Kind::SetLogLevel(wire::SetLogLevel {
            logger,
            level,
        })),
    }
}

pub struct WorkerEntry {
    pub plugins: Vec<wire::PluginClass>,
    /// Executables the worker found broken.
    pub broken: Vec<api::BrokenPlugin>,
    pub capacity: u32,
    pub last_seen: Instant,
    pub stream: Option<AssignmentSender>,
    /// The last assignment sent, with its generation left at 0 for comparison.
    pub last_sent: Option<wire::Assignment>,
}

#[derive(Default)]
pub struct Inner {
    pub connectors: BTreeMap<String, ConnectorRecord>,
    pub statuses: BTreeMap<Unit, StatusRecord>,
    pub workers: BTreeMap<String, WorkerEntry>,
    pub placement: Placement,
    pub generation: u64,
    /// Units moved or taken away from a live worker, by old owner and since when: a new
    /// owner gets them only once the old one released them (drained and committed), so that
    /// a clean move replays nothing.
    pub releasing: BTreeMap<Unit, (String, Instant)>,
}

/// How long a move waits for the old owner's release: its drain deadline and some.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(40);

pub struct Cluster {
    pub store: Store,
    pub inner: Mutex<Inner>,
    pub changed: Notify,
    pub cluster_id: String,
    /// A worker silent this long is declared dead and its work moves.
    pub worker_timeout: Duration,
    pub requests: std::sync::Mutex<Requests>,
}

impl Cluster {
    /// Loads the durable state. Workers known before a restart count as alive until they miss
    /// the timeout, so nothing moves while they reconnect.
    pub fn open(store: Store, worker_timeout: Duration) -> Result<Cluster, ApiError> {
        let now = Instant::now();
        let mut workers = BTreeMap::new();
        for (id, record) in store.workers()? {
            let plugins = record
                .plugins
                .iter()
                .filter_map(|b| prost::Message::decode(b.as_slice()).ok())
                .collect();
            let broken = record
                .broken
                .iter()
                .filter_map(|b| prost::Message::decode(b.as_slice()).ok())
                .collect();
            workers.insert(
                id,
                WorkerEntry {
                    plugins,
                    broken,
                    capacity: record.capacity,
                    last_seen: now,
                    stream: None,
                    last_sent: None,
                },
            );
        }
        let inner = Inner {
            connectors: store.connectors()?,
            statuses: store.statuses()?,
            workers,
            placement: store.placement()?,
            generation: store.generation()?,
            // Not persisted: after a controller restart a move in progress no longer waits.
            releasing: BTreeMap::new(),
        };
        Ok(Cluster {
            cluster_id: store.cluster_id()?,
            store,
            inner: Mutex::new(inner),
            changed: Notify::new(),
            worker_timeout,
            requests: std::sync::Mutex::new(Requests::default()),
        })
    }

    /// Registers a (re)joining worker and returns the stream its assignments go to.
    pub async fn join(
        &self,
        request: wire::JoinRequest,
        tx: AssignmentSender,
    ) -> Result<(), ApiError> {
        let mut inner = self.inner.lock().await;
        let record = WorkerRecord {
            plugins: request
                .plugins
                .iter()
                .map(prost::Message::encode_to_vec)
                .collect(),
            capacity: request.capacity,
            broken: request
                .broken_plugins
                .iter()
                .map(prost::Message::encode_to_vec)
                .collect(),
        };
        self.store.put_worker(&request.worker_id, &record)?;
        self.store.flush().await?;
        tracing::info!(worker = %request.worker_id, plugins = request.plugins.len(), "worker joined");
        inner.workers.insert(
            request.worker_id,
            WorkerEntry {
                plugins: request.plugins,
                broken: request.broken_plugins,
                capacity: request.capacity,
                last_seen: Instant::now(),
                stream: Some(tx),
                last_sent: None,
            },
        );
        drop(inner);
        self.changed.notify_one();
        Ok(())
    }

    /// Returns false when the worker is unknown and must join again.
    pub async fn heartbeat(&self, worker: &str) -> bool {
        let mut inner = self.inner.lock().await;
        match inner.workers.get_mut(worker) {
            Some(w) if w.stream.is_some() => {
                w.last_seen = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// The worker's assignment stream ended (it disconnected or died).
    pub async fn disconnected(&self, worker: &str, tx: &AssignmentSender) {
        let mut inner = self.inner.lock().await;
        if let Some(w) = inner.workers.get_mut(worker) {
            if w.stream.as_ref().is_some_and(|s| s.same_channel(tx)) {
                tracing::info!(worker, "worker disconnected");
                w.stream = None;
            }
        }
    }

    fn requests(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker opened its request stream; requests for it go to `tx` from now on. It gets
    /// the cluster's logger levels first.
    pub fn open_requests(&self, worker: &str, tx: RequestSender) {
        let levels = self.store.log_levels().unwrap_or_default();
        let mut requests = self.requests();
        requests.streams.insert(worker.to_string(), tx);
        for (logger, level) in levels {
            // Not awaited: the worker applies them as it starts.
            if let Some((id, _)) = requests.send(worker, log_level_request(logger, level)) {
                requests.pending.remove(&id);
            }
        }
    }

    /// Stores a cluster-scoped logger level and sends it to every connected worker; returns
    /// the workers that applied it.
    pub async fn set_cluster_level(
        &self,
        logger: &str,
        level: &str,
    ) -> Result<Vec<String>, ApiError> {
        let mut levels = self.store.log_levels()?;
        levels.insert(logger.to_string(), level.to_string());
        self.store.put_log_levels(&levels)?;
        self.store.flush().await?;
        let waiting: Vec<_> = {
            let mut requests = self.requests();
            let workers: Vec<String> = requests.streams.keys().cloned().collect();
            workers
                .into_iter()
                .filter_map(|worker| {
                    let request = log_level_request(logger.to_string(), level.to_string());
                    let (id, rx) = requests.send(&worker, request)?;
                    Some((worker, id, rx))
                })
                .collect()
        };
        let mut applied = Vec::new();
        for (worker, id, rx) in waiting {
            match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
                Ok(Ok(r)) if !matches!(r.result, Some(wire::worker_response::Result::Error(_))) => {
                    applied.push(worker)
                }
                _ => {
                    self.requests().pending.remove(&id);
                    tracing::warn!(worker = %worker, "did not apply logger level {logger}={level}");
                }
            }
        }
        Ok(applied)
    }

    /// A worker answered a request.
    pub fn respond(&self, response: wire::WorkerResponse) {
        if let Some(waiter) = self.requests().pending.remove(&response.id) {
            let _ = waiter.send(response);
        }
    }

    /// Has a worker carry out `request` for `connector`: the one planning it if it can, else
    /// any connected worker with the connector's plugin. Waits for the answer.
    pub async fn ask(
        &self,
        connector: &str,
        request: wire::WorkerRequest,
    ) -> Result<wire::WorkerResponse, ApiError> {
        let candidates: Vec<String> = {
            let inner = self.inner.lock().await;
            let class = inner
                .connectors
                .get(connector)
                .and_then(|r| r.config.get("connector.class"))
                .cloned()
                .unwrap_or_default();
            let planner = inner.placement.get(&Unit::planning(connector)).cloned();
            let mut capable: Vec<String> = inner
                .workers
                .iter()
                .filter(|(_, w)| {
                    w.stream.is_some()
                        && w.plugins
                            .iter()
                            .any(|p| p.class_name == class || p.aliases.contains(&class))
                })
                .map(|(id, _)| id.clone())
                .collect();
            if let Some(planner) = planner {
                if let Some(at) = capable.iter().position(|w| *w == planner) {
                    capable.swap(0, at);
                }
            }
            capable
        };
        let sent = {
            let mut requests = self.requests();
            candidates
                .iter()
                .find_map(|worker| requests.send(worker, request.clone()))
        };
        let Some((id, rx)) = sent else {
            return Err(ApiError::Unavailable(format!(
                "no connected worker can run connector {connector}'s plugin to reach its offsets"
            )));
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(response)) => Ok(response),
            _ => {
                self.requests().pending.remove(&id);
                Err(ApiError::Unavailable(format!(
                    "no worker answered within {REQUEST_TIMEOUT:?}"
                )))
            }
        }
    }

    /// Records statuses reported by the worker that owns each unit; reports of units it does
    /// not own (a stale worker) are ignored.
    pub async fn report(&self, report: wire::StatusReport) -> Result<(), ApiError> {
        let mut inner = self.inner.lock().await;
        if let Some(w) = inner.workers.get_mut(&report.worker_id) {
            w.last_seen = Instant::now();
        }
        let before = inner.releasing.len();
        for r in &report.released {
            let unit = Unit {
                connector: r.connector.clone(),
                task: r.task,
            };
            if inner
                .releasing
                .get(&unit)
                .is_some_and(|(old, _)| *old == report.worker_id)
            {
                inner.releasing.remove(&unit);
            }
        }
        if report.full {
            // A full snapshot lists everything the worker runs: what it does not list, it
            // does not run.
            let listed: BTreeSet<Unit> = report
                .statuses
                .iter()
                .map(|s| Unit {
                    connector: s.connector.clone(),
                    task: s.task,
                })
                .collect();
            let worker = &report.worker_id;
            inner
                .releasing
                .retain(|unit, (old, _)| old != worker || listed.contains(unit));
        }
        if inner.releasing.len() != before {
            self.changed.notify_one();
        }
        let mut wrote = false;
        for s in report.statuses {
            let unit = Unit {
                connector: s.connector,
                task: s.task,
            };
            if inner.placement.get(&unit) != Some(&report.worker_id) {
                continue;
            }
            if let Some(record) = inner.connectors.get_mut(&unit.connector) {
                let before = record.topics.len();
                record.topics.extend(s.topics);
                if record.topics.len() != before {
                    self.store.put_connector(&unit.connector, record)?;
                    wrote = true;
                }
            }
            let record = StatusRecord {
                state: state_from_wire(s.state),
                worker_id: report.worker_id.clone(),
                trace: s.trace,
            };
            if inner.statuses.get(&unit) != Some(&record) {
                self.store.put_status(&unit, &record)?;
                inner.statuses.insert(unit, record);
                wrote = true;
            }
        }
        drop(inner);
        if wrote {
            self.store.flush().await?;
        }
        Ok(())
    }

    /// Stores task configs planned for the connector's current config version.
    pub async fn submit_tasks(
        &self,
        request: wire::SubmitTaskConfigsRequest,
    ) -> Result<bool, ApiError> {
        let mut inner = self.inner.lock().await;
        let Some(record) = inner.connectors.get_mut(&request.connector) else {
            return Ok(false);
        };
        if record.config_version != request.config_version {
            return Ok(false);
        }
        let tasks: Vec<BTreeMap<String, String>> = request
            .tasks
            .into_iter()
            .map(|t| t.config.into_iter().collect())
            .collect();
        let kind = match api::ConnectorType::try_from(request.r#type) {
            Ok(api::ConnectorType::Sink) => Some("sink".to_string()),
            Ok(api::ConnectorType::Source) => Some("source".to_string()),
            _ => record.kind.clone(),
        };
        if record.tasks == tasks
            && record.tasks_version == request.config_version
            && record.kind == kind
        {
            return Ok(true);
        }
        let old = record.tasks.len() as u32;
        record.tasks = tasks;
        record.tasks_version = request.config_version;
        record.kind = kind;
        let new = record.tasks.len() as u32;
        let record = record.clone();
        self.store.put_connector(&request.connector, &record)?;
        for t in new..old {
            let unit = Unit::task(&request.connector, t);
            self.store.remove_status(&unit)?;
            inner.statuses.remove(&unit);
        }
        self.store.flush().await?;
        tracing::info!(connector = %request.connector, tasks = new, "task configs stored");
        drop(inner);
        self.changed.notify_one();
        Ok(true)
    }

    /// Runs until cancelled. Every change recomputes the placement at once; in between, a
    /// 200 ms tick only looks for workers that went silent and for assignments still unsent.
    pub async fn run(&self, shutdown: tokio_util::sync::CancellationToken) {
        let mut force = true;
        loop {
            if let Err(e) = self.reconcile(force).await {
                tracing::error!("reconcile: {e}");
            }
            force = tokio::select! {
                _ = self.changed.notified() => true,
                _ = tokio::time::sleep(Duration::from_millis(200)) => false,
                _ = shutdown.cancelled() => return,
            };
        }
    }

    /// Expires silent workers; then, if anything changed (or `force`), recomputes the
    /// placement and sends each worker whose assignment differs its new one.
    pub async fn reconcile(&self, force: bool) -> Result<(), ApiError> {
        let mut inner = self.inner.lock().await;
        let now = Instant::now();
        let mut changed = force;
        let silent = |w: &WorkerEntry| now.duration_since(w.last_seen) > self.worker_timeout;
        let dead: Vec<String> = inner
            .workers
            .iter()
            .filter(|(_, w)| w.stream.is_none() && silent(w))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &dead {
            tracing::warn!(worker = %id, "worker gone for {:?}; moving its work", self.worker_timeout);
            inner.workers.remove(id);
            self.store.remove_worker(id)?;
            changed = true;
        }
        for (id, w) in inner.workers.iter_mut() {
            if w.stream.is_some() && silent(w) {
                // Connected but not heartbeating: hung. Its work moves once the timeout
                // passes again without it rejoining.
                tracing::warn!(worker = %id, "worker stopped heartbeating; dropping its stream");
                w.stream = None;
            }
            // A send that failed is retried.
            changed |= w.stream.is_some() && w.last_sent.is_none();
        }
        changed |= inner
            .releasing
            .values()
            .any(|(_, since)| now.duration_since(*since) >= RELEASE_TIMEOUT);
        if !changed {
            return Ok(());
        }

        let work = desired_work(&inner.connectors);
        let slots: Vec<Slot> = inner
            .workers
            .iter()
            .map(|(id, w)| Slot {
                id: id.clone(),
                classes: w
                    .plugins
                    .iter()
                    .flat_map(|p| {
                        std::iter::once(p.class_name.clone()).chain(p.aliases.iter().cloned())
                    })
                    .collect(),
                capacity: (w.capacity > 0).then_some(w.capacity),
            })
            .collect();
        let placement = scheduler::assign(&work, &slots, &inner.placement);
        {
            let Inner {
                releasing,
                workers,
                placement: previous,
                ..
            } = &mut *inner;
            // Moved, or taken away (a stop): if it comes back elsewhere before its old owner
            // drained it, it waits too.
            for (unit, old) in previous.iter() {
                let moved = placement.get(unit) != Some(old);
                if moved && workers.get(old).is_some_and(|w| w.stream.is_some()) {
                    releasing
                        .entry(unit.clone())
                        .or_insert_with(|| (old.clone(), now));
                }
            }
            // Releases that will not come: the old owner is gone, the unit is back on it (the
            // worker itself waits for its predecessor), or the drain took too long.
            releasing.retain(|unit, (old, since)| {
                let keep = workers.contains_key(old)
                    && placement.get(unit) != Some(old)
                    && now.duration_since(*since) < RELEASE_TIMEOUT;
                if !keep && now.duration_since(*since) >= RELEASE_TIMEOUT {
                    tracing::warn!(worker = %old, ?unit, "no release within {RELEASE_TIMEOUT:?}; starting the unit on its new worker");
                }
                keep
            });
        }
        // Assignments compared without their generation, which is set only when sent.
        let mut owned: BTreeMap<&str, Vec<&Unit>> = BTreeMap::new();
        for (unit, owner) in &placement {
            if inner.releasing.contains_key(unit) {
                continue;
            }
            owned.entry(owner.as_str()).or_default().push(unit);
        }
        let messages: BTreeMap<String, wire::Assignment> = inner
            .workers
            .keys()
            .map(|id| {
                let units = owned.get(id.as_str()).map_or(&[][..], Vec::as_slice);
                (id.clone(), assignment_for(units, &inner.connectors))
            })
            .collect();
        let stale = |inner: &Inner, id: &String| {
            inner.workers[id].stream.is_some()
                && inner.workers[id].last_sent.as_ref() != messages.get(id)
        };
        if placement == inner.placement && !inner.workers.keys().any(|id| stale(&inner, id)) {
            return Ok(());
        }
        inner.generation += 1;
        let generation = inner.generation;
        self.store
            .put_placement(&inner.placement, &placement, generation)?;
        self.store.flush().await?;
        inner.placement = placement;
        for (id, message) in messages {
            let Some(w) = inner.workers.get_mut(&id) else {
                continue;
            };
            let Some(stream) = &w.stream else { continue };
            if w.last_sent.as_ref() == Some(&message) {
                continue;
            }
            let sent = wire::Assignment {
                generation,
                cluster_id: self.cluster_id.clone(),
                ..message.clone()
            };
            if stream.try_send(Ok(sent)).is_ok() {
                w.last_sent = Some(message);
            } else {
                tracing::warn!(worker = %id, "assignment stream full or closed; will retry");
                w.last_sent = None;
            }
        }
        tracing::info!(
            generation,
            units = inner.placement.len(),
            workers = inner.workers.len(),
            "assignment"
        );
        Ok(())
    }
}

/// Every unit that should run: a planning instance per connector not stopped, and its tasks.
pub fn desired_work(connectors: &BTreeMap<String, ConnectorRecord>) -> Vec<Work> {
    let mut work = Vec::new();
    for (name, record) in connectors {
        if record.target_state == TargetState::Stopped {
            continue;
        }
        let class = record
            .config
            .get("connector.class")
            .cloned()
            .unwrap_or_default();
        work.push(Work {
            unit: Unit::planning(name),
            class: class.clone(),
        });
        for t in 0..record.tasks.len() as u32 {
            work.push(Work {
                unit: Unit::task(name, t),
                class: class.clone(),
            });
        }
    }
    work
}

/// The assignment message of a worker owning `units`.
fn assignment_for(
    units: &[&Unit],
    connectors: &BTreeMap<String, ConnectorRecord>,
) -> wire::Assignment {
    let mut names = BTreeSet::new();
    let mut planning = Vec::new();
    let mut tasks = Vec::new();
    for unit in units {
        let Some(record) = connectors.get(&unit.connector) else {
            continue;
        };
        names.insert(unit.connector.clone());
        match unit.task {
            None => planning.push(unit.connector.clone()),
            Some(t) => tasks.push(wire::TaskAssignment {
                connector: unit.connector.clone(),
                task: t,
                config: record
                    .tasks
                    .get(t as usize)
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                restart_epoch: record.task_restart_epochs.get(&t).copied().unwrap_or(0),
            }),
        }
    }
    let connectors = names
        .into_iter()
        .filter_map(|name| {
            let record = connectors.get(&name)?;
            Some(wire::ConnectorConfig {
                name,
                config: record.config.clone().into_iter().collect(),
                config_version: record.config_version,
                target_state: target_to_wire(record.target_state) as i32,
                restart_epoch: record.restart_epoch,
            })
        })
        .collect();
    wire::Assignment {
        generation: 0,
        connectors,
        planning,
        tasks,
        cluster_id: String::new(),
    }
}

pub fn target_to_wire(t: TargetState) -> api::TargetState {
    match t {
        TargetState::Running => api::TargetState::Running,
        TargetState::Paused => api::TargetState::Paused,
        TargetState::Stopped => api::TargetState::Stopped,
    }
}

pub fn state_to_wire(s: State) -> api::State {
    match s {
        State::Unassigned => api::State::Unassigned,
        State::Running => api::State::Running,
        State::Paused => api::State::Paused,
        State::Stopped => api::State::Stopped,
        State::Failed => api::State::Failed,
        State::Restarting => api::State::Restarting,
    }
}

pub fn state_from_wire(s: i32) -> State {
    match api::State::try_from(s) {
        Ok(api::State::Running) => State::Running,
        Ok(api::State::Paused) => State::Paused,
        Ok(api::State::Stopped) => State::Stopped,
        Ok(api::State::Failed) => State::Failed,
        Ok(api::State::Restarting) => State::Restarting,
        _ => State::Unassigned,
    }
}
