//! `PluginService`: the plugins workers have, their config keys, config validation.

use sluice_proto::api::v1::{self as api, plugin_service_server::PluginService};
use tonic::Request;

use super::{ok, Api, ApiResult};

#[tonic::async_trait]
impl PluginService for Api {
    async fn list_plugins(
        &self,
        _: Request<api::ListPluginsRequest>,
    ) -> ApiResult<api::ListPluginsResponse> {
        ok(self.cluster.list_plugins().await)
    }

    async fn get_plugin_config(
        &self,
        request: Request<api::PluginRef>,
    ) -> ApiResult<api::PluginConfig> {
        let configs = self
            .cluster
            .plugin_config(&request.get_ref().class_name)
            .await?;
        ok(api::PluginConfig { configs })
    }

    async fn validate_config(
        &self,
        request: Request<api::ValidateConfigRequest>,
    ) -> ApiResult<api::ValidateConfigResponse> {
        let r = request.into_inner();
        let config = r.config.into_iter().collect();
        ok(self.cluster.validate_config(&r.class_name, config).await?)
    }
}
