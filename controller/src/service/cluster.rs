//! `ClusterService`: the cluster's identity, its workers, logger levels.

use sluice_proto::api::v1::{self as api, cluster_service_server::ClusterService};
use tonic::Request;

use super::{ok, Api, ApiResult};
use crate::error::ApiError;

/// Levels accepted by SetLogLevel (log4j's names, as Kafka Connect takes them).
const LEVELS: &[&str] = &["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "OFF"];

#[tonic::async_trait]
impl ClusterService for Api {
    async fn get_cluster_info(
        &self,
        _: Request<api::GetClusterInfoRequest>,
    ) -> ApiResult<api::ClusterInfo> {
        ok(self.cluster.cluster_info().await)
    }

    async fn list_workers(
        &self,
        _: Request<api::ListWorkersRequest>,
    ) -> ApiResult<api::ListWorkersResponse> {
        let workers = self.cluster.workers().await;
        ok(api::ListWorkersResponse { workers })
    }

    async fn drain_worker(
        &self,
        request: Request<api::DrainWorkerRequest>,
    ) -> ApiResult<api::DrainWorkerResponse> {
        let worker = self.cluster.drain(&request.get_ref().id).await?;
        ok(api::DrainWorkerResponse {
            worker: Some(worker),
        })
    }

    async fn list_loggers(
        &self,
        _: Request<api::ListLoggersRequest>,
    ) -> ApiResult<api::ListLoggersResponse> {
        let levels = self
            .levels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        ok(api::ListLoggersResponse {
            levels: levels.into_iter().collect(),
        })
    }

    async fn set_log_level(
        &self,
        request: Request<api::SetLogLevelRequest>,
    ) -> ApiResult<api::SetLogLevelResponse> {
        let r = request.into_inner();
        let level = r.level.trim().to_ascii_uppercase();
        let level = match level.as_str() {
            "WARNING" => "WARN".to_string(),
            "FATAL" => "ERROR".to_string(),
            "ALL" => "TRACE".to_string(),
            _ => level,
        };
        let mut errors = Vec::new();
        if !LEVELS.contains(&level.as_str()) {
            errors.push((
                "level".to_string(),
                format!("{} is not one of {}", r.level, LEVELS.join(", ")),
            ));
        }
        let logger = r.logger.trim().to_string();
        if logger.is_empty() || logger.contains([',', '=', ' ']) {
            errors.push((
                "logger".to_string(),
                "must be a target such as sluice_worker::task::source, or root".to_string(),
            ));
        }
        let cluster = match r.scope.as_str() {
            "" | "worker" => false,
            "cluster" => true,
            other => {
                errors.push((
                    "scope".to_string(),
                    format!("{other} is not worker or cluster"),
                ));
                false
            }
        };
        if !errors.is_empty() {
            return Err(ApiError::InvalidConfig(errors).into());
        }
        let Some(control) = &self.log_control else {
            return Err(ApiError::FailedPrecondition(
                "this controller's logging cannot be changed at run time".into(),
            )
            .into());
        };
        {
            let mut levels = self.levels.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = levels.clone();
            next.insert(logger.clone(), level.to_lowercase());
            control(&next).map_err(ApiError::Internal)?;
            *levels = next;
        }
        let mut loggers = vec![logger.clone()];
        if cluster {
            let answered = self.cluster.set_cluster_level(&logger, &level).await?;
            loggers.extend(answered.into_iter().map(|w| format!("{w}/{logger}")));
        }
        ok(api::SetLogLevelResponse { loggers })
    }
}
