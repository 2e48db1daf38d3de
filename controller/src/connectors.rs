//! The public API's connector operations on the cluster: create, update, delete, target
//! states, restarts, topics, and what they answer. Each reads or changes the state in one
//! step; the API layer only translates messages.

use std::collections::BTreeMap;

use sluice_model::{ConfigIssue, ConnectorName, UnitKey, WorkerId};
use sluice_proto::api::v1 as api;
use sluice_proto::cluster::v1 as wire;

use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::state::State;
use crate::store::{ConnectorRecord, State as UnitState, TargetState, Write};
use crate::views;

/// Checks a connector config against the framework's keys (the one parse in `sluice-model`)
/// and the plugin's declared keys; one violation per bad key.
pub fn validate(
    state: &State,
    name: &str,
    config: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let mut errors: Vec<(String, String)> = Vec::new();
    if let Err(rule) = ConnectorName::parse(name) {
        errors.push(("name".into(), rule));
    }
    let class = config
        .get("connector.class")
        .map(String::as_str)
        .unwrap_or_default();
    let plugin = state.plugin(class);
    if !class.is_empty() && plugin.is_none() {
        if state.observed.workers.is_empty() {
            return Err(ApiError::Unavailable(format!(
                "no worker has joined yet, so connector.class {class} cannot be checked"
            )));
        }
        errors.push((
            "connector.class".into(),
            format!("no worker has a connector plugin named {class}"),
        ));
    }
    let sink = plugin.is_some_and(|p| p.r#type == api::ConnectorType::Sink as i32);
    let declared = plugin.map_or(&[][..], |p| p.configs.as_slice());
    let issues = sluice_model::connector::issues(config, sink, declared);
    errors.extend(
        issues
            .into_iter()
            // The name was checked above, as given apart from the config.
            .filter(|i| i.key != "name")
            .map(|ConfigIssue { key, message }| (key, message)),
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidConfig(errors))
    }
}

impl Cluster {
    pub async fn list_connectors(
        &self,
        expand_status: bool,
        expand_info: bool,
    ) -> Vec<api::ConnectorListing> {
        self.read(|state| {
            state
                .desired
                .connectors
                .iter()
                .map(|(name, record)| api::ConnectorListing {
                    name: name.to_string(),
                    status: expand_status.then(|| views::status(state, name, record)),
                    info: expand_info.then(|| views::info(state, name, record)),
                })
                .collect()
        })
        .await
    }

    pub async fn connector_info(&self, name: &str) -> Result<api::ConnectorInfo, ApiError> {
        self.read(|state| Ok(views::info(state, name, state.connector(name)?)))
            .await
    }

    /// The config with its secrets hidden.
    pub async fn connector_config(
        &self,
        name: &str,
    ) -> Result<std::collections::HashMap<String, String>, ApiError> {
        self.read(|state| Ok(views::masked(state, &state.connector(name)?.config)))
            .await
    }

    pub async fn connector_status(&self, name: &str) -> Result<api::ConnectorStatus, ApiError> {
        self.read(|state| Ok(views::status(state, name, state.connector(name)?)))
            .await
    }

    pub async fn task_status(&self, name: &str, task: u32) -> Result<api::TaskStatus, ApiError> {
        self.read(|state| views::task_status(state, name, task))
            .await
    }

    pub async fn tasks(&self, name: &str) -> Result<Vec<api::TaskInfo>, ApiError> {
        self.read(|state| {
            Ok(state
                .connector(name)?
                .tasks
                .iter()
                .enumerate()
                .map(|(i, c)| api::TaskInfo {
                    id: i as u32,
                    config: views::masked(state, c),
                })
                .collect())
        })
        .await
    }

    pub async fn topics(&self, name: &str) -> Result<Vec<String>, ApiError> {
        self.read(|state| Ok(state.connector(name)?.topics.iter().cloned().collect()))
            .await
    }

    /// Creates or updates a connector; true when it was created.
    pub async fn put_connector(
        &self,
        name: &str,
        config: BTreeMap<String, String>,
        initial: TargetState,
        create_only: bool,
    ) -> Result<(bool, api::ConnectorInfo), ApiError> {
        let (created, info, _) = self
            .put_connector_with(name, config, initial, create_only, false)
            .await?;
        Ok((created, info))
    }

    /// [`Self::put_connector`], also answering which keys change; with `dry_run` only
    /// validated and compared, nothing stored.
    pub async fn put_connector_with(
        &self,
        name: &str,
        mut config: BTreeMap<String, String>,
        initial: TargetState,
        create_only: bool,
        dry_run: bool,
    ) -> Result<(bool, api::ConnectorInfo, Vec<String>), ApiError> {
        config.insert("name".into(), name.to_string());
        let trace = sluice_telemetry::current();
        self.mutate(|state, writes| {
            validate(state, name, &config)?;
            let mut changed = Vec::new();
            let before = state.desired.connectors.get(name);
            let (created, mut record) = match before {
                Some(_) if create_only => return Err(ApiError::AlreadyExists(name.into())),
                Some(existing) => {
                    let mut record = existing.clone();
                    if record.config != config {
                        changed = changed_keys(&record.config, &config);
                        record.config = config;
                        record.config_version += 1;
                    }
                    (false, record)
                }
                None => (true, ConnectorRecord::new(config, initial)),
            };
            let info = views::info(state, name, &record);
            if !dry_run {
                record.stamp(before, &trace);
                save(state, writes, name, record);
            }
            Ok((created, info, changed))
        })
        .await
    }

    /// Changes some keys of a connector's config (`set`) and removes others.
    pub async fn patch_connector(
        &self,
        name: &str,
        set: impl IntoIterator<Item = (String, String)>,
        remove: &[String],
    ) -> Result<api::ConnectorInfo, ApiError> {
        let mut config = self
            .read(|state| Ok::<_, ApiError>(state.connector(name)?.config.clone()))
            .await?;
        config.extend(set);
        for key in remove {
            config.remove(key);
        }
        let (_, info) = self
            .put_connector(name, config, TargetState::Running, false)
            .await?;
        Ok(info)
    }

    pub async fn delete_connector(&self, name: &str) -> Result<(), ApiError> {
        self.mutate(|state, writes| {
            state.connector(name)?;
            let name = ConnectorName::from_trusted(name);
            state.desired.connectors.remove(&name);
            state.observed.statuses.retain(|u, _| u.connector != name);
            writes.push(Write::DeleteConnector(name));
            Ok(())
        })
        .await
    }

    /// Sets the target state; leaving STOPPED re-plans, as Kafka Connect does: a stopped
    /// connector has no tasks, and its offsets or config may have changed meanwhile.
    pub async fn set_target(
        &self,
        name: &str,
        target: TargetState,
    ) -> Result<api::ConnectorStatus, ApiError> {
        self.change(name, |_, record| {
            if record.target_state == TargetState::Stopped && target != TargetState::Stopped {
                record.config_version += 1;
            }
            record.target_state = target;
        })
        .await
    }

    /// Restarts the connector's instance and, with `include_tasks`, its tasks; with
    /// `only_failed`, only what is FAILED.
    pub async fn restart_connector(
        &self,
        name: &str,
        include_tasks: bool,
        only_failed: bool,
    ) -> Result<api::ConnectorStatus, ApiError> {
        self.change(name, |state, record| {
            let failed = |unit: &UnitKey| {
                state
                    .observed
                    .statuses
                    .get(unit)
                    .is_some_and(|s| s.state == UnitState::Failed)
            };
            if !only_failed || failed(&UnitKey::planning(name)) {
                record.restart_epoch += 1;
            }
            if include_tasks {
                for t in 0..record.tasks.len() as u32 {
                    if !only_failed || failed(&UnitKey::task(name, t)) {
                        *record.task_restart_epochs.entry(t).or_default() += 1;
                    }
                }
            }
        })
        .await
    }

    pub async fn restart_task(&self, name: &str, task: u32) -> Result<api::TaskStatus, ApiError> {
        self.mutate(|state, writes| {
            views::task_status(state, name, task)?;
            let before = state.connector(name)?;
            let mut record = before.clone();
            *record.task_restart_epochs.entry(task).or_default() += 1;
            record.stamp(Some(before), &sluice_telemetry::current());
            save(state, writes, name, record);
            views::task_status(state, name, task)
        })
        .await
    }

    /// Forgets the topics the connector's tasks used (Kafka Connect's topics reset).
    pub async fn reset_topics(&self, name: &str) -> Result<(), ApiError> {
        self.change(name, |_, record| record.topics.clear())
            .await
            .map(|_| ())
    }

    /// The config a dry run starts from: the stored connector's (unless `name` is empty)
    /// with `overrides` on top, and whether the connector is a sink (`None` when no worker
    /// knows its class).
    pub async fn dry_run_config(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
    ) -> Result<(BTreeMap<String, String>, Option<bool>), ApiError> {
        self.read(|state| {
            let mut config = match name {
                "" => BTreeMap::new(),
                name => state.connector(name)?.config.clone(),
            };
            config.extend(overrides);
            let class = config
                .get("connector.class")
                .map(String::as_str)
                .unwrap_or_default();
            let sink = state
                .plugin(class)
                .map(|p| p.r#type == api::ConnectorType::Sink as i32);
            Ok((config, sink))
        })
        .await
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
                            u.connector == name && u.task.is_some() && s.state == UnitState::Running
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
                        trace_context: Default::default(),
                    }),
                    r#type: views::kind_of(state, record) as i32,
                    kind: Some(kind),
                })
            })
            .await?;
        let candidates = self.read(|state| offsets_candidates(state, name)).await;
        let what = format!("run connector {name}'s plugin to reach its offsets");
        let response = self.requests.ask(&candidates, request, &what).await?;
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

    /// Changes a connector's record in place when `f` changes it; answers its status.
    async fn change(
        &self,
        name: &str,
        f: impl FnOnce(&State, &mut ConnectorRecord),
    ) -> Result<api::ConnectorStatus, ApiError> {
        let trace = sluice_telemetry::current();
        self.mutate(|state, writes| {
            let before = state.connector(name)?;
            let mut record = before.clone();
            f(state, &mut record);
            if before != &record {
                record.stamp(Some(before), &trace);
                save(state, writes, name, record);
            }
            Ok(views::status(state, name, state.connector(name)?))
        })
        .await
    }
}

/// Puts a connector's new record in the desired state and its write in the journal's batch.
fn save(state: &mut State, writes: &mut Vec<Write>, name: &str, record: ConnectorRecord) {
    let name = ConnectorName::from_trusted(name);
    writes.push(Write::Connector(name.clone(), record.clone()));
    state.desired.connectors.insert(name, record);
}

/// Who can carry out an offsets request for `connector`: connected workers with its plugin,
/// the one planning it first.
fn offsets_candidates(state: &State, connector: &str) -> Vec<WorkerId> {
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
}

/// Keys set, changed or removed from `old` to `new`, sorted.
fn changed_keys(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}
