//! The Sluice controller: persists connector configs, task configs, target states, statuses
//! and the worker registry in sled; serves the public gRPC API (with server reflection and
//! health) and the worker protocol, and Kafka Connect's REST API beside it (`rest.rs`);
//! assigns work to workers.

pub mod cluster;
mod connectors;
pub mod dry_run;
pub mod error;
mod journal;
mod plugins;
pub mod reconcile;
mod requests;
pub mod rest;
pub mod scheduler;
pub mod service;
pub mod state;
pub mod store;
mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_proto::api::v1::{
    cluster_service_server::ClusterServiceServer, connector_service_server::ConnectorServiceServer,
    plugin_service_server::PluginServiceServer,
};
use sluice_proto::cluster::v1::worker_control_server::WorkerControlServer;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::cluster::Cluster;
use crate::service::Api;
use crate::store::Store;

/// Services this server answers, as reflection lists them.
const SERVED: &[&str] = &[
    "sluice.api.v1.ConnectorService",
    "sluice.api.v1.PluginService",
    "sluice.api.v1.ClusterService",
    "sluice.cluster.v1.WorkerControl",
    "grpc.health.v1.Health",
];

/// Applies logger levels (logger → level, "root" for the default) to this process's logging.
pub type LogControl =
    Arc<dyn Fn(&std::collections::BTreeMap<String, String>) -> Result<(), String> + Send + Sync>;

/// Process settings of a controller.
#[derive(Clone)]
pub struct ControllerOptions {
    pub listen: SocketAddr,
    /// Where Kafka Connect's REST API listens; `None`: not served.
    pub rest_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// How long a worker may be silent before its work moves to others.
    pub worker_timeout: Duration,
    /// Changes this process's log levels; `None` when logging cannot be changed at run time.
    pub log_control: Option<LogControl>,
    /// The levels logging started with (e.g. `{"root": "info"}`).
    pub initial_levels: std::collections::BTreeMap<String, String>,
}

/// How long open connections get to close after a stop.
const CONNECTIONS_DRAIN: Duration = Duration::from_secs(2);

/// Runs the controller until `shutdown`. Prints `listening on ADDR` once it accepts calls.
pub async fn run(options: ControllerOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("create data directory {}", options.data_dir.display()))?;
    let store = tokio::task::spawn_blocking({
        let dir = options.data_dir.clone();
        move || Store::open(&dir)
    })
    .await?
    .with_context(|| format!("open controller store in {}", options.data_dir.display()))?;
    let cluster =
        Arc::new(Cluster::open(store, options.worker_timeout).map_err(|e| anyhow::anyhow!("{e}"))?);
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listen on {}", options.listen))?;
    let address = listener.local_addr()?;

    // Both reflection versions: grpcurl before 1.9 and many clients still ask v1alpha. Only
    // the services served here are listed (the descriptor set also holds the connector protocol).
    let reflection = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for service in SERVED {
            builder = builder.with_service_name(*service);
        }
        builder
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("build reflection service")?;
    let reflection_alpha = reflection()
        .build_v1alpha()
        .context("build reflection service")?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ConnectorServiceServer<Api>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let api = Api {
        cluster: cluster.clone(),
        log_control: options.log_control.clone(),
        levels: Arc::new(std::sync::Mutex::new(options.initial_levels.clone())),
        stopping: shutdown.clone(),
    };
    let reconciler = tokio::spawn({
        let cluster = cluster.clone();
        let shutdown = shutdown.clone();
        async move { cluster.run(shutdown).await }
    });
    let rest = match options.rest_listen {
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("listen on {at} (--rest-listen)"))?;
            let rest_address = listener.local_addr()?;
            let app = rest::router(api.clone());
            let stop = shutdown.clone();
            println!("rest api listening on {rest_address}");
            tracing::info!(%rest_address, "Kafka Connect REST API ready");
            Some(tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }))
        }
        None => None,
    };
    println!("listening on {address}");
    tracing::info!(%address, cluster_id = %cluster.cluster_id, "controller ready");
    let serve = tonic::transport::Server::builder()
        .add_service(reflection_v1)
        .add_service(reflection_alpha)
        .add_service(health)
        .add_service(ConnectorServiceServer::new(api.clone()))
        .add_service(PluginServiceServer::new(api.clone()))
        .add_service(ClusterServiceServer::new(api.clone()))
        .add_service(WorkerControlServer::new(api))
        .serve_with_incoming_shutdown(
            // Nagle off, as tonic does for a listener it binds itself: an assignment or an
            // answer written just after another would wait for the peer's delayed ACK (40 ms).
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.clone().cancelled_owned(),
        );
    // A graceful stop waits for every connection to close, and an idle client that never
    // answers the server's GOAWAY would hold it for ever: past CONNECTIONS_DRAIN they are cut.
    let drain = async {
        shutdown.cancelled().await;
        tokio::time::sleep(CONNECTIONS_DRAIN).await;
    };
    tokio::select! {
        served = serve => served.context("serve gRPC")?,
        _ = drain => tracing::warn!("connections still open {CONNECTIONS_DRAIN:?} after the stop; closing them"),
    }
    shutdown.cancel();
    if let Some(rest) = rest {
        // Open REST connections are cut like the gRPC ones.
        let _ = tokio::time::timeout(CONNECTIONS_DRAIN, rest).await;
    }
    let _ = reconciler.await;
    cluster.close().await?;
    tracing::info!("stopped");
    Ok(())
}
