//! `sluice cluster ...`: the cluster's identity and its workers.

use clap::Subcommand;
use sluice_proto::api::v1::{self as api, cluster_service_client::ClusterServiceClient};

use super::{channel, print_json, table, AsyncCommand, Format, Target};

#[derive(Subcommand)]
pub enum Cluster {
    /// Cluster id, version and generation.
    Info,
    /// Workers with what each runs.
    Workers,
    /// Drains a worker for a rolling restart: its connectors and tasks move to the other
    /// workers (each stopped and committed before it starts elsewhere, so nothing is replayed),
    /// then the worker exits. Waits for that unless --no-wait.
    Drain {
        /// The worker's id.
        worker: String,
        /// Return once the drain began.
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait for the worker to exit.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

impl AsyncCommand for Cluster {
    async fn run(self, target: &Target) -> anyhow::Result<()> {
        let mut client = ClusterServiceClient::new(channel(target).await?);
        let json = target.output == Format::Json;
        match self {
            Cluster::Info => {
                let info = client
                    .get_cluster_info(api::GetClusterInfoRequest {})
                    .await?
                    .into_inner();
                if json {
                    return print_json("sluice.api.v1.ClusterInfo", &info);
                }
                println!(
                    "cluster {} (sluice {}), generation {}",
                    info.cluster_id, info.version, info.generation
                );
            }
            Cluster::Workers => {
                let list = client
                    .list_workers(api::ListWorkersRequest {})
                    .await?
                    .into_inner();
                if json {
                    return print_json("sluice.api.v1.ListWorkersResponse", &list);
                }
                table(
                    &["WORKER", "ALIVE", "LAST SEEN", "CONNECTORS", "TASKS"],
                    list.workers
                        .iter()
                        .map(|w| {
                            vec![
                                w.id.clone(),
                                w.alive.to_string(),
                                format!("{} ms ago", w.last_seen_ms),
                                w.connectors.join(","),
                                w.tasks.len().to_string(),
                            ]
                        })
                        .collect(),
                );
            }
            Cluster::Drain {
                worker,
                no_wait,
                timeout,
            } => {
                let started = client
                    .drain_worker(api::DrainWorkerRequest { id: worker.clone() })
                    .await?
                    .into_inner()
                    .worker
                    .unwrap_or_default();
                let units = |w: &api::WorkerDescription| w.connectors.len() + w.tasks.len();
                println!("draining {worker}: {} units to move", units(&started));
                if no_wait {
                    return Ok(());
                }
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
                let mut left = units(&started);
                loop {
                    let list = client
                        .list_workers(api::ListWorkersRequest {})
                        .await?
                        .into_inner();
                    match list.workers.iter().find(|w| w.id == worker) {
                        Some(w) if w.alive && w.draining => {
                            if units(w) != left {
                                left = units(w);
                                println!("{worker}: {left} units left");
                            }
                        }
                        Some(w) if w.alive => {
                            anyhow::bail!("{worker} joined again before it exited: the drain ended")
                        }
                        _ => {
                            println!("{worker} drained: its units moved to other workers, and it has exited");
                            return Ok(());
                        }
                    }
                    if std::time::Instant::now() > deadline {
                        anyhow::bail!("{worker} did not finish draining within {timeout} s");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
            }
        }
        Ok(())
    }
}
