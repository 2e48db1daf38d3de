//! What every check uses: answers and refusals awaited within the kit's limits, heartbeats,
//! and the texts reports quote.

use sluice_proto::connector::v1::{self as proto};
use tokio::time::{timeout, Instant};
use tonic::Code;

use sluice_worker::host::process::{Client, HEARTBEAT_TIMEOUT};

use crate::{CheckResult, ANSWER};

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
