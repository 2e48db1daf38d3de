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

/// Tells the connector's runner that a task opened. Unbounded: one message per task and run.
pub type OpenedSender = mpsc::UnboundedSender<u32>;

/// What a task is, whichever its direction: whose it is, its config, its converters and
/// transforms, where it counts and reports.
pub struct TaskSpec {
    pub connector: String,
    pub class: String,
    pub task_id: u32,
    pub config: BTreeMap<String, String>,
    pub key_converter: Converter,
    pub value_converter: Converter,
    /// Applied between the connector and the converters (source: before them; sink: after).
    pub transforms: Arc<Chain>,
    pub counters: Arc<Counters>,
    /// Told the task id once the connector opened the task.
    pub opened: OpenedSender,
    /// Records that fail: `errors.tolerance`, log, dead-letter queue.
    pub errors: Arc<ErrorReporter>,
}

impl TaskSpec {
    /// Checks the connector's first answer on the task's `stream` ("source" or "sink"):
    /// `Ok(Some(Ok(())))` it opened (the runner is told), `Ok(Some(Err(e)))` it failed to
    /// start, anything else is a broken connector.
    pub(crate) fn started(
        &self,
        first: Result<Option<Result<(), proto::TaskError>>, tonic::Status>,
        stream: &str,
    ) -> anyhow::Result<()> {
        match first {
            Ok(Some(Ok(()))) => {
                let _ = self.opened.send(self.task_id);
                Ok(())
            }
            Ok(Some(Err(e))) => Err(crate::restart::task_error("task failed to start", e)),
            Ok(None) => anyhow::bail!("connector did not open the {stream} stream"),
            Err(s) => anyhow::bail!("open {stream} stream: {}", s.message()),
        }
    }
}

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
