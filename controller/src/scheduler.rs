//! The scheduler: a pure function from the work to place, the live workers and the previous
//! placement to the next placement. Connector (planning) instances and tasks are balanced by
//! count separately, as Kafka Connect does; placements are sticky, so a join or a leave moves
//! only what must move; a worker never gets work whose plugin it lacks, nor more tasks than
//! its declared capacity.

use std::collections::{BTreeMap, BTreeSet};

use sluice_model::{ConnectorName, UnitKey, WorkerId};

/// A unit to place and the connector class it needs.
#[derive(Debug, Clone)]
pub struct Work {
    pub unit: UnitKey,
    pub class: String,
}

/// A live worker as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Slot {
    pub id: WorkerId,
    /// Connector classes (and aliases) the worker can run.
    pub classes: BTreeSet<String>,
    /// Most tasks it accepts; `None` for no limit.
    pub capacity: Option<u32>,
}

/// Where every unit runs. Units no live worker can run are absent.
pub type Placement = BTreeMap<UnitKey, WorkerId>;

/// Computes the next placement. Deterministic: the same inputs give the same output.
pub fn assign(work: &[Work], slots: &[Slot], previous: &Placement) -> Placement {
    let mut placement = Placement::new();
    let (planning, tasks): (Vec<&Work>, Vec<&Work>) =
        work.iter().partition(|w| w.unit.task.is_none());
    place_kind(&planning, slots, previous, false, &mut placement);
    place_kind(&tasks, slots, previous, true, &mut placement);
    placement
}

/// What [`assign`] would return when the work changes by `removed` (units no longer wanted)
/// and `added` (new units), computed from `previous` and `load` (each slot's planning
/// instances and tasks in it) without recomputing everything: the
/// controller's step for a connector created, changed or deleted while its workers stay the
/// same. `previous` must be what `assign` placed for the same `slots`, holding every unit some
/// slot can run; `kept` lists the units of changed connectors that stay wanted, with their
/// (maybe new) classes. Returns the units to set (new units only: nothing else moves), or
/// `None` when [`assign`] would move units already placed (a worker would hold more than
/// its share, a kept unit's worker lacks its class now) or could not place one; the caller
/// then runs [`assign`].
pub fn extend(
    previous: &Placement,
    slots: &[Slot],
    mut load: [Vec<usize>; 2],
    removed: &BTreeSet<UnitKey>,
    kept: &[Work],
    added: &[Work],
) -> Option<Vec<(UnitKey, WorkerId)>> {
    let workers = slots.len();
    let index: BTreeMap<&WorkerId, usize> =
        slots.iter().enumerate().map(|(i, s)| (&s.id, i)).collect();
    let slot_of = |unit: &UnitKey| previous.get(unit).and_then(|id| index.get(id).copied());
    for w in kept {
        if !slots[slot_of(&w.unit)?].classes.contains(&w.class) {
            return None;
        }
    }
    // Loads per kind (planning, tasks) once the removed units are gone.
    for unit in removed {
        if let Some(i) = slot_of(unit) {
            load[usize::from(unit.task.is_some())][i] -= 1;
        }
    }
    let eligible = |w: &Work, s: &Slot| s.classes.contains(&w.class);
    let mut placeable: Vec<&Work> = added
        .iter()
        .filter(|w| slots.iter().any(|s| eligible(w, s)))
        .collect();
    placeable.sort_by(|a, b| a.unit.cmp(&b.unit));
    let mut set = Vec::new();
    for (kind, tasks) in [(0, false), (1, true)] {
        let loose: Vec<&Work> = placeable
            .iter()
            .copied()
            .filter(|w| w.unit.task.is_some() == tasks)
            .collect();
        let load = &mut load[kind];
        let n = load.iter().sum::<usize>() + loose.len();
        let (base, extra) = (n / workers.max(1), n % workers.max(1));
        let cap = |i: usize| task_cap(tasks, &slots[i]);
        // `assign` keeps every placed unit only if no worker is over its share and at most
        // `extra` workers hold one more than `base`.
        let over = (0..workers).filter(|&i| load[i] > base).count();
        if over > extra || (0..workers).any(|i| load[i] > (base + 1).min(cap(i))) {
            return None;
        }
        // The fill, as `assign` does it: ties go to the worker with the fewest units of the
        // same connector (of this kind), then by worker id.
        let mut per_connector: BTreeMap<(&ConnectorName, usize), usize> = BTreeMap::new();
        let connectors: BTreeSet<&ConnectorName> =
            loose.iter().map(|w| &w.unit.connector).collect();
        for name in connectors {
            let first = UnitKey {
                connector: name.clone(),
                task: None,
            };
            for (unit, id) in previous.range(first..) {
                if unit.connector != *name {
                    break;
                }
                if unit.task.is_some() == tasks && !removed.contains(unit) {
                    *per_connector.entry((name, *index.get(id)?)).or_default() += 1;
                }
            }
        }
        for w in loose {
            let count = |i: usize| {
                let key = (&w.unit.connector, i);
                per_connector.get(&key).copied().unwrap_or(0)
            };
            let i = least_loaded(w, slots, load, tasks, count)?;
            load[i] += 1;
            *per_connector.entry((&w.unit.connector, i)).or_default() += 1;
            set.push((w.unit.clone(), slots[i].id.clone()));
        }
    }
    Some(set)
}

/// The most units of a kind a slot takes: its capacity for tasks, no limit for planning.
fn task_cap(tasks: bool, slot: &Slot) -> usize {
    match (tasks, slot.capacity) {
        (true, Some(c)) => c as usize,
        _ => usize::MAX,
    }
}

/// The fill rule: the least loaded eligible slot with room for `w`; ties go to the slot with
/// the fewest units of the same connector (`same_connector`), then by worker id.
fn least_loaded(
    w: &Work,
    slots: &[Slot],
    load: &[usize],
    tasks: bool,
    same_connector: impl Fn(usize) -> usize,
) -> Option<usize> {
    (0..slots.len())
        .filter(|&i| slots[i].classes.contains(&w.class) && load[i] < task_cap(tasks, &slots[i]))
        .min_by_key(|&i| (load[i], same_connector(i), &slots[i].id))
}

/// Places one kind of unit (planning instances or tasks), balanced by count among workers.
fn place_kind(
    work: &[&Work],
    slots: &[Slot],
    previous: &Placement,
    tasks: bool,
    out: &mut Placement,
) {
    if slots.is_empty() {
        return;
    }
    let eligible = |w: &Work, s: &Slot| s.classes.contains(&w.class);
    let placeable: Vec<&Work> = {
        let mut v: Vec<&Work> = work
            .iter()
            .copied()
            .filter(|w| slots.iter().any(|s| eligible(w, s)))
            .collect();
        v.sort_by(|a, b| a.unit.cmp(&b.unit));
        v
    };
    let n = placeable.len();
    let workers = slots.len();
    let base = n / workers;
    let mut extra = n % workers;
    let index: BTreeMap<&WorkerId, usize> =
        slots.iter().enumerate().map(|(i, s)| (&s.id, i)).collect();
    let cap = |i: usize| task_cap(tasks, &slots[i]);

    // Sticky pass: keep each unit where it was while that worker stays within base + 1.
    let mut load = vec![0usize; workers];
    let mut kept: Vec<Vec<&Work>> = vec![Vec::new(); workers];
    let mut loose: Vec<&Work> = Vec::new();
    for w in &placeable {
        let keep = previous
            .get(&w.unit)
            .and_then(|id| index.get(id).copied())
            .filter(|&i| eligible(w, &slots[i]) && load[i] < (base + 1).min(cap(i)));
        match keep {
            Some(i) => {
                load[i] += 1;
                kept[i].push(w);
            }
            None => loose.push(w),
        }
    }
    // Only `extra` workers may hold base + 1; trim the others back to base, most loaded first,
    // releasing their highest units (the newest tasks) so that low task ids stay put.
    let mut over: Vec<usize> = (0..workers).filter(|&i| load[i] > base).collect();
    over.sort_by_key(|&i| (std::cmp::Reverse(load[i]), slots[i].id.clone()));
    for i in over {
        if extra > 0 {
            extra -= 1;
            continue;
        }
        while load[i] > base {
            let Some(w) = kept[i].pop() else { break };
            load[i] -= 1;
            loose.push(w);
        }
    }
    for (i, units) in kept.iter().enumerate() {
        for w in units {
            out.insert(w.unit.clone(), slots[i].id.clone());
        }
    }

    // Fill: each loose unit to the least loaded eligible worker; ties go to the worker with
    // the fewest units of the same connector, then by worker id.
    // The counts are kept only for the connectors of loose units: those are all it asks.
    loose.sort_by(|a, b| a.unit.cmp(&b.unit));
    let names: BTreeSet<&ConnectorName> = loose.iter().map(|w| &w.unit.connector).collect();
    let mut per_connector: BTreeMap<(&ConnectorName, usize), usize> = BTreeMap::new();
    if !names.is_empty() {
        for (i, units) in kept.iter().enumerate() {
            for w in units.iter().filter(|w| names.contains(&w.unit.connector)) {
                *per_connector.entry((&w.unit.connector, i)).or_default() += 1;
            }
        }
    }
    for w in loose {
        let count = |i: usize| {
            let key = (&w.unit.connector, i);
            per_connector.get(&key).copied().unwrap_or(0)
        };
        let best = least_loaded(w, slots, &load, tasks, count);
        if let Some(i) = best {
            load[i] += 1;
            *per_connector.entry((&w.unit.connector, i)).or_default() += 1;
            out.insert(w.unit.clone(), slots[i].id.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Each slot's planning instances and tasks in `placement`; `None` when a unit is on a
    /// worker that is no slot.
    fn slot_loads(placement: &Placement, slots: &[Slot]) -> Option<[Vec<usize>; 2]> {
        let index: BTreeMap<&WorkerId, usize> =
            slots.iter().enumerate().map(|(i, s)| (&s.id, i)).collect();
        let mut load = [vec![0usize; slots.len()], vec![0usize; slots.len()]];
        for (unit, id) in placement {
            load[usize::from(unit.task.is_some())][*index.get(id)?] += 1;
        }
        Some(load)
    }

    fn slot(id: &str) -> Slot {
        Slot {
            id: WorkerId::new(id),
            classes: ["C".to_string()].into(),
            capacity: None,
        }
    }

    fn connector(name: &str, tasks: u32) -> Vec<Work> {
        let mut v = vec![Work {
            unit: UnitKey::planning(name),
            class: "C".into(),
        }];
        v.extend((0..tasks).map(|t| Work {
            unit: UnitKey::task(name, t),
            class: "C".into(),
        }));
        v
    }

    fn loads(p: &Placement, tasks: bool) -> BTreeMap<WorkerId, usize> {
        let mut m = BTreeMap::new();
        for (u, w) in p {
            if u.task.is_some() == tasks {
                *m.entry(w.clone()).or_default() += 1;
            }
        }
        m
    }

    #[test]
    fn six_tasks_spread_two_per_worker() {
        let slots = [slot("a"), slot("b"), slot("c")];
        let p = assign(&connector("x", 6), &slots, &Placement::new());
        assert_eq!(
            loads(&p, true).values().copied().collect::<Vec<_>>(),
            [2, 2, 2]
        );
    }

    #[test]
    fn a_missing_plugin_is_never_assigned() {
        let mut slots = vec![slot("a"), slot("b")];
        slots[1].classes.clear();
        let p = assign(&connector("x", 4), &slots, &Placement::new());
        assert!(p.values().all(|w| w == "a"));
        assert_eq!(p.len(), 5);
        let p = assign(&connector("x", 4), &slots[1..], &Placement::new());
        assert!(p.is_empty());
    }

    #[test]
    fn capacity_limits_tasks() {
        let mut slots = vec![slot("a"), slot("b")];
        slots[0].capacity = Some(1);
        let p = assign(&connector("x", 4), &slots, &Placement::new());
        assert_eq!(loads(&p, true)[&WorkerId::new("a")], 1);
        assert_eq!(loads(&p, true)[&WorkerId::new("b")], 3);
    }

    fn arb_case() -> impl Strategy<Value = (Vec<u32>, usize)> {
        (proptest::collection::vec(0u32..8, 0..12), 1usize..7)
    }

    fn work_of(tasks: &[u32]) -> Vec<Work> {
        tasks
            .iter()
            .enumerate()
            .flat_map(|(i, &t)| connector(&format!("c{i}"), t))
            .collect()
    }

    fn slots_of(n: usize) -> Vec<Slot> {
        (0..n).map(|i| slot(&format!("w{i}"))).collect()
    }

    fn check_balanced(p: &Placement, work: &[Work], slots: &[Slot]) -> Result<(), TestCaseError> {
        prop_assert_eq!(p.len(), work.len(), "every unit assigned exactly once");
        for w in work {
            prop_assert!(p.contains_key(&w.unit));
        }
        for tasks in [false, true] {
            let l = loads(p, tasks);
            let counts: Vec<usize> = slots
                .iter()
                .map(|s| l.get(&s.id).copied().unwrap_or(0))
                .collect();
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(max - min <= 1, "balanced within one: {:?}", counts);
        }
        Ok(())
    }

    fn moved(before: &Placement, after: &Placement) -> usize {
        before
            .iter()
            .filter(|(u, w)| after.get(*u).is_some_and(|a| a != *w))
            .count()
    }

    /// A connector's units with class `class`.
    fn connector_of(name: &str, tasks: u32, class: &str) -> Vec<Work> {
        let mut v = connector(name, tasks);
        for w in &mut v {
            w.class = class.into();
        }
        v
    }

    /// Connectors (name → tasks and class) as work.
    fn work_of_map(connectors: &BTreeMap<String, (u32, bool)>) -> Vec<Work> {
        connectors
            .iter()
            .flat_map(|(n, (t, d))| connector_of(n, *t, if *d { "D" } else { "C" }))
            .collect()
    }

    /// Runs `extend` for the change from `before` to `after` (connector maps); when it answers,
    /// checks the answer is exactly what `assign` gives. Returns whether it answered.
    fn check_extend(
        before: &BTreeMap<String, (u32, bool)>,
        after: &BTreeMap<String, (u32, bool)>,
        slots: &[Slot],
    ) -> Result<bool, TestCaseError> {
        let (work0, work1) = (work_of_map(before), work_of_map(after));
        let p0 = assign(&work0, slots, &Placement::new());
        let placeable = |w: &Work| slots.iter().any(|s| s.classes.contains(&w.class));
        if p0.len() != work0.iter().filter(|w| placeable(w)).count() {
            return Ok(false); // not every unit placed: `extend` does not apply
        }
        let changed: BTreeSet<&String> = before
            .keys()
            .chain(after.keys())
            .filter(|n| before.get(*n) != after.get(*n))
            .collect();
        let of_changed = |w: &&Work| changed.contains(&w.unit.connector.to_string());
        let wanted: BTreeSet<&UnitKey> = work1.iter().map(|w| &w.unit).collect();
        let removed: BTreeSet<UnitKey> = p0
            .keys()
            .filter(|u| changed.contains(&u.connector.to_string()) && !wanted.contains(u))
            .cloned()
            .collect();
        let (kept, added): (Vec<Work>, Vec<Work>) = work1
            .iter()
            .filter(of_changed)
            .cloned()
            .partition(|w| p0.contains_key(&w.unit));
        let load = slot_loads(&p0, slots).expect("every unit on a slot");
        let Some(set) = extend(&p0, slots, load, &removed, &kept, &added) else {
            return Ok(false);
        };
        let mut p1 = p0.clone();
        p1.retain(|u, _| !removed.contains(u));
        p1.extend(set);
        prop_assert_eq!(p1, assign(&work1, slots, &p0));
        Ok(true)
    }

    #[test]
    fn extending_a_balanced_placement_by_a_connector_moves_nothing() {
        let slots = slots_of(3);
        let before: BTreeMap<String, (u32, bool)> =
            (0..5).map(|i| (format!("c{i}"), (2, false))).collect();
        let mut after = before.clone();
        after.insert("new".into(), (4, false));
        assert!(check_extend(&before, &after, &slots).unwrap());
        // Deleting one may unbalance: `extend` declines or matches.
        after.remove("c0");
        check_extend(&before, &after, &slots).unwrap();
    }

    fn arb_connectors() -> impl Strategy<Value = BTreeMap<String, (u32, bool)>> {
        proptest::collection::btree_map("c[0-9]", (0u32..6, proptest::bool::weighted(0.2)), 0..8)
    }

    fn arb_slots() -> impl Strategy<Value = Vec<Slot>> {
        proptest::collection::vec(
            (
                proptest::option::weighted(0.2, 0u32..4),
                proptest::bool::ANY,
            ),
            1..6,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (capacity, d))| Slot {
                    capacity,
                    classes: if d {
                        ["C", "D"].map(String::from).into()
                    } else {
                        ["C".to_string()].into()
                    },
                    ..slot(&format!("w{i}"))
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn extend_answers_what_assign_would(before in arb_connectors(), edits in arb_connectors(), deleted in proptest::collection::btree_set("c[0-9]", 0..3), slots in arb_slots()) {
            let mut after = before.clone();
            after.extend(edits);
            after.retain(|n, _| !deleted.contains(n));
            check_extend(&before, &after, &slots)?;
        }

        #[test]
        fn extend_answers_for_most_additions(before in arb_connectors(), added in 0u32..6, workers in 1usize..6) {
            let mut after = before.clone();
            after.insert("new".into(), (added, false));
            prop_assert!(check_extend(&before, &after, &slots_of(workers))? || before.contains_key("new"));
        }

        #[test]
        fn assigns_everything_balanced((tasks, workers) in arb_case()) {
            let work = work_of(&tasks);
            let slots = slots_of(workers);
            let p = assign(&work, &slots, &Placement::new());
            check_balanced(&p, &work, &slots)?;
            // Stable: assigning again from the result moves nothing.
            prop_assert_eq!(assign(&work, &slots, &p), p);
        }

        #[test]
        fn a_leave_moves_only_the_leavers_units((tasks, workers) in arb_case(), leaver in 0usize..7) {
            let work = work_of(&tasks);
            let slots = slots_of(workers + 1);
            let before = assign(&work, &slots, &Placement::new());
            let gone = slots[leaver % slots.len()].id.clone();
            let rest: Vec<Slot> = slots.iter().filter(|s| s.id != gone).cloned().collect();
            let after = assign(&work, &rest, &before);
            check_balanced(&after, &work, &rest)?;
            for (u, w) in &before {
                if *w != gone {
                    prop_assert_eq!(after.get(u), Some(w), "{} moved off a surviving worker", u);
                }
            }
        }

        #[test]
        fn a_join_moves_only_what_the_newcomer_takes((tasks, workers) in arb_case()) {
            let work = work_of(&tasks);
            let slots = slots_of(workers);
            let before = assign(&work, &slots, &Placement::new());
            let mut more = slots.clone();
            more.push(slot("new"));
            let after = assign(&work, &more, &before);
            check_balanced(&after, &work, &more)?;
            let taken = after.values().filter(|w| *w == "new").count();
            prop_assert!(moved(&before, &after) <= taken, "moved {} but the newcomer took {}", moved(&before, &after), taken);
        }
    }
}
