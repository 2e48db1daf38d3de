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
        }
        Ok(())
    }
}
