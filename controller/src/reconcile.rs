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
use crate::state::{Desired, Observed, Sent, Slice, WorkerEntry};
use crate::store::{ConnectorRecord, PlacementChange, TargetState};

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
    /// When recomputed: whether the placement now holds every unit some live worker can run.
    pub complete: bool,
    /// A new generation to store and send, when the placement or an assignment changed.
    pub next: Option<Next>,
}

#[derive(Debug)]
pub struct Next {
    pub generation: Generation,
    /// How the placement changes: units placed anew or moved, units no longer placed.
    pub change: PlacementChange,
    /// What every connected worker whose assignment changes is sent.
    pub assignments: BTreeMap<WorkerId, Update>,
}

/// What a worker is sent in a pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Its whole assignment: it holds nothing sent before (it just joined, or a send failed).
    Whole(Sent),
    /// The connectors whose slice changes: replaced (`Some`) or gone (`None`).
    Delta(BTreeMap<ConnectorName, Option<Slice>>),
}

impl Update {
    /// Applies this to what the worker holds; returns what it then holds.
    pub fn apply_to(self, sent: &mut Option<Sent>) -> &Sent {
        match self {
            Update::Whole(whole) => sent.insert(whole),
            Update::Delta(changes) => {
                let held = sent.get_or_insert_with(Sent::new);
                for (name, slice) in changes {
                    match slice {
                        Some(slice) => held.insert(name, slice),
                        None => held.remove(&name),
                    };
                }
                held
            }
        }
    }
}

/// Decides the next step. `force`: something changed (a join, a config), so the placement
/// is recomputed even when no timer asks for it.
///
/// A pass costs what changed, not what exists: while the workers stay the same and the
/// placement holds everything they can run (`Desired::complete_for`), only the units of the
/// connectors changed since the last pass are placed ([`scheduler::extend`]), and a worker is
/// sent only the slices (a connector's config and units) that changed from what it holds; only
/// a worker holding nothing is sent its whole assignment, built from its own units
/// (`Placed::of`).
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
            .any(|(id, w)| connected(id, w) && w.sent.is_none())
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
        .filter(|(id, w)| live(id) && !w.draining)
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
    let previous = &desired.placement;
    let step = (dead.is_empty() && desired.complete_for == Some(observed.membership))
        .then(|| extend(desired, &slots))
        .flatten();
    let (removed, set, complete) = match step {
        Some(change) => (
            change.removed.into_iter().collect(),
            change.set.into_iter().collect(),
            true,
        ),
        None => {
            let work = desired_work(&desired.connectors);
            let placement = scheduler::assign(&work, &slots, previous);
            let placeable = work
                .iter()
                .filter(|w| slots.iter().any(|s| s.classes.contains(&w.class)))
                .count();
            let complete = placement.len() == placeable;
            // Both in unit order: one walk finds what is gone and what is new or moved.
            let (mut removed, mut set) = (BTreeSet::new(), BTreeMap::new());
            let mut old = previous.iter().peekable();
            for (unit, worker) in placement {
                while let Some((gone, _)) = old.next_if(|(u, _)| **u < unit) {
                    removed.insert(gone.clone());
                }
                match old.next_if(|(u, _)| **u == unit) {
                    Some((_, was)) if *was == worker => {}
                    _ => {
                        set.insert(unit, worker);
                    }
                }
            }
            removed.extend(old.map(|(u, _)| u.clone()));
            (removed, set, complete)
        }
    };
    // The owner of a unit once the change is made.
    let owner = |unit: &UnitKey| -> Option<&WorkerId> {
        match set.get(unit) {
            Some(w) => Some(w),
            None if removed.contains(unit) => None,
            None => previous.get(unit),
        }
    };

    let mut releasing = observed.releasing.clone();
    // Moved, or taken away (a stop): if it comes back elsewhere before its old owner drained
    // it, it waits too.
    for unit in removed.iter().chain(set.keys()) {
        let Some(old) = previous.get(unit) else {
            continue;
        };
        let old_connected = observed.workers.get(old).is_some_and(|w| connected(old, w));
        if old_connected {
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
            && owner(unit) != Some(old)
            && now.duration_since(*since) < timeouts.release;
        if !keep && now.duration_since(*since) >= timeouts.release {
            tracing::warn!(worker = %old, %unit, "no release within {:?}; starting the unit on its new worker", timeouts.release);
        }
        keep
    });

    let sendable = |id: &WorkerId, w: &WorkerEntry| live(id) && connected(id, w);
    let mut assignments: BTreeMap<WorkerId, Update> = BTreeMap::new();
    // A worker holding nothing sent (it just joined, or a send failed) gets its whole
    // assignment, from its own units once the change is made.
    for (id, w) in &observed.workers {
        if sendable(id, w) && w.sent.is_none() {
            let kept = previous.of(id).into_iter().flat_map(|o| &o.units);
            let mut units: Vec<&UnitKey> = kept
                .filter(|u| owner(u) == Some(id))
                .chain(set.iter().filter(|(_, w)| *w == id).map(|(u, _)| u))
                .filter(|u| !releasing.contains_key(*u))
                .collect();
            units.sort_unstable();
            assignments.insert(
                id.clone(),
                Update::Whole(sent_for(&units, &desired.connectors)),
            );
        }
    }
    // Every other worker gets the slices that changed, of the connectors this pass touched:
    // changed ones (a report that releases a unit touches its connector), those with units
    // placed, moved or removed, and those with a release begun or ended.
    let mut touched: BTreeSet<&ConnectorName> = desired.connectors.changed().iter().collect();
    touched.extend(removed.iter().chain(set.keys()).map(|u| &u.connector));
    let begun = releasing
        .keys()
        .filter(|u| !observed.releasing.contains_key(*u));
    let ended = observed
        .releasing
        .keys()
        .filter(|u| !releasing.contains_key(*u));
    touched.extend(begun.chain(ended).map(|u| &u.connector));
    for name in touched {
        // What a connected worker holds is what the placement gave it when last sent, so the
        // connector's old owners and its new ones are every worker whose slice may change.
        let mut holders: BTreeSet<&WorkerId> = units_of(previous, name).map(|(_, w)| w).collect();
        let mut runs: BTreeMap<&WorkerId, Vec<&UnitKey>> = BTreeMap::new();
        let added = units_of(&set, name).filter(|(u, _)| !previous.contains_key(*u));
        for (unit, _) in units_of(previous, name).chain(added) {
            let Some(id) = owner(unit) else { continue };
            holders.insert(id);
            if !releasing.contains_key(unit) {
                runs.entry(id).or_default().push(unit);
            }
        }
        for id in holders {
            let Some(w) = observed.workers.get(id).filter(|w| sendable(id, w)) else {
                continue;
            };
            let Some(sent) = &w.sent else {
                continue; // sent whole above
            };
            let slice = runs
                .get(id)
                .and_then(|units| slice_for(name, units, &desired.connectors));
            if sent.get(name) != slice.as_ref() {
                let update = assignments
                    .entry(id.clone())
                    .or_insert_with(|| Update::Delta(BTreeMap::new()));
                if let Update::Delta(changes) = update {
                    changes.insert(name.clone(), slice);
                }
            }
        }
    }
    let next = (!removed.is_empty() || !set.is_empty() || !assignments.is_empty()).then(|| {
        let generation = desired.generation.next();
        Next {
            generation,
            change: PlacementChange {
                removed: removed.into_iter().collect(),
                set: set.into_iter().collect(),
                generation,
            },
            assignments,
        }
    });
    Outcome {
        dead,
        hung,
        releasing: Some(releasing),
        complete,
        next,
    }
}

/// The units of one connector in a placement (or a part of one), in order.
fn units_of<'a>(
    placement: &'a Placement,
    name: &'a ConnectorName,
) -> impl Iterator<Item = (&'a UnitKey, &'a WorkerId)> + 'a {
    let first = UnitKey {
        connector: name.clone(),
        task: None,
    };
    placement
        .range(first..)
        .take_while(move |(unit, _)| unit.connector == *name)
}

/// The placement step for the connectors changed since the last pass, when the rest stays
/// put ([`scheduler::extend`]): units no longer wanted, and where the new ones go (the
/// generation is set by the caller).
fn extend(desired: &Desired, slots: &[Slot]) -> Option<PlacementChange> {
    let (mut removed, mut kept, mut added) = (BTreeSet::new(), Vec::new(), Vec::new());
    for name in desired.connectors.changed() {
        let wanted: Vec<Work> = desired
            .connectors
            .get(name)
            .map(|record| connector_work(name, record))
            .unwrap_or_default();
        for (unit, _) in units_of(&desired.placement, name) {
            if !wanted.iter().any(|w| w.unit == *unit) {
                removed.insert(unit.clone());
            }
        }
        for w in wanted {
            if desired.placement.contains_key(&w.unit) {
                kept.push(w);
            } else {
                added.push(w);
            }
        }
    }
    // Loads per kind, as the placement's per-worker index has them.
    let mut loads = [vec![0; slots.len()], vec![0; slots.len()]];
    let mut counted = 0;
    for (i, slot) in slots.iter().enumerate() {
        let [planning, tasks] = desired.placement.of(&slot.id).map_or([0, 0], |o| o.loads());
        (loads[0][i], loads[1][i]) = (planning, tasks);
        counted += planning + tasks;
    }
    if counted != desired.placement.len() {
        return None; // units on a worker that is no slot
    }
    let set = scheduler::extend(&desired.placement, slots, loads, &removed, &kept, &added)?;
    Some(PlacementChange {
        removed: removed.into_iter().collect(),
        set,
        generation: desired.generation,
    })
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
    connectors
        .iter()
        .flat_map(|(name, record)| connector_work(name, record))
        .collect()
}

/// The units of one connector that should run: none when it is stopped.
fn connector_work(name: &ConnectorName, record: &ConnectorRecord) -> Vec<Work> {
    if record.target_state == TargetState::Stopped {
        return Vec::new();
    }
    let class = record
        .config
        .get("connector.class")
        .cloned()
        .unwrap_or_default();
    let tasks = (0..record.tasks.len() as u32).map(|t| Some(TaskId(t)));
    std::iter::once(None)
        .chain(tasks)
        .map(|task| Work {
            unit: UnitKey {
                connector: name.clone(),
                task,
            },
            class: class.clone(),
        })
        .collect()
}

/// The assignment of a worker running `units` (in unit order), by connector.
fn sent_for(units: &[&UnitKey], connectors: &BTreeMap<ConnectorName, ConnectorRecord>) -> Sent {
    units
        .chunk_by(|a, b| a.connector == b.connector)
        .filter_map(|run| {
            let name = &run[0].connector;
            Some((name.clone(), slice_for(name, run, connectors)?))
        })
        .collect()
}

/// The slice of connector `name` for a worker running `units` of it; none when it runs none
/// (or the connector is gone).
fn slice_for(
    name: &ConnectorName,
    units: &[&UnitKey],
    connectors: &BTreeMap<ConnectorName, ConnectorRecord>,
) -> Option<Slice> {
    let record = connectors.get(name).filter(|_| !units.is_empty())?;
    let mut slice = Slice {
        config: wire::ConnectorConfig {
            name: name.to_string(),
            config: wire_map(&record.config),
            config_version: record.config_version,
            target_state: record.target_state.to_wire() as i32,
            restart_epoch: record.restart_epoch,
            trace_context: wire_map(&record.trace),
        },
        planning: false,
        tasks: Vec::new(),
    };
    for unit in units {
        match unit.task {
            None => slice.planning = true,
            Some(TaskId(t)) => slice.tasks.push(wire::TaskAssignment {
                connector: name.to_string(),
                task: t,
                config: record
                    .tasks
                    .get(t as usize)
                    .map(wire_map)
                    .unwrap_or_default(),
                restart_epoch: record.task_restart_epochs.get(&t).copied().unwrap_or(0),
                trace_context: record.task_traces.get(&t).map(wire_map).unwrap_or_default(),
            }),
        }
    }
    Some(slice)
}

/// A config as the wire's map, copied once.
fn wire_map(config: &BTreeMap<String, String>) -> HashMap<String, String> {
    config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Placement;

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
            trace: BTreeMap::new(),
            task_traces: BTreeMap::new(),
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
            sent: None,
            sent_generation: 0,
            accepts_deltas: true,
            draining: false,
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

    /// The placement once `next` is applied to `previous`.
    fn after(previous: &Placement, next: &Next) -> Placement {
        let mut placement = previous.clone();
        for unit in &next.change.removed {
            placement.remove(unit);
        }
        placement.extend(next.change.set.iter().cloned());
        placement
    }

    /// Applies an outcome as `Cluster::reconcile` does, every send succeeding.
    fn apply(desired: &mut Desired, observed: &mut Observed, outcome: Outcome) {
        for id in &outcome.dead {
            observed.workers.remove(id);
        }
        if let Some(releasing) = outcome.releasing {
            observed.releasing = releasing;
            desired.connectors.take_changed();
            desired.complete_for = outcome.complete.then_some(observed.membership);
        }
        if let Some(next) = outcome.next {
            desired.placement.apply(&next.change);
            desired.generation = next.generation;
            for (id, update) in next.assignments {
                update.apply_to(&mut observed.workers.get_mut(&id).unwrap().sent);
            }
        }
    }

    /// What every connected worker was last sent, by worker.
    fn sent(observed: &Observed) -> BTreeMap<WorkerId, Option<Sent>> {
        observed
            .workers
            .iter()
            .map(|(id, w)| (id.clone(), w.sent.clone()))
            .collect()
    }

    /// Tasks in a worker's assignment once it applied `update`.
    fn tasks_after(held: Option<&Sent>, update: Option<&Update>) -> usize {
        let mut held = held.cloned();
        if let Some(update) = update {
            update.clone().apply_to(&mut held);
        }
        held.iter()
            .flat_map(|s| s.values())
            .map(|slice| slice.tasks.len())
            .sum()
    }

    #[test]
    fn passes_placing_only_what_changed_agree_with_full_recomputes() {
        let now = Instant::now();
        let (mut desired, mut observed) = (Desired::default(), Observed::default());
        for id in ["a", "b", "c"] {
            observed.workers.insert(w(id), worker(now, true));
        }
        observed.membership = 1;
        let pass = |d: &Desired, o: &Observed| reconcile(d, o, now, true, TIMEOUTS);
        let outcome = pass(&desired, &observed);
        apply(&mut desired, &mut observed, outcome);
        assert_eq!(desired.complete_for, Some(1));
        // Creates, task changes, a stop and a delete, each followed by an incremental pass;
        // a twin state recomputes everything on every pass and must end the same.
        type Step = Box<dyn Fn(&mut Desired)>;
        let steps: Vec<Step> = vec![
            Box::new(|d| {
                d.connectors.insert(
                    ConnectorName::from_trusted("x"),
                    record(3, TargetState::Running),
                )
            }),
            Box::new(|d| {
                d.connectors.insert(
                    ConnectorName::from_trusted("y"),
                    record(1, TargetState::Running),
                )
            }),
            Box::new(|d| {
                d.connectors
                    .get_mut("x")
                    .unwrap()
                    .tasks
                    .push(BTreeMap::new())
            }),
            Box::new(|d| {
                d.connectors.insert(
                    ConnectorName::from_trusted("z"),
                    record(5, TargetState::Paused),
                )
            }),
            Box::new(|d| d.connectors.get_mut("y").unwrap().target_state = TargetState::Stopped),
            Box::new(|d| d.connectors.get_mut("z").unwrap().config_version += 1),
            Box::new(|d| {
                d.connectors.remove(&ConnectorName::from_trusted("x"));
            }),
            Box::new(|d| d.connectors.get_mut("y").unwrap().target_state = TargetState::Running),
        ];
        let (mut twin_desired, mut twin_observed) = (Desired::default(), Observed::default());
        for id in ["a", "b", "c"] {
            twin_observed.workers.insert(w(id), worker(now, true));
        }
        for step in steps {
            step(&mut desired);
            step(&mut twin_desired);
            let outcome = pass(&desired, &observed);
            apply(&mut desired, &mut observed, outcome);
            // The twin places everything anew and rebuilds every assignment.
            twin_desired.complete_for = None;
            for w in twin_observed.workers.values_mut() {
                w.sent = None;
            }
            let outcome = pass(&twin_desired, &twin_observed);
            apply(&mut twin_desired, &mut twin_observed, outcome);
            // Released at once (as a report does it), so moves complete in both.
            for (d, o) in [
                (&mut desired, &mut observed),
                (&mut twin_desired, &mut twin_observed),
            ] {
                if !o.releasing.is_empty() {
                    for unit in std::mem::take(&mut o.releasing).keys() {
                        d.connectors.touch(&unit.connector);
                    }
                    let outcome = pass(d, o);
                    apply(d, o, outcome);
                }
            }
            assert_eq!(desired.placement, twin_desired.placement);
            assert_eq!(sent(&observed), sent(&twin_observed));
        }
        assert_eq!(desired.complete_for, Some(1));
        // A join moves units; once their old owners release them, the newcomer's assignment
        // holds them in both.
        for (d, o) in [
            (&mut desired, &mut observed),
            (&mut twin_desired, &mut twin_observed),
        ] {
            o.workers.insert(w("d"), worker(now, true));
            o.membership += 1;
            let outcome = pass(d, o);
            apply(d, o, outcome);
            assert!(!o.releasing.is_empty(), "the newcomer takes units");
            for unit in std::mem::take(&mut o.releasing).keys() {
                d.connectors.touch(&unit.connector);
            }
            let outcome = pass(d, o);
            apply(d, o, outcome);
            let held = tasks_after(o.workers["d"].sent.as_ref(), None);
            assert!(held > 0, "the newcomer runs what was released");
        }
        assert_eq!(desired.placement, twin_desired.placement);
        assert_eq!(sent(&observed), sent(&twin_observed));
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
        let placement = after(&desired.placement, &next);
        assert_eq!(placement.len(), 3);
        assert_eq!(tasks_after(None, next.assignments.get(&w("a"))), 2);
        // Once stored and sent, an unforced pass finds nothing.
        let desired = Desired {
            placement: placement.into(),
            generation: next.generation,
            ..desired
        };
        next.assignments[&w("a")]
            .clone()
            .apply_to(&mut observed.workers.get_mut("a").unwrap().sent);
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
        let kept = after(
            &desired.placement,
            &hung.next.expect("b gets its assignment"),
        );
        assert!(kept.values().any(|o| *o == w("a")));
        observed.workers.get_mut("a").unwrap().stream = None;
        let dead = reconcile(&desired, &observed, later, false, TIMEOUTS);
        assert_eq!(dead.dead, [w("a")]);
        let moved = after(&desired.placement, &dead.next.expect("a new placement"));
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
        desired.placement.apply(&first.change);
        // A second worker joins: what moves to it waits until a releases it.
        observed.workers.insert(w("b"), worker(now, true));
        let outcome = reconcile(&desired, &observed, now, true, TIMEOUTS);
        let releasing = outcome.releasing.unwrap();
        let next = outcome.next.unwrap();
        assert!(!releasing.is_empty());
        for (unit, (old, _)) in &releasing {
            assert_eq!(*old, w("a"));
            assert_eq!(after(&desired.placement, &next)[unit], w("b"));
        }
        let to_b = next.assignments.get(&w("b"));
        assert_eq!(
            to_b,
            Some(&Update::Whole(Sent::new())),
            "b starts nothing before a released it"
        );
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
        assert!(after(&desired.placement, &stopped.next.unwrap()).is_empty());
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
        let sent = sent_for(&refs, &connectors);
        let a = crate::state::whole(&sent, 7, "k");
        assert_eq!(a.planning, ["c"]);
        assert_eq!(a.tasks.len(), 1);
        assert_eq!(a.tasks[0].restart_epoch, 3);
        assert_eq!(a.connectors.len(), 1);
        assert_eq!(
            a.connectors[0].target_state,
            sluice_proto::api::v1::TargetState::Paused as i32
        );
        assert_eq!((a.generation, a.cluster_id.as_str()), (7, "k"));
    }
}
