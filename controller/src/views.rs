//! How the state looks from the public API: connector infos and statuses, task statuses,
//! configs with their secrets hidden, workers. Pure functions of a `State`.

use std::collections::{BTreeMap, HashMap};

use sluice_model::UnitKey;
use sluice_proto::api::v1 as api;

use crate::error::ApiError;
use crate::state::State;
use crate::store::{ConnectorRecord, TargetState};

/// What a secret value reads as.
const HIDDEN: &str = "[hidden]";

/// The config as users may see it: values of PASSWORD keys (as the plugin declares them)
/// hidden, and of keys named like a password or a secret too — the plugin's definitions are
/// unknown while no worker that has it is joined, and a secret must stay hidden then as well.
pub fn masked(state: &State, config: &BTreeMap<String, String>) -> HashMap<String, String> {
    let class = config
        .get("connector.class")
        .map(String::as_str)
        .unwrap_or_default();
    let secrets: Vec<&str> = state
        .plugin(class)
        .map(|p| {
            p.configs
                .iter()
                .filter(|k| k.r#type == "PASSWORD")
                .map(|k| k.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    config
        .iter()
        .map(|(k, v)| {
            let secret =
                secrets.contains(&k.as_str()) || k.contains("password") || k.contains("secret");
            let shown = if secret {
                HIDDEN.to_string()
            } else {
                v.clone()
            };
            (k.clone(), shown)
        })
        .collect()
}

/// The connector's type: as its planning found it, else as a joined worker's plugin of its
/// class declares it (so a connector just created has its type too).
pub fn kind_of(state: &State, record: &ConnectorRecord) -> api::ConnectorType {
    match record.kind.as_deref() {
        Some("sink") => api::ConnectorType::Sink,
        Some("source") => api::ConnectorType::Source,
        _ => record
            .config
            .get("connector.class")
            .and_then(|class| state.plugin(class))
            .and_then(|p| api::ConnectorType::try_from(p.r#type).ok())
            .unwrap_or(api::ConnectorType::Unspecified),
    }
}

pub fn info(state: &State, name: &str, record: &ConnectorRecord) -> api::ConnectorInfo {
    api::ConnectorInfo {
        name: name.to_string(),
        config: masked(state, &record.config),
        tasks: (0..record.tasks.len() as u32).collect(),
        r#type: kind_of(state, record) as i32,
    }
}

/// One task's status; NOT_FOUND for a task the connector does not have.
pub fn task_status(state: &State, name: &str, task: u32) -> Result<api::TaskStatus, ApiError> {
    if task as usize >= state.connector(name)?.tasks.len() {
        return Err(ApiError::TaskNotFound(name.to_string(), task));
    }
    Ok(task_state(state, name, task))
}

fn task_state(state: &State, name: &str, task: u32) -> api::TaskStatus {
    let (unit_state, worker_id, trace) = unit_state(state, &UnitKey::task(name, task));
    api::TaskStatus {
        id: task,
        state: unit_state as i32,
        worker_id,
        trace,
    }
}

/// A unit's state as its current owner reported it; UNASSIGNED until the owner reports.
fn unit_state(state: &State, unit: &UnitKey) -> (api::State, String, String) {
    let owner = state.desired.placement.get(unit);
    match (owner, state.observed.statuses.get(unit)) {
        (Some(w), Some(s)) if &s.worker_id == w => {
            (s.state.to_wire(), s.worker_id.to_string(), s.trace.clone())
        }
        (Some(w), _) => (api::State::Unassigned, w.to_string(), String::new()),
        (None, _) => (api::State::Unassigned, String::new(), String::new()),
    }
}

pub fn status(state: &State, name: &str, record: &ConnectorRecord) -> api::ConnectorStatus {
    let (mut connector_state, worker_id, trace) = unit_state(state, &UnitKey::planning(name));
    let stopped = record.target_state == TargetState::Stopped;
    if stopped {
        connector_state = api::State::Stopped;
    }
    let tasks = if stopped {
        Vec::new()
    } else {
        (0..record.tasks.len() as u32)
            .map(|t| task_state(state, name, t))
            .collect()
    };
    api::ConnectorStatus {
        name: name.to_string(),
        connector: Some(api::ConnectorState {
            state: connector_state as i32,
            worker_id,
            trace,
        }),
        tasks,
        r#type: kind_of(state, record) as i32,
        target_state: record.target_state.to_wire() as i32,
    }
}

/// Every worker, with what it runs.
pub fn workers(state: &State) -> Vec<api::WorkerDescription> {
    let placement = &state.desired.placement;
    state
        .observed
        .workers
        .iter()
        .map(|(id, w)| api::WorkerDescription {
            id: id.to_string(),
            alive: w.stream.is_some(),
            last_seen_ms: w.last_seen.elapsed().as_millis() as u64,
            connectors: placement
                .iter()
                .filter(|(u, o)| *o == id && u.task.is_none())
                .map(|(u, _)| u.connector.to_string())
                .collect(),
            tasks: placement
                .iter()
                .filter(|(_, o)| *o == id)
                .filter_map(|(u, _)| {
                    u.wire_task().map(|task| api::TaskRef {
                        connector: u.connector.to_string(),
                        task,
                    })
                })
                .collect(),
            plugins: w.plugins.iter().map(|p| p.class_name.clone()).collect(),
            draining: w.draining,
        })
        .collect()
}
