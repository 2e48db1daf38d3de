//! The checks of a connector's life: shutdown, the worker going away, cancellation.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_proto::connector::v1::{self as proto};
use tokio::time::timeout;

use sluice_worker::host::process::{self, Client};

use crate::calls::handshake;
use crate::rpc::{answer, heartbeats};
use crate::sink::SinkStream;
use crate::source::SourceStream;
use crate::subject::Subject;
use crate::{CheckResult, Options, QUIET};

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
