//! `ConnectorService`: connectors, their tasks, statuses, topics, offsets and dry runs.

use sluice_proto::api::v1::{self as api, connector_service_server::ConnectorService};
use sluice_proto::cluster::v1 as wire;
use tonic::Request;

use super::{ok, Api, ApiResult};
use crate::dry_run;
use crate::error::ApiError;
use crate::store::TargetState;

fn target_from(t: i32) -> Result<TargetState, ApiError> {
    match api::TargetState::try_from(t) {
        Ok(api::TargetState::Unspecified) | Ok(api::TargetState::Running) => {
            Ok(TargetState::Running)
        }
        Ok(api::TargetState::Paused) => Ok(TargetState::Paused),
        Ok(api::TargetState::Stopped) => Ok(TargetState::Stopped),
        Err(_) => Err(ApiError::InvalidArgument(format!(
            "unknown initial_state {t}"
        ))),
    }
}

#[tonic::async_trait]
impl ConnectorService for Api {
    async fn list_connectors(
        &self,
        request: Request<api::ListConnectorsRequest>,
    ) -> ApiResult<api::ListConnectorsResponse> {
        let r = request.into_inner();
        let connectors = self
            .cluster
            .list_connectors(r.expand_status, r.expand_info)
            .await;
        ok(api::ListConnectorsResponse { connectors })
    }

    async fn create_connector(
        &self,
        request: Request<api::CreateConnectorRequest>,
    ) -> ApiResult<api::ConnectorInfo> {
        let r = request.into_inner();
        let initial = target_from(r.initial_state)?;
        let config = r.config.into_iter().collect();
        let (_, info) = self
            .cluster
            .put_connector(&r.name, config, initial, true)
            .await?;
        ok(info)
    }

    async fn get_connector(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorInfo> {
        ok(self.cluster.connector_info(&request.get_ref().name).await?)
    }

    async fn get_connector_config(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorConfig> {
        let config = self
            .cluster
            .connector_config(&request.get_ref().name)
            .await?;
        ok(api::ConnectorConfig { config })
    }

    async fn put_connector_config(
        &self,
        request: Request<api::PutConnectorConfigRequest>,
    ) -> ApiResult<api::PutConnectorConfigResponse> {
        // Viewers may ask for a dry run (`sluice diff`), not for the change.
        if !request.get_ref().dry_run {
            crate::auth::Granted::require_change(
                request.extensions().get::<crate::auth::Granted>(),
                "/sluice.api.v1.ConnectorService/PutConnectorConfig",
            )?;
        }
        let r = request.into_inner();
        let config = r.config.into_iter().collect();
        let (created, info, changed_keys) = self
            .cluster
            .put_connector_with(&r.name, config, TargetState::Running, false, r.dry_run)
            .await?;
        ok(api::PutConnectorConfigResponse {
            created,
            info: Some(info),
            changed_keys,
        })
    }

    async fn patch_connector_config(
        &self,
        request: Request<api::PatchConnectorConfigRequest>,
    ) -> ApiResult<api::ConnectorInfo> {
        let r = request.into_inner();
        ok(self
            .cluster
            .patch_connector(&r.name, r.set, &r.remove)
            .await?)
    }

    async fn delete_connector(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::DeleteConnectorResponse> {
        self.cluster
            .delete_connector(&request.get_ref().name)
            .await?;
        ok(api::DeleteConnectorResponse {})
    }

    async fn get_connector_status(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorStatus> {
        ok(self
            .cluster
            .connector_status(&request.get_ref().name)
            .await?)
    }

    async fn restart_connector(
        &self,
        request: Request<api::RestartConnectorRequest>,
    ) -> ApiResult<api::ConnectorStatus> {
        let r = request.into_inner();
        ok(self
            .cluster
            .restart_connector(&r.name, r.include_tasks, r.only_failed)
            .await?)
    }

    async fn pause_connector(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorStatus> {
        let name = &request.get_ref().name;
        ok(self.cluster.set_target(name, TargetState::Paused).await?)
    }

    async fn resume_connector(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorStatus> {
        let name = &request.get_ref().name;
        ok(self.cluster.set_target(name, TargetState::Running).await?)
    }

    async fn stop_connector(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorStatus> {
        let name = &request.get_ref().name;
        ok(self.cluster.set_target(name, TargetState::Stopped).await?)
    }

    async fn list_tasks(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ListTasksResponse> {
        let tasks = self.cluster.tasks(&request.get_ref().name).await?;
        ok(api::ListTasksResponse { tasks })
    }

    async fn get_task_status(&self, request: Request<api::TaskRef>) -> ApiResult<api::TaskStatus> {
        let r = request.into_inner();
        ok(self.cluster.task_status(&r.connector, r.task).await?)
    }

    async fn restart_task(&self, request: Request<api::TaskRef>) -> ApiResult<api::TaskStatus> {
        let r = request.into_inner();
        ok(self.cluster.restart_task(&r.connector, r.task).await?)
    }

    async fn get_connector_topics(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorTopics> {
        let name = request.into_inner().name;
        let topics = self.cluster.topics(&name).await?;
        ok(api::ConnectorTopics { name, topics })
    }

    async fn reset_connector_topics(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorTopics> {
        let name = request.into_inner().name;
        self.cluster.reset_topics(&name).await?;
        ok(api::ConnectorTopics {
            name,
            topics: Vec::new(),
        })
    }

    async fn get_offsets(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorOffsets> {
        let name = request.into_inner().name;
        let kind = wire::worker_request::Kind::ReadOffsets(wire::ReadOffsets {});
        match self.cluster.offsets_request(&name, false, kind).await? {
            wire::worker_response::Result::Offsets(offsets) => ok(offsets),
            _ => Err(ApiError::Internal("the worker answered with no offsets".into()).into()),
        }
    }

    async fn alter_offsets(
        &self,
        request: Request<api::AlterOffsetsRequest>,
    ) -> ApiResult<api::AlterOffsetsResponse> {
        let r = request.into_inner();
        if r.offsets.is_empty() {
            return Err(ApiError::InvalidArgument(
                "offsets: at least one partition is required".into(),
            )
            .into());
        }
        if let Some(at) = r.offsets.iter().position(|o| o.partition.is_none()) {
            return Err(
                ApiError::InvalidArgument(format!("offsets[{at}].partition is required")).into(),
            );
        }
        let kind = wire::worker_request::Kind::AlterOffsets(wire::AlterOffsets {
            offsets: r.offsets,
            reset_all: false,
        });
        self.cluster.offsets_request(&r.name, true, kind).await?;
        ok(api::AlterOffsetsResponse {
            message: "The offsets for this connector have been altered successfully".into(),
        })
    }

    async fn reset_offsets(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::AlterOffsetsResponse> {
        let name = request.into_inner().name;
        let kind = wire::worker_request::Kind::AlterOffsets(wire::AlterOffsets {
            offsets: Vec::new(),
            reset_all: true,
        });
        self.cluster.offsets_request(&name, true, kind).await?;
        ok(api::AlterOffsetsResponse {
            message: "The offsets for this connector have been reset successfully".into(),
        })
    }

    async fn dry_run(
        &self,
        request: Request<api::DryRunRequest>,
    ) -> ApiResult<api::DryRunResponse> {
        let r = request.into_inner();
        let (config, plugin_is_sink) = self
            .cluster
            .dry_run_config(&r.name, r.config.into_iter().collect())
            .await?;
        let sink = match api::ConnectorType::try_from(r.direction) {
            Ok(api::ConnectorType::Sink) => true,
            Ok(api::ConnectorType::Source) => false,
            _ => plugin_is_sink.ok_or_else(|| {
                let class = config.get("connector.class").cloned().unwrap_or_default();
                ApiError::InvalidConfig(vec![(
                    "direction".into(),
                    format!(
                        "no worker knows connector.class {class:?}: give direction SOURCE or SINK"
                    ),
                )])
            })?,
        };
        let direction = if sink {
            dry_run::Direction::Sink
        } else {
            dry_run::Direction::Source
        };
        // A converter may call its schema registry (blocking HTTP): off the async threads.
        let results =
            tokio::task::spawn_blocking(move || dry_run::dry_run(&config, direction, r.records))
                .await
                .map_err(|e| ApiError::Unavailable(format!("dry run did not finish: {e}")))?
                .map_err(ApiError::InvalidConfig)?;
        ok(api::DryRunResponse { results })
    }
}
