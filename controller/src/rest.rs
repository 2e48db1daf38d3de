//! Kafka Connect's REST API, served beside the gRPC API: the same paths, methods, status
//! codes and JSON shapes as Kafka Connect 4.x. Translation only: each route calls the gRPC
//! service's method for it (one implementation of each operation) and writes its answer the
//! way Kafka Connect does; a gRPC status becomes `{"error_code": N, "message": "..."}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sluice_proto::api::v1::{
    self as api, cluster_service_server::ClusterService,
    connector_service_server::ConnectorService, plugin_service_server::PluginService,
};
use sluice_proto::structs::{json_to_struct, struct_to_json};
use tonic::{Code, Request};

use crate::auth::{Access, Caller, Denied, Guard};
use crate::service::Api;

/// An error answer: Kafka Connect's body and status.
pub struct RestError {
    status: StatusCode,
    message: String,
}

impl RestError {
    fn new(status: StatusCode, message: impl Into<String>) -> RestError {
        RestError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> RestError {
        RestError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<tonic::Status> for RestError {
    fn from(status: tonic::Status) -> RestError {
        let code = match status.code() {
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            // As Kafka Connect answers offsets changed on a connector that is not STOPPED.
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                StatusCode::BAD_REQUEST
            }
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        RestError::new(code, status.message())
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let body = json!({ "error_code": self.status.as_u16(), "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

type RestResult = Result<Response, RestError>;

fn answer(status: StatusCode, body: Value) -> RestResult {
    Ok((status, Json(body)).into_response())
}

fn no_content() -> RestResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What a REST call needs: reads (GET, and validating a config) or changes; `GET /` (the
/// version) is open like gRPC's health service.
fn rest_access(method: &axum::http::Method, path: &str) -> Access {
    use axum::http::Method;
    if path == "/" && *method == Method::GET {
        Access::Open
    } else if *method == Method::GET
        || *method == Method::HEAD
        || (*method == Method::PUT && path.ends_with("/config/validate"))
    {
        Access::Read
    } else {
        Access::Change
    }
}

/// Lets a call through [`Guard`] or answers 401 (with `WWW-Authenticate: Bearer`) or 403 in
/// Kafka Connect's error body.
async fn guarded(
    State(guard): State<Arc<Guard>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let what = format!("{} {}", request.method(), request.uri().path());
    let access = rest_access(request.method(), request.uri().path());
    match guard.check(access, &Caller::of(&request), &what) {
        Ok(_) => next.run(request).await,
        Err(denied) => {
            let unauthenticated = matches!(denied, Denied::Unauthenticated(_));
            let mut response = RestError::from(denied.status()).into_response();
            if unauthenticated {
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
            }
            response
        }
    }
}

/// The routes, over the gRPC services of `api`, behind `guard`.
pub fn router(api: Api, guard: Arc<Guard>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/connectors", get(list_connectors).post(create_connector))
        .route(
            "/connectors/{name}",
            get(get_connector).delete(delete_connector),
        )
        .route(
            "/connectors/{name}/config",
            get(get_config).put(put_config).patch(patch_config),
        )
        .route("/connectors/{name}/status", get(connector_status))
        .route("/connectors/{name}/restart", post(restart_connector))
        .route("/connectors/{name}/pause", put(pause_connector))
        .route("/connectors/{name}/resume", put(resume_connector))
        .route("/connectors/{name}/stop", put(stop_connector))
        .route("/connectors/{name}/tasks", get(list_tasks))
        .route("/connectors/{name}/tasks/{task}/status", get(task_status))
        .route(
            "/connectors/{name}/tasks/{task}/restart",
            post(restart_task),
        )
        .route("/connectors/{name}/topics", get(connector_topics))
        .route("/connectors/{name}/topics/reset", put(reset_topics))
        .route(
            "/connectors/{name}/offsets",
            get(get_offsets).patch(alter_offsets).delete(reset_offsets),
        )
        .route("/connector-plugins", get(list_plugins))
        .route("/connector-plugins/{plugin}/config", get(plugin_config))
        .route(
            "/connector-plugins/{plugin}/config/validate",
            put(validate_config),
        )
        .route("/admin/loggers", get(list_loggers))
        .route("/admin/loggers/{logger}", get(get_logger).put(set_logger))
        .fallback(|| async {
            RestError::new(StatusCode::NOT_FOUND, "HTTP 404 Not Found").into_response()
        })
        .method_not_allowed_fallback(|| async {
            RestError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "HTTP 405 Method Not Allowed",
            )
            .into_response()
        })
        .with_state(api)
        .layer(axum::middleware::from_fn_with_state(guard, guarded))
        .layer(sluice_telemetry::ServerSpans::new(crate::untraced))
}

fn connector(name: String) -> Request<api::ConnectorRef> {
    Request::new(api::ConnectorRef { name })
}

/// Kafka Connect's state names: `RUNNING`, not `STATE_RUNNING`.
fn state_name(state: i32) -> &'static str {
    match api::State::try_from(state) {
        Ok(api::State::Running) => "RUNNING",
        Ok(api::State::Paused) => "PAUSED",
        Ok(api::State::Stopped) => "STOPPED",
        Ok(api::State::Failed) => "FAILED",
        Ok(api::State::Restarting) => "RESTARTING",
        _ => "UNASSIGNED",
    }
}

fn type_name(kind: i32) -> &'static str {
    match api::ConnectorType::try_from(kind) {
        Ok(api::ConnectorType::Source) => "source",
        Ok(api::ConnectorType::Sink) => "sink",
        _ => "unknown",
    }
}

fn info_json(info: &api::ConnectorInfo) -> Value {
    json!({
        "name": info.name,
        "config": sorted(&info.config),
        "tasks": info.tasks.iter().map(|t| json!({"connector": info.name, "task": t})).collect::<Vec<_>>(),
        "type": type_name(info.r#type),
    })
}

fn sorted(map: &std::collections::HashMap<String, String>) -> BTreeMap<&String, &String> {
    map.iter().collect()
}

fn task_status_json(t: &api::TaskStatus) -> Value {
    let mut out = json!({ "id": t.id, "state": state_name(t.state), "worker_id": t.worker_id });
    if !t.trace.is_empty() {
        out["trace"] = json!(t.trace);
    }
    out
}

fn status_json(s: &api::ConnectorStatus) -> Value {
    let c = s.connector.clone().unwrap_or_default();
    let mut connector = json!({ "state": state_name(c.state), "worker_id": c.worker_id });
    if !c.trace.is_empty() {
        connector["trace"] = json!(c.trace);
    }
    json!({
        "name": s.name,
        "connector": connector,
        "tasks": s.tasks.iter().map(task_status_json).collect::<Vec<_>>(),
        "type": type_name(s.r#type),
    })
}

/// A JSON object of strings (a connector config); values that are numbers or booleans are
/// taken as their text, as Kafka Connect's Jackson does.
fn config_map(
    value: &Value,
    what: &str,
) -> Result<std::collections::HashMap<String, String>, RestError> {
    let object = value
        .as_object()
        .ok_or_else(|| RestError::bad_request(format!("{what} must be a JSON object")))?;
    object
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(RestError::bad_request(format!(
                        "{what}: the value of {k:?} must be a string, not {other}"
                    )))
                }
            };
            Ok((k.clone(), text))
        })
        .collect()
}

/// Takes `name` out of a config: the connector's name is not a config key (Kafka Connect keeps
/// it in the config, equal to the name, and refuses one that differs).
fn drop_name(
    config: &mut std::collections::HashMap<String, String>,
    name: &str,
) -> Result<(), RestError> {
    match config.remove("name") {
        Some(inner) if inner != name => Err(RestError::bad_request(format!(
            "Connector name configuration ({inner}) doesn't match connector name in the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

/// A request body as JSON, or Kafka Connect's 400 for one that is not.
fn body_json(body: &axum::body::Bytes) -> Result<Value, RestError> {
    serde_json::from_slice(body).map_err(|e| {
        RestError::new(
            StatusCode::BAD_REQUEST,
            format!("Request body is not valid JSON: {e}"),
        )
    })
}

async fn root(State(api): State<Api>) -> RestResult {
    let info = api
        .get_cluster_info(Request::new(api::GetClusterInfoRequest {}))
        .await?
        .into_inner();
    answer(
        StatusCode::OK,
        json!({ "version": info.version, "commit": info.commit, "kafka_cluster_id": info.cluster_id }),
    )
}

async fn list_connectors(State(api): State<Api>, RawQuery(query): RawQuery) -> RestResult {
    // `?expand=status&expand=info`: a repeated parameter.
    let expand: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.strip_prefix("expand="))
        .map(str::to_ascii_lowercase)
        .collect();
    let (status, info) = (
        expand.iter().any(|e| e == "status"),
        expand.iter().any(|e| e == "info"),
    );
    let listed = api
        .list_connectors(Request::new(api::ListConnectorsRequest {
            expand_status: status,
            expand_info: info,
        }))
        .await?
        .into_inner();
    if !status && !info {
        let names: Vec<&str> = listed.connectors.iter().map(|c| c.name.as_str()).collect();
        return answer(StatusCode::OK, json!(names));
    }
    let mut out = Map::new();
    for c in &listed.connectors {
        let mut entry = Map::new();
        if let (true, Some(s)) = (status, &c.status) {
            entry.insert("status".into(), status_json(s));
        }
        if let (true, Some(i)) = (info, &c.info) {
            entry.insert("info".into(), info_json(i));
        }
        out.insert(c.name.clone(), Value::Object(entry));
    }
    answer(StatusCode::OK, Value::Object(out))
}

async fn create_connector(State(api): State<Api>, body: axum::body::Bytes) -> RestResult {
    let body = body_json(&body)?;
    let name = body["name"]
        .as_str()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| RestError::bad_request("Connector name must not be empty"))?
        .to_string();
    let mut config = config_map(
        body.get("config").unwrap_or(&Value::Object(Map::new())),
        "config",
    )?;
    drop_name(&mut config, &name)?;
    let initial_state = match body.get("initial_state").and_then(Value::as_str) {
        None | Some("RUNNING") => api::TargetState::Running,
        Some("PAUSED") => api::TargetState::Paused,
        Some("STOPPED") => api::TargetState::Stopped,
        Some(other) => {
            return Err(RestError::bad_request(format!(
                "Invalid initial state {other:?}: RUNNING, PAUSED or STOPPED"
            )))
        }
    };
    let info = api
        .create_connector(Request::new(api::CreateConnectorRequest {
            name,
            config,
            initial_state: initial_state as i32,
        }))
        .await?
        .into_inner();
    answer(StatusCode::CREATED, info_json(&info))
}

async fn get_connector(State(api): State<Api>, Path(name): Path<String>) -> RestResult {
    let info = api.get_connector(connector(name)).await?.into_inner();
    answer(StatusCode::OK, info_json(&info))
}

async fn delete_connector(State(api): State<Api>, Path(name): Path<String>) -> RestResult {
    api.delete_connector(connector(name)).await?;
    no_content()
}

async fn get_config(State(api): State<Api>, Path(name): Path<String>) -> RestResult {
    let config = api
        .get_connector_config(connector(name))
        .await?
        .into_inner();
    answer(StatusCode::OK, json!(sorted(&config.config)))
}

async fn put_config(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> RestResult {
    let mut config = config_map(&body_json(&body)?, "the config")?;
    drop_name(&mut config, &name)?;
    let put = api
        .put_connector_config(Request::new(api::PutConnectorConfigRequest {
            name,
            config,
            dry_run: false,
        }))
        .await?
        .into_inner();
    let info = put.info.unwrap_or_default();
    let status = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    answer(status, info_json(&info))
}

async fn patch_config(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> RestResult {
    let body = body_json(&body)?;
    let object = body
        .as_object()
        .ok_or_else(|| RestError::bad_request("the patch must be a JSON object"))?;
    let remove: Vec<String> = object
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(k, _)| k.clone())
        .collect();
    let set = config_map(
        &Value::Object(
            object
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        "the patch",
    )?;
    let info = api
        .patch_connector_config(Request::new(api::PatchConnectorConfigRequest {
            name,
            set,
            remove,
        }))
        .await?
        .into_inner();
    answer(StatusCode::OK, info_json(&info))
}

async fn connector_status(State(api): State<Api>, Path(name): Path<String>) -> RestResult {
    let status = api
        .get_connector_status(connector(name))
        .await?
        .into_inner();
    answer(StatusCode::OK, status_json(&status))
}

/// A query parameter's value, when given.
fn param<'q>(query: &'q Option<String>, name: &str) -> Option<&'q str> {
    query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A boolean query parameter as Kafka Connect (Java's `Boolean.parseBoolean`) reads it: `true`
/// in any case is true, anything else false; absent, `default`.
fn flag(query: &Option<String>, name: &str, default: bool) -> bool {
    param(query, name).map_or(default, |value| value.eq_ignore_ascii_case("true"))
}

/// Kafka Connect: with neither flag, the connector alone restarts and the answer is 204; with
/// either, 202 and the status as it stands after the restart was asked.
async fn restart_connector(
    State(api): State<Api>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> RestResult {
    let include_tasks = flag(&query, "includeTasks", false);
    let only_failed = flag(&query, "onlyFailed", false);
    let status = api
        .restart_connector(Request::new(api::RestartConnectorRequest {
            name,
            include_tasks,
            only_failed,
        }))
        .await?
        .into_inner();
    if !include_tasks && !only_failed {
        return no_content();
    }
    answer(StatusCode::ACCEPTED, status_json(&status))
}

async fn pause_connector(State(api): State<Api>, Path(name): Path<String>) -> RestResult {
    api.pause_connector(connector(name)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn resume_connector(State(api): State<Api>, Path(name): Path<String>) -> RestResult {
    api.resume_connector(connector(name)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn stop_connector(State(api): State<Api>, Path(name): Path<String>) -> RestResult {
    api.stop_connector(connector(name)).await?;
    no_content()
}

async fn list_tasks(State(api): State<Api>, Path(name): Path<String>) -> RestResult {
    let tasks = api.list_tasks(connector(name.clone())).await?.into_inner();
    let out: Vec<Value> = tasks
        .tasks
        .iter()
        .map(|t| json!({ "id": {"connector": name, "task": t.id}, "config": sorted(&t.config) }))
        .collect();
    answer(StatusCode::OK, json!(out))
}

fn task_ref(name: String, task: &str) -> Result<Request<api::TaskRef>, RestError> {
    let task = task
        .parse()
        .map_err(|_| RestError::new(StatusCode::NOT_FOUND, format!("Task {task:?} not found")))?;
    Ok(Request::new(api::TaskRef {
        connector: name,
        task,
    }))
}

async fn task_status(
    State(api): State<Api>,
    Path((name, task)): Path<(String, String)>,
) -> RestResult {
    let status = api
        .get_task_status(task_ref(name, &task)?)
        .await?
        .into_inner();
    answer(StatusCode::OK, task_status_json(&status))
}

async fn restart_task(
    State(api): State<Api>,
    Path((name, task)): Path<(String, String)>,
) -> RestResult {
    api.restart_task(task_ref(name, &task)?).await?;
    no_content()
}

async fn connector_topics(State(api): State<Api>, Path(name): Path<String>) -> RestResult {
    let topics = api
        .get_connector_topics(connector(name))
        .await?
        .into_inner();
    answer(
        StatusCode::OK,
        json!({ topics.name.clone(): { "topics": topics.topics } }),
    )
}

async fn reset_topics(State(api): State<Api>, Path(name): Path<String>) -> RestResult {
    api.reset_connector_topics(connector(name)).await?;
    Ok(StatusCode::OK.into_response())
}

async fn get_offsets(State(api): State<Api>, Path(name): Path<String>) -> RestResult {
    let offsets = api.get_offsets(connector(name)).await?.into_inner();
    let out: Vec<Value> = offsets
        .offsets
        .iter()
        .map(|o| {
            json!({
                "partition": o.partition.as_ref().map(struct_to_json).unwrap_or(json!({})),
                "offset": o.offset.as_ref().map(struct_to_json).unwrap_or(Value::Null),
            })
        })
        .collect();
    answer(StatusCode::OK, json!({ "offsets": out }))
}

async fn alter_offsets(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> RestResult {
    let body = body_json(&body)?;
    let items = body["offsets"]
        .as_array()
        .ok_or_else(|| RestError::bad_request("The request body must have an offsets array"))?;
    let mut offsets = Vec::with_capacity(items.len());
    for item in items {
        let partition = json_to_struct(&item["partition"])
            .ok_or_else(|| RestError::bad_request("Each offset must have a partition object"))?;
        let offset = match &item["offset"] {
            Value::Null => None,
            other => Some(json_to_struct(other).ok_or_else(|| {
                RestError::bad_request("An offset must be an object, or null to reset it")
            })?),
        };
        offsets.push(api::ConnectorOffset {
            partition: Some(partition),
            offset,
        });
    }
    let altered = api
        .alter_offsets(Request::new(api::AlterOffsetsRequest { name, offsets }))
        .await?
        .into_inner();
    answer(StatusCode::OK, json!({ "message": altered.message }))
}

async fn reset_offsets(State(api): State<Api>, Path(name): Path<String>) -> RestResult {
    let reset = api.reset_offsets(connector(name)).await?.into_inner();
    answer(StatusCode::OK, json!({ "message": reset.message }))
}

async fn list_plugins(State(api): State<Api>, RawQuery(query): RawQuery) -> RestResult {
    let plugins = api
        .list_plugins(Request::new(api::ListPluginsRequest {
            connectors_only: flag(&query, "connectorsOnly", true),
        }))
        .await?
        .into_inner();
    let out: Vec<Value> = plugins
        .plugins
        .iter()
        .map(|p| json!({ "class": p.class_name, "type": p.r#type, "version": p.version }))
        .collect();
    answer(StatusCode::OK, json!(out))
}

fn config_key_json(k: &api::ConfigKey) -> Value {
    json!({
        "name": k.name,
        "type": k.r#type,
        "required": k.required,
        "default_value": k.default_value,
        "importance": k.importance,
        "documentation": k.documentation,
        "group": if k.group.is_empty() { Value::Null } else { json!(k.group) },
        "width": "NONE",
        "display_name": if k.display_name.is_empty() { json!(k.name) } else { json!(k.display_name) },
        "dependents": [],
        "order": -1,
    })
}

async fn plugin_config(State(api): State<Api>, Path(plugin): Path<String>) -> RestResult {
    let config = api
        .get_plugin_config(Request::new(api::PluginRef { class_name: plugin }))
        .await?
        .into_inner();
    let out: Vec<Value> = config.configs.iter().map(config_key_json).collect();
    answer(StatusCode::OK, json!(out))
}

async fn validate_config(
    State(api): State<Api>,
    Path(plugin): Path<String>,
    body: axum::body::Bytes,
) -> RestResult {
    let config = config_map(&body_json(&body)?, "the config")?;
    let checked = api
        .validate_config(Request::new(api::ValidateConfigRequest {
            class_name: plugin,
            config,
        }))
        .await?
        .into_inner();
    let configs: Vec<Value> = checked
        .configs
        .iter()
        .map(|c| {
            let v = c.value.clone().unwrap_or_default();
            json!({
                "definition": c.definition.as_ref().map(config_key_json),
                "value": {
                    "name": v.name,
                    "value": v.value,
                    "recommended_values": v.recommended_values,
                    "errors": v.errors,
                    "visible": v.visible,
                },
            })
        })
        .collect();
    answer(
        StatusCode::OK,
        json!({
            "name": checked.name,
            "error_count": checked.error_count,
            "groups": checked.groups,
            "configs": configs,
        }),
    )
}

async fn list_loggers(State(api): State<Api>) -> RestResult {
    let levels = api
        .list_loggers(Request::new(api::ListLoggersRequest {}))
        .await?
        .into_inner();
    let out: BTreeMap<&String, Value> = levels
        .levels
        .iter()
        .map(|(logger, level)| {
            (
                logger,
                json!({ "level": level.to_ascii_uppercase(), "last_modified": null }),
            )
        })
        .collect();
    answer(StatusCode::OK, json!(out))
}

async fn get_logger(State(api): State<Api>, Path(logger): Path<String>) -> RestResult {
    let levels = api
        .list_loggers(Request::new(api::ListLoggersRequest {}))
        .await?
        .into_inner();
    match levels.levels.get(&logger) {
        Some(level) => answer(
            StatusCode::OK,
            json!({ "level": level.to_ascii_uppercase(), "last_modified": null }),
        ),
        None => Err(RestError::new(
            StatusCode::NOT_FOUND,
            format!("Logger {logger} not found."),
        )),
    }
}

/// `scope=cluster`: every worker too, answered 204 as Kafka Connect does; else this
/// controller's loggers, answered with the loggers changed.
async fn set_logger(
    State(api): State<Api>,
    Path(logger): Path<String>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> RestResult {
    let body = body_json(&body)?;
    let level = body["level"]
        .as_str()
        .ok_or_else(|| RestError::bad_request("The request body must have a level"))?
        .to_string();
    let cluster = param(&query, "scope").is_some_and(|s| s.eq_ignore_ascii_case("cluster"));
    let changed = api
        .set_log_level(Request::new(api::SetLogLevelRequest {
            logger,
            level,
            scope: if cluster { "cluster" } else { "worker" }.into(),
        }))
        .await?
        .into_inner();
    if cluster {
        return no_content();
    }
    answer(StatusCode::OK, json!(changed.loggers))
}
