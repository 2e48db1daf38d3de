//! Kafka Connect's config providers: a connector config value may hold references such as
//! `${file:/etc/secrets/db.properties:password}`, `${env:DB_PASSWORD}` or
//! `${dir:/run/secrets:db-password}`, named by the worker file's `config.providers=file,env,dir`
//! and `config.providers.NAME.class=...` (Kafka's class names), with `.param.*` settings.
//!
//! References are resolved on the worker just before a connector instance or a task starts;
//! the controller stores and returns them unresolved, and task configs a connector plans from
//! resolved values get their references back before they leave the worker ([`reverse`]). What
//! a reference resolved to is kept as a secret for redaction ([`Redactor`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, LazyLock, RwLock};

use regex::Regex;

/// Kafka's pattern: `${PROVIDER:[PATH:]KEY}`.
static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$\{([^}]*?):(([^}]*?):)?([^}]*?)\}").expect("the reference pattern compiles")
});

#[derive(Debug, Clone)]
enum Provider {
    /// `FileConfigProvider`: a key of a properties file.
    File { allowed: Option<Vec<PathBuf>> },
    /// `DirectoryConfigProvider`: the contents of a file of a directory.
    Directory { allowed: Option<Vec<PathBuf>> },
    /// `EnvVarConfigProvider`: an environment variable of the worker.
    Env { allowlist: Option<Regex> },
}

/// The providers a worker file configures.
#[derive(Debug, Clone, Default)]
pub struct ConfigProviders {
    providers: BTreeMap<String, Provider>,
}

/// A connector or task config with its references resolved.
pub struct Resolved {
    pub config: BTreeMap<String, String>,
    /// What references resolved to.
    pub secrets: Vec<String>,
}

impl ConfigProviders {
    /// Reads `config.providers` and `config.providers.NAME.*` from worker settings; an error
    /// is (key, message).
    pub fn from_values(
        values: &BTreeMap<String, String>,
    ) -> Result<ConfigProviders, (String, String)> {
        let mut providers = BTreeMap::new();
        let Some(names) = values.get("config.providers") else {
            if let Some(key) = values.keys().find(|k| k.starts_with("config.providers.")) {
                return Err((
                    key.clone(),
                    "set, but config.providers names no provider".into(),
                ));
            }
            return Ok(ConfigProviders::default());
        };
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let class_key = format!("config.providers.{name}.class");
            let class = values.get(&class_key).map(|c| c.trim()).ok_or_else(|| {
                (
                    class_key.clone(),
                    format!("missing: config.providers names {name:?}"),
                )
            })?;
            let param = |p: &str| values.get(&format!("config.providers.{name}.param.{p}"));
            let allowed = || {
                param("allowed.paths").map(|paths| {
                    paths
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(PathBuf::from)
                        .collect::<Vec<_>>()
                })
            };
            let short = class.rsplit('.').next().unwrap_or(class);
            let provider = match short {
                "FileConfigProvider" => Provider::File { allowed: allowed() },
                "DirectoryConfigProvider" => Provider::Directory { allowed: allowed() },
                "EnvVarConfigProvider" => Provider::Env {
                    allowlist: match param("allowlist.pattern") {
                        None => None,
                        Some(p) => Some(Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                            (
                                format!("config.providers.{name}.param.allowlist.pattern"),
                                format!("not a regular expression: {e}"),
                            )
                        })?),
                    },
                },
                _ => {
                    return Err((
                        class_key,
                        format!(
                            "unknown provider class {class:?}: expected FileConfigProvider, \
                             DirectoryConfigProvider or EnvVarConfigProvider \
                             (org.apache.kafka.common.config.provider.*)"
                        ),
                    ))
                }
            };
            providers.insert(name.to_string(), provider);
        }
        Ok(ConfigProviders { providers })
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Resolves every reference to a configured provider in `config`'s values (references to
    /// providers not configured stay as they are, as in Kafka Connect). A reference that
    /// cannot be resolved is an error naming the key and the reference, never a value.
    pub fn resolve(&self, config: &BTreeMap<String, String>) -> Result<Resolved, String> {
        let mut secrets = BTreeSet::new();
        let mut resolved = BTreeMap::new();
        for (key, value) in config {
            if self.providers.is_empty() || !value.contains("${") {
                resolved.insert(key.clone(), value.clone());
                continue;
            }
            let mut out = String::with_capacity(value.len());
            let mut last = 0;
            for found in REFERENCE.captures_iter(value) {
                let whole = found.get(0).expect("a match has group 0");
                let name = &found[1];
                let Some(provider) = self.providers.get(name) else {
                    continue;
                };
                let path = found.get(3).map(|m| m.as_str()).unwrap_or_default();
                let item = &found[4];
                let what = whole.as_str();
                let secret = provider
                    .lookup(path, item)
                    .map_err(|e| format!("{key}: {what}: {e}"))?;
                out.push_str(&value[last..whole.start()]);
                out.push_str(&secret);
                last = whole.end();
                secrets.insert(secret);
            }
            out.push_str(&value[last..]);
            resolved.insert(key.clone(), out);
        }
        Ok(Resolved {
            config: resolved,
            secrets: secrets.into_iter().collect(),
        })
    }
}

/// Whether `path` is one of `allowed` or under one, compared without `..` tricks.
fn allowed_path(path: &Path, allowed: &Option<Vec<PathBuf>>) -> Result<(), String> {
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "{}: a path with .. is not followed",
            path.display()
        ));
    }
    if !path.is_absolute() {
        return Err(format!("{}: not an absolute path", path.display()));
    }
    match allowed {
        None => Ok(()),
        Some(list) if list.iter().any(|a| path.starts_with(a)) => Ok(()),
        Some(_) => Err(format!(
            "{} is outside the provider's allowed.paths",
            path.display()
        )),
    }
}

impl Provider {
    fn lookup(&self, path: &str, item: &str) -> Result<String, String> {
        match self {
            Provider::File { allowed } => {
                let file = Path::new(path);
                allowed_path(file, allowed)?;
                let bytes =
                    std::fs::read(file).map_err(|e| format!("read {}: {e}", file.display()))?;
                let values = sluice_model::ConfigFile::parse_properties(file, &bytes)
                    .map_err(|e| format!("not a properties file: {e}"))?;
                values
                    .get(item)
                    .map(str::to_string)
                    .ok_or_else(|| format!("no key {item:?} in {}", file.display()))
            }
            Provider::Directory { allowed } => {
                let dir = Path::new(path);
                allowed_path(dir, allowed)?;
                if item.contains('/') || item == ".." || item == "." {
                    return Err(format!("{item:?} is not a file name"));
                }
                let file = dir.join(item);
                std::fs::read_to_string(&file).map_err(|e| format!("read {}: {e}", file.display()))
            }
            Provider::Env { allowlist } => {
                if !path.is_empty() {
                    return Err("the env provider takes no path: ${env:NAME}".into());
                }
                if let Some(allow) = allowlist {
                    if !allow.is_match(item) {
                        return Err(format!(
                            "{item} is not matched by the provider's allowlist.pattern"
                        ));
                    }
                }
                std::env::var(item).map_err(|_| format!("no environment variable {item}"))
            }
        }
    }
}

/// Puts references back into task configs planned from resolved values, as Kafka Connect's
/// reverse transform does: a task value equal to what a connector key's references resolved
/// to becomes the connector's value with its references again.
pub fn reverse(
    raw: &BTreeMap<String, String>,
    resolved: &BTreeMap<String, String>,
    tasks: &mut [BTreeMap<String, String>],
) {
    for task in tasks {
        for (key, value) in task.iter_mut() {
            let (Some(raw_value), Some(resolved_value)) = (raw.get(key), resolved.get(key)) else {
                continue;
            };
            if raw_value != resolved_value && value == resolved_value {
                value.clone_from(raw_value);
            }
        }
    }
}

/// Shortest value hidden: shorter ones would hide ordinary words of a message.
const SHORTEST_SECRET: usize = 4;

/// The secrets a worker knows (resolved references, values of PASSWORD keys), hidden from
/// the texts it reports: status traces, logs of failures, DLQ headers.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<BTreeSet<String>>>,
}

/// What a secret reads as.
pub const HIDDEN: &str = "[hidden]";

/// The process's secrets: one worker per process, and every part of it (units, tasks,
/// connector output) hides the same ones.
static PROCESS: LazyLock<Redactor> = LazyLock::new(Redactor::default);

impl Redactor {
    /// The redactor of this process (clones share their secrets).
    pub fn process() -> Redactor {
        PROCESS.clone()
    }

    pub fn learn(&self, secrets: impl IntoIterator<Item = String>) {
        let mut known = self.secrets.write().unwrap_or_else(|p| p.into_inner());
        for secret in secrets {
            if secret.len() >= SHORTEST_SECRET {
                known.insert(secret);
            }
        }
    }

    /// `text` with every known secret replaced by `[hidden]`, longest first (a secret that
    /// holds another is hidden whole).
    pub fn redact(&self, text: &str) -> String {
        let known = self.secrets.read().unwrap_or_else(|p| p.into_inner());
        if known.is_empty() || text.is_empty() {
            return text.to_string();
        }
        let mut secrets: Vec<&String> =
            known.iter().filter(|s| text.contains(s.as_str())).collect();
        if secrets.is_empty() {
            return text.to_string();
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = text.to_string();
        for secret in secrets {
            out = out.replace(secret.as_str(), HIDDEN);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_dir_and_env_references_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let props = dir.path().join("db.properties");
        std::fs::write(&props, "user=app\npassword=s3cr3t:pw\n").unwrap();
        std::fs::write(dir.path().join("token"), "tok-123").unwrap();
        std::env::set_var("SLUICE_TEST_PROVIDER_VAR", "from-env");
        let providers = ConfigProviders::from_values(&map(&[
            ("config.providers", "file, dir,env"),
            (
                "config.providers.file.class",
                "org.apache.kafka.common.config.provider.FileConfigProvider",
            ),
            ("config.providers.dir.class", "DirectoryConfigProvider"),
            (
                "config.providers.env.class",
                "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
            ),
        ]))
        .unwrap();
        let p = props.display();
        let d = dir.path().display();
        let raw = map(&[
            ("connection.user", &format!("${{file:{p}:user}}")),
            (
                "connection.url",
                &format!("jdbc:postgresql://h/db?password=${{file:{p}:password}}&x=1"),
            ),
            ("token", &format!("${{dir:{d}:token}}")),
            ("env", "${env:SLUICE_TEST_PROVIDER_VAR}"),
            ("other", "${vault:secret/x:y}"),
            ("plain", "value"),
        ]);
        let resolved = providers.resolve(&raw).unwrap();
        assert_eq!(resolved.config["connection.user"], "app");
        assert_eq!(
            resolved.config["connection.url"],
            "jdbc:postgresql://h/db?password=s3cr3t:pw&x=1"
        );
        assert_eq!(resolved.config["token"], "tok-123");
        assert_eq!(resolved.config["env"], "from-env");
        assert_eq!(resolved.config["other"], "${vault:secret/x:y}");
        assert_eq!(resolved.config["plain"], "value");
        assert_eq!(resolved.secrets.len(), 4);

        // Task configs planned from resolved values get their references back.
        let mut tasks = vec![resolved.config.clone()];
        tasks[0].insert("task.id".into(), "0".into());
        reverse(&raw, &resolved.config, &mut tasks);
        assert_eq!(tasks[0]["connection.user"], raw["connection.user"]);
        assert_eq!(tasks[0]["connection.url"], raw["connection.url"]);
        assert_eq!(tasks[0]["plain"], "value");
        assert_eq!(tasks[0]["task.id"], "0");

        let redactor = Redactor::default();
        redactor.learn(resolved.secrets);
        assert_eq!(
            redactor.redact("login failed for app with s3cr3t:pw"),
            "login failed for app with [hidden]"
        );
    }

    #[test]
    fn unresolvable_references_and_bad_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let props = dir.path().join("db.properties");
        std::fs::write(&props, "user=app\n").unwrap();
        let providers = ConfigProviders::from_values(&map(&[
            ("config.providers", "file,env"),
            ("config.providers.file.class", "FileConfigProvider"),
            (
                "config.providers.file.param.allowed.paths",
                &dir.path().display().to_string(),
            ),
            ("config.providers.env.class", "EnvVarConfigProvider"),
            ("config.providers.env.param.allowlist.pattern", "DB_.*"),
        ]))
        .unwrap();
        let p = props.display();
        let error = |value: String| {
            providers
                .resolve(&map(&[("k", &value)]))
                .err()
                .expect("refused")
        };
        assert!(error(format!("${{file:{p}:password}}")).contains("k: ${file:"));
        assert!(error(format!("${{file:{p}:password}}")).contains("no key \"password\""));
        assert!(error("${file:/etc/passwd:root}".into())
            .contains("outside the provider's allowed.paths"));
        assert!(error(format!("${{file:{}/../x:y}}", dir.path().display())).contains(".."));
        assert!(error("${env:HOME}".into()).contains("allowlist.pattern"));
        assert!(
            error("${env:DB_SURELY_NOT_SET_ANYWHERE}".into()).contains("no environment variable")
        );

        let e = ConfigProviders::from_values(&map(&[("config.providers", "vault")])).unwrap_err();
        assert_eq!(e.0, "config.providers.vault.class");
        let e = ConfigProviders::from_values(&map(&[
            ("config.providers", "vault"),
            (
                "config.providers.vault.class",
                "com.example.VaultConfigProvider",
            ),
        ]))
        .unwrap_err();
        assert!(e.1.contains("unknown provider class"), "{}", e.1);
    }
}
