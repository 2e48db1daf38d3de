//! `sluice connectors ...`: create, configure, inspect, restart, pause, stop, delete, offsets
//! and dry runs of connectors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use clap::{Subcommand, ValueEnum};
use sluice_proto::api::v1::{self as api, connector_service_client::ConnectorServiceClient};
use sluice_worker::mode::admin::{json_to_struct, struct_to_json};

use super::{
    channel, connector_file, print_json, state_name, table, type_name, AsyncCommand, Format, Target,
};

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
                        dry_run: false,
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
