//! Bounded graceful stops. Once a process is told to stop (SIGTERM, Ctrl-C), its drain gets
//! at most a fixed time (`--shutdown-timeout`); past it the process gives up: it logs what was
//! not committed (a restart replays it: at-least-once), and exits non-zero. The connector
//! processes still running are killed as their tasks are dropped (`kill_on_drop`, and the
//! kernel's parent-death signal as a backstop).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::task::offsets::OffsetStore;

/// What `sluice standalone`, `sluice worker` and `sluice controller` allow a graceful stop by
/// default: room for the tasks' `task.shutdown.graceful.timeout.ms` (5 s), the connector
/// processes' own shutdown and the final offset flush.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// A graceful stop that did not finish in time.
#[derive(Debug, thiserror::Error)]
#[error("graceful stop did not finish within {limit:?} (--shutdown-timeout); exited without it")]
pub struct StopTimedOut {
    pub limit: Duration,
}

/// Units (connectors, tasks) whose stop ended in a failure: a drain that timed out, a
/// commit the broker never answered. Nothing they held is lost, it is delivered again; but
/// the process says so and exits non-zero.
#[derive(Debug, Default)]
pub struct StopFailures(std::sync::Mutex<Vec<StopFailure>>);

/// One unit whose stop failed.
#[derive(Debug, Clone)]
pub struct StopFailure {
    /// The unit, e.g. `connector gen` or `task gen-1`.
    pub unit: String,
    pub connector: String,
    /// A source connector's unit: it resumes from its committed source positions; a sink's
    /// from its consumer group's committed offsets.
    pub source: bool,
    pub error: String,
}

impl StopFailures {
    pub fn record(&self, failure: StopFailure) {
        if let Ok(mut failures) = self.0.lock() {
            failures.push(failure);
        }
    }

    /// The failures recorded so far, forgetting them.
    pub fn take(&self) -> Vec<StopFailure> {
        self.0
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default()
    }
}

/// A graceful stop in which some units did not drain and commit.
#[derive(Debug, thiserror::Error)]
#[error("{} connector unit(s) did not stop cleanly; what they had not committed is delivered again when they restart (at-least-once)", .0.len())]
pub struct UncleanStop(pub Vec<StopFailure>);

/// At the end of a graceful stop: an error naming every unit whose stop failed since
/// `failures` was last taken, each with where it resumes (what it had not committed is
/// delivered again from there), and the positions `offsets` could not commit.
pub fn check_clean(failures: &StopFailures, offsets: &OffsetStore) -> anyhow::Result<()> {
    let failed = failures.take();
    if failed.is_empty() {
        return Ok(());
    }
    for failure in &failed {
        let resumes = if failure.source {
            let positions = offsets.held_positions(&failure.connector);
            if positions.is_empty() {
                "it resumes from the start of its source (no position committed)".to_string()
            } else {
                format!("it resumes from {}", positions.join("; "))
            }
        } else {
            format!(
                "it resumes from the offsets last committed for the consumer group connect-{}",
                failure.connector
            )
        };
        tracing::error!(
            "{} did not stop cleanly: {}; {resumes}, and what it had not committed is delivered again (at-least-once)",
            failure.unit,
            failure.error
        );
    }
    let uncommitted = offsets.uncommitted();
    if !uncommitted.is_empty() {
        tracing::error!(
            "source positions acknowledged by Kafka but not committed: {}",
            uncommitted.join("; ")
        );
    }
    Err(UncleanStop(failed).into())
}

/// Runs `work` to its end; once `shutdown` is cancelled, allows it at most `limit` more.
/// Past that, `work` is dropped and, when `offsets` is given, the positions it held but had
/// not committed are logged.
pub async fn bounded<F>(
    work: F,
    shutdown: &CancellationToken,
    limit: Duration,
    offsets: Option<&OffsetStore>,
) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => return result,
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => {
            let Some(offsets) = offsets else {
                tracing::error!(
                    "graceful stop did not finish within {limit:?}; exiting without it"
                );
                return Err(StopTimedOut { limit }.into());
            };
            let uncommitted = offsets.uncommitted();
            if uncommitted.is_empty() {
                tracing::error!(
                    "graceful stop did not finish within {limit:?}: stopping connector processes now; sink records after each task's last committed offset and source records after the last committed positions will be delivered again when the connectors restart (at-least-once)"
                );
            } else {
                tracing::error!(
                    "graceful stop did not finish within {limit:?}: stopping connector processes now; {} source position(s) acknowledged by Kafka were not committed and their records will be delivered again when the connectors restart (at-least-once): {}; likewise sink records after each task's last committed offset",
                    uncommitted.len(),
                    uncommitted.join("; ")
                );
            }
            Err(StopTimedOut { limit }.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stop_that_hangs_ends_at_the_limit() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let started = tokio::time::Instant::now();
        let result = bounded(
            std::future::pending(),
            &shutdown,
            Duration::from_secs(3),
            None,
        )
        .await;
        assert!(result.unwrap_err().is::<StopTimedOut>());
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_counts_from_the_stop_request() {
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(100)).await;
            trigger.cancel();
        });
        let work = async {
            tokio::time::sleep(Duration::from_secs(102)).await;
            Ok(())
        };
        bounded(work, &shutdown, Duration::from_secs(3), None)
            .await
            .unwrap();
    }
}
