//! The `http` connector plugin: `HttpSource` (`source.rs`, castorm's HTTP source keys) and
//! `HttpSink`, Confluent's HTTP sink connector (`io.confluent.connect.http.HttpSinkConnector`)
//! with its keys.
//!
//! Records are sent in the order they arrive, one request at a time, up to `batch.max.size`
//! records a request (with the same URL: `http.api.url` may name `${topic}` and `${key}`). A
//! request's body is its records' values joined: `batch.prefix` + values separated by
//! `batch.separator` + `batch.suffix`, or a JSON array with `batch.json.as.array`. A put
//! returns once every request of it was answered 2xx, so a flush reports only what the server
//! accepted. An answer with a status in `retry.on.status.codes` (408, 429 and 5xx by
//! default), a timeout or a broken connection is retried `max.retries` times, after the
//! server's `Retry-After` when it sends one, else a backoff doubling from `retry.backoff.ms`;
//! then the put fails as retriable and the worker restarts the task, which sends again from
//! the last commit (at least once). Any other status is the records' fault: they go through
//! `errors.*` (the dead-letter queue when tolerated) with the status and the start of the
//! answer.
//!
//! Kafka headers named in `http.headers.forward` (`*` for all) go out as HTTP headers, their
//! names after `http.headers.forward.prefix`; records whose forwarded headers differ go in
//! different requests. A header whose name or value HTTP cannot carry sends its record
//! through `errors.*`.

mod oauth;
mod source;

pub use source::HttpSource;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use sluice_connector_sdk::proto::{
    data, ConfigDef, ConfigType, Data, FieldError, Importance, SinkRecord,
};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, ErrantRecordReporter, Plugin, SinkBatch, SinkConnector,
    SinkRecordRef, SinkTask, SinkTaskContext, TaskError,
};
use sluice_data::converter::{Converter, Side};

const URL: &str = "http.api.url";
const METHOD: &str = "request.method";
const HEADERS: &str = "headers";
const HEADER_SEPARATOR: &str = "header.separator";
const BATCH_MAX: &str = "batch.max.size";
const BATCH_ARRAY: &str = "batch.json.as.array";
const BATCH_PREFIX: &str = "batch.prefix";
const BATCH_SUFFIX: &str = "batch.suffix";
const BATCH_SEPARATOR: &str = "batch.separator";
const AUTH_TYPE: &str = "auth.type";
const USER: &str = "connection.user";
const PASSWORD: &str = "connection.password";
const AUTHORIZATION_HEADER: &str = "http.headers.authorization";
const MAX_RETRIES: &str = "max.retries";
const RETRY_BACKOFF: &str = "retry.backoff.ms";
const RETRY_CODES: &str = "retry.on.status.codes";
const CONNECT_TIMEOUT: &str = "http.connect.timeout.ms";
const REQUEST_TIMEOUT: &str = "http.request.timeout.ms";
const NULL_VALUES: &str = "behavior.on.null.values";
const FORWARD: &str = "http.headers.forward";
const FORWARD_PREFIX: &str = "http.headers.forward.prefix";

/// The `http` plugin: HttpSource and HttpSink.
pub fn plugin() -> Plugin {
    Plugin::new("http", env!("CARGO_PKG_VERSION"))
        .source(HttpSource)
        .sink(HttpSink)
}

pub struct HttpSink;

impl Connector for HttpSink {
    fn class_name(&self) -> &'static str {
        "HttpSink"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "io.confluent.connect.http.HttpSinkConnector",
            "HttpSinkConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Sends records to an HTTP endpoint in order, batched; a flush succeeds once the server answered 2xx"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let def = ConfigDefBuilder::define;
        use ConfigType::{Boolean, Int, Long, Password, String as Text};
        use Importance::{High, Low, Medium};
        vec![
            def(URL, Text, None, High, "The URL to send to; ${topic} and ${key} stand for the record's topic and key"),
            def(METHOD, Text, Some("POST"), High, "POST, PUT, PATCH or DELETE"),
            def(HEADERS, Text, Some(""), Medium, "Headers of every request, Name:Value separated by header.separator"),
            def(HEADER_SEPARATOR, Text, Some("|"), Low, "The separator between the headers in headers"),
            def(BATCH_MAX, Int, Some("1"), High, "Records per request at most"),
            def(BATCH_ARRAY, Boolean, Some("false"), Medium, "Whether a request's body is a JSON array of its values"),
            def(BATCH_PREFIX, Text, Some(""), Low, "Text before a request's values (not with batch.json.as.array)"),
            def(BATCH_SUFFIX, Text, Some(""), Low, "Text after a request's values"),
            def(BATCH_SEPARATOR, Text, Some(","), Low, "Text between a request's values"),
            def(AUTH_TYPE, Text, Some("NONE"), High, "NONE, BASIC (connection.user, connection.password) or OAUTH2 (oauth2.*: client credentials)"),
            def(USER, Text, Some(""), Medium, "BASIC authentication's user"),
            def(PASSWORD, Password, Some(""), Medium, "BASIC authentication's password"),
            def(AUTHORIZATION_HEADER, Password, Some(""), Medium, "The Authorization header's whole value (e.g. Bearer …), kept secret"),
            def(MAX_RETRIES, Int, Some("10"), Medium, "Retries of a request answered with a status of retry.on.status.codes, timed out or cut"),
            def(RETRY_BACKOFF, Long, Some("3000"), Medium, "The first retry's backoff in ms (doubling, at most a minute) when the server sends no Retry-After"),
            def(RETRY_CODES, Text, Some("408,429,500-"), Medium, "Statuses to retry: codes and ranges (500-599, 500-)"),
            def(CONNECT_TIMEOUT, Int, Some("30000"), Low, "Connect timeout in ms"),
            def(REQUEST_TIMEOUT, Int, Some("30000"), Low, "Request timeout in ms"),
            def(NULL_VALUES, Text, Some("ignore"), Low, "A record with a null value: ignore, or fail (reported to errors.*)"),
            def(oauth::TOKEN_URL, Text, Some(""), Medium, "OAUTH2: the token URL (client-credentials grant)"),
            def(oauth::CLIENT_ID, Text, Some(""), Medium, "OAUTH2: the client's id"),
            def(oauth::CLIENT_SECRET, Password, Some(""), Medium, "OAUTH2: the client's secret"),
            def(oauth::AUTH_MODE, Text, Some("header"), Low, "OAUTH2: client credentials in a Basic header (header) or in the form (url)"),
            def(oauth::SCOPE, Text, Some(""), Low, "OAUTH2: the scope asked for; empty: none sent"),
            def(oauth::TOKEN_PROPERTY, Text, Some("access_token"), Low, "OAUTH2: the token's property in the answer"),
            def(FORWARD, Text, Some(""), Medium, "Kafka headers sent as HTTP headers: names separated by commas, or * for all"),
            def(FORWARD_PREFIX, Text, Some(""), Low, "Text put before a forwarded header's name"),
        ]
    }

    fn validate(&self, config: &Config) -> Vec<FieldError> {
        let mut errors = config.validate_against(&self.config_defs());
        if let Err((name, message)) = Settings::from_config(config) {
            errors.push(FieldError { name, message });
        }
        errors
    }
}

impl SinkConnector for HttpSink {
    fn task(&self) -> Box<dyn SinkTask> {
        Box::new(HttpSinkTask::default())
    }
}

/// Inclusive status ranges.
#[derive(Debug, Clone, PartialEq)]
struct Codes(Vec<(u16, u16)>);

impl Codes {
    fn parse(text: &str) -> Result<Codes, String> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || format!("{part:?} is not a status code or a range (500-599, 500-)");
            let range = match part.split_once('-') {
                None => {
                    let c = part.parse().map_err(|_| bad())?;
                    (c, c)
                }
                Some((a, "")) => (a.trim().parse().map_err(|_| bad())?, 999),
                Some((a, b)) => (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                ),
            };
            out.push(range);
        }
        Ok(Codes(out))
    }

    fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(a, b)| (*a..=*b).contains(&status))
    }
}

struct Settings {
    url: String,
    method: Method,
    headers: HeaderMap,
    batch_max: usize,
    array: bool,
    prefix: String,
    suffix: String,
    separator: String,
    retries: u32,
    backoff: Duration,
    retry_codes: Codes,
    connect_timeout: Duration,
    request_timeout: Duration,
    fail_on_null: bool,
    forward: Forward,
    oauth: Option<oauth::OAuth2>,
}

/// Which Kafka headers go out as HTTP headers, and under what names.
#[derive(Default)]
struct Forward {
    all: bool,
    names: Vec<String>,
    prefix: String,
}

impl Forward {
    fn from_config(config: &Config) -> Result<Forward, (String, String)> {
        let mut forward = Forward {
            prefix: config.get_or(FORWARD_PREFIX, "").trim().to_string(),
            ..Forward::default()
        };
        for name in config.get_or(FORWARD, "").split(',').map(str::trim) {
            match name {
                "" => {}
                "*" => forward.all = true,
                name => {
                    HeaderName::from_bytes(format!("{}{name}", forward.prefix).as_bytes())
                        .map_err(|_| {
                            (
                                FORWARD.to_string(),
                                format!("{name:?} (after the prefix) is not an HTTP header name"),
                            )
                        })?;
                    forward.names.push(name.to_string());
                }
            }
        }
        Ok(forward)
    }

    fn is_empty(&self) -> bool {
        !self.all && self.names.is_empty()
    }

    /// A record's headers to forward, as HTTP headers, in the record's order.
    fn headers_of(
        &self,
        record: &SinkRecordRef<'_>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let mut out = Vec::new();
        if self.is_empty() {
            return Ok(out);
        }
        for h in &record.headers {
            if !self.all && !self.names.contains(&h.key) {
                continue;
            }
            let name = HeaderName::from_bytes(format!("{}{}", self.prefix, h.key).as_bytes())
                .map_err(|_| format!("the Kafka header {:?} is not an HTTP header name", h.key))?;
            let text = h
                .value
                .as_ref()
                .and_then(sluice_connector_sdk::data::to_text)
                .unwrap_or_default();
            let value = HeaderValue::from_str(&text).map_err(|_| {
                format!(
                    "the value of the Kafka header {:?} is not HTTP header text",
                    h.key
                )
            })?;
            out.push((name, value));
        }
        Ok(out)
    }
}

impl Settings {
    fn from_config(config: &Config) -> Result<Settings, (String, String)> {
        let err = |key: &str, message: String| (key.to_string(), message);
        let url = config
            .get(URL)
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| err(URL, "missing: the URL to send to".into()))?
            .to_string();
        let probe = url.replace("${topic}", "t").replace("${key}", "k");
        let parsed = reqwest::Url::parse(&probe).map_err(|e| err(URL, format!("{url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(err(
                URL,
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        let method = match config
            .get_or(METHOD, "POST")
            .trim()
            .to_ascii_uppercase()
            .as_str()
        {
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            other => {
                return Err(err(
                    METHOD,
                    format!("{other:?} is not POST, PUT, PATCH or DELETE"),
                ))
            }
        };
        let mut headers = HeaderMap::new();
        let separator = config.get_or(HEADER_SEPARATOR, "|");
        let separator = if separator.is_empty() { "|" } else { separator };
        for pair in config.get_or(HEADERS, "").split(separator).map(str::trim) {
            if pair.is_empty() {
                continue;
            }
            let (name, value) = pair
                .split_once(':')
                .ok_or_else(|| err(HEADERS, format!("{pair:?} is not Name:Value")))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| err(HEADERS, format!("{:?} is not a header name", name.trim())))?;
            let value = HeaderValue::from_str(value.trim()).map_err(|_| {
                err(
                    HEADERS,
                    format!("the value of {name} is not a header value"),
                )
            })?;
            headers.append(name, value);
        }
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let mut oauth = None;
        match config
            .get_or(AUTH_TYPE, "NONE")
            .trim()
            .to_ascii_uppercase()
            .as_str()
        {
            "NONE" => {}
            "OAUTH2" => oauth = Some(oauth::OAuth2::from_config(config)?),
            "BASIC" => {
                let user = config.get_or(USER, "");
                let password = config.get_or(PASSWORD, "");
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                    .map_err(|_| err(USER, "the user is not header text".into()))?;
                value.set_sensitive(true);
                headers.insert(AUTHORIZATION, value);
            }
            other => {
                return Err(err(
                    AUTH_TYPE,
                    format!("{other:?} is not NONE, BASIC or OAUTH2"),
                ))
            }
        }
        if let Some(auth) = config.get(AUTHORIZATION_HEADER).filter(|a| !a.is_empty()) {
            let mut value = HeaderValue::from_str(auth)
                .map_err(|_| err(AUTHORIZATION_HEADER, "the value is not header text".into()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let number = |key: &str, default: u64| -> Result<u64, (String, String)> {
            match config.get(key).map(str::trim) {
                None | Some("") => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| err(key, format!("{v:?} is not a number"))),
            }
        };
        let fail_on_null = match config.get_or(NULL_VALUES, "ignore").trim() {
            "ignore" => false,
            "fail" => true,
            other => return Err(err(NULL_VALUES, format!("{other:?} is not ignore or fail"))),
        };
        if oauth.is_some() {
            // The token's header replaces any other.
            headers.remove(AUTHORIZATION);
        }
        Ok(Settings {
            url,
            method,
            headers,
            batch_max: number(BATCH_MAX, 1)?.max(1) as usize,
            array: config
                .parse_or(BATCH_ARRAY, false)
                .map_err(|e| err(BATCH_ARRAY, e.message))?,
            prefix: config.get_or(BATCH_PREFIX, "").to_string(),
            suffix: config.get_or(BATCH_SUFFIX, "").to_string(),
            separator: config.get_or(BATCH_SEPARATOR, ",").to_string(),
            retries: number(MAX_RETRIES, 10)? as u32,
            backoff: Duration::from_millis(number(RETRY_BACKOFF, 3000)?),
            retry_codes: Codes::parse(config.get_or(RETRY_CODES, "408,429,500-"))
                .map_err(|e| err(RETRY_CODES, e))?,
            connect_timeout: Duration::from_millis(number(CONNECT_TIMEOUT, 30_000)?),
            request_timeout: Duration::from_millis(number(REQUEST_TIMEOUT, 30_000)?),
            fail_on_null,
            forward: Forward::from_config(config)?,
            oauth,
        })
    }
}

#[derive(Default)]
struct HttpSinkTask {
    settings: Option<Settings>,
    client: Option<reqwest::Client>,
    json: Option<Converter>,
    errors: Option<ErrantRecordReporter>,
}

/// A request being gathered: its URL, forwarded headers and its records' values.
struct Request<'r, 'a> {
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    records: Vec<&'r SinkRecordRef<'a>>,
    values: Vec<Vec<u8>>,
}

#[async_trait]
impl SinkTask for HttpSinkTask {
    async fn start(&mut self, ctx: SinkTaskContext) -> Result<(), TaskError> {
        let settings = Settings::from_config(&ctx.config)
            .map_err(|(key, message)| TaskError::fatal(format!("{key}: {message}")))?;
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .build()
            .map_err(|e| TaskError::fatal(format!("HTTP client: {e}")))?;
        let json = Converter::new(
            "org.apache.kafka.connect.json.JsonConverter",
            &BTreeMap::from([("schemas.enable".to_string(), "false".to_string())]),
            Side::Value,
        )
        .map_err(|(_, e)| TaskError::fatal(e))?;
        self.settings = Some(settings);
        self.client = Some(client);
        self.json = Some(json);
        self.errors = Some(ctx.errors.clone());
        Ok(())
    }

    async fn put(&mut self, records: Vec<SinkRecord>) -> Result<(), TaskError> {
        self.put_batch(SinkBatch::from_records(0, &records)).await
    }

    async fn put_batch(&mut self, batch: SinkBatch) -> Result<(), TaskError> {
        let records = batch.records()?;
        let settings = self
            .settings
            .as_ref()
            .ok_or_else(|| TaskError::fatal("the task was not started"))?;
        let mut pending: Option<Request<'_, '_>> = None;
        for record in &records {
            if record.value.is_null() {
                if settings.fail_on_null {
                    self.report(record, format!("the value is null ({NULL_VALUES} is fail)"));
                }
                continue;
            }
            let value = match self.body_of(record) {
                Ok(v) => v,
                Err(message) => {
                    self.report(record, message);
                    continue;
                }
            };
            let headers = match settings.forward.headers_of(record) {
                Ok(h) => h,
                Err(message) => {
                    self.report(record, message);
                    continue;
                }
            };
            let url = settings
                .url
                .replace("${topic}", &record.topic)
                .replace("${key}", &record.key.text().unwrap_or_default());
            if let Some(p) = &pending {
                if p.url != url || p.headers != headers || p.records.len() >= settings.batch_max {
                    let full = pending.take().expect("checked");
                    self.send(full).await?;
                }
            }
            let p = pending.get_or_insert_with(|| Request {
                url,
                headers,
                records: Vec::new(),
                values: Vec::new(),
            });
            p.records.push(record);
            p.values.push(value);
        }
        if let Some(last) = pending {
            self.send(last).await?;
        }
        Ok(())
    }
}

impl HttpSinkTask {
    fn report(&self, record: &SinkRecordRef<'_>, message: String) {
        if let Some(errors) = &self.errors {
            errors.sink_record_ref(record, message);
        }
    }

    /// A value as the request carries it: text and bytes as they are, anything structured
    /// as JSON (JsonConverter without schemas).
    fn body_of(&self, record: &SinkRecordRef<'_>) -> Result<Vec<u8>, String> {
        if let Some(bytes) = record.value.scalar_bytes() {
            return Ok(bytes.into_owned());
        }
        let data: Data = record.value.to_data();
        if let Some(data::Kind::Raw(bytes)) = data.kind {
            return Ok(bytes);
        }
        let json = self.json.as_ref().ok_or("the task was not started")?;
        json.from_connect(&record.topic, Some(&data))
            .map(Option::unwrap_or_default)
            .map_err(|e| format!("cannot write the value as JSON: {e}"))
    }

    /// Sends one request until it is answered 2xx, retrying what may pass later; a status
    /// that will not pass later reports its records.
    async fn send(&self, request: Request<'_, '_>) -> Result<(), TaskError> {
        let (Some(settings), Some(client)) = (&self.settings, &self.client) else {
            return Err(TaskError::fatal("the task was not started"));
        };
        let mut body = Vec::new();
        if settings.array {
            body.push(b'[');
        } else {
            body.extend_from_slice(settings.prefix.as_bytes());
        }
        for (i, v) in request.values.iter().enumerate() {
            if i > 0 {
                body.extend_from_slice(if settings.array {
                    b","
                } else {
                    settings.separator.as_bytes()
                });
            }
            body.extend_from_slice(v);
        }
        if settings.array {
            body.push(b']');
        } else {
            body.extend_from_slice(settings.suffix.as_bytes());
        }
        let mut headers = settings.headers.clone();
        for (name, value) in &request.headers {
            headers.append(name.clone(), value.clone());
        }
        // Bytes: each attempt's clone of the request shares the body.
        let prepared = client
            .request(settings.method.clone(), &request.url)
            .headers(headers)
            .body(bytes::Bytes::from(body));
        let mut backoff = settings.backoff;
        let mut attempt = 0;
        // A 401 with an OAuth2 token: fetch a new one and send again, once a request.
        let mut token_renewed = false;
        loop {
            let Some(mut attempt_request) = prepared.try_clone() else {
                return Err(TaskError::fatal("the request cannot be sent again"));
            };
            if let Some(oauth) = &settings.oauth {
                attempt_request =
                    attempt_request.header(AUTHORIZATION, oauth.header(client).await?);
            }
            let sent = attempt_request.send().await;
            let (why, wait) = match sent {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response)
                    if response.status() == reqwest::StatusCode::UNAUTHORIZED
                        && !token_renewed
                        && settings.oauth.is_some() =>
                {
                    token_renewed = true;
                    if let Some(oauth) = &settings.oauth {
                        oauth.forget().await;
                    }
                    tracing::info!("{} answered 401: fetching a new OAuth2 token", request.url);
                    continue;
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let text = response.text().await.unwrap_or_default();
                    let excerpt: String = text.chars().take(200).collect();
                    let why = format!(
                        "{} {} answered {status}: {excerpt}",
                        settings.method, request.url
                    );
                    if !settings.retry_codes.contains(status.as_u16()) {
                        for record in &request.records {
                            self.report(record, why.clone());
                        }
                        return Ok(());
                    }
                    (why, retry_after)
                }
                Err(e) => (
                    format!("{} {}: {}", settings.method, request.url, describe(e)),
                    None,
                ),
            };
            if attempt >= settings.retries {
                return Err(TaskError::retriable(format!(
                    "{why} (after {attempt} retries)"
                )));
            }
            attempt += 1;
            let wait = wait.unwrap_or(backoff).min(Duration::from_secs(60));
            tracing::warn!("{why}; retry {attempt} of {} in {wait:?}", settings.retries);
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
}

/// A `Retry-After` header: seconds, or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// A client error without the URL's query (it may hold a secret) repeated.
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let e = e.without_url();
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_and_ranges() {
        let c = Codes::parse("408, 429,500-").unwrap();
        assert!(c.contains(408) && c.contains(429) && c.contains(503) && c.contains(599));
        assert!(!c.contains(400) && !c.contains(404) && !c.contains(200));
        let c = Codes::parse("400-499").unwrap();
        assert!(c.contains(400) && c.contains(499) && !c.contains(500));
        assert!(Codes::parse("5xx").is_err());
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
    }

    #[test]
    fn settings_name_the_bad_key() {
        let config = |pairs: &[(&str, &str)]| -> Config {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let key = |pairs: &[(&str, &str)]| Settings::from_config(&config(pairs)).err().map(|e| e.0);
        assert_eq!(key(&[]), Some(URL.into()));
        assert_eq!(key(&[(URL, "ftp://x")]), Some(URL.into()));
        assert_eq!(
            key(&[(URL, "http://x/${topic}"), (METHOD, "GET")]),
            Some(METHOD.into())
        );
        assert_eq!(
            key(&[(URL, "http://x"), (HEADERS, "nocolon")]),
            Some(HEADERS.into())
        );
        assert_eq!(
            key(&[(URL, "http://x"), (AUTH_TYPE, "DIGEST")]),
            Some(AUTH_TYPE.into())
        );
        assert_eq!(
            key(&[(URL, "http://x"), (AUTH_TYPE, "OAUTH2")]),
            Some(oauth::TOKEN_URL.into())
        );
        assert_eq!(
            key(&[
                (URL, "http://x"),
                (AUTH_TYPE, "OAUTH2"),
                (oauth::TOKEN_URL, "http://x/token")
            ]),
            Some(oauth::CLIENT_ID.into())
        );
        assert_eq!(
            key(&[(URL, "http://x"), (RETRY_CODES, "abc")]),
            Some(RETRY_CODES.into())
        );
        assert_eq!(key(&[(URL, "http://x/${topic}/${key}")]), None);
        assert_eq!(
            key(&[(URL, "http://x"), (FORWARD, "trace-id, bad name")]),
            Some(FORWARD.into())
        );
        assert_eq!(key(&[(URL, "http://x"), (FORWARD, "trace-id,*")]), None);
    }
}
