//! The gRPC services: the public API (connectors, plugins, cluster) and the worker protocol.
//! Translation only: each call turns its request into one `Cluster` operation and the result
//! into its response; errors become statuses in `error.rs`. No lock is taken here.

mod cluster;
mod connectors;
mod plugins;
mod workers;

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Response, Status};

use crate::cluster::Cluster;

#[derive(Clone)]
pub struct Api {
    pub cluster: Arc<Cluster>,
    pub log_control: Option<crate::LogControl>,
    /// This controller's logger levels.
    pub levels: Arc<std::sync::Mutex<BTreeMap<String, String>>>,
    /// Cancelled when the controller stops: the workers' long-lived streams end then, so
    /// that the server's graceful stop (which waits for open calls) can finish.
    pub stopping: tokio_util::sync::CancellationToken,
}

type ApiResult<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> ApiResult<T> {
    Ok(Response::new(value))
}
