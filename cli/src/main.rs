//! The `sluice` binary: parses arguments and calls into the worker or a built-in connector.

mod client;
mod dev_certs;
mod dev_registry;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluice_worker::host::plugins::PluginEntry;
use sluice_worker::host::process::PluginCommand;
use sluice_worker::mode::standalone::{self, ConfigErrors, StandaloneOptions};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Moves data between external systems and Apache Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text, or as one JSON object each (level, target, fields, spans).
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Export traces to this OpenTelemetry collector (OTLP over gRPC, e.g.
    /// http://127.0.0.1:4317); a worker passes it on to its connector processes.
    #[arg(long, global = true, env = "SLUICE_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// How a long-running command stops.
#[derive(clap::Args)]
struct StopArgs {
    /// Seconds a graceful stop (SIGTERM, Ctrl-C) may take before the process gives up on it
    /// and exits non-zero.
    #[arg(long, default_value_t = sluice_worker::stop::DEFAULT_SHUTDOWN_TIMEOUT.as_secs_f64())]
    shutdown_timeout: f64,
}

impl StopArgs {
    fn limit(&self) -> anyhow::Result<Duration> {
        Duration::try_from_secs_f64(self.shutdown_timeout)
            .context("--shutdown-timeout must be a non-negative number of seconds")
    }
}

#[derive(Subcommand)]
enum Command {
    /// Runs connectors from files, like connect-standalone.
    Standalone {
        /// Worker configuration (.properties).
        worker: PathBuf,
        /// Connector configurations (.properties, or .json in the REST API's shape).
        #[arg(required = true)]
        connectors: Vec<PathBuf>,
        /// Seconds between progress lines; 0 for none.
        #[arg(long, default_value_t = 5.0)]
        progress_interval: f64,
        /// Where Prometheus metrics are served (`/metrics`); none unless given.
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
        #[command(flatten)]
        stop: StopArgs,
    },
    /// Runs an embedded Kafka (librdkafka's mock cluster) in this process until stopped, and
    /// prints `bootstrap.servers=HOST:PORT` on standard output.
    DevKafka {
        #[arg(long, default_value_t = 1)]
        brokers: i32,
        /// Topics to create first, as NAME or NAME:PARTITIONS (default 1 partition).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Partitions of a topic created on first use (Kafka's num.partitions).
        #[arg(long, default_value_t = sluice_worker::kafka::embedded::DEFAULT_PARTITIONS)]
        default_partitions: i32,
        /// An address of this host the brokers are reached at from other hosts (they listen
        /// on loopback; each gets a forwarder on this address, same port, and advertises it).
        #[arg(long)]
        advertise: Option<std::net::IpAddr>,
    },
    /// Runs an in-memory Confluent Schema Registry (Avro) until stopped, and prints
    /// `schema.registry.url=http://HOST:PORT` on standard output.
    DevRegistry {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
    },
    /// Runs the controller of a distributed cluster: configs in sled, the gRPC API, assignment.
    Controller {
        /// Address the gRPC API and the worker protocol listen on.
        #[arg(long, default_value = "127.0.0.1:9083")]
        listen: std::net::SocketAddr,
        /// Address Kafka Connect's REST API listens on (Kafka Connect's own port by default,
        /// so its tools work unchanged); `off` to serve none.
        #[arg(long, default_value = "127.0.0.1:8083")]
        rest_listen: String,
        /// Directory of the controller's store.
        #[arg(long)]
        data_dir: PathBuf,
        /// Seconds a worker may be silent before its work moves to other workers.
        #[arg(long, default_value_t = 5.0)]
        worker_timeout: f64,
        /// PEM file of the certificate both listeners present (TLS on both; with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM file of its private key.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// PEM file of the CA whose certificates workers must present (mTLS): the worker
        /// protocol then takes no worker without one.
        #[arg(long, requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
        /// Token file, one `NAME ROLE TOKEN` a line (roles admin, viewer, worker): every call
        /// but health checks and reflection then needs a bearer token of a role allowed it.
        #[arg(long)]
        tokens: Option<PathBuf>,
        /// Serve a non-loopback address without TLS or tokens (refused otherwise).
        #[arg(long)]
        insecure: bool,
        /// Where Prometheus metrics are served (`/metrics`); none unless given.
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Where the gRPC health service alone is served, without TLS or tokens (for probes
        /// such as Kubernetes' gRPC probes); none unless given.
        #[arg(long)]
        health_listen: Option<std::net::SocketAddr>,
        #[command(flatten)]
        stop: StopArgs,
    },
    /// Runs a worker of a distributed cluster: joins the controller and runs what it assigns.
    Worker {
        /// The controller's URL.
        #[arg(long, default_value = "http://127.0.0.1:9083")]
        controller: String,
        /// Kafka's bootstrap servers (overrides bootstrap.servers of the worker file).
        #[arg(long)]
        kafka: Option<String>,
        /// This worker's id, unique in the cluster and stable across its restarts.
        #[arg(long)]
        id: Option<String>,
        /// PEM file of the CA that signed the controller's certificate (for an https:// URL).
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// PEM files of this worker's client certificate and key (a controller with
        /// --tls-client-ca takes no worker without one).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// File holding the worker's bearer token (without it, SLUICE_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Where Prometheus metrics are served (`/metrics`); none unless given.
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Tasks this worker takes at most; 0 for no limit.
        #[arg(long, default_value_t = 0)]
        capacity: u32,
        /// Worker configuration (.properties, Kafka Connect's keys): converters, plugin.path,
        /// offset.storage.topic, producer./consumer. overrides.
        worker: Option<PathBuf>,
        #[command(flatten)]
        stop: StopArgs,
    },
    /// Writes a CA, the controller's and a worker's certificates, and a token file with a token
    /// per role into DIR: what a local cluster needs to run with TLS, mTLS and tokens.
    DevCerts {
        dir: PathBuf,
        /// More names or addresses the controller is reached by (localhost, 127.0.0.1 and ::1
        /// always are).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Replace files already there.
        #[arg(long)]
        force: bool,
    },
    /// Manages connectors through the controller's API.
    Connectors {
        #[command(flatten)]
        target: client::Target,
        #[command(subcommand)]
        command: client::Connectors,
    },
    /// Lists connector plugins and their configs; validates configs.
    Plugins {
        #[command(flatten)]
        target: client::Target,
        #[command(subcommand)]
        command: client::Plugins,
    },
    /// Cluster information and workers.
    Cluster {
        #[command(flatten)]
        target: client::Target,
        #[command(subcommand)]
        command: client::Cluster,
    },
    /// Makes the cluster's connectors what connector files say (a file, or every .json and
    /// .properties file of a folder): prints the plan (create, update with the keys that
    /// change, delete with --prune, unchanged; secrets hidden), applies it and checks the
    /// cluster matches. A second run is a no-op.
    Apply {
        #[command(flatten)]
        target: client::Target,
        #[command(flatten)]
        command: client::ApplyCommand,
    },
    /// The plan `sluice apply` would carry out, alone.
    Diff {
        #[command(flatten)]
        target: client::Target,
        #[command(flatten)]
        command: client::DiffCommand,
    },
    /// Serves a built-in connector plugin over the connector protocol (started by workers).
    #[command(hide = true)]
    Connector { plugin: String },
}

type PluginFn = fn() -> sluice_connector_sdk::Plugin;

/// The connector plugins built into this executable, by the name `sluice connector NAME` serves.
const BUILTINS: &[(&str, PluginFn)] = &[
    ("file", sluice_connector_file::plugin),
    ("datagen", sluice_connector_datagen::plugin),
    ("jdbc", sluice_connector_jdbc::plugin),
    ("postgres-cdc", sluice_connector_postgres_cdc::plugin),
    ("mysql-cdc", sluice_connector_mysql_cdc::plugin),
    ("redis", sluice_connector_redis::plugin),
    ("mqtt", sluice_connector_mqtt::plugin),
    ("rabbitmq", sluice_connector_rabbitmq::plugin),
    ("nats", sluice_connector_nats::plugin),
    ("s3", sluice_connector_s3::plugin),
    ("http", sluice_connector_http::plugin),
];

fn main() -> ExitCode {
    sluice_connector_sdk::tune_allocator();
    let cli = Cli::parse();
    if let Command::Connector { plugin } = &cli.command {
        let Some((_, plugin)) = BUILTINS.iter().find(|(name, _)| name == plugin) else {
            eprintln!("error: no built-in connector plugin named {plugin:?}");
            return ExitCode::from(2);
        };
        let plugin = plugin();
        sluice_connector_sdk::main(plugin);
    }
    if let Command::DevCerts { dir, hosts, force } = &cli.command {
        return match dev_certs::run(dir, hosts, *force) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Connectors { target, command } => {
            return runtime.block_on(client::main(target, command))
        }
        Command::Plugins { target, command } => {
            return runtime.block_on(client::main(target, command))
        }
        Command::Apply { target, command } => {
            return runtime.block_on(client::main(target, command))
        }
        Command::Diff { target, command } => {
            return runtime.block_on(client::main(target, command))
        }
        Command::Cluster { target, command } => {
            return runtime.block_on(client::main(target, command))
        }
        _ => {}
    }
    let service = match &cli.command {
        Command::Controller { .. } => "sluice-controller",
        Command::Worker { .. } => "sluice-worker",
        Command::Standalone { .. } => "sluice-standalone",
        _ => "sluice",
    };
    let (logging, exporter) = {
        // The exporter's connection runs on the runtime.
        let _runtime = runtime.enter();
        match init_logging(cli.log_format, cli.otlp_endpoint.as_deref(), service) {
            Ok(logging) => logging,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    };
    let result = runtime.block_on(run(cli.command, logging));
    // Sends the spans still waiting, on the runtime still running.
    drop(exporter);
    // Whatever still runs (a stop that timed out) is dropped, which kills its connector
    // processes; blocking threads (a producer flush) are not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<ConfigErrors>() => {
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logging to stderr as text or JSON lines, filtered by SLUICE_LOG (default `info`); returns
/// what changes the levels at run time (the API's SetLogLevel) and the levels it started with.
/// With `otlp`, spans also go to that OpenTelemetry collector, as `service`, until the
/// returned exporter is dropped.
fn init_logging(
    format: LogFormat,
    otlp: Option<&str>,
    service: &str,
) -> anyhow::Result<(Logging, Option<sluice_telemetry::Exporter>)> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::EnvFilter;
    let initial = std::env::var("SLUICE_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| "info".into());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(EnvFilter::new(&initial));
    let json = format == LogFormat::Json;
    let (traces, exporter) = match otlp {
        Some(endpoint) => {
            let (layer, exporter) = sluice_telemetry::otlp_layer(endpoint, service, [])?;
            (Some(layer), Some(exporter))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(traces)
        .with(filter)
        .with((!json).then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        }))
        .with(json.then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
        }))
        .init();
    let control: LogControl = Arc::new(move |levels: &BTreeMap<String, String>| {
        let mut directives = vec![levels.get("root").cloned().unwrap_or_else(|| "info".into())];
        directives.extend(
            levels
                .iter()
                .filter(|(logger, _)| *logger != "root")
                .map(|(logger, level)| format!("{logger}={level}")),
        );
        let filter = EnvFilter::try_new(directives.join(",")).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    });
    Ok(((control, [("root".to_string(), initial)].into()), exporter))
}

type LogControl = Arc<dyn Fn(&BTreeMap<String, String>) -> Result<(), String> + Send + Sync>;
/// What changes the log levels, and the levels logging started with.
type Logging = (LogControl, BTreeMap<String, String>);

async fn run(
    command: Command,
    (log_control, initial_levels): (LogControl, BTreeMap<String, String>),
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    match command {
        Command::Standalone {
            worker,
            connectors,
            progress_interval,
            metrics_listen,
            stop,
        } => {
            serve_worker_metrics(metrics_listen, &shutdown).await?;
            let options = StandaloneOptions {
                worker_file: worker,
                connector_files: connectors,
                builtin_plugins: builtin_plugins()?,
                progress_interval: (progress_interval > 0.0)
                    .then(|| Duration::from_secs_f64(progress_interval)),
                shutdown_timeout: stop.limit()?,
            };
            standalone::run(options, shutdown).await
        }
        Command::DevKafka {
            brokers,
            topics,
            default_partitions,
            advertise,
        } => {
            let topics = topics
                .iter()
                .map(|t| match t.split_once(':') {
                    Some((name, n)) => n
                        .parse()
                        .map(|n| (name.to_string(), n))
                        .with_context(|| format!("--topic {t}: partitions must be a number")),
                    None => Ok((t.clone(), 1)),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let kafka = sluice_worker::kafka::embedded::EmbeddedKafka::start_advertised(
                brokers,
                &topics,
                default_partitions,
                advertise,
            )?;
            println!("bootstrap.servers={}", kafka.bootstrap_servers());
            // Faults for tests, one per line on stdin (see Fault::parse).
            use tokio::io::AsyncBufReadExt as _;
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    line = lines.next_line() => match line {
                        Ok(Some(line)) if !line.trim().is_empty() => {
                            match sluice_worker::kafka::embedded::Fault::parse(&line) {
                                Ok(fault) => kafka.inject(fault),
                                Err(e) => eprintln!("error: {line:?}: {e}"),
                            }
                        }
                        Ok(Some(_)) => {}
                        // No more commands: serve until shutdown.
                        Ok(None) | Err(_) => {
                            shutdown.cancelled().await;
                            break;
                        }
                    },
                }
            }
            drop(kafka);
            Ok(())
        }
        Command::DevRegistry { listen } => dev_registry::run(listen, shutdown).await,
        Command::Controller {
            listen,
            rest_listen,
            data_dir,
            worker_timeout,
            tls_cert,
            tls_key,
            tls_client_ca,
            tokens,
            insecure,
            metrics_listen,
            health_listen,
            stop,
        } => {
            if let Some(at) = metrics_listen {
                sluice_worker::metrics::serve(
                    at,
                    sluice_controller::metrics::render,
                    shutdown.clone(),
                )
                .await?;
            }
            let rest_listen = match rest_listen.trim() {
                "off" | "" => None,
                at => Some(at.parse().with_context(|| {
                    format!("--rest-listen {at:?}: not an address such as 127.0.0.1:8083, nor off")
                })?),
            };
            let options = sluice_controller::ControllerOptions {
                listen,
                rest_listen,
                data_dir,
                worker_timeout: Duration::try_from_secs_f64(worker_timeout)
                    .context("--worker-timeout must be a non-negative number of seconds")?,
                log_control: Some(log_control),
                initial_levels,
                tls: tls_cert
                    .zip(tls_key)
                    .map(|(cert, key)| sluice_controller::tls::ServerTls {
                        cert,
                        key,
                        client_ca: tls_client_ca,
                    }),
                tokens,
                insecure,
                health_listen,
            };
            let limit = stop.limit()?;
            let work = sluice_controller::run(options, shutdown.clone());
            sluice_worker::stop::bounded(work, &shutdown, limit, None).await
        }
        Command::Worker {
            controller,
            kafka,
            id,
            tls_ca,
            tls_cert,
            tls_key,
            token_file,
            metrics_listen,
            capacity,
            worker,
            stop,
        } => {
            serve_worker_metrics(metrics_listen, &shutdown).await?;
            let worker_id = match id {
                Some(id) => id,
                None => default_worker_id(),
            };
            let options = sluice_worker::mode::distributed::WorkerOptions {
                controller,
                worker_id,
                worker_file: worker,
                kafka,
                capacity,
                builtin_plugins: builtin_plugins()?,
                log_control: Some(log_control),
                initial_levels,
                shutdown_timeout: stop.limit()?,
                security: sluice_worker::link::LinkSecurity {
                    ca: tls_ca,
                    cert: tls_cert,
                    key: tls_key,
                    token: sluice_worker::link::LinkSecurity::read_token(token_file.as_deref())?,
                },
            };
            sluice_worker::mode::distributed::run(options, shutdown).await
        }
        Command::Connector { .. }
        | Command::DevCerts { .. }
        | Command::Connectors { .. }
        | Command::Plugins { .. }
        | Command::Cluster { .. }
        | Command::Apply { .. }
        | Command::Diff { .. } => unreachable!("handled before"),
    }
}

/// Serves this worker's metrics on `at`, if given.
async fn serve_worker_metrics(
    at: Option<std::net::SocketAddr>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    if let Some(at) = at {
        let render = || async { sluice_worker::metrics::worker().render() };
        sluice_worker::metrics::serve(at, render, shutdown.clone()).await?;
    }
    Ok(())
}

/// The plugins built into this executable, described without starting them: each runs as a
/// process of its own when a task needs it, from its own executable `sluice-connector-NAME`
/// beside this one (built with it: only the code the plugin runs), else as
/// `sluice connector NAME`.
fn builtin_plugins() -> anyhow::Result<Vec<PluginEntry>> {
    let exe = std::env::current_exe().context("locate the sluice executable")?;
    Ok(BUILTINS
        .iter()
        .map(|(name, plugin)| {
            let plugin = plugin();
            let own = exe.with_file_name(format!("sluice-connector-{name}"));
            let command = if own.is_file() {
                PluginCommand {
                    program: own,
                    args: vec![],
                }
            } else {
                PluginCommand {
                    program: exe.clone(),
                    args: vec!["connector".into(), name.to_string()],
                }
            };
            PluginEntry {
                command,
                info: plugin.info(),
                configs: plugin.config_defs(),
            }
        })
        .collect())
}

/// The host name, so that a restarted worker keeps its id (give `--id` to run several on one
/// host).
fn default_worker_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

/// First SIGINT/SIGTERM: graceful stop. Second: exit at once.
async fn on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
    shutdown.cancel();
    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
    eprintln!("sluice: second signal, exiting without draining");
    std::process::exit(130);
}
