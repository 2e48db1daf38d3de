//! The embedded Kafka: librdkafka's mock cluster, which speaks the Kafka protocol on loopback
//! sockets. It lives on its own thread because the mock cluster handle cannot move between
//! threads; dropping [`EmbeddedKafka`] shuts it down.

use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context as _};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

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

impl EmbeddedKafka {
    /// Starts a cluster of `brokers` brokers and creates `topics` (name, partitions).
    pub fn start(brokers: i32, topics: &[(String, i32)]) -> anyhow::Result<EmbeddedKafka> {
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (commands_tx, commands_rx) = mpsc::channel::<Fault>();
        let topics = topics.to_vec();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!("start mock cluster: {e}")));
                        return;
                    }
                };
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
