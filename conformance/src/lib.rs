//! The conformance kit behind `sluice plugins check`: launches a connector executable and drives
//! it through the whole connector protocol the way a worker does — handshake and version
//! negotiation, describe, validate, plan, a source or sink stream with credits, flushes and
//! acknowledgements, heartbeats, cancellation, shutdown, and the worker going away — and
//! reports every check as passed, failed (with the reason) or skipped.
//!
//! Each check tests one rule of docs/connector-protocol.md; the section is named in its reason.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use sluice_proto::connector::v1::{self as proto};
use tokio::time::Instant;

mod calls;
mod lifecycle;
mod rpc;
mod sink;
mod source;
mod subject;

use calls::{
    describe_all, handshake, negotiation, no_common_version, plan, sink_open_first,
    source_open_first, unknown_class, validate, validate_bad,
};
use lifecycle::{cancellation, shutdown, worker_gone};
use rpc::{class_list, field_errors, heartbeats};
use sink::SinkStream;
use sluice_worker::host::process::{Client, PluginCommand};
use sluice_worker::task::sink::shared::SharedMemory;
use source::SourceStream;
use subject::Subject;

/// A class name no plugin serves.
pub(crate) const NO_SUCH_CLASS: &str = "sluice.conformance.NoSuchClass";
/// A feature name no peer knows: a connector must leave it out of its answer.
pub(crate) const UNKNOWN_FEATURE: &str = "sluice.conformance.unknown-feature";
/// A protocol version no connector speaks yet.
pub(crate) const FUTURE_VERSION: u32 = 999;
/// How long a connector gets to answer a call or to send what it was asked for.
pub(crate) const ANSWER: Duration = Duration::from_secs(10);
/// How long the kit watches for data a connector must not send.
pub(crate) const QUIET: Duration = Duration::from_secs(1);
/// Records the sink stream sends, in batches of this size.
pub(crate) const SINK_BATCHES: u64 = 8;
pub(crate) const SINK_BATCH_RECORDS: u64 = 25;
/// Unacknowledged sink batches the kit keeps in flight, as a worker does (§5).
pub(crate) const SINK_WINDOW: u64 = 4;
/// The memory the kit shares with a sink that takes feature `sink.shared_memory`.
pub(crate) const SHARED_MEMORY_BYTES: usize = 1024 * 1024;
/// Source record credit of the credit checks.
pub(crate) const SMALL_CREDIT: u64 = 5;
/// Output lines of the connector kept for failure reports.
pub(crate) const OUTPUT_LINES: usize = 40;

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    pub command: PluginCommand,
    /// The class whose streams are exercised: a class name or alias; may be left out when the
    /// plugin serves one class.
    pub class: Option<String>,
    /// The connector configuration for validate, plan and the streams. Without it, only a
    /// class with no required keys gets those checks.
    pub config: BTreeMap<String, String>,
    /// Echo the connector's own output to stderr as it comes.
    pub show_output: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
}

/// Every check run, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.outcome == Outcome::Fail)
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == outcome).count()
    }

    pub fn outcome(&self, name: &str) -> Option<Outcome> {
        self.checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.outcome)
    }
}

/// Runs every check against `options.command`; `on_check` sees each result as it is known.
pub async fn run(options: &Options, on_check: impl FnMut(&Check)) -> Report {
    let mut kit = Kit {
        options,
        report: Report::default(),
        on_check: Box::new(on_check),
    };
    kit.run().await;
    kit.report
}

pub(crate) struct Kit<'a> {
    options: &'a Options,
    report: Report,
    on_check: Box<dyn FnMut(&Check) + 'a>,
}

pub(crate) type CheckResult = Result<String, String>;

impl Kit<'_> {
    fn record(&mut self, name: &str, outcome: Outcome, detail: String) {
        let check = Check {
            name: name.to_string(),
            outcome,
            detail,
        };
        (self.on_check)(&check);
        self.report.checks.push(check);
    }

    fn result(&mut self, name: &str, result: CheckResult) -> bool {
        match result {
            Ok(detail) => {
                self.record(name, Outcome::Pass, detail);
                true
            }
            Err(reason) => {
                self.record(name, Outcome::Fail, reason);
                false
            }
        }
    }

    /// Records a check whose passing yields what later checks need.
    fn yielded<T>(&mut self, name: &str, result: Result<(T, String), String>) -> Option<T> {
        match result {
            Ok((value, detail)) => {
                self.record(name, Outcome::Pass, detail);
                Some(value)
            }
            Err(reason) => {
                self.record(name, Outcome::Fail, reason);
                None
            }
        }
    }

    fn skip(&mut self, name: &str, reason: impl Into<String>) {
        self.record(name, Outcome::Skip, reason.into());
    }

    async fn run(&mut self) {
        let started = Instant::now();
        let mut subject =
            match Subject::start(&self.options.command, self.options.show_output).await {
                Ok(subject) => subject,
                Err(e) => {
                    self.record("launch", Outcome::Fail, format!("{e:#}"));
                    return;
                }
            };
        self.record(
            "launch",
            Outcome::Pass,
            format!(
                "listening on its socket after {} ms (§1)",
                started.elapsed().as_millis()
            ),
        );

        let handshake = handshake(&subject.client).await;
        let Some(plugin) = self.yielded("handshake", handshake) else {
            return;
        };
        let negotiation = negotiation(&subject.client).await;
        self.result("handshake.negotiation", negotiation);
        let no_common = no_common_version(&subject.client).await;
        self.result("handshake.no-common-version", no_common);

        let mut described = BTreeMap::new();
        let describe = describe_all(&subject.client, &plugin, &mut described).await;
        self.result("describe", describe);
        let unknown = unknown_class(&subject.client).await;
        self.result("unknown-class", unknown);
        let heartbeat = heartbeats(&subject.client, 3).await;
        self.result("heartbeat", heartbeat);

        let class = self.choose_class(&plugin);
        let tasks = match &class {
            Some(class) => {
                let defs = described
                    .get(&class.class_name)
                    .cloned()
                    .unwrap_or_default();
                self.config_checks(&subject.client, class, &defs).await
            }
            None => None,
        };
        match (&class, &tasks) {
            (Some(class), Some(tasks)) => {
                let task = tasks.first().cloned().unwrap_or_default();
                match proto::ConnectorType::try_from(class.r#type) {
                    Ok(proto::ConnectorType::Source) => {
                        self.source_checks(&subject.client, class, &task).await
                    }
                    Ok(proto::ConnectorType::Sink) => {
                        self.sink_checks(&subject.client, class, &task).await
                    }
                    _ => self.skip("streams", "the class is neither a source nor a sink"),
                }
                let cancel = cancellation(&subject.client, class, &task).await;
                self.result("cancellation", cancel);
            }
            _ => self.skip(
                "streams",
                "no class configured to run (see validate/plan above)",
            ),
        }

        let exit = shutdown(&mut subject).await;
        self.result("shutdown", exit);
        let gone = worker_gone(self.options, class.as_ref(), tasks.as_deref()).await;
        self.result("worker-gone", gone);
        let tail = subject.output_tail();
        if self.report.count(Outcome::Fail) > 0 && !tail.is_empty() && !self.options.show_output {
            eprintln!("last lines of the connector's output:\n{tail}");
        }
    }

    fn choose_class(&mut self, plugin: &proto::PluginInfo) -> Option<proto::ConnectorClass> {
        let chosen = match &self.options.class {
            Some(name) => plugin
                .connectors
                .iter()
                .find(|c| &c.class_name == name || c.aliases.contains(name))
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "the plugin serves no class {name:?} (it serves {})",
                        class_list(plugin)
                    )
                }),
            None if plugin.connectors.len() == 1 => Ok(plugin.connectors[0].clone()),
            None => Err(format!(
                "the plugin serves {}: give --class to choose the one to run",
                class_list(plugin)
            )),
        };
        match chosen {
            Ok(class) => Some(class),
            Err(reason) => {
                self.record("class", Outcome::Fail, reason);
                None
            }
        }
    }

    /// validate.good, validate.bad and plan; returns the planned task configs when the class
    /// can run.
    async fn config_checks(
        &mut self,
        client: &Client,
        class: &proto::ConnectorClass,
        defs: &[proto::ConfigDef],
    ) -> Option<Vec<BTreeMap<String, String>>> {
        // As a worker does: the defaults the connector declared complete the configuration.
        let config = &sluice_worker::host::plugins::with_defaults(defs, &self.options.config);
        let missing: Vec<&str> = defs
            .iter()
            .filter(|d| d.default_value.is_none() && !config.contains_key(&d.name))
            .map(|d| d.name.as_str())
            .collect();
        if !missing.is_empty() {
            let reason = format!(
                "{} needs {} to run: give them with --config KEY=VALUE",
                class.class_name,
                missing.join(", ")
            );
            self.skip("validate.good", reason.clone());
            let bad = validate_bad(client, class, defs, config).await;
            self.result("validate.bad", bad);
            self.skip("plan", reason);
            return None;
        }
        let good = validate(client, class, config).await.and_then(|errors| {
            if errors.is_empty() {
                Ok(format!("no problems in {} keys (§3)", config.len()))
            } else {
                Err(format!(
                    "a configuration the kit was told is good has problems: {}",
                    field_errors(&errors)
                ))
            }
        });
        let good = self.result("validate.good", good);
        let bad = validate_bad(client, class, defs, config).await;
        self.result("validate.bad", bad);
        if !good {
            return None;
        }
        let planned = plan(client, class, config).await;
        self.yielded("plan", planned)
    }

    async fn source_checks(
        &mut self,
        client: &Client,
        class: &proto::ConnectorClass,
        task: &BTreeMap<String, String>,
    ) {
        let first = source_open_first(client).await;
        self.result("source.open-first", first);
        let opened = SourceStream::open(client, class, task, Vec::new()).await;
        let opened = opened.map(|stream| (stream, "opened (§4)".to_string()));
        let Some(mut stream) = self.yielded("source.open", opened) else {
            return;
        };
        let quiet = stream.expect_quiet(QUIET).await.map(|()| {
            format!(
                "nothing sent in {} ms without credit (§4 credits)",
                QUIET.as_millis()
            )
        });
        self.result("source.no-credit", quiet);
        let bytes = stream.byte_credit().await;
        if !self.result("source.byte-credit", bytes) {
            // The stream cannot go on by the rules, but what it sent can still be checked.
            if !stream.batches.is_empty() {
                let shape = stream.check_batches();
                self.result("source.batches", shape);
            }
            return;
        }
        let records = stream.record_credit().await;
        self.result("source.record-credit", records);
        let busy = stream.heartbeat_while_busy(client).await;
        self.result("source.heartbeat-busy", busy);
        let shape = stream.check_batches();
        self.result("source.batches", shape);
        let stop = stream.stop().await;
        self.result("source.stop", stop);
    }

    async fn sink_checks(
        &mut self,
        client: &Client,
        class: &proto::ConnectorClass,
        task: &BTreeMap<String, String>,
    ) {
        let first = sink_open_first(client).await;
        self.result("sink.open-first", first);
        let opened = SinkStream::open(client, class, task).await;
        let opened = opened.map(|stream| (stream, "opened (§5)".to_string()));
        let Some(mut stream) = self.yielded("sink.open", opened) else {
            return;
        };
        let assigned = stream.assign().await;
        if !self.result("sink.assigned", assigned) {
            return;
        }
        let batches = stream.batches(client).await;
        if !self.result("sink.batches", batches) {
            return;
        }
        let flush = stream.flush().await;
        self.result("sink.flush", flush);
        let stop = stream.stop().await;
        if !self.result("sink.stop", stop) {
            return;
        }
        let shared = shared_memory(client, class, task).await;
        match shared {
            Ok(None) => self.skip(
                "sink.shared-memory",
                "the connector does not take feature sink.shared_memory",
            ),
            Ok(Some(detail)) => self.record("sink.shared-memory", Outcome::Pass, detail),
            Err(reason) => self.record("sink.shared-memory", Outcome::Fail, reason),
        }
    }
}

/// Feature `sink.shared_memory`, when the connector agrees to it in a handshake: a sink stream
/// opened with memory offered must map it, and take batches written there (`None`: the
/// connector does not take the feature).
async fn shared_memory(
    client: &Client,
    class: &proto::ConnectorClass,
    task: &BTreeMap<String, String>,
) -> Result<Option<String>, String> {
    let offered = vec![proto::FEATURE_SINK_SHARED_MEMORY.to_string()];
    let response = rpc::answer(
        "Handshake",
        client.clone().handshake(rpc::handshake_request(
            proto::PROTOCOL_VERSIONS.to_vec(),
            offered.clone(),
        )),
    )
    .await?;
    if response.features != offered {
        return Ok(None);
    }
    let mut memory = SharedMemory::create(SHARED_MEMORY_BYTES)
        .map_err(|e| format!("the kit could not create shared memory: {e}"))?;
    let (mut stream, mapped) =
        SinkStream::open_with(client, class, task, Some(memory.describe())).await?;
    if !mapped {
        return Err(
            "agreed to sink.shared_memory, but SinkOpened says it did not map the memory offered (see its output) (§5)"
                .into(),
        );
    }
    stream.assign().await?;
    stream.shared_batches(client, &mut memory).await.map(Some)
}

/// Reads `KEY=VALUE` pairs (a .properties file's keys or `--config` flags) into a config.
pub fn parse_pairs(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .with_context(|| format!("--config {pair:?}: expected KEY=VALUE"))
        })
        .collect()
}
