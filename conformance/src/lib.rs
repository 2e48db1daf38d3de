//! The conformance kit behind `sluice plugins check`: launches a connector executable and drives
//! it through the whole connector protocol the way a worker does — handshake and version
//! negotiation, describe, validate, plan, a source or sink stream with credits, flushes and
//! acknowledgements, heartbeats, cancellation, shutdown, and the worker going away — and
//! reports every check as passed, failed (with the reason) or skipped.
//!
//! Each check tests one rule of docs/connector-protocol.md; the section is named in its reason.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use sluice_proto::connector::v1::{
    self as proto, sink_request, sink_response, source_request, source_response,
};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use sluice_worker::host::process::{
    self, Client, OutputTail, PluginCommand, CONNECT_TIMEOUT, HEARTBEAT_TIMEOUT,
};

/// A class name no plugin serves.
const NO_SUCH_CLASS: &str = "sluice.conformance.NoSuchClass";
/// A feature name no peer knows: a connector must leave it out of its answer.
const UNKNOWN_FEATURE: &str = "sluice.conformance.unknown-feature";
/// A protocol version no connector speaks yet.
const FUTURE_VERSION: u32 = 999;
/// How long a connector gets to answer a call or to send what it was asked for.
const ANSWER: Duration = Duration::from_secs(10);
/// How long the kit watches for data a connector must not send.
const QUIET: Duration = Duration::from_secs(1);
/// Records the sink stream sends, in batches of this size.
const SINK_BATCHES: u64 = 8;
const SINK_BATCH_RECORDS: u64 = 25;
/// Unacknowledged sink batches the kit keeps in flight, as a worker does (§5).
const SINK_WINDOW: u64 = 4;
/// Source record credit of the credit checks.
const SMALL_CREDIT: u64 = 5;
/// Output lines of the connector kept for failure reports.
const OUTPUT_LINES: usize = 40;

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

struct Kit<'a> {
    options: &'a Options,
    report: Report,
    on_check: Box<dyn FnMut(&Check) + 'a>,
}

type CheckResult = Result<String, String>;

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
        self.result("sink.stop", stop);
    }
}

fn class_list(plugin: &proto::PluginInfo) -> String {
    plugin
        .connectors
        .iter()
        .map(|c| c.class_name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn field_errors(errors: &[proto::FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.name, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// A call with the kit's answer deadline.
async fn answer<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    match timeout(ANSWER, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(format!("{what} failed: {}", status_text(&status))),
        Err(_) => Err(format!("{what} not answered within {} s", ANSWER.as_secs())),
    }
}

/// A call that must fail with `code`.
async fn refused<T>(
    what: &str,
    code: Code,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> CheckResult {
    match timeout(ANSWER, call).await {
        Ok(Err(status)) if status.code() == code => Ok(format!(
            "{what}: {:?} ({})",
            status.code(),
            status.message()
        )),
        Ok(Err(status)) => Err(format!(
            "{what}: expected {code:?}, got {}",
            status_text(&status)
        )),
        Ok(Ok(_)) => Err(format!("{what}: answered, expected {code:?}")),
        Err(_) => Err(format!(
            "{what}: not answered within {} s",
            ANSWER.as_secs()
        )),
    }
}

fn handshake_request(versions: Vec<u32>, features: Vec<String>) -> proto::HandshakeRequest {
    proto::HandshakeRequest {
        protocol_versions: versions,
        features,
        worker_version: format!("conformance-kit {}", env!("CARGO_PKG_VERSION")),
    }
}

async fn handshake(client: &Client) -> Result<(proto::PluginInfo, String), String> {
    let response = answer(
        "Handshake",
        client
            .clone()
            .handshake(handshake_request(proto::PROTOCOL_VERSIONS.to_vec(), vec![])),
    )
    .await?;
    if !proto::PROTOCOL_VERSIONS.contains(&response.protocol_version) {
        return Err(format!(
            "chose protocol version {}, which was not offered (offered {:?}) (§2)",
            response.protocol_version,
            proto::PROTOCOL_VERSIONS
        ));
    }
    let plugin = response
        .plugin
        .ok_or("the answer carries no plugin information (§2)")?;
    if plugin.name.trim().is_empty() {
        return Err("the plugin has no name (§2)".into());
    }
    if plugin.connectors.is_empty() {
        return Err("the plugin serves no connector class (§2)".into());
    }
    let mut names = std::collections::HashSet::new();
    for class in &plugin.connectors {
        if class.class_name.trim().is_empty() {
            return Err("a connector class has an empty class_name (§2)".into());
        }
        match proto::ConnectorType::try_from(class.r#type) {
            Ok(proto::ConnectorType::Source | proto::ConnectorType::Sink) => {}
            _ => {
                return Err(format!(
                    "class {} is neither a source nor a sink (type {}) (§2)",
                    class.class_name, class.r#type
                ))
            }
        }
        for name in std::iter::once(&class.class_name).chain(&class.aliases) {
            if !names.insert(name.clone()) {
                return Err(format!(
                    "the name {name:?} is given to two classes or twice; connector.class would be ambiguous (§2)"
                ));
            }
        }
    }
    let detail = format!(
        "version {}; plugin {} {} serving {}",
        response.protocol_version,
        plugin.name,
        plugin.version,
        class_list(&plugin)
    );
    Ok((plugin, detail))
}

async fn negotiation(client: &Client) -> CheckResult {
    let mut offered = proto::PROTOCOL_VERSIONS.to_vec();
    offered.insert(0, FUTURE_VERSION);
    let response = answer(
        "Handshake",
        client
            .clone()
            .handshake(handshake_request(offered, vec![UNKNOWN_FEATURE.into()])),
    )
    .await?;
    if response.protocol_version == FUTURE_VERSION {
        return Err(format!(
            "chose version {FUTURE_VERSION}, which no connector speaks: it must choose the highest version both sides speak (§2)"
        ));
    }
    if !proto::PROTOCOL_VERSIONS.contains(&response.protocol_version) {
        return Err(format!(
            "chose version {}, which was not offered (§2)",
            response.protocol_version
        ));
    }
    if let Some(f) = response.features.iter().find(|f| *f == UNKNOWN_FEATURE) {
        return Err(format!(
            "agreed to the feature {f:?}, which it cannot know: features in the answer must be ones it supports (§2)"
        ));
    }
    Ok(format!(
        "offered [{FUTURE_VERSION}, 1] and an unknown feature: chose {} and left the feature out (§2)",
        response.protocol_version
    ))
}

async fn no_common_version(client: &Client) -> CheckResult {
    refused(
        "Handshake offering only a future version",
        Code::FailedPrecondition,
        client
            .clone()
            .handshake(handshake_request(vec![FUTURE_VERSION], vec![])),
    )
    .await
}

async fn describe_all(
    client: &Client,
    plugin: &proto::PluginInfo,
    described: &mut BTreeMap<String, Vec<proto::ConfigDef>>,
) -> CheckResult {
    let mut keys = 0;
    for class in &plugin.connectors {
        let response = answer(
            &format!("Describe {}", class.class_name),
            client.clone().describe(proto::DescribeRequest {
                connector_class: class.class_name.clone(),
            }),
        )
        .await?;
        let mut names = std::collections::HashSet::new();
        for def in &response.configs {
            if def.name.trim().is_empty() {
                return Err(format!(
                    "{} describes a key with an empty name (§3)",
                    class.class_name
                ));
            }
            if !names.insert(def.name.clone()) {
                return Err(format!(
                    "{} describes the key {} twice (§3)",
                    class.class_name, def.name
                ));
            }
            if matches!(
                proto::ConfigType::try_from(def.r#type),
                Err(_) | Ok(proto::ConfigType::Unspecified)
            ) {
                return Err(format!(
                    "{} key {} has no valid type ({}) (§3)",
                    class.class_name, def.name, def.r#type
                ));
            }
            if let (Some(default), false) = (&def.default_value, def.valid_values.is_empty()) {
                if !def.valid_values.contains(default) {
                    return Err(format!(
                        "{} key {}: default {default:?} is not among its valid values {:?} (§3)",
                        class.class_name, def.name, def.valid_values
                    ));
                }
            }
        }
        keys += response.configs.len();
        described.insert(class.class_name.clone(), response.configs);
    }
    Ok(format!(
        "{} classes, {keys} keys, names unique and typed (§3)",
        plugin.connectors.len()
    ))
}

async fn unknown_class(client: &Client) -> CheckResult {
    let class = NO_SUCH_CLASS.to_string();
    let mut c = client.clone();
    refused(
        "Describe",
        Code::NotFound,
        c.describe(proto::DescribeRequest {
            connector_class: class.clone(),
        }),
    )
    .await?;
    refused(
        "Validate",
        Code::NotFound,
        c.validate(proto::ValidateRequest {
            connector_class: class.clone(),
            config: Default::default(),
        }),
    )
    .await?;
    refused(
        "Plan",
        Code::NotFound,
        c.plan(proto::PlanRequest {
            connector_class: class.clone(),
            config: Default::default(),
            max_tasks: 1,
        }),
    )
    .await?;
    Ok(format!(
        "Describe, Validate and Plan of {class} answer NotFound (§3)"
    ))
}

async fn heartbeats(client: &Client, count: u64) -> CheckResult {
    let base = time_nonce();
    for i in 0..count {
        let nonce = base.wrapping_add(i);
        let started = Instant::now();
        let beat = timeout(
            HEARTBEAT_TIMEOUT,
            client.clone().heartbeat(proto::HeartbeatRequest { nonce }),
        )
        .await;
        match beat {
            Ok(Ok(r)) if r.get_ref().nonce == nonce => {}
            Ok(Ok(r)) => {
                return Err(format!(
                    "sent nonce {nonce}, got {} back: the nonce must be echoed (§1 liveness)",
                    r.get_ref().nonce
                ))
            }
            Ok(Err(status)) => return Err(format!("Heartbeat failed: {}", status_text(&status))),
            Err(_) => {
                return Err(format!(
                    "no answer within {} s (§1 liveness)",
                    HEARTBEAT_TIMEOUT.as_secs()
                ))
            }
        }
        if started.elapsed() > HEARTBEAT_TIMEOUT {
            return Err("answered too late (§1 liveness)".into());
        }
    }
    Ok(format!(
        "{count} nonces echoed within {} s each",
        HEARTBEAT_TIMEOUT.as_secs()
    ))
}

fn time_nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

async fn validate(
    client: &Client,
    class: &proto::ConnectorClass,
    config: &BTreeMap<String, String>,
) -> Result<Vec<proto::FieldError>, String> {
    let response = answer(
        "Validate",
        client.clone().validate(proto::ValidateRequest {
            connector_class: class.class_name.clone(),
            config: config.clone().into_iter().collect(),
        }),
    )
    .await?;
    Ok(response.errors)
}

/// Breaks the configuration one way the connector declared it cannot take — a required key
/// left out, or a number or boolean that is not one — and expects a problem naming that key.
async fn validate_bad(
    client: &Client,
    class: &proto::ConnectorClass,
    defs: &[proto::ConfigDef],
    config: &BTreeMap<String, String>,
) -> CheckResult {
    use proto::ConfigType as T;
    let mut bad = config.clone();
    let (key, how) = if let Some(def) = defs.iter().find(|d| d.default_value.is_none()) {
        bad.remove(&def.name);
        (def.name.clone(), "left out (it is required)")
    } else if let Some(def) = defs.iter().find(|d| {
        matches!(
            T::try_from(d.r#type),
            Ok(T::Int | T::Long | T::Double | T::Boolean)
        )
    }) {
        bad.insert(def.name.clone(), "not-a-valid-value".into());
        (def.name.clone(), "set to \"not-a-valid-value\"")
    } else if let Some(def) = defs.iter().find(|d| !d.valid_values.is_empty()) {
        bad.insert(def.name.clone(), "not-a-valid-value".into());
        (def.name.clone(), "set to a value outside its valid values")
    } else {
        return Ok("no required, typed or restricted key to break: nothing to check".into());
    };
    let errors = validate(client, class, &bad).await?;
    if errors.iter().any(|e| e.name == key) {
        Ok(format!("{key} {how}: {} (§3)", field_errors(&errors)))
    } else if errors.is_empty() {
        Err(format!(
            "{key} {how}, yet Validate reported no problem (§3)"
        ))
    } else {
        Err(format!(
            "{key} {how}, yet no problem names it: {} (§3)",
            field_errors(&errors)
        ))
    }
}

async fn plan(
    client: &Client,
    class: &proto::ConnectorClass,
    config: &BTreeMap<String, String>,
) -> Result<(Vec<BTreeMap<String, String>>, String), String> {
    let mut detail = Vec::new();
    let mut first = Vec::new();
    for max_tasks in [1u32, 3] {
        let response = answer(
            &format!("Plan with max_tasks {max_tasks}"),
            client.clone().plan(proto::PlanRequest {
                connector_class: class.class_name.clone(),
                config: config.clone().into_iter().collect(),
                max_tasks,
            }),
        )
        .await?;
        let n = response.tasks.len();
        if n == 0 || n > max_tasks as usize {
            return Err(format!(
                "Plan with max_tasks {max_tasks} gave {n} tasks; it must give between 1 and {max_tasks} (§3)"
            ));
        }
        detail.push(format!("max_tasks {max_tasks}: {n}"));
        if max_tasks == 1 {
            first = response
                .tasks
                .into_iter()
                .map(|t| t.config.into_iter().collect())
                .collect();
        }
    }
    Ok((first, format!("{} (§3)", detail.join(", "))))
}

async fn shutdown(subject: &mut Subject) -> CheckResult {
    answer(
        "Shutdown",
        subject.client.clone().shutdown(proto::ShutdownRequest {}),
    )
    .await?;
    // The worker closes stdin right after; keep it open here so that only Shutdown is tested.
    match subject.wait_exit(process::SHUTDOWN_GRACE).await {
        Some(status) if status.success() => Ok(format!(
            "exited with status 0 within {} s of Shutdown (§1 stop)",
            process::SHUTDOWN_GRACE.as_secs()
        )),
        Some(status) => Err(format!(
            "exited with {status} after Shutdown; it must exit with status 0 (§1 stop)"
        )),
        None => Err(format!(
            "still running {} s after Shutdown (§1 stop)",
            process::SHUTDOWN_GRACE.as_secs()
        )),
    }
}

/// A second process, busy with a stream, whose worker vanishes: stdin reaches end of file with
/// no Shutdown. It must exit by itself.
async fn worker_gone(
    options: &Options,
    class: Option<&proto::ConnectorClass>,
    tasks: Option<&[BTreeMap<String, String>]>,
) -> CheckResult {
    let mut subject = Subject::start(&options.command, options.show_output)
        .await
        .map_err(|e| format!("second launch: {e:#}"))?;
    handshake(&subject.client).await?;
    // Keep a task running if one can, so that exiting means leaving a task behind.
    let mut busy = "idle";
    let mut _source = None;
    let mut _sink = None;
    if let (Some(class), Some(task)) = (class, tasks.and_then(|t| t.first())) {
        match proto::ConnectorType::try_from(class.r#type) {
            Ok(proto::ConnectorType::Source) => {
                if let Ok(stream) = SourceStream::open(&subject.client, class, task, vec![]).await {
                    let _ = stream.credit(1_000, 64 << 20).await;
                    _source = Some(stream);
                    busy = "running a source task";
                }
            }
            Ok(proto::ConnectorType::Sink) => {
                if let Ok(stream) = SinkStream::open(&subject.client, class, task).await {
                    _sink = Some(stream);
                    busy = "running a sink task";
                }
            }
            _ => {}
        }
    }
    subject.stdin.take();
    match subject.wait_exit(process::SHUTDOWN_GRACE).await {
        Some(status) => Ok(format!(
            "{busy}, exited ({status}) after its stdin closed, without Shutdown (§1 launch)"
        )),
        None => {
            let _ = subject.child.start_kill();
            Err(format!(
                "{busy}, still running {} s after its stdin closed: a connector must exit when its worker is gone (§1 launch)",
                process::SHUTDOWN_GRACE.as_secs()
            ))
        }
    }
}

/// A source stream opened and then abandoned without Stop — a worker that lost the task — must
/// leave the process serving: heartbeats answered and a new task able to start.
async fn cancellation(
    client: &Client,
    class: &proto::ConnectorClass,
    task: &BTreeMap<String, String>,
) -> CheckResult {
    let is_source = class.r#type == proto::ConnectorType::Source as i32;
    if is_source {
        let mut stream = SourceStream::open(client, class, task, vec![]).await?;
        stream.credit(1_000, 64 << 20).await?;
        let _ = timeout(QUIET, stream.next()).await;
        drop(stream);
    } else {
        let mut stream = SinkStream::open(client, class, task).await?;
        stream.assign().await?;
        drop(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    heartbeats(client, 1)
        .await
        .map_err(|e| format!("after a stream was cancelled: {e}"))?;
    if is_source {
        let mut again = SourceStream::open(client, class, task, vec![])
            .await
            .map_err(|e| format!("after a stream was cancelled, a new one: {e}"))?;
        again
            .stop()
            .await
            .map_err(|e| format!("after a stream was cancelled, a new one: {e}"))?;
    } else {
        let mut again = SinkStream::open(client, class, task)
            .await
            .map_err(|e| format!("after a stream was cancelled, a new one: {e}"))?;
        again
            .stop()
            .await
            .map_err(|e| format!("after a stream was cancelled, a new one: {e}"))?;
    }
    Ok("a stream dropped without Stop left the process serving: heartbeat answered, a new task opened and stopped (§4, §5)".into())
}

async fn source_open_first(client: &Client) -> CheckResult {
    let (tx, rx) = mpsc::channel(4);
    let _ = tx
        .send(proto::SourceRequest {
            kind: Some(source_request::Kind::Credit(proto::Credit {
                records: 1,
                bytes: 1,
            })),
        })
        .await;
    let mut c = client.clone();
    let call = c.source(ReceiverStream::new(rx));
    first_refused(call, |m: &proto::SourceResponse| {
        matches!(m.kind, Some(source_response::Kind::Error(_)))
    })
    .await
    .map(|d| format!("a stream starting with credit: {d} (§4)"))
}

async fn sink_open_first(client: &Client) -> CheckResult {
    let (tx, rx) = mpsc::channel(4);
    let _ = tx
        .send(proto::SinkRequest {
            kind: Some(sink_request::Kind::Flush(proto::FlushRequest::default())),
        })
        .await;
    let mut c = client.clone();
    let call = c.sink(ReceiverStream::new(rx));
    first_refused(call, |m: &proto::SinkResponse| {
        matches!(m.kind, Some(sink_response::Kind::Error(_)))
    })
    .await
    .map(|d| format!("a stream starting with flush: {d} (§5)"))
}

/// A stream that does not start with open must be refused: INVALID_ARGUMENT on the call or on
/// the stream (a TaskError message is accepted too).
async fn first_refused<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<Streaming<T>>, tonic::Status>>,
    is_error: impl Fn(&T) -> bool,
) -> CheckResult {
    let outcome = timeout(ANSWER, async {
        match call.await {
            Err(status) => Err(status),
            Ok(response) => {
                let mut stream = response.into_inner();
                match stream.message().await {
                    Err(status) => Err(status),
                    Ok(Some(m)) if is_error(&m) => Ok(true),
                    Ok(_) => Ok(false),
                }
            }
        }
    })
    .await;
    match outcome {
        Ok(Err(status)) if status.code() == Code::InvalidArgument => Ok(format!(
            "refused with InvalidArgument ({})",
            status.message()
        )),
        Ok(Err(status)) => Err(format!(
            "expected InvalidArgument, got {}",
            status_text(&status)
        )),
        Ok(Ok(true)) => Ok("refused with a TaskError".into()),
        Ok(Ok(false)) => Err("a stream that did not start with open was accepted".into()),
        Err(_) => Err(format!(
            "a stream that did not start with open was neither refused nor answered within {} s",
            ANSWER.as_secs()
        )),
    }
}

/// The kit's side of a source stream.
struct SourceStream {
    tx: mpsc::Sender<proto::SourceRequest>,
    rx: Streaming<proto::SourceResponse>,
    batches: Vec<proto::SourceBatch>,
    record_errors: usize,
}

impl SourceStream {
    async fn open(
        client: &Client,
        class: &proto::ConnectorClass,
        task: &BTreeMap<String, String>,
        positions: Vec<proto::SourcePosition>,
    ) -> Result<SourceStream, String> {
        let (tx, requests) = mpsc::channel(64);
        let open = proto::SourceRequest {
            kind: Some(source_request::Kind::Open(proto::SourceOpen {
                connector_class: class.class_name.clone(),
                connector_name: "conformance".into(),
                task_id: 0,
                config: task.clone().into_iter().collect(),
                positions,
            })),
        };
        tx.send(open).await.map_err(|_| "request stream closed")?;
        let rx = answer(
            "Source",
            client.clone().source(ReceiverStream::new(requests)),
        )
        .await?;
        let mut stream = SourceStream {
            tx,
            rx,
            batches: Vec::new(),
            record_errors: 0,
        };
        match timeout(CONNECT_TIMEOUT, stream.rx.message()).await {
            Ok(Ok(Some(proto::SourceResponse {
                kind: Some(source_response::Kind::Opened(_)),
            }))) => Ok(stream),
            Ok(Ok(Some(proto::SourceResponse {
                kind: Some(source_response::Kind::Error(e)),
            }))) => Err(format!("the task did not start: {}", e.message)),
            Ok(Ok(other)) => Err(format!("expected SourceOpened first, got {other:?} (§4)")),
            Ok(Err(status)) => Err(format!("stream failed: {}", status_text(&status))),
            Err(_) => Err(format!(
                "no SourceOpened within {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
        }
    }

    async fn credit(&self, records: u64, bytes: u64) -> Result<(), String> {
        self.tx
            .send(proto::SourceRequest {
                kind: Some(source_request::Kind::Credit(proto::Credit {
                    records,
                    bytes,
                })),
            })
            .await
            .map_err(|_| "the source stream closed".to_string())
    }

    async fn send(&mut self, kind: source_request::Kind) -> Result<(), String> {
        if self
            .tx
            .send(proto::SourceRequest { kind: Some(kind) })
            .await
            .is_ok()
        {
            return Ok(());
        }
        // The call is over; its response stream tells why.
        Err(match timeout(QUIET, self.next()).await {
            Ok(Err(e)) => e,
            Ok(Ok(m)) => format!("the source stream closed after {m:?}"),
            Err(_) => "the source stream closed".into(),
        })
    }

    /// The next message; record errors are counted and skipped, batches kept.
    async fn next(&mut self) -> Result<source_response::Kind, String> {
        loop {
            match self.rx.message().await {
                Ok(Some(proto::SourceResponse { kind: Some(kind) })) => match kind {
                    source_response::Kind::RecordError(_) => self.record_errors += 1,
                    source_response::Kind::Batch(batch) => {
                        self.batches.push(batch.clone());
                        return Ok(source_response::Kind::Batch(batch));
                    }
                    source_response::Kind::Error(e) => {
                        return Err(format!("the task failed: {}", e.message))
                    }
                    other => return Ok(other),
                },
                Ok(Some(_)) => return Err("an empty SourceResponse".into()),
                Ok(None) => return Err("the connector ended the stream".into()),
                Err(status) => return Err(format!("stream failed: {}", status_text(&status))),
            }
        }
    }

    async fn expect_quiet(&mut self, window: Duration) -> Result<(), String> {
        match timeout(window, self.next()).await {
            Err(_) => Ok(()),
            Ok(Ok(source_response::Kind::Batch(b))) => Err(format!(
                "sent a batch of {} records (seq {}) while it held no credit (§4 credits)",
                b.records.len(),
                b.seq
            )),
            Ok(Ok(other)) => Err(format!("sent {other:?} unasked")),
            Ok(Err(e)) => Err(e),
        }
    }

    fn sent_records(&self) -> u64 {
        self.batches.iter().map(|b| b.records.len() as u64).sum()
    }

    /// Credit of SMALL_CREDIT records and a single byte: exactly one batch may come.
    async fn byte_credit(&mut self) -> CheckResult {
        self.credit(SMALL_CREDIT, 1).await?;
        let first = match timeout(ANSWER, self.next()).await {
            Ok(Ok(source_response::Kind::Batch(b))) => b,
            Ok(Ok(other)) => return Err(format!("expected a batch, got {other:?}")),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(format!(
                    "no batch within {} s of a credit of {SMALL_CREDIT} records: does the configuration give the source data to read?",
                    ANSWER.as_secs()
                ))
            }
        };
        if first.records.len() as u64 > SMALL_CREDIT {
            return Err(format!(
                "a batch of {} records with a credit of {SMALL_CREDIT} (§4 credits)",
                first.records.len()
            ));
        }
        match timeout(QUIET, self.next()).await {
            Err(_) => Ok(format!(
                "one batch of {} records with 1 byte of credit, then nothing (§4 credits)",
                first.records.len()
            )),
            Ok(Ok(source_response::Kind::Batch(b))) => Err(format!(
                "sent batch {} after its byte credit was spent: a batch may be sent only while byte credit is positive (§4 credits)",
                b.seq
            )),
            Ok(Ok(other)) => Err(format!("sent {other:?} unasked")),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Byte credit restored, record credit as left: the records sent never pass SMALL_CREDIT.
    async fn record_credit(&mut self) -> CheckResult {
        self.credit(0, 64 << 20).await?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(next) = tokio::time::timeout_at(deadline, self.next()).await {
            next?;
            if self.sent_records() > SMALL_CREDIT {
                return Err(format!(
                    "sent {} records in all on a credit of {SMALL_CREDIT} (§4 credits)",
                    self.sent_records()
                ));
            }
        }
        Ok(format!(
            "{} records in {} batches on a credit of {SMALL_CREDIT} records (§4 credits)",
            self.sent_records(),
            self.batches.len()
        ))
    }

    /// Generous credit: the task streams while the kit calls Heartbeat.
    async fn heartbeat_while_busy(&mut self, client: &Client) -> CheckResult {
        self.credit(100_000, 64 << 20).await?;
        let before = self.batches.len();
        let beats = heartbeats(client, 3);
        tokio::pin!(beats);
        let deadline = tokio::time::sleep(Duration::from_secs(8));
        tokio::pin!(deadline);
        let result = loop {
            tokio::select! {
                result = &mut beats => break result,
                next = self.next() => { next?; }
                _ = &mut deadline => break Err("heartbeats not answered in time".into()),
            }
        };
        let result = result?;
        Ok(format!(
            "{result} while {} batches streamed",
            self.batches.len() - before
        ))
    }

    /// Sequence numbers from 1 by 1; partition indexes in range; partitions and offsets JSON
    /// objects.
    fn check_batches(&self) -> CheckResult {
        let mut records = 0;
        for (i, batch) in self.batches.iter().enumerate() {
            let expected = i as u64 + 1;
            if batch.seq != expected {
                return Err(format!(
                    "batch {} has seq {}, expected {expected}: seq starts at 1 and grows by 1 (§4 batches)",
                    i + 1,
                    batch.seq
                ));
            }
            for p in &batch.partitions {
                if !is_json_object(p) {
                    return Err(format!(
                        "batch {} names source partition {p:?}, not a JSON object (§4 positions)",
                        batch.seq
                    ));
                }
            }
            for r in &batch.records {
                if r.partition.is_none() && !r.offset.is_empty() {
                    return Err(format!(
                        "batch {} has a record with offset {:?} but no partition index: a position needs both, and index 0 must be sent explicitly (SourceRecord.partition is a proto3 `optional` field; a protobuf library without field presence drops 0 and the worker never commits the offset) (§4 positions)",
                        batch.seq, r.offset
                    ));
                }
                if let Some(index) = r.partition {
                    if index as usize >= batch.partitions.len() {
                        return Err(format!(
                            "batch {} has a record with partition index {index} of {} partitions (§4 positions)",
                            batch.seq,
                            batch.partitions.len()
                        ));
                    }
                }
                if !r.offset.is_empty() && !is_json_object(&r.offset) {
                    return Err(format!(
                        "batch {} has a record with offset {:?}, not a JSON object (§4 positions)",
                        batch.seq, r.offset
                    ));
                }
                if r.topic.is_empty() {
                    return Err(format!(
                        "batch {} has a record with no topic (§4 batches)",
                        batch.seq
                    ));
                }
            }
            records += batch.records.len();
        }
        Ok(format!(
            "{} batches, {records} records, {} record errors: seq 1..{}, positions JSON objects (§4)",
            self.batches.len(),
            self.record_errors,
            self.batches.len()
        ))
    }

    /// Acks what came, asks to stop, and expects SourceStopped naming the last batch sent, then
    /// the end of the stream once the final ack is in.
    async fn stop(&mut self) -> CheckResult {
        if let Some(last) = self.batches.last() {
            self.send(source_request::Kind::Ack(proto::SourceAck {
                batch_seq: last.seq,
            }))
            .await?;
        }
        self.send(source_request::Kind::Stop(proto::Stop {}))
            .await?;
        let stopped = loop {
            match timeout(ANSWER, self.next()).await {
                Ok(Ok(source_response::Kind::Stopped(s))) => break s,
                Ok(Ok(source_response::Kind::Batch(_))) => {}
                Ok(Ok(other)) => return Err(format!("expected SourceStopped, got {other:?}")),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(format!(
                        "no SourceStopped within {} s of Stop (§4 stopping)",
                        ANSWER.as_secs()
                    ))
                }
            }
        };
        let last = self.batches.last().map_or(0, |b| b.seq);
        if stopped.last_batch_seq != last {
            return Err(format!(
                "SourceStopped names batch {} as the last, but the last batch sent was {last} (§4 stopping)",
                stopped.last_batch_seq
            ));
        }
        // The final ack; a connector that already holds acks for everything may have ended
        // the stream already, so the send may find the call over.
        let _ = self
            .tx
            .send(proto::SourceRequest {
                kind: Some(source_request::Kind::Ack(proto::SourceAck {
                    batch_seq: last,
                })),
            })
            .await;
        // The worker closes its side after the final ack.
        let (tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        match timeout(ANSWER, self.rx.message()).await {
            Ok(Ok(None)) => Ok(format!(
                "SourceStopped{{last_batch_seq: {last}}} after Stop, then the stream ended (§4 stopping)"
            )),
            Ok(Ok(Some(m))) => Err(format!("after SourceStopped and the final ack, sent {m:?}")),
            Ok(Err(status)) => Err(format!(
                "the stream ended with an error after SourceStopped: {}",
                status_text(&status)
            )),
            Err(_) => Err(format!(
                "the stream did not end within {} s of the final ack (§4 stopping)",
                ANSWER.as_secs()
            )),
        }
    }
}

fn is_json_object(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.is_object())
}

/// The kit's side of a sink stream.
struct SinkStream {
    tx: mpsc::Sender<proto::SinkRequest>,
    rx: Streaming<proto::SinkResponse>,
    topic: String,
    /// The next offset to send on partition 0.
    next_offset: i64,
    record_errors: usize,
}

impl SinkStream {
    async fn open(
        client: &Client,
        class: &proto::ConnectorClass,
        task: &BTreeMap<String, String>,
    ) -> Result<SinkStream, String> {
        let topic = task
            .get("topics")
            .and_then(|t| t.split(',').map(str::trim).find(|t| !t.is_empty()))
            .unwrap_or("conformance")
            .to_string();
        let (tx, requests) = mpsc::channel(64);
        tx.send(proto::SinkRequest {
            kind: Some(sink_request::Kind::Open(proto::SinkOpen {
                connector_class: class.class_name.clone(),
                connector_name: "conformance".into(),
                task_id: 0,
                config: task.clone().into_iter().collect(),
            })),
        })
        .await
        .map_err(|_| "request stream closed")?;
        let rx = answer("Sink", client.clone().sink(ReceiverStream::new(requests))).await?;
        let mut stream = SinkStream {
            tx,
            rx,
            topic,
            next_offset: 0,
            record_errors: 0,
        };
        match timeout(CONNECT_TIMEOUT, stream.next()).await {
            Ok(Ok(sink_response::Kind::Opened(_))) => Ok(stream),
            Ok(Ok(other)) => Err(format!("expected SinkOpened first, got {other:?} (§5)")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "no SinkOpened within {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
        }
    }

    async fn send(&self, kind: sink_request::Kind) -> Result<(), String> {
        self.tx
            .send(proto::SinkRequest { kind: Some(kind) })
            .await
            .map_err(|_| "the sink stream closed".to_string())
    }

    async fn next(&mut self) -> Result<sink_response::Kind, String> {
        loop {
            match self.rx.message().await {
                Ok(Some(proto::SinkResponse { kind: Some(kind) })) => match kind {
                    sink_response::Kind::RecordError(_) => self.record_errors += 1,
                    sink_response::Kind::Error(e) => {
                        return Err(format!("the task failed: {}", e.message))
                    }
                    other => return Ok(other),
                },
                Ok(Some(_)) => return Err("an empty SinkResponse".into()),
                Ok(None) => return Err("the connector ended the stream".into()),
                Err(status) => return Err(format!("stream failed: {}", status_text(&status))),
            }
        }
    }

    async fn expect(&mut self, what: &str) -> Result<sink_response::Kind, String> {
        match timeout(ANSWER, self.next()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no {what} within {} s", ANSWER.as_secs())),
        }
    }

    async fn assign(&mut self) -> CheckResult {
        let id = 7;
        self.send(sink_request::Kind::Assigned(proto::PartitionsAssigned {
            id,
            partitions: vec![proto::TopicPartition {
                topic: self.topic.clone(),
                partition: 0,
            }],
        }))
        .await?;
        let positions = match self.expect("PartitionPositions").await? {
            sink_response::Kind::Positions(p) => p,
            other => return Err(format!("expected PartitionPositions, got {other:?} (§5)")),
        };
        if positions.id != id {
            return Err(format!(
                "PartitionPositions has id {}, the request had {id} (§5)",
                positions.id
            ));
        }
        for o in &positions.offsets {
            if o.topic != self.topic || o.partition != 0 || o.offset < 0 {
                return Err(format!(
                    "PartitionPositions names {}-{} at {}, which was not assigned or is negative (§5)",
                    o.topic, o.partition, o.offset
                ));
            }
            self.next_offset = o.offset;
        }
        Ok(format!(
            "{}-0 assigned: PartitionPositions{{id: {id}}} with {} offsets (§5)",
            self.topic,
            positions.offsets.len()
        ))
    }

    fn batch(&mut self, seq: u64) -> proto::SinkBatch {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let records = (0..SINK_BATCH_RECORDS)
            .map(|_| {
                let offset = self.next_offset;
                self.next_offset += 1;
                proto::SinkRecord {
                    topic: self.topic.clone(),
                    partition: 0,
                    offset,
                    key: Some(string_data(format!("conformance-{offset}"))),
                    value: Some(string_data(format!("conformance record {offset}"))),
                    headers: vec![proto::Header {
                        key: "conformance".into(),
                        value: Some(proto::Data {
                            kind: Some(proto::data::Kind::Raw(b"kit".to_vec())),
                        }),
                    }],
                    timestamp_ms: Some(now),
                }
            })
            .collect();
        proto::SinkBatch { seq, records }
    }

    /// SINK_BATCHES batches with SINK_WINDOW in flight; acks must come in order, and the kit
    /// calls Heartbeat while the task works.
    async fn batches(&mut self, client: &Client) -> CheckResult {
        let mut sent = 0u64;
        let mut acked = 0u64;
        let mut beat_every = 0;
        while acked < SINK_BATCHES {
            while sent < SINK_BATCHES && sent - acked < SINK_WINDOW {
                sent += 1;
                let batch = self.batch(sent);
                self.send(sink_request::Kind::Batch(batch)).await?;
            }
            match self.expect("SinkBatchAck").await? {
                sink_response::Kind::Ack(ack) if ack.seq == acked + 1 => acked += 1,
                sink_response::Kind::Ack(ack) => {
                    return Err(format!(
                        "acknowledged batch {} when {} was next: acks come in order (§5)",
                        ack.seq,
                        acked + 1
                    ))
                }
                other => return Err(format!("expected SinkBatchAck, got {other:?} (§5)")),
            }
            beat_every += 1;
            if beat_every % 3 == 0 {
                heartbeats(client, 1)
                    .await
                    .map_err(|e| format!("while batches were in flight: {e}"))?;
            }
        }
        Ok(format!(
            "{SINK_BATCHES} batches of {SINK_BATCH_RECORDS} records, {SINK_WINDOW} in flight, acknowledged in order, {} record errors, heartbeats answered meanwhile (§5)",
            self.record_errors
        ))
    }

    async fn flush(&mut self) -> CheckResult {
        let requested = self.next_offset;
        self.send(sink_request::Kind::Flush(proto::FlushRequest {
            flush_id: 1,
            offsets: vec![proto::TopicPartitionOffset {
                topic: self.topic.clone(),
                partition: 0,
                offset: requested,
            }],
        }))
        .await?;
        let flushed = match self.expect("FlushResponse").await? {
            sink_response::Kind::Flushed(f) => f,
            other => return Err(format!("expected FlushResponse, got {other:?} (§5)")),
        };
        if flushed.flush_id != 1 {
            return Err(format!(
                "FlushResponse has flush_id {}, the request had 1 (§5)",
                flushed.flush_id
            ));
        }
        for o in &flushed.offsets {
            if o.topic != self.topic || o.partition != 0 || o.offset > requested {
                return Err(format!(
                    "FlushResponse offers {}-{} at {}, beyond what was sent ({}-0 at {requested}) (§5)",
                    o.topic, o.partition, o.offset, self.topic
                ));
            }
        }
        Ok(format!(
            "FlushResponse{{flush_id: 1}} with {:?} for {requested} requested (§5)",
            flushed.offsets.iter().map(|o| o.offset).collect::<Vec<_>>()
        ))
    }

    async fn stop(&mut self) -> CheckResult {
        self.send(sink_request::Kind::Stop(proto::Stop {})).await?;
        match self.expect("SinkStopped").await? {
            sink_response::Kind::Stopped(_) => {}
            other => return Err(format!("expected SinkStopped, got {other:?} (§5)")),
        }
        let (tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        match timeout(ANSWER, self.rx.message()).await {
            Ok(Ok(None)) => Ok("SinkStopped after Stop, then the stream ended (§5)".into()),
            Ok(Ok(Some(m))) => Err(format!("after SinkStopped, sent {m:?}")),
            Ok(Err(status)) => Err(format!(
                "the stream ended with an error after SinkStopped: {}",
                status_text(&status)
            )),
            Err(_) => Err(format!(
                "the stream did not end within {} s of SinkStopped (§5)",
                ANSWER.as_secs()
            )),
        }
    }
}

fn string_data(text: String) -> proto::Data {
    proto::Data {
        kind: Some(proto::data::Kind::Structured(proto::Structured {
            schema: Some(proto::Schema {
                r#type: proto::SchemaType::String as i32,
                ..Default::default()
            }),
            value: Some(proto::Value {
                kind: Some(proto::value::Kind::String(text)),
            }),
        })),
    }
}

/// The connector process under test, launched as a worker launches it.
struct Subject {
    child: Child,
    stdin: Option<ChildStdin>,
    client: Client,
    output: OutputTail,
    _dir: tempfile::TempDir,
}

impl Subject {
    async fn start(command: &PluginCommand, show_output: bool) -> anyhow::Result<Subject> {
        let (mut child, dir, socket) = process::spawn(command)?;
        let output = OutputTail::collect(&mut child, OUTPUT_LINES, move |line| {
            if show_output {
                eprintln!("connector| {line}");
            }
        });
        let stdin = child.stdin.take();
        let channel = match process::connect(&socket, &mut child).await {
            Ok(channel) => channel,
            Err(e) => {
                let _ = child.start_kill();
                return Err(anyhow!("{e:#}{}", output.describe().await));
            }
        };
        let client = Client::new(channel)
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
        Ok(Subject {
            child,
            stdin,
            client,
            output,
            _dir: dir,
        })
    }

    async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        timeout(within, self.child.wait()).await.ok()?.ok()
    }

    fn output_tail(&self) -> String {
        self.output.lines().join("\n")
    }
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
