//! The Rust connector SDK: implement [`SourceConnector`] or [`SinkConnector`] and their tasks,
//! list them in a [`Plugin`], and call [`serve`] (or [`main`]). The SDK speaks the connector
//! protocol (`proto/sluice/connector/v1`): handshake, describe, validate, plan, source and sink
//! streams with credits and acknowledgements, heartbeats, and exit when the worker goes away.

mod allocator;
mod batch;
mod config;
pub mod data;
mod serve;
mod shared;
mod source;
mod task;

pub use allocator::tune_allocator;
pub use batch::{DataRef, SinkBatch, SinkRecordRef};
pub use config::{Config, ConfigDefBuilder};
pub use serve::{main, serve, ENV_PROTOCOL_VERSIONS, ENV_SOCKET};
pub use sluice_proto::connector::v1 as proto;
pub use sluice_proto::wire::PlainData;
pub use source::{SourceBatchWriter, SourceRecordRef};
pub use task::{
    CommitSignal, ErrantRecordReporter, SinkTask, SinkTaskContext, SourceRecord, SourceTask,
    SourceTaskContext, TaskError,
};

use std::sync::Arc;

/// What every connector class declares: its names, its configuration and how it splits work.
pub trait Connector: Send + Sync + 'static {
    /// The name users put in `connector.class`.
    fn class_name(&self) -> &'static str;
    /// Other accepted names (short names, Kafka Connect class names).
    fn aliases(&self) -> Vec<&'static str> {
        Vec::new()
    }
    fn version(&self) -> &'static str {
        ""
    }
    fn documentation(&self) -> &'static str {
        ""
    }
    /// The configuration keys this connector understands.
    fn config_defs(&self) -> Vec<proto::ConfigDef>;
    /// Checks a configuration; the default checks presence and types against [`Connector::config_defs`].
    fn validate(&self, config: &Config) -> Vec<proto::FieldError> {
        config.validate_against(&self.config_defs())
    }
    /// Splits the connector configuration into at most `max_tasks` task configurations.
    fn plan(&self, config: &Config, max_tasks: usize) -> Result<Vec<Config>, TaskError> {
        let _ = max_tasks;
        Ok(vec![config.clone()])
    }
    /// Called when the connector instance starts on a worker; keep `reconfigure` (e.g. in a
    /// thread watching the source system) and call [`Reconfigure::request`] when the tasks
    /// should be planned again. The default never asks.
    fn monitor(&self, config: &Config, reconfigure: Reconfigure) {
        let _ = (config, reconfigure);
    }
}

/// Asks the worker to plan this connector's tasks again (Kafka Connect's
/// `requestTaskReconfiguration`).
#[derive(Clone)]
pub struct Reconfigure {
    tx: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Reconfigure {
    /// Returns false once the worker stopped listening (the connector moved or stopped):
    /// a watcher should then end.
    pub fn request(&self, reason: impl Into<String>) -> bool {
        self.tx.send(reason.into()).is_ok()
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A connector that brings data from an external system into Kafka.
pub trait SourceConnector: Connector {
    fn task(&self) -> Box<dyn SourceTask>;

    /// Whether the tasks can run exactly-once: every record carries the source offset that
    /// resumes right after it, so records committed with their offsets are never read again.
    fn exactly_once_support(&self) -> proto::ExactlyOnceSupport {
        proto::ExactlyOnceSupport::Unspecified
    }

    /// Whether the tasks mark transaction boundaries themselves
    /// ([`SourceRecord::transaction`]), for `transaction.boundary=connector`.
    fn defines_transaction_boundaries(&self) -> bool {
        false
    }
}

/// A connector that writes Kafka records to an external system.
pub trait SinkConnector: Connector {
    fn task(&self) -> Box<dyn SinkTask>;
}

/// One connector class offered by a plugin.
#[derive(Clone)]
pub enum ConnectorEntry {
    Source(Arc<dyn SourceConnector>),
    Sink(Arc<dyn SinkConnector>),
}

impl ConnectorEntry {
    fn info(&self) -> &dyn Connector {
        match self {
            ConnectorEntry::Source(c) => c.as_ref() as &dyn Connector,
            ConnectorEntry::Sink(c) => c.as_ref() as &dyn Connector,
        }
    }

    fn matches(&self, class: &str) -> bool {
        let info = self.info();
        info.class_name() == class || info.aliases().contains(&class)
    }
}

/// An executable's inventory: the connector classes it serves.
#[derive(Clone)]
pub struct Plugin {
    pub name: String,
    pub version: String,
    pub connectors: Vec<ConnectorEntry>,
}

impl Plugin {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Plugin {
            name: name.into(),
            version: version.into(),
            connectors: Vec::new(),
        }
    }

    pub fn source(mut self, connector: impl SourceConnector) -> Self {
        self.connectors
            .push(ConnectorEntry::Source(Arc::new(connector)));
        self
    }

    pub fn sink(mut self, connector: impl SinkConnector) -> Self {
        self.connectors
            .push(ConnectorEntry::Sink(Arc::new(connector)));
        self
    }

    /// What the handshake tells a worker: the plugin and its connector classes.
    pub fn info(&self) -> proto::PluginInfo {
        let connectors = self
            .connectors
            .iter()
            .map(|entry| {
                let info = entry.info();
                proto::ConnectorClass {
                    class_name: info.class_name().to_string(),
                    aliases: info.aliases().iter().map(|a| a.to_string()).collect(),
                    r#type: match entry {
                        ConnectorEntry::Source(_) => proto::ConnectorType::Source,
                        ConnectorEntry::Sink(_) => proto::ConnectorType::Sink,
                    } as i32,
                    version: info.version().to_string(),
                    documentation: info.documentation().to_string(),
                    exactly_once: match entry {
                        ConnectorEntry::Source(c) => c.exactly_once_support(),
                        ConnectorEntry::Sink(_) => proto::ExactlyOnceSupport::Unspecified,
                    } as i32,
                    defines_transaction_boundaries: match entry {
                        ConnectorEntry::Source(c) => c.defines_transaction_boundaries(),
                        ConnectorEntry::Sink(_) => false,
                    },
                }
            })
            .collect();
        proto::PluginInfo {
            name: self.name.clone(),
            version: self.version.clone(),
            connectors,
        }
    }

    /// What Describe answers for each connector class, by class name: a program that links
    /// the plugin (the `sluice` executable and its built-ins) knows it without starting it.
    pub fn config_defs(&self) -> std::collections::BTreeMap<String, Vec<proto::ConfigDef>> {
        self.connectors
            .iter()
            .map(|entry| {
                let info = entry.info();
                (info.class_name().to_string(), info.config_defs())
            })
            .collect()
    }

    fn find(&self, class: &str) -> Option<&ConnectorEntry> {
        self.connectors.iter().find(|c| c.matches(class))
    }
}
