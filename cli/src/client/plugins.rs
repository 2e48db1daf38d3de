//! `sluice plugins ...`: the plugins the workers have, their config keys, validation, and the
//! local checks (`check`, `manifest`) of connector executables.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use sluice_proto::api::v1::{self as api, plugin_service_client::PluginServiceClient};

use super::{channel, connector_file, print_json, table, AsyncCommand, Format, Target};

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
