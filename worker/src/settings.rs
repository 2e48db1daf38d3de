//! Typed worker settings read from Kafka Connect worker files, validated before anything
//! starts. Errors name the file, the line and the key. A connector's own configuration is
//! `sluice_model::ConnectorConfig`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use sluice_data::converter::{Converter, Side};
use sluice_model::{ConfigError, ConfigFile};

/// Kafka Connect's default `offset.flush.interval.ms`.
pub const DEFAULT_OFFSET_FLUSH_INTERVAL: Duration = Duration::from_secs(60);
/// Kafka Connect's default `task.shutdown.graceful.timeout.ms`.
pub const DEFAULT_TASK_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Worker keys Sluice uses.
const WORKER_KEYS: &[&str] = &[
    "bootstrap.servers",
    "key.converter",
    "value.converter",
    "header.converter",
    "offset.storage.file.filename",
    "offset.storage.topic",
    "offset.storage.partitions",
    "offset.storage.replication.factor",
    "offset.flush.interval.ms",
    "plugin.path",
    "plugin.discovery",
    "exactly.once.source.support",
    "task.shutdown.graceful.timeout.ms",
    "embedded.kafka.default.partitions",
    "config.providers",
];

/// Prefixes of worker keys passed on: client overrides and converter settings.
const WORKER_PREFIXES: &[&str] = &[
    "producer.",
    "consumer.",
    "admin.",
    "key.converter.",
    "value.converter.",
    "header.converter.",
    "config.providers.",
];

/// Kafka Connect worker keys that mean nothing to Sluice (its controller keeps configs and
/// statuses, not Kafka topics); accepted with a warning so that existing files keep working.
const IGNORED_WORKER_KEYS: &[&str] = &[
    "listeners",
    "rest.host.name",
    "rest.port",
    "rest.advertised.host.name",
    "rest.advertised.port",
    "rest.advertised.listener",
    "client.id",
    "offset.flush.timeout.ms",
    "connector.client.config.override.policy",
    "internal.key.converter",
    "internal.value.converter",
    "metrics.recording.level",
    "metrics.num.samples",
    "metrics.sample.window.ms",
    "metric.reporters",
    "topic.creation.enable",
    "group.id",
    "config.storage.topic",
    "config.storage.replication.factor",
    "status.storage.topic",
    "status.storage.replication.factor",
    "status.storage.partitions",
];

/// `plugin.discovery`, Kafka Connect's values: whether plugin manifests (`sluice plugins
/// manifest`) are used and what a `plugin.path` executable without a current one means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginDiscovery {
    /// Manifests are not read: every executable is started to discover it.
    OnlyScan,
    /// Manifests are used; an executable without a current one is started, with a warning.
    HybridWarn,
    /// As `HybridWarn`, but an executable without a current manifest fails the worker's start.
    HybridFail,
    /// Only manifests: an executable without a current one is not started, and is reported
    /// broken.
    ServiceLoad,
}

impl PluginDiscovery {
    pub fn parse(value: &str) -> Option<PluginDiscovery> {
        match value.trim().to_ascii_lowercase().as_str() {
            "only_scan" => Some(PluginDiscovery::OnlyScan),
            "hybrid_warn" => Some(PluginDiscovery::HybridWarn),
            "hybrid_fail" => Some(PluginDiscovery::HybridFail),
            "service_load" => Some(PluginDiscovery::ServiceLoad),
            _ => None,
        }
    }
}

/// The worker file of `sluice standalone` and `sluice worker`.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// `None`: start an embedded Kafka.
    pub bootstrap_servers: Option<String>,
    pub offset_file: Option<PathBuf>,
    pub offset_flush_interval: Duration,
    pub plugin_path: Vec<PathBuf>,
    /// `plugin.discovery`: how plugin manifests are used.
    pub plugin_discovery: PluginDiscovery,
    /// `exactly.once.source.support=enabled`: source tasks run in transactions.
    pub exactly_once_source: bool,
    /// `task.shutdown.graceful.timeout.ms`: how long a stopping task may take to hand its
    /// records to Kafka and commit their offsets before it is abandoned (what it did not
    /// commit is replayed: at-least-once).
    pub task_shutdown_timeout: Duration,
    /// `embedded.kafka.default.partitions`: partitions of a topic the embedded Kafka creates
    /// on first use (Kafka's `num.partitions`, default 1).
    pub embedded_default_partitions: i32,
    /// `config.providers`: what resolves `${provider:path:key}` references in connector
    /// configs.
    pub providers: crate::providers::ConfigProviders,
    /// `connector.env.allowlist`, `connector.limit.*`: what connector processes get.
    pub isolation: crate::isolation::Isolation,
    /// Every key as given, for converter and client settings.
    pub values: BTreeMap<String, String>,
}

impl WorkerSettings {
    pub fn from_file(file: &ConfigFile) -> Result<WorkerSettings, ConfigError> {
        for key in file.values().keys() {
            let known = WORKER_KEYS.contains(&key.as_str())
                || crate::isolation::KEYS.contains(&key.as_str())
                || WORKER_PREFIXES.iter().any(|p| key.starts_with(p));
            if known {
                continue;
            }
            if IGNORED_WORKER_KEYS.contains(&key.as_str()) {
                tracing::warn!(
                    "{}",
                    file.error(key, "not used by a Sluice worker; ignored")
                );
                continue;
            }
            return Err(file.error(key, "unknown worker configuration key"));
        }
        let bootstrap_servers = file
            .get("bootstrap.servers")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let positive_ms = |key: &str, default: Duration| match file.get(key) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
                _ => Err(file.error(
                    key,
                    format!("invalid value {v:?}: expected a positive number of milliseconds"),
                )),
            },
        };
        let offset_flush_interval =
            positive_ms("offset.flush.interval.ms", DEFAULT_OFFSET_FLUSH_INTERVAL)?;
        let task_shutdown_timeout = positive_ms(
            "task.shutdown.graceful.timeout.ms",
            DEFAULT_TASK_SHUTDOWN_TIMEOUT,
        )?;
        let embedded_default_partitions = match file.get("embedded.kafka.default.partitions") {
            None => crate::kafka::embedded::DEFAULT_PARTITIONS,
            Some(v) => match v.trim().parse::<i32>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(file.error(
                        "embedded.kafka.default.partitions",
                        format!("invalid value {v:?}: expected a positive number of partitions"),
                    ))
                }
            },
        };
        let plugin_path = file
            .get("plugin.path")
            .map(|p| {
                p.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        let plugin_discovery = match file.get("plugin.discovery") {
            None => PluginDiscovery::HybridWarn,
            Some(v) => PluginDiscovery::parse(v).ok_or_else(|| {
                file.error(
                    "plugin.discovery",
                    format!(
                        "invalid value {v:?}: expected only_scan, hybrid_warn, hybrid_fail or service_load"
                    ),
                )
            })?,
        };
        let exactly_once_source = match file.get("exactly.once.source.support").map(str::trim) {
            None | Some("disabled") | Some("preparing") => false,
            Some("enabled") => true,
            Some(v) => {
                return Err(file.error(
                    "exactly.once.source.support",
                    format!("invalid value {v:?}: expected disabled, preparing or enabled"),
                ))
            }
        };
        let providers = crate::providers::ConfigProviders::from_values(file.values())
            .map_err(|(key, message)| file.error(&key, message))?;
        let isolation = crate::isolation::Isolation::from_file(file)?;
        let settings = WorkerSettings {
            isolation,
            providers,
            exactly_once_source,
            bootstrap_servers,
            offset_file: file
                .get("offset.storage.file.filename")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            offset_flush_interval,
            task_shutdown_timeout,
            embedded_default_partitions,
            plugin_path,
            plugin_discovery,
            values: file.values().clone(),
        };
        // Fail now, with the location, rather than when the first connector starts.
        for which in ["key", "value"] {
            settings.converter(which, file, &BTreeMap::new())?;
        }
        Ok(settings)
    }

    /// The `key` or `value` converter for a connector: the connector's own `*.converter` keys
    /// win over the worker's. `origin` locates errors.
    pub fn converter(
        &self,
        which: &str,
        origin: &ConfigFile,
        connector: &BTreeMap<String, String>,
    ) -> Result<Converter, ConfigError> {
        let side = match which {
            "key" => Side::Key,
            _ => Side::Value,
        };
        // The connector's converter when it names one, else the worker's (settings included).
        let source = if connector.contains_key(&format!("{which}.converter")) {
            connector
        } else {
            &self.values
        };
        Converter::from_config(source, side)
            .map(|(_, converter)| converter)
            .map_err(|(key, message)| origin.error(&key, message))
    }

    /// librdkafka settings for every client, plus `producer.`/`consumer.` overrides.
    pub fn client_overrides(&self, prefix: &str) -> BTreeMap<String, String> {
        self.values
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_model::ConnectorConfig;
    use std::path::Path;

    fn props(text: &str) -> ConfigFile {
        ConfigFile::parse_properties(Path::new("w.properties"), text.as_bytes()).unwrap()
    }

    #[test]
    fn kafka_quickstart_worker_file_is_accepted() {
        let file = props(
            "bootstrap.servers=localhost:9092\n\
             key.converter=org.apache.kafka.connect.json.JsonConverter\n\
             value.converter=org.apache.kafka.connect.json.JsonConverter\n\
             key.converter.schemas.enable=true\nvalue.converter.schemas.enable=true\n\
             offset.storage.file.filename=/tmp/connect.offsets\noffset.flush.interval.ms=10000\n",
        );
        let w = WorkerSettings::from_file(&file).unwrap();
        assert_eq!(w.bootstrap_servers.as_deref(), Some("localhost:9092"));
        assert_eq!(w.offset_flush_interval, Duration::from_secs(10));
    }

    #[test]
    fn worker_errors_name_line_and_key() {
        let e = WorkerSettings::from_file(&props("a=1\nbogus.key=2\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "w.properties:1: a: unknown worker configuration key"
        );
        let e = WorkerSettings::from_file(&props("\nvalue.converter=x.Y\n")).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert_eq!(e.key.as_deref(), Some("value.converter"));
        let e = WorkerSettings::from_file(&props("offset.flush.interval.ms=soon\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("offset.flush.interval.ms"));
    }

    #[test]
    fn plugin_discovery_takes_kafka_connects_values() {
        let w = WorkerSettings::from_file(&props("")).unwrap();
        assert_eq!(w.plugin_discovery, PluginDiscovery::HybridWarn);
        let w = WorkerSettings::from_file(&props("plugin.discovery=SERVICE_LOAD\n")).unwrap();
        assert_eq!(w.plugin_discovery, PluginDiscovery::ServiceLoad);
        let e = WorkerSettings::from_file(&props("plugin.discovery=sometimes\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "w.properties:1: plugin.discovery: invalid value \"sometimes\": expected only_scan, hybrid_warn, hybrid_fail or service_load"
        );
    }

    #[test]
    fn connector_framework_keys() {
        let c = ConnectorConfig::from_file(&props(
            "name=s\nconnector.class=FileStreamSink\ntopics=a, b\n",
        ))
        .unwrap();
        assert_eq!(c.topics, ["a", "b"]);
        assert_eq!(c.tasks_max, 1);
        let e = ConnectorConfig::from_file(&props("name=s\nconnector.class=X\ntasks.max=0\n"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "w.properties:3: tasks.max: invalid value \"0\": expected an integer of at least 1"
        );
        let e = ConnectorConfig::from_file(&props("connector.class=X\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("name"));
    }
}
