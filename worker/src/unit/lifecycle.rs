//! One unit's life: the planning instance (validate, plan, submit, watch for re-plans) and
//! a task (its own connector process), each restarted alone, with the connector's backoff,
//! by one loop: [`with_restarts`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use sluice_proto::api::v1 as api;
use sluice_proto::cluster::v1 as wire;
use sluice_proto::connector::v1::{self as proto, ConnectorType};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{Planner, UnitHost};
use crate::host::process::ConnectorProcess;
use crate::restart::{Next, Restarts};
use crate::runner::{plan_tasks, run_process, ConnectorSpec};
use sluice_model::UnitKey;

/// How long the controller may take to answer a submission of task configs.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(5);
const SUBMIT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a running task's newly used topics are looked for.
const TOPICS_INTERVAL: Duration = Duration::from_millis(500);

/// Runs `life` until it ends cleanly or `stop`, restarting it after failures as the
/// connector's restart policy says: RESTARTING with the failure as its trace while the delay
/// runs, FAILED past the limit or on a fatal error until the unit is stopped (a manual restart
/// replaces the unit, and with it the count). A failure after the stop goes to `stopped`.
async fn with_restarts<F, Fut>(
    host: &UnitHost,
    key: &UnitKey,
    policy: sluice_model::RestartPolicy,
    stop: &CancellationToken,
    mut life: F,
    stopped: impl FnOnce(anyhow::Error),
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut restarts = Restarts::new(policy);
    let unit = match key.task {
        Some(task) => format!("task {task}"),
        None => "connector".into(),
    };
    let labels = crate::metrics::TaskLabels::new(key.connector.as_str(), key.wire_task());
    // Listed from the start, at 0.
    crate::metrics::worker().restarted(&labels);
    loop {
        let started = Instant::now();
        let ended = life().await;
        crate::metrics::worker().restarted(&labels);
        let error = match ended {
            Ok(()) => return,
            Err(e) if stop.is_cancelled() => return stopped(e),
            Err(e) => e,
        };
        let next = restarts.on_failure(&error, started.elapsed());
        // A connector's error may quote what it was given.
        let error = crate::providers::Redactor::process().redact(&format!("{error:#}"));
        match next {
            Next::Restart { delay, attempt } => {
                crate::metrics::worker().restarting(&labels);
                let limit = restarts.limit();
                tracing::error!(connector = %key.connector, "{unit} failed, restart {attempt} of {limit} in {delay:?}: {error}");
                host.report(
                    key,
                    api::State::Restarting,
                    format!("restart {attempt} of {limit} in {delay:?} after: {error}"),
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return,
                }
            }
            Next::GiveUp(why) => {
                tracing::error!(connector = %key.connector, "{unit} FAILED ({why}): {error}");
                host.report(key, api::State::Failed, format!("{why}: {error}"));
                stop.cancelled().await;
                return;
            }
        }
    }
}

/// The connector instance: validates and plans its tasks for this config version, submits
/// them, reports the connector's state, then keeps the instance's process while the connector
/// watches its source and asks for re-plans (Monitor).
pub(super) async fn run_planning(
    host: &UnitHost,
    key: &UnitKey,
    config: wire::ConnectorConfig,
    stop: &CancellationToken,
) {
    let policy = match host.spec(&config) {
        Ok(spec) => spec.restart,
        // The instance fails below with this error, naming the key.
        Err(_) => Default::default(),
    };
    let life = || connector_instance(host, key, &config, stop);
    with_restarts(
        host,
        key,
        policy,
        stop,
        life,
        |e| tracing::debug!(connector = %config.name, "planning stopped: {e:#}"),
    )
    .await;
}

/// One life of the connector instance's process. `Ok` when stopped.
async fn connector_instance(
    host: &UnitHost,
    key: &UnitKey,
    config: &wire::ConnectorConfig,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let spec = host.spec(config)?;
    // The start joins the trace of the call that made this config (or restart).
    let start = tracing::info_span!("start connector", connector = %config.name);
    sluice_telemetry::follow(&start, &config.trace_context);
    let process = ConnectorProcess::launch_connector(&spec.command, &spec.name)
        .instrument(start.clone())
        .await?;
    let labels = crate::metrics::TaskLabels::new(key.connector.as_str(), None);
    crate::metrics::worker().process_started(labels.clone(), process.pid);
    let mut client = process.client.clone();
    let watched = async {
        async {
            validate(&mut client, &spec).await?;
            plan(host, &mut client, &spec, config, stop).await
        }
        .instrument(start)
        .await?;
        let state = if config.target_state == api::TargetState::Paused as i32 {
            api::State::Paused
        } else {
            api::State::Running
        };
        host.report(key, state, "");
        let request = proto::MonitorRequest {
            connector_class: spec.class.clone(),
            config: spec.config.clone().into_iter().collect(),
        };
        let mut events = match client.monitor(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(false),
            Err(s) => bail!("monitor: {}", s.message()),
        };
        loop {
            tokio::select! {
                event = events.message() => match event {
                    Ok(Some(proto::MonitorEvent { kind: Some(proto::monitor_event::Kind::Reconfigure(r)) })) => {
                        tracing::info!(connector = %spec.name, reason = %r.reason, "the connector asks for its tasks to be planned again");
                        plan(host, &mut client, &spec, config, stop)
                            .instrument(tracing::info_span!("plan connector again", connector = %spec.name))
                            .await?;
                    }
                    Ok(Some(_)) => {}
                    // The connector will never ask: its process is not needed any more.
                    Ok(None) => return Ok(false),
                    Err(s) => bail!("monitor stream broke: {}", s.message()),
                },
                reason = process.exited() => bail!("{reason}"),
                _ = stop.cancelled() => return Ok(true),
            }
        }
    }
    .await;
    crate::metrics::worker().process_ended(&labels, process.pid);
    process.shutdown().await;
    match watched? {
        true => Ok(()),
        false => {
            stop.cancelled().await;
            Ok(())
        }
    }
}

async fn validate(
    client: &mut crate::host::process::Client,
    spec: &ConnectorSpec,
) -> anyhow::Result<()> {
    let validation = client
        .validate(proto::ValidateRequest {
            connector_class: spec.class.clone(),
            config: spec.config.clone().into_iter().collect(),
        })
        .await
        .map_err(|s| anyhow!("validate: {}", s.message()))?
        .into_inner();
    if !validation.errors.is_empty() {
        let problems: Vec<String> = validation
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.name, e.message))
            .collect();
        bail!("invalid configuration: {}", problems.join("; "));
    }
    Ok(())
}

/// Plans the tasks and submits their configs; the controller rolls the tasks whose configs
/// changed.
async fn plan(
    host: &UnitHost,
    client: &mut crate::host::process::Client,
    spec: &ConnectorSpec,
    config: &wire::ConnectorConfig,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks = plan_tasks(client, spec).await?;
    // Planned from resolved values: references go back in before the configs leave.
    let raw: BTreeMap<String, String> = config.config.clone().into_iter().collect();
    crate::providers::reverse(&raw, &spec.config, &mut tasks);
    let request = wire::SubmitTaskConfigsRequest {
        worker_id: host.worker_id.to_string(),
        connector: config.name.clone(),
        config_version: config.config_version,
        tasks: tasks
            .into_iter()
            .map(|config| wire::TaskConfig {
                config: config.into_iter().collect(),
            })
            .collect(),
        r#type: spec.kind as i32,
    };
    let mut controller = match &host.planner {
        Planner::Local(local) => {
            local.submit(request);
            return Ok(());
        }
        Planner::Controller(client) => client.clone(),
    };
    // The controller may be restarting: keep trying until it takes the configs.
    let mut backoff = Duration::from_millis(200);
    loop {
        match tokio::time::timeout(
            SUBMIT_TIMEOUT,
            controller.submit_task_configs(request.clone()),
        )
        .await
        {
            Ok(Ok(r)) => {
                if !r.into_inner().accepted {
                    tracing::info!(connector = %config.name, "task configs were for an older config version; ignored");
                }
                return Ok(());
            }
            Ok(Err(s)) => {
                tracing::warn!(connector = %config.name, "submit task configs: {}", s.message())
            }
            Err(_) => tracing::warn!(connector = %config.name, "submit task configs: no answer"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => bail!("stopped"),
        }
        backoff = (backoff * 2).min(SUBMIT_BACKOFF_MAX);
    }
}

/// One task in its own connector process, restarted with backoff when it fails.
pub(super) async fn run_task(
    host: &UnitHost,
    key: &UnitKey,
    config: wire::ConnectorConfig,
    task: wire::TaskAssignment,
    stop: &CancellationToken,
) {
    if config.target_state == api::TargetState::Paused as i32 {
        host.report(key, api::State::Paused, "");
        stop.cancelled().await;
        return;
    }
    let spec = match host.spec(&config) {
        Ok(spec) => spec,
        Err(e) => {
            host.report(key, api::State::Failed, format!("{e:#}"));
            stop.cancelled().await;
            return;
        }
    };
    let counters = host.counters(&spec.name);
    let task_config: BTreeMap<String, String> = task.config.into_iter().collect();
    let task_config = match host.resolve(&task_config) {
        Ok(resolved) => resolved,
        Err(e) => {
            host.report(key, api::State::Failed, format!("{e:#}"));
            stop.cancelled().await;
            return;
        }
    };
    let labels = crate::metrics::TaskLabels::new(key.connector.as_str(), Some(task.task));
    let life = || async {
        let opening = tracing::info_span!("start task", connector = %spec.name, task = task.task);
        sluice_telemetry::follow(&opening, &task.trace_context);
        let pid = std::sync::atomic::AtomicU32::new(0);
        let run = run_process(
            &spec,
            &host.ctx,
            &counters,
            stop,
            Some(vec![(task.task, task_config.clone())]),
            |p| {
                tracing::info!(connector = %spec.name, task = task.task, pid = p, "task running");
                pid.store(p, std::sync::atomic::Ordering::Relaxed);
                crate::metrics::worker().process_started(labels.clone(), p);
                host.report(key, api::State::Running, "")
            },
            opening,
        );
        // While it runs, newly used topics go to the controller with the RUNNING state.
        let topics = async {
            let mut known = 0;
            let mut ticker = tokio::time::interval(TOPICS_INTERVAL);
            loop {
                ticker.tick().await;
                let topics = counters.topics();
                if topics.len() != known {
                    known = topics.len();
                    let topics = topics.into_iter().collect();
                    host.report_with_topics(key, api::State::Running, "", topics);
                }
            }
        };
        let result = tokio::select! {
            result = run => result,
            _ = topics => unreachable!("the topics watch never ends"),
        };
        crate::metrics::worker()
            .process_ended(&labels, pid.load(std::sync::atomic::Ordering::Relaxed));
        tracing::info!(connector = %spec.name, task = task.task, "task ended");
        result
    };
    with_restarts(host, key, spec.restart.clone(), stop, life, |e| {
        let error = crate::providers::Redactor::process().redact(&format!("{e:#}"));
        tracing::warn!(connector = %spec.name, task = task.task, "stopped after failure: {error}");
        host.ctx.stop_failures.record(crate::stop::StopFailure {
            unit: format!("task {}-{}", spec.name, task.task),
            connector: spec.name.to_string(),
            source: spec.kind != ConnectorType::Sink,
            error,
        });
    })
    .await;
}
