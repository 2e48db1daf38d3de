//! The embedded Kafka: librdkafka's mock cluster, which speaks the Kafka protocol on loopback
//! sockets. It lives on its own thread because the mock cluster handle cannot move between
//! threads; dropping [`EmbeddedKafka`] shuts it down.

use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context as _};
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::ClientConfig;

/// A fault to inject into the embedded Kafka, for tests of failure handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The next `count` requests of one kind fail with `error` (then succeed again).
    RequestErrors {
        api: RDKafkaApiKey,
        error: RDKafkaRespErr,
        count: usize,
    },
    /// The broker stops accepting connections and drops those it has.
    BrokerDown(i32),
    BrokerUp(i32),
}

impl Fault {
    /// Parses `fail API COUNT ERROR` (API: produce, fetch, offset-commit, metadata,
    /// find-coordinator; ERROR: not-leader, timeout, not-coordinator, disconnect),
    /// `broker-down ID` or `broker-up ID`.
    pub fn parse(line: &str) -> anyhow::Result<Fault> {
        let words: Vec<&str> = line.split_whitespace().collect();
        Ok(match words.as_slice() {
            ["fail", api, count, error] => Fault::RequestErrors {
                api: match *api {
                    "produce" => RDKafkaApiKey::Produce,
                    "fetch" => RDKafkaApiKey::Fetch,
                    "offset-commit" => RDKafkaApiKey::OffsetCommit,
                    "metadata" => RDKafkaApiKey::Metadata,
                    "find-coordinator" => RDKafkaApiKey::FindCoordinator,
                    other => bail!("unknown request kind {other:?}"),
                },
                error: match *error {
                    "not-leader" => RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                    "timeout" => RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    "not-coordinator" => RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                    "disconnect" => RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
                    other => bail!("unknown error {other:?}"),
                },
                count: count
                    .parse()
                    .map_err(|_| anyhow!("count {count:?} is not a number"))?,
            },
            ["broker-down", id] => Fault::BrokerDown(id.parse().context("broker id")?),
            ["broker-up", id] => Fault::BrokerUp(id.parse().context("broker id")?),
            _ => bail!("expected: fail API COUNT ERROR | broker-down ID | broker-up ID"),
        })
    }
}

pub struct EmbeddedKafka {
    bootstrap: String,
    commands: Option<mpsc::Sender<Fault>>,
    thread: Option<JoinHandle<()>>,
}

extern "C" {
    /// `csrc/mock_defaults.c`: the partitions of a topic the mock cluster auto-creates.
    fn sluice_mock_set_default_partitions(
        cluster: *mut rdkafka::bindings::rd_kafka_mock_cluster_t,
        partitions: std::ffi::c_int,
    );
}

/// Kafka's `num.partitions` default: a topic created on first use has one partition.
pub const DEFAULT_PARTITIONS: i32 = 1;

impl EmbeddedKafka {
    /// Starts a cluster of `brokers` brokers, creates `topics` (name, partitions), and gives a
    /// topic created on first use `default_partitions` partitions (librdkafka's mock would
    /// give 4; Kafka's `num.partitions` default is [`DEFAULT_PARTITIONS`]).
    pub fn start(
        brokers: i32,
        topics: &[(String, i32)],
        default_partitions: i32,
    ) -> anyhow::Result<EmbeddedKafka> {
        if default_partitions < 1 {
            bail!("default partitions must be at least 1, not {default_partitions}");
        }
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (commands_tx, commands_rx) = mpsc::channel::<Fault>();
        let topics = topics.to_vec();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                // The mock cluster of a client of its own (rather than MockCluster::new), whose
                // native handle can be reached to set the default partitions.
                let owner: BaseProducer = match ClientConfig::new()
                    .set("test.mock.num.brokers", brokers.to_string())
                    .create()
                {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!("start mock cluster: {e}")));
                        return;
                    }
                };
                // SAFETY: the handle belongs to `owner`, alive for this whole thread.
                let native = unsafe {
                    rdkafka::bindings::rd_kafka_handle_mock_cluster(owner.client().native_ptr())
                };
                let Some(cluster) = owner.client().mock_cluster().filter(|_| !native.is_null())
                else {
                    let _ = ready_tx.send(Err(anyhow!("start mock cluster: no cluster")));
                    return;
                };
                // SAFETY: `native` is the live mock cluster of `owner`; no client has its
                // address yet, so nothing auto-creates a topic concurrently.
                unsafe { sluice_mock_set_default_partitions(native, default_partitions) };
                for (topic, partitions) in &topics {
                    if let Err(e) = cluster.create_topic(topic, *partitions, brokers.min(3)) {
                        let _ = ready_tx.send(Err(anyhow!("create topic {topic}: {e}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Serves faults until the handle is dropped.
                while let Ok(fault) = commands_rx.recv() {
                    let result = match &fault {
                        Fault::RequestErrors { api, error, count } => {
                            cluster.request_errors(*api, &vec![*error; *count]);
                            Ok(())
                        }
                        Fault::BrokerDown(id) => cluster.broker_down(*id),
                        Fault::BrokerUp(id) => cluster.broker_up(*id),
                    };
                    match result {
                        Ok(()) => tracing::info!(?fault, "fault injected"),
                        Err(e) => tracing::error!(?fault, "inject fault: {e}"),
                    }
                }
                drop(cluster);
                drop(owner);
            })
            .context("start embedded Kafka thread")?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| anyhow!("embedded Kafka thread ended during start-up"))??;
        Ok(EmbeddedKafka {
            bootstrap,
            commands: Some(commands_tx),
            thread: Some(thread),
        })
    }

    /// Injects a fault.
    pub fn inject(&self, fault: Fault) {
        if let Some(commands) = &self.commands {
            let _ = commands.send(fault);
        }
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
