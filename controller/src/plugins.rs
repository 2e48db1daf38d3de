//! The public API's plugin and cluster queries on the cluster: plugins the workers have (and
//! executables they found broken), a plugin's config keys, config validation in Kafka
//! Connect's ConfigInfos shape, the cluster's identity and its workers.

use std::collections::BTreeMap;

use sluice_proto::api::v1 as api;

use crate::cluster::Cluster;
use crate::connectors::validate;
use crate::error::ApiError;
use crate::views;

impl Cluster {
    pub async fn list_plugins(&self) -> api::ListPluginsResponse {
        self.read(|state| {
            let mut plugins: BTreeMap<String, api::PluginDescription> = BTreeMap::new();
            let mut broken: BTreeMap<(String, String), api::BrokenPlugin> = BTreeMap::new();
            for (id, w) in &state.observed.workers {
                for p in &w.plugins {
                    let kind = if p.r#type == api::ConnectorType::Sink as i32 {
                        "sink"
                    } else {
                        "source"
                    };
                    plugins
                        .entry(p.class_name.clone())
                        .or_insert_with(|| api::PluginDescription {
                            class_name: p.class_name.clone(),
                            r#type: kind.into(),
                            version: p.version.clone(),
                            aliases: p.aliases.clone(),
                            workers: Vec::new(),
                        })
                        .workers
                        .push(id.to_string());
                }
                for b in &w.broken {
                    broken
                        .entry((b.command.clone(), b.reason.clone()))
                        .or_insert_with(|| api::BrokenPlugin {
                            workers: Vec::new(),
                            ..b.clone()
                        })
                        .workers
                        .push(id.to_string());
                }
            }
            api::ListPluginsResponse {
                plugins: plugins.into_values().collect(),
                broken: broken.into_values().collect(),
            }
        })
        .await
    }

    /// The keys a plugin declares.
    pub async fn plugin_config(&self, class: &str) -> Result<Vec<api::ConfigKey>, ApiError> {
        self.read(|state| {
            state
                .plugin(class)
                .map(|p| p.configs.clone())
                .ok_or_else(|| ApiError::PluginNotFound(class.to_string()))
        })
        .await
    }

    /// Validates a config as Kafka Connect's `PUT /connector-plugins/{plugin}/config/validate`
    /// does: every framework key and every key the plugin declares, each with its value and
    /// its errors, grouped.
    pub async fn validate_config(
        &self,
        class_name: &str,
        config: BTreeMap<String, String>,
    ) -> Result<api::ValidateConfigResponse, ApiError> {
        let mut config = config;
        if !class_name.is_empty() {
            config.insert("connector.class".into(), class_name.to_string());
        }
        let name = config
            .get("name")
            .cloned()
            .unwrap_or_else(|| "validate".into());
        let class = config.get("connector.class").cloned().unwrap_or_default();
        self.read(|state| {
            let errors: Vec<(String, String)> = match validate(state, &name, &config) {
                Ok(()) => Vec::new(),
                Err(ApiError::InvalidConfig(errors)) => errors,
                Err(e) => return Err(e),
            };
            let mut definitions = sluice_model::keys::definitions();
            definitions.extend(
                state
                    .plugin(&class)
                    .map(|p| p.configs.clone())
                    .unwrap_or_default(),
            );
            let mut keys: Vec<String> = definitions.iter().map(|d| d.name.clone()).collect();
            for (k, _) in &errors {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
            let configs = keys
                .iter()
                .map(|k| api::ConfigInfo {
                    definition: definitions.iter().find(|d| &d.name == k).cloned(),
                    value: Some(api::ConfigValue {
                        name: k.clone(),
                        value: config.get(k).cloned(),
                        recommended_values: Vec::new(),
                        errors: errors
                            .iter()
                            .filter(|(e, _)| e == k)
                            .map(|(_, m)| m.clone())
                            .collect(),
                        visible: true,
                    }),
                })
                .collect();
            let mut groups: Vec<String> = Vec::new();
            for d in &definitions {
                if !d.group.is_empty() && !groups.contains(&d.group) {
                    groups.push(d.group.clone());
                }
            }
            Ok(api::ValidateConfigResponse {
                name: class.clone(),
                error_count: errors.len() as u32,
                groups,
                configs,
            })
        })
        .await
    }

    pub async fn cluster_info(&self) -> api::ClusterInfo {
        let generation = self.read(|state| state.desired.generation).await;
        api::ClusterInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            commit: option_env!("SLUICE_COMMIT").unwrap_or("").into(),
            cluster_id: self.cluster_id.clone(),
            generation: generation.0,
        }
    }

    pub async fn workers(&self) -> Vec<api::WorkerDescription> {
        self.read(views::workers).await
    }
}
