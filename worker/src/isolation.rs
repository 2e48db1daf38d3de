//! What a connector process gets from the worker: an environment holding only the variables
//! the worker file allows (`connector.env.allowlist`, default [`DEFAULT_ALLOWLIST`]) and the
//! protocol's own, so the worker's secrets (a config provider's `${env:...}` variables, its
//! token) never reach connector code; and optional resource limits (`connector.limit.*`)
//! applied with `setrlimit` before the connector's code runs, so one that leaks memory or
//! file descriptors fails alone; and, with `connector.working.dir`, a working directory of its
//! own.

use std::sync::OnceLock;

use sluice_model::{ConfigError, ConfigFile};

/// Variables passed by default: what programs and interpreters need to run (PATH, the
/// dynamic loader's path, Python's and pyenv's), locale and time zone, temporary files, TLS trust, the AWS credential chain (the S3 sink's fallback), and
/// logging. `NAME_*` matches a prefix.
pub const DEFAULT_ALLOWLIST: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_*",
    "TZ",
    "TMPDIR",
    "PYTHON*",
    "PYENV_*",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "AWS_*",
    "RUST_BACKTRACE",
    "RUST_LOG",
    "SLUICE_LOG",
];

/// Resource limits of each connector process; `None`: the worker's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// `connector.limit.memory.bytes`: its address space (RLIMIT_AS).
    pub memory_bytes: Option<u64>,
    /// `connector.limit.open.files`: its file descriptors (RLIMIT_NOFILE).
    pub open_files: Option<u64>,
    /// `connector.limit.cpu.seconds`: CPU time before the kernel stops it (RLIMIT_CPU).
    pub cpu_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    /// Names (or `PREFIX*`) of the worker's variables a connector process sees.
    pub allowlist: Vec<String>,
    pub limits: Limits,
    /// `connector.working.dir`: each connector's processes run in `DIR/<connector name>`
    /// (made, mode 0700); `None`: in the worker's own working directory, where relative paths
    /// in connector configs resolve as they do in Kafka Connect.
    pub working_dir: Option<std::path::PathBuf>,
}

impl Default for Isolation {
    fn default() -> Isolation {
        Isolation {
            allowlist: DEFAULT_ALLOWLIST.iter().map(|s| s.to_string()).collect(),
            limits: Limits::default(),
            working_dir: None,
        }
    }
}

/// Worker keys read here.
pub const KEYS: &[&str] = &[
    "connector.env.allowlist",
    "connector.limit.memory.bytes",
    "connector.limit.open.files",
    "connector.limit.cpu.seconds",
    "connector.working.dir",
];

impl Isolation {
    pub fn from_file(file: &ConfigFile) -> Result<Isolation, ConfigError> {
        let mut isolation = Isolation::default();
        if let Some(list) = file.get("connector.env.allowlist") {
            isolation.allowlist = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        }
        let limit = |key: &str| -> Result<Option<u64>, ConfigError> {
            match file.get(key) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(file.error(
                        key,
                        format!("invalid value {v:?}: expected a positive integer"),
                    )),
                },
            }
        };
        isolation.limits = Limits {
            memory_bytes: limit("connector.limit.memory.bytes")?,
            open_files: limit("connector.limit.open.files")?,
            cpu_seconds: limit("connector.limit.cpu.seconds")?,
        };
        isolation.working_dir = file
            .get("connector.working.dir")
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(std::path::PathBuf::from);
        Ok(isolation)
    }

    /// Whether the worker's variable `name` is passed on.
    pub fn allows(&self, name: &str) -> bool {
        self.allowlist
            .iter()
            .any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == allowed,
            })
    }

    /// The working directory of connector `name`'s processes, made if missing (mode 0700:
    /// only the worker's user enters it); `None`: the worker's own.
    pub fn working_dir_of(&self, name: &str) -> std::io::Result<Option<std::path::PathBuf>> {
        let Some(root) = &self.working_dir else {
            return Ok(None);
        };
        // A connector name may hold anything; its folder name holds no separator or dot-dot.
        let folder: String = name
            .chars()
            .map(|c| if c == '/' || c == '\0' { '_' } else { c })
            .collect();
        let folder = match folder.as_str() {
            "" | "." | ".." => format!("_{folder}"),
            _ => folder,
        };
        let dir = root.join(folder);
        std::fs::create_dir_all(&dir)?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Some(dir))
    }

    /// The worker's variables a connector process gets.
    pub fn environment(&self) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        std::env::vars_os()
            .filter(|(name, _)| name.to_str().is_some_and(|n| self.allows(n)))
            .collect()
    }
}

static PROCESS: OnceLock<Isolation> = OnceLock::new();

/// Sets this worker's isolation, once, before any connector starts.
pub fn configure(isolation: Isolation) {
    let _ = PROCESS.set(isolation);
}

/// This worker's isolation (the defaults unless [`configure`]d).
pub fn current() -> &'static Isolation {
    PROCESS.get_or_init(Isolation::default)
}

/// Applies `limits` to the calling process: run in the child between fork and exec.
///
/// # Safety
/// Only async-signal-safe calls (setrlimit), as `pre_exec` requires.
pub unsafe fn apply_limits(limits: &Limits) -> std::io::Result<()> {
    let set = |resource, value: Option<u64>| -> std::io::Result<()> {
        let Some(value) = value else { return Ok(()) };
        let limit = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: setrlimit is async-signal-safe and reads only `limit`.
        if unsafe { libc::setrlimit(resource, &limit) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    set(libc::RLIMIT_AS, limits.memory_bytes)?;
    set(libc::RLIMIT_NOFILE, limits.open_files)?;
    set(libc::RLIMIT_CPU, limits.cpu_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_allowlist_takes_names_and_prefixes() {
        let isolation = Isolation::default();
        for name in [
            "PATH",
            "LC_ALL",
            "PYTHONPATH",
            "AWS_ACCESS_KEY_ID",
            "SLUICE_LOG",
        ] {
            assert!(isolation.allows(name), "{name}");
        }
        for name in [
            "DB_PASSWORD",
            "SLUICE_TOKEN",
            "PATHS",
            "KAFKA_SASL_PASSWORD",
        ] {
            assert!(!isolation.allows(name), "{name}");
        }
        let file = ConfigFile::parse_properties(
            Path::new("w.properties"),
            b"connector.env.allowlist=PATH, APP_*\nconnector.limit.open.files=256\n",
        )
        .unwrap();
        let isolation = Isolation::from_file(&file).unwrap();
        assert!(isolation.allows("APP_MODE") && isolation.allows("PATH"));
        assert!(!isolation.allows("HOME"));
        assert_eq!(isolation.limits.open_files, Some(256));
        let file = ConfigFile::parse_properties(
            Path::new("w.properties"),
            b"connector.limit.memory.bytes=lots\n",
        )
        .unwrap();
        let e = Isolation::from_file(&file).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("connector.limit.memory.bytes"));
    }
}
