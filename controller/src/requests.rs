//! Requests the controller makes of workers over their request streams: what needs Kafka
//! (reading and altering a connector's offsets) and cluster-scoped logger levels. The
//! controller never talks to Kafka itself.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_model::{UnitKey, WorkerId};
use sluice_proto::cluster::v1 as wire;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::store::{State, TargetState, Write};

pub type RequestSender = mpsc::Sender<Result<wire::WorkerRequest, Status>>;

/// How long a request to a worker (offsets, a logger level) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests in flight to workers, and the streams they go out on.
#[derive(Default)]
pub struct Requests {
    next_id: u64,
    streams: BTreeMap<WorkerId, RequestSender>,
    pending: BTreeMap<u64, oneshot::Sender<wire::WorkerResponse>>,
}

impl Requests {
    /// Sends `request` (with a fresh id) to `worker`: the id and where its answer arrives, or
    /// `None` when the worker has no open stream or it is full.
    fn send(
        &mut self,
        worker: &WorkerId,
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

impl Cluster {
    fn requests(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker opened its request stream; requests for it go to `tx` from now on. It gets
    /// the cluster's logger levels first.
    pub async fn open_requests(&self, worker: &str, tx: RequestSender) {
        let levels = self.read(|s| s.desired.log_levels.clone()).await;
        let worker = WorkerId::new(worker);
        let mut requests = self.requests();
        requests.streams.insert(worker.clone(), tx);
        for (logger, level) in levels {
            // Not awaited: the worker applies them as it starts.
            if let Some((id, _)) = requests.send(&worker, log_level_request(logger, level)) {
                requests.pending.remove(&id);
            }
        }
    }

    /// A worker answered a request.
    pub fn respond(&self, response: wire::WorkerResponse) {
        if let Some(waiter) = self.requests().pending.remove(&response.id) {
            let _ = waiter.send(response);
        }
    }

    /// Stores a cluster-scoped logger level and sends it to every connected worker; returns
    /// the workers that applied it.
    pub async fn set_cluster_level(
        &self,
        logger: &str,
        level: &str,
    ) -> Result<Vec<String>, ApiError> {
        self.mutate(|state, writes| {
            let levels = &mut state.desired.log_levels;
            levels.insert(logger.to_string(), level.to_string());
            writes.push(Write::LogLevels(levels.clone()));
            Ok(())
        })
        .await?;
        let waiting: Vec<_> = {
            let mut requests = self.requests();
            let workers: Vec<WorkerId> = requests.streams.keys().cloned().collect();
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
                    applied.push(worker.into_string())
                }
                _ => {
                    self.requests().pending.remove(&id);
                    tracing::warn!(worker = %worker, "did not apply logger level {logger}={level}");
                }
            }
        }
        Ok(applied)
    }

    /// Sends an offsets request for `name` to a worker and returns its result. Changes need
    /// the connector STOPPED, as in Kafka Connect, so that no task holds the offsets.
    pub async fn offsets_request(
        &self,
        name: &str,
        change: bool,
        kind: wire::worker_request::Kind,
    ) -> Result<wire::worker_response::Result, ApiError> {
        let request = self
            .read(|state| {
                let record = state.connector(name)?;
                if change && record.target_state != TargetState::Stopped {
                    return Err(ApiError::FailedPrecondition(format!(
                        "connector {name} must be STOPPED to change its offsets (its target state is {}); stop it with StopConnector first",
                        record.target_state.to_wire().as_str_name()
                    )));
                }
                if change {
                    let running: Vec<String> = state
                        .observed
                        .statuses
                        .iter()
                        .filter(|(u, s)| {
                            u.connector == name && u.task.is_some() && s.state == State::Running
                        })
                        .filter(|(u, _)| state.desired.placement.contains_key(*u))
                        .filter_map(|(u, _)| u.task.map(|t| t.to_string()))
                        .collect();
                    if !running.is_empty() {
                        return Err(ApiError::FailedPrecondition(format!(
                            "connector {name} still has running tasks ({}); wait for them to stop",
                            running.join(", ")
                        )));
                    }
                }
                Ok(wire::WorkerRequest {
                    id: 0,
                    connector: Some(wire::ConnectorConfig {
                        name: name.to_string(),
                        config: record.config.clone().into_iter().collect(),
                        config_version: record.config_version,
                        target_state: record.target_state.to_wire() as i32,
                        restart_epoch: record.restart_epoch,
                    }),
                    r#type: crate::views::kind_of(record) as i32,
                    kind: Some(kind),
                })
            })
            .await?;
        let response = self.ask(name, request).await?;
        match response.result {
            Some(wire::worker_response::Result::Error(e)) => Err(ApiError::Internal(format!(
                "worker {}: {e}",
                response.worker_id
            ))),
            Some(wire::worker_response::Result::Invalid(e)) => Err(ApiError::InvalidArgument(e)),
            Some(result) => Ok(result),
            None => Err(ApiError::Internal("the worker gave no result".into())),
        }
    }

    /// Has a worker carry out `request` for `connector`: the one planning it if it can, else
    /// any connected worker with the connector's plugin. Waits for the answer.
    async fn ask(
        &self,
        connector: &str,
        request: wire::WorkerRequest,
    ) -> Result<wire::WorkerResponse, ApiError> {
        let candidates: Vec<WorkerId> = self
            .read(|state| {
                let class = state
                    .desired
                    .connectors
                    .get(connector)
                    .and_then(|r| r.config.get("connector.class"))
                    .cloned()
                    .unwrap_or_default();
                let planner = state.desired.placement.get(&UnitKey::planning(connector));
                let mut capable: Vec<WorkerId> = state
                    .observed
                    .workers
                    .iter()
                    .filter(|(_, w)| w.stream.is_some() && w.has_plugin(&class))
                    .map(|(id, _)| id.clone())
                    .collect();
                if let Some(at) = planner.and_then(|p| capable.iter().position(|w| w == p)) {
                    capable.swap(0, at);
                }
                capable
            })
            .await;
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
}
