//! Reconcile: a pure function from desired and observed state (and the time) to what the
//! controller does next — which workers are dead or hung, the next placement, which moves
//! wait for their old owner's release, and the assignment each worker must be sent. The
//! `Cluster` applies the outcome; this module decides it, so it is tested without sockets,
//! clocks or sled.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use sluice_model::{ConnectorName, Generation, TaskId, UnitKey, WorkerId};
use sluice_proto::cluster::v1 as wire;

use crate::scheduler::{self, Placement, Slot, Work};
use crate::state::{Desired, Observed, WorkerEntry};
use crate::store::{ConnectorRecord, TargetState};

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A worker silent this long is declared dead (or, still connected, hung).
    pub worker: Duration,
    /// How long a move waits for the old owner's release: its drain deadline and some.
    pub release: Duration,
}

/// What to do, as decided by [`reconcile`].
#[derive(Debug, Default)]
pub struct Outcome {
    /// Workers gone for longer than the timeout: forgotten, their work moves.
    pub dead: Vec<WorkerId>,
    /// Workers connected but silent: their stream is dropped; their work moves if they do
    /// not rejoin within the timeout.
    pub hung: Vec<WorkerId>,
    /// The releases still awaited, when anything was recomputed.
    pub releasing: Option<BTreeMap<UnitKey, (WorkerId, Instant)>>,
    /// A new generation to store and send, when the placement or an assignment changed.
    pub next: Option<Next>,
}

#[derive(Debug)]
pub struct Next {
    pub generation: Generation,
    pub placement: Placement,
    /// The assignment of every connected worker whose last one differs, generation unset.
    pub assignments: BTreeMap<WorkerId, wire::Assignment>,
}

/// Decides the next step. `force`: something changed (a join, a config), so the placement
/// is recomputed even when no timer asks for it.
pub fn reconcile(
    desired: &Desired,
    observed: &Observed,
    now: Instant,
    force: bool,
    timeouts: Timeouts,
) -> Outcome {
    let (mut dead, mut hung) = (Vec::new(), Vec::new());
    for (id, w) in &observed.workers {
        if now.duration_since(w.last_seen) > timeouts.worker {
            // Silent: hung while still connected, dead once its stream is gone.
            let list = if w.stream.is_some() {
                &mut hung
            } else {
                &mut dead
            };
            list.push(id.clone());
        }
    }
    let live = |id: &WorkerId| !dead.contains(id);
    let connected = |id: &WorkerId, w: &WorkerEntry| w.stream.is_some() && !hung.contains(id);
    let changed = force
        || !dead.is_empty()
        || !hung.is_empty()
        // A send that failed is retried.
        || observed
            .workers
            .iter()
            .any(|(id, w)| connected(id, w) && w.last_sent.is_none())
        || observed
            .releasing
            .values()
            .any(|(_, since)| now.duration_since(*since) >= timeouts.release);
    if !changed {
        return Outcome {
            dead,
            hung,
            ..Outcome::default()
        };
    }

    let slots: Vec<Slot> = observed
        .workers
        .iter()
        .filter(|(id, _)| live(id))
        .map(|(id, w)| Slot {
            id: id.clone(),
            classes: w
                .plugins
                .iter()
                .flat_map(|p| {
                    std::iter::once(p.class_name.clone()).chain(p.aliases.iter().cloned())
                })
                .collect(),
            capacity: (w.capacity > 0).then_some(w.capacity),
        })
        .collect();
    let placement = scheduler::assign(
        &desired_work(&desired.connectors),
        &slots,
        &desired.placement,
    );

    let mut releasing = observed.releasing.clone();
    // Moved, or taken away (a stop): if it comes back elsewhere before its old owner drained
    // it, it waits too.
    for (unit, old) in &desired.placement {
        let moved = placement.get(unit) != Some(old);
        let old_connected = observed.workers.get(old).is_some_and(|w| connected(old, w));
        if moved && old_connected {
            releasing
                .entry(unit.clone())
                .or_insert_with(|| (old.clone(), now));
        }
    }
    // Releases that will not come: the old owner is gone, the unit is back on it (the worker
    // itself waits for its predecessor), or the drain took too long.
    releasing.retain(|unit, (old, since)| {
        let keep = observed.workers.contains_key(old)
            && live(old)
            && placement.get(unit) != Some(old)
            && now.duration_since(*since) < timeouts.release;
        if !keep && now.duration_since(*since) >= timeouts.release {
            tracing::warn!(worker = %old, %unit, "no release within {:?}; starting the unit on its new worker", timeouts.release);
        }
        keep
    });

    let mut owned: BTreeMap<&WorkerId, Vec<&UnitKey>> = BTreeMap::new();
    for (unit, owner) in &placement {
        if !releasing.contains_key(unit) {
            owned.entry(owner).or_default().push(unit);
        }
    }
    // Assignments compared without their generation, which is set only when sent.
    let assignments: BTreeMap<WorkerId, wire::Assignment> = observed
        .workers
        .iter()
        .filter(|(id, w)| live(id) && connected(id, w))
        .filter_map(|(id, w)| {
            let units = owned.get(id).map_or(&[][..], Vec::as_slice);
            let message = assignment_for(units, &desired.connectors);
            (w.last_sent.as_ref() != Some(&message)).then(|| (id.clone(), message))
        })
        .collect();
    let next = (placement != desired.placement || !assignments.is_empty()).then(|| Next {
        generation: desired.generation.next(),
        placement,
        assignments,
    });
    Outcome {
        dead,
        hung,
        releasing: Some(releasing),
        next,
    }
}

/// When a timer next asks for a pass: the first moment a worker will have been silent for
/// longer than the timeout, or a release waited for too long. The loop wakes then rather than
/// at its next tick, so work moves off a dead worker as soon as the timeout allows.
pub fn next_deadline(observed: &Observed, timeouts: Timeouts) -> Option<Instant> {
    let silent = observed
        .workers
        .values()
        .map(|w| w.last_seen + timeouts.worker);
    let released = observed
        .releasing
        .values()
        .map(|(_, since)| *since + timeouts.release);
    // "Silent" is strictly longer than the timeout.
    silent
        .chain(released)
        .min()
        .map(|at| at + Duration::from_millis(1))
}

/// Every unit that should run: a planning instance per connector not stopped, and its tasks.
pub fn desired_work(connectors: &BTreeMap<ConnectorName, ConnectorRecord>) -> Vec<Work> {
    let mut work = Vec::new();
    for (name, record) in connectors {
        if record.target_state == TargetState::Stopped {
            continue;
        }
        let class = record
            .config
            .get("connector.class")
            .cloned()
            .unwrap_or_default();
        work.push(Work {
            unit: UnitKey {
                connector: name.clone(),
                task: None,
            },
            class: class.clone(),
        });
        for t in 0..record.tasks.len() as u32 {
            work.push(Work {
                unit: UnitKey {
                    connector: name.clone(),
                    task: Some(TaskId(t)),
                },
                class: class.clone(),
            });
        }
    }
    work
}

/// The assignment message of a worker owning `units`.
fn assignment_for(
    units: &[&UnitKey],
    connectors: &BTreeMap<ConnectorName, ConnectorRecord>,
) -> wire::Assignment {
    let mut names = BTreeSet::new();
    let mut planning = Vec::new();
    let mut tasks = Vec::new();
    for unit in units {
        let Some(record) = connectors.get(&unit.connector) else {
            continue;
        };
        names.insert(&unit.connector);
        match unit.task {
            None => planning.push(unit.connector.to_string()),
            Some(TaskId(t)) => tasks.push(wire::TaskAssignment {
                connector: unit.connector.to_string(),
                task: t,
                config: record
                    .tasks
                    .get(t as usize)
                    .map(wire_map)
                    .unwrap_or_default(),
                restart_epoch: record.task_restart_epochs.get(&t).copied().unwrap_or(0),
            }),
        }
    }
    let connectors = names
        .into_iter()
        .filter_map(|name| {
            let record = connectors.get(name)?;
            Some(wire::ConnectorConfig {
                name: name.to_string(),
                config: wire_map(&record.config),
                config_version: record.config_version,
                target_state: record.target_state.to_wire() as i32,
                restart_epoch: record.restart_epoch,
            })
        })
        .collect();
    wire::Assignment {
        generation: 0,
        connectors,
        planning,
        tasks,
        cluster_id: String::new(),
    }
}

/// A config as the wire's map, copied once.
fn wire_map(config: &BTreeMap<String, String>) -> HashMap<String, String> {
    config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        worker: Duration::from_secs(10),
        release: Duration::from_secs(40),
    };

    fn record(tasks: usize, target: TargetState) -> ConnectorRecord {
        ConnectorRecord {
            config: [("connector.class".to_string(), "C".to_string())].into(),
            config_version: 1,
            target_state: target,
            restart_epoch: 0,
            kind: Some("source".into()),
            tasks: vec![BTreeMap::new(); tasks],
            tasks_version: 1,
            task_restart_epochs: BTreeMap::new(),
            topics: Default::default(),
        }
    }

    fn worker(seen: Instant, connected: bool) -> WorkerEntry {
        WorkerEntry {
            plugins: vec![wire::PluginClass {
                class_name: "C".into(),
                ..Default::default()
            }],
            broken: Vec::new(),
            capacity: 0,
            last_seen: seen,
            stream: connected.then(|| crate::state::AssignmentSender::channel().0),
            last_sent: None,
        }
    }

    fn desired(connectors: &[(&str, usize, TargetState)]) -> Desired {
        Desired {
            connectors: connectors
                .iter()
                .map(|(n, t, s)| (ConnectorName::from_trusted(*n), record(*t, *s)))
                .collect(),
            ..Desired::default()
        }
    }

    fn w(id: &str) -> WorkerId {
        WorkerId::new(id)
    }

    #[test]
    fn nothing_changed_means_nothing_to_do() {
        let now = Instant::now();
        let desired = desired(&[("c", 2, TargetState::Running)]);
        let mut observed = Observed::default();
        observed.workers.insert(w("a"), worker(now, true));
        let first = reconcile(&desired, &observed, now, true, TIMEOUTS);
        let next = first.next.expect("a first placement");
        assert_eq!(next.generation, Generation(1));
        assert_eq!(next.placement.len(), 3);
        assert_eq!(next.assignments[&w("a")].tasks.len(), 2);
        // Once stored and sent, an unforced pass finds nothing.
        let desired = Desired {
            placement: next.placement,
            generation: next.generation,
            ..desired
        };
        observed.workers.get_mut("a").unwrap().last_sent = Some(next.assignments[&w("a")].clone());
        let again = reconcile(&desired, &observed, now, false, TIMEOUTS);
        assert!(again.next.is_none() && again.releasing.is_none());
        // Forced with nothing new: no new generation either.
        assert!(reconcile(&desired, &observed, now, true, TIMEOUTS)
            .next
            .is_none());
    }

    #[test]
    fn a_silent_worker_is_hung_then_dead_and_its_work_moves() {
        let start = Instant::now();
        let later = start + Duration::from_secs(11);
        let desired = desired(&[("c", 2, TargetState::Running)]);
        let mut observed = Observed::default();
        observed.workers.insert(w("a"), worker(start, true));
        observed.workers.insert(w("b"), worker(later, true));
        let hung = reconcile(&desired, &observed, later, false, TIMEOUTS);
        assert_eq!(hung.hung, [w("a")]);
        assert!(hung.dead.is_empty());
        // Still known (it may rejoin), so its units stay put.
        let kept = hung.next.expect("b gets its assignment").placement;
        assert!(kept.values().any(|o| *o == w("a")));
        observed.workers.get_mut("a").unwrap().stream = None;
        let dead = reconcile(&desired, &observed, later, false, TIMEOUTS);
        assert_eq!(dead.dead, [w("a")]);
        let moved = dead.next.expect("a new placement").placement;
        assert!(moved.values().all(|o| *o == w("b")));
        assert_eq!(moved.len(), 3);
    }

    #[test]
    fn a_move_waits_for_the_old_owners_release_and_a_stop_takes_units_away() {
        let now = Instant::now();
        let mut desired = desired(&[("c", 2, TargetState::Running)]);
        let mut observed = Observed::default();
        observed.workers.insert(w("a"), worker(now, true));
        let first = reconcile(&desired, &observed, now, true, TIMEOUTS)
            .next
            .unwrap();
        desired.placement = first.placement;
        // A second worker joins: what moves to it waits until a releases it.
        observed.workers.insert(w("b"), worker(now, true));
        let outcome = reconcile(&desired, &observed, now, true, TIMEOUTS);
        let releasing = outcome.releasing.unwrap();
        let next = outcome.next.unwrap();
        assert!(!releasing.is_empty());
        for (unit, (old, _)) in &releasing {
            assert_eq!(*old, w("a"));
            assert_eq!(next.placement[unit], w("b"));
        }
        let to_b = next
            .assignments
            .get(&w("b"))
            .map_or(0, |a| a.tasks.len() + a.planning.len());
        assert_eq!(to_b, 0, "b starts nothing before a released it");
        // Past the release timeout, b gets them anyway.
        observed.releasing = releasing;
        let late = now + TIMEOUTS.release;
        let outcome = reconcile(&desired, &observed, late, false, TIMEOUTS);
        assert!(outcome.releasing.unwrap().is_empty());
        // Stopping the connector takes every unit away.
        desired.connectors.get_mut("c").unwrap().target_state = TargetState::Stopped;
        let stopped = reconcile(
            &desired,
            &Observed {
                releasing: BTreeMap::new(),
                ..observed
            },
            now,
            true,
            TIMEOUTS,
        );
        assert!(stopped.next.unwrap().placement.is_empty());
    }

    #[test]
    fn the_next_deadline_is_the_first_silence_or_release_timeout() {
        let now = Instant::now();
        let mut observed = Observed::default();
        assert_eq!(next_deadline(&observed, TIMEOUTS), None);
        observed.workers.insert(w("a"), worker(now, true));
        observed
            .workers
            .insert(w("b"), worker(now - Duration::from_secs(4), false));
        let first = next_deadline(&observed, TIMEOUTS).unwrap();
        assert_eq!(first, now + Duration::from_millis(6001));
        // A worker found dead at that moment, not before.
        observed.workers.remove("a");
        let before = reconcile(
            &Desired::default(),
            &observed,
            first - Duration::from_millis(2),
            false,
            TIMEOUTS,
        );
        assert!(before.dead.is_empty());
        assert_eq!(
            reconcile(&Desired::default(), &observed, first, false, TIMEOUTS).dead,
            [w("b")]
        );
        observed.releasing.insert(
            UnitKey::task("c", 0),
            (w("b"), now - Duration::from_secs(39)),
        );
        assert_eq!(
            next_deadline(&observed, TIMEOUTS).unwrap(),
            now + Duration::from_millis(1001)
        );
    }

    #[test]
    fn assignments_carry_configs_epochs_and_target_states() {
        let mut connectors = desired(&[("c", 1, TargetState::Paused)]).connectors;
        connectors
            .get_mut("c")
            .unwrap()
            .task_restart_epochs
            .insert(0, 3);
        let units = [
            UnitKey::planning("c"),
            UnitKey::task("c", 0),
            UnitKey::task("gone", 0),
        ];
        let refs: Vec<&UnitKey> = units.iter().collect();
        let a = assignment_for(&refs, &connectors);
        assert_eq!(a.planning, ["c"]);
        assert_eq!(a.tasks.len(), 1);
        assert_eq!(a.tasks[0].restart_epoch, 3);
        assert_eq!(a.connectors.len(), 1);
        assert_eq!(
            a.connectors[0].target_state,
            sluice_proto::api::v1::TargetState::Paused as i32
        );
    }
}
