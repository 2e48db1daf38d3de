//! The deployment files under `deploy/` checked by the tools that run them: the systemd units
//! pass `systemd-analyze verify` (with the built binary in place of the installed one) and stay
//! within an exposure level under `systemd-analyze security`, and every variable their command
//! lines use is set in the environment file `deploy/etc/` installs beside them.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The units, as installed, with the binary at the path this build made.
fn units(dir: &Path) -> Vec<(String, PathBuf)> {
    let sluice = harness::sluice_bin();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(harness::repo().join("deploy/systemd")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("/usr/local/bin/sluice", sluice.to_str().unwrap());
        std::fs::write(dir.join(&name), text).unwrap();
        units.push((name, dir.join(path.file_name().unwrap())));
    }
    units.sort();
    units
}

/// What to verify for a unit file: a template is verified as one instance of it.
fn instance(dir: &Path, name: &str) -> PathBuf {
    dir.join(name.replace("@.service", "@w1.service"))
}

#[test]
fn the_systemd_units_verify_and_are_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let units = units(dir.path());
    let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["sluice-controller.service", "sluice-worker@.service"]
    );
    for (name, _) in &units {
        let unit = instance(dir.path(), name);
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .expect("systemd-analyze (systemd) is needed to check the units");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{name}: {said}"
        );

        // systemd's exposure score, 0 (locked down) to 10 (exposed): both stay "OK" (< 4.0).
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=39", "--no-pager"])
            .arg(&unit)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        let level = said
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .unwrap_or_default()
            .to_string();
        assert!(out.status.success(), "{name}: exposure {level}\n{said}");
        eprintln!("{name}: exposure {level}");
    }
}

#[test]
fn every_variable_a_unit_uses_is_set_in_its_environment_file() {
    for (unit, env) in [
        ("sluice-controller.service", "controller.env"),
        ("sluice-worker@.service", "worker.env"),
    ] {
        let text =
            std::fs::read_to_string(harness::repo().join("deploy/systemd").join(unit)).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart");
        let used: Vec<&str> = exec
            .split(['$', '{', '}', ' '])
            .filter(|w| w.starts_with("SLUICE_"))
            .collect();
        assert!(!used.is_empty(), "{unit}: {exec}");
        assert!(
            text.contains(&format!("EnvironmentFile=/etc/sluice/{env}")),
            "{unit} reads /etc/sluice/{env}"
        );
        let set = std::fs::read_to_string(harness::repo().join("deploy/etc").join(env)).unwrap();
        for variable in used {
            assert!(
                set.lines().any(|l| l.starts_with(&format!("{variable}="))),
                "{unit} uses {variable}, which deploy/etc/{env} does not set"
            );
        }
    }
}

/// Asserts `sluice ARGS` is a command line sluice takes: its flags exist and its positional
/// arguments fit (checked by asking for the help of it).
fn assert_sluice_takes(args: &[String]) {
    let out = Command::new(harness::sluice_bin())
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `command:` of each service of a compose file, flow (`[a, b]`) or block (`- a`) style.
fn compose_commands(text: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("command:") else {
            continue;
        };
        let rest = rest.trim();
        if let Some(flow) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            commands.push(flow.split(',').map(|a| a.trim().to_string()).collect());
        } else if rest.is_empty() {
            let mut args = Vec::new();
            while let Some(item) = lines.peek().and_then(|l| l.trim_start().strip_prefix("- ")) {
                args.push(item.trim().to_string());
                lines.next();
            }
            commands.push(args);
        }
    }
    commands
}

/// Each service of the compose cluster runs a command line `sluice` takes (its flags exist,
/// its positional arguments fit), and the image's recipe builds that binary.
#[test]
fn the_compose_cluster_runs_command_lines_sluice_takes() {
    let text =
        std::fs::read_to_string(harness::repo().join("deploy/container/compose.yaml")).unwrap();
    let commands = compose_commands(&text);
    assert_eq!(
        commands.len(),
        4,
        "a controller and three workers: {commands:?}"
    );
    for args in &commands {
        assert_sluice_takes(args);
    }
    let recipe =
        std::fs::read_to_string(harness::repo().join("deploy/container/Dockerfile")).unwrap();
    assert!(recipe.contains("--bin sluice") && recipe.contains("USER nonroot"));
}

/// The Kubernetes manifests pass Kubernetes' own schemas, strictly (no field the API would
/// drop), and each container runs a command line `sluice` takes.
#[test]
fn the_kubernetes_manifests_match_kubernetes_schemas_and_run_command_lines_sluice_takes() {
    let manifests = harness::repo().join("deploy/kubernetes/sluice.yaml");
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.30.0"])
        .arg(&manifests)
        .env("PYTHONPATH", harness::tools::python_path(&[]))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && !said.contains("ERROR"), "{said}");
    for resource in [
        "configmap/sluice-config",
        "service/sluice-controller",
        "statefulset/sluice-controller",
        "deployment/sluice-worker",
    ] {
        assert!(
            said.contains(&format!("passed for resource {resource}")),
            "{said}"
        );
    }

    // Each container's `args:` (block style), with Kubernetes' $(VAR) references filled in.
    let text = std::fs::read_to_string(&manifests).unwrap();
    let mut containers = 0;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() != "args:" {
            continue;
        }
        let mut args = Vec::new();
        while let Some(item) = lines.peek().and_then(|l| l.trim_start().strip_prefix("- ")) {
            args.push(
                item.trim()
                    .replace("$(POD_NAME)", "sluice-worker-0")
                    .replace("$(KAFKA_BOOTSTRAP)", "kafka:9092"),
            );
            lines.next();
        }
        assert_sluice_takes(&args);
        containers += 1;
    }
    assert_eq!(containers, 2, "the controller's and the worker's");
}

/// `deploy/sluice-deploy` over its ssh transport (an `ssh` on PATH that runs the command here,
/// as sshd would hand it to the remote shell) onto one host with both roles, no TLS
/// (`insecure`): files by --check, a cluster that reports its worker joined, nothing to change
/// on a second run, everything stopped by --stop.
#[test]
fn sluice_deploy_brings_a_host_up_over_ssh_and_a_second_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = harness::DevKafka::start(dir.path(), &[]);
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("ssh.log");
    std::fs::write(
        bin.join("ssh"),
        "#!/bin/sh\n# Stands in for ssh: notes its arguments, then runs the command as the remote \
         shell would.\nprintf '%s\\n' \"$*\" >> \"$SSH_LOG\"\nwhile [ \"$1\" != \"--\" ]; do \
         shift; done; shift\nexec sh -c \"$*\"\n",
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(bin.join("ssh"))
        .status()
        .unwrap();
    // A root with a space and a quote: the commands must survive the remote shell.
    let root = dir.path().join("solo host's root");
    let inventory = dir.path().join("inventory.toml");
    std::fs::write(
        &inventory,
        format!(
            "[cluster]\nkafka = \"{}\"\nbinary = \"{}\"\nsupervisor = \"direct\"\ninsecure = true\n\
             port = {}\nrest_port = {}\n\n[[hosts]]\nname = \"solo\"\naddress = \"127.0.0.1\"\n\
             roles = [\"controller\", \"worker\"]\ntransport = \"ssh:deploy@solo\"\nroot = \"{}\"\n",
            kafka.bootstrap,
            harness::sluice_bin().display(),
            harness::free_port(),
            harness::free_port(),
            root.display()
        ),
    )
    .unwrap();
    let env = [
        (
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        ),
        ("SSH_LOG", log.display().to_string()),
    ];
    let deploy = |args: &[&str]| harness::sluice_deploy(&inventory, args, &env);

    let (code, out) = deploy(&["--check"]);
    assert_eq!(code, 2, "{out}");
    for file in [
        "/usr/local/bin/sluice",
        "/etc/sluice/controller.env",
        "/etc/sluice/worker.env",
        "/etc/sluice/worker.properties",
    ] {
        assert!(out.contains(&format!("would write {file} (new)")), "{out}");
    }
    assert!(!root.exists(), "--check wrote files");

    let (code, out) = deploy(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("joined: solo"), "{out}");
    let ssh = std::fs::read_to_string(&log).unwrap();
    assert!(
        ssh.lines()
            .all(|l| l.starts_with("-o BatchMode=yes deploy@solo -- ")),
        "{ssh}"
    );
    let (code, out) = deploy(&["--check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("the hosts match the inventory"), "{out}");
    assert!(
        out.contains("sluice-worker@solo.service running, unchanged"),
        "{out}"
    );

    let pids: Vec<i32> = ["controller", "worker"]
        .iter()
        .map(|name| {
            std::fs::read_to_string(root.join(format!("run/sluice/{name}.pid")))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(pids.iter().all(|p| harness::process_alive(*p)));
    let (code, out) = deploy(&["--stop"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        pids.iter().all(|p| !harness::process_alive(*p)),
        "still running after --stop: {out}"
    );
}
