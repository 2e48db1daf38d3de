//! The controller's Prometheus metrics, read from the cluster's state at each scrape: Kafka
//! Connect's connector and task counts (`connector-count`, `task-count`, and per connector
//! `connector-running-task-count` and the other states as `sluice_connector_task_count` with a
//! `state` label), workers, the assignment generation, and the calls the API refused.

use std::sync::{Arc, LazyLock, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_proto::api::v1 as api;

use crate::cluster::Cluster;
use crate::views;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectorState {
    connector: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Alive {
    alive: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Refusal {
    pub reason: String,
}

/// Calls refused by [`crate::auth`], by reason (`unauthenticated`, `permission_denied`).
pub static DENIED: LazyLock<Family<Refusal, Counter>> = LazyLock::new(Family::default);

/// The cluster this process's controller runs (one per process).
static CLUSTER: OnceLock<Arc<Cluster>> = OnceLock::new();

pub(crate) fn serving(cluster: Arc<Cluster>) {
    let _ = CLUSTER.set(cluster);
    // Listed from the start, at 0.
    for reason in ["unauthenticated", "permission_denied"] {
        drop(DENIED.get_or_create(&Refusal {
            reason: reason.into(),
        }));
    }
}

fn state_label(state: i32) -> String {
    api::State::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("STATE_").to_lowercase())
        .unwrap_or_else(|_| "unknown".into())
}

/// The Prometheus text exposition of the controller's metrics (empty before it serves).
pub async fn render() -> String {
    let Some(cluster) = CLUSTER.get() else {
        return String::new();
    };
    let mut registry = Registry::with_prefix("sluice");
    let connectors: Gauge = Gauge::default();
    let tasks: Gauge = Gauge::default();
    let generation: Gauge = Gauge::default();
    let workers: Family<Alive, Gauge> = Family::default();
    let task_states: Family<ConnectorState, Gauge> = Family::default();
    let connector_states: Family<ConnectorState, Gauge> = Family::default();
    cluster
        .read(|state| {
            connectors.set(state.desired.connectors.len() as i64);
            generation.set(state.desired.generation.0 as i64);
            for description in views::workers(state) {
                workers
                    .get_or_create(&Alive {
                        alive: description.alive.to_string(),
                    })
                    .inc();
            }
            let mut total = 0;
            for (name, record) in state.desired.connectors.iter() {
                let status = views::status(state, name.as_str(), record);
                if let Some(c) = &status.connector {
                    connector_states
                        .get_or_create(&ConnectorState {
                            connector: name.to_string(),
                            state: state_label(c.state),
                        })
                        .set(1);
                }
                for task in &status.tasks {
                    total += 1;
                    task_states
                        .get_or_create(&ConnectorState {
                            connector: name.to_string(),
                            state: state_label(task.state),
                        })
                        .inc();
                }
            }
            tasks.set(total);
        })
        .await;
    registry.register(
        "connector_count",
        "Connectors in the cluster (connector-count)",
        connectors,
    );
    registry.register(
        "task_count",
        "Tasks of the cluster's connectors (task-count)",
        tasks,
    );
    registry.register(
        "connector_task_count",
        "Tasks of a connector by state (connector-running-task-count, -failed-, -paused-, ...)",
        task_states,
    );
    registry.register(
        "connector_state",
        "1 for the state a connector is in",
        connector_states,
    );
    registry.register("workers", "Workers known, by liveness", workers);
    registry.register(
        "assignment_generation",
        "The generation of the latest placement (rises with every rebalance)",
        generation,
    );
    registry.register(
        "api_denied_calls",
        "API calls refused for want of a token, certificate or role",
        DENIED.clone(),
    );
    let mut text = String::new();
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}
