//! The worker's lease on its assignment: self-fencing for exactly-once source tasks.
//!
//! The controller moves a worker's tasks once it has not heard from it for its worker timeout.
//! A heartbeat the controller acknowledged proves it had heard from the worker when the
//! heartbeat was sent, so until `sent + timeout` no other worker can have been given this
//! worker's tasks. A transactional task commits only inside that window (less a margin), and
//! only if the lease never lapsed since the task started: after a lapse its task may have run
//! elsewhere meanwhile, so it stops and restarts from the committed offsets instead.
//!
//! The lease runs out whenever acknowledgements stop for a while; that alone is no lapse.
//! Tasks wait, and a heartbeat acknowledged again on the same stream proves the controller
//! never let go of this worker (it drops a silent worker's stream first, and then answers
//! every heartbeat with "rejoin"), so nothing moved. A lapse is a join after the lease ran
//! out: whatever the controller did meanwhile, the join's assignment is all that is known.
//!
//! Kafka's own fencing (a new producer with the same `transactional.id` fences the old one)
//! remains the authority; the lease also protects brokers that do not fence (librdkafka's mock
//! cluster) and stops a zombie before it even tries.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The part of the worker timeout kept as a margin for a commit in flight.
const MARGIN_FRACTION: f64 = 0.25;

#[derive(Default)]
pub struct Lease {
    state: Mutex<State>,
    renewed: Notify,
}

#[derive(Default)]
struct State {
    valid_until: Option<Instant>,
    /// Counts lapses: joins that came after the lease had run out.
    lapses: u64,
    /// A join whose first assignment is not applied yet: renewals wait for it, so that a
    /// task that moved away is stopped before the lease says "yours" again.
    awaiting_assignment: Option<u64>,
    joins: u64,
    /// When the controller may move this worker's work: a whole worker timeout after the
    /// last acknowledged heartbeat was sent.
    movable_after: Option<Instant>,
}

/// Why a task may not commit.
#[derive(Debug, thiserror::Error)]
#[error("this worker's lease on its assignment lapsed (the controller may have moved the task); restarting from the committed offsets")]
pub struct Lapsed;

impl Lease {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A (re)join: no renewal extends the lease until the join's first assignment is applied
    /// (units that moved away are stopping by then). The lease itself stands until it runs
    /// out: the controller moves work only after a whole worker timeout of silence, so a
    /// quick rejoin (a restarted controller, a broken stream) costs the tasks nothing, and one
    /// after the lease ran out is a lapse. Returns the join's number for [`Lease::applied`].
    pub fn joined(&self) -> u64 {
        let mut state = self.lock();
        state.joins += 1;
        state.awaiting_assignment = Some(state.joins);
        let join = state.joins;
        if state
            .valid_until
            .is_none_or(|until| until <= Instant::now())
        {
            state.lapses += 1;
            drop(state);
            // Waiting tasks learn of the lapse now.
            self.renewed.notify_waiters();
        }
        join
    }

    /// The first assignment of join `join` is applied: units that moved away are stopping.
    pub fn applied(&self, join: u64) {
        let mut state = self.lock();
        if state.awaiting_assignment == Some(join) {
            state.awaiting_assignment = None;
        }
    }

    /// The controller acknowledged a heartbeat sent at `sent`; it moves work after
    /// `worker_timeout` of silence.
    pub fn renew(&self, sent: Instant, worker_timeout: Duration) {
        let mut state = self.lock();
        if state.awaiting_assignment.is_some() || worker_timeout.is_zero() {
            return;
        }
        let now = Instant::now();
        let until = sent + worker_timeout.mul_f64(1.0 - MARGIN_FRACTION);
        if until > now {
            let movable = sent + worker_timeout;
            state.movable_after = Some(state.movable_after.map_or(movable, |m| m.max(movable)));
            state.valid_until = Some(state.valid_until.map_or(until, |u| u.max(until)));
            drop(state);
            self.renewed.notify_waiters();
        }
    }

    /// How long the lease holds from now (zero when it ran out or was never granted), and
    /// the lapses after the first join, for the metrics.
    pub fn standing(&self) -> (Duration, u64) {
        let state = self.lock();
        let left = state.valid_until.map_or(Duration::ZERO, |u| {
            u.saturating_duration_since(Instant::now())
        });
        (left, state.lapses.saturating_sub(1))
    }

    /// Whether the controller may have moved this worker's work by now (a whole worker
    /// timeout since the last acknowledged heartbeat was sent): its units must not run on.
    pub fn expired(&self) -> bool {
        self.lock()
            .movable_after
            .is_some_and(|after| after <= Instant::now())
    }

    /// How long until [`Lease::expired`] (None: never granted).
    pub fn until_expired(&self) -> Option<Duration> {
        self.lock()
            .movable_after
            .map(|after| after.saturating_duration_since(Instant::now()))
    }

    /// The lapse count now, for a task that starts.
    pub fn epoch(&self) -> u64 {
        self.lock().lapses
    }

    /// Whether the lease holds now and never lapsed since `epoch`.
    pub fn holds(&self, epoch: u64) -> bool {
        let state = self.lock();
        state.lapses == epoch && state.valid_until.is_some_and(|u| u > Instant::now())
    }

    /// Waits (up to `timeout`) for a valid lease that never lapsed since `epoch`.
    pub async fn check(&self, epoch: u64, timeout: Duration) -> Result<(), Lapsed> {
        let deadline = Instant::now() + timeout;
        loop {
            let renewed = self.renewed.notified();
            {
                let state = self.lock();
                if state.lapses != epoch {
                    return Err(Lapsed);
                }
                if state.valid_until.is_some_and(|u| u > Instant::now()) {
                    return Ok(());
                }
            }
            tokio::select! {
                _ = renewed => {}
                _ = tokio::time::sleep_until(deadline) => return Err(Lapsed),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(4);

    /// A lease joined, its assignment applied and a heartbeat acknowledged; its epoch.
    fn held() -> (Lease, u64) {
        let lease = Lease::default();
        let join = lease.joined();
        lease.applied(join);
        lease.renew(Instant::now(), TIMEOUT);
        let epoch = lease.epoch();
        (lease, epoch)
    }

    #[tokio::test(start_paused = true)]
    async fn it_expires_a_whole_worker_timeout_after_the_last_acknowledged_heartbeat_was_sent() {
        let (lease, _) = held();
        assert!(!lease.expired());
        // Past the commit window (three quarters) but not the controller's timeout.
        tokio::time::advance(Duration::from_secs(3) + Duration::from_millis(500)).await;
        assert!(!lease.expired());
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(lease.expired());
        // A heartbeat acknowledged again puts it back.
        lease.renew(Instant::now(), TIMEOUT);
        assert!(!lease.expired());
        assert!(
            !Lease::default().expired(),
            "never granted: nothing to move"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silence_holds_tasks_back_and_a_renewal_without_a_join_lets_them_go_on() {
        let lease = Lease::default();
        let join = lease.joined();
        lease.renew(Instant::now(), TIMEOUT);
        assert!(
            lease.check(lease.epoch(), Duration::ZERO).await.is_err(),
            "no renewal before the join's assignment is applied"
        );
        lease.applied(join);
        lease.renew(Instant::now(), TIMEOUT);
        let epoch = lease.epoch();
        assert!(lease.check(epoch, Duration::ZERO).await.is_ok());

        // Silence past the lease: tasks may not commit...
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!lease.holds(epoch));
        assert!(lease.check(epoch, Duration::from_millis(10)).await.is_err());
        // ...until the controller acknowledges a heartbeat on the same stream: it never let
        // go of this worker, so nothing moved.
        lease.renew(Instant::now(), TIMEOUT);
        assert!(lease.holds(epoch));
        assert!(lease.check(epoch, Duration::ZERO).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_join_after_the_lease_ran_out_is_a_lapse() {
        let (lease, epoch) = held();

        tokio::time::advance(Duration::from_secs(5)).await;
        let join = lease.joined();
        lease.applied(join);
        lease.renew(Instant::now(), TIMEOUT);
        assert!(
            lease.check(epoch, Duration::ZERO).await.is_err(),
            "a task started before may have run elsewhere meanwhile"
        );
        let later = lease.epoch();
        assert!(lease.check(later, Duration::ZERO).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_join_within_the_lease_is_no_lapse() {
        let (lease, epoch) = held();

        // A quick rejoin: the lease stands, but nothing extends it before the assignment.
        let join = lease.joined();
        assert!(lease.check(epoch, Duration::ZERO).await.is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        lease.renew(Instant::now(), TIMEOUT);
        tokio::time::advance(Duration::from_millis(2100)).await;
        assert!(
            lease.check(epoch, Duration::ZERO).await.is_err(),
            "renewed before the assignment was applied"
        );
        lease.applied(join);
        lease.renew(Instant::now(), TIMEOUT);
        assert!(lease.check(epoch, Duration::ZERO).await.is_ok());
    }
}
