//! Standalone mode: `sluice standalone WORKER.properties CONNECTOR.properties|.json ...`.
//! Everything is validated before anything runs; then the connectors run as a distributed
//! worker's units do (a planning instance per connector, each task in its own process,
//! restarted alone), planned in process, with offsets in a local file and, when no
//! `bootstrap.servers` is given, an embedded Kafka.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use sluice_proto::connector::v1::{self as proto, ConnectorType};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::host::plugins::{PluginEntry, PluginRegistry};
use crate::host::process::ConnectorProcess;
use crate::kafka::embedded::EmbeddedKafka;
use crate::runner::{consumer_config, producer_config, ConnectorSpec, WorkerContext};
use crate::settings::WorkerSettings;
use crate::task::metrics::{human_bytes, Counters};
use crate::task::offsets::OffsetStore;
use crate::unit::local::LocalPlanner;
use crate::unit::{supervise, Planner, StatusUpdate, UnitHost};
use sluice_model::{ConfigError, ConfigFile, ConnectorConfig, ConnectorName, WorkerId};
use tokio::sync::mpsc;

pub struct StandaloneOptions {
    pub worker_file: PathBuf,
    pub connector_files: Vec<PathBuf>,
    /// The plugins built into this executable, already described.
    pub builtin_plugins: Vec<PluginEntry>,
    /// How often to print the progress line; `None` for never.
    pub progress_interval: Option<Duration>,
    /// How long a graceful stop may take once asked for ([`crate::stop::bounded`]).
    pub shutdown_timeout: Duration,
}

/// Everything wrong with the configuration files, one problem per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Runs until `shutdown` is cancelled, then drains tasks, commits offsets and returns.
pub async fn run(options: StandaloneOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let one = |e: ConfigError| ConfigErrors(vec![e]);
    let worker_file = ConfigFile::load(&options.worker_file).map_err(one)?;
    let worker = WorkerSettings::from_file(&worker_file).map_err(one)?;
    crate::isolation::configure(worker.isolation.clone());
    if worker.exactly_once_source {
        // As in Kafka Connect: a local offsets file cannot join a Kafka transaction.
        return Err(one(worker_file.error(
            "exactly.once.source.support",
            "exactly-once source tasks need distributed mode (sluice worker): standalone mode keeps offsets in a file",
        ))
        .into());
    }

    let mut errors = Vec::new();
    let mut connectors = Vec::new();
    let mut names = BTreeSet::new();
    for path in &options.connector_files {
        let loaded = ConfigFile::load(path)
            .and_then(|file| ConnectorConfig::from_file(&file).map(|s| (file, s)));
        match loaded {
            Ok((file, settings)) => {
                if !names.insert(settings.name.clone()) {
                    errors.push(file.error(
                        "name",
                        format!("connector {:?} is defined twice", settings.name),
                    ));
                }
                connectors.push((file, settings));
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors).into());
    }

    let registry = PluginRegistry::discover(
        options.builtin_plugins,
        &worker.plugin_path,
        worker.plugin_discovery,
    )
    .await?;
    let mut specs = Vec::new();
    for (file, settings) in &connectors {
        match build_spec(&registry, &worker, &worker_file, file, settings).await {
            Ok(spec) => specs.push(spec),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors).into());
    }

    let embedded = match &worker.bootstrap_servers {
        Some(_) => None,
        None => {
            let topics: Vec<(String, i32)> = specs
                .iter()
                .flat_map(|s| {
                    let mut t = s.topics.clone();
                    t.extend(s.config.get("topic").cloned());
                    t
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|t| (t, 1))
                .collect();
            let kafka = EmbeddedKafka::start(1, &topics, worker.embedded_default_partitions)?;
            eprintln!(
                "sluice: no bootstrap.servers configured; embedded Kafka listening at {} (e.g. kcat -b {} -C -t {})",
                kafka.bootstrap_servers(),
                kafka.bootstrap_servers(),
                topics.first().map_or("TOPIC", |t| t.0.as_str()),
            );
            Some(kafka)
        }
    };
    let bootstrap = match (&worker.bootstrap_servers, &embedded) {
        (Some(b), _) => b.clone(),
        (None, Some(k)) => k.bootstrap_servers().to_string(),
        (None, None) => unreachable!("an embedded Kafka is started when none is configured"),
    };

    if worker.offset_file.is_none() {
        tracing::warn!(
            "no offset.storage.file.filename: source positions will not survive a restart"
        );
    }
    let offsets = Arc::new(OffsetStore::open(worker.offset_file.as_deref())?);
    let mut producer_config = producer_config(&bootstrap, worker.client_overrides("producer."));
    if embedded.is_some() && !worker.values.contains_key("producer.compression.type") {
        // The mock cluster keeps only the last 5 MiB of batches per partition; compressed
        // batches make that window several times longer.
        producer_config.set("compression.type", "lz4");
    }
    crate::kafka::log::health().probe_with(producer_config.clone());
    let ctx = WorkerContext {
        producer_config,
        consumer_config: consumer_config(&bootstrap, worker.client_overrides("consumer.")),
        offsets: offsets.clone(),
        flush_interval: worker.offset_flush_interval,
        task_shutdown_timeout: worker.task_shutdown_timeout,
        stop_failures: Default::default(),
    };

    // The same supervisor as a distributed worker's, fed by an in-process planner: each task
    // runs in its own connector process and restarts alone.
    let (planner, assignments) = LocalPlanner::new(
        connectors
            .iter()
            .map(|(_, c)| (c.name.to_string(), c.values.clone()))
            .collect(),
    );
    let (statuses, status_rx) = mpsc::unbounded_channel();
    let host = Arc::new(UnitHost::new(
        WorkerId::new("standalone"),
        worker,
        registry,
        ctx,
        statuses,
        Planner::Local(Arc::new(planner)),
        Arc::default(),
        TaskTracker::new(),
    ));
    let counters: Vec<_> = specs
        .iter()
        .map(|spec| (spec.name.clone(), spec.kind, host.counters(&spec.name)))
        .collect();
    let stop = shutdown.child_token();
    let supervisor = tokio::spawn(supervise(host.clone(), assignments, stop.clone()));

    let background = CancellationToken::new();
    let status_log = tokio::spawn(log_statuses(status_rx, background.clone()));
    let flusher = tokio::spawn(crate::task::offsets::flush_every(
        offsets.clone(),
        host.settings.offset_flush_interval,
        background.clone(),
    ));
    let progress = options
        .progress_interval
        .map(|every| tokio::spawn(report_progress(counters, every, background.clone())));

    shutdown.cancelled().await;
    tracing::info!(
        "stopping: draining tasks and committing offsets (at most {:?})",
        options.shutdown_timeout
    );
    let drain = async {
        let _ = supervisor.await;
        host.tasks.close();
        host.tasks.wait().await;
        background.cancel();
        let _ = tokio::join!(flusher, status_log);
        if let Some(p) = progress {
            let _ = p.await;
        }
        offsets.flush().await.context("write offsets at shutdown")?;
        crate::stop::check_clean(&host.ctx.stop_failures, &offsets)
    };
    let result =
        crate::stop::bounded(drain, &shutdown, options.shutdown_timeout, Some(&offsets)).await;
    drop(embedded);
    result
}

/// Resolves and validates one connector: class, framework keys, converters, and the
/// connector's own validation through its process.
async fn build_spec(
    registry: &PluginRegistry,
    worker: &WorkerSettings,
    worker_file: &ConfigFile,
    file: &ConfigFile,
    settings: &ConnectorConfig,
) -> Result<ConnectorSpec, Vec<ConfigError>> {
    let (spec, _) = ConnectorSpec::build(registry, worker, Some(worker_file), file, settings)
        .map_err(|e| vec![e])?;
    // Validated as it will run: config provider references resolved (the units resolve
    // them again when they start).
    let redactor = crate::providers::Redactor::process();
    let resolved = worker.providers.resolve(&spec.config).map_err(|e| {
        // "KEY: what went wrong": located at the key.
        let (key, problem) = e.split_once(": ").unwrap_or(("connector.class", &e));
        vec![file.error(key, format!("config provider: {problem}"))]
    })?;
    redactor.learn(resolved.secrets);
    let validation = async {
        let process = ConnectorProcess::launch_connector(&spec.command, &spec.name).await?;
        let mut client = process.client.clone();
        let response = client
            .validate(proto::ValidateRequest {
                connector_class: spec.class.clone(),
                config: resolved.config.into_iter().collect(),
            })
            .await;
        process.shutdown().await;
        response.map_err(|s| anyhow!("validate: {}", s.message()))
    };
    let response = validation.await.map_err(|e| {
        vec![file.error(
            "connector.class",
            redactor.redact(&format!("cannot validate with its plugin: {e:#}")),
        )]
    })?;
    let field_errors = response.into_inner().errors;
    if !field_errors.is_empty() {
        return Err(field_errors
            .into_iter()
            .map(|e| {
                let mut error = file.error(&e.name, redactor.redact(&e.message));
                if file.get(&e.name).is_none() {
                    error.line = None;
                }
                error
            })
            .collect());
    }
    Ok(spec)
}

/// Unit states, for the log (a distributed worker sends them to its controller).
async fn log_statuses(mut updates: mpsc::UnboundedReceiver<StatusUpdate>, stop: CancellationToken) {
    loop {
        let update = tokio::select! {
            update = updates.recv() => update,
            _ = stop.cancelled() => return,
        };
        let Some(StatusUpdate { key, state }) = update else {
            return;
        };
        match state {
            Some((state, _, _)) => {
                tracing::debug!(unit = %key, state = state.as_str_name(), "unit state")
            }
            None => tracing::debug!(unit = %key, "unit released"),
        }
    }
}

/// One line per connector: total records and bytes, and the rate since the last line.
async fn report_progress(
    counters: Vec<(ConnectorName, ConnectorType, Arc<Counters>)>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut last: Vec<(u64, u64)> = vec![(0, 0); counters.len()];
    let mut at = Instant::now();
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return,
        }
        let elapsed = at.elapsed().as_secs_f64().max(1e-3);
        at = Instant::now();
        for ((name, kind, c), prev) in counters.iter().zip(last.iter_mut()) {
            let (records, bytes) = c.read();
            if records == prev.0 && records > 0 {
                continue;
            }
            let rate = (records - prev.0) as f64 / elapsed;
            let byte_rate = (bytes - prev.1) as f64 / elapsed;
            *prev = (records, bytes);
            let arrow = if *kind == ConnectorType::Sink {
                "kafka → sink"
            } else {
                "source → kafka"
            };
            eprintln!(
                "[{name}] {arrow}: {records} records, {}; {rate:.0} records/s, {}/s",
                human_bytes(bytes as f64),
                human_bytes(byte_rate),
            );
        }
    }
}
