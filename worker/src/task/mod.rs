//! The data path of one task: [`source`] (connector → converters → Kafka, at least once or
//! in transactions) and [`sink`] (Kafka → converters → connector, offsets committed after
//! the connector's flush), with what they share: [`offsets`] (source positions), [`errors`]
//! (`errors.*`: tolerance, retries, the dead-letter queue), [`metrics`] (counters).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::lease::Lease;
use sluice_model::TransactionBoundary;

pub mod errors;
pub mod metrics;
pub mod offsets;
pub mod sink;
pub mod source;

/// Tells the connector's runner that a task opened. Unbounded: one message per task and run.
pub type OpenedSender = mpsc::UnboundedSender<u32>;

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
