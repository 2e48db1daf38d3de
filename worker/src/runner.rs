//! One life of a connector process running tasks (`run_process`), what a connector needs to
//! run (`ConnectorSpec`, `WorkerContext`) and the worker's Kafka client defaults. Restarts
//! are the unit lifecycle's (`unit/`); tasks resume from committed positions, so a restart
//! loses nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use rdkafka::config::ClientConfig;
use sluice_proto::connector::v1::{self as proto, ConnectorType};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::host::plugins::PluginRegistry;
use crate::host::process::{ConnectorProcess, PluginCommand};
use crate::settings::WorkerSettings;
use crate::task::errors::ErrorReporter;
use crate::task::metrics::Counters;
use crate::task::offsets::ensure_topic;
use crate::task::offsets::OffsetStore;
use crate::task::sink::SinkTaskRunner;
use crate::task::source::SourceTaskRunner;
use crate::task::{Conversion, TaskSpec, Transactions};
use sluice_model::{
    ConfigError, ConfigFile, ConnectorConfig, ConnectorName, ErrorPolicy, RestartPolicy,
};

/// How long a failed task's error waits for its connector process's exit, the likelier cause.
const EXIT_GRACE: Duration = Duration::from_millis(250);

/// Everything needed to run a connector, already validated.
#[derive(Clone)]
pub struct ConnectorSpec {
    pub name: ConnectorName,
    pub class: String,
    pub kind: ConnectorType,
    pub command: PluginCommand,
    pub tasks_max: u32,
    pub config: BTreeMap<String, String>,
    /// Its converters, transforms and predicates.
    pub conversion: Conversion,
    pub topics: Vec<String>,
    pub topics_regex: Option<String>,
    pub restart: RestartPolicy,
    pub errors: ErrorPolicy,
    /// Set on an exactly-once worker for a source connector: tasks run in transactions.
    pub transactions: Option<Transactions>,
}

impl ConnectorSpec {
    /// The one builder of a spec, for both modes: the connector's class resolved on this
    /// worker, a sink's subscription checked, its converters (the connector's `*.converter`
    /// keys win over the worker's, errors located in `file` or `worker_file`), its config
    /// completed with the plugin's defaults. Returns the class too (what it declares decides
    /// exactly-once); `transactions` is the caller's to set.
    pub fn build<'r>(
        registry: &'r PluginRegistry,
        worker: &WorkerSettings,
        worker_file: Option<&ConfigFile>,
        file: &ConfigFile,
        settings: &ConnectorConfig,
    ) -> Result<(ConnectorSpec, &'r proto::ConnectorClass), ConfigError> {
        let Some((plugin, class)) = registry.resolve(&settings.class) else {
            let mut known = registry.class_names();
            known.sort();
            return Err(file.error(
                "connector.class",
                format!(
                    "unknown connector class {:?}; available: {}",
                    settings.class,
                    known.join(", ")
                ),
            ));
        };
        let kind = ConnectorType::try_from(class.r#type).unwrap_or(ConnectorType::Unspecified);
        if kind == ConnectorType::Sink {
            let issues = settings.sink_issues();
            if !issues.is_empty() {
                return Err(file.first_issue(issues));
            }
        }
        let converter = |which: &str| {
            let own = settings.values.contains_key(&format!("{which}.converter"));
            let origin = match worker_file {
                Some(worker_file) if !own => worker_file,
                _ => file,
            };
            worker.converter(which, origin, &settings.values)
        };
        let spec = ConnectorSpec {
            name: settings.name.clone(),
            class: class.class_name.clone(),
            kind,
            command: plugin.command.clone(),
            tasks_max: settings.tasks_max,
            conversion: Conversion {
                key: converter("key")?,
                value: converter("value")?,
                transforms: settings.transforms.clone(),
            },
            topics: settings.topics.clone(),
            topics_regex: settings.topics_regex.clone(),
            restart: settings.restart.clone(),
            errors: settings.errors.clone(),
            transactions: None,
            config: plugin.complete_config(&class.class_name, &settings.values),
        };
        Ok((spec, class))
    }
}

/// What every connector on this worker shares.
#[derive(Clone)]
pub struct WorkerContext {
    pub producer_config: ClientConfig,
    pub consumer_config: ClientConfig,
    pub offsets: Arc<OffsetStore>,
    pub flush_interval: Duration,
    /// `task.shutdown.graceful.timeout.ms`: how long tasks get to drain and commit on a stop.
    pub task_shutdown_timeout: Duration,
    /// Where a stop that ended in a failure is recorded, for the process's exit status.
    pub stop_failures: Arc<crate::stop::StopFailures>,
}

/// The worker's producer settings: idempotent, `acks=all`, then the user's overrides.
pub fn producer_config(bootstrap: &str, overrides: BTreeMap<String, String>) -> ClientConfig {
    client_config(
        bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("queue.buffering.max.messages", "500000"),
            // Kafka's producer `buffer.memory` (32 MB), not librdkafka's 1 GB.
            ("queue.buffering.max.kbytes", "32768"),
        ],
        overrides,
    )
}

/// The worker's consumer settings: manual commits, earliest reset, then the user's overrides.
pub fn consumer_config(bootstrap: &str, overrides: BTreeMap<String, String>) -> ClientConfig {
    client_config(
        bootstrap,
        &[
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "50"),
            // librdkafka pauses fetching for this long whenever its prefetch queue is full
            // (default 1 s); a sink that drains the queue in 200 ms would then idle for the
            // other 800 ms.
            ("fetch.queue.backoff.ms", "10"),
            // The prefetch queue: librdkafka's defaults (100,000 messages per partition, up
            // to 64 MB) kept ~30 MB of fetched messages in a sink worker that hands batches
            // of 8,192 to its connector; this holds a few batches ahead.
            ("queued.min.messages", "20000"),
            ("queued.max.messages.kbytes", "16384"),
        ],
        overrides,
    )
}

fn client_config(
    bootstrap: &str,
    defaults: &[(&str, &str)],
    overrides: BTreeMap<String, String>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (k, v) in defaults {
        config.set(*k, *v);
    }
    for (k, v) in overrides {
        config.set(k, v);
    }
    config
}

/// Asks the connector to split its config into at most `tasks.max` task configs.
pub async fn plan_tasks(
    client: &mut crate::host::process::Client,
    spec: &ConnectorSpec,
) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let plan = client
        .plan(proto::PlanRequest {
            connector_class: spec.class.clone(),
            config: spec.config.clone().into_iter().collect(),
            max_tasks: spec.tasks_max,
        })
        .await
        .map_err(|s| anyhow!("plan tasks: {}", s.message()))?
        .into_inner();
    if plan.tasks.is_empty() {
        bail!("the connector planned no tasks");
    }
    Ok(plan
        .tasks
        .into_iter()
        .map(|t| t.config.into_iter().collect())
        .collect())
}

/// One life of a connector process running tasks. `Ok` means a clean stop. `tasks` are the
/// task configs to run, by task id (a unit runs one); `None` asks the connector to plan them
/// first (the benchmarks run a connector whole). `running` is called with the process id
/// once every task has opened. Restarts are the caller's (`unit::lifecycle`). `opening` is the
/// span of the start: the launch and each task's opening (traced into the connector).
#[allow(clippy::too_many_arguments)]
pub async fn run_process(
    spec: &ConnectorSpec,
    ctx: &WorkerContext,
    counters: &Arc<Counters>,
    stop: &CancellationToken,
    tasks: Option<Vec<(u32, BTreeMap<String, String>)>>,
    running: impl FnOnce(u32),
    opening: tracing::Span,
) -> anyhow::Result<()> {
    use tracing::Instrument as _;
    let process = ConnectorProcess::launch_connector(&spec.command, &spec.name)
        .instrument(opening.clone())
        .await?;
    let planned = match tasks {
        Some(tasks) => tasks,
        None => plan_tasks(&mut process.client.clone(), spec)
            .await?
            .into_iter()
            .enumerate()
            .map(|(id, config)| (id as u32, config))
            .collect(),
    };
    tracing::info!(connector = %spec.name, pid = process.pid, tasks = planned.len(), "running");

    let mut consumer_config = ctx.consumer_config.clone();
    consumer_config.set("group.id", format!("connect-{}", spec.name));
    let tasks_stop = stop.child_token();
    let mut tasks = JoinSet::new();
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel();
    let mut unopened = planned.len();
    // Work beside the tasks (the dead-letter topic's creation), ended with this life.
    let mut side = JoinSet::new();
    if let Some(topic) = &spec.errors.dlq_topic {
        // Best effort, as for the offsets topic: a broker that refuses creates it on produce.
        let (config, topic) = (ctx.producer_config.clone(), topic.clone());
        let replication = i32::from(spec.errors.dlq_replication);
        side.spawn(async move { ensure_topic(&config, &topic, 1, replication, false).await });
    }
    for (id, config) in planned {
        let token = tasks_stop.clone();
        let metrics =
            crate::metrics::worker().task(&spec.name, id, spec.kind == ConnectorType::Sink);
        let errors = Arc::new(ErrorReporter::new(
            spec.errors.clone(),
            &spec.name,
            id,
            &ctx.producer_config,
            metrics.clone(),
        )?);
        let task = TaskSpec {
            connector: spec.name.to_string(),
            class: spec.class.clone(),
            task_id: id,
            config,
            conversion: spec.conversion.clone(),
            counters: counters.clone(),
            opened: opened_tx.clone(),
            errors,
            metrics,
            opening: std::sync::Mutex::new(Some(opening.clone())),
        };
        match spec.kind {
            ConnectorType::Sink => {
                let runner = SinkTaskRunner {
                    task,
                    consumer_config: consumer_config.clone(),
                    topics: spec.topics.clone(),
                    topics_regex: spec.topics_regex.clone(),
                    flush_interval: ctx.flush_interval,
                    shared_memory: process
                        .features
                        .iter()
                        .any(|f| f == proto::FEATURE_SINK_SHARED_MEMORY),
                };
                let channel = process.channel.clone();
                tasks.spawn(async move { (id, runner.run(channel, token).await) });
            }
            _ => {
                let runner = SourceTaskRunner {
                    task,
                    producer_config: ctx.producer_config.clone(),
                    offsets: ctx.offsets.clone(),
                    transactions: spec.transactions.clone(),
                    drain_timeout: ctx.task_shutdown_timeout,
                };
                let channel = process.channel.clone();
                tasks.spawn(async move { (id, runner.run(channel, token).await) });
            }
        }
    }
    drop(opened_tx);
    drop(opening);

    let mut running = Some(running);
    let mut failure: Option<anyhow::Error> = None;
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    let mut lease_gone = false;
    loop {
        let deadline = stop_deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
        tokio::select! {
            Some(_) = opened_rx.recv(), if unopened > 0 => {
                unopened -= 1;
                if let (0, Some(running)) = (unopened, running.take()) {
                    running(process.pid);
                }
            }
            reason = process.exited(), if failure.is_none() => {
                failure = Some(anyhow!("{reason}"));
                tasks_stop.cancel();
            }
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok((_, Ok(())))) => {}
                Some(Ok((id, Err(e)))) => {
                    if failure.is_none() {
                        // A connector process that dies breaks its tasks' streams as it goes,
                        // often before its exit is seen: the exit says why, the broken stream
                        // does not.
                        failure = Some(
                            match tokio::time::timeout(EXIT_GRACE, process.exited()).await {
                                Ok(reason) => anyhow!("{reason} (task {id}: {e:#})"),
                                Err(_) => e.context(format!("task {id}")),
                            },
                        );
                    }
                    tasks_stop.cancel();
                }
                Some(Err(e)) => {
                    failure.get_or_insert(anyhow!("task panicked: {e}"));
                    tasks_stop.cancel();
                }
            },
            _ = stop.cancelled(), if stop_deadline.is_none() => {
                // Exactly-once tasks of a worker whose lease ran out cannot commit: there is
                // nothing to wait for, and their units may already run elsewhere.
                lease_gone = spec.transactions.as_ref().is_some_and(|t| t.lease.expired());
                let grace = if lease_gone { Duration::ZERO } else { ctx.task_shutdown_timeout };
                stop_deadline = Some(tokio::time::Instant::now() + grace);
            }
            _ = tokio::time::sleep_until(deadline), if stop_deadline.is_some() => {
                if lease_gone {
                    tracing::warn!(
                        connector = %spec.name,
                        "stopping {} exactly-once task(s) at once: this worker's lease ran out, so they cannot commit (the next owner starts from the committed offsets)",
                        tasks.len()
                    );
                    tasks.abort_all();
                    break;
                }
                tracing::warn!(
                    connector = %spec.name,
                    "{} task(s) did not stop within {:?} (task.shutdown.graceful.timeout.ms); abandoning them: what they did not commit is delivered again when they restart (at-least-once)",
                    tasks.len(),
                    ctx.task_shutdown_timeout
                );
                failure.get_or_insert(anyhow!(
                    "{} task(s) did not stop within {:?} (task.shutdown.graceful.timeout.ms)",
                    tasks.len(),
                    ctx.task_shutdown_timeout
                ));
                tasks.abort_all();
                break;
            }
        }
    }
    side.shutdown().await;
    match failure {
        Some(e) => {
            process.kill().await;
            Err(e)
        }
        None => {
            process.shutdown().await;
            Ok(())
        }
    }
}
