//! The data path of one task: [`source`] (connector → converters → Kafka, at least once or
//! in transactions) and [`sink`] (Kafka → converters → connector, offsets committed after
//! the connector's flush), with what they share: [`offsets`] (source positions), [`errors`]
//! (`errors.*`: tolerance, retries, the dead-letter queue), [`metrics`] (counters).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_data::converter::Converter;
use sluice_data::transforms::Chain;
use sluice_proto::connector::v1 as proto;
use tokio::sync::mpsc;

use crate::lease::Lease;
use errors::ErrorReporter;
use metrics::Counters;
use sluice_model::TransactionBoundary;

pub mod errors;
pub mod metrics;
pub mod offsets;
pub mod sink;
pub mod source;

/// How a connector's records are converted and transformed: its key and value converters and
/// its transform chain, applied between the connector and the converters (source: before
/// them; sink: after).
#[derive(Clone)]
pub struct Conversion {
    pub key: Converter,
    pub value: Converter,
    pub transforms: Arc<Chain>,
}

/// Tells the connector's runner that a task opened. Unbounded: one message per task and run.
pub type OpenedSender = mpsc::UnboundedSender<u32>;

/// What a task is, whichever its direction: whose it is, its config, its converters and
/// transforms, where it counts and reports.
pub struct TaskSpec {
    pub connector: String,
    pub class: String,
    pub task_id: u32,
    pub config: BTreeMap<String, String>,
    pub conversion: Conversion,
    pub counters: Arc<Counters>,
    /// Told the task id once the connector opened the task.
    pub opened: OpenedSender,
    /// Records that fail: `errors.tolerance`, log, dead-letter queue.
    pub errors: Arc<ErrorReporter>,
    /// Its Prometheus metrics.
    pub metrics: crate::metrics::TaskMetrics,
    /// The span of the task's start, ended once the connector opened it (or failed to).
    pub opening: std::sync::Mutex<Option<tracing::Span>>,
}

impl TaskSpec {
    /// Opens the task's stream (`call`, "source" or "sink") and checks the connector's first
    /// answer: opened (the runner is told) and the stream is returned, failed to start, or a
    /// broken connector.
    pub(crate) async fn open_stream<R: FirstAnswer>(
        &self,
        call: impl std::future::Future<
            Output = Result<tonic::Response<tonic::Streaming<R>>, tonic::Status>,
        >,
        stream: &str,
    ) -> anyhow::Result<(tonic::Streaming<R>, R::Opened)> {
        use tracing::Instrument as _;
        let opening = self
            .opening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(tracing::Span::none);
        let opened = async {
            let mut responses = call
                .await
                .map_err(|s| anyhow::anyhow!("open {stream} stream: {}", s.message()))?
                .into_inner();
            let first = responses.message().await.map(|m| m.and_then(R::opening));
            anyhow::Ok((responses, first))
        };
        let (responses, first) = opened.instrument(opening).await?;
        match first {
            Ok(Some(Ok(opened))) => {
                let _ = self.opened.send(self.task_id);
                Ok((responses, opened))
            }
            Ok(Some(Err(e))) => Err(crate::restart::task_error("task failed to start", e)),
            Ok(None) => anyhow::bail!("connector did not open the {stream} stream"),
            Err(s) => anyhow::bail!("open {stream} stream: {}", s.message()),
        }
    }
}

/// A connector's answer on a task stream, as the stream's first: `Some(Ok)` opened (with what
/// the connector said opening), `Some(Err)` failed to start, `None` anything else.
pub(crate) trait FirstAnswer {
    type Opened;
    fn opening(self) -> Option<Result<Self::Opened, proto::TaskError>>;
}

macro_rules! first_answer {
    ($response:ty, $kind:path, $opened:ty) => {
        impl FirstAnswer for $response {
            type Opened = $opened;
            fn opening(self) -> Option<Result<$opened, proto::TaskError>> {
                use $kind as Kind;
                match self.kind {
                    Some(Kind::Opened(opened)) => Some(Ok(opened)),
                    Some(Kind::Error(e)) => Some(Err(e)),
                    _ => None,
                }
            }
        }
    };
}
first_answer!(
    proto::SourceResponse,
    proto::source_response::Kind,
    proto::SourceOpened
);
first_answer!(
    proto::SinkResponse,
    proto::sink_response::Kind,
    proto::SinkOpened
);

/// How the tasks of a source connector run their transactions on an exactly-once worker.
#[derive(Clone)]
pub struct Transactions {
    /// `<cluster id>-<connector>`: a task's `transactional.id` is this, `-`, its task id, so
    /// a task that starts anywhere fences every earlier instance of itself.
    pub id_prefix: String,
    pub boundary: TransactionBoundary,
    /// Commit period with [`TransactionBoundary::Interval`].
    pub interval: Duration,
    /// The worker's lease on its assignment: a task commits only while it holds.
    pub lease: Arc<Lease>,
}
