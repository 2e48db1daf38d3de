//! `sluice connectors|plugins|cluster ...`: the public gRPC API from the command line. Human
//! tables by default, `-o json` for scripts (proto3 JSON, as grpcurl prints it); an error is
//! one line on stderr and the exit code says which kind (see [`exit_code`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use sluice_proto::api::v1::{
    self as api, cluster_service_client::ClusterServiceClient,
    connector_service_client::ConnectorServiceClient, plugin_service_client::PluginServiceClient,
};
use sluice_worker::mode::admin::{json_to_struct, struct_to_json};
use tonic::transport::Channel;

#[derive(Args)]
pub struct Target {
    /// The controller's URL (or SLUICE_CONTROLLER).
    #[arg(
        long,
        global = true,
        env = "SLUICE_CONTROLLER",
        default_value = "http://127.0.0.1:8083"
    )]
    controller: String,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum Connectors {
    /// Every connector with its state and tasks.
    List,
    /// Creates a connector from a file: JSON (`{"name": ..., "config": {...}}` or flat) or
    /// .properties.
    Create {
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Initial state: running (default), paused or stopped.
        #[arg(long, value_enum, default_value_t = Initial::Running)]
        state: Initial,
    },
    /// The connector's config and tasks.
    Get {
        name: String,
    },
    /// The connector's config.
    Config {
        name: String,
    },
    /// Replaces the connector's config (creates it if absent).
    Update {
        name: String,
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Sets (KEY=VALUE) or removes (KEY=) config keys.
    Patch {
        name: String,
        #[arg(required = true)]
        changes: Vec<String>,
    },
    Delete {
        name: String,
    },
    /// State of the connector and of each task, with failure traces.
    Status {
        name: String,
    },
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    Stop {
        name: String,
    },
    Restart {
        name: String,
        /// Restart the tasks too.
        #[arg(long)]
        include_tasks: bool,
        /// Only what failed.
        #[arg(long)]
        only_failed: bool,
    },
    /// The task configs.
    Tasks {
        name: String,
    },
    RestartTask {
        name: String,
        task: u32,
    },
    /// Committed offsets: source partitions and offsets, or a sink's Kafka offsets.
    Offsets {
        name: String,
    },
    /// Alters offsets (connector STOPPED) from a JSON file in Kafka Connect's shape:
    /// `{"offsets": [{"partition": {...}, "offset": {...}}]}`; a null offset resets it.
    AlterOffsets {
        name: String,
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Resets every offset (connector STOPPED).
    ResetOffsets {
        name: String,
    },
    /// Applies a connector's converters and transforms to sample records and shows what each
    /// step made of them (or why it failed). Nothing runs and nothing is written.
    DryRun {
        /// An existing connector: its stored config (with --file laid over it).
        name: Option<String>,
        /// A connector file (JSON or .properties).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        /// Sample records, one JSON object per line ("-" for stdin):
        /// {"topic": "t", "key": ..., "value": ..., "headers": {"h": "v"}, "timestamp_ms": 0}.
        /// A string key/value is taken as its text; any other JSON as its JSON text.
        #[arg(short = 'r', long)]
        records: PathBuf,
        /// source: connector data → transforms → converters; sink: Kafka bytes → converters
        /// → transforms. Default: the connector's type.
        #[arg(long, value_enum)]
        direction: Option<Direction>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Direction {
    Source,
    Sink,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Initial {
    Running,
    Paused,
    Stopped,
}

#[derive(Subcommand)]
pub enum Plugins {
    /// Connector plugins the workers offer.
    List,
    /// Config definitions of a connector class.
    Config { class: String },
    /// Validates a connector config file against its class, field by field.
    Validate {
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Runs a connector executable through the whole connector protocol (the conformance kit)
    /// and prints each check as PASS, FAIL or SKIP; exits 1 if any check failed. Needs no
    /// controller.
    Check {
        /// The class whose streams to run (name or alias); needed when the plugin has several.
        #[arg(long)]
        class: Option<String>,
        /// A key of the connector configuration used to validate, plan and run the class.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// A connector configuration file (.properties or .json) to use instead of or under
        /// --config.
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        /// Print the connector's own output as it comes.
        #[arg(long)]
        show_output: bool,
        /// The executable and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Writes a manifest beside each connector executable (a file, or every executable in a
    /// directory of `plugin.path`): what its handshake and Describe said, so that workers
    /// discover it without starting it. A manifest goes stale when its executable changes.
    /// Needs no controller.
    Manifest {
        /// Only report each executable's manifest as current, stale or missing; exit 1 unless
        /// all are current. Starts nothing, writes nothing.
        #[arg(long)]
        check: bool,
        /// Executables, or directories of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum Cluster {
    /// Cluster id, version and generation.
    Info,
    /// Workers with what each runs.
    Workers,
}

/// gRPC code → exit code: 2 invalid argument, 3 not found, 4 already exists, 5 failed
/// precondition, 6 unavailable, 1 anything else.
fn exit_code(status: &tonic::Status) -> u8 {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument => 2,
        Code::NotFound => 3,
        Code::AlreadyExists => 4,
        Code::FailedPrecondition => 5,
        Code::Unavailable | Code::DeadlineExceeded => 6,
        _ => 1,
    }
}

/// Runs a client command and reports its failure in one line.
pub(crate) async fn main(target: Target, command: impl AsyncCommand) -> ExitCode {
    match command.run(&target).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(status) = e.downcast_ref::<tonic::Status>() {
                let code = format!("{:?}", status.code());
                eprintln!("error: {}: {}", upper_snake(&code), status.message());
                return ExitCode::from(exit_code(status));
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn upper_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

pub(crate) trait AsyncCommand {
    async fn run(self, target: &Target) -> anyhow::Result<()>;
}

async fn channel(target: &Target) -> anyhow::Result<Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(target.controller.clone())
        .with_context(|| format!("--controller {}: not a URL", target.controller))?
        .connect_timeout(std::time::Duration::from_secs(5));
    endpoint.connect().await.map_err(|e| {
        anyhow::Error::new(tonic::Status::unavailable(format!(
            "cannot reach the controller at {}: {e}",
            target.controller
        )))
    })
}

/// Prints `message` (of proto type `full_name`) as proto3 JSON.
fn print_json<M: prost::Message>(full_name: &str, message: &M) -> anyhow::Result<()> {
    let value = sluice_worker::proto_json::to_json(message, full_name, true)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// Left-aligned columns.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn state_name(state: i32) -> String {
    api::State::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("STATE_").to_string())
        .unwrap_or_else(|_| "UNKNOWN".into())
}

fn type_name(kind: i32) -> String {
    api::ConnectorType::try_from(kind)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("CONNECTOR_TYPE_")
                .to_lowercase()
        })
        .unwrap_or_default()
}

/// Reads a connector file: JSON in the REST API's shape or flat, or .properties.
fn connector_file(path: &Path) -> anyhow::Result<(String, BTreeMap<String, String>)> {
    let file = sluice_model::ConfigFile::load(path)?;
    let mut values = file.into_values();
    let name = values
        .get("name")
        .cloned()
        .ok_or_else(|| anyhow!("{}: name: missing", path.display()))?;
    values.remove("name");
    Ok((name, values))
}

fn print_config(config: &BTreeMap<String, String>) {
    table(
        &["KEY", "VALUE"],
        config
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect(),
    );
}

fn print_status(status: &api::ConnectorStatus) {
    let connector = status.connector.clone().unwrap_or_default();
    let mut rows = vec![vec![
        "connector".to_string(),
        state_name(connector.state),
        connector.worker_id.clone(),
        first_line(&connector.trace),
    ]];
    for t in &status.tasks {
        rows.push(vec![
            format!("task {}", t.id),
            state_name(t.state),
            t.worker_id.clone(),
            first_line(&t.trace),
        ]);
    }
    println!(
        "{} ({}, target {})",
        status.name,
        type_name(status.r#type),
        api::TargetState::try_from(status.target_state)
            .map(|t| t.as_str_name().trim_start_matches("TARGET_STATE_"))
            .unwrap_or("UNKNOWN")
    );
    table(&["UNIT", "STATE", "WORKER", "TRACE"], rows);
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

fn offsets_json(o: Option<&prost_types::Struct>) -> String {
    o.map(|s| struct_to_json(s).to_string())
        .unwrap_or_else(|| "null".into())
}

fn parse_offsets(path: &Path) -> anyhow::Result<Vec<api::ConnectorOffset>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let body: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let list = body["offsets"].as_array().ok_or_else(|| {
        anyhow!(
            "{}: expected {{\"offsets\": [{{\"partition\": {{...}}, \"offset\": {{...}}}}]}}",
            path.display()
        )
    })?;
    list.iter()
        .enumerate()
        .map(|(i, o)| {
            let partition = json_to_struct(&o["partition"]).ok_or_else(|| {
                anyhow!(
                    "{}: offsets[{i}].partition must be an object",
                    path.display()
                )
            })?;
            let offset = match &o["offset"] {
                serde_json::Value::Null => None,
                v => Some(json_to_struct(v).ok_or_else(|| {
                    anyhow!(
                        "{}: offsets[{i}].offset must be an object or null",
                        path.display()
                    )
                })?),
            };
            Ok(api::ConnectorOffset {
                partition: Some(partition),
                offset,
            })
        })
        .collect()
}

fn by_name(name: &str) -> api::ConnectorRef {
    api::ConnectorRef { name: name.into() }
}

impl AsyncCommand for Connectors {
    async fn run(self, target: &Target) -> anyhow::Result<()> {
        let mut client = ConnectorServiceClient::new(channel(target).await?);
        let json = target.output == Format::Json;
        macro_rules! call {
            ($method:ident, $request:expr) => {
                client.$method($request).await?.into_inner()
            };
        }
        match self {
            Connectors::List => {
                let list = call!(
                    list_connectors,
                    api::ListConnectorsRequest {
                        expand_status: true,
                        expand_info: false,
                    }
                );
                if json {
                    return print_json("sluice.api.v1.ListConnectorsResponse", &list);
                }
                let rows = list
                    .connectors
                    .iter()
                    .map(|c| {
                        let s = c.status.clone().unwrap_or_default();
                        let running = s
                            .tasks
                            .iter()
                            .filter(|t| t.state == api::State::Running as i32)
                            .count();
                        vec![
                            c.name.clone(),
                            type_name(s.r#type),
                            state_name(s.connector.map(|c| c.state).unwrap_or_default()),
                            format!("{running}/{}", s.tasks.len()),
                        ]
                    })
                    .collect();
                table(&["NAME", "TYPE", "STATE", "TASKS RUNNING"], rows);
            }
            Connectors::Create { file, state } => {
                let (name, config) = connector_file(&file)?;
                let initial_state = match state {
                    Initial::Running => api::TargetState::Running,
                    Initial::Paused => api::TargetState::Paused,
                    Initial::Stopped => api::TargetState::Stopped,
                };
                let info = call!(
                    create_connector,
                    api::CreateConnectorRequest {
                        name,
                        config: config.into_iter().collect(),
                        initial_state: initial_state as i32,
                    }
                );
                if json {
                    return print_json("sluice.api.v1.ConnectorInfo", &info);
                }
                println!("created connector {}", info.name);
            }
            Connectors::Get { name } => {
                let info = call!(get_connector, by_name(&name));
                if json {
                    return print_json("sluice.api.v1.ConnectorInfo", &info);
                }
                println!(
                    "{} ({}), tasks {:?}",
                    info.name,
                    type_name(info.r#type),
                    info.tasks
                );
                print_config(&info.config.into_iter().collect());
            }
            Connectors::Config { name } => {
                let config = call!(get_connector_config, by_name(&name));
                if json {
                    return print_json("sluice.api.v1.ConnectorConfig", &config);
                }
                print_config(&config.config.into_iter().collect());
            }
            Connectors::Update { name, file } => {
                let (_, config) = connector_file(&file)?;
                let r = call!(
                    put_connector_config,
                    api::PutConnectorConfigRequest {
                        name: name.clone(),
                        config: config.into_iter().collect(),
                    }
                );
                if json {
                    return print_json("sluice.api.v1.PutConnectorConfigResponse", &r);
                }
                let verb = if r.created { "created" } else { "updated" };
                println!("{verb} connector {name}");
            }
            Connectors::Patch { name, changes } => {
                let mut set = std::collections::HashMap::new();
                let mut remove = Vec::new();
                for change in changes {
                    match change.split_once('=') {
                        Some((k, "")) => remove.push(k.to_string()),
                        Some((k, v)) => {
                            set.insert(k.to_string(), v.to_string());
                        }
                        None => {
                            return Err(tonic::Status::invalid_argument(format!(
                                "{change}: expected KEY=VALUE (or KEY= to remove the key)"
                            ))
                            .into())
                        }
                    }
                }
                let info = call!(
                    patch_connector_config,
                    api::PatchConnectorConfigRequest { name, set, remove }
                );
                if json {
                    return print_json("sluice.api.v1.ConnectorInfo", &info);
                }
                println!("patched connector {}", info.name);
            }
            Connectors::Delete { name } => {
                call!(delete_connector, by_name(&name));
                if !json {
                    println!("deleted connector {name}");
                } else {
                    println!("{{}}");
                }
            }
            Connectors::Status { name } => {
                let status = call!(get_connector_status, by_name(&name));
                if json {
                    return print_json("sluice.api.v1.ConnectorStatus", &status);
                }
                print_status(&status);
            }
            Connectors::Pause { name } => {
                let state = api::TargetState::Paused;
                return TargetChange { name, state }.run(target).await;
            }
            Connectors::Resume { name } => {
                let state = api::TargetState::Running;
                return TargetChange { name, state }.run(target).await;
            }
            Connectors::Stop { name } => {
                let state = api::TargetState::Stopped;
                return TargetChange { name, state }.run(target).await;
            }
            Connectors::Restart {
                name,
                include_tasks,
                only_failed,
            } => {
                let status = call!(
                    restart_connector,
                    api::RestartConnectorRequest {
                        name,
                        include_tasks,
                        only_failed,
                    }
                );
                if json {
                    return print_json("sluice.api.v1.ConnectorStatus", &status);
                }
                print_status(&status);
            }
            Connectors::Tasks { name } => {
                let tasks = call!(list_tasks, by_name(&name));
                if json {
                    return print_json("sluice.api.v1.ListTasksResponse", &tasks);
                }
                for t in tasks.tasks {
                    println!("task {}:", t.id);
                    print_config(&t.config.into_iter().collect());
                }
            }
            Connectors::RestartTask { name, task } => {
                let status = call!(
                    restart_task,
                    api::TaskRef {
                        connector: name.clone(),
                        task,
                    }
                );
                if json {
                    return print_json("sluice.api.v1.TaskStatus", &status);
                }
                println!(
                    "task {task} of {name}: {} on {}",
                    state_name(status.state),
                    status.worker_id
                );
            }
            Connectors::Offsets { name } => {
                let offsets = call!(get_offsets, by_name(&name));
                if json {
                    return print_json("sluice.api.v1.ConnectorOffsets", &offsets);
                }
                table(
                    &["PARTITION", "OFFSET"],
                    offsets
                        .offsets
                        .iter()
                        .map(|o| {
                            vec![
                                offsets_json(o.partition.as_ref()),
                                offsets_json(o.offset.as_ref()),
                            ]
                        })
                        .collect(),
                );
            }
            Connectors::AlterOffsets { name, file } => {
                let offsets = parse_offsets(&file)?;
                let r = call!(alter_offsets, api::AlterOffsetsRequest { name, offsets });
                if json {
                    return print_json("sluice.api.v1.AlterOffsetsResponse", &r);
                }
                println!("{}", r.message);
            }
            Connectors::ResetOffsets { name } => {
                let r = call!(reset_offsets, by_name(&name));
                if json {
                    return print_json("sluice.api.v1.AlterOffsetsResponse", &r);
                }
                println!("{}", r.message);
            }
            Connectors::DryRun {
                name,
                file,
                records,
                direction,
            } => {
                let mut config = match &file {
                    Some(path) => {
                        let (file_name, mut config) = connector_file(path)?;
                        config.insert("name".into(), file_name);
                        config
                    }
                    None => BTreeMap::new(),
                };
                if name.is_none() && file.is_none() {
                    return Err(anyhow!("give a connector name or --file"));
                }
                if name.is_some() {
                    config.remove("name");
                }
                let request = api::DryRunRequest {
                    name: name.unwrap_or_default(),
                    config: config.into_iter().collect(),
                    records: sample_records(&records)?,
                    direction: match direction {
                        None => api::ConnectorType::Unspecified,
                        Some(Direction::Source) => api::ConnectorType::Source,
                        Some(Direction::Sink) => api::ConnectorType::Sink,
                    } as i32,
                };
                let r = call!(dry_run, request);
                if json {
                    return print_json("sluice.api.v1.DryRunResponse", &r);
                }
                print_dry_run(&r);
            }
        }
        Ok(())
    }
}

/// Reads sample records, one JSON object per line.
fn sample_records(path: &Path) -> anyhow::Result<Vec<api::SampleRecord>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("read records from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
    };
    let as_text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let doc: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let field = |k: &str| doc.get(k);
        let int = |k: &str| field(k).and_then(serde_json::Value::as_i64);
        out.push(api::SampleRecord {
            topic: field("topic")
                .and_then(|t| t.as_str())
                .ok_or_else(|| anyhow!("{}: \"topic\" (a string) is required", at()))?
                .to_string(),
            partition: int("partition").and_then(|p| i32::try_from(p).ok()),
            offset: int("offset"),
            timestamp_ms: int("timestamp_ms"),
            key: field("key").and_then(as_text),
            value: field("value").and_then(as_text),
            headers: field("headers")
                .and_then(|h| h.as_object())
                .map(|h| {
                    h.iter()
                        .filter_map(|(k, v)| Some((k.clone(), as_text(v)?)))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

fn print_dry_run(r: &api::DryRunResponse) {
    let show = |v: &api::RecordView| {
        let mut text = format!("topic={}", v.topic);
        if let Some(p) = v.partition {
            text.push_str(&format!(" partition={p}"));
        }
        text.push_str(&format!(" key={}", v.key.as_deref().unwrap_or("null")));
        text.push_str(&format!(" value={}", v.value.as_deref().unwrap_or("null")));
        for (k, h) in &v.headers {
            text.push_str(&format!(" header[{k}]={h}"));
        }
        text
    };
    for (n, result) in r.results.iter().enumerate() {
        println!("record {}:", n + 1);
        for step in &result.steps {
            let head = format!("  {} {} ({})", step.stage, step.name, step.class_name);
            match (&step.record, step.error.as_str(), step.applied) {
                (_, _, false) => println!("{head}: skipped (predicate)"),
                (_, e, _) if !e.is_empty() => println!("{head}: ERROR {e}"),
                (Some(v), _, _) => println!("{head}: {}", show(v)),
                (None, _, _) => println!("{head}: dropped"),
            }
        }
        match (&result.output, result.dropped) {
            (_, true) => println!("  => dropped"),
            (Some(v), _) => println!("  => {}", show(v)),
            (None, _) => println!("  => failed: {}", result.error),
        }
    }
}

/// Pause, resume and stop share their shape.
struct TargetChange {
    name: String,
    state: api::TargetState,
}

impl AsyncCommand for TargetChange {
    async fn run(self, target: &Target) -> anyhow::Result<()> {
        let mut client = ConnectorServiceClient::new(channel(target).await?);
        let request = by_name(&self.name);
        let status = match self.state {
            api::TargetState::Paused => client.pause_connector(request).await?,
            api::TargetState::Stopped => client.stop_connector(request).await?,
            _ => client.resume_connector(request).await?,
        }
        .into_inner();
        if target.output == Format::Json {
            return print_json("sluice.api.v1.ConnectorStatus", &status);
        }
        print_status(&status);
        Ok(())
    }
}

impl AsyncCommand for Plugins {
    async fn run(self, target: &Target) -> anyhow::Result<()> {
        if let Plugins::Check {
            class,
            config,
            file,
            show_output,
            command,
        } = self
        {
            return check_plugin(class, config, file, show_output, command).await;
        }
        if let Plugins::Manifest { check, paths } = self {
            if check {
                return check_manifests(&paths);
            }
            return write_manifests(&paths).await;
        }
        let mut client = PluginServiceClient::new(channel(target).await?);
        let json = target.output == Format::Json;
        match self {
            Plugins::List => {
                let list = client
                    .list_plugins(api::ListPluginsRequest {
                        connectors_only: true,
                    })
                    .await?
                    .into_inner();
                if json {
                    return print_json("sluice.api.v1.ListPluginsResponse", &list);
                }
                table(
                    &["CLASS", "TYPE", "VERSION", "WORKERS"],
                    list.plugins
                        .iter()
                        .map(|p| {
                            vec![
                                p.class_name.clone(),
                                p.r#type.clone(),
                                p.version.clone(),
                                p.workers.join(","),
                            ]
                        })
                        .collect(),
                );
                if !list.broken.is_empty() {
                    println!();
                    table(
                        &["BROKEN PLUGIN", "WORKERS", "REASON"],
                        list.broken
                            .iter()
                            .map(|b| vec![b.command.clone(), b.workers.join(","), b.reason.clone()])
                            .collect(),
                    );
                }
            }
            Plugins::Config { class } => {
                let config = client
                    .get_plugin_config(api::PluginRef { class_name: class })
                    .await?
                    .into_inner();
                if json {
                    return print_json("sluice.api.v1.PluginConfig", &config);
                }
                table(
                    &["NAME", "TYPE", "REQUIRED", "DEFAULT", "DOCUMENTATION"],
                    config
                        .configs
                        .iter()
                        .map(|k| {
                            vec![
                                k.name.clone(),
                                k.r#type.clone(),
                                k.required.to_string(),
                                k.default_value.clone().unwrap_or_default(),
                                k.documentation.clone(),
                            ]
                        })
                        .collect(),
                );
            }
            Plugins::Validate { file } => {
                let (_, config) = connector_file(&file)?;
                let r = client
                    .validate_config(api::ValidateConfigRequest {
                        class_name: String::new(),
                        config: config.into_iter().collect(),
                    })
                    .await?
                    .into_inner();
                if json {
                    return print_json("sluice.api.v1.ValidateConfigResponse", &r);
                }
                let errors: Vec<Vec<String>> = r
                    .configs
                    .iter()
                    .filter_map(|c| c.value.as_ref())
                    .flat_map(|v| v.errors.iter().map(|e| vec![v.name.clone(), e.clone()]))
                    .collect();
                if errors.is_empty() {
                    println!("{}: valid", r.name);
                } else {
                    table(&["KEY", "ERROR"], errors);
                    return Err(tonic::Status::invalid_argument(format!(
                        "{} configuration errors",
                        r.error_count
                    ))
                    .into());
                }
            }
            Plugins::Check { .. } | Plugins::Manifest { .. } => {
                unreachable!("handled before connecting")
            }
        }
        Ok(())
    }
}

/// `sluice plugins check`: the conformance kit against one executable.
async fn check_plugin(
    class: Option<String>,
    pairs: Vec<String>,
    file: Option<PathBuf>,
    show_output: bool,
    command: Vec<String>,
) -> anyhow::Result<()> {
    use sluice_conformance::{self as conformance, Outcome};
    let mut config = match &file {
        Some(path) => sluice_model::ConfigFile::load(path)?.into_values(),
        None => BTreeMap::new(),
    };
    config.extend(conformance::parse_pairs(&pairs)?);
    let class = class.or_else(|| config.get("connector.class").cloned());
    let mut words = command.into_iter();
    let program = words.next().context("no executable given")?;
    let options = conformance::Options {
        command: sluice_worker::host::process::PluginCommand {
            program: program.into(),
            args: words.collect(),
        },
        class,
        config,
        show_output,
    };
    println!("checking {}", options.command);
    let report = conformance::run(&options, |check| {
        println!("{}  {:<28} {}", check.outcome, check.name, check.detail);
    })
    .await;
    let failed = report.count(Outcome::Fail);
    println!(
        "{} passed, {failed} failed, {} skipped",
        report.count(Outcome::Pass),
        report.count(Outcome::Skip)
    );
    if failed > 0 {
        let names: Vec<&str> = report.failed().map(|c| c.name.as_str()).collect();
        bail!("{failed} checks failed: {}", names.join(", "));
    }
    Ok(())
}

/// The executables at `paths` (files, or directories of them, as on `plugin.path`); a path
/// with none is reported and added to `failed`.
fn executables(
    paths: &[PathBuf],
    failed: &mut Vec<String>,
) -> Vec<sluice_worker::host::process::PluginCommand> {
    let mut found = Vec::new();
    for path in paths {
        let commands = sluice_worker::host::plugins::scan(path);
        if commands.is_empty() {
            eprintln!("error: no executable at {}", path.display());
            failed.push(path.display().to_string());
        }
        found.extend(commands);
    }
    found
}

/// `sluice plugins manifest --check`: whether each executable's manifest is current.
fn check_manifests(paths: &[PathBuf]) -> anyhow::Result<()> {
    use sluice_worker::host::plugins::{self, ManifestState};
    let mut not_current = Vec::new();
    for command in executables(paths, &mut not_current) {
        match plugins::manifest_state(&command) {
            ManifestState::Current(_) => println!("current  {command}"),
            ManifestState::Unusable(reason) => {
                println!("stale    {command}: {reason}");
                not_current.push(command.to_string());
            }
            ManifestState::Missing => {
                println!("missing  {command}");
                not_current.push(command.to_string());
            }
        }
    }
    if !not_current.is_empty() {
        bail!(
            "{} without a current manifest (`sluice plugins manifest` writes them)",
            not_current.join(", ")
        );
    }
    Ok(())
}

/// `sluice plugins manifest`: describes each executable and writes its manifest.
async fn write_manifests(paths: &[PathBuf]) -> anyhow::Result<()> {
    use sluice_worker::host::plugins;
    let mut failed = Vec::new();
    for command in executables(paths, &mut failed) {
        let written = match plugins::describe(command.clone()).await {
            Ok(entry) => plugins::write_manifest(&entry).map(|path| (path, entry)),
            Err((_, reason)) => Err(anyhow::anyhow!(reason)),
        };
        match written {
            Ok((path, entry)) => {
                let classes: Vec<&str> = entry
                    .info
                    .connectors
                    .iter()
                    .map(|c| c.class_name.as_str())
                    .collect();
                println!("wrote {} ({})", path.display(), classes.join(", "));
            }
            Err(e) => {
                eprintln!("error: {command}: {e:#}");
                failed.push(command.to_string());
            }
        }
    }
    if !failed.is_empty() {
        bail!("no manifest for {}", failed.join(", "));
    }
    Ok(())
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
