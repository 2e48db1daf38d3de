//! Confluent Schema Registry clients for the Avro converter: the `SchemaRegistry` trait (so unit
//! tests and tools can use an in-memory registry) and `HttpRegistry`, a blocking client for the
//! registry's documented REST API only (register, look up, latest version, schema by id).
//!
//! The converter calls these synchronously and caches what they return, so only the first
//! record of each schema waits on the network.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;

/// A schema's id in a registry: the four bytes after the magic byte in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemaId(pub i32);

impl fmt::Display for SchemaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A schema with its id and version under a subject (`GET /subjects/{subject}/versions/latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectSchema {
    pub id: SchemaId,
    pub version: i32,
    /// The Avro schema as JSON text.
    pub schema: String,
}

/// Confluent's "subject not found" error code.
pub const SUBJECT_NOT_FOUND: i64 = 40401;
/// Confluent's "version not found" error code.
pub const VERSION_NOT_FOUND: i64 = 40402;
/// Confluent's "schema not found" error code.
pub const SCHEMA_NOT_FOUND: i64 = 40403;
/// Confluent's "invalid schema" error code.
pub const INVALID_SCHEMA: i64 = 42201;
/// The HTTP status (and error code) of an incompatible schema.
pub const INCOMPATIBLE_SCHEMA: i64 = 409;

/// A registry call that failed. Every message names the registry's URL, never its credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered with an error (`{"error_code": ..., "message": ...}`).
    #[error("schema registry at {url} answered {status} (error code {code}): {message}")]
    Api {
        url: String,
        status: u16,
        code: i64,
        message: String,
    },
    /// No registry answered: connection refused, timed out, ...
    #[error("cannot reach schema registry at {url}: {error}")]
    Unreachable { url: String, error: String },
    /// The registry answered something that is not its documented API.
    #[error("unexpected answer from schema registry at {url}: {error}")]
    Invalid { url: String, error: String },
}

impl RegistryError {
    /// The registry's error code, if it answered with one.
    pub fn code(&self) -> Option<i64> {
        match self {
            RegistryError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What the Avro converter needs from a schema registry. Implementations are called from the
/// converter while it converts records, possibly from several threads.
pub trait SchemaRegistry: Send + Sync + fmt::Debug {
    /// `POST /subjects/{subject}/versions`: registers the schema (or finds it) under the subject.
    fn register(&self, subject: &str, schema: &str) -> Result<SchemaId, RegistryError>;
    /// `POST /subjects/{subject}`: the id of a schema already registered under the subject.
    fn lookup(&self, subject: &str, schema: &str) -> Result<SchemaId, RegistryError>;
    /// `GET /subjects/{subject}/versions/latest`.
    fn latest(&self, subject: &str) -> Result<SubjectSchema, RegistryError>;
    /// `GET /schemas/ids/{id}`: the schema's JSON text.
    fn schema(&self, id: SchemaId) -> Result<String, RegistryError>;
    /// Where this registry is, for error messages (no credentials).
    fn location(&self) -> String;
}

/// The registry's content type, for requests and answers.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking client for Confluent's Schema Registry REST API. With several URLs it uses the
/// first that answers and stays with it until it stops answering.
pub struct HttpRegistry {
    urls: Vec<String>,
    /// `Basic ...` header value; never printed.
    authorization: Option<String>,
    agent: ureq::Agent,
    /// Index into `urls` of the registry that answered last.
    current: AtomicUsize,
}

impl fmt::Debug for HttpRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRegistry")
            .field("urls", &self.urls)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "****"),
            )
            .finish()
    }
}

impl HttpRegistry {
    /// A client for a comma-separated list of URLs (`schema.registry.url`), with optional
    /// `user:password` for basic authentication. No request is made here.
    pub fn new(urls: &str, user_info: Option<&str>) -> Result<HttpRegistry, String> {
        let urls: Vec<String> = urls
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err("expected at least one URL".into());
        }
        for url in &urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains('@') {
                // Credentials in a URL would end up in error messages: they belong in
                // basic.auth.user.info.
                return Err(format!(
                    "invalid URL {:?}: expected http://HOST:PORT without credentials",
                    redact(url)
                ));
            }
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .user_agent("sluice")
            .build()
            .into();
        Ok(HttpRegistry {
            urls,
            authorization: user_info.map(|info| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(info)
                )
            }),
            agent,
            current: AtomicUsize::new(0),
        })
    }

    /// Sends one request to the first registry that answers, starting with the one that
    /// answered last; returns the answer's JSON on 2xx.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, RegistryError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.urls.len() {
            let index = (start + i) % self.urls.len();
            let url = format!("{}{path}", self.urls[index]);
            match self.send(method, &url, body) {
                Ok(answer) => {
                    self.current.store(index, Ordering::Relaxed);
                    return answer;
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Unreachable {
            url: self.urls.join(","),
            error: "no URL".into(),
        }))
    }

    /// One request. The outer error means the registry could not be reached (try the next);
    /// the inner result is its answer.
    fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Result<serde_json::Value, RegistryError>, RegistryError> {
        let unreachable = |e: ureq::Error| RegistryError::Unreachable {
            url: url.to_string(),
            error: e.to_string(),
        };
        let response = match (method, body) {
            ("POST", Some(body)) => {
                let mut request = self
                    .agent
                    .post(url)
                    .header("Accept", CONTENT_TYPE)
                    .header("Content-Type", CONTENT_TYPE);
                if let Some(auth) = &self.authorization {
                    request = request.header("Authorization", auth);
                }
                request.send(body.to_string()).map_err(unreachable)?
            }
            _ => {
                let mut request = self.agent.get(url).header("Accept", CONTENT_TYPE);
                if let Some(auth) = &self.authorization {
                    request = request.header("Authorization", auth);
                }
                request.call().map_err(unreachable)?
            }
        };
        let status = response.status().as_u16();
        let invalid = |error: String| RegistryError::Invalid {
            url: url.to_string(),
            error,
        };
        let text = response
            .into_body()
            .read_to_string()
            .map_err(|e| invalid(format!("read the answer: {e}")))?;
        let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return Ok(
                json.ok_or_else(|| invalid(format!("{status} with a body that is not JSON")))
            );
        }
        let code = json
            .as_ref()
            .and_then(|j| j.get("error_code"))
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(i64::from(status));
        let message = json
            .as_ref()
            .and_then(|j| j.get("message"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(200).collect());
        Ok(Err(RegistryError::Api {
            url: url.to_string(),
            status,
            code,
            message,
        }))
    }

    fn id_of(&self, answer: &serde_json::Value, url: &str) -> Result<SchemaId, RegistryError> {
        answer
            .get("id")
            .and_then(serde_json::Value::as_i64)
            .and_then(|id| i32::try_from(id).ok())
            .map(SchemaId)
            .ok_or_else(|| RegistryError::Invalid {
                url: url.to_string(),
                error: format!("expected {{\"id\": N}}, got {answer}"),
            })
    }

    fn location_of(&self, path: &str) -> String {
        let index = self.current.load(Ordering::Relaxed) % self.urls.len();
        format!("{}{path}", self.urls[index])
    }
}

/// A subject as a URL path segment.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A URL with any `user:password@` removed.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}****{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl HttpRegistry {
    /// POSTs `{"schema": ...}` to `path` and reads the id from the answer: registering a
    /// version and looking one up share this shape.
    fn post_schema(&self, path: &str, schema: &str) -> Result<SchemaId, RegistryError> {
        let answer = self.call("POST", path, Some(&serde_json::json!({ "schema": schema })))?;
        self.id_of(&answer, &self.location_of(path))
    }
}

impl SchemaRegistry for HttpRegistry {
    fn register(&self, subject: &str, schema: &str) -> Result<SchemaId, RegistryError> {
        self.post_schema(
            &format!("/subjects/{}/versions", encode_segment(subject)),
            schema,
        )
    }

    fn lookup(&self, subject: &str, schema: &str) -> Result<SchemaId, RegistryError> {
        self.post_schema(&format!("/subjects/{}", encode_segment(subject)), schema)
    }

    fn latest(&self, subject: &str) -> Result<SubjectSchema, RegistryError> {
        let path = format!("/subjects/{}/versions/latest", encode_segment(subject));
        let answer = self.call("GET", &path, None)?;
        let url = self.location_of(&path);
        let id = self.id_of(&answer, &url)?;
        let version = answer.get("version").and_then(serde_json::Value::as_i64);
        let schema = answer.get("schema").and_then(serde_json::Value::as_str);
        match (version.and_then(|v| i32::try_from(v).ok()), schema) {
            (Some(version), Some(schema)) => Ok(SubjectSchema {
                id,
                version,
                schema: schema.to_string(),
            }),
            _ => Err(RegistryError::Invalid {
                url,
                error: format!("expected version and schema, got {answer}"),
            }),
        }
    }

    fn schema(&self, id: SchemaId) -> Result<String, RegistryError> {
        let path = format!("/schemas/ids/{id}");
        let answer = self.call("GET", &path, None)?;
        match answer.get("schema").and_then(serde_json::Value::as_str) {
            Some(schema) => Ok(schema.to_string()),
            None => Err(RegistryError::Invalid {
                url: self.location_of(&path),
                error: format!("expected {{\"schema\": \"...\"}}, got {answer}"),
            }),
        }
    }

    fn location(&self) -> String {
        self.urls.join(",")
    }
}

/// A registry in memory: subjects with versions, ids shared across subjects for the same
/// schema text, no compatibility checks. For tests, and for tools that need no server.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    /// Schema texts by id; ids start at 1.
    schemas: Vec<String>,
    /// Each subject's versions, oldest first.
    subjects: HashMap<String, Vec<SchemaId>>,
}

impl MemoryRegistry {
    pub fn new() -> MemoryRegistry {
        MemoryRegistry::default()
    }

    /// Adds a schema under an id of its own without a subject (as another producer would).
    pub fn insert(&self, schema: &str) -> SchemaId {
        let mut state = self.lock();
        state.schemas.push(schema.to_string());
        SchemaId(i32::try_from(state.schemas.len()).unwrap_or(i32::MAX))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic while holding the lock cannot leave the maps half-updated: every change is
        // a single push.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn not_found(&self, code: i64, message: String) -> RegistryError {
        RegistryError::Api {
            url: self.location(),
            status: 404,
            code,
            message,
        }
    }
}

impl SchemaRegistry for MemoryRegistry {
    fn register(&self, subject: &str, schema: &str) -> Result<SchemaId, RegistryError> {
        if let Ok(id) = self.lookup(subject, schema) {
            return Ok(id);
        }
        let mut state = self.lock();
        let id = match state.schemas.iter().position(|s| s == schema) {
            Some(i) => SchemaId(i32::try_from(i + 1).unwrap_or(i32::MAX)),
            None => {
                state.schemas.push(schema.to_string());
                SchemaId(i32::try_from(state.schemas.len()).unwrap_or(i32::MAX))
            }
        };
        state
            .subjects
            .entry(subject.to_string())
            .or_default()
            .push(id);
        Ok(id)
    }

    fn lookup(&self, subject: &str, schema: &str) -> Result<SchemaId, RegistryError> {
        let state = self.lock();
        let versions = state.subjects.get(subject).ok_or_else(|| {
            self.not_found(SUBJECT_NOT_FOUND, format!("Subject '{subject}' not found."))
        })?;
        versions
            .iter()
            .copied()
            .find(|id| state.schemas.get(id.0 as usize - 1).map(String::as_str) == Some(schema))
            .ok_or_else(|| self.not_found(SCHEMA_NOT_FOUND, "Schema not found".into()))
    }

    fn latest(&self, subject: &str) -> Result<SubjectSchema, RegistryError> {
        let state = self.lock();
        let versions = state.subjects.get(subject).ok_or_else(|| {
            self.not_found(SUBJECT_NOT_FOUND, format!("Subject '{subject}' not found."))
        })?;
        let id = *versions.last().ok_or_else(|| {
            self.not_found(
                VERSION_NOT_FOUND,
                format!("Subject '{subject}' has no versions."),
            )
        })?;
        Ok(SubjectSchema {
            id,
            version: i32::try_from(versions.len()).unwrap_or(i32::MAX),
            schema: state.schemas[id.0 as usize - 1].clone(),
        })
    }

    fn schema(&self, id: SchemaId) -> Result<String, RegistryError> {
        let state = self.lock();
        usize::try_from(id.0)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| state.schemas.get(i))
            .cloned()
            .ok_or_else(|| self.not_found(SCHEMA_NOT_FOUND, "Schema not found".into()))
    }

    fn location(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_credentials_hidden() {
        assert!(HttpRegistry::new("", None).is_err());
        let e = HttpRegistry::new("http://user:secret@host:8081", None).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        let registry =
            HttpRegistry::new(" http://a:8081/ , http://b:8081", Some("user:secret")).unwrap();
        assert_eq!(registry.location(), "http://a:8081,http://b:8081");
        let debug = format!("{registry:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert_eq!(encode_segment("a b/c-value"), "a%20b%2Fc-value");
    }

    #[test]
    fn unreachable_registry_names_the_url() {
        // Port 9 (discard) on loopback: nothing listens there in a test environment.
        let registry = HttpRegistry::new("http://127.0.0.1:9", None).unwrap();
        let e = registry.schema(SchemaId(1)).unwrap_err();
        assert!(
            matches!(&e, RegistryError::Unreachable { url, .. } if url == "http://127.0.0.1:9/schemas/ids/1"),
            "{e}"
        );
    }

    #[test]
    fn memory_registry_shares_ids() {
        let r = MemoryRegistry::new();
        let a = r.register("t-value", "\"string\"").unwrap();
        assert_eq!(r.register("t-value", "\"string\"").unwrap(), a);
        assert_eq!(r.register("u-value", "\"string\"").unwrap(), a);
        let b = r.register("t-value", "\"int\"").unwrap();
        assert_ne!(a, b);
        assert_eq!(r.latest("t-value").unwrap().version, 2);
        assert_eq!(r.lookup("t-value", "\"string\"").unwrap(), a);
        assert_eq!(
            r.lookup("x", "\"string\"").unwrap_err().code(),
            Some(SUBJECT_NOT_FOUND)
        );
        assert_eq!(
            r.schema(SchemaId(99)).unwrap_err().code(),
            Some(SCHEMA_NOT_FOUND)
        );
        assert_eq!(r.schema(b).unwrap(), "\"int\"");
    }
}
