//! The one typed parse of a connector configuration's framework keys ([`crate::keys`]):
//! the controller validates with it when a connector is created, both worker modes run with
//! it, dry runs and `sluice connectors validate` report its issues. Every problem names its
//! key; all of them are returned, not only the first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_data::transforms::{Chain, ConfigIssue};
use sluice_proto::api::v1 as api;

use crate::file::{ConfigError, ConfigFile};
use crate::ids::ConnectorName;

/// How failures are restarted: Sluice's `restart.*` connector keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts after consecutive failures; `None` for no limit.
    pub max_restarts: Option<u32>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: Some(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// The connector's `errors.*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPolicy {
    /// `errors.tolerance=all`: skip failed records (after the dead-letter queue) and go on.
    pub tolerate_all: bool,
    /// `errors.retry.timeout`: how long a retriable failure is retried; `None` for ever.
    pub retry_timeout: Option<Duration>,
    pub retry_delay_max: Duration,
    pub log: bool,
    pub log_messages: bool,
    pub dlq_topic: Option<String>,
    pub dlq_replication: i16,
    pub dlq_context_headers: bool,
}

impl Default for ErrorPolicy {
    fn default() -> Self {
        ErrorPolicy {
            tolerate_all: false,
            retry_timeout: Some(Duration::ZERO),
            retry_delay_max: Duration::from_secs(60),
            log: false,
            log_messages: false,
            dlq_topic: None,
            dlq_replication: 3,
            dlq_context_headers: false,
        }
    }
}

/// When an exactly-once source task commits its transaction (Kafka Connect's
/// `transaction.boundary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionBoundary {
    /// After every batch the connector polled.
    Poll,
    /// Every `transaction.boundary.interval.ms`.
    Interval,
    /// Where the connector marks it.
    Connector,
}

/// What the framework reads from a connector configuration.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    pub name: ConnectorName,
    pub class: String,
    pub tasks_max: u32,
    /// Sink subscription: a list of topics or a regex.
    pub topics: Vec<String>,
    pub topics_regex: Option<String>,
    pub restart: RestartPolicy,
    pub errors: ErrorPolicy,
    /// `exactly.once.support=required`: refuse to run unless exactly-once is possible.
    pub exactly_once_required: bool,
    pub transaction_boundary: TransactionBoundary,
    /// `transaction.boundary.interval.ms`; the worker's offset flush interval when absent.
    pub transaction_interval: Option<Duration>,
    /// `transforms` and `predicates`, built.
    pub transforms: Arc<Chain>,
    /// The whole configuration, as given to the connector.
    pub values: BTreeMap<String, String>,
}

impl ConnectorConfig {
    /// Parses every framework key of `values`; the issues found, each naming its key, in the
    /// order of [`crate::keys::FRAMEWORK_KEYS`], transform issues last.
    pub fn parse(values: &BTreeMap<String, String>) -> Result<ConnectorConfig, Vec<ConfigIssue>> {
        let mut r = Reader {
            values,
            issues: Vec::new(),
        };
        let name = match r.required("name") {
            Some(name) => match ConnectorName::parse(&name) {
                Ok(name) => Some(name),
                Err(rule) => r.issue("name", rule),
            },
            None => None,
        };
        let class = r.required("connector.class");
        let tasks_max = r.parse("tasks.max", 1, "an integer of at least 1", |v| {
            v.parse::<u32>().ok().filter(|n| *n >= 1)
        });
        let topics = r.list("topics");
        let topics_regex = r.text("topics.regex");
        let restart = r.restart_policy();
        let errors = r.error_policy();
        let exactly_once_required = r.choice(
            "exactly.once.support",
            false,
            &[("requested", false), ("required", true)],
        );
        let transaction_boundary = r.choice(
            "transaction.boundary",
            TransactionBoundary::Poll,
            &[
                ("poll", TransactionBoundary::Poll),
                ("interval", TransactionBoundary::Interval),
                ("connector", TransactionBoundary::Connector),
            ],
        );
        let transaction_interval = match r.get("transaction.boundary.interval.ms") {
            None => None,
            Some(_) if transaction_boundary != TransactionBoundary::Interval => r.issue(
                "transaction.boundary.interval.ms",
                "only used with transaction.boundary=interval",
            ),
            Some(_) => Some(r.millis("transaction.boundary.interval.ms", Duration::ZERO))
                .filter(|d| !d.is_zero()),
        };
        let transforms = match Chain::from_config(values) {
            Ok(chain) => Some(chain),
            Err(issues) => {
                r.issues.extend(issues);
                None
            }
        };
        match (name, class, transforms) {
            (Some(name), Some(class), Some(transforms)) if r.issues.is_empty() => {
                Ok(ConnectorConfig {
                    name,
                    class,
                    tasks_max,
                    topics,
                    topics_regex,
                    restart,
                    errors,
                    exactly_once_required,
                    transaction_boundary,
                    transaction_interval,
                    transforms: Arc::new(transforms),
                    values: values.clone(),
                })
            }
            _ => Err(r.issues),
        }
    }

    /// Parses a connector file (standalone mode) or a stored config put in one: the first
    /// issue, located by file, line and key.
    pub fn from_file(file: &ConfigFile) -> Result<ConnectorConfig, ConfigError> {
        Self::parse(file.values()).map_err(|issues| file.first_issue(issues))
    }

    /// Sink-only checks: exactly one of `topics` and `topics.regex`.
    pub fn sink_issues(&self) -> Vec<ConfigIssue> {
        sink_issues(&self.topics, self.topics_regex.as_deref())
    }
}

fn sink_issues(topics: &[String], regex: Option<&str>) -> Vec<ConfigIssue> {
    let issue = |key: &str, message: &str| {
        vec![ConfigIssue {
            key: key.into(),
            message: message.into(),
        }]
    };
    match (topics.is_empty(), regex) {
        (true, None) => issue("topics", "a sink connector needs topics or topics.regex"),
        (false, Some(_)) => issue(
            "topics.regex",
            "topics and topics.regex are mutually exclusive",
        ),
        _ => Vec::new(),
    }
}

/// Every issue of a connector configuration, for the controller and validation answers: the
/// framework keys, the sink subscription when `sink`, and the plugin's own declared keys
/// (`plugin`: required, valid values, types).
pub fn issues(
    values: &BTreeMap<String, String>,
    sink: bool,
    plugin: &[api::ConfigKey],
) -> Vec<ConfigIssue> {
    let mut issues = ConnectorConfig::parse(values).err().unwrap_or_default();
    if sink {
        // Read apart from the parse, so that a sink's subscription is checked even when
        // other keys are wrong.
        let mut r = Reader {
            values,
            issues: Vec::new(),
        };
        let (topics, regex) = (r.list("topics"), r.text("topics.regex"));
        issues.extend(sink_issues(&topics, regex.as_deref()));
    }
    issues.extend(plugin_issues(values, plugin));
    issues
}

/// Checks `values` against the keys a plugin declared.
fn plugin_issues(values: &BTreeMap<String, String>, plugin: &[api::ConfigKey]) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let mut push = |key: &str, message: String| {
        issues.push(ConfigIssue {
            key: key.to_string(),
            message,
        })
    };
    for key in plugin {
        let Some(v) = values.get(&key.name) else {
            if key.required {
                push(&key.name, "missing required configuration".into());
            }
            continue;
        };
        if !key.valid_values.is_empty() && !key.valid_values.contains(v) {
            push(
                &key.name,
                format!(
                    "invalid value {v:?}: expected one of {}",
                    key.valid_values.join(", ")
                ),
            );
        }
        let parses = match key.r#type.as_str() {
            "INT" => v.trim().parse::<i32>().is_ok(),
            "SHORT" => v.trim().parse::<i16>().is_ok(),
            "LONG" => v.trim().parse::<i64>().is_ok(),
            "DOUBLE" => v.trim().parse::<f64>().is_ok(),
            "BOOLEAN" => matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "false"),
            _ => true,
        };
        if !parses {
            push(
                &key.name,
                format!(
                    "invalid value {v:?}: expected {}",
                    key.r#type.to_lowercase()
                ),
            );
        }
    }
    issues
}

/// Reads keys of one configuration, collecting issues; a bad value reads as its default so
/// that every other key is still checked.
struct Reader<'a> {
    values: &'a BTreeMap<String, String>,
    issues: Vec<ConfigIssue>,
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|v| v.trim())
    }

    /// Records an issue; `None` so that callers can return it.
    fn issue<T>(&mut self, key: &str, message: impl Into<String>) -> Option<T> {
        self.issues.push(ConfigIssue {
            key: key.to_string(),
            message: message.into(),
        });
        None
    }

    fn required(&mut self, key: &str) -> Option<String> {
        match self.get(key) {
            Some(v) if !v.is_empty() => Some(v.to_string()),
            _ => self.issue(
                key,
                format!("missing required configuration {key:?} which has no default value"),
            ),
        }
    }

    /// A non-empty value, trimmed.
    fn text(&mut self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.is_empty()).map(str::to_string)
    }

    /// A comma-separated list, entries trimmed, empty ones dropped.
    fn list(&mut self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn parse<T>(
        &mut self,
        key: &str,
        default: T,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> T {
        let Some(v) = self.get(key) else {
            return default;
        };
        match parse(v) {
            Some(value) => value,
            None => {
                let v = v.to_string();
                self.issue::<()>(key, format!("invalid value {v:?}: expected {expected}"));
                default
            }
        }
    }

    fn choice<T: Copy>(&mut self, key: &str, default: T, choices: &[(&str, T)]) -> T {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let expected = match names.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        self.parse(key, default, &expected, |v| {
            choices.iter().find(|(n, _)| *n == v).map(|(_, t)| *t)
        })
    }

    fn boolean(&mut self, key: &str, default: bool) -> bool {
        self.parse(key, default, "true or false", |v| {
            if v.eq_ignore_ascii_case("true") {
                Some(true)
            } else if v.eq_ignore_ascii_case("false") {
                Some(false)
            } else {
                None
            }
        })
    }

    /// A duration in milliseconds (a non-negative integer).
    fn millis(&mut self, key: &str, default: Duration) -> Duration {
        self.parse(key, default, "a number of milliseconds", |v| {
            v.parse::<u64>().ok().map(Duration::from_millis)
        })
    }

    fn restart_policy(&mut self) -> RestartPolicy {
        let defaults = RestartPolicy::default();
        let policy = RestartPolicy {
            max_restarts: self.parse(
                "restart.max.attempts",
                defaults.max_restarts,
                "-1 (no limit) or an integer of at least 0",
                |v| match v {
                    "-1" => Some(None),
                    v => v.parse::<u32>().ok().map(Some),
                },
            ),
            backoff_initial: self.millis("restart.backoff.initial.ms", defaults.backoff_initial),
            backoff_max: self.millis("restart.backoff.max.ms", defaults.backoff_max),
        };
        if policy.backoff_max < policy.backoff_initial {
            self.issue::<()>(
                "restart.backoff.max.ms",
                "must not be less than restart.backoff.initial.ms",
            );
        }
        policy
    }

    /// Kafka Connect's `errors.*` keys.
    fn error_policy(&mut self) -> ErrorPolicy {
        let defaults = ErrorPolicy::default();
        ErrorPolicy {
            retry_timeout: self.parse(
                "errors.retry.timeout",
                defaults.retry_timeout,
                "-1 (for ever) or a number of milliseconds",
                |v| match v {
                    "-1" => Some(None),
                    v => v
                        .parse::<u64>()
                        .ok()
                        .map(|ms| Some(Duration::from_millis(ms))),
                },
            ),
            retry_delay_max: self.millis("errors.retry.delay.max.ms", defaults.retry_delay_max),
            tolerate_all: self.choice(
                "errors.tolerance",
                defaults.tolerate_all,
                &[("none", false), ("all", true)],
            ),
            log: self.boolean("errors.log.enable", defaults.log),
            log_messages: self.boolean("errors.log.include.messages", defaults.log_messages),
            dlq_topic: self.text("errors.deadletterqueue.topic.name"),
            dlq_replication: self.parse(
                "errors.deadletterqueue.topic.replication.factor",
                defaults.dlq_replication,
                "-1 (the broker's default) or at least 1",
                |v| v.parse::<i16>().ok().filter(|n| *n == -1 || *n >= 1),
            ),
            dlq_context_headers: self.boolean(
                "errors.deadletterqueue.context.headers.enable",
                defaults.dlq_context_headers,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn keys(issues: &[ConfigIssue]) -> Vec<&str> {
        issues.iter().map(|i| i.key.as_str()).collect()
    }

    #[test]
    fn defaults_are_kafka_connects() {
        let c =
            ConnectorConfig::parse(&config(&[("name", "s"), ("connector.class", "X")])).unwrap();
        assert_eq!(c.tasks_max, 1);
        assert_eq!(c.errors, ErrorPolicy::default());
        assert_eq!(c.restart, RestartPolicy::default());
        assert_eq!(c.transaction_boundary, TransactionBoundary::Poll);
        assert!(!c.exactly_once_required);
        assert_eq!(c.transaction_interval, None);
        assert!(c.sink_issues().iter().any(|i| i.key == "topics"));
    }

    #[test]
    fn every_bad_key_is_reported_with_its_expected_values() {
        let issues = ConnectorConfig::parse(&config(&[
            ("connector.class", "X"),
            ("tasks.max", "zero"),
            ("errors.tolerance", "some"),
            ("errors.log.enable", "yes"),
            ("errors.deadletterqueue.topic.replication.factor", "0"),
            ("restart.max.attempts", "-2"),
            ("transaction.boundary", "poll"),
            ("transaction.boundary.interval.ms", "5"),
            ("transforms", "a"),
        ]))
        .unwrap_err();
        assert_eq!(
            keys(&issues),
            [
                "name",
                "tasks.max",
                "restart.max.attempts",
                "errors.tolerance",
                "errors.log.enable",
                "errors.deadletterqueue.topic.replication.factor",
                "transaction.boundary.interval.ms",
                "transforms.a.type",
            ]
        );
        assert_eq!(
            issues[1].message,
            "invalid value \"zero\": expected an integer of at least 1"
        );
        assert_eq!(
            issues[3].message,
            "invalid value \"some\": expected none or all"
        );
    }

    #[test]
    fn values_are_read_as_the_worker_uses_them() {
        let c = ConnectorConfig::parse(&config(&[
            ("name", "s"),
            ("connector.class", "FileStreamSink"),
            ("topics", " a, b ,"),
            ("tasks.max", "3"),
            ("errors.tolerance", "all"),
            ("errors.retry.timeout", "-1"),
            ("errors.log.enable", "TRUE"),
            ("errors.deadletterqueue.topic.name", "dlq"),
            ("restart.max.attempts", "-1"),
            ("restart.backoff.initial.ms", "10"),
            ("restart.backoff.max.ms", "20"),
            ("exactly.once.support", "required"),
            ("transaction.boundary", "interval"),
            ("transaction.boundary.interval.ms", "250"),
        ]))
        .unwrap();
        assert_eq!(c.topics, ["a", "b"]);
        assert_eq!(c.tasks_max, 3);
        assert!(c.errors.tolerate_all && c.errors.log);
        assert_eq!(c.errors.retry_timeout, None);
        assert_eq!(c.errors.dlq_topic.as_deref(), Some("dlq"));
        assert_eq!(c.restart.max_restarts, None);
        assert_eq!(c.restart.backoff_max, Duration::from_millis(20));
        assert!(c.exactly_once_required);
        assert_eq!(c.transaction_interval, Some(Duration::from_millis(250)));
        assert!(c.sink_issues().is_empty());
        let e = ConnectorConfig::parse(&config(&[
            ("name", "s"),
            ("connector.class", "X"),
            ("restart.backoff.initial.ms", "30"),
            ("restart.backoff.max.ms", "20"),
        ]))
        .unwrap_err();
        assert_eq!(keys(&e), ["restart.backoff.max.ms"]);
    }

    #[test]
    fn issues_cover_the_sink_subscription_and_the_plugins_keys() {
        let plugin = vec![
            api::ConfigKey {
                name: "file".into(),
                r#type: "STRING".into(),
                required: true,
                ..Default::default()
            },
            api::ConfigKey {
                name: "batch.size".into(),
                r#type: "INT".into(),
                ..Default::default()
            },
        ];
        let values = config(&[
            ("name", "s"),
            ("connector.class", "FileStreamSink"),
            ("tasks.max", "zero"),
            ("batch.size", "many"),
        ]);
        let found = issues(&values, true, &plugin);
        assert_eq!(keys(&found), ["tasks.max", "topics", "file", "batch.size"]);
        assert_eq!(found[3].message, "invalid value \"many\": expected int");
        let both = config(&[
            ("name", "s"),
            ("connector.class", "X"),
            ("topics", "a"),
            ("topics.regex", "b.*"),
        ]);
        assert_eq!(keys(&issues(&both, true, &[])), ["topics.regex"]);
        assert!(issues(&both, false, &[]).is_empty());
    }
}
