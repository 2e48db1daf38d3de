//! Standalone mode's controller, in process: it holds the connectors given on the command
//! line, takes the task configs their planning instances submit, and publishes the complete
//! assignment (every unit on this one worker) to the same supervisor a distributed worker
//! runs. A re-plan that changes task configs publishes a new assignment, and only the tasks
//! whose configs changed restart, as with a controller.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sluice_proto::api::v1 as api;
use sluice_proto::cluster::v1 as wire;
use tokio::sync::watch;

use super::supervisor::Assignments;

/// The connectors of a standalone worker and their planned tasks.
pub struct LocalPlanner {
    state: Mutex<Local>,
    assignments: watch::Sender<Option<(u64, wire::Assignment)>>,
}

struct Local {
    generation: u64,
    /// By name: the connector's config and its task configs (empty until planned).
    /// Each connector's config, its task configs and the trace context of their planning.
    connectors: BTreeMap<String, (wire::ConnectorConfig, Vec<wire::TaskConfig>, Trace)>,
}

type Trace = std::collections::HashMap<String, String>;

impl LocalPlanner {
    /// Starts with every connector's planning instance assigned (running) and no tasks yet.
    pub fn new(connectors: Vec<(String, BTreeMap<String, String>)>) -> (LocalPlanner, Assignments) {
        let connectors = connectors
            .into_iter()
            .map(|(name, config)| {
                let config = wire::ConnectorConfig {
                    name: name.clone(),
                    config: config.into_iter().collect(),
                    config_version: 1,
                    target_state: api::TargetState::Running as i32,
                    restart_epoch: 0,
                    trace_context: Default::default(),
                };
                (name, (config, Vec::new(), Trace::new()))
            })
            .collect();
        let (assignments, receiver) = watch::channel(None);
        let planner = LocalPlanner {
            state: Mutex::new(Local {
                generation: 0,
                connectors,
            }),
            assignments,
        };
        planner.publish(&mut planner.lock());
        (planner, receiver)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the task configs a planning instance submitted; a change publishes a new
    /// assignment. False for an unknown connector or an old config version.
    pub fn submit(&self, request: wire::SubmitTaskConfigsRequest) -> bool {
        let mut state = self.lock();
        let Some((config, tasks, trace)) = state.connectors.get_mut(&request.connector) else {
            return false;
        };
        if config.config_version != request.config_version {
            return false;
        }
        if *tasks != request.tasks {
            let count = request.tasks.len();
            if tasks.is_empty() {
                tracing::info!(connector = %request.connector, tasks = count, "task configs planned");
            } else {
                tracing::info!(connector = %request.connector, tasks = count, "task configs changed: restarting the tasks whose configs changed");
            }
            *tasks = request.tasks;
            // The tasks start as part of the planning's trace.
            *trace = sluice_telemetry::current();
            self.publish(&mut state);
        }
        true
    }

    fn publish(&self, state: &mut Local) {
        state.generation += 1;
        let mut assignment = wire::Assignment {
            generation: state.generation,
            ..Default::default()
        };
        for (name, (config, tasks, trace)) in &state.connectors {
            assignment.connectors.push(config.clone());
            assignment.planning.push(name.clone());
            for (id, task) in tasks.iter().enumerate() {
                assignment.tasks.push(wire::TaskAssignment {
                    connector: name.clone(),
                    task: id as u32,
                    config: task.config.clone(),
                    restart_epoch: 0,
                    trace_context: trace.clone(),
                });
            }
        }
        // No lease in standalone mode (no exactly-once sources): join 0.
        self.assignments.send_replace(Some((0, assignment)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(n: usize, value: &str) -> Vec<wire::TaskConfig> {
        (0..n)
            .map(|i| wire::TaskConfig {
                config: [("k".to_string(), format!("{value}{i}"))].into(),
            })
            .collect()
    }

    #[test]
    fn plans_become_assignments_and_only_changes_publish() {
        let (planner, mut rx) = LocalPlanner::new(vec![("c".into(), BTreeMap::new())]);
        let first = rx.borrow_and_update().clone().unwrap().1;
        assert_eq!(first.planning, ["c"]);
        assert!(first.tasks.is_empty());
        let submit = |version, tasks| wire::SubmitTaskConfigsRequest {
            connector: "c".into(),
            config_version: version,
            tasks,
            ..Default::default()
        };
        assert!(planner.submit(submit(1, tasks(2, "a"))));
        let planned = rx.borrow_and_update().clone().unwrap().1;
        assert_eq!(planned.tasks.len(), 2);
        assert_eq!(planned.generation, 2);
        assert!(planner.submit(submit(1, tasks(2, "a"))));
        assert!(
            !rx.has_changed().unwrap(),
            "the same plan publishes nothing"
        );
        assert!(
            !planner.submit(submit(7, tasks(1, "b"))),
            "an old version is refused"
        );
        assert!(!planner.submit(wire::SubmitTaskConfigsRequest {
            connector: "nope".into(),
            ..submit(1, Vec::new())
        }));
    }
}
