//! Units: what a worker runs — a connector's planning instance (validate, plan, submit the
//! task configs, watch for re-plans) or one task in its own connector process — and their one
//! lifecycle, shared by both modes: the supervisor makes running units match each assignment
//! (a controller's in distributed mode, `LocalPlanner`'s in standalone mode), every unit
//! restarts alone with the connector's backoff, a replaced unit starts only after its
//! predecessor drained.

mod lifecycle;
pub mod local;
mod supervisor;

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_proto::api::v1 as api;
use sluice_proto::cluster::v1::{self as wire, worker_control_client::WorkerControlClient};
use sluice_proto::connector::v1::{self as proto, ConnectorType};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::host::plugins::PluginRegistry;
use crate::lease::Lease;
use crate::restart::Fatal;
use crate::runner::{ConnectorSpec, WorkerContext};
use crate::settings::WorkerSettings;
use crate::task::metrics::Counters;
use crate::task::Transactions;
use sluice_model::{
    ConfigFile, ConnectorConfig, ConnectorName, TransactionBoundary, UnitKey, WorkerId,
};

pub use supervisor::{supervise, Assignments};

/// Where a planning instance's task configs go.
pub enum Planner {
    /// The controller, over the worker protocol (distributed mode).
    Controller(WorkerControlClient<crate::link::Link>),
    /// This process (standalone mode).
    Local(Arc<local::LocalPlanner>),
}

/// What every unit of this worker shares.
pub struct UnitHost {
    pub worker_id: WorkerId,
    pub settings: WorkerSettings,
    pub registry: PluginRegistry,
    pub ctx: WorkerContext,
    pub statuses: mpsc::UnboundedSender<StatusUpdate>,
    pub planner: Planner,
    /// The controller's cluster id, from the first assignment.
    pub cluster_id: std::sync::OnceLock<String>,
    pub lease: Arc<Lease>,
    /// Every task spawned beside the units (answers to the controller, units draining away,
    /// the offsets topic's creation): shutdown waits for them all.
    pub tasks: TaskTracker,
    /// Counters per connector, shared by its tasks (the progress line, active topics).
    counters: std::sync::Mutex<BTreeMap<ConnectorName, Arc<Counters>>>,
}

/// A unit's state, trace and topics used.
pub type UnitState = (api::State, String, Vec<String>);

/// A unit's new state, or `None` when the unit stopped for good here (released).
pub struct StatusUpdate {
    pub key: UnitKey,
    pub state: Option<UnitState>,
}

impl UnitHost {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        worker_id: WorkerId,
        settings: WorkerSettings,
        registry: PluginRegistry,
        ctx: WorkerContext,
        statuses: mpsc::UnboundedSender<StatusUpdate>,
        planner: Planner,
        lease: Arc<Lease>,
        tasks: TaskTracker,
    ) -> UnitHost {
        UnitHost {
            worker_id,
            settings,
            registry,
            ctx,
            statuses,
            planner,
            cluster_id: std::sync::OnceLock::new(),
            lease,
            tasks,
            counters: Default::default(),
        }
    }

    /// The counters of `connector`'s tasks on this worker.
    pub fn counters(&self, connector: &ConnectorName) -> Arc<Counters> {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.entry(connector.clone()).or_default().clone()
    }

    pub fn report(&self, key: &UnitKey, state: api::State, trace: impl Into<String>) {
        self.report_with_topics(key, state, trace, Vec::new());
    }

    pub fn report_with_topics(
        &self,
        key: &UnitKey,
        state: api::State,
        trace: impl Into<String>,
        topics: Vec<String>,
    ) {
        // A connector's error may quote what it was given: secrets are hidden from traces.
        let trace = crate::providers::Redactor::process().redact(&trace.into());
        let _ = self.statuses.send(StatusUpdate {
            key: key.clone(),
            state: Some((state, trace, topics)),
        });
    }

    /// Exactly-once settings of a source connector on this worker, checked against what the
    /// connector declares.
    fn transactions(
        &self,
        settings: &ConnectorConfig,
        kind: ConnectorType,
        class: &proto::ConnectorClass,
    ) -> anyhow::Result<Option<Transactions>> {
        if kind != ConnectorType::Source {
            return Ok(None);
        }
        if !self.settings.exactly_once_source {
            if settings.exactly_once_required {
                return Err(Fatal(format!(
                    "exactly.once.support=required, but worker {} runs with exactly.once.source.support disabled",
                    self.worker_id
                ))
                .into());
            }
            return Ok(None);
        }
        if settings.exactly_once_required
            && class.exactly_once() != proto::ExactlyOnceSupport::Supported
        {
            return Err(Fatal(format!(
                "exactly.once.support=required, but connector {} does not declare exactly-once support",
                class.class_name
            ))
            .into());
        }
        if settings.transaction_boundary == TransactionBoundary::Connector
            && !class.defines_transaction_boundaries
        {
            return Err(Fatal(format!(
                "transaction.boundary=connector, but connector {} does not define transaction boundaries",
                class.class_name
            ))
            .into());
        }
        let cluster = self.cluster_id.get().map_or("sluice", String::as_str);
        Ok(Some(Transactions {
            id_prefix: format!("{cluster}-{}", settings.name),
            boundary: settings.transaction_boundary,
            interval: settings
                .transaction_interval
                .unwrap_or(self.settings.offset_flush_interval),
            lease: self.lease.clone(),
        }))
    }

    /// Resolves config provider references in `config` (a connector's or a task's), and
    /// learns what they resolved to and the values of the plugin's PASSWORD keys as secrets to
    /// hide.
    pub fn resolve(
        &self,
        config: &BTreeMap<String, String>,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let resolved = self
            .settings
            .providers
            .resolve(config)
            .map_err(|e| Fatal(format!("config provider: {e}")))?;
        crate::providers::Redactor::process().learn(resolved.secrets);
        let class = config.get("connector.class").map(String::as_str);
        if let Some((entry, class)) = class.and_then(|c| self.registry.resolve(c)) {
            let passwords = entry
                .configs
                .get(&class.class_name)
                .into_iter()
                .flatten()
                .filter(|d| d.r#type == proto::ConfigType::Password as i32)
                .filter_map(|d| resolved.config.get(&d.name).cloned());
            crate::providers::Redactor::process().learn(passwords);
        }
        Ok(resolved.config)
    }

    /// Resolves a connector config from the controller into what the runner needs, config
    /// provider references resolved.
    pub fn spec(&self, connector: &wire::ConnectorConfig) -> anyhow::Result<ConnectorSpec> {
        let mut values: BTreeMap<String, String> = connector.config.clone().into_iter().collect();
        values
            .entry("name".into())
            .or_insert_with(|| connector.name.clone());
        let values = self.resolve(&values)?;
        let file = ConfigFile::from_values(format!("connector {}", connector.name), values);
        let settings = ConnectorConfig::from_file(&file)?;
        let (mut spec, class) =
            ConnectorSpec::build(&self.registry, &self.settings, None, &file, &settings)?;
        spec.transactions = self.transactions(&settings, spec.kind, class)?;
        Ok(spec)
    }
}
