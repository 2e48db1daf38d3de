//! The controller's errors and the one place they become gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("connector {0} not found")]
    ConnectorNotFound(String),
    #[error("task {1} of connector {0} not found")]
    TaskNotFound(String, u32),
    #[error("connector {0} already exists")]
    AlreadyExists(String),
    #[error("plugin {0} not found on any worker")]
    PluginNotFound(String),
    #[error("no connected worker {0}")]
    WorkerNotFound(String),
    #[error("invalid configuration: {}", .0.iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>().join("; "))]
    InvalidConfig(Vec<(String, String)>),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    /// Something failed inside the cluster (a worker's answer, the controller's logging).
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let message = e.to_string();
        match e {
            ApiError::ConnectorNotFound(_)
            | ApiError::TaskNotFound(..)
            | ApiError::PluginNotFound(_)
            | ApiError::WorkerNotFound(_) => Status::not_found(message),
            ApiError::AlreadyExists(_) => Status::already_exists(message),
            ApiError::InvalidConfig(violations) => {
                let mut details = ErrorDetails::new();
                for (field, description) in violations {
                    details.add_bad_request_violation(field, description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::InvalidArgument(_) => Status::invalid_argument(message),
            ApiError::FailedPrecondition(_) => Status::failed_precondition(message),
            ApiError::Unavailable(_) => Status::unavailable(message),
            ApiError::Internal(_) => Status::internal(message),
            ApiError::Store(_) => {
                tracing::error!("{message}");
                Status::internal(message)
            }
        }
    }
}
