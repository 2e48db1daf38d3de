//! Plugin discovery: every connector executable found on `plugin.path` is started once and
//! asked, through the handshake, which connector classes it serves. A broken executable is
//! reported and skipped, never fatal. The plugins built into the `sluice` executable come
//! already described (the CLI links them): none of them is started to be discovered.
//!
//! An executable with a manifest beside it (`<executable>.sluice-manifest.json`, written by
//! `sluice plugins manifest`) is not started at all: the manifest holds what the handshake and
//! Describe said, with the SHA-256 of the executable they came from. A manifest whose hash no
//! longer matches is stale: it is ignored with a warning and the executable is started.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use sluice_proto::connector::v1 as proto;

use crate::host::process::{ConnectorProcess, PluginCommand};
use crate::proto_json::{from_json, to_json};
use crate::settings::PluginDiscovery;

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
    /// The built-ins (described by the program that links them) and every executable on
    /// `plugin_path`, using manifests as `discovery` says. Fails only for `hybrid_fail`,
    /// naming the executables without a current manifest.
    pub async fn discover(
        builtins: Vec<PluginEntry>,
        plugin_path: &[PathBuf],
        discovery: PluginDiscovery,
    ) -> anyhow::Result<PluginRegistry> {
        let mut commands = Vec::new();
        for dir in plugin_path {
            commands.extend(scan(dir));
        }
        // Manifests are read (and executables hashed) once, up front.
        let uses_manifest =
            |c: &PluginCommand| discovery != PluginDiscovery::OnlyScan && c.args.is_empty();
        let found: Vec<(PluginCommand, Option<PluginEntry>)> = commands
            .into_iter()
            .map(|c| {
                let manifest = if uses_manifest(&c) {
                    from_manifest(&c)
                } else {
                    None
                };
                (c, manifest)
            })
            .collect();
        if discovery == PluginDiscovery::HybridFail {
            let unlisted: Vec<String> = found
                .iter()
                .filter(|(c, m)| uses_manifest(c) && m.is_none())
                .map(|(c, _)| c.to_string())
                .collect();
            if !unlisted.is_empty() {
                anyhow::bail!(
                    "plugin.discovery=hybrid_fail: no current manifest for {} (write them with `sluice plugins manifest`)",
                    unlisted.join(", ")
                );
            }
        }
        let probes = found.into_iter().map(|(command, manifest)| async move {
            if let Some(entry) = manifest {
                return (true, Ok(entry));
            }
            if uses_manifest(&command) {
                if discovery == PluginDiscovery::ServiceLoad {
                    let reason = "no current manifest, and plugin.discovery=service_load starts \
                                  no executable without one (`sluice plugins manifest`)";
                    return (false, Err((command, reason.to_string())));
                }
                tracing::warn!(plugin = %command, "no current manifest: starting it to discover it (`sluice plugins manifest` writes one)");
            }
            (false, describe(command).await)
        });
        let mut registry = PluginRegistry {
            plugins: builtins,
            broken: Vec::new(),
        };
        let builtin = registry.plugins.len();
        let mut from_manifests = 0;
        for (manifest, result) in futures::future::join_all(probes).await {
            match result {
                Ok(entry) => {
                    from_manifests += usize::from(manifest);
                    registry.plugins.push(entry);
                }
                Err((command, reason)) => {
                    tracing::warn!(plugin = %command, "plugin unusable: {reason}");
                    registry.broken.push((command, reason));
                }
            }
        }
        tracing::info!(
            plugins = registry.plugins.len(),
            builtin,
            from_manifests,
            broken = registry.broken.len(),
            "plugins discovered"
        );
        Ok(registry)
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

/// `config` completed with the defaults `defs` declare for keys it lacks: what a worker sends
/// to Validate, Plan and (through Plan) every task, so every connector sees the same complete
/// configuration whatever its SDK does with defaults.
pub fn with_defaults(
    defs: &[proto::ConfigDef],
    config: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    let mut complete = config.clone();
    for def in defs {
        if let Some(default) = &def.default_value {
            complete
                .entry(def.name.clone())
                .or_insert_with(|| default.clone());
        }
    }
    complete
}

impl PluginEntry {
    /// [`with_defaults`] for `class` of this plugin.
    pub fn complete_config(
        &self,
        class: &str,
        config: &std::collections::BTreeMap<String, String>,
    ) -> std::collections::BTreeMap<String, String> {
        match self.configs.get(class) {
            Some(defs) => with_defaults(defs, config),
            None => config.clone(),
        }
    }
}

/// Starts `command` and asks it what it serves: its handshake and Describe of each class.
pub async fn describe(command: PluginCommand) -> Result<PluginEntry, (PluginCommand, String)> {
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
                        failure = Some(format!("describe {}: {}", class.class_name, s.message()));
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
}

/// The manifest file format's version.
const MANIFEST_VERSION: u32 = 1;

/// What a plugin's handshake and Describe said, for a worker to use without starting it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    manifest_version: u32,
    /// SHA-256 (hex) of the executable this was read from.
    executable_sha256: String,
    /// `sluice.connector.v1.PluginInfo` in proto3 JSON.
    plugin: serde_json::Value,
    /// `sluice.connector.v1.DescribeResponse` of each class, in proto3 JSON.
    configs: std::collections::BTreeMap<String, serde_json::Value>,
    /// What `<executable>.sluice-covers` declared when this was written: more files and
    /// folders (relative to the executable's folder) whose content the manifest stands for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    covers: Vec<String>,
    /// SHA-256 (hex) over the covered files' paths and contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    covers_sha256: Option<String>,
}

/// Beside an executable, the files its manifest also covers (a script's code, its modules):
/// one path per line, relative to the executable's folder; `#` starts a comment; a folder
/// covers every file under it.
pub fn covers_path(program: &Path) -> PathBuf {
    let mut name = program.as_os_str().to_os_string();
    name.push(".sluice-covers");
    PathBuf::from(name)
}

/// The paths `<executable>.sluice-covers` declares (none without the file).
fn declared_covers(program: &Path) -> Result<Vec<String>, String> {
    let path = covers_path(program);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// SHA-256 over every file the `covers` paths name (folders walked in name order, symbolic
/// links followed for files, not for folders): each file's path relative to the executable's
/// folder, then its content's SHA-256.
fn covers_sha256(program: &Path, covers: &[String]) -> Result<String, String> {
    use sha2::Digest as _;
    fn walk(base: &Path, relative: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
        let full = base.join(relative);
        let meta = std::fs::symlink_metadata(&full)
            .map_err(|e| format!("covered path {}: {e}", full.display()))?;
        if meta.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&full)
                .map_err(|e| format!("covered folder {}: {e}", full.display()))?
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect();
            names.sort();
            for name in names {
                walk(base, &relative.join(name), out)?;
            }
        } else if std::fs::metadata(&full).is_ok_and(|m| m.is_file()) {
            out.push(relative.to_path_buf());
        }
        Ok(())
    }
    let base = program.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    for cover in covers {
        walk(base, Path::new(cover), &mut files)?;
    }
    let mut hasher = sha2::Sha256::new();
    for file in files {
        let content = sha256_of(&base.join(&file))
            .map_err(|e| format!("covered file {}: {e}", file.display()))?;
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(content.as_bytes());
        hasher.update([b'\n']);
    }
    Ok(hex(hasher))
}

/// Where the manifest of `program` lives: beside it.
pub fn manifest_path(program: &Path) -> PathBuf {
    let mut name = program.as_os_str().to_os_string();
    name.push(".sluice-manifest.json");
    PathBuf::from(name)
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hex(hasher))
}

/// A finished SHA-256 in lowercase hex.
fn hex(hasher: sha2::Sha256) -> String {
    use sha2::Digest as _;
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes the manifest of a plugin just described; returns its path.
pub fn write_manifest(entry: &PluginEntry) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let program = &entry.command.program;
    let covers = declared_covers(program).map_err(anyhow::Error::msg)?;
    let covers_sha256 = if covers.is_empty() {
        None
    } else {
        Some(covers_sha256(program, &covers).map_err(anyhow::Error::msg)?)
    };
    let manifest = Manifest {
        covers,
        covers_sha256,
        manifest_version: MANIFEST_VERSION,
        executable_sha256: sha256_of(program)
            .with_context(|| format!("read {}", program.display()))?,
        plugin: to_json(&entry.info, "sluice.connector.v1.PluginInfo", false)?,
        configs: entry
            .configs
            .iter()
            .map(|(class, configs)| {
                let response = proto::DescribeResponse {
                    configs: configs.clone(),
                };
                Ok((
                    class.clone(),
                    to_json(&response, "sluice.connector.v1.DescribeResponse", false)?,
                ))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let path = manifest_path(program);
    let mut text = serde_json::to_string_pretty(&manifest)?;
    text.push('\n');
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// What the manifest beside an executable is worth.
pub enum ManifestState {
    Missing,
    /// Present but not usable: stale, unreadable, another format version.
    Unusable(String),
    Current(Box<PluginEntry>),
}

/// Reads and checks the manifest of `command`, an executable found on `plugin.path`.
pub fn manifest_state(command: &PluginCommand) -> ManifestState {
    let path = manifest_path(&command.program);
    match std::fs::read_to_string(&path) {
        Ok(text) => match read_manifest(command, &text) {
            Ok(entry) => ManifestState::Current(Box::new(entry)),
            Err(reason) => ManifestState::Unusable(reason),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ManifestState::Missing,
        Err(e) => ManifestState::Unusable(format!("cannot read it: {e}")),
    }
}

/// The plugin as its manifest describes it, when it has a current one; a manifest that is
/// there but unusable is logged.
fn from_manifest(command: &PluginCommand) -> Option<PluginEntry> {
    match manifest_state(command) {
        ManifestState::Current(entry) => {
            tracing::debug!(plugin = %command, "described by its manifest");
            Some(*entry)
        }
        ManifestState::Unusable(reason) => {
            tracing::warn!(manifest = %manifest_path(&command.program).display(), "plugin manifest ignored: {reason} (`sluice plugins manifest` rewrites it)");
            None
        }
        ManifestState::Missing => None,
    }
}

fn read_manifest(command: &PluginCommand, text: &str) -> Result<PluginEntry, String> {
    let manifest: Manifest =
        serde_json::from_str(text).map_err(|e| format!("not a manifest: {e}"))?;
    if manifest.manifest_version != MANIFEST_VERSION {
        return Err(format!(
            "manifest_version {} (this worker reads {MANIFEST_VERSION})",
            manifest.manifest_version
        ));
    }
    let actual = sha256_of(&command.program)
        .map_err(|e| format!("cannot read {}: {e}", command.program.display()))?;
    if actual != manifest.executable_sha256 {
        return Err("stale: the executable changed since it was written".into());
    }
    let covers = declared_covers(&command.program)?;
    if covers != manifest.covers {
        return Err(format!(
            "stale: {} declares other files than when it was written",
            covers_path(&command.program).display()
        ));
    }
    if !covers.is_empty()
        && Some(covers_sha256(&command.program, &covers)?) != manifest.covers_sha256
    {
        return Err(format!(
            "stale: a file it covers changed since it was written ({})",
            covers.join(", ")
        ));
    }
    let info: proto::PluginInfo = from_json(manifest.plugin, "sluice.connector.v1.PluginInfo")
        .map_err(|e| format!("plugin: {e:#}"))?;
    let mut configs = std::collections::BTreeMap::new();
    for class in &info.connectors {
        let value = manifest
            .configs
            .get(&class.class_name)
            .cloned()
            .ok_or_else(|| format!("no configs for class {}", class.class_name))?;
        let response: proto::DescribeResponse =
            from_json(value, "sluice.connector.v1.DescribeResponse")
                .map_err(|e| format!("configs of {}: {e:#}", class.class_name))?;
        configs.insert(class.class_name.clone(), response.configs);
    }
    Ok(PluginEntry {
        command: command.clone(),
        info,
        configs,
    })
}

/// Executables directly in `dir`, or `dir` itself if it is one.
pub fn scan(dir: &Path) -> Vec<PluginCommand> {
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
