//! Connector processes: launch an executable with a private Unix socket, connect, handshake,
//! forward its output to our logs, watch it (exit and heartbeats) and stop it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use hyper_util::rt::TokioIo;
use sluice_proto::connector::v1::{
    self as proto, connector_client::ConnectorClient, H2_CONNECTION_WINDOW, H2_STREAM_WINDOW,
    MAX_MESSAGE_BYTES,
};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// Consecutive missed heartbeats after which a connector is deemed hung and killed.
const HEARTBEAT_MISSES: u32 = 3;
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How to start a plugin executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl std::fmt::Display for PluginCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.program.display())?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

/// The connection to a connector process: its calls carry the trace context of the span they
/// are made in.
pub type Conn = sluice_telemetry::Propagate<Channel>;
pub type Client = ConnectorClient<Conn>;

/// A running connector process, connected and past its handshake.
pub struct ConnectorProcess {
    pub client: Client,
    /// The connection `client` uses, for calls with a codec of their own (the sink stream's).
    pub channel: Conn,
    pub plugin: proto::PluginInfo,
    /// The features the connector agreed to in its handshake.
    pub features: Vec<String>,
    pub pid: u32,
    label: String,
    exited: watch::Receiver<Option<String>>,
    kill: CancellationToken,
    stdin: Option<ChildStdin>,
    // Holds the private socket directory until the process is gone.
    _dir: tempfile::TempDir,
}

/// Turns feature `sink.shared_memory` off when `false` (to compare, or where a connector may
/// not open the worker's /proc entries).
pub const ENV_SINK_SHARED_MEMORY: &str = "SLUICE_SINK_SHARED_MEMORY";

/// The optional protocol features this worker implements (docs/connector-protocol.md §2).
fn offered_features() -> Vec<String> {
    // Shared memory is a Linux memfd, named to the connector through /proc.
    let shared = std::env::var(ENV_SINK_SHARED_MEMORY).map_or(true, |v| v != "false");
    if cfg!(target_os = "linux") && shared {
        vec![proto::FEATURE_SINK_SHARED_MEMORY.to_string()]
    } else {
        Vec::new()
    }
}

impl ConnectorProcess {
    /// Starts `command`, connects to its socket and completes the handshake.
    pub async fn launch(command: &PluginCommand, label: &str) -> anyhow::Result<ConnectorProcess> {
        ConnectorProcess::start(command, label, None).await
    }

    /// [`ConnectorProcess::launch`] for connector `name`, in its own working directory when
    /// the worker gives each one (`connector.working.dir`).
    pub async fn launch_connector(
        command: &PluginCommand,
        name: &str,
    ) -> anyhow::Result<ConnectorProcess> {
        ConnectorProcess::start(command, name, Some(name)).await
    }

    async fn start(
        command: &PluginCommand,
        label: &str,
        connector: Option<&str>,
    ) -> anyhow::Result<ConnectorProcess> {
        let (mut child, dir, socket) = spawn(command, connector)?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(connector = label, pid, command = %command, "started connector process");
        let tail = forward_output(&mut child, label);
        let stdin = child.stdin.take();

        let channel = match connect(&socket, &mut child).await {
            Ok(channel) => channel,
            Err(e) => {
                let _ = child.start_kill();
                let printed = tail.describe().await;
                return Err(e.context(format!(
                    "connect to connector process {pid} ({command}){printed}"
                )));
            }
        };
        let mut client = ConnectorClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let handshake = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client.handshake(proto::HandshakeRequest {
                protocol_versions: proto::PROTOCOL_VERSIONS.to_vec(),
                features: offered_features(),
                worker_version: env!("CARGO_PKG_VERSION").to_string(),
            }),
        )
        .await;
        let response = match handshake {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                let _ = child.start_kill();
                let printed = tail.describe().await;
                bail!(
                    "handshake with {command} failed: {}{printed}",
                    status.message()
                );
            }
            Err(_) => {
                let _ = child.start_kill();
                bail!("handshake with {command} timed out");
            }
        };
        if !proto::PROTOCOL_VERSIONS.contains(&response.protocol_version) {
            let _ = child.start_kill();
            bail!(
                "{command} chose protocol version {}, which this worker does not speak",
                response.protocol_version
            );
        }
        let plugin = response
            .plugin
            .ok_or_else(|| anyhow!("{command} sent no plugin information in its handshake"))?;

        let (exited_tx, exited) = watch::channel(None);
        let kill = CancellationToken::new();
        tokio::spawn(supervise(
            child,
            client.clone(),
            kill.clone(),
            exited_tx,
            label.to_string(),
        ));
        // A feature is in effect when both sides name it: one the worker did not offer is not.
        let offered = offered_features();
        let features = response
            .features
            .into_iter()
            .filter(|f| offered.contains(f))
            .collect();
        Ok(ConnectorProcess {
            client,
            channel,
            plugin,
            features,
            pid,
            label: label.to_string(),
            exited,
            kill,
            stdin,
            _dir: dir,
        })
    }

    /// Resolves when the process has exited or was killed, with the reason.
    pub async fn exited(&self) -> String {
        let mut exited = self.exited.clone();
        let reason = match exited.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "supervisor ended".to_string(),
        };
        reason
    }

    /// Asks the process to exit, then kills it if it has not within the grace period.
    pub async fn shutdown(mut self) {
        let mut client = self.client.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            client.shutdown(proto::ShutdownRequest {}),
        )
        .await;
        self.stdin.take();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.exited())
            .await
            .is_err()
        {
            tracing::warn!(connector = %self.label, pid = self.pid, "connector process did not exit; killing it");
        }
        self.kill.cancel();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.exited()).await;
    }

    /// Kills the process at once.
    pub async fn kill(self) {
        self.kill.cancel();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.exited()).await;
    }
}

impl Drop for ConnectorProcess {
    fn drop(&mut self) {
        self.kill.cancel();
    }
}

/// Starts `command` as a connector: a fresh private socket directory, the protocol's
/// environment, piped stdio, its own process group, killed with the worker. Returns the child,
/// the directory (the socket lives as long as it) and the socket path.
/// `connector` (its name) picks its working directory when the worker gives each its own
/// (`connector.working.dir`).
pub fn spawn(
    command: &PluginCommand,
    connector: Option<&str>,
) -> anyhow::Result<(Child, tempfile::TempDir, PathBuf)> {
    // tempfile creates directories with mode 0700: only this user reaches the socket.
    let dir = tempfile::Builder::new()
        .prefix("sluice-")
        .tempdir()
        .context("create connector socket directory")?;
    let socket = dir.path().join("c.sock");
    let isolation = crate::isolation::current();
    let mut builder = Command::new(&command.program);
    builder
        .args(&command.args)
        // Only the variables allowed: the worker's secrets stay with the worker.
        .env_clear()
        .envs(isolation.environment())
        .env(proto::ENV_SOCKET, &socket)
        .env(
            proto::ENV_PROTOCOL_VERSIONS,
            proto::PROTOCOL_VERSIONS
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        )
        .envs(
            sluice_telemetry::endpoint()
                .map(|endpoint| (sluice_telemetry::ENV_OTLP_ENDPOINT, endpoint)),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C at the terminal reaches the worker only, which
        // then drains the connector instead of losing it mid-batch.
        .process_group(0);
    if let Some(name) = connector {
        let own = isolation
            .working_dir_of(name)
            .with_context(|| format!("make the working directory of connector {name}"))?;
        if let Some(own) = own {
            builder.current_dir(own);
        }
    }
    // The kernel kills the connector if the worker dies, even one that never reads stdin.
    // (It fires when the spawning thread exits; tokio's runtime threads live as long as
    // the runtime, and launches happen on them.)
    let limits = isolation.limits.clone();
    #[cfg(target_os = "linux")]
    // SAFETY: prctl and setrlimit are async-signal-safe and touch no memory of the parent.
    unsafe {
        builder.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            crate::isolation::apply_limits(&limits)
        });
    }
    let child = builder
        .spawn()
        .with_context(|| format!("start connector executable {command}"))?;
    Ok((child, dir, socket))
}

/// Waits for the connector to listen on `socket` (or exit), then opens a gRPC channel to it
/// whose calls carry the trace context of the span they are made in.
pub async fn connect(socket: &std::path::Path, child: &mut Child) -> anyhow::Result<Conn> {
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("connector process exited before serving: {status}");
        }
        if UnixStream::connect(socket).await.is_ok() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("connector did not open its socket within {CONNECT_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let path = socket.to_path_buf();
    let channel = Endpoint::from_static("http://connector")
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .context("open gRPC channel")?;
    Ok(sluice_telemetry::Propagate(channel))
}

/// The last lines a connector printed (stdout and stderr), for the error of a launch that
/// failed or a conformance report.
#[derive(Clone)]
pub struct OutputTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    capacity: usize,
}

/// Longest connector output line passed on whole; the rest of a longer line is dropped.
pub const MAX_OUTPUT_LINE: usize = 16 * 1024;
/// Output lines passed on per second from each of a connector's stdout and stderr; more are
/// counted and dropped (and said so), so a connector printing in a loop cannot flood the
/// worker's log or take its CPU.
pub const MAX_OUTPUT_LINES_PER_SECOND: u32 = 1000;

/// Reads one line into `line` (without its end), at most `max` bytes of it: the rest of a
/// longer line is read and dropped. `None` at the end of the stream; else whether it was cut.
async fn read_line_capped<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    let (mut cut, mut any) = (false, false);
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(any.then_some(cut));
        }
        any = true;
        let end = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..end.unwrap_or(available.len())];
        let room = max.saturating_sub(line.len());
        cut |= chunk.len() > room;
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = end.map_or(available.len(), |i| i + 1);
        reader.consume(used);
        if end.is_some() {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(cut));
        }
    }
}

impl OutputTail {
    /// Reads the child's stdout and stderr line by line, handing each line to `each` and
    /// keeping the last `capacity`. Lines are cut at [`MAX_OUTPUT_LINE`] bytes, read as UTF-8
    /// (anything else replaced), and at most [`MAX_OUTPUT_LINES_PER_SECOND`] a second reach
    /// `each`.
    pub fn collect(
        child: &mut Child,
        capacity: usize,
        each: impl Fn(&str) + Clone + Send + 'static,
    ) -> OutputTail {
        let tail = OutputTail {
            lines: Arc::default(),
            capacity,
        };
        let readers: [Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>; 2] = [
            child.stdout.take().map(|o| Box::new(o) as _),
            child.stderr.take().map(|e| Box::new(e) as _),
        ];
        for reader in readers.into_iter().flatten() {
            let tail = tail.clone();
            let each = each.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(reader);
                let mut bytes = Vec::new();
                let (mut window, mut passed, mut dropped) = (std::time::Instant::now(), 0, 0u64);
                let told = |dropped: u64| {
                    format!(
                        "WARN {dropped} output lines dropped: more than \
                         {MAX_OUTPUT_LINES_PER_SECOND} a second"
                    )
                };
                loop {
                    bytes.clear();
                    let cut = match read_line_capped(&mut reader, &mut bytes, MAX_OUTPUT_LINE).await
                    {
                        Ok(Some(cut)) => cut,
                        Ok(None) | Err(_) => break,
                    };
                    let mut line = String::from_utf8_lossy(&bytes).into_owned();
                    if cut {
                        line.push_str(" [cut: longer than 16 KiB]");
                    }
                    if window.elapsed() >= Duration::from_secs(1) {
                        if dropped > 0 {
                            each(&told(dropped));
                        }
                        (window, passed, dropped) = (std::time::Instant::now(), 0, 0);
                    }
                    if passed < MAX_OUTPUT_LINES_PER_SECOND {
                        passed += 1;
                        each(&line);
                    } else {
                        dropped += 1;
                    }
                    tail.push(line);
                }
                if dropped > 0 {
                    each(&told(dropped));
                }
            });
        }
        tail
    }

    fn push(&self, line: String) {
        if let Ok(mut lines) = self.lines.lock() {
            if lines.len() == self.capacity {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Waits briefly for the pipes to drain (the process has just failed), then describes
    /// what it printed, if anything.
    pub async fn describe(&self) -> String {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let lines = self.lines();
        if lines.is_empty() {
            String::new()
        } else {
            format!("; it printed: {}", lines.join(" | "))
        }
    }
}

/// Logs every line the connector prints (its stdout and stderr are logs only) at the level
/// the line names ([`line_level`]).
fn forward_output(child: &mut Child, label: &str) -> OutputTail {
    let label = label.to_string();
    let redactor = crate::providers::Redactor::process();
    OutputTail::collect(child, 8, move |line| {
        use tracing::Level;
        // A connector may print what it was given: known secrets are hidden.
        let line = redactor.redact(line);
        match line_level(&line) {
            Level::ERROR => tracing::error!(target: "connector", connector = %label, "{line}"),
            Level::WARN => tracing::warn!(target: "connector", connector = %label, "{line}"),
            Level::DEBUG => tracing::debug!(target: "connector", connector = %label, "{line}"),
            Level::TRACE => tracing::trace!(target: "connector", connector = %label, "{line}"),
            _ => tracing::info!(target: "connector", connector = %label, "{line}"),
        }
    })
}

/// The level a connector's output line asks for (`docs/connector-protocol.md`, "Logs"):
/// a JSON object's `level` member (a name, or a pino/bunyan number), else the first word
/// after any leading words that start with a digit (a timestamp), with `[` `]` and anything
/// from a `:` on removed, when it names a level (any case); INFO otherwise.
pub fn line_level(line: &str) -> tracing::Level {
    use tracing::Level;
    fn named(word: &str) -> Option<Level> {
        Some(match word.to_ascii_uppercase().as_str() {
            "TRACE" => Level::TRACE,
            "DEBUG" => Level::DEBUG,
            "INFO" | "NOTICE" => Level::INFO,
            "WARN" | "WARNING" => Level::WARN,
            "ERROR" | "ERR" | "CRITICAL" | "FATAL" | "SEVERE" => Level::ERROR,
            _ => return None,
        })
    }
    let trimmed = line.trim_start();
    if trimmed.starts_with('{') {
        if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(trimmed) {
            return match fields.get("level") {
                Some(serde_json::Value::String(name)) => named(name),
                Some(serde_json::Value::Number(n)) => n.as_f64().map(|n| match n {
                    n if n <= 10.0 => Level::TRACE,
                    n if n <= 20.0 => Level::DEBUG,
                    n if n <= 30.0 => Level::INFO,
                    n if n <= 40.0 => Level::WARN,
                    _ => Level::ERROR,
                }),
                _ => None,
            }
            .unwrap_or(Level::INFO);
        }
    }
    trimmed
        .split_whitespace()
        .find(|word| !word.starts_with(|c: char| c.is_ascii_digit()))
        .map(|word| word.trim_start_matches('['))
        .map(|word| word.split([':', ']']).next().unwrap_or(word))
        .and_then(named)
        .unwrap_or(Level::INFO)
}

/// Owns the child: reports its exit, kills it on request or when it stops answering heartbeats.
async fn supervise(
    mut child: Child,
    mut client: Client,
    kill: CancellationToken,
    exited: watch::Sender<Option<String>>,
    label: String,
) {
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut misses = 0;
    let mut nonce = 0u64;
    let reason = loop {
        tokio::select! {
            status = child.wait() => {
                break match status {
                    Ok(status) => format!("connector process exited: {status}"),
                    Err(e) => format!("connector process lost: {e}"),
                };
            }
            _ = kill.cancelled() => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                break "connector process stopped".to_string();
            }
            _ = ticker.tick() => {
                nonce += 1;
                let beat = tokio::time::timeout(
                    HEARTBEAT_TIMEOUT,
                    client.heartbeat(proto::HeartbeatRequest { nonce }),
                ).await;
                match beat {
                    Ok(Ok(r)) if r.get_ref().nonce == nonce => misses = 0,
                    _ => misses += 1,
                }
                if misses >= HEARTBEAT_MISSES {
                    tracing::error!(connector = %label, "connector stopped answering heartbeats; killing it");
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    break format!("connector missed {HEARTBEAT_MISSES} heartbeats and was killed");
                }
            }
        }
    };
    let _ = exited.send(Some(reason));
}

#[cfg(test)]
mod tests {
    use super::{line_level, read_line_capped};
    use tracing::Level;

    #[tokio::test]
    async fn output_lines_are_cut_at_the_limit_and_read_whatever_their_bytes() {
        let long = "x".repeat(100);
        let mut bytes = format!("short\r\n{long}\nnext\n").into_bytes();
        bytes.extend_from_slice(b"\xef\xbf\xbd\xff-free\nlast\xfe\n");
        // A tiny buffer: lines span many reads.
        let mut reader = tokio::io::BufReader::with_capacity(7, &bytes[..]);
        let mut lines = Vec::new();
        let mut line = Vec::new();
        while let Some(cut) = read_line_capped(&mut reader, &mut line, 10).await.unwrap() {
            lines.push((String::from_utf8_lossy(&line).into_owned(), cut));
            line.clear();
        }
        assert_eq!(
            lines,
            [
                ("short".to_string(), false),
                ("x".repeat(10), true),
                ("next".to_string(), false),
                ("\u{FFFD}\u{FFFD}-free".to_string(), false),
                ("last\u{FFFD}".to_string(), false),
            ]
        );
    }

    #[test]
    fn connector_lines_carry_their_level() {
        let cases = [
            // The Rust SDK (tracing's fmt) and the Python SDK (logging) as they print.
            (
                "2026-12-04T03:00:00.123456Z  WARN sluice_connector_sdk::serve: slow",
                Level::WARN,
            ),
            (
                "2026-12-04T03:00:00.123456Z ERROR my_connector: boom",
                Level::ERROR,
            ),
            (
                "2026-12-04 03:00:00,123 WARNING sluice_connector: slow",
                Level::WARN,
            ),
            (
                "2026-12-04 03:00:00,123 DEBUG sluice_connector: detail",
                Level::DEBUG,
            ),
            // A leading level word, bracketed or with a colon, any case.
            ("ERROR cannot reach the database", Level::ERROR),
            ("[warn] retrying", Level::WARN),
            ("WARNING:root:deprecated key", Level::WARN),
            ("error: start runtime: no threads", Level::ERROR),
            ("TRACE poll", Level::TRACE),
            ("Info: ready", Level::INFO),
            // JSON lines: a level name or a pino/bunyan number.
            (r#"{"level":"warn","msg":"slow"}"#, Level::WARN),
            (r#"{"level":50,"time":1,"msg":"boom"}"#, Level::ERROR),
            (r#"{"level":20,"msg":"x"}"#, Level::DEBUG),
            (r#"{"msg":"no level"}"#, Level::INFO),
            // Anything else is INFO, including a level word later in the line.
            ("connected to db; no ERROR so far", Level::INFO),
            ("", Level::INFO),
            ("12345", Level::INFO),
            ("{not json ERROR", Level::INFO),
        ];
        for (line, level) in cases {
            assert_eq!(line_level(line), level, "{line:?}");
        }
    }
}
