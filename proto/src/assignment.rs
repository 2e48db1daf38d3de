//! Assignment deltas (`Assignment.delta`): how a worker applies one to what it holds, and how
//! two that were not read yet combine into one.

use std::collections::BTreeSet;

use crate::cluster::v1::Assignment;

impl Assignment {
    /// What holding `self` and then receiving `next` amounts to. A whole `next` replaces
    /// `self`. A delta strips every connector it names (in `connectors` or
    /// `removed_connectors`) of its config, planning instance and tasks, then adds its own;
    /// applied to a whole assignment the result is whole, applied to a delta (neither read
    /// yet) the result is the one delta that does both.
    pub fn then(self, next: Assignment) -> Assignment {
        if !next.delta {
            return next;
        }
        let Assignment {
            generation,
            connectors,
            planning,
            tasks,
            cluster_id,
            delta: _,
            base_generation: _,
            removed_connectors,
        } = next;
        let named: BTreeSet<&str> = connectors
            .iter()
            .map(|c| c.name.as_str())
            .chain(removed_connectors.iter().map(String::as_str))
            .collect();
        let mut out = self;
        out.connectors.retain(|c| !named.contains(c.name.as_str()));
        out.planning.retain(|p| !named.contains(p.as_str()));
        out.tasks.retain(|t| !named.contains(t.connector.as_str()));
        if out.delta {
            let known: BTreeSet<String> = out.removed_connectors.drain(..).collect();
            out.removed_connectors = known
                .into_iter()
                .chain(removed_connectors.iter().cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
        }
        out.connectors.extend(connectors);
        out.planning.extend(planning);
        out.tasks.extend(tasks);
        out.generation = generation;
        out.cluster_id = cluster_id;
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::v1::{Assignment, ConnectorConfig, TaskAssignment};

    fn whole(generation: u64, connectors: &[(&str, bool, &[u32])]) -> Assignment {
        Assignment {
            generation,
            connectors: connectors
                .iter()
                .map(|(name, _, _)| ConnectorConfig {
                    name: name.to_string(),
                    config_version: generation,
                    ..Default::default()
                })
                .collect(),
            planning: connectors
                .iter()
                .filter(|(_, planning, _)| *planning)
                .map(|(name, _, _)| name.to_string())
                .collect(),
            tasks: connectors
                .iter()
                .flat_map(|(name, _, tasks)| {
                    tasks.iter().map(|t| TaskAssignment {
                        connector: name.to_string(),
                        task: *t,
                        ..Default::default()
                    })
                })
                .collect(),
            cluster_id: "k".into(),
            ..Default::default()
        }
    }

    fn delta(
        base: u64,
        generation: u64,
        set: &[(&str, bool, &[u32])],
        removed: &[&str],
    ) -> Assignment {
        Assignment {
            delta: true,
            base_generation: base,
            removed_connectors: removed.iter().map(|r| r.to_string()).collect(),
            ..whole(generation, set)
        }
    }

    /// Connectors with their config versions, planning instances, tasks.
    type Content = (Vec<(String, u64)>, Vec<String>, Vec<(String, u32)>);

    /// The assignment's content, order aside.
    fn content(a: &Assignment) -> Content {
        let mut connectors: Vec<_> = a
            .connectors
            .iter()
            .map(|c| (c.name.clone(), c.config_version))
            .collect();
        let mut planning = a.planning.clone();
        let mut tasks: Vec<_> = a
            .tasks
            .iter()
            .map(|t| (t.connector.clone(), t.task))
            .collect();
        connectors.sort();
        planning.sort();
        tasks.sort();
        (connectors, planning, tasks)
    }

    #[test]
    fn a_delta_replaces_and_removes_whole_connectors() {
        let held = whole(1, &[("a", true, &[0, 1]), ("b", false, &[2])]);
        let next = held.then(delta(1, 2, &[("a", false, &[1])], &["b"]));
        assert!(!next.delta);
        assert_eq!(next.generation, 2);
        assert_eq!(content(&next), content(&whole(2, &[("a", false, &[1])])));
    }

    #[test]
    fn two_unread_deltas_combine_into_one_that_does_both() {
        let held = whole(
            1,
            &[("a", true, &[0]), ("b", true, &[0]), ("c", false, &[0])],
        );
        let first = delta(1, 2, &[("d", true, &[0])], &["a", "b"]);
        let second = delta(2, 3, &[("a", false, &[3]), ("e", true, &[])], &["d", "c"]);
        let stepwise = held.clone().then(first.clone()).then(second.clone());
        let combined = first.then(second);
        assert!(combined.delta);
        assert_eq!(combined.base_generation, 1);
        assert_eq!(combined.generation, 3);
        let at_once = held.then(combined);
        assert_eq!(content(&at_once), content(&stepwise));
        assert_eq!(
            content(&at_once),
            content(&whole(3, &[("a", false, &[3]), ("e", true, &[])]))
        );
    }

    #[test]
    fn a_whole_assignment_replaces_whatever_is_held() {
        let held = delta(1, 2, &[("a", true, &[0])], &["b"]);
        let next = whole(3, &[("c", false, &[1])]);
        assert_eq!(held.then(next.clone()), next);
    }
}
