//! The kit's single calls: handshake, describe, validate, plan, heartbeats, refusals, stops.

use std::collections::BTreeMap;

use sluice_proto::connector::v1::{
    self as proto, sink_request, sink_response, source_request, source_response,
};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use sluice_worker::host::process::Client;

use crate::rpc::{answer, class_list, field_errors, handshake_request, refused, status_text};
use crate::{CheckResult, ANSWER, FUTURE_VERSION, NO_SUCH_CLASS, UNKNOWN_FEATURE};

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
