//! `sluice apply` and `sluice diff`: connector files (a file, or every `.json` and
//! `.properties` file of a folder) made the cluster's connectors. The plan — create, update
//! with the keys that change, delete (with `--prune`), unchanged — is the controller's answer
//! to a dry-run PutConnectorConfig for each file (it compares on the stored values, secrets
//! included, and validates), so the plan is exactly what applying does. Secrets are never
//! printed: a value shown `[hidden]` by the controller, or of a key its plugin declares
//! PASSWORD or named like a password or secret, prints as `[hidden]`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use sluice_proto::api::v1::{
    self as api, connector_service_client::ConnectorServiceClient,
    plugin_service_client::PluginServiceClient,
};
use sluice_worker::link::Link;

use super::{channel, connector_file, AsyncCommand, Target};

/// The connector files and what to do with connectors they do not name.
#[derive(clap::Args)]
pub struct Files {
    /// A connector file or a folder of them.
    #[arg(short = 'f', long = "file")]
    path: PathBuf,
    /// Delete the connectors no file names.
    #[arg(long)]
    prune: bool,
}

/// `sluice apply -f FILE_OR_DIR [--prune] [--dry-run]`.
#[derive(clap::Args)]
pub struct ApplyCommand {
    #[command(flatten)]
    files: Files,
    /// Print the plan only.
    #[arg(long)]
    dry_run: bool,
}

/// `sluice diff -f FILE_OR_DIR [--prune]`.
#[derive(clap::Args)]
pub struct DiffCommand {
    #[command(flatten)]
    files: Files,
}

impl AsyncCommand for DiffCommand {
    async fn run(self, target: &Target) -> anyhow::Result<()> {
        diff(target, &self.files.path, self.files.prune).await
    }
}

impl AsyncCommand for ApplyCommand {
    async fn run(self, target: &Target) -> anyhow::Result<()> {
        apply(target, &self.files.path, self.files.prune, self.dry_run).await
    }
}

const HIDDEN: &str = "[hidden]";

/// What applying does to one connector.
enum Step {
    Create(String),
    /// The name and each changed key: (key, before, after), secrets hidden.
    Update(String, Vec<(String, Option<String>, Option<String>)>),
    Delete(String),
    Unchanged(String),
}

/// The connector files under `path`: name → config.
fn read_files(path: &Path) -> anyhow::Result<BTreeMap<String, BTreeMap<String, String>>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("read {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("json" | "properties")
                    )
            })
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = BTreeMap::new();
    for file in &files {
        let (name, config) = connector_file(file)?;
        if out.insert(name.clone(), config).is_some() {
            return Err(anyhow::Error::new(tonic::Status::invalid_argument(
                format!(
                    "{}: connector {name} is named by another file too",
                    file.display()
                ),
            )));
        }
    }
    Ok(out)
}

/// Whether `key`'s value must not be printed.
fn secret(key: &str, stored: Option<&String>, passwords: &BTreeSet<String>) -> bool {
    stored.is_some_and(|v| v == HIDDEN)
        || passwords.contains(key)
        || key.contains("password")
        || key.contains("secret")
}

/// The PASSWORD keys of a connector class, as its plugin declares them (none when the plugin
/// is not known).
async fn password_keys(plugins: &mut PluginServiceClient<Link>, class: &str) -> BTreeSet<String> {
    match plugins
        .get_plugin_config(api::PluginRef {
            class_name: class.to_string(),
        })
        .await
    {
        Ok(config) => config
            .into_inner()
            .configs
            .into_iter()
            .filter(|k| k.r#type == "PASSWORD")
            .map(|k| k.name)
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// The plan: each file's connector compared by the controller, and with `prune` the cluster's
/// connectors no file names.
async fn plan(
    channel: Link,
    desired: &BTreeMap<String, BTreeMap<String, String>>,
    prune: bool,
) -> anyhow::Result<Vec<Step>> {
    let mut connectors = ConnectorServiceClient::new(channel.clone());
    let mut plugins = PluginServiceClient::new(channel);
    let mut steps = Vec::new();
    for (name, config) in desired {
        let answer = connectors
            .put_connector_config(api::PutConnectorConfigRequest {
                name: name.clone(),
                config: config.clone().into_iter().collect(),
                dry_run: true,
            })
            .await?
            .into_inner();
        if answer.created {
            steps.push(Step::Create(name.clone()));
        } else if answer.changed_keys.is_empty() {
            steps.push(Step::Unchanged(name.clone()));
        } else {
            let stored = connectors
                .get_connector_config(api::ConnectorRef { name: name.clone() })
                .await?
                .into_inner()
                .config;
            let class = config.get("connector.class").cloned().unwrap_or_default();
            let passwords = password_keys(&mut plugins, &class).await;
            let changes = answer
                .changed_keys
                .into_iter()
                .map(|key| {
                    let before = stored.get(&key);
                    let hide = secret(&key, before, &passwords);
                    let show = |v: Option<&String>| {
                        v.map(|v| if hide { HIDDEN.to_string() } else { v.clone() })
                    };
                    let after = show(config.get(&key));
                    (key, show(before), after)
                })
                .collect();
            steps.push(Step::Update(name.clone(), changes));
        }
    }
    if prune {
        let listed = connectors
            .list_connectors(api::ListConnectorsRequest::default())
            .await?
            .into_inner();
        for c in listed.connectors {
            if !desired.contains_key(&c.name) {
                steps.push(Step::Delete(c.name));
            }
        }
    }
    Ok(steps)
}

fn print_plan(steps: &[Step]) {
    let (mut create, mut update, mut delete, mut same) = (0, 0, 0, 0);
    for step in steps {
        match step {
            Step::Create(name) => {
                create += 1;
                println!("+ create {name}");
            }
            Step::Update(name, changes) => {
                update += 1;
                println!("~ update {name}");
                for (key, before, after) in changes {
                    match (before, after) {
                        (Some(b), Some(a)) => println!("    ~ {key}: {b} -> {a}"),
                        (None, Some(a)) => println!("    + {key}: {a}"),
                        (Some(b), None) => println!("    - {key}: {b}"),
                        (None, None) => {}
                    }
                }
            }
            Step::Delete(name) => {
                delete += 1;
                println!("- delete {name}");
            }
            Step::Unchanged(name) => {
                same += 1;
                println!("= unchanged {name}");
            }
        }
    }
    println!("plan: {create} to create, {update} to update, {delete} to delete, {same} unchanged");
}

/// `sluice diff`: the plan alone.
async fn diff(target: &Target, path: &Path, prune: bool) -> anyhow::Result<()> {
    let desired = read_files(path)?;
    let steps = plan(channel(target).await?, &desired, prune).await?;
    print_plan(&steps);
    Ok(())
}

/// `sluice apply`: the plan, carried out (not with `dry_run`), then checked: a second plan must
/// find every connector unchanged.
async fn apply(target: &Target, path: &Path, prune: bool, dry_run: bool) -> anyhow::Result<()> {
    let desired = read_files(path)?;
    let channel = channel(target).await?;
    let steps = plan(channel.clone(), &desired, prune).await?;
    print_plan(&steps);
    if dry_run {
        return Ok(());
    }
    let mut connectors = ConnectorServiceClient::new(channel.clone());
    for step in &steps {
        match step {
            Step::Create(name) | Step::Update(name, _) => {
                connectors
                    .put_connector_config(api::PutConnectorConfigRequest {
                        name: name.clone(),
                        config: desired[name].clone().into_iter().collect(),
                        dry_run: false,
                    })
                    .await?;
            }
            Step::Delete(name) => {
                connectors
                    .delete_connector(api::ConnectorRef { name: name.clone() })
                    .await?;
            }
            Step::Unchanged(_) => {}
        }
    }
    let after = plan(channel, &desired, prune).await?;
    if let Some(step) = after.iter().find(|s| !matches!(s, Step::Unchanged(_))) {
        let name = match step {
            Step::Create(n) | Step::Update(n, _) | Step::Delete(n) | Step::Unchanged(n) => n,
        };
        return Err(anyhow!(
            "applied, but the cluster does not match the files yet: {name} differs"
        ));
    }
    println!("applied: the cluster matches {}", path.display());
    Ok(())
}
