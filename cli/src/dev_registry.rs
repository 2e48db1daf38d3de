//! `sluice dev-registry`: an in-memory Confluent Schema Registry for development and tests,
//! speaking the documented REST API for Avro schemas: subjects and their versions, ids shared
//! by equal schemas, compatibility checks (BACKWARD by default) with apache-avro, and the
//! registry's JSON errors (40401, 40402, 40403, 409, 42201, 42203).
//!
//! Everything is lost when the process stops.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use apache_avro::schema_compatibility::SchemaCompatibility;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value as Json};
use tokio_util::sync::CancellationToken;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Compatibility levels, as the registry names them.
const LEVELS: [&str; 7] = [
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
];

/// A registered schema: its text as first registered, parsed, and in normal form (its JSON
/// without insignificant white space) to recognize it when registered again.
struct Stored {
    text: String,
    normal: Json,
    parsed: apache_avro::Schema,
}

#[derive(Default)]
struct Registry {
    /// Schemas by id - 1.
    schemas: Vec<Stored>,
    /// Each subject's schema ids, version 1 first.
    subjects: BTreeMap<String, Vec<usize>>,
    global_level: Option<String>,
    subject_levels: BTreeMap<String, String>,
}

type Shared = Arc<Mutex<Registry>>;

/// Serves the registry on `listen` until `shutdown`; prints `schema.registry.url=...` once
/// listening.
pub async fn run(listen: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let address = listener
        .local_addr()
        .context("read the listening address")?;
    let state: Shared = Arc::default();
    let app = Router::new()
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/config", get(global_config).put(set_global_config))
        .route(
            "/config/{subject}",
            get(subject_config).put(set_subject_config),
        )
        .with_state(state);
    println!("schema.registry.url=http://{address}");
    use std::io::Write as _;
    std::io::stdout().flush().context("write to stdout")?;
    tracing::info!(%address, "dev schema registry listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serve the schema registry")
}

/// A registry answer: JSON with the registry's content type.
fn answer(status: StatusCode, body: Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, code: i64, message: String) -> Response {
    answer(status, json!({ "error_code": code, "message": message }))
}

fn subject_not_found(subject: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        40401,
        format!("Subject '{subject}' not found."),
    )
}

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    // Every change is a push or an insert: a panic cannot leave the registry half-changed.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `schema` of a request body, parsed; an error answer otherwise.
// The error is the response itself, built once per request: no point boxing it.
#[allow(clippy::result_large_err)]
fn parse_request(body: &[u8]) -> Result<(String, Json, apache_avro::Schema), Response> {
    let invalid = |message: String| error(StatusCode::UNPROCESSABLE_ENTITY, 42201, message);
    let request: Json =
        serde_json::from_slice(body).map_err(|e| invalid(format!("Invalid request body: {e}")))?;
    if let Some(kind) = request.get("schemaType").and_then(Json::as_str) {
        if kind != "AVRO" {
            return Err(invalid(format!(
                "Invalid schema type {kind}: this registry supports AVRO only"
            )));
        }
    }
    let text = request
        .get("schema")
        .and_then(Json::as_str)
        .ok_or_else(|| invalid("Invalid schema: the request has no \"schema\" string".into()))?;
    let normal: Json =
        serde_json::from_str(text).map_err(|e| invalid(format!("Invalid schema {text}: {e}")))?;
    let parsed = apache_avro::Schema::parse_str(text)
        .map_err(|e| invalid(format!("Invalid schema {text}: {e}")))?;
    Ok((text.to_string(), normal, parsed))
}

impl Registry {
    fn level(&self, subject: &str) -> &str {
        self.subject_levels
            .get(subject)
            .or(self.global_level.as_ref())
            .map_or("BACKWARD", String::as_str)
    }

    /// Why `new` may not follow the subject's versions under its compatibility level.
    fn incompatibility(&self, subject: &str, new: &apache_avro::Schema) -> Option<String> {
        let level = self.level(subject);
        let versions = self.subjects.get(subject)?;
        let against: Vec<&Stored> = match level {
            "NONE" => return None,
            l if l.ends_with("_TRANSITIVE") => versions.iter().map(|&i| &self.schemas[i]).collect(),
            _ => versions
                .last()
                .map(|&i| &self.schemas[i])
                .into_iter()
                .collect(),
        };
        for old in against {
            // BACKWARD: the new schema reads what the old one wrote; FORWARD: the reverse.
            let backward = || SchemaCompatibility::can_read(&old.parsed, new);
            let forward = || SchemaCompatibility::can_read(new, &old.parsed);
            let result = match level.trim_end_matches("_TRANSITIVE") {
                "BACKWARD" => backward(),
                "FORWARD" => forward(),
                _ => backward().and_then(|()| forward()),
            };
            if let Err(e) = result {
                return Some(format!("{e} (compatibility level {level})"));
            }
        }
        None
    }

    fn version_of(&self, subject: &str, id: usize) -> Option<usize> {
        self.subjects
            .get(subject)?
            .iter()
            .position(|&i| i == id)
            .map(|p| p + 1)
    }

    fn find(&self, subject: &str, normal: &Json) -> Option<usize> {
        self.subjects
            .get(subject)?
            .iter()
            .copied()
            .find(|&i| self.schemas[i].normal == *normal)
    }

    fn subject_schema(&self, subject: &str, id: usize, version: usize) -> Json {
        json!({
            "subject": subject,
            "id": id + 1,
            "version": version,
            "schema": self.schemas[id].text,
        })
    }
}

async fn list_subjects(State(state): State<Shared>) -> Response {
    let registry = lock(&state);
    let subjects: Vec<&String> = registry.subjects.keys().collect();
    answer(StatusCode::OK, json!(subjects))
}

async fn list_versions(State(state): State<Shared>, Path(subject): Path<String>) -> Response {
    let registry = lock(&state);
    match registry.subjects.get(&subject) {
        Some(versions) => answer(
            StatusCode::OK,
            json!((1..=versions.len()).collect::<Vec<_>>()),
        ),
        None => subject_not_found(&subject),
    }
}

async fn register(
    State(state): State<Shared>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Response {
    let (text, normal, parsed) = match parse_request(&body) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let mut registry = lock(&state);
    if let Some(id) = registry.find(&subject, &normal) {
        return answer(StatusCode::OK, json!({ "id": id + 1 }));
    }
    if let Some(why) = registry.incompatibility(&subject, &parsed) {
        return error(
            StatusCode::CONFLICT,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \
                 \"{subject}\", details: [{why}]"
            ),
        );
    }
    let id = match registry.schemas.iter().position(|s| s.normal == normal) {
        Some(id) => id,
        None => {
            registry.schemas.push(Stored {
                text,
                normal,
                parsed,
            });
            registry.schemas.len() - 1
        }
    };
    registry.subjects.entry(subject).or_default().push(id);
    answer(StatusCode::OK, json!({ "id": id + 1 }))
}

async fn lookup(State(state): State<Shared>, Path(subject): Path<String>, body: Bytes) -> Response {
    let (_, normal, _) = match parse_request(&body) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let registry = lock(&state);
    if !registry.subjects.contains_key(&subject) {
        return subject_not_found(&subject);
    }
    match registry.find(&subject, &normal) {
        Some(id) => {
            let version = registry.version_of(&subject, id).unwrap_or(0);
            answer(
                StatusCode::OK,
                registry.subject_schema(&subject, id, version),
            )
        }
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found".into()),
    }
}

async fn version(
    State(state): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    let registry = lock(&state);
    let Some(versions) = registry.subjects.get(&subject) else {
        return subject_not_found(&subject);
    };
    let index = match version.as_str() {
        "latest" | "-1" => versions.len().checked_sub(1),
        v => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Some(n - 1),
            _ => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    42202,
                    format!(
                        "The specified version '{version}' is not a valid version id. Allowed \
                         values are between [1, 2^31-1] and the string \"latest\""
                    ),
                )
            }
        },
    };
    match index.and_then(|i| versions.get(i).map(|&id| (i, id))) {
        Some((i, id)) => answer(StatusCode::OK, registry.subject_schema(&subject, id, i + 1)),
        None => error(
            StatusCode::NOT_FOUND,
            40402,
            format!("Version {version} not found."),
        ),
    }
}

async fn schema_by_id(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let registry = lock(&state);
    let stored = id
        .parse::<usize>()
        .ok()
        .and_then(|id| id.checked_sub(1))
        .and_then(|i| registry.schemas.get(i));
    match stored {
        Some(s) => answer(StatusCode::OK, json!({ "schema": s.text })),
        None => error(
            StatusCode::NOT_FOUND,
            40403,
            format!("Schema {id} not found"),
        ),
    }
}

async fn global_config(State(state): State<Shared>) -> Response {
    let registry = lock(&state);
    let level = registry.global_level.as_deref().unwrap_or("BACKWARD");
    answer(StatusCode::OK, json!({ "compatibilityLevel": level }))
}

async fn subject_config(State(state): State<Shared>, Path(subject): Path<String>) -> Response {
    let registry = lock(&state);
    match registry.subject_levels.get(&subject) {
        Some(level) => answer(StatusCode::OK, json!({ "compatibilityLevel": level })),
        None => error(
            StatusCode::NOT_FOUND,
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        ),
    }
}

/// The level of a `PUT /config` body (`{"compatibility": "FULL"}`).
#[allow(clippy::result_large_err)]
fn requested_level(body: &[u8]) -> Result<String, Response> {
    let level = serde_json::from_slice::<Json>(body).ok().and_then(|j| {
        j.get("compatibility")
            .and_then(Json::as_str)
            .map(str::to_uppercase)
    });
    match level {
        Some(level) if LEVELS.contains(&level.as_str()) => Ok(level),
        _ => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            format!(
                "Invalid compatibility level. Valid values are {}",
                LEVELS.join(", ")
            ),
        )),
    }
}

async fn set_global_config(State(state): State<Shared>, body: Bytes) -> Response {
    match requested_level(&body) {
        Ok(level) => {
            lock(&state).global_level = Some(level.clone());
            answer(StatusCode::OK, json!({ "compatibility": level }))
        }
        Err(response) => response,
    }
}

async fn set_subject_config(
    State(state): State<Shared>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Response {
    match requested_level(&body) {
        Ok(level) => {
            lock(&state).subject_levels.insert(subject, level.clone());
            answer(StatusCode::OK, json!({ "compatibility": level }))
        }
        Err(response) => response,
    }
}
