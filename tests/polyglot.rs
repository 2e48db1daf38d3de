//! Connectors in another language: the Python SDK's example connectors in a real pipeline
//! through Kafka, the conformance kit (`sluice plugins check`) against the Rust and Python
//! examples and a deliberately broken connector, and plugin discovery reporting broken
//! executables to the controller.
//!
//! Needs python3 and pip: the harness installs grpcio, protobuf and grpcio-tools under the
//! target folder ([`harness::tools`]); the tests put the SDK's source tree first on PYTHONPATH
//! so that they test this checkout.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::cluster::total_records;
use harness::*;

fn python_examples() -> PathBuf {
    harness::repo().join("connectors/python")
}

/// PYTHONPATH with the SDK's source tree first, then the provisioned packages.
fn sdk_python_path() -> String {
    tools::python_path(&[&harness::repo().join("connector-sdk/python/src")])
}

fn python_env() -> Vec<(&'static str, String)> {
    vec![("PYTHONPATH", sdk_python_path())]
}

/// Runs a SQL query on a SQLite file with Python's sqlite3 (no SQLite client in the
/// workspace); one output line per row, columns separated by tabs.
fn sqlite(database: &Path, query: &str) -> Vec<String> {
    if !database.exists() {
        return Vec::new();
    }
    let script = "import sqlite3, sys\n\
                  db = sqlite3.connect(sys.argv[1], timeout=10)\n\
                  try:\n    rows = db.execute(sys.argv[2]).fetchall()\n\
                  except sqlite3.OperationalError:\n    rows = []\n\
                  for row in rows:\n    print('\\t'.join(str(c) for c in row))\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(database)
        .arg(query)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "sqlite query failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn row_count(database: &Path) -> usize {
    sqlite(database, "SELECT COUNT(*) FROM records")
        .first()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The Python lines source reads a growing file into Kafka; the Python SQLite sink writes the
/// topic into a table, storing its Kafka offsets in the same transaction. The source's process
/// is killed and restarted by the worker, then the whole worker stops and starts again: every
/// line ends up exactly once in SQLite, the source resumes at its committed offset, and the
/// sink's stored offsets match the topic.
#[test]
fn python_source_and_sink_run_a_pipeline_through_kafka_with_restart_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["py-lines:1"]);
    let worker = worker_properties(dir.path(), Some(&kafka.bootstrap));
    add_plugin_path(dir.path(), worker, &python_examples());
    let input = dir.path().join("input.txt");
    let database = dir.path().join("out.db");
    std::fs::write(
        dir.path().join("source.properties"),
        format!(
            "name=py-source\nconnector.class=PyLinesSource\nfile={}\ntopic=py-lines\nbatch.size=50\n",
            input.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sink.properties"),
        format!(
            "name=py-sink\nconnector.class=sluice.python.SqliteSink\ndatabase={}\ntopics=py-lines\n",
            database.display()
        ),
    )
    .unwrap();
    let files = [worker, "source.properties", "sink.properties"];
    let start = || {
        let mut args = vec!["standalone", "--progress-interval", "1"];
        args.extend_from_slice(&files);
        Sluice::start_with_env(dir.path(), &args, &python_env())
    };

    append_lines(&input, 0..300);
    let mut sluice = start();
    wait_for("300 rows in SQLite", Duration::from_secs(60), || {
        row_count(&database) >= 300
    });

    // The source's connector process dies; the worker restarts it from committed offsets.
    let pid = sluice
        .connector_pid("py-source")
        .expect("the log names the source's process");
    // SAFETY: kill(2) on a process this test's worker started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    append_lines(&input, 300..600);
    wait_for(
        "600 rows after the source process was killed",
        Duration::from_secs(90),
        || row_count(&database) >= 600,
    );
    wait_for("a new source process", Duration::from_secs(30), || {
        sluice.connector_pid("py-source").is_some_and(|p| p != pid)
    });

    // A clean stop commits both sides; after the restart the source goes on where it was.
    sluice.stop_cleanly();
    let before_restart = total_records(&kafka.bootstrap, "py-lines");
    append_lines(&input, 600..900);
    let mut sluice = start();
    wait_for(
        "900 rows after the restart",
        Duration::from_secs(60),
        || row_count(&database) >= 900,
    );
    wait_for(
        "the 300 new lines in Kafka",
        Duration::from_secs(30),
        || total_records(&kafka.bootstrap, "py-lines") >= before_restart + 300,
    );
    sluice.stop_cleanly();

    let after_restart = total_records(&kafka.bootstrap, "py-lines");
    assert_eq!(
        after_restart,
        before_restart + 300,
        "the restarted source re-read lines it had committed"
    );
    // Every line once, with its text (quotes, backslashes, tabs, non-ASCII) and number, keyed
    // by line number.
    let rows = sqlite(
        &database,
        "SELECT key, value FROM records ORDER BY CAST(key AS INTEGER)",
    );
    assert_eq!(rows.len(), 900, "rows: {:?}", &rows[..rows.len().min(5)]);
    for (i, row) in rows.iter().enumerate() {
        let (key, value) = row.split_once('\t').expect("two columns");
        assert_eq!(key, (i + 1).to_string(), "row {row:?}");
        let value: serde_json::Value = serde_json::from_str(value).expect("JSON value");
        assert_eq!(value["line"], input_line(i), "row {i} holds {value}");
        assert_eq!(value["number"], i + 1, "row {i} holds {value}");
    }
    // The sink stored the next offset to read with the data: the end of the topic.
    let stored = sqlite(
        &database,
        "SELECT topic, partition, next_offset FROM sluice_offsets",
    );
    assert_eq!(
        stored,
        vec![format!("py-lines\t0\t{after_restart}")],
        "offsets stored by the sink"
    );
}

/// `sluice plugins check` with a class and config; (exit code, stdout).
fn check(class: &str, config: &[&str], command: &[&str]) -> (i32, String) {
    let mut args = vec!["plugins", "check", "--class", class];
    for c in config {
        args.push("--config");
        args.push(c);
    }
    args.push("--");
    args.extend_from_slice(command);
    let out = Command::new(sluice_bin())
        .args(&args)
        .envs(python_env())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run sluice plugins check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        format!("{stdout}\n{stderr}"),
    )
}

/// The outcome the kit printed for a check.
fn outcome<'a>(output: &'a str, name: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no check {name} in:\n{output}"))
}

fn assert_all_pass(what: &str, (code, output): (i32, String), streams: &[&str]) {
    assert_eq!(code, 0, "{what} failed the kit:\n{output}");
    assert!(!output.contains("FAIL"), "{what}:\n{output}");
    for name in [
        "launch",
        "handshake",
        "handshake.negotiation",
        "handshake.no-common-version",
        "describe",
        "unknown-class",
        "heartbeat",
        "validate.good",
        "validate.bad",
        "plan",
        "cancellation",
        "shutdown",
        "worker-gone",
    ]
    .iter()
    .chain(streams)
    {
        assert_eq!(outcome(&output, name), "PASS", "{what}: {name}\n{output}");
    }
}

const SOURCE_CHECKS: &[&str] = &[
    "source.open-first",
    "source.open",
    "source.no-credit",
    "source.byte-credit",
    "source.record-credit",
    "source.heartbeat-busy",
    "source.batches",
    "source.stop",
];
const SINK_CHECKS: &[&str] = &[
    "sink.open-first",
    "sink.open",
    "sink.assigned",
    "sink.batches",
    "sink.flush",
    "sink.stop",
];

/// The conformance kit passes the Rust SDK's and the Python SDK's examples, sources and sinks,
/// and fails a deliberately broken connector in exactly the checks it breaks.
#[test]
fn the_conformance_kit_passes_both_sdks_examples_and_fails_a_broken_connector() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    append_lines(&input, 0..200);
    let file = |name: &str| format!("file={}", dir.path().join(name).display());
    let sluice = sluice_bin();
    let sluice = sluice.to_str().unwrap();
    let py = |name: &str| python_examples().join(name).display().to_string();

    // Rust SDK examples (built into the sluice binary).
    let rust_file = [sluice, "connector", "file"];
    let input_key = file("in.txt");
    assert_all_pass(
        "Rust FileStreamSource",
        check("FileStreamSource", &[&input_key, "topic=t"], &rust_file),
        SOURCE_CHECKS,
    );
    let rust_out = file("rust-out.txt");
    // The Rust SDK takes feature sink.shared_memory: its batches through shared memory too.
    let rust_sink = [SINK_CHECKS, &["sink.shared-memory"]].concat();
    assert_all_pass(
        "Rust FileStreamSink",
        check("FileStreamSink", &[&rust_out, "topics=t"], &rust_file),
        &rust_sink,
    );
    assert_all_pass(
        "Rust DatagenSource",
        check(
            "DatagenSource",
            &["topic=t"],
            &[sluice, "connector", "datagen"],
        ),
        SOURCE_CHECKS,
    );
    // The sink wrote the kit's records: through the stream, then through shared memory.
    assert_eq!(count_lines(&dir.path().join("rust-out.txt")), 400);

    // Python SDK examples.
    let lines = py("lines-source");
    assert_all_pass(
        "Python PyLinesSource",
        check("PyLinesSource", &[&input_key, "topic=t"], &[&lines]),
        SOURCE_CHECKS,
    );
    let database = format!("database={}", dir.path().join("kit.db").display());
    let sqlite_sink = py("sqlite-sink");
    let (code, output) = check("PySqliteSink", &[&database, "topics=t"], &[&sqlite_sink]);
    // The Python SDK does not take feature sink.shared_memory: not checked.
    assert_eq!(outcome(&output, "sink.shared-memory"), "SKIP", "{output}");
    assert_all_pass("Python PySqliteSink", (code, output), SINK_CHECKS);
    let datagen = py("datagen");
    assert_all_pass(
        "Python PyDatagenSource",
        check("PyDatagenSource", &["topic=t"], &[&datagen]),
        SOURCE_CHECKS,
    );

    // The broken connector fails the checks of the rules it breaks, and only those.
    let broken = harness::repo().join("tests/fixtures/broken-connector");
    let (code, output) = check("BrokenSource", &["topic=t"], &[broken.to_str().unwrap()]);
    assert_eq!(code, 1, "{output}");
    for name in [
        "handshake.negotiation",
        "handshake.no-common-version",
        "heartbeat",
        "validate.bad",
        "source.no-credit",
        "source.batches",
        "worker-gone",
    ] {
        assert_eq!(outcome(&output, name), "FAIL", "{name}\n{output}");
    }
    for name in [
        "launch",
        "handshake",
        "describe",
        "unknown-class",
        "validate.good",
        "plan",
        "source.open-first",
        "source.open",
        "shutdown",
    ] {
        assert_eq!(outcome(&output, name), "PASS", "{name}\n{output}");
    }
    assert!(
        output.contains("the nonce must be echoed"),
        "reasons are printed:\n{output}"
    );
    assert!(
        output.contains("index 0 must be sent explicitly"),
        "a dropped partition index 0 is named:\n{output}"
    );

    // An executable that is no connector fails at launch with what it printed.
    let script = dir.path().join("not-a-connector");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'cannot start: missing library' >&2\nexit 3\n",
    )
    .unwrap();
    make_executable(&script);
    let (code, output) = check("X", &[], &[script.to_str().unwrap()]);
    assert_eq!(code, 1, "{output}");
    assert_eq!(outcome(&output, "launch"), "FAIL", "{output}");
    assert!(output.contains("missing library"), "{output}");
}

/// Worker w1 of `controller`, its plugin path `plugins`, with the Python SDK importable.
fn python_worker(dir: &Path, controller: &Controller, kafka: &DevKafka, plugins: &Path) -> Sluice {
    let file = "worker-w1.properties";
    std::fs::write(
        dir.join(file),
        format!("plugin.path={}\n", plugins.display()),
    )
    .unwrap();
    Sluice::start_with_env(
        dir,
        &[
            "worker",
            "--id",
            "w1",
            "--controller",
            &controller.url(),
            "--kafka",
            &kafka.bootstrap,
            file,
        ],
        &python_env(),
    )
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A worker whose plugin path holds the Python examples and two broken executables reports the
/// working classes and the broken ones, with their reasons, to the controller; it still runs.
#[test]
fn a_worker_reports_the_plugins_it_found_and_the_broken_ones() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for name in ["lines-source", "sqlite-sink"] {
        std::os::unix::fs::symlink(python_examples().join(name), plugins.join(name)).unwrap();
    }
    let crashes = plugins.join("crashes");
    std::fs::write(
        &crashes,
        "#!/bin/sh\necho 'fatal: no licence key' >&2\nexit 3\n",
    )
    .unwrap();
    make_executable(&crashes);
    let silent = plugins.join("silent");
    // Listens nowhere and never exits by itself: discovery gives up on it.
    std::fs::write(&silent, "#!/bin/sh\nexec sleep 600\n").unwrap();
    make_executable(&silent);
    std::fs::write(plugins.join("README"), "not executable: ignored\n").unwrap();

    let kafka = DevKafka::start(dir.path(), &[]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", 10.0);
    let _worker = python_worker(dir.path(), &controller, &kafka, &plugins);
    let list = || {
        run_sluice(
            dir.path(),
            &[
                "plugins",
                "--controller",
                &controller.url(),
                "--output",
                "json",
                "list",
            ],
        )
    };
    let mut output = String::new();
    wait_for("the worker's plugins", Duration::from_secs(60), || {
        let (code, stdout, _) = list();
        output = stdout;
        code == 0 && output.contains("PySqliteSink")
    });
    let listed: serde_json::Value = serde_json::from_str(&output).expect("JSON");
    let classes: Vec<&str> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["className"].as_str().unwrap())
        .collect();
    for class in [
        "PyLinesSource",
        "PySqliteSink",
        "FileStreamSource",
        "DatagenSource",
    ] {
        assert!(classes.contains(&class), "{class} in {classes:?}");
    }
    let broken = listed["broken"].as_array().expect("broken plugins listed");
    let reason = |name: &str| {
        broken
            .iter()
            .find(|b| b["command"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} not reported broken: {output}"))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(reason("crashes").contains("no licence key"), "{output}");
    assert!(reason("silent").contains("socket"), "{output}");
    assert_eq!(broken.len(), 2, "{output}");
    assert_eq!(broken[0]["workers"][0], "w1", "{output}");

    // The table form shows them too.
    let (code, table, _) = run_sluice(
        dir.path(),
        &["plugins", "--controller", &controller.url(), "list"],
    );
    assert_eq!(code, 0);
    assert!(
        table.contains("BROKEN PLUGIN") && table.contains("no licence key"),
        "{table}"
    );
}

/// A manifest beside an executable (`sluice plugins manifest`) spares the worker starting it to
/// discover it, and the plugin still runs its connectors. Once the executable changes, the
/// manifest is stale: ignored with a warning, and discovery starts the executable again, or,
/// as `plugin.discovery` says, reports it broken (service_load) or refuses to start
/// (hybrid_fail).
#[test]
fn a_plugin_manifest_spares_discovery_the_launch_until_the_executable_changes() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let launched = dir.path().join("launched.txt");
    let launches = || {
        std::fs::read_to_string(&launched)
            .unwrap_or_default()
            .lines()
            .count()
    };
    // The Python lines source behind a wrapper that counts its starts.
    let wrapper = plugins.join("lines");
    let write_wrapper = |revision: &str| {
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n# revision {revision}\necho started >> '{}'\n\
                 export PYTHONPATH='{}'\nexec '{}' \"$@\"\n",
                launched.display(),
                sdk_python_path(),
                python_examples().join("lines-source").display()
            ),
        )
        .unwrap();
        make_executable(&wrapper);
    };
    write_wrapper("1");

    let (code, out, err) = run_sluice(
        dir.path(),
        &["plugins", "manifest", plugins.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("lines.sluice-manifest.json (PyLinesSource)"),
        "{out}"
    );
    assert_eq!(launches(), 1, "the manifest command starts it once");
    let check = || {
        run_sluice(
            dir.path(),
            &["plugins", "manifest", "--check", plugins.to_str().unwrap()],
        )
    };
    let (code, out, err) = check();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("current") && out.contains("lines"), "{out}");

    let kafka = DevKafka::start(dir.path(), &["manifest-lines:1"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", 10.0);
    let api = harness::cluster::Api::new(&controller.address);
    let file = "worker-w1.properties";
    std::fs::write(
        dir.path().join(file),
        format!("plugin.path={}\n", plugins.display()),
    )
    .unwrap();
    let url = controller.url();
    let args = [
        "worker",
        "--id",
        "w1",
        "--controller",
        &url,
        "--kafka",
        &kafka.bootstrap,
        file,
    ];
    let worker = Sluice::start(dir.path(), &args);
    wait_for("the worker to join", Duration::from_secs(60), || {
        api.live_workers() == 1
    });
    let log = worker.output();
    assert!(log.contains("from_manifests=1"), "{log}");
    assert_eq!(launches(), 1, "discovery did not start it");

    // The class it describes runs as usual.
    let input = dir.path().join("input.txt");
    append_lines(&input, 0..20);
    api.create(
        "py",
        &[
            ("connector.class", "PyLinesSource"),
            ("file", input.to_str().unwrap()),
            ("topic", "manifest-lines"),
        ],
        sluice_proto::api::v1::TargetState::Running,
    );
    wait_for("20 lines in Kafka", Duration::from_secs(60), || {
        total_records(&kafka.bootstrap, "manifest-lines") >= 20
    });
    assert!(launches() > 1, "its connector and task processes started");
    drop(worker);

    // A new revision of the executable: the manifest no longer describes it.
    write_wrapper("2");
    let (code, out, err) = check();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("stale") && out.contains("the executable changed"),
        "{out}"
    );
    let worker = Sluice::start(dir.path(), &args);
    wait_for("discovery", Duration::from_secs(60), || {
        worker.output().contains("plugins discovered")
    });
    let log = worker.output();
    assert!(
        log.contains("plugin manifest ignored: stale") && log.contains("from_manifests=0"),
        "{log}"
    );
    drop(worker);

    // A script's manifest covers what the plugin declares beside it (`.sluice-covers`): a
    // change of a covered file makes it stale, though the executable is the same.
    let helper = plugins.join("lib");
    std::fs::create_dir(&helper).unwrap();
    std::fs::write(helper.join("code.py"), "version = 1\n").unwrap();
    std::fs::write(
        plugins.join("lines.sluice-covers"),
        "# what the wrapper runs\nlib\n",
    )
    .unwrap();
    let (code, out, err) = run_sluice(
        dir.path(),
        &["plugins", "manifest", plugins.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = check();
    assert_eq!(code, 0, "{out}{err}");
    std::fs::write(helper.join("code.py"), "version = 2\n").unwrap();
    let (code, out, err) = check();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("stale") && out.contains("a file it covers changed"),
        "{out}"
    );

    // Kafka Connect's plugin.discovery: service_load starts nothing without a current
    // manifest (the executable is reported broken); hybrid_fail refuses to start at all.
    let strict = |mode: &str| {
        std::fs::write(
            dir.path().join(file),
            format!(
                "plugin.path={}\nplugin.discovery={mode}\n",
                plugins.display()
            ),
        )
        .unwrap();
    };
    strict("service_load");
    let before = launches();
    let worker = Sluice::start(dir.path(), &args);
    wait_for("discovery", Duration::from_secs(60), || {
        worker.output().contains("plugins discovered")
    });
    let log = worker.output();
    assert!(
        log.contains("plugin.discovery=service_load starts no executable without one")
            && log.contains("broken=1"),
        "{log}"
    );
    assert_eq!(launches(), before, "service_load started the executable");
    // Nor is any built-in started to be discovered: the `sluice` executable describes them.
    assert!(
        log.contains("builtin=11") && !log.contains("started connector process"),
        "{log}"
    );
    drop(worker);

    strict("hybrid_fail");
    let (code, _, err) = run_sluice(dir.path(), &args);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("plugin.discovery=hybrid_fail: no current manifest for")
            && err.contains("lines"),
        "{err}"
    );
    assert_eq!(launches(), before, "hybrid_fail started the executable");

    // A fresh manifest satisfies both.
    let (code, out, err) = run_sluice(
        dir.path(),
        &["plugins", "manifest", plugins.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let worker = Sluice::start(dir.path(), &args);
    wait_for("discovery", Duration::from_secs(60), || {
        worker.output().contains("plugins discovered")
    });
    assert!(
        worker.output().contains("from_manifests=1"),
        "{}",
        worker.output()
    );
}

/// The Python stubs committed in the SDK match proto/ (regenerated with grpcio-tools).
#[test]
fn the_python_sdk_stubs_match_the_proto() {
    let out = Command::new("python3")
        .arg(harness::repo().join("connector-sdk/python/generate.py"))
        .arg("--check")
        .envs(python_env())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "stubs out of date: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python SDK's own unit tests (config validation, data conversion), with the standard
/// library's unittest.
#[test]
fn the_python_sdk_unit_tests_pass() {
    let sdk = harness::repo().join("connector-sdk/python");
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests", "-t", "."])
        .current_dir(&sdk)
        .envs(python_env())
        .output()
        .expect("run python3");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "Python SDK unit tests failed:\n{report}"
    );
    assert!(report.contains("\nOK"), "{report}");
}

/// A connector's output lines are logged at the level each names (docs/connector-protocol.md
/// §1, "Log levels"): a leading level word after any timestamp, or a JSON line's `level`;
/// anything else at INFO. The worker's filter then applies (DEBUG is not shown at `info`).
#[test]
fn connector_output_is_logged_at_the_level_each_line_names() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let wrapper = plugins.join("leveled");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             echo 'WARN wrapper plain warning' >&2\n\
             echo '{{\"level\":\"error\",\"msg\":\"wrapper json error\"}}' >&2\n\
             echo '2026-12-04 03:00:00,123 DEBUG wrapper: debug detail' >&2\n\
             echo 'wrapper says hello' >&2\n\
             export PYTHONPATH='{}'\nexec '{}' \"$@\"\n",
            sdk_python_path(),
            python_examples().join("lines-source").display()
        ),
    )
    .unwrap();
    make_executable(&wrapper);
    let worker = worker_properties(dir.path(), None);
    add_plugin_path(dir.path(), worker, &plugins);
    let input = dir.path().join("input.txt");
    append_lines(&input, 0..10);
    std::fs::write(
        dir.path().join("source.properties"),
        format!(
            "name=leveled\nconnector.class=PyLinesSource\nfile={}\ntopic=leveled\n",
            input.display()
        ),
    )
    .unwrap();
    let mut sluice = Sluice::standalone(dir.path(), &[worker, "source.properties"]);
    wait_for("the task to run", Duration::from_secs(60), || {
        sluice.connector_pid("leveled").is_some()
    });
    let log = sluice.output();
    for (needle, level) in [
        ("wrapper plain warning", "WARN"),
        ("wrapper json error", "ERROR"),
        ("wrapper says hello", "INFO"),
    ] {
        let levels = levels_of(&log, needle);
        assert!(
            !levels.is_empty() && levels.iter().all(|l| l == level),
            "{needle}: {levels:?}\n{log}"
        );
    }
    assert!(!log.contains("debug detail"), "DEBUG filtered out:\n{log}");
    sluice.stop_cleanly();
}

/// Resident memory of process `pid`, in bytes (VmRSS).
fn resident_bytes(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Connectors that misbehave are stopped, each with an error naming what it did, and harm no
/// one else: beside a datagen → file pipeline on the same worker, one connector floods the
/// worker with batches it has no credit for, one sends a batch past the 256 MiB message limit,
/// one prints a 1 MiB line that is not UTF-8 and then prints in a loop (throttled, cut, and
/// kept running), and one answers the worker's connection with random bytes. The worker stays
/// up, small, and the pipeline keeps flowing.
#[test]
fn misbehaving_connectors_are_stopped_without_harming_the_worker_or_its_other_connectors() {
    use harness::cluster::{datagen, file_sink, pairs, Api};
    use sluice_proto::api::v1 as api;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let hostile = plugins.join("hostile");
    std::os::unix::fs::symlink(
        harness::repo().join("tests/fixtures/hostile-connector"),
        &hostile,
    )
    .unwrap();
    let kafka = DevKafka::start(dir.path(), &["healthy:1"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", 10.0);
    let worker = python_worker(dir.path(), &controller, &kafka, &plugins);
    let api = Api::new(&controller.address);
    wait_for("the worker to join", Duration::from_secs(60), || {
        api.live_workers() == 1
    });

    let out = dir.path().join("out.txt");
    let running = api::TargetState::Running;
    api.create("gen", &pairs(&datagen("healthy", "1", "500")), running);
    api.create(
        "out",
        &pairs(&file_sink("healthy", out.to_str().unwrap())),
        running,
    );
    let hostile_config = |mode: &'static str| {
        vec![
            ("connector.class", "HostileSource"),
            ("topic", "hostile"),
            ("mode", mode),
            ("restart.max.attempts", "1"),
            ("restart.backoff.initial.ms", "100"),
        ]
    };
    for mode in ["flood", "huge", "chatty"] {
        api.create(mode, &hostile_config(mode), running);
    }

    let trace_of = |name: &str, task: bool| -> Option<(api::State, String)> {
        let status = api.status(name).ok()?;
        if task {
            let t = status.tasks.first()?;
            Some((t.state(), t.trace.clone()))
        } else {
            let c = status.connector?;
            Some((c.state(), c.trace))
        }
    };
    // Failed, with a trace holding one of `needles`.
    let failed_with = |name: &str, task: bool, needles: &[&str]| {
        let mut last = None;
        let timeout = Duration::from_secs(60);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            last = trace_of(name, task).or(last);
            if let Some((api::State::Failed, trace)) = &last {
                assert!(needles.iter().any(|n| trace.contains(n)), "{name}: {trace}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} not FAILED within {timeout:?}: {last:?}\n{}",
                worker.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    failed_with("flood", true, &["does not keep to its credit"]);
    failed_with("huge", true, &["too large"]);
    wait_for("the chatty task running", Duration::from_secs(60), || {
        trace_of("chatty", true).is_some_and(|(s, _)| s == api::State::Running)
    });
    // From now on a new launch of it is no gRPC server.
    std::fs::write(plugins.join("hostile.garbage"), "").unwrap();
    api.create("garbage", &hostile_config("chatty"), running);
    // Garbage on its socket breaks the connection or the handshake, whichever it meets first.
    failed_with(
        "garbage",
        false,
        &["handshake", "connect to connector process"],
    );

    // The chatty one keeps running: its output is cut and throttled, not fatal.
    wait_for(
        "the chatty connector's output throttled",
        Duration::from_secs(60),
        || {
            worker
                .output()
                .contains("output lines dropped: more than 1000 a second")
        },
    );
    let log = worker.output();
    assert!(
        log.contains("[cut: longer than 16 KiB]"),
        "a long line is cut"
    );
    assert!(
        log.contains("start of a long line \u{FFFD}\u{FFFD} yyy"),
        "bytes that are not UTF-8 are replaced"
    );
    assert_eq!(
        trace_of("chatty", true).map(|(s, _)| s),
        Some(api::State::Running)
    );

    // The worker is up, small, and the pipeline still flows.
    let before = count_lines(&out);
    wait_for(
        "the healthy pipeline to keep flowing",
        Duration::from_secs(30),
        || count_lines(&out) > before + 500,
    );
    assert!(
        api.status("gen").unwrap().tasks[0].state() == api::State::Running
            && api.status("out").unwrap().tasks[0].state() == api::State::Running
    );
    let rss = resident_bytes(worker.pid());
    assert!(
        rss > 0 && rss < 300 << 20,
        "worker resident memory {rss} bytes"
    );
    assert!(
        total_records(&kafka.bootstrap, "healthy") > 0,
        "records reached Kafka"
    );
}

/// Secrets a connector quotes in its errors reach no output: LeakySink reports every record as
/// bad with a message and trace naming its PASSWORD-typed `password` and its `token` (resolved
/// from `${env:...}` by the worker). The dead-letter queue gets every record with its context
/// headers, and neither those headers nor the worker's log hold either secret.
#[test]
fn secrets_a_connector_quotes_in_its_errors_are_hidden_in_dead_letter_headers_and_logs() {
    use harness::cluster::{produce, read_all};
    const PASSWORD: &str = "typed-pa55word-41";
    const TOKEN: &str = "resolved-t0ken-42";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plugins = d.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::os::unix::fs::symlink(
        harness::repo().join("tests/fixtures/leaky-sink"),
        plugins.join("leaky-sink"),
    )
    .unwrap();
    let kafka = DevKafka::start(d, &["leaky-in:1", "leaky-dlq:1"]);
    let worker = worker_properties(d, Some(&kafka.bootstrap));
    add_plugin_path(d, worker, &plugins);
    let mut text = std::fs::read_to_string(d.join(worker)).unwrap();
    text.push_str(
        "config.providers=env\n\
         config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider\n",
    );
    std::fs::write(d.join(worker), text).unwrap();
    std::fs::write(
        d.join("leaky.properties"),
        format!(
            "name=leaky\nconnector.class=LeakySink\ntopics=leaky-in\npassword={PASSWORD}\n\
             token=${{env:LEAKY_TOKEN}}\nerrors.tolerance=all\nerrors.log.enable=true\n\
             errors.log.include.messages=true\nerrors.deadletterqueue.topic.name=leaky-dlq\n\
             errors.deadletterqueue.context.headers.enable=true\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n"
        ),
    )
    .unwrap();
    let mut env = python_env();
    env.push(("LEAKY_TOKEN", TOKEN.to_string()));
    let mut sluice = Sluice::start_with_env(d, &["standalone", worker, "leaky.properties"], &env);
    let values: Vec<String> = (0..5).map(|i| format!("record {i}")).collect();
    produce(&kafka.bootstrap, "leaky-in", &values);
    let mut dead = Vec::new();
    wait_for(
        "every record in the dead-letter queue",
        Duration::from_secs(60),
        || {
            dead = read_all(&kafka.bootstrap, "leaky-dlq");
            dead.len() >= values.len()
        },
    );
    for (_, _, value, headers) in &dead {
        let message = &headers["__connect.errors.exception.message"];
        assert!(
            message.contains("login refused for password [hidden] with token [hidden]"),
            "{headers:?}"
        );
        let all: String = headers.values().cloned().collect::<Vec<_>>().join("\n");
        assert!(
            !all.contains(PASSWORD) && !all.contains(TOKEN),
            "{headers:?}"
        );
        assert!(value.as_deref().is_some_and(|v| v.starts_with(b"record ")));
    }
    sluice.stop_cleanly();
    let log = sluice.output();
    assert!(log.contains("login refused for password [hidden]"), "{log}");
    assert!(!log.contains(PASSWORD) && !log.contains(TOKEN), "{log}");
}
