//! How the worker's Kafka clients log. librdkafka reports a broker that went away from every
//! client, several times a second; here those reports go to one process-wide [`BrokerHealth`],
//! which logs the change once (WARN, naming the clients affected), a reminder at most every
//! [`REMINDER_EVERY`], and INFO when a client reaches Kafka again. A partition's end
//! (`PartitionEOF`) is not an error and is not logged. Every client the worker creates uses
//! [`KafkaLog`] as its context (or delegates to one).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientContext;

/// Most often a broker that stays away is mentioned again.
pub const REMINDER_EVERY: Duration = Duration::from_secs(30);
/// Successes this soon after an outage began do not end it: acknowledgements of what was sent
/// just before the broker went away arrive after the first failure reports.
const SETTLE: Duration = Duration::from_millis(500);

/// A client context that names its client (e.g. `source task gen-0`) in what it logs.
#[derive(Debug, Clone)]
pub struct KafkaLog {
    client: String,
}

impl KafkaLog {
    pub fn new(client: impl Into<String>) -> KafkaLog {
        KafkaLog {
            client: client.into(),
        }
    }

    /// The client reached Kafka (a delivery acknowledged, a fetch answered).
    pub fn reachable(&self) {
        health().reachable();
    }

    /// An error a consumer's poll returned: a broker away counts towards [`BrokerHealth`],
    /// the end of a partition is nothing, anything else is a warning.
    pub fn consumer_error(&self, error: KafkaError) {
        use RDKafkaErrorCode as C;
        match error.rdkafka_error_code() {
            // The end of a partition; a missing topic is logged by the error callback.
            Some(C::PartitionEOF | C::UnknownTopicOrPartition) => {}
            code if broker_away(code) => health().unreachable(&self.client, &error.to_string()),
            _ => tracing::warn!(client = %self.client, "consumer: {error}"),
        }
    }
}

/// Whether an error code means a broker could not be reached.
fn broker_away(code: Option<RDKafkaErrorCode>) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        Some(C::AllBrokersDown | C::BrokerTransportFailure | C::Resolve)
    )
}

impl rdkafka::consumer::ConsumerContext for KafkaLog {}

impl ClientContext for KafkaLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_line(&self.client, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_error(&self.client, error, reason);
    }
}

/// [`ClientContext::log`] for a client named `client`.
fn log_line(client: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    use RDKafkaLogLevel as L;
    // Connection failures are logged by librdkafka (facility FAIL) besides being reported as
    // errors; both count as one broker being away. The disconnects that precede them (INFO)
    // are reconnection detail.
    if fac == "FAIL" {
        if matches!(
            level,
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
        ) {
            health().unreachable(client, message);
        } else {
            tracing::debug!(target: "librdkafka", client, "{fac} {message}");
        }
        return;
    }
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(target: "librdkafka", client, "{fac} {message}")
        }
        L::Warning => tracing::warn!(target: "librdkafka", client, "{fac} {message}"),
        L::Notice | L::Info => tracing::info!(target: "librdkafka", client, "{fac} {message}"),
        L::Debug => tracing::debug!(target: "librdkafka", client, "{fac} {message}"),
    }
}

/// [`ClientContext::error`] for a client named `client`.
fn log_error(client: &str, error: KafkaError, reason: &str) {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code() {
        Some(C::PartitionEOF) => {
            tracing::trace!(target: "librdkafka", client, "end of partition: {reason}")
        }
        code if broker_away(code) => health().unreachable(client, reason),
        // A sink subscribed before its topic's first record (a source creates it on first
        // produce): not an error, and it resolves itself.
        Some(C::UnknownTopicOrPartition) => {
            tracing::warn!(target: "librdkafka", client, "topic does not exist (yet): {reason}")
        }
        _ => tracing::error!(target: "librdkafka", client, "{error}: {reason}"),
    }
}

/// Whether the worker can reach Kafka, as its clients report it.
pub struct BrokerHealth {
    /// Fast path for [`BrokerHealth::reachable`], called on every acknowledgement.
    down: AtomicBool,
    state: Mutex<Outage>,
    /// How to reach Kafka for a probe while it is away, so that its return is noticed even
    /// when no record flows ([`BrokerHealth::probe_with`]).
    probe: Mutex<Option<rdkafka::ClientConfig>>,
    probing: AtomicBool,
}

/// How often the probe asks Kafka for metadata while it is away.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The probe's client context: its own failures are the outage already reported.
struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::trace!(target: "librdkafka", client = "reachability probe", "{fac} {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::trace!(target: "librdkafka", client = "reachability probe", "{error}: {reason}");
    }
}

impl rdkafka::producer::ProducerContext for Quiet {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

#[derive(Default)]
struct Outage {
    since: Option<Instant>,
    last_logged: Option<Instant>,
    affected: BTreeSet<String>,
    /// Reports since the last line logged.
    reports: u64,
}

/// The process's one [`BrokerHealth`].
pub fn health() -> &'static BrokerHealth {
    static HEALTH: OnceLock<BrokerHealth> = OnceLock::new();
    HEALTH.get_or_init(BrokerHealth::new)
}

impl BrokerHealth {
    fn new() -> BrokerHealth {
        BrokerHealth {
            down: AtomicBool::new(false),
            state: Mutex::new(Outage::default()),
            probe: Mutex::new(None),
            probing: AtomicBool::new(false),
        }
    }

    /// While Kafka is away, a thread asks it for metadata with `config` (the worker's
    /// producer settings) every [`PROBE_EVERY`] and reports it reachable once it answers.
    pub fn probe_with(&self, config: rdkafka::ClientConfig) {
        if let Ok(mut probe) = self.probe.lock() {
            *probe = Some(config);
        }
    }

    /// Starts the probe thread, if a probe is configured and none runs. Only the process's
    /// [`health`] has one configured, and the thread reports to it.
    fn start_probe(&self) {
        let Some(config) = self.probe.lock().ok().and_then(|p| p.clone()) else {
            return;
        };
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("kafka-probe".into())
            .spawn(move || {
                use rdkafka::producer::{BaseProducer, Producer as _};
                if let Ok(producer) = config.create_with_context::<_, BaseProducer<Quiet>>(Quiet) {
                    // A success within SETTLE of the outage's start does not end it: the
                    // loop asks again.
                    while health().is_down() {
                        if producer.client().fetch_metadata(None, PROBE_EVERY).is_ok() {
                            health().reachable();
                        }
                        std::thread::sleep(PROBE_EVERY);
                    }
                }
                health().probing.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.probing.store(false, Ordering::Release);
        }
    }

    /// A client could not reach Kafka: logged at once if Kafka was reachable, else counted
    /// and mentioned at most every [`REMINDER_EVERY`].
    pub fn unreachable(&self, client: &str, reason: &str) {
        self.unreachable_at(client, reason, Instant::now());
    }

    fn unreachable_at(&self, client: &str, reason: &str, now: Instant) {
        let Ok(mut outage) = self.state.lock() else {
            return;
        };
        self.down.store(true, Ordering::Relaxed);
        outage.affected.insert(client.to_string());
        outage.reports += 1;
        match (outage.since, outage.last_logged) {
            (None, _) | (_, None) => {
                outage.since = Some(now);
                outage.last_logged = Some(now);
                outage.reports = 0;
                tracing::warn!(
                    target: "librdkafka",
                    "Kafka unreachable: {reason}; affected: {}; records wait in the clients and are retried (the same is mentioned again at most every {}s)",
                    outage.affected.iter().cloned().collect::<Vec<_>>().join(", "),
                    REMINDER_EVERY.as_secs()
                );
                drop(outage);
                self.start_probe();
            }
            (Some(since), Some(last)) if now.duration_since(last) >= REMINDER_EVERY => {
                tracing::warn!(
                    target: "librdkafka",
                    "Kafka still unreachable after {}s ({} reports since the last mention, latest: {reason}); affected: {}",
                    now.duration_since(since).as_secs(),
                    outage.reports,
                    outage.affected.iter().cloned().collect::<Vec<_>>().join(", ")
                );
                outage.last_logged = Some(now);
                outage.reports = 0;
            }
            _ => {}
        }
    }

    /// A client reached Kafka: logged once if it was unreachable.
    pub fn reachable(&self) {
        if self.down.load(Ordering::Relaxed) {
            self.reachable_at(Instant::now());
        }
    }

    fn reachable_at(&self, now: Instant) {
        let Ok(mut outage) = self.state.lock() else {
            return;
        };
        if outage
            .since
            .is_some_and(|since| now.saturating_duration_since(since) < SETTLE)
        {
            return;
        }
        if let Some(since) = outage.since {
            tracing::info!(
                target: "librdkafka",
                "Kafka reachable again after {:.1}s",
                now.duration_since(since).as_secs_f64()
            );
        }
        *outage = Outage::default();
        self.down.store(false, Ordering::Relaxed);
    }

    /// Whether a client reported Kafka unreachable and none reached it since.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_one_line_then_reminders_then_one_line() {
        let health = BrokerHealth::new();
        let t0 = Instant::now();
        let lines = |h: &BrokerHealth| h.state.lock().unwrap().last_logged;
        health.unreachable_at("producer", "1/1 brokers are down", t0);
        assert!(health.is_down());
        assert_eq!(lines(&health), Some(t0));
        // Reports within the reminder period are counted, not logged.
        for i in 1..60 {
            health.unreachable_at("consumer", "refused", t0 + Duration::from_millis(500 * i));
        }
        assert_eq!(lines(&health), Some(t0));
        assert_eq!(health.state.lock().unwrap().reports, 59);
        let later = t0 + REMINDER_EVERY + Duration::from_millis(1);
        health.unreachable_at("consumer", "refused", later);
        assert_eq!(lines(&health), Some(later));
        assert_eq!(
            health.state.lock().unwrap().affected,
            BTreeSet::from(["consumer".to_string(), "producer".to_string()])
        );
        // A success right after the outage began is a late acknowledgement, not a return.
        let fresh = BrokerHealth::new();
        fresh.unreachable_at("producer", "down", t0);
        fresh.reachable_at(t0 + Duration::from_millis(100));
        assert!(fresh.is_down());
        health.reachable_at(later);
        assert!(!health.is_down());
        assert_eq!(lines(&health), None);
        // The next outage is news again.
        health.unreachable_at("producer", "down", later + Duration::from_secs(1));
        assert_eq!(lines(&health), Some(later + Duration::from_secs(1)));
    }
}
