//! The Sluice controller: persists connector configs, task configs, target states, statuses
//! and the worker registry in sled; serves the public gRPC API (with server reflection and
//! health) and the worker protocol, and Kafka Connect's REST API beside it (`rest.rs`);
//! assigns work to workers.

pub mod auth;
pub mod cluster;
mod connectors;
pub mod dry_run;
pub mod error;
mod journal;
pub mod metrics;
mod plugins;
pub mod reconcile;
mod requests;
pub mod rest;
pub mod scheduler;
pub mod service;
pub mod state;
pub mod store;
pub mod tls;
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

use crate::auth::{GrpcGuard, Guard, Tokens};
use crate::cluster::Cluster;
use crate::service::Api;
use crate::store::Store;
use crate::tls::{Peer, ServerTls, TlsListener};

/// Calls too frequent or too plain to be worth a span: workers' heartbeats and status
/// reports, health checks and reflection.
pub(crate) fn untraced(path: &str) -> bool {
    path.starts_with("/grpc.")
        || path == "/sluice.cluster.v1.WorkerControl/Heartbeat"
        || path == "/sluice.cluster.v1.WorkerControl/ReportStatus"
}

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
    /// TLS on both listeners; `None`: plain TCP.
    pub tls: Option<ServerTls>,
    /// The token file ([`auth::Tokens`]); `None`: calls need no token.
    pub tokens: Option<PathBuf>,
    /// Serve a non-loopback address without TLS or tokens.
    pub insecure: bool,
    /// Where the gRPC health service alone is served, in plain text (probes that cannot do
    /// TLS or tokens, such as Kubernetes' gRPC probes); none unless given.
    pub health_listen: Option<SocketAddr>,
}

/// Refuses to serve a listener other hosts can reach unless calls to it are encrypted and
/// authenticated, or `--insecure` says so.
fn check_exposure(options: &ControllerOptions, authenticated: bool) -> anyhow::Result<()> {
    let listeners = [
        ("--listen", Some(options.listen)),
        ("--rest-listen", options.rest_listen),
    ];
    for (flag, at) in listeners {
        let Some(at) = at.filter(|a| !a.ip().is_loopback()) else {
            continue;
        };
        let missing = match (options.tls.is_some(), authenticated) {
            (true, true) => continue,
            (false, false) => "TLS (--tls-cert, --tls-key) and tokens (--tokens)",
            (false, true) => "TLS (--tls-cert, --tls-key)",
            (true, false) => "tokens (--tokens)",
        };
        if options.insecure {
            tracing::warn!(listener = flag, address = %at, "serving a non-loopback address without {missing} (--insecure)");
            continue;
        }
        anyhow::bail!(
            "{flag} {at} is reachable from other hosts and would be served without {missing}; \
             give them, or --insecure to serve it so anyway"
        );
    }
    Ok(())
}

/// How long open connections get to close after a stop.
const CONNECTIONS_DRAIN: Duration = Duration::from_secs(2);

/// Runs the controller until `shutdown`. Prints `listening on ADDR` once it accepts calls.
pub async fn run(options: ControllerOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let tokens = options.tokens.as_deref().map(Tokens::load).transpose()?;
    check_exposure(&options, tokens.is_some())?;
    let grpc_tls = options.tls.as_ref().map(ServerTls::grpc).transpose()?;
    let rest_tls = match (&options.tls, options.rest_listen) {
        (Some(tls), Some(_)) => Some(tls.rest_acceptor()?),
        _ => None,
    };
    let worker_certificates = options.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let guard = Arc::new(Guard::new(tokens, worker_certificates));
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
    metrics::serving(cluster.clone());
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
    if let Some(at) = options.health_listen {
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("listen on {at} (--health-listen)"))?;
        tracing::info!(address = %listener.local_addr()?, "health service ready");
        let stop = shutdown.clone().cancelled_owned();
        let health = health.clone();
        // Reflection of the health service alone, for grpcurl (which asks v1alpha).
        let described = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health")
        };
        let (described_v1, described_alpha) = (
            described().build_v1().context("build reflection service")?,
            described()
                .build_v1alpha()
                .context("build reflection service")?,
        );
        tokio::spawn(async move {
            // Health only: nothing here reads or changes anything.
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(described_v1)
                .add_service(described_alpha)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), stop)
                .await
        });
    }
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
            let app = rest::router(api.clone(), guard.clone())
                .into_make_service_with_connect_info::<Peer>();
            let stop = shutdown.clone().cancelled_owned();
            println!("rest api listening on {rest_address}");
            tracing::info!(%rest_address, tls = rest_tls.is_some(), "Kafka Connect REST API ready");
            Some(match rest_tls {
                Some(acceptor) => {
                    let listener = TlsListener::new(listener, acceptor)?;
                    tokio::spawn(async move {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(stop)
                            .await
                    })
                }
                None => tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stop)
                        .await
                }),
            })
        }
        None => None,
    };
    println!("listening on {address}");
    tracing::info!(
        %address,
        cluster_id = %cluster.cluster_id,
        tls = grpc_tls.is_some(),
        worker_certificates,
        "controller ready"
    );
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = grpc_tls {
        server = server.tls_config(tls).context("TLS of --listen")?;
    }
    let serve = server
        .layer(sluice_telemetry::ServerSpans::new(untraced))
        .layer(GrpcGuard(guard))
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
