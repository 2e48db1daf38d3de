//! Plugin discovery: every connector executable (built-in or found on `plugin.path`) is started
//! once and asked, through the handshake, which connector classes it serves. A broken
//! executable is reported and skipped, never fatal.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use sluice_proto::connector::v1 as proto;

use crate::process::{ConnectorProcess, PluginCommand};

/// A plugin that answered its handshake.
#[derive(Debug, Clone)]
pub struct PluginEntry {
    pub command: PluginCommand,
    pub info: proto::PluginInfo,
    /// Configuration definitions of each class, by class name (from Describe).
    pub configs: std::collections::BTreeMap<String, Vec<proto::ConfigDef>>,
}

#[derive(Debug, Default)]
pub struct PluginRegistry {
    pub plugins: Vec<PluginEntry>,
    /// Executables that failed discovery, with the reason.
    pub broken: Vec<(PluginCommand, String)>,
}

impl PluginRegistry {
    pub async fn discover(builtins: Vec<PluginCommand>, plugin_path: &[PathBuf]) -> PluginRegistry {
        let mut commands = builtins;
        for dir in plugin_path {
            commands.extend(scan(dir));
        }
        let probes = commands.into_iter().map(|command| async move {
            let label = format!("discover {}", command.program.display());
            match ConnectorProcess::launch(&command, &label).await {
                Ok(process) => {
                    let info = process.plugin.clone();
                    let mut configs = std::collections::BTreeMap::new();
                    let mut failure = None;
                    for class in &info.connectors {
                        let request = proto::DescribeRequest {
                            connector_class: class.class_name.clone(),
                        };
                        match process.client.clone().describe(request).await {
                            Ok(r) => {
                                configs.insert(class.class_name.clone(), r.into_inner().configs);
                            }
                            Err(s) => {
                                failure =
                                    Some(format!("describe {}: {}", class.class_name, s.message()));
                                break;
                            }
                        }
                    }
                    process.shutdown().await;
                    match failure {
                        None => Ok(PluginEntry {
                            command,
                            info,
                            configs,
                        }),
                        Some(reason) => Err((command, reason)),
                    }
                }
                Err(e) => Err((command, format!("{e:#}"))),
            }
        });
        let mut registry = PluginRegistry::default();
        for result in futures::future::join_all(probes).await {
            match result {
                Ok(entry) => registry.plugins.push(entry),
                Err((command, reason)) => {
                    tracing::warn!(plugin = %command, "plugin unusable: {reason}");
                    registry.broken.push((command, reason));
                }
            }
        }
        registry
    }

    /// The plugin serving `class` (by class name or alias), and that class.
    pub fn resolve(&self, class: &str) -> Option<(&PluginEntry, &proto::ConnectorClass)> {
        self.plugins.iter().find_map(|p| {
            p.info
                .connectors
                .iter()
                .find(|c| c.class_name == class || c.aliases.iter().any(|a| a == class))
                .map(|c| (p, c))
        })
    }

    /// Every class name known, for error messages.
    pub fn class_names(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .flat_map(|p| p.info.connectors.iter().map(|c| c.class_name.as_str()))
            .collect()
    }
}

/// Executables directly in `dir`, or `dir` itself if it is one.
fn scan(dir: &Path) -> Vec<PluginCommand> {
    let is_executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if is_executable(dir) {
        return vec![PluginCommand {
            program: dir.to_path_buf(),
            args: Vec::new(),
        }];
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!(
            "plugin.path entry {} is not readable; skipped",
            dir.display()
        );
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_executable(p))
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|program| PluginCommand {
            program,
            args: Vec::new(),
        })
        .collect()
}
