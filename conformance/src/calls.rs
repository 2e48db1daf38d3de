//! The kit's single calls: handshake, describe, validate, plan, heartbeats, refusals, stops.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_proto::connector::v1::{
    self as proto, sink_request, sink_response, source_request, source_response,
};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use sluice_worker::host::process::{self, Client, HEARTBEAT_TIMEOUT};

use crate::*;

pub(crate) fn class_list(plugin: &proto::PluginInfo) -> String {
    plugin
        .connectors
        .iter()
        .map(|c| c.class_name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn field_errors(errors: &[proto::FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.name, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// A call with the kit's answer deadline.
pub(crate) async fn answer<T>(
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
pub(crate) async fn refused<T>(
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

pub(crate) fn handshake_request(
    versions: Vec<u32>,
    features: Vec<String>,
) -> proto::HandshakeRequest {
    proto::HandshakeRequest {
        protocol_versions: versions,
        features,
        worker_version: format!("conformance-kit {}", env!("CARGO_PKG_VERSION")),
    }
}

pub(crate) async fn handshake(client: &Client) -> Result<(proto::PluginInfo, String), String> {
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

pub(crate) async fn negotiation(client: &Client) -> CheckResult {
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

pub(crate) async fn no_common_version(client: &Client) -> CheckResult {
    refused(
        "Handshake offering only a future version",
        Code::FailedPrecondition,
        client
            .clone()
            .handshake(handshake_request(vec![FUTURE_VERSION], vec![])),
    )
    .await
}

pub(crate) async fn describe_all(
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

pub(crate) async fn unknown_class(client: &Client) -> CheckResult {
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

pub(crate) async fn heartbeats(client: &Client, count: u64) -> CheckResult {
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

pub(crate) fn time_nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

pub(crate) async fn validate(
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
pub(crate) async fn validate_bad(
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

pub(crate) async fn plan(
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

pub(crate) async fn shutdown(subject: &mut Subject) -> CheckResult {
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
pub(crate) async fn worker_gone(
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
pub(crate) async fn cancellation(
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

pub(crate) async fn source_open_first(client: &Client) -> CheckResult {
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

pub(crate) async fn sink_open_first(client: &Client) -> CheckResult {
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
pub(crate) async fn first_refused<T>(
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
