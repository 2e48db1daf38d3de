//! Runs one connector: its process, its plan, its tasks; restarts the process and the tasks
//! with exponential backoff when the process dies, stops answering, or a task fails. Tasks
//! resume from committed positions, so a restart loses nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use rdkafka::config::ClientConfig;
use sluice_proto::connector::v1::{self as proto, ConnectorType};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::host::process::{ConnectorProcess, PluginCommand};
use crate::restart::{Next, Restarts};
use crate::task::errors::ErrorReporter;
use crate::task::metrics::Counters;
use crate::task::offsets::ensure_topic;
use crate::task::offsets::OffsetStore;
use crate::task::sink::SinkTaskRunner;
use crate::task::source::SourceTaskRunner;
use crate::task::Transactions;
use sluice_data::converter::Converter;
use sluice_data::transforms::Chain;
use sluice_model::{ConnectorName, ErrorPolicy, RestartPolicy};

/// Everything needed to run a connector, already validated.
#[derive(Clone)]
pub struct ConnectorSpec {
    pub name: ConnectorName,
    pub class: String,
    pub kind: ConnectorType,
    pub command: PluginCommand,
    pub tasks_max: u32,
    pub config: BTreeMap<String, String>,
    pub key_converter: Converter,
    pub value_converter: Converter,
    /// The connector's transforms and predicates.
    pub transforms: Arc<Chain>,
    pub topics: Vec<String>,
    pub topics_regex: Option<String>,
    pub restart: RestartPolicy,
    pub errors: ErrorPolicy,
    /// Set on an exactly-once worker for a source connector: tasks run in transactions.
    pub transactions: Option<Transactions>,
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

/// Runs a connector until `stop`, restarting it after failures as its restart policy says.
/// Past the restart limit the connector stays failed (logged) until the process restarts.
pub async fn run_connector(
    spec: ConnectorSpec,
    ctx: WorkerContext,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let mut restarts = Restarts::new(spec.restart.clone());
    while !stop.is_cancelled() {
        let started = Instant::now();
        let e = match run_process_life(&spec, &ctx, &counters, &stop, None, |_| {}).await {
            // The connector asked for its tasks to be planned again and their configs changed:
            // they stopped cleanly; a new life plans and starts them at once.
            Ok(true) => continue,
            Ok(false) => return,
            Err(e) if stop.is_cancelled() => {
                tracing::warn!(connector = %spec.name, "stopped after failure: {e:#}");
                ctx.stop_failures.record(crate::stop::StopFailure {
                    unit: format!("connector {}", spec.name),
                    connector: spec.name.to_string(),
                    source: spec.kind != ConnectorType::Sink,
                    error: format!("{e:#}"),
                });
                return;
            }
            Err(e) => e,
        };
        let delay = match restarts.on_failure(&e, started.elapsed()) {
            Next::Restart { delay, attempt } => {
                tracing::error!(connector = %spec.name, "connector failed, restart {attempt} of {} in {delay:?}: {e:#}", restarts.limit());
                delay
            }
            Next::GiveUp(why) => {
                tracing::error!(connector = %spec.name, "connector FAILED ({why}): {e:#}");
                return;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return,
        }
    }
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

/// One life of the connector process. `Ok` means a clean stop. `tasks` are the task configs
/// to run, by task id; `None` asks the connector to plan them (standalone mode). `running` is
/// called with the process id once every task has opened.
pub async fn run_process(
    spec: &ConnectorSpec,
    ctx: &WorkerContext,
    counters: &Arc<Counters>,
    stop: &CancellationToken,
    tasks: Option<Vec<(u32, BTreeMap<String, String>)>>,
    running: impl FnOnce(u32),
) -> anyhow::Result<()> {
    run_process_life(spec, ctx, counters, stop, tasks, running)
        .await
        .map(drop)
}

/// The next request of a connector's `Monitor` stream; pending forever without one.
async fn next_monitor_event(
    events: &mut Option<tonic::Streaming<proto::MonitorEvent>>,
) -> Result<Option<proto::MonitorEvent>, tonic::Status> {
    match events {
        Some(events) => events.message().await,
        None => std::future::pending().await,
    }
}

/// [`run_process`]; in standalone mode (`tasks` None) the connector's requests to plan again
/// (Kafka Connect's `requestTaskReconfiguration`) end the life cleanly when the task configs
/// change: `Ok(true)` asks for a new life at once.
async fn run_process_life(
    spec: &ConnectorSpec,
    ctx: &WorkerContext,
    counters: &Arc<Counters>,
    stop: &CancellationToken,
    tasks: Option<Vec<(u32, BTreeMap<String, String>)>>,
    running: impl FnOnce(u32),
) -> anyhow::Result<bool> {
    let process = ConnectorProcess::launch(&spec.command, &spec.name).await?;
    let standalone = tasks.is_none();
    let planned = match tasks {
        Some(tasks) => tasks,
        None => plan_tasks(&mut process.client.clone(), spec)
            .await?
            .into_iter()
            .enumerate()
            .map(|(id, config)| (id as u32, config))
            .collect(),
    };
    let planned_configs: Vec<BTreeMap<String, String>> =
        planned.iter().map(|(_, c)| c.clone()).collect();
    // Standalone: the connector may ask for its tasks to be planned again.
    let mut monitor = None;
    if standalone {
        let request = proto::MonitorRequest {
            connector_class: spec.class.clone(),
            config: spec.config.clone().into_iter().collect(),
        };
        match process.client.clone().monitor(request).await {
            Ok(events) => monitor = Some(events.into_inner()),
            Err(s) if s.code() == tonic::Code::Unimplemented => {}
            Err(s) => tracing::warn!(connector = %spec.name, "monitor: {}", s.message()),
        }
    }
    let mut replan = false;
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
        let client = process.client.clone();
        let token = tasks_stop.clone();
        let errors = Arc::new(ErrorReporter::new(
            spec.errors.clone(),
            &spec.name,
            id,
            &ctx.producer_config,
        )?);
        match spec.kind {
            ConnectorType::Sink => {
                let runner = SinkTaskRunner {
                    connector: spec.name.to_string(),
                    class: spec.class.clone(),
                    task_id: id,
                    config,
                    key_converter: spec.key_converter.clone(),
                    value_converter: spec.value_converter.clone(),
                    transforms: spec.transforms.clone(),
                    consumer_config: consumer_config.clone(),
                    topics: spec.topics.clone(),
                    topics_regex: spec.topics_regex.clone(),
                    flush_interval: ctx.flush_interval,
                    counters: counters.clone(),
                    opened: opened_tx.clone(),
                    errors,
                };
                tasks.spawn(async move { (id, runner.run(client, token).await) });
            }
            _ => {
                let runner = SourceTaskRunner {
                    connector: spec.name.to_string(),
                    class: spec.class.clone(),
                    task_id: id,
                    config,
                    key_converter: spec.key_converter.clone(),
                    value_converter: spec.value_converter.clone(),
                    transforms: spec.transforms.clone(),
                    producer_config: ctx.producer_config.clone(),
                    offsets: ctx.offsets.clone(),
                    counters: counters.clone(),
                    opened: opened_tx.clone(),
                    transactions: spec.transactions.clone(),
                    drain_timeout: ctx.task_shutdown_timeout,
                    errors,
                };
                tasks.spawn(async move { (id, runner.run(client, token).await) });
            }
        }
    }
    drop(opened_tx);

    let mut running = Some(running);
    let mut failure: Option<anyhow::Error> = None;
    let mut stop_deadline: Option<tokio::time::Instant> = None;
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
                        failure = Some(e.context(format!("task {id}")));
                    }
                    tasks_stop.cancel();
                }
                Some(Err(e)) => {
                    failure.get_or_insert(anyhow!("task panicked: {e}"));
                    tasks_stop.cancel();
                }
            },
            event = next_monitor_event(&mut monitor), if !replan && failure.is_none() => match event {
                Ok(Some(proto::MonitorEvent { kind: Some(proto::monitor_event::Kind::Reconfigure(r)) })) => {
                    tracing::info!(connector = %spec.name, reason = %r.reason, "the connector asks for its tasks to be planned again");
                    let again = plan_tasks(&mut process.client.clone(), spec).await?;
                    if again != planned_configs {
                        tracing::info!(connector = %spec.name, tasks = again.len(), "task configs changed: restarting the tasks");
                        replan = true;
                        tasks_stop.cancel();
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => monitor = None,
                Err(s) => {
                    tracing::warn!(connector = %spec.name, "monitor stream broke: {}", s.message());
                    monitor = None;
                }
            },
            _ = stop.cancelled(), if stop_deadline.is_none() => {
                stop_deadline = Some(tokio::time::Instant::now() + ctx.task_shutdown_timeout);
            }
            _ = tokio::time::sleep_until(deadline), if stop_deadline.is_some() => {
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
            Ok(replan && !stop.is_cancelled())
        }
    }
}
