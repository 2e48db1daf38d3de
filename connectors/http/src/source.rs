//! `HttpSource`: polls an HTTP endpoint for JSON items and keeps its cursor as the source
//! offset, with the keys of castorm's HTTP source connector
//! (`com.github.castorm.kafka.connect.http.HttpSourceConnector`), the common one.
//!
//! `http.request.url` (and `http.request.params`, `http.request.body`) may name `${offset}`:
//! the cursor, `http.offset.initial` before the first item. The answer's items are at
//! `http.response.list.pointer` (a JSON pointer; `/` — the default — when the answer is the
//! array itself); each becomes a record whose value is the item (JSON text), whose key is at
//! `http.response.record.key.pointer` (when set), and whose source offset is the cursor at
//! `http.response.record.offset.pointer` in it. After a page with items the next poll comes at
//! once; after an empty one, `http.timer.interval.millis` later. The cursor is committed with
//! the records, so a restart asks again from the last committed item: at least once.
//!
//! The answer's headers named in `http.response.headers.forward` (`*` for all) become Kafka
//! headers of every record of that answer, under their lower-case HTTP names.
//!
//! One task: a cursor cannot be split.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::Value as Json;
use sluice_connector_sdk::proto::{ConfigDef, ConfigType, ExactlyOnceSupport, Importance};
use sluice_connector_sdk::{
    data, Config, ConfigDefBuilder, Connector, SourceConnector, SourceRecord, SourceTask,
    SourceTaskContext, TaskError,
};

const URL: &str = "http.request.url";
const METHOD: &str = "http.request.method";
const HEADERS: &str = "http.request.headers";
const PARAMS: &str = "http.request.params";
const BODY: &str = "http.request.body";
const LIST_POINTER: &str = "http.response.list.pointer";
const KEY_POINTER: &str = "http.response.record.key.pointer";
const OFFSET_POINTER: &str = "http.response.record.offset.pointer";
const INITIAL: &str = "http.offset.initial";
const INTERVAL: &str = "http.timer.interval.millis";
const TOPIC: &str = "kafka.topic";
const TIMEOUT: &str = "http.client.read.timeout.millis";
const FORWARD: &str = "http.response.headers.forward";

pub struct HttpSource;

impl Connector for HttpSource {
    fn class_name(&self) -> &'static str {
        "HttpSource"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "com.github.castorm.kafka.connect.http.HttpSourceConnector",
            "HttpSourceConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Polls an HTTP endpoint for JSON items, its cursor kept as the source offset"
    }

    /// One task whatever `tasks.max` says: one endpoint, one cursor.
    fn plan(&self, config: &Config, _max_tasks: usize) -> Result<Vec<Config>, TaskError> {
        Ok(vec![config.clone()])
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let def = ConfigDefBuilder::define;
        use ConfigType::{Long, String as Text};
        use Importance::{High, Low, Medium};
        vec![
            def(
                URL,
                Text,
                None,
                High,
                "The URL to poll; ${offset} stands for the cursor",
            ),
            def(METHOD, Text, Some("GET"), Medium, "GET or POST"),
            def(
                HEADERS,
                Text,
                Some(""),
                Medium,
                "Headers, Name: Value separated by commas",
            ),
            def(
                PARAMS,
                Text,
                Some(""),
                Medium,
                "Query parameters, a=b&c=${offset}",
            ),
            def(
                BODY,
                Text,
                Some(""),
                Low,
                "The request body (POST); ${offset} stands for the cursor",
            ),
            def(
                LIST_POINTER,
                Text,
                Some("/"),
                High,
                "JSON pointer to the array of items in the answer",
            ),
            def(
                KEY_POINTER,
                Text,
                Some(""),
                Medium,
                "JSON pointer to an item's key; empty: no key",
            ),
            def(
                OFFSET_POINTER,
                Text,
                None,
                High,
                "JSON pointer to an item's cursor",
            ),
            def(
                INITIAL,
                Text,
                Some(""),
                High,
                "The cursor before the first item",
            ),
            def(
                INTERVAL,
                Long,
                Some("60000"),
                Medium,
                "Milliseconds between polls that found nothing new",
            ),
            def(TOPIC, Text, None, High, "The Kafka topic to write to"),
            def(
                TIMEOUT,
                Long,
                Some("30000"),
                Low,
                "Request timeout in milliseconds",
            ),
            def(
                FORWARD,
                Text,
                Some(""),
                Medium,
                "Answer headers copied to each record's Kafka headers: names separated by commas, or * for all",
            ),
        ]
    }
}

impl SourceConnector for HttpSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(HttpSourceTask::default())
    }

    fn exactly_once_support(&self) -> ExactlyOnceSupport {
        ExactlyOnceSupport::Unsupported
    }
}

#[derive(Default)]
struct HttpSourceTask {
    client: Option<reqwest::Client>,
    url: String,
    method: Option<Method>,
    headers: HeaderMap,
    params: String,
    body: String,
    list: String,
    key: String,
    offset: String,
    topic: String,
    interval: Duration,
    cursor: String,
    partition: Option<Arc<str>>,
    next_poll: Option<Instant>,
    /// Items fetched, not yet returned (a poll returns at most what it was asked for).
    fetched: std::collections::VecDeque<Json>,
    /// Answer headers to copy (lower case), or every one.
    forward: Vec<String>,
    forward_all: bool,
    /// The forwarded headers of the answer `fetched` came from.
    answer_headers: Vec<sluice_connector_sdk::proto::Header>,
}

/// A JSON value as the cursor's text: strings as they are, anything else as JSON.
fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON pointer, with `/` (Castorm's "the whole document") read as the root.
fn at<'a>(doc: &'a Json, pointer: &str) -> Option<&'a Json> {
    match pointer.trim() {
        "" | "/" => Some(doc),
        p => doc.pointer(p),
    }
}

#[async_trait]
impl SourceTask for HttpSourceTask {
    async fn start(&mut self, ctx: SourceTaskContext) -> Result<(), TaskError> {
        let config = &ctx.config;
        self.url = config.required(URL)?.trim().to_string();
        self.method = Some(
            match config
                .get_or(METHOD, "GET")
                .trim()
                .to_ascii_uppercase()
                .as_str()
            {
                "GET" => Method::GET,
                "POST" => Method::POST,
                other => {
                    return Err(TaskError::fatal(format!(
                        "{METHOD}: {other:?} is not GET or POST"
                    )))
                }
            },
        );
        for pair in config.get_or(HEADERS, "").split(',').map(str::trim) {
            if pair.is_empty() {
                continue;
            }
            let (name, value) = pair.split_once(':').ok_or_else(|| {
                TaskError::fatal(format!("{HEADERS}: {pair:?} is not Name: Value"))
            })?;
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                TaskError::fatal(format!("{HEADERS}: {name:?} is not a header name"))
            })?;
            let value = HeaderValue::from_str(value.trim()).map_err(|_| {
                TaskError::fatal(format!("{HEADERS}: the value of {name} is not header text"))
            })?;
            self.headers.append(name, value);
        }
        for name in config.get_or(FORWARD, "").split(',').map(str::trim) {
            match name {
                "" => {}
                "*" => self.forward_all = true,
                name => self.forward.push(name.to_ascii_lowercase()),
            }
        }
        self.params = config.get_or(PARAMS, "").to_string();
        self.body = config.get_or(BODY, "").to_string();
        self.list = config.get_or(LIST_POINTER, "/").to_string();
        self.key = config.get_or(KEY_POINTER, "").to_string();
        self.offset = config.required(OFFSET_POINTER)?.to_string();
        self.topic = config.required(TOPIC)?.to_string();
        self.interval = Duration::from_millis(config.parse_or(INTERVAL, 60_000u64)?);
        let partition = serde_json::json!({ "url": self.url }).to_string();
        // The committed cursor, else the initial one.
        self.cursor = ctx
            .offset(&partition)
            .and_then(|o| o.get("cursor").map(text))
            .unwrap_or_else(|| config.get_or(INITIAL, "").to_string());
        self.partition = Some(Arc::from(partition));
        self.client = Some(
            reqwest::Client::builder()
                .timeout(Duration::from_millis(config.parse_or(TIMEOUT, 30_000u64)?))
                .build()
                .map_err(|e| TaskError::fatal(format!("HTTP client: {e}")))?,
        );
        Ok(())
    }

    async fn poll(&mut self, max_records: usize) -> Result<Vec<SourceRecord>, TaskError> {
        if self.fetched.is_empty() {
            if let Some(at) = self.next_poll {
                let now = Instant::now();
                if at > now {
                    // Back within a second, so that a stop is seen promptly.
                    tokio::time::sleep((at - now).min(Duration::from_secs(1))).await;
                    if Instant::now() < at {
                        return Ok(Vec::new());
                    }
                }
            }
            let (items, headers) = self.fetch().await?;
            self.fetched = items.into();
            self.answer_headers = headers;
            self.next_poll = self
                .fetched
                .is_empty()
                .then(|| Instant::now() + self.interval);
        }
        let take = self.fetched.len().min(max_records);
        let mut out = Vec::with_capacity(take);
        for item in self.fetched.drain(..take).collect::<Vec<_>>() {
            let cursor = at(&item, &self.offset).map(text).ok_or_else(|| {
                TaskError::fatal(format!(
                    "{OFFSET_POINTER}: an item has nothing at {:?}: {}",
                    self.offset,
                    item.to_string().chars().take(200).collect::<String>()
                ))
            })?;
            let key = if self.key.is_empty() {
                data::null()
            } else {
                at(&item, &self.key).map_or_else(data::null, |k| data::string(text(k)))
            };
            self.cursor = cursor;
            out.push(SourceRecord {
                source_partition: self.partition.clone(),
                source_offset: Some(serde_json::json!({ "cursor": self.cursor }).to_string()),
                topic: self.topic.clone(),
                key,
                value: data::string(item.to_string()),
                headers: self.answer_headers.clone(),
                ..SourceRecord::default()
            });
        }
        Ok(out)
    }
}

impl HttpSourceTask {
    /// One request from the current cursor; its items and the headers to forward. A status of 5xx, 408 or 429, a timeout
    /// or a broken connection is retriable (the worker restarts the task with backoff, from
    /// the committed cursor); another non-2xx status, or an answer that is not JSON with an
    /// array at the list pointer, is fatal.
    async fn fetch(
        &self,
    ) -> Result<(Vec<Json>, Vec<sluice_connector_sdk::proto::Header>), TaskError> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| TaskError::fatal("not started"))?;
        let fill = |s: &str| s.replace("${offset}", &self.cursor);
        let mut url = fill(&self.url);
        if !self.params.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&fill(&self.params));
        }
        let mut request = client
            .request(self.method.clone().unwrap_or(Method::GET), &url)
            .headers(self.headers.clone());
        if !self.body.is_empty() {
            request = request.body(fill(&self.body));
        }
        let method = self.method.as_ref().unwrap_or(&Method::GET);
        let response = request.send().await.map_err(|e| {
            TaskError::retriable(format!("{method} {}: {}", self.url, e.without_url()))
        })?;
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .filter(|(name, _)| self.forward_all || self.forward.iter().any(|f| f == name.as_str()))
            .map(|(name, value)| {
                data::header(
                    name.as_str(),
                    data::string(String::from_utf8_lossy(value.as_bytes())),
                )
            })
            .collect();
        let body = response.bytes().await.map_err(|e| {
            TaskError::retriable(format!(
                "read the answer of {}: {}",
                self.url,
                e.without_url()
            ))
        })?;
        if !status.is_success() {
            let message = format!(
                "{} answered {status}: {}",
                self.url,
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            );
            let code = status.as_u16();
            return Err(if code >= 500 || code == 408 || code == 429 {
                TaskError::retriable(message)
            } else {
                TaskError::fatal(message)
            });
        }
        let mut doc: Json = serde_json::from_slice(&body).map_err(|e| {
            TaskError::fatal(format!(
                "{} answered with something that is not JSON: {e}",
                self.url
            ))
        })?;
        let list = match self.list.trim() {
            "" | "/" => Some(&mut doc),
            p => doc.pointer_mut(p),
        };
        match list {
            Some(Json::Array(items)) => Ok((std::mem::take(items), headers)),
            _ => Err(TaskError::fatal(format!(
                "{LIST_POINTER}: the answer of {} has no array at {:?}",
                self.url, self.list
            ))),
        }
    }
}
