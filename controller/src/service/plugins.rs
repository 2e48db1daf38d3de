//! `PluginService`: the plugins workers have, their config keys, config validation.

use sluice_proto::api::v1::{self as api, plugin_service_server::PluginService};
use tonic::Request;

use super::{ok, Api, ApiResult};

#[tonic::async_trait]
impl PluginService for Api {
    /// Connector plugins from the workers; with `connectors_only` false also the converters,
    /// header converter, transforms and predicates every worker has built in.
    async fn list_plugins(
        &self,
        request: Request<api::ListPluginsRequest>,
    ) -> ApiResult<api::ListPluginsResponse> {
        let mut listed = self.cluster.list_plugins().await;
        if !request.get_ref().connectors_only {
            use sluice_data::converter::{converter_classes, HEADER_CONVERTER};
            use sluice_data::transforms::{predicate_classes, transform_classes};
            let built_in = |class: &str, kind: &str| api::PluginDescription {
                class_name: class.to_string(),
                r#type: kind.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                ..api::PluginDescription::default()
            };
            let converters = converter_classes();
            listed.plugins.extend(
                converters
                    .iter()
                    .map(|c| built_in(c, "converter"))
                    .chain(std::iter::once(built_in(
                        HEADER_CONVERTER,
                        "header_converter",
                    )))
                    .chain(
                        transform_classes()
                            .iter()
                            .map(|t| built_in(t, "transformation")),
                    )
                    .chain(predicate_classes().iter().map(|p| built_in(p, "predicate"))),
            );
        }
        ok(listed)
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
