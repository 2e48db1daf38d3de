//! `Cluster`: the controller's state behind one private lock, and the only way to read or
//! change it. Every change produces its store writes under the lock and hands them to the
//! journal there (so they reach sled in order); callers are answered once the journal made
//! them durable, after the lock is released. The worker protocol's side lives here (joins,
//! heartbeats, status reports, task configs) and the reconcile loop that applies
//! [`crate::reconcile`]'s outcome; the public API's operations are in `connectors.rs`,
//! `plugins.rs` and `requests.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_model::{UnitKey, WorkerId};
use sluice_proto::api::v1 as api;
use sluice_proto::cluster::v1 as wire;
use tokio::sync::{Mutex, Notify};

use crate::error::ApiError;
use crate::journal::Journal;
use crate::reconcile::{self, Timeouts, Update};
use crate::requests::{RequestSender, Requests};
use crate::state::{self, AssignmentSender, State, WorkerEntry};
use crate::store::{StatusRecord, Store, StoreError, WorkerRecord, Write};

/// How long a move waits for the old owner's release: its drain deadline and some.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(40);

pub struct Cluster {
    state: Mutex<State>,
    journal: Journal,
    /// Wakes the reconcile loop after a durable change.
    changed: Notify,
    pub cluster_id: String,
    /// A worker silent this long is declared dead and its work moves.
    pub worker_timeout: Duration,
    pub(crate) requests: Requests,
}

impl Cluster {
    /// Loads the durable state and starts the journal.
    pub fn open(store: Store, worker_timeout: Duration) -> Result<Cluster, ApiError> {
        let state = State::load(&store)?;
        let cluster_id = store.cluster_id()?;
        let journal = Journal::start(Arc::new(store))
            .map_err(|e| StoreError::Journal(format!("start the journal thread: {e}")))?;
        Ok(Cluster {
            state: Mutex::new(state),
            journal,
            changed: Notify::new(),
            cluster_id,
            worker_timeout,
            requests: Requests::default(),
        })
    }

    /// Reads the state.
    pub(crate) async fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&*self.state.lock().await)
    }

    /// Changes the state: `f` returns its answer and pushes its store writes. The writes are
    /// queued under the lock and awaited after it; a durable change wakes the reconcile loop.
    pub(crate) async fn mutate<R>(
        &self,
        f: impl FnOnce(&mut State, &mut Vec<Write>) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        self.commit(f, true).await
    }

    /// As [`Cluster::mutate`], for a change of observed state only (statuses, topics used):
    /// nothing to place anew, so the reconcile loop is not woken.
    pub(crate) async fn record<R>(
        &self,
        f: impl FnOnce(&mut State, &mut Vec<Write>) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        self.commit(f, false).await
    }

    async fn commit<R>(
        &self,
        f: impl FnOnce(&mut State, &mut Vec<Write>) -> Result<R, ApiError>,
        reconcile: bool,
    ) -> Result<R, ApiError> {
        let mut writes = Vec::new();
        let (answer, ticket) = {
            let mut state = self.state.lock().await;
            let answer = f(&mut state, &mut writes)?;
            let ticket = (!writes.is_empty()).then(|| self.journal.submit(writes));
            (answer, ticket)
        };
        if let Some(ticket) = ticket {
            ticket.durable().await?;
            if reconcile {
                self.changed.notify_one();
            }
        }
        Ok(answer)
    }

    /// Waits until every change so far is durable.
    pub async fn close(&self) -> Result<(), ApiError> {
        self.journal.submit(Vec::new()).durable().await?;
        Ok(())
    }

    /// Registers a (re)joining worker and the stream its assignments go to.
    pub async fn join(
        &self,
        request: wire::JoinRequest,
        tx: AssignmentSender,
    ) -> Result<(), ApiError> {
        let id = WorkerId::new(request.worker_id);
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
        self.mutate(|state, writes| {
            writes.push(Write::Worker(id.clone(), record));
            tracing::info!(worker = %id, plugins = request.plugins.len(), "worker joined");
            state.observed.membership += 1;
            state.observed.workers.insert(
                id,
                WorkerEntry {
                    plugins: request.plugins,
                    broken: request.broken_plugins,
                    capacity: request.capacity,
                    last_seen: Instant::now(),
                    stream: Some(tx),
                    sent: None,
                    sent_generation: 0,
                    accepts_deltas: request.accepts_deltas,
                    draining: false,
                },
            );
            Ok(())
        })
        .await
    }

    /// A worker opened its request stream; it gets the cluster's logger levels first.
    pub async fn open_requests(&self, worker: &str, tx: RequestSender) {
        let levels = self.read(|s| s.desired.log_levels.clone()).await;
        self.requests.open(WorkerId::new(worker), tx, levels);
    }

    /// A worker answered a request.
    pub fn respond(&self, response: wire::WorkerResponse) {
        self.requests.respond(response);
    }

    /// Stores a cluster-scoped logger level and sends it to every connected worker; returns
    /// the workers that applied it.
    pub async fn set_cluster_level(
        &self,
        logger: &str,
        level: &str,
    ) -> Result<Vec<String>, ApiError> {
        self.record(|state, writes| {
            let levels = &mut state.desired.log_levels;
            levels.insert(logger.to_string(), level.to_string());
            writes.push(Write::LogLevels(levels.clone()));
            Ok(())
        })
        .await?;
        Ok(self.requests.set_level(logger, level).await)
    }

    /// Whether the worker is known (else it must join again), and whether it was drained and
    /// should leave: it is draining, runs no unit, and none of its units waits for its release.
    pub async fn heartbeat(&self, worker: &str) -> (bool, bool) {
        let mut state = self.state.lock().await;
        let state = &mut *state;
        match state.observed.workers.get_mut(worker) {
            Some(w) if w.stream.is_some() => {
                w.last_seen = Instant::now();
                let drained = w.draining
                    && !state
                        .desired
                        .placement
                        .values()
                        .any(|o| o.as_str() == worker)
                    && !state
                        .observed
                        .releasing
                        .values()
                        .any(|(old, _)| old.as_str() == worker);
                (true, drained)
            }
            _ => (false, false),
        }
    }

    /// Starts draining a connected worker: its units are placed elsewhere at once.
    pub async fn drain(&self, worker: &str) -> Result<api::WorkerDescription, ApiError> {
        let described = {
            let mut state = self.state.lock().await;
            let entry = state
                .observed
                .workers
                .get_mut(worker)
                .filter(|w| w.stream.is_some())
                .ok_or_else(|| ApiError::WorkerNotFound(worker.to_string()))?;
            if !entry.draining {
                entry.draining = true;
                state.observed.membership += 1;
                tracing::info!(worker, "draining the worker: its units move to the others");
            }
            crate::views::workers(&state)
                .into_iter()
                .find(|w| w.id == worker)
        };
        self.changed.notify_one();
        described.ok_or_else(|| ApiError::WorkerNotFound(worker.to_string()))
    }

    /// The worker's assignment stream ended (it disconnected or died).
    pub async fn disconnected(&self, worker: &str, tx: &AssignmentSender) {
        let mut state = self.state.lock().await;
        if let Some(w) = state.observed.workers.get_mut(worker) {
            if w.stream.as_ref().is_some_and(|s| s.same_channel(tx)) {
                tracing::info!(worker, "worker disconnected");
                w.disconnect();
            }
        }
    }

    /// Records statuses reported by the worker that owns each unit; reports of units it does
    /// not own (a stale worker) are ignored.
    pub async fn report(&self, report: wire::StatusReport) -> Result<(), ApiError> {
        let worker = WorkerId::new(report.worker_id);
        self.record(|state, writes| {
            let observed = &mut state.observed;
            if let Some(w) = observed.workers.get_mut(&worker) {
                w.last_seen = Instant::now();
            }
            let mut released = Vec::new();
            for r in &report.released {
                let unit = UnitKey::from_wire(&r.connector, r.task);
                if observed
                    .releasing
                    .get(&unit)
                    .is_some_and(|(old, _)| *old == worker)
                {
                    observed.releasing.remove(&unit);
                    released.push(unit);
                }
            }
            if report.full {
                // A full snapshot lists everything the worker runs: what it does not
                // list, it does not run.
                let listed: BTreeSet<UnitKey> = report
                    .statuses
                    .iter()
                    .map(|s| UnitKey::from_wire(&s.connector, s.task))
                    .collect();
                observed.releasing.retain(|unit, (old, _)| {
                    let keep = *old != worker || listed.contains(unit);
                    if !keep {
                        released.push(unit.clone());
                    }
                    keep
                });
            }
            // The new owner of a released unit gets it in its next assignment.
            for unit in &released {
                state.desired.connectors.touch(&unit.connector);
            }
            if !released.is_empty() {
                // A release is no durable fact: the unit's new owner may start it now,
                // without waiting for this report's statuses to reach the disk.
                self.changed.notify_one();
            }
            for s in report.statuses {
                let unit = UnitKey::from_wire(&s.connector, s.task);
                if state.desired.placement.get(&unit) != Some(&worker) {
                    continue;
                }
                let connectors = &mut state.desired.connectors;
                let new_topic = connectors
                    .get(&unit.connector)
                    .is_some_and(|r| s.topics.iter().any(|t| !r.topics.contains(t)));
                if let Some(record) = connectors.get_mut(&unit.connector).filter(|_| new_topic) {
                    record.topics.extend(s.topics);
                    writes.push(Write::Connector(unit.connector.clone(), record.clone()));
                }
                let record = StatusRecord {
                    state: crate::store::State::from_wire(s.state),
                    worker_id: worker.clone(),
                    trace: s.trace,
                };
                if state.observed.statuses.get(&unit) != Some(&record) {
                    writes.push(Write::Status(unit.clone(), record.clone()));
                    state.observed.statuses.insert(unit, record);
                }
            }
            Ok(())
        })
        .await
    }

    /// Stores task configs planned for the connector's current config version.
    pub async fn submit_tasks(
        &self,
        request: wire::SubmitTaskConfigsRequest,
    ) -> Result<bool, ApiError> {
        let trace = sluice_telemetry::current();
        self.mutate(|state, writes| {
            let Some(record) = state.desired.connectors.get_mut(request.connector.as_str()) else {
                return Ok(false);
            };
            if record.config_version != request.config_version {
                return Ok(false);
            }
            let tasks: Vec<_> = request
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
            let before = record.clone();
            record.tasks = tasks;
            record.tasks_version = request.config_version;
            record.kind = kind;
            record.stamp(Some(&before), &trace);
            let new = record.tasks.len() as u32;
            let name = sluice_model::ConnectorName::from_trusted(request.connector.as_str());
            writes.push(Write::Connector(name, record.clone()));
            for t in new..old {
                let unit = UnitKey::task(&request.connector, t);
                writes.push(Write::RemoveStatus(unit.clone()));
                state.observed.statuses.remove(&unit);
            }
            tracing::info!(connector = %request.connector, tasks = new, "task configs stored");
            Ok(true)
        })
        .await
    }

    /// Runs until cancelled. Every change recomputes the placement at once; in between, a
    /// pass runs when a worker's silence or a release reaches its timeout, and at least
    /// every 200 ms to retry assignments whose send failed.
    pub async fn run(&self, shutdown: tokio_util::sync::CancellationToken) {
        let mut force = true;
        loop {
            let deadline = self.reconcile(force).await.unwrap_or_else(|e| {
                tracing::error!("reconcile: {e}");
                None
            });
            let now = Instant::now();
            let tick = now + Duration::from_millis(200);
            // A deadline already passed is handled by the pass just made; never spin on one.
            let wake = deadline.map_or(tick, |at| at.clamp(now + Duration::from_millis(10), tick));
            force = tokio::select! {
                _ = self.changed.notified() => true,
                _ = tokio::time::sleep_until(wake.into()) => false,
                _ = shutdown.cancelled() => return,
            };
        }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            worker: self.worker_timeout,
            release: RELEASE_TIMEOUT,
        }
    }

    /// Applies one [`reconcile::reconcile`] outcome: forgets dead workers, drops hung
    /// streams, stores a new placement, and (once it is durable) sends each worker whose
    /// assignment differs its new one. Returns when the next pass is due without a change
    /// ([`reconcile::next_deadline`]).
    pub async fn reconcile(&self, force: bool) -> Result<Option<Instant>, ApiError> {
        let timeouts = self.timeouts();
        let mut writes = Vec::new();
        let (sends, generation, ticket, deadline) = {
            let mut state = self.state.lock().await;
            let started = Instant::now();
            let outcome = reconcile::reconcile(
                &state.desired,
                &state.observed,
                Instant::now(),
                force,
                timeouts,
            );
            let State { desired, observed } = &mut *state;
            for id in &outcome.dead {
                tracing::warn!(worker = %id, "worker gone for {:?}; moving its work", self.worker_timeout);
                observed.workers.remove(id);
                writes.push(Write::RemoveWorker(id.clone()));
            }
            for id in &outcome.hung {
                // Connected but not heartbeating: hung. Its work moves once it is found
                // silent again without having rejoined.
                tracing::warn!(worker = %id, "worker stopped heartbeating; dropping its stream");
                if let Some(w) = observed.workers.get_mut(id) {
                    w.disconnect();
                }
            }
            if let Some(releasing) = outcome.releasing {
                observed.releasing = releasing;
                // Every connector change so far is placed and sent below.
                desired.connectors.take_changed();
                desired.complete_for = outcome.complete.then_some(observed.membership);
            }
            let mut sends = Vec::new();
            if let Some(next) = outcome.next {
                desired.placement.apply(&next.change);
                writes.push(Write::Placement(next.change));
                desired.generation = next.generation;
                let generation = next.generation.0;
                for (id, update) in next.assignments {
                    let Some(w) = observed.workers.get_mut(&id) else {
                        continue;
                    };
                    let Some(stream) = w.stream.clone() else {
                        continue;
                    };
                    let base = std::mem::replace(&mut w.sent_generation, generation);
                    let delta = match &update {
                        Update::Delta(changes) if w.accepts_deltas => {
                            Some(state::delta(changes, base, generation, &self.cluster_id))
                        }
                        _ => None,
                    };
                    // Held once sent; a failed send below forgets it, so the next tick sends
                    // the whole assignment again.
                    let held = update.apply_to(&mut w.sent);
                    let message =
                        delta.unwrap_or_else(|| state::whole(held, generation, &self.cluster_id));
                    sends.push((id, stream, message));
                }
                tracing::info!(
                    generation = %desired.generation,
                    units = desired.placement.len(),
                    workers = observed.workers.len(),
                    "assignment"
                );
            }
            let ticket = (!writes.is_empty()).then(|| self.journal.submit(writes));
            let deadline = reconcile::next_deadline(observed, timeouts);
            tracing::debug!(elapsed = ?started.elapsed(), sends = sends.len(), "reconcile pass");
            (sends, desired.generation, ticket, deadline)
        };
        if let Some(ticket) = ticket {
            // The placement is durable before any worker acts on it.
            ticket.durable().await?;
        }
        if sends.is_empty() {
            return Ok(deadline);
        }
        let mut failed = Vec::new();
        for (id, stream, message) in sends {
            if !stream.send(message) {
                tracing::warn!(worker = %id, "assignment stream closed; will retry");
                failed.push(id);
            }
        }
        if !failed.is_empty() {
            let mut state = self.state.lock().await;
            for id in failed {
                if let Some(w) = state.observed.workers.get_mut(&id) {
                    if w.sent_generation == generation.0 {
                        w.sent = None;
                    }
                }
            }
        }
        Ok(deadline)
    }
}
