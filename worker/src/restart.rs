//! The restart policy: a failed task or connector process is restarted with exponential
//! backoff and jitter, up to a limit, then stays FAILED until a manual restart. Failures are
//! classified: a fatal one (the connector said a restart cannot help, or a record broke
//! `errors.tolerance=none`) is never retried.

use std::time::Duration;

use sluice_model::RestartPolicy;

/// A run that lasted this long counts as healthy: the next failure starts the backoff anew.
pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Marks a failure that a restart cannot cure; found anywhere in an error's chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// Whether `error` (or anything it wraps) is [`Fatal`].
pub fn is_fatal(error: &anyhow::Error) -> bool {
    error.chain().any(|e| e.is::<Fatal>())
}

/// A task's own report of its failure, as an error: fatal unless the connector called it
/// retriable.
pub fn task_error(what: &str, e: sluice_proto::connector::v1::TaskError) -> anyhow::Error {
    let text = if e.trace.is_empty() {
        format!("{what}: {}", e.message)
    } else {
        format!("{what}: {}\n{}", e.message, e.trace)
    };
    if e.retriable {
        anyhow::anyhow!(text)
    } else {
        anyhow::Error::new(Fatal(text))
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Restart after `delay`; this is restart number `attempt` since the last healthy run.
    Restart { delay: Duration, attempt: u32 },
    /// Stay FAILED; the text says why no restart follows.
    GiveUp(String),
}

/// The consecutive failures of one unit (a task or a connector instance).
#[derive(Debug)]
pub struct Restarts {
    policy: RestartPolicy,
    attempts: u32,
}

impl Restarts {
    pub fn new(policy: RestartPolicy) -> Restarts {
        Restarts {
            policy,
            attempts: 0,
        }
    }

    /// Decides after a failure of a run that lasted `ran_for`.
    pub fn on_failure(&mut self, error: &anyhow::Error, ran_for: Duration) -> Next {
        if is_fatal(error) {
            return Next::GiveUp("failed with an error a restart cannot fix".into());
        }
        if ran_for >= HEALTHY_RUN {
            self.attempts = 0;
        }
        if let Some(max) = self.policy.max_restarts {
            if self.attempts >= max {
                return Next::GiveUp(format!(
                    "failed {} times in a row, restart limit ({max}) reached",
                    self.attempts + 1
                ));
            }
        }
        self.attempts += 1;
        Next::Restart {
            delay: self.delay(self.attempts),
            attempt: self.attempts,
        }
    }

    /// Exponential backoff with ±20% jitter, so that units failing together do not restart
    /// in lockstep. Doubling outruns the jitter: each delay exceeds the one before until the
    /// cap.
    fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let base = self
            .policy
            .backoff_initial
            .saturating_mul(1 << exponent)
            .min(self.policy.backoff_max);
        base.mul_f64(0.8 + 0.4 * fastrand::f64())
            .min(self.policy.backoff_max)
    }

    /// The limit, for status texts.
    pub fn limit(&self) -> String {
        match self.policy.max_restarts {
            Some(max) => max.to_string(),
            None => "unlimited".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: Option<u32>) -> RestartPolicy {
        RestartPolicy {
            max_restarts: max,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
        }
    }

    #[test]
    fn delays_grow_to_the_cap_then_the_limit_fails_the_unit() {
        let mut r = Restarts::new(policy(Some(5)));
        let e = anyhow::anyhow!("crashed");
        let mut previous = Duration::ZERO;
        for n in 1..=5 {
            match r.on_failure(&e, Duration::from_millis(10)) {
                Next::Restart { delay, attempt } => {
                    assert_eq!(attempt, n);
                    assert!(delay <= Duration::from_secs(1));
                    if n <= 4 {
                        assert!(delay > previous, "{delay:?} after {previous:?}");
                    }
                    previous = delay;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(
            matches!(r.on_failure(&e, Duration::ZERO), Next::GiveUp(w) if w.contains("6 times"))
        );
    }

    #[test]
    fn a_healthy_run_resets_and_fatal_errors_never_restart() {
        let mut r = Restarts::new(policy(Some(1)));
        let e = anyhow::anyhow!("crashed");
        assert!(matches!(
            r.on_failure(&e, Duration::ZERO),
            Next::Restart { attempt: 1, .. }
        ));
        assert!(matches!(
            r.on_failure(&e, HEALTHY_RUN),
            Next::Restart { attempt: 1, .. }
        ));
        let fatal = anyhow::Error::new(Fatal("bad record".into())).context("task 0");
        assert!(matches!(r.on_failure(&fatal, HEALTHY_RUN), Next::GiveUp(_)));
        let mut unlimited = Restarts::new(policy(None));
        for _ in 0..100 {
            assert!(matches!(
                unlimited.on_failure(&e, Duration::ZERO),
                Next::Restart { .. }
            ));
        }
    }
}
