//! The embedded Kafka: librdkafka's mock cluster, which speaks the Kafka protocol on loopback
//! sockets. It lives on its own thread because the mock cluster handle cannot move between
//! threads; dropping [`EmbeddedKafka`] shuts it down.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
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
        Self::start_advertised(brokers, topics, default_partitions, None)
    }

    /// [`EmbeddedKafka::start`], reachable at `advertise` too: the mock brokers listen on
    /// loopback only, so each broker gets a forwarder on `advertise` (same port) and
    /// advertises that address to clients, for clients on other hosts (the multi-host tests'
    /// network namespaces).
    pub fn start_advertised(
        brokers: i32,
        topics: &[(String, i32)],
        default_partitions: i32,
        advertise: Option<IpAddr>,
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
                let bootstrap = match advertise {
                    None => Ok(cluster.bootstrap_servers()),
                    // SAFETY: `native` is the live mock cluster of `owner`.
                    Some(host) => unsafe {
                        advertise_on(native, &cluster.bootstrap_servers(), host)
                    },
                };
                let failed = bootstrap.is_err();
                let _ = ready_tx.send(bootstrap);
                if failed {
                    return;
                }
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

/// Makes each broker of `bootstraps` (loopback `HOST:PORT`s, broker ids 1, 2, ... in order)
/// advertise `host` with its port, forwarding `host:PORT` to it. Returns the new bootstrap list.
///
/// # Safety
/// `cluster` must be a live mock cluster.
unsafe fn advertise_on(
    cluster: *mut rdkafka::bindings::rd_kafka_mock_cluster_t,
    bootstraps: &str,
    host: IpAddr,
) -> anyhow::Result<String> {
    let name = std::ffi::CString::new(host.to_string()).context("advertised host")?;
    let mut advertised = Vec::new();
    for (index, broker) in bootstraps.split(',').enumerate() {
        let local: SocketAddr = broker
            .parse()
            .with_context(|| format!("mock broker address {broker:?}"))?;
        let public = SocketAddr::new(host, local.port());
        let listener = TcpListener::bind(public).with_context(|| {
            format!(
                "listen on {public} for broker {} (is {host} an address of this host?)",
                index + 1
            )
        })?;
        std::thread::Builder::new()
            .name(format!("kafka-forward-{}", index + 1))
            .spawn(move || forward(listener, local))
            .context("start a broker forwarder")?;
        // SAFETY: the caller's promise; the call takes the cluster's lock.
        unsafe {
            rdkafka::bindings::rd_kafka_mock_broker_set_host_port(
                cluster,
                index as i32 + 1,
                name.as_ptr(),
                i32::from(local.port()),
            )
        };
        advertised.push(public.to_string());
    }
    Ok(advertised.join(","))
}

/// Accepts connections on `listener` and joins each to a new connection to `to`, a byte pump
/// each way; either side closing closes the other.
fn forward(listener: TcpListener, to: SocketAddr) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let Ok(broker) = TcpStream::connect(to) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = broker.set_nodelay(true);
        for (from, into) in [(&client, &broker), (&broker, &client)] {
            let (Ok(mut from), Ok(mut into)) = (from.try_clone(), into.try_clone()) else {
                continue;
            };
            let _ = std::thread::Builder::new()
                .name("kafka-forward-pump".into())
                .spawn(move || {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = from.read(&mut buffer) {
                        if into.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = into.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                });
        }
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
