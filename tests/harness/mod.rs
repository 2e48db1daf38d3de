//! One harness for the integration tests: starts the real `sluice` binary (standalone, the
//! embedded Kafka as its own process), collects its output, sends signals, and waits for
//! conditions with timeouts. No bare sleeps.

#![allow(dead_code)]

pub mod cluster;
pub mod db;
pub mod netns;
pub mod otlp;
pub mod tools;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The workspace's root folder.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the cli crate sits in the workspace")
        .to_path_buf()
}

pub fn sluice_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

/// Polls `condition` until it holds; panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `sluice` process whose stdout and stderr are collected.
pub struct Sluice {
    args: Vec<String>,
    child: Option<Child>,
    output: Arc<Mutex<String>>,
    stdin: Option<std::process::ChildStdin>,
}

impl Sluice {
    pub fn start(dir: &Path, args: &[&str]) -> Sluice {
        Sluice::spawn(dir, args, false, &[])
    }

    /// [`Sluice::start`] with more environment variables (the worker passes its environment
    /// on to connector processes).
    pub fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Sluice {
        Sluice::spawn(dir, args, false, env)
    }

    /// Starts with a pipe to the process's stdin, for [`Sluice::send_line`].
    pub fn start_with_stdin(dir: &Path, args: &[&str]) -> Sluice {
        Sluice::spawn(dir, args, true, &[])
    }

    /// Writes one line to the process's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("started with stdin");
        writeln!(stdin, "{line}").expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    fn spawn(dir: &Path, args: &[&str], with_stdin: bool, env: &[(&str, String)]) -> Sluice {
        let mut child = Command::new(sluice_bin())
            .args(args)
            .current_dir(dir)
            .env("SLUICE_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(if with_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().expect("piped stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped stderr")),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Sluice {
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: child.stdin.take(),
            child: Some(child),
            output,
        }
    }

    /// `sluice standalone WORKER CONNECTORS...` in `dir`.
    pub fn standalone(dir: &Path, files: &[&str]) -> Sluice {
        let mut args = vec!["standalone", "--progress-interval", "1"];
        args.extend_from_slice(files);
        Sluice::start(dir, &args)
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we spawned and a valid signal number.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Waits for the process to exit; panics after `timeout`.
    /// SIGTERM, then asserts a clean exit (code 0) within a minute, showing the output if not.
    pub fn stop_cleanly(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait(Duration::from_secs(60));
        assert_eq!(status.code(), Some(0), "output:\n{}", self.output());
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for sluice") {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "sluice did not exit within {timeout:?}; output:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid of the connector process currently running `connector` (from the worker log).
    pub fn connector_pid(&self, connector: &str) -> Option<i32> {
        let needle = format!("running connector={connector} pid=");
        self.output().lines().rev().find_map(|line| {
            let at = line.find(&needle)? + needle.len();
            line[at..].split_whitespace().next()?.parse().ok()
        })
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: show what the process said last.
            let output = self.output();
            let lines: Vec<&str> = output.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            eprintln!(
                "---- last output of {:?} ----\n{}",
                self.args,
                tail.join("\n")
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `sluice dev-kafka` in its own process, so a broker outlives worker restarts.
pub struct DevKafka {
    process: Sluice,
    pub bootstrap: String,
}

impl DevKafka {
    pub fn start(dir: &Path, topics: &[&str]) -> DevKafka {
        DevKafka::start_with(dir, topics, &[])
    }

    /// [`DevKafka::start`] with more arguments (e.g. `--default-partitions 3`).
    pub fn start_with(dir: &Path, topics: &[&str], extra: &[&str]) -> DevKafka {
        let mut args = vec!["dev-kafka"];
        for t in topics {
            args.push("--topic");
            args.push(t);
        }
        args.extend_from_slice(extra);
        let process = Sluice::start_with_stdin(dir, &args);
        let mut bootstrap = String::new();
        wait_for(
            "dev-kafka bootstrap address",
            Duration::from_secs(20),
            || match process
                .output()
                .lines()
                .find_map(|l| l.strip_prefix("bootstrap.servers=").map(str::to_string))
            {
                Some(b) => {
                    bootstrap = b;
                    true
                }
                None => false,
            },
        );
        DevKafka { process, bootstrap }
    }

    /// Kills the broker process (SIGKILL): Kafka is gone.
    pub fn kill(&mut self) {
        self.process.signal(libc::SIGKILL);
        self.process.wait(Duration::from_secs(10));
    }

    /// Injects a fault (`fail API COUNT ERROR`, `broker-down ID`, `broker-up ID`) and waits
    /// until the broker process says it took it.
    pub fn fault(&mut self, line: &str) {
        let before = self.process.output().matches("fault injected").count();
        self.process.send_line(line);
        wait_for(
            &format!("fault {line:?} injected"),
            Duration::from_secs(10),
            || self.process.output().matches("fault injected").count() > before,
        );
    }
}

/// Whether a process with this pid is running (a zombie, dead but not yet reaped by whoever
/// inherited it, is not).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The level word of each log line of `output` that contains `needle` (the word after the
/// timestamp, as the worker's log writes lines).
pub fn levels_of(output: &str, needle: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// Number of complete lines in a file (0 if it does not exist).
pub fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// Line `i` of the test input: numbered, with characters that JSON must escape now and then.
pub fn input_line(i: usize) -> String {
    match i % 7 {
        0 => format!("line {i:06} \"quoted\" back\\slash\ttab ünïcödé €"),
        3 => format!("line {i:06} {{\"json\": [1, 2]}}"),
        _ => format!("line {i:06} lorem ipsum dolor sit amet"),
    }
}

/// Writes lines `range` of the test input to `path`, appending.
pub fn append_lines(path: &Path, range: std::ops::Range<usize>) {
    append_lines_of(path, range.map(input_line));
}

/// Appends `lines` to `path`, one per line.
pub fn append_lines_of(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open input");
    let mut text = String::new();
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    file.write_all(text.as_bytes()).expect("append input");
}

/// Appends `total` lines in chunks on a background thread, so the source follows a growing
/// file; returns when started.
pub fn grow_file(
    path: PathBuf,
    total: usize,
    chunk: usize,
    every: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = 0;
        while next < total {
            let end = (next + chunk).min(total);
            append_lines(&path, next..end);
            next = end;
            std::thread::sleep(every);
        }
    })
}

/// Compares a sink file with the input: returns (missing, duplicates, out of order), where a
/// duplicate is a repeat of a line already seen.
pub fn verify(input: &Path, output: &Path) -> (usize, usize, usize) {
    let input = std::fs::read_to_string(input).expect("read input");
    let output = std::fs::read_to_string(output).unwrap_or_default();
    let expected: Vec<&str> = input.lines().collect();
    let mut seen = std::collections::HashSet::new();
    let mut firsts = Vec::new();
    let mut duplicates = 0;
    for line in output.lines() {
        if seen.insert(line) {
            firsts.push(line);
        } else {
            duplicates += 1;
        }
    }
    let missing = expected.iter().filter(|l| !seen.contains(*l)).count();
    let out_of_order = firsts
        .iter()
        .zip(expected.iter())
        .filter(|(a, b)| a != b)
        .count();
    (missing, duplicates, out_of_order)
}

/// A worker file for tests; `bootstrap` None uses the embedded Kafka.
pub fn worker_properties(dir: &Path, bootstrap: Option<&str>) -> &'static str {
    let mut text = String::new();
    if let Some(b) = bootstrap {
        text.push_str(&format!("bootstrap.servers={b}\n"));
    }
    text.push_str(
        "key.converter=org.apache.kafka.connect.json.JsonConverter\n\
         value.converter=org.apache.kafka.connect.json.JsonConverter\n\
         key.converter.schemas.enable=true\n\
         value.converter.schemas.enable=true\n\
         offset.storage.file.filename=connect.offsets\n\
         offset.flush.interval.ms=500\n\
         producer.compression.type=lz4\n\
         consumer.session.timeout.ms=6000\n\
         consumer.heartbeat.interval.ms=500\n",
    );
    std::fs::write(dir.join("worker.properties"), text).expect("write worker file");
    "worker.properties"
}

/// A connector file from key/value pairs, written in `dir`; its name.
pub fn connector_file(dir: &Path, name: &str, pairs: &[(&str, String)]) -> String {
    let mut text = format!("name={name}\n");
    for (k, v) in pairs {
        text.push_str(&format!("{k}={v}\n"));
    }
    let file = format!("{name}.properties");
    std::fs::write(dir.join(&file), text).expect("write connector file");
    file
}

/// `sluice standalone` with the worker file for `kafka` and these connector files.
pub fn standalone_on(dir: &Path, kafka: &DevKafka, files: &[String]) -> Sluice {
    let worker = worker_properties(dir, Some(&kafka.bootstrap));
    let mut args = vec!["standalone", worker];
    args.extend(files.iter().map(String::as_str));
    Sluice::start(dir, &args)
}

/// Kafka's quickstart file connectors: test.txt → connect-test → test.sink.txt.
pub fn file_connectors(dir: &Path) -> [&'static str; 2] {
    std::fs::write(
        dir.join("source.properties"),
        "name=local-file-source\nconnector.class=FileStreamSource\ntasks.max=1\nfile=test.txt\ntopic=connect-test\n",
    )
    .expect("write source file");
    std::fs::write(
        dir.join("sink.properties"),
        "name=local-file-sink\nconnector.class=FileStreamSink\ntasks.max=1\nfile=test.sink.txt\ntopics=connect-test\n",
    )
    .expect("write sink file");
    ["source.properties", "sink.properties"]
}

/// A free TCP port on 127.0.0.1 (bound and released; for processes that must keep their
/// address across a restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// `sluice controller` listening on `listen` (`127.0.0.1:0` for any port), with its store
/// in `dir/data`.
pub struct Controller {
    pub process: Sluice,
    /// HOST:PORT it listens on.
    pub address: String,
    /// HOST:PORT its REST API listens on.
    pub rest: String,
}

impl Controller {
    pub fn start(dir: &Path, listen: &str, worker_timeout_secs: f64) -> Controller {
        Controller::start_with(dir, listen, worker_timeout_secs, &[])
    }

    /// [`Controller::start`] with more flags (TLS, tokens).
    pub fn start_with(
        dir: &Path,
        listen: &str,
        worker_timeout_secs: f64,
        extra: &[&str],
    ) -> Controller {
        let data = dir.join("data");
        let timeout = worker_timeout_secs.to_string();
        let mut args = vec![
            "controller",
            "--listen",
            listen,
            "--rest-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8 path"),
            "--worker-timeout",
            &timeout,
        ];
        args.extend_from_slice(extra);
        let process = Sluice::start(dir, &args);
        let mut address = String::new();
        wait_for(
            "the controller to listen",
            Duration::from_secs(20),
            || match process
                .output()
                .lines()
                .find_map(|l| l.strip_prefix("listening on "))
            {
                Some(a) => {
                    address = a.trim().to_string();
                    true
                }
                None => false,
            },
        );
        let rest = process
            .output()
            .lines()
            .find_map(|l| l.strip_prefix("rest api listening on "))
            .map(|a| a.trim().to_string())
            .expect("the controller's REST API address");
        Controller {
            process,
            address,
            rest,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The base URL of its Kafka Connect REST API.
    pub fn rest_url(&self) -> String {
        format!("http://{}", self.rest)
    }
}

/// `sluice worker --id ID --controller URL --kafka BOOTSTRAP WORKER_FILE` in `dir`.
pub fn start_worker(dir: &Path, id: &str, controller_url: &str, kafka: &str) -> Sluice {
    start_worker_with(dir, id, controller_url, kafka, "")
}

/// [`start_worker`] with `extra` lines in the worker file.
pub fn start_worker_with(
    dir: &Path,
    id: &str,
    controller_url: &str,
    kafka: &str,
    extra: &str,
) -> Sluice {
    start_worker_flags(dir, id, controller_url, kafka, extra, &[])
}

/// [`start_worker_with`] with these variables in the worker's environment.
pub fn start_worker_env(
    dir: &Path,
    id: &str,
    controller_url: &str,
    kafka: &str,
    extra: &str,
    env: &[(&str, String)],
) -> Sluice {
    start_worker_full(dir, id, controller_url, kafka, extra, &[], env)
}

/// [`start_worker_with`] with more command-line flags (e.g. `--shutdown-timeout 8`).
pub fn start_worker_flags(
    dir: &Path,
    id: &str,
    controller_url: &str,
    kafka: &str,
    extra: &str,
    flags: &[&str],
) -> Sluice {
    start_worker_full(dir, id, controller_url, kafka, extra, flags, &[])
}

fn start_worker_full(
    dir: &Path,
    id: &str,
    controller_url: &str,
    kafka: &str,
    extra: &str,
    flags: &[&str],
    env: &[(&str, String)],
) -> Sluice {
    let file = format!("worker-{id}.properties");
    std::fs::write(
        dir.join(&file),
        format!(
            "offset.flush.interval.ms=500\n\
             producer.compression.type=lz4\n\
             consumer.session.timeout.ms=6000\n\
             consumer.heartbeat.interval.ms=500\n{extra}"
        ),
    )
    .expect("write worker file");
    let mut args = vec![
        "worker",
        "--id",
        id,
        "--controller",
        controller_url,
        "--kafka",
        kafka,
    ];
    args.extend_from_slice(flags);
    args.push(&file);
    Sluice::start_with_env(dir, &args, env)
}

/// Appends `plugin.path=PATH` to the worker file `worker` in `dir`.
pub fn add_plugin_path(dir: &Path, worker: &str, path: &Path) {
    let mut text = std::fs::read_to_string(dir.join(worker)).expect("read worker file");
    text.push_str(&format!("plugin.path={}\n", path.display()));
    std::fs::write(dir.join(worker), text).expect("write worker file");
}

/// grpcurl (the harness provisions the real binary, see [`tools`]; `GRPCURL` overrides it).
/// An empty `method` lists the services. Returns (success, stdout and stderr).
pub fn grpcurl(address: &str, method: &str, body: Option<&str>) -> (bool, String) {
    grpcurl_with(&["-plaintext"], address, method, body)
}

/// [`grpcurl`] with these flags instead of `-plaintext` (e.g. `-cacert FILE -H HEADER`).
pub fn grpcurl_with(
    flags: &[&str],
    address: &str,
    method: &str,
    body: Option<&str>,
) -> (bool, String) {
    let program = std::env::var_os("GRPCURL")
        .map(PathBuf::from)
        .unwrap_or_else(|| tools::tools().grpcurl.clone());
    let mut command = Command::new(&program);
    command.args(flags);
    if let Some(body) = body {
        command.args(["-d", body]);
    }
    command.arg(address);
    if !method.is_empty() {
        command.arg(method);
    } else {
        command.arg("list");
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs `sluice ARGS` to completion: (exit code, stdout, stderr).
pub fn run_sluice(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(sluice_bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `deploy/sluice-deploy INVENTORY ARGS...` with more environment variables: (exit code,
/// standard output and error together).
pub fn sluice_deploy(inventory: &Path, args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    let out = Command::new(repo().join("deploy/sluice-deploy"))
        .arg(inventory)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("run deploy/sluice-deploy");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `sluice plugins check --class CLASS --config k=v … -- sluice connector PLUGIN`: the
/// conformance kit against a built-in plugin (`connector.class` in `pairs` is left out);
/// whether it passed, and its output.
pub fn plugins_check(class: &str, pairs: &[(&str, String)], plugin: &str) -> (bool, String) {
    let mut args: Vec<String> = ["plugins", "check", "--class", class]
        .map(String::from)
        .to_vec();
    for (k, v) in pairs.iter().filter(|(k, _)| *k != "connector.class") {
        args.push("--config".into());
        args.push(format!("{k}={v}"));
    }
    args.extend([
        "--".into(),
        sluice_bin().to_str().unwrap().into(),
        "connector".into(),
        plugin.into(),
    ]);
    let out = Command::new(sluice_bin())
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("run sluice plugins check");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
