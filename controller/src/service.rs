//! The gRPC services: the public API (connectors, plugins, cluster) and the worker protocol.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use sluice_proto::api::v1::{
    self as api, cluster_service_server::ClusterService,
    connector_service_server::ConnectorService, plugin_service_server::PluginService,
};
use sluice_proto::cluster::v1::{self as wire, worker_control_server::WorkerControl};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::cluster::{state_to_wire, target_to_wire, Cluster, Inner};
use crate::dry_run;
use crate::error::ApiError;
use crate::scheduler::Unit;
use crate::store::{ConnectorRecord, State, TargetState};

const HIDDEN: &str = "[hidden]";

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

/// Levels accepted by SetLogLevel (log4j's names, as Kafka Connect takes them).
const LEVELS: &[&str] = &["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "OFF"];

type ApiResult<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> ApiResult<T> {
    Ok(Response::new(value))
}

/// Framework keys with a fixed set of values (the workers parse them fully; checked here so
/// that a bad value is refused when the connector is created).
const FRAMEWORK_CHOICES: &[(&str, &[&str])] = &[
    ("errors.tolerance", &["none", "all"]),
    ("errors.log.enable", &["true", "false"]),
    ("errors.log.include.messages", &["true", "false"]),
    (
        "errors.deadletterqueue.context.headers.enable",
        &["true", "false"],
    ),
    ("exactly.once.support", &["requested", "required"]),
    ("transaction.boundary", &["poll", "interval", "connector"]),
];

/// Framework keys that are integers, with their least value.
const FRAMEWORK_INTEGERS: &[(&str, i64)] = &[
    ("errors.retry.timeout", -1),
    ("errors.retry.delay.max.ms", 0),
    ("errors.deadletterqueue.topic.replication.factor", -1),
    ("restart.max.attempts", -1),
    ("restart.backoff.initial.ms", 0),
    ("restart.backoff.max.ms", 0),
    ("transaction.boundary.interval.ms", 0),
];

/// Checks a connector config against what the framework and the plugin's definitions require;
/// one violation per bad key.
fn validate(inner: &Inner, name: &str, config: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if name.is_empty() || name.contains(['/', '\0']) || name.trim() != name {
        errors.push((
            "name".to_string(),
            "must be non-empty, without '/' or surrounding spaces".to_string(),
        ));
    }
    let class = config
        .get("connector.class")
        .map(String::as_str)
        .unwrap_or_default();
    let plugin = find_plugin(inner, class);
    if class.is_empty() {
        errors.push((
            "connector.class".into(),
            "missing required configuration".into(),
        ));
    } else if plugin.is_none() {
        if inner.workers.is_empty() {
            return Err(ApiError::Unavailable(format!(
                "no worker has joined yet, so connector.class {class} cannot be checked"
            )));
        }
        errors.push((
            "connector.class".into(),
            format!("no worker has a connector plugin named {class}"),
        ));
    }
    match config.get("tasks.max").map(|v| v.trim().parse::<i64>()) {
        None => {}
        Some(Ok(n)) if n >= 1 => {}
        Some(_) => errors.push((
            "tasks.max".into(),
            "must be an integer of at least 1".into(),
        )),
    }
    for (key, choices) in FRAMEWORK_CHOICES {
        if let Some(v) = config.get(*key) {
            if !choices.contains(&v.trim()) {
                errors.push((
                    key.to_string(),
                    format!("invalid value {v}: must be one of {}", choices.join(", ")),
                ));
            }
        }
    }
    for (key, least) in FRAMEWORK_INTEGERS {
        if let Some(v) = config.get(*key) {
            if !v.trim().parse::<i64>().is_ok_and(|n| n >= *least) {
                errors.push((
                    key.to_string(),
                    format!("invalid value {v}: must be an integer of at least {least}"),
                ));
            }
        }
    }
    // Transforms and predicates: every problem, each under its own key.
    if let Err(issues) = sluice_data::transforms::Chain::from_config(config) {
        errors.extend(issues.into_iter().map(|i| (i.key, i.message)));
    }
    if let Some(plugin) = plugin {
        if plugin.r#type == api::ConnectorType::Sink as i32 {
            match (
                config.contains_key("topics"),
                config.contains_key("topics.regex"),
            ) {
                (false, false) => errors.push((
                    "topics".into(),
                    "a sink connector needs topics or topics.regex".into(),
                )),
                (true, true) => errors.push((
                    "topics.regex".into(),
                    "topics and topics.regex are mutually exclusive".into(),
                )),
                _ => {}
            }
        }
        for key in &plugin.configs {
            let value = config.get(&key.name);
            if key.required && value.is_none() {
                errors.push((key.name.clone(), "missing required configuration".into()));
            }
            if let Some(v) = value {
                if !key.valid_values.is_empty() && !key.valid_values.contains(v) {
                    errors.push((
                        key.name.clone(),
                        format!(
                            "invalid value {v}: must be one of {}",
                            key.valid_values.join(", ")
                        ),
                    ));
                }
                let parses = match key.r#type.as_str() {
                    "INT" => v.trim().parse::<i32>().is_ok(),
                    "LONG" => v.trim().parse::<i64>().is_ok(),
                    "DOUBLE" => v.trim().parse::<f64>().is_ok(),
                    "BOOLEAN" => matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "false"),
                    _ => true,
                };
                if !parses {
                    errors.push((
                        key.name.clone(),
                        format!("invalid value {v}: expected {}", key.r#type.to_lowercase()),
                    ));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidConfig(errors))
    }
}

fn find_plugin<'a>(inner: &'a Inner, class: &str) -> Option<&'a wire::PluginClass> {
    inner
        .workers
        .values()
        .flat_map(|w| w.plugins.iter())
        .find(|p| p.class_name == class || p.aliases.iter().any(|a| a == class))
}

/// The config as users may see it: secret values hidden.
fn masked(
    inner: &Inner,
    config: &BTreeMap<String, String>,
) -> std::collections::HashMap<String, String> {
    let class = config
        .get("connector.class")
        .map(String::as_str)
        .unwrap_or_default();
    let secrets: Vec<&str> = find_plugin(inner, class)
        .map(|p| {
            p.configs
                .iter()
                .filter(|k| k.r#type == "PASSWORD")
                .map(|k| k.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    config
        .iter()
        .map(|(k, v)| {
            // Names too: the plugin's definitions are unknown while no worker that has it is
            // joined, and a secret must stay hidden then as well.
            let secret =
                secrets.contains(&k.as_str()) || k.contains("password") || k.contains("secret");
            (
                k.clone(),
                if secret {
                    HIDDEN.to_string()
                } else {
                    v.clone()
                },
            )
        })
        .collect()
}

fn kind_of(record: &ConnectorRecord) -> api::ConnectorType {
    match record.kind.as_deref() {
        Some("sink") => api::ConnectorType::Sink,
        Some("source") => api::ConnectorType::Source,
        _ => api::ConnectorType::Unspecified,
    }
}

fn info(inner: &Inner, name: &str, record: &ConnectorRecord) -> api::ConnectorInfo {
    api::ConnectorInfo {
        name: name.to_string(),
        config: masked(inner, &record.config),
        tasks: (0..record.tasks.len() as u32).collect(),
        r#type: kind_of(record) as i32,
    }
}

fn connector<'a>(inner: &'a Inner, name: &str) -> Result<&'a ConnectorRecord, ApiError> {
    inner
        .connectors
        .get(name)
        .ok_or_else(|| ApiError::ConnectorNotFound(name.to_string()))
}

/// One task's status; NOT_FOUND for a task the connector does not have.
fn task_status(inner: &Inner, name: &str, task: u32) -> Result<api::TaskStatus, ApiError> {
    if task as usize >= connector(inner, name)?.tasks.len() {
        return Err(ApiError::TaskNotFound(name.to_string(), task));
    }
    Ok(task_state(inner, name, task))
}

fn task_state(inner: &Inner, name: &str, task: u32) -> api::TaskStatus {
    let (state, worker_id, trace) = unit_state(inner, &Unit::task(name, task));
    api::TaskStatus {
        id: task,
        state: state as i32,
        worker_id,
        trace,
    }
}

fn unit_state(inner: &Inner, unit: &Unit) -> (api::State, String, String) {
    let owner = inner.placement.get(unit);
    match (owner, inner.statuses.get(unit)) {
        (Some(w), Some(s)) if &s.worker_id == w => {
            (state_to_wire(s.state), s.worker_id.clone(), s.trace.clone())
        }
        (Some(w), _) => (api::State::Unassigned, w.clone(), String::new()),
        (None, _) => (api::State::Unassigned, String::new(), String::new()),
    }
}

fn status(inner: &Inner, name: &str, record: &ConnectorRecord) -> api::ConnectorStatus {
    let (mut state, worker_id, trace) = unit_state(inner, &Unit::planning(name));
    if record.target_state == TargetState::Stopped {
        state = api::State::Stopped;
    }
    let tasks = if record.target_state == TargetState::Stopped {
        Vec::new()
    } else {
        (0..record.tasks.len() as u32)
            .map(|t| task_state(inner, name, t))
            .collect()
    };
    api::ConnectorStatus {
        name: name.to_string(),
        connector: Some(api::ConnectorState {
            state: state as i32,
            worker_id,
            trace,
        }),
        tasks,
        r#type: kind_of(record) as i32,
        target_state: target_to_wire(record.target_state) as i32,
    }
}

impl Api {
    async fn save(
        &self,
        inner: &mut Inner,
        name: &str,
        record: ConnectorRecord,
    ) -> Result<(), ApiError> {
        self.cluster.store.put_connector(name, &record)?;
        self.cluster.store.flush().await?;
        inner.connectors.insert(name.to_string(), record);
        self.cluster.changed.notify_one();
        Ok(())
    }

    async fn set_target(&self, name: &str, target: TargetState) -> ApiResult<api::ConnectorStatus> {
        let mut inner = self.cluster.inner.lock().await;
        let mut record = connector(&inner, name)?.clone();
        if record.target_state != target {
            if record.target_state == TargetState::Stopped {
                // Leaving STOPPED re-plans, as Kafka Connect does: a stopped connector has no
                // tasks, and its offsets or config may have changed meanwhile.
                record.config_version += 1;
            }
            record.target_state = target;
            self.save(&mut inner, name, record.clone()).await?;
        }
        ok(status(&inner, name, &record))
    }

    async fn put(
        &self,
        name: &str,
        config: BTreeMap<String, String>,
        initial: TargetState,
        create_only: bool,
    ) -> Result<(bool, api::ConnectorInfo), ApiError> {
        let mut inner = self.cluster.inner.lock().await;
        let mut config = config;
        config.insert("name".into(), name.to_string());
        validate(&inner, name, &config)?;
        let (created, record) = match inner.connectors.get(name) {
            Some(_) if create_only => return Err(ApiError::AlreadyExists(name.into())),
            Some(existing) => {
                let mut record = existing.clone();
                if record.config != config {
                    record.config = config;
                    record.config_version += 1;
                }
                (false, record)
            }
            None => (
                true,
                ConnectorRecord {
                    config,
                    config_version: 1,
                    target_state: initial,
                    restart_epoch: 0,
                    kind: None,
                    tasks: Vec::new(),
                    tasks_version: 0,
                    task_restart_epochs: BTreeMap::new(),
                    topics: Default::default(),
                },
            ),
        };
        self.save(&mut inner, name, record.clone()).await?;
        Ok((created, info(&inner, name, &record)))
    }
}

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
        let request = request.into_inner();
        let inner = self.cluster.inner.lock().await;
        let connectors = inner
            .connectors
            .iter()
            .map(|(name, record)| api::ConnectorListing {
                name: name.clone(),
                status: request.expand_status.then(|| status(&inner, name, record)),
                info: request.expand_info.then(|| info(&inner, name, record)),
            })
            .collect();
        ok(api::ListConnectorsResponse { connectors })
    }

    async fn create_connector(
        &self,
        request: Request<api::CreateConnectorRequest>,
    ) -> ApiResult<api::ConnectorInfo> {
        let request = request.into_inner();
        let initial = target_from(request.initial_state)?;
        let (_, info) = self
            .put(
                &request.name,
                request.config.into_iter().collect(),
                initial,
                true,
            )
            .await?;
        ok(info)
    }

    async fn get_connector(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorInfo> {
        let name = &request.get_ref().name;
        let inner = self.cluster.inner.lock().await;
        let record = connector(&inner, name)?;
        ok(info(&inner, name, record))
    }

    async fn get_connector_config(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorConfig> {
        let name = &request.get_ref().name;
        let inner = self.cluster.inner.lock().await;
        let record = connector(&inner, name)?;
        ok(api::ConnectorConfig {
            config: masked(&inner, &record.config),
        })
    }

    async fn put_connector_config(
        &self,
        request: Request<api::PutConnectorConfigRequest>,
    ) -> ApiResult<api::PutConnectorConfigResponse> {
        let request = request.into_inner();
        let (created, info) = self
            .put(
                &request.name,
                request.config.into_iter().collect(),
                TargetState::Running,
                false,
            )
            .await?;
        ok(api::PutConnectorConfigResponse {
            created,
            info: Some(info),
        })
    }

    async fn patch_connector_config(
        &self,
        request: Request<api::PatchConnectorConfigRequest>,
    ) -> ApiResult<api::ConnectorInfo> {
        let request = request.into_inner();
        let mut config = {
            let inner = self.cluster.inner.lock().await;
            connector(&inner, &request.name)?.config.clone()
        };
        config.extend(request.set);
        for key in &request.remove {
            config.remove(key);
        }
        let (_, info) = self
            .put(&request.name, config, TargetState::Running, false)
            .await?;
        ok(info)
    }

    async fn delete_connector(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::DeleteConnectorResponse> {
        let name = &request.get_ref().name;
        let mut inner = self.cluster.inner.lock().await;
        if !inner.connectors.contains_key(name) {
            return Err(ApiError::ConnectorNotFound(name.clone()).into());
        }
        self.cluster
            .store
            .delete_connector(name)
            .map_err(ApiError::from)?;
        self.cluster.store.flush().await.map_err(ApiError::from)?;
        inner.connectors.remove(name);
        inner.statuses.retain(|u, _| &u.connector != name);
        self.cluster.changed.notify_one();
        ok(api::DeleteConnectorResponse {})
    }

    async fn get_connector_status(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorStatus> {
        let name = &request.get_ref().name;
        let inner = self.cluster.inner.lock().await;
        let record = connector(&inner, name)?;
        ok(status(&inner, name, record))
    }

    async fn restart_connector(
        &self,
        request: Request<api::RestartConnectorRequest>,
    ) -> ApiResult<api::ConnectorStatus> {
        let request = request.into_inner();
        let name = &request.name;
        let mut inner = self.cluster.inner.lock().await;
        let mut record = connector(&inner, name)?.clone();
        let failed = |unit: &Unit| {
            inner
                .statuses
                .get(unit)
                .is_some_and(|s| s.state == State::Failed)
        };
        if !request.only_failed || failed(&Unit::planning(name)) {
            record.restart_epoch += 1;
        }
        if request.include_tasks {
            for t in 0..record.tasks.len() as u32 {
                if !request.only_failed || failed(&Unit::task(name, t)) {
                    *record.task_restart_epochs.entry(t).or_default() += 1;
                }
            }
        }
        self.save(&mut inner, name, record.clone()).await?;
        ok(status(&inner, name, &record))
    }

    async fn pause_connector(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorStatus> {
        self.set_target(&request.get_ref().name, TargetState::Paused)
            .await
    }

    async fn resume_connector(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorStatus> {
        self.set_target(&request.get_ref().name, TargetState::Running)
            .await
    }

    async fn stop_connector(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorStatus> {
        self.set_target(&request.get_ref().name, TargetState::Stopped)
            .await
    }

    async fn list_tasks(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ListTasksResponse> {
        let name = &request.get_ref().name;
        let inner = self.cluster.inner.lock().await;
        let record = connector(&inner, name)?;
        let tasks = record
            .tasks
            .iter()
            .enumerate()
            .map(|(i, c)| api::TaskInfo {
                id: i as u32,
                config: masked(&inner, c),
            })
            .collect();
        ok(api::ListTasksResponse { tasks })
    }

    async fn get_task_status(&self, request: Request<api::TaskRef>) -> ApiResult<api::TaskStatus> {
        let r = request.into_inner();
        let inner = self.cluster.inner.lock().await;
        ok(task_status(&inner, &r.connector, r.task)?)
    }

    async fn restart_task(&self, request: Request<api::TaskRef>) -> ApiResult<api::TaskStatus> {
        let r = request.into_inner();
        let mut inner = self.cluster.inner.lock().await;
        task_status(&inner, &r.connector, r.task)?;
        let mut record = connector(&inner, &r.connector)?.clone();
        *record.task_restart_epochs.entry(r.task).or_default() += 1;
        self.save(&mut inner, &r.connector, record).await?;
        ok(task_status(&inner, &r.connector, r.task)?)
    }

    async fn get_connector_topics(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorTopics> {
        let name = request.into_inner().name;
        let inner = self.cluster.inner.lock().await;
        let record = connector(&inner, &name)?;
        ok(api::ConnectorTopics {
            name,
            topics: record.topics.iter().cloned().collect(),
        })
    }

    async fn reset_connector_topics(
        &self,
        request: Request<api::ConnectorRef>,
    ) -> ApiResult<api::ConnectorTopics> {
        let name = request.into_inner().name;
        let mut inner = self.cluster.inner.lock().await;
        let mut record = connector(&inner, &name)?.clone();
        record.topics.clear();
        self.save(&mut inner, &name, record).await?;
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
        let response = self
            .offsets_request(
                &name,
                false,
                wire::worker_request::Kind::ReadOffsets(wire::ReadOffsets {}),
            )
            .await?;
        match response {
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
        self.offsets_request(&r.name, true, kind).await?;
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
        self.offsets_request(&name, true, kind).await?;
        ok(api::AlterOffsetsResponse {
            message: "The offsets for this connector have been reset successfully".into(),
        })
    }

    async fn dry_run(
        &self,
        request: Request<api::DryRunRequest>,
    ) -> ApiResult<api::DryRunResponse> {
        let request = request.into_inner();
        let (config, direction) = {
            let inner = self.cluster.inner.lock().await;
            let mut config = match request.name.as_str() {
                "" => BTreeMap::new(),
                name => connector(&inner, name)?.config.clone(),
            };
            config.extend(request.config);
            let class = config
                .get("connector.class")
                .map(String::as_str)
                .unwrap_or_default();
            let plugin_type = find_plugin(&inner, class).map(|p| p.r#type);
            let sink = match api::ConnectorType::try_from(request.direction) {
                Ok(api::ConnectorType::Sink) => true,
                Ok(api::ConnectorType::Source) => false,
                _ => match plugin_type {
                    Some(t) => t == api::ConnectorType::Sink as i32,
                    None => {
                        return Err(ApiError::InvalidConfig(vec![(
                            "direction".into(),
                            format!(
                                "no worker knows connector.class {class:?}: give direction SOURCE or SINK"
                            ),
                        )])
                        .into())
                    }
                },
            };
            let direction = if sink {
                dry_run::Direction::Sink
            } else {
                dry_run::Direction::Source
            };
            (config, direction)
        };
        // A converter may call its schema registry (blocking HTTP): off the async threads.
        let results = tokio::task::spawn_blocking(move || {
            dry_run::dry_run(&config, direction, request.records)
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("dry run did not finish: {e}")))?
        .map_err(ApiError::InvalidConfig)?;
        ok(api::DryRunResponse { results })
    }
}

impl Api {
    /// Sends an offsets request for `name` to a worker and returns its result. Changes need
    /// the connector STOPPED, as in Kafka Connect, so that no task holds the offsets.
    async fn offsets_request(
        &self,
        name: &str,
        change: bool,
        kind: wire::worker_request::Kind,
    ) -> Result<wire::worker_response::Result, Status> {
        let request = {
            let inner = self.cluster.inner.lock().await;
            let record = connector(&inner, name)?;
            if change && record.target_state != TargetState::Stopped {
                return Err(ApiError::FailedPrecondition(format!(
                    "connector {name} must be STOPPED to change its offsets (its target state is {}); stop it with StopConnector first",
                    target_to_wire(record.target_state).as_str_name()
                ))
                .into());
            }
            if change {
                let running: Vec<String> = inner
                    .statuses
                    .iter()
                    .filter(|(u, s)| {
                        u.connector == name && u.task.is_some() && s.state == State::Running
                    })
                    .filter(|(u, _)| inner.placement.contains_key(*u))
                    .map(|(u, _)| u.task.unwrap_or_default().to_string())
                    .collect();
                if !running.is_empty() {
                    return Err(ApiError::FailedPrecondition(format!(
                        "connector {name} still has running tasks ({}); wait for them to stop",
                        running.join(", ")
                    ))
                    .into());
                }
            }
            wire::WorkerRequest {
                id: 0,
                connector: Some(wire::ConnectorConfig {
                    name: name.to_string(),
                    config: record.config.clone().into_iter().collect(),
                    config_version: record.config_version,
                    target_state: target_to_wire(record.target_state) as i32,
                    restart_epoch: record.restart_epoch,
                }),
                r#type: kind_of(record) as i32,
                kind: Some(kind),
            }
        };
        let response = self.cluster.ask(name, request).await?;
        match response.result {
            Some(wire::worker_response::Result::Error(e)) => {
                Err(ApiError::Internal(format!("worker {}: {e}", response.worker_id)).into())
            }
            Some(wire::worker_response::Result::Invalid(e)) => {
                Err(ApiError::InvalidArgument(e).into())
            }
            Some(result) => Ok(result),
            None => Err(ApiError::Internal("the worker gave no result".into()).into()),
        }
    }
}

#[tonic::async_trait]
impl PluginService for Api {
    async fn list_plugins(
        &self,
        _: Request<api::ListPluginsRequest>,
    ) -> ApiResult<api::ListPluginsResponse> {
        let inner = self.cluster.inner.lock().await;
        let mut plugins: BTreeMap<String, api::PluginDescription> = BTreeMap::new();
        for (id, w) in &inner.workers {
            for p in &w.plugins {
                let entry =
                    plugins
                        .entry(p.class_name.clone())
                        .or_insert_with(|| api::PluginDescription {
                            class_name: p.class_name.clone(),
                            r#type: if p.r#type == api::ConnectorType::Sink as i32 {
                                "sink"
                            } else {
                                "source"
                            }
                            .into(),
                            version: p.version.clone(),
                            aliases: p.aliases.clone(),
                            workers: Vec::new(),
                        });
                entry.workers.push(id.clone());
            }
        }
        let mut broken: BTreeMap<(String, String), api::BrokenPlugin> = BTreeMap::new();
        for (id, w) in &inner.workers {
            for b in &w.broken {
                broken
                    .entry((b.command.clone(), b.reason.clone()))
                    .or_insert_with(|| api::BrokenPlugin {
                        workers: Vec::new(),
                        ..b.clone()
                    })
                    .workers
                    .push(id.clone());
            }
        }
        ok(api::ListPluginsResponse {
            plugins: plugins.into_values().collect(),
            broken: broken.into_values().collect(),
        })
    }

    async fn get_plugin_config(
        &self,
        request: Request<api::PluginRef>,
    ) -> ApiResult<api::PluginConfig> {
        let class = &request.get_ref().class_name;
        let inner = self.cluster.inner.lock().await;
        let plugin =
            find_plugin(&inner, class).ok_or_else(|| ApiError::PluginNotFound(class.clone()))?;
        ok(api::PluginConfig {
            configs: plugin.configs.clone(),
        })
    }

    async fn validate_config(
        &self,
        request: Request<api::ValidateConfigRequest>,
    ) -> ApiResult<api::ValidateConfigResponse> {
        let request = request.into_inner();
        let mut config: BTreeMap<String, String> = request.config.into_iter().collect();
        if !request.class_name.is_empty() {
            config.insert("connector.class".into(), request.class_name.clone());
        }
        let name = config
            .get("name")
            .cloned()
            .unwrap_or_else(|| "validate".into());
        let inner = self.cluster.inner.lock().await;
        let class = config.get("connector.class").cloned().unwrap_or_default();
        let errors: Vec<(String, String)> = match validate(&inner, &name, &config) {
            Ok(()) => Vec::new(),
            Err(ApiError::InvalidConfig(errors)) => errors,
            Err(e) => return Err(e.into()),
        };
        let definitions = find_plugin(&inner, &class)
            .map(|p| p.configs.clone())
            .unwrap_or_default();
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
        ok(api::ValidateConfigResponse {
            name: class,
            error_count: errors.len() as u32,
            groups,
            configs,
        })
    }
}

#[tonic::async_trait]
impl ClusterService for Api {
    async fn get_cluster_info(
        &self,
        _: Request<api::GetClusterInfoRequest>,
    ) -> ApiResult<api::ClusterInfo> {
        let inner = self.cluster.inner.lock().await;
        ok(api::ClusterInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            commit: option_env!("SLUICE_COMMIT").unwrap_or("").into(),
            cluster_id: self.cluster.cluster_id.clone(),
            generation: inner.generation,
        })
    }

    async fn list_workers(
        &self,
        _: Request<api::ListWorkersRequest>,
    ) -> ApiResult<api::ListWorkersResponse> {
        let inner = self.cluster.inner.lock().await;
        let workers = inner
            .workers
            .iter()
            .map(|(id, w)| api::WorkerDescription {
                id: id.clone(),
                alive: w.stream.is_some(),
                last_seen_ms: w.last_seen.elapsed().as_millis() as u64,
                connectors: inner
                    .placement
                    .iter()
                    .filter(|(u, o)| *o == id && u.task.is_none())
                    .map(|(u, _)| u.connector.clone())
                    .collect(),
                tasks: inner
                    .placement
                    .iter()
                    .filter(|(u, o)| *o == id && u.task.is_some())
                    .map(|(u, _)| api::TaskRef {
                        connector: u.connector.clone(),
                        task: u.task.unwrap_or_default(),
                    })
                    .collect(),
                plugins: w.plugins.iter().map(|p| p.class_name.clone()).collect(),
            })
            .collect();
        ok(api::ListWorkersResponse { workers })
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

type AssignmentStream = Pin<Box<dyn Stream<Item = Result<wire::Assignment, Status>> + Send>>;
type RequestStream = Pin<Box<dyn Stream<Item = Result<wire::WorkerRequest, Status>> + Send>>;

/// Ends a worker's registration when its assignment stream is dropped (the worker went away).
struct StreamGuard {
    cluster: Arc<Cluster>,
    worker: String,
    tx: crate::cluster::AssignmentSender,
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
        self.cluster.open_requests(&worker, tx);
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
        let (tx, rx) = mpsc::channel(16);
        let worker = request.worker_id.clone();
        self.cluster.join(request, tx.clone()).await?;
        let guard = StreamGuard {
            cluster: self.cluster.clone(),
            worker,
            tx,
        };
        let stream = tokio_stream::StreamExt::map(ReceiverStream::new(rx), move |item| {
            let _ = &guard;
            item
        });
        let stream =
            futures::StreamExt::take_until(stream, self.stopping.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn heartbeat(
        &self,
        request: Request<wire::HeartbeatRequest>,
    ) -> ApiResult<wire::HeartbeatResponse> {
        let known = self.cluster.heartbeat(&request.get_ref().worker_id).await;
        ok(wire::HeartbeatResponse {
            rejoin: !known,
            worker_timeout_ms: self.cluster.worker_timeout.as_millis() as u64,
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
