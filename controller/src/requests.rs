//! Requests the controller makes of workers over their request streams (what needs Kafka:
//! reading and altering a connector's offsets; cluster-scoped logger levels), and their
//! answers. The controller never talks to Kafka itself.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_model::WorkerId;
use sluice_proto::cluster::v1 as wire;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::error::ApiError;

pub type RequestSender = mpsc::Sender<Result<wire::WorkerRequest, Status>>;

/// How long a request to a worker (offsets, a logger level) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests in flight to workers, and the streams they go out on.
#[derive(Default)]
pub struct Requests(std::sync::Mutex<Streams>);

#[derive(Default)]
struct Streams {
    next_id: u64,
    streams: BTreeMap<WorkerId, RequestSender>,
    pending: BTreeMap<u64, oneshot::Sender<wire::WorkerResponse>>,
}

impl Streams {
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

impl Requests {
    fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker opened its request stream; requests for it go to `tx` from now on. It gets
    /// `levels` (the cluster's logger levels) first, not awaited: it applies them as it starts.
    pub fn open(&self, worker: WorkerId, tx: RequestSender, levels: BTreeMap<String, String>) {
        let mut streams = self.lock();
        streams.streams.insert(worker.clone(), tx);
        for (logger, level) in levels {
            if let Some((id, _)) = streams.send(&worker, log_level_request(logger, level)) {
                streams.pending.remove(&id);
            }
        }
    }

    /// A worker answered a request.
    pub fn respond(&self, response: wire::WorkerResponse) {
        if let Some(waiter) = self.lock().pending.remove(&response.id) {
            let _ = waiter.send(response);
        }
    }

    /// Sends a logger level to every connected worker; returns the workers that applied it.
    pub async fn set_level(&self, logger: &str, level: &str) -> Vec<String> {
        let waiting: Vec<_> = {
            let mut streams = self.lock();
            let workers: Vec<WorkerId> = streams.streams.keys().cloned().collect();
            workers
                .into_iter()
                .filter_map(|worker| {
                    let request = log_level_request(logger.to_string(), level.to_string());
                    let (id, rx) = streams.send(&worker, request)?;
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
                    self.lock().pending.remove(&id);
                    tracing::warn!(worker = %worker, "did not apply logger level {logger}={level}");
                }
            }
        }
        applied
    }

    /// Has the first of `candidates` that can take it carry out `request`, and waits for the
    /// answer.
    pub async fn ask(
        &self,
        candidates: &[WorkerId],
        request: wire::WorkerRequest,
        what: &str,
    ) -> Result<wire::WorkerResponse, ApiError> {
        let sent = {
            let mut streams = self.lock();
            candidates
                .iter()
                .find_map(|worker| streams.send(worker, request.clone()))
        };
        let Some((id, rx)) = sent else {
            return Err(ApiError::Unavailable(format!(
                "no connected worker can {what}"
            )));
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(response)) => Ok(response),
            _ => {
                self.lock().pending.remove(&id);
                Err(ApiError::Unavailable(format!(
                    "no worker answered within {REQUEST_TIMEOUT:?}"
                )))
            }
        }
    }
}
