//! The supervisor: makes the running units match each assignment. Units carry a fingerprint
//! of what they were started with; only units whose fingerprint changes restart, and a
//! replacement starts only after its predecessor stopped and committed.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_proto::cluster::v1 as wire;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::lifecycle::{run_planning, run_task};
use super::{StatusUpdate, UnitHost};
use sluice_model::UnitKey;

/// Assignments as they arrive: the join they came on (for the lease) and the assignment.
pub type Assignments = watch::Receiver<Option<(u64, wire::Assignment)>>;

/// A unit running here: a connector's planning instance or one task.
struct Running {
    /// What it was started with; a different fingerprint restarts it.
    fingerprint: String,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// What one unit should run, from an assignment.
enum Work {
    Planning(wire::ConnectorConfig),
    Task(wire::ConnectorConfig, wire::TaskAssignment),
}

/// Makes the running units match each assignment: stops what is no longer assigned (or
/// changed), starts what is new. A replaced unit starts only after its predecessor stopped
/// and committed. On `shutdown`, stops everything and waits.
pub async fn supervise(
    host: Arc<UnitHost>,
    mut assignments: Assignments,
    shutdown: CancellationToken,
) {
    let mut units: BTreeMap<UnitKey, Running> = BTreeMap::new();
    // Units stopped without a replacement, until they have drained: one that comes back
    // (a stop then a resume) waits for its predecessor as a replacement does.
    let mut draining: BTreeMap<UnitKey, watch::Receiver<bool>> = BTreeMap::new();
    loop {
        tokio::select! {
            changed = assignments.changed() => if changed.is_err() { break },
            _ = shutdown.cancelled() => break,
        }
        draining.retain(|_, done| !*done.borrow());
        let Some((join, assignment)) = assignments.borrow_and_update().clone() else {
            continue;
        };
        if !assignment.cluster_id.is_empty() {
            host.cluster_id
                .get_or_init(|| assignment.cluster_id.clone());
        }
        let desired = desired_units(&assignment);
        let mut previous: BTreeMap<UnitKey, JoinHandle<()>> = BTreeMap::new();
        let stale: Vec<UnitKey> = units
            .iter()
            .filter(|(key, unit)| desired.get(*key).map(|d| &d.0) != Some(&unit.fingerprint))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(unit) = units.remove(&key) {
                unit.stop.cancel();
                previous.insert(key.clone(), unit.handle);
            }
        }
        // Units that stopped and are not replaced still finish in the background.
        for (key, (fingerprint, work)) in desired {
            if units.contains_key(&key) {
                continue;
            }
            let stop = CancellationToken::new();
            let before: Option<Predecessor> = match previous.remove(&key) {
                Some(handle) => Some(Box::pin(async move {
                    let _ = handle.await;
                })),
                None => draining.remove(&key).map(|mut done| -> Predecessor {
                    Box::pin(async move {
                        let _ = done.wait_for(|d| *d).await;
                    })
                }),
            };
            let handle = tokio::spawn(run_unit(
                host.clone(),
                key.clone(),
                work,
                before,
                stop.clone(),
            ));
            units.insert(
                key,
                Running {
                    fingerprint,
                    stop,
                    handle,
                },
            );
        }
        // Units taken away finish in the background; once drained and committed they are
        // released, and the controller lets their new owner start them.
        for (key, handle) in previous {
            let statuses = host.statuses.clone();
            let (done_tx, done_rx) = watch::channel(false);
            draining.insert(key.clone(), done_rx);
            host.tasks.spawn(async move {
                let _ = handle.await;
                let _ = statuses.send(StatusUpdate { key, state: None });
                let _ = done_tx.send(true);
            });
        }
        // Whatever moved away is told to stop: the lease may say "yours" again.
        host.lease.applied(join);
        let tasks = units.keys().filter(|k| k.task.is_some()).count();
        crate::metrics::worker().set_units(units.len() - tasks, tasks);
        crate::metrics::worker().assignment_received();
    }
    tracing::info!("stopping: draining tasks and committing offsets");
    // Stops that failed before this one (units that moved) were handled then.
    host.ctx.stop_failures.take();
    for unit in units.values() {
        unit.stop.cancel();
    }
    for (_, unit) in units {
        let _ = unit.handle.await;
    }
    for (_, mut done) in draining {
        let _ = done.wait_for(|d| *d).await;
    }
}

fn desired_units(assignment: &wire::Assignment) -> BTreeMap<UnitKey, (String, Work)> {
    let configs: BTreeMap<&str, &wire::ConnectorConfig> = assignment
        .connectors
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let mut units = BTreeMap::new();
    for name in &assignment.planning {
        let Some(config) = configs.get(name.as_str()) else {
            continue;
        };
        let fingerprint = format!(
            "{}/{}/{}",
            config.config_version, config.restart_epoch, config.target_state
        );
        units.insert(
            UnitKey::planning(name),
            (fingerprint, Work::Planning((*config).clone())),
        );
    }
    for task in &assignment.tasks {
        let Some(config) = configs.get(task.connector.as_str()) else {
            continue;
        };
        let task_config: BTreeMap<&String, &String> = task.config.iter().collect();
        let framework: BTreeMap<&String, &String> = config
            .config
            .iter()
            .filter(|(k, _)| sluice_model::keys::worker_reads(k))
            .collect();
        let fingerprint = serde_json::json!([
            task_config,
            framework,
            task.restart_epoch,
            config.target_state
        ])
        .to_string();
        units.insert(
            UnitKey::task(&task.connector, task.task),
            (fingerprint, Work::Task((*config).clone(), task.clone())),
        );
    }
    units
}

/// Completes when a unit's predecessor (same connector and task) has stopped here.
type Predecessor = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn run_unit(
    host: Arc<UnitHost>,
    key: UnitKey,
    work: Work,
    before: Option<Predecessor>,
    stop: CancellationToken,
) {
    if let Some(before) = before {
        before.await;
    }
    if stop.is_cancelled() {
        return;
    }
    match work {
        Work::Planning(config) => run_planning(&host, &key, config, &stop).await,
        Work::Task(config, task) => run_task(&host, &key, config, task, &stop).await,
    }
}
