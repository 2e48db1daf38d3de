//! `WorkerControl`: the worker protocol — joins with their assignment streams, request
//! streams and answers, heartbeats, status reports, task configs.

use std::pin::Pin;
use std::sync::Arc;

use sluice_proto::cluster::v1::{self as wire, worker_control_server::WorkerControl};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{ok, Api, ApiResult};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::state::AssignmentSender;

type AssignmentStream = Pin<Box<dyn Stream<Item = Result<wire::Assignment, Status>> + Send>>;
type RequestStream = Pin<Box<dyn Stream<Item = Result<wire::WorkerRequest, Status>> + Send>>;

/// Ends a worker's registration when its assignment stream is dropped (the worker went away).
struct StreamGuard {
    cluster: Arc<Cluster>,
    worker: String,
    tx: AssignmentSender,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let cluster = self.cluster.clone();
        let worker = std::mem::take(&mut self.worker);
        let tx = self.tx.clone();
        tokio::spawn(async move { cluster.disconnected(&worker, &tx).await });
    }
}

#[tonic::async_trait]
impl WorkerControl for Api {
    type JoinStream = AssignmentStream;
    type RequestsStream = RequestStream;

    async fn requests(
        &self,
        request: Request<wire::RequestsRequest>,
    ) -> ApiResult<Self::RequestsStream> {
        let worker = request.into_inner().worker_id;
        if worker.is_empty() {
            return Err(ApiError::InvalidArgument("worker_id is required".into()).into());
        }
        let (tx, rx) = mpsc::channel(16);
        self.cluster.open_requests(&worker, tx).await;
        let stream = futures::StreamExt::take_until(
            ReceiverStream::new(rx),
            self.stopping.clone().cancelled_owned(),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn respond(
        &self,
        request: Request<wire::WorkerResponse>,
    ) -> ApiResult<wire::RespondResponse> {
        self.cluster.respond(request.into_inner());
        ok(wire::RespondResponse {})
    }

    async fn join(&self, request: Request<wire::JoinRequest>) -> ApiResult<Self::JoinStream> {
        let request = request.into_inner();
        if request.worker_id.is_empty() {
            return Err(ApiError::InvalidArgument("worker_id is required".into()).into());
        }
        let (tx, assignments) = AssignmentSender::channel();
        let worker = request.worker_id.clone();
        self.cluster.join(request, tx.clone()).await?;
        let guard = StreamGuard {
            cluster: self.cluster.clone(),
            worker,
            tx,
        };
        let stream = tokio_stream::StreamExt::map(assignments, move |assignment| {
            let _ = &guard;
            Ok(assignment)
        });
        let stream =
            futures::StreamExt::take_until(stream, self.stopping.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn heartbeat(
        &self,
        request: Request<wire::HeartbeatRequest>,
    ) -> ApiResult<wire::HeartbeatResponse> {
        let (known, leave) = self.cluster.heartbeat(&request.get_ref().worker_id).await;
        ok(wire::HeartbeatResponse {
            rejoin: !known,
            worker_timeout_ms: self.cluster.worker_timeout.as_millis() as u64,
            leave,
        })
    }

    async fn report_status(
        &self,
        request: Request<wire::StatusReport>,
    ) -> ApiResult<wire::StatusReportResponse> {
        self.cluster.report(request.into_inner()).await?;
        ok(wire::StatusReportResponse {})
    }

    async fn submit_task_configs(
        &self,
        request: Request<wire::SubmitTaskConfigsRequest>,
    ) -> ApiResult<wire::SubmitTaskConfigsResponse> {
        let accepted = self.cluster.submit_tasks(request.into_inner()).await?;
        ok(wire::SubmitTaskConfigsResponse { accepted })
    }
}
