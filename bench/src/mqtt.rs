//! The MQTT connectors against a Mosquitto of the benchmark's own (started from the installed
//! `mosquitto` on a free port, with no limit on the messages queued for a client, so that a
//! backlog waits in full for its session), each figure beside a plain rumqttc client doing
//! the same MQTT work in the same run:
//! - `source_mqtt_qos1`: a backlog of QoS 1 messages (100 bytes) queued for a persistent
//!   session → MqttSource → worker → Kafka, until the last message's offset is committed (and
//!   so acknowledged); baseline: a client resuming its own session over the same backlog,
//!   acknowledging each message as it arrives;
//! - `sink_mqtt_qos1`: Kafka (100-byte values) → worker → MqttSink at QoS 1, until a
//!   subscriber has every message; baseline: the same messages published at QoS 1 by one
//!   client, until the subscriber has every one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use sluice_data::converter::{Converter, Side};
use sluice_proto::connector::v1::ConnectorType;
use sluice_worker::runner::producer_config;
use sluice_worker::task::offsets::OffsetStore;

use crate::databases::run_sink_until;
use crate::{
    run_until_committed, send, spec_with, string_converter, worker_context, Figure, TIMEOUT,
};

/// The sink figure's topic, created before the run.
pub const TOPIC: &str = "bench-sink-mqtt";
const PAYLOAD: usize = 100;

/// Mosquitto on a free port; killed when dropped.
struct Broker {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> anyhow::Result<Broker> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n{}",
                if unsafe { libc::getuid() } == 0 {
                    "user root\n"
                } else {
                    ""
                }
            ),
        )?;
        // Debian puts it in /usr/sbin, often not on a user's PATH.
        let bin = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .unwrap_or("mosquitto");
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("start mosquitto (install Mosquitto)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Broker {
            port,
            child,
            _dir: dir,
        })
    }

    fn uri(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// A connected client; `persistent`: a session that outlives the connection.
    async fn client(
        &self,
        id: &str,
        persistent: bool,
        manual_acks: bool,
    ) -> anyhow::Result<(AsyncClient, EventLoop)> {
        let mut options = MqttOptions::new(id, "127.0.0.1", self.port);
        options
            .set_clean_start(!persistent)
            .set_manual_acks(manual_acks)
            .set_receive_maximum(Some(1000))
            .set_keep_alive(Duration::from_secs(30));
        if persistent {
            options.set_session_expiry_interval(Some(3600));
        }
        let (client, mut eventloop) = AsyncClient::new(options, 10_000);
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await? {
                return Ok((client, eventloop));
            }
        }
    }

    /// Opens a persistent session `id` subscribed to `filter` at QoS 1, and leaves.
    async fn session(&self, id: &str, filter: &str) -> anyhow::Result<()> {
        let (client, mut eventloop) = self.client(id, true, false).await?;
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
                break;
            }
        }
        client.disconnect().await?;
        while eventloop.poll().await.is_ok() {}
        Ok(())
    }

    /// Publishes `count` QoS 1 messages of PAYLOAD bytes to `topic` and waits for every PUBACK.
    async fn publish(&self, topic: &str, count: u64) -> anyhow::Result<()> {
        let (client, mut eventloop) = self.client("bench-publisher", false, false).await?;
        let topic = topic.to_string();
        let publisher = tokio::spawn(async move {
            for i in 0..count {
                client
                    .publish(topic.as_str(), QoS::AtLeastOnce, false, payload(i))
                    .await?;
            }
            Ok::<_, anyhow::Error>(client)
        });
        let mut acked = 0;
        while acked < count {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await? {
                acked += 1;
            }
        }
        let client = publisher.await??;
        client.disconnect().await?;
        Ok(())
    }

    /// A subscriber to `filter` at QoS 0 counting what it receives.
    async fn counter(&self, filter: &str) -> anyhow::Result<Arc<AtomicU64>> {
        let (client, mut eventloop) = self.client("bench-counter", false, false).await?;
        client.subscribe(filter, QoS::AtMostOnce).await?;
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
                break;
            }
        }
        let count = Arc::new(AtomicU64::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            let _client = client;
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(_)) = event {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(count)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Message `i`: its number, padded to PAYLOAD bytes.
fn payload(i: u64) -> Vec<u8> {
    format!("{i:0>PAYLOAD$}").into_bytes()
}

pub async fn figures(bootstrap: &str, messages: u64) -> anyhow::Result<Vec<Figure>> {
    let broker = Broker::start()?;
    let mut figures = vec![source(&broker, bootstrap, messages).await?];
    figures.extend(sink(&broker, bootstrap, messages).await?);
    Ok(figures)
}

async fn source(broker: &Broker, bootstrap: &str, messages: u64) -> anyhow::Result<Figure> {
    let filter = "bench/in/#";
    // Both sessions exist before the backlog is published: each gets all of it.
    broker.session("bench-baseline", filter).await?;
    broker.session("bench-source-0", filter).await?;
    broker.publish("bench/in/t", messages).await?;

    // The baseline: resume the session and take the backlog, acknowledging each message. The
    // event loop runs on its own, as in the connector: awaiting an ack in the loop that polls
    // it deadlocks once the client's request queue is full.
    let started = Instant::now();
    let (client, mut eventloop) = broker.client("bench-baseline", true, true).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(publish)) = event {
                if tx.send(publish).is_err() {
                    return;
                }
            }
        }
    });
    let mut received = 0;
    while received < messages {
        let Some(publish) = rx.recv().await else {
            bail!("the baseline's connection ended after {received} messages");
        };
        std::hint::black_box(&publish.payload);
        received += 1;
        client.ack(&publish).await?;
    }
    let baseline = started.elapsed().as_secs_f64();
    tracing::info!(baseline, "source baseline took the backlog");
    client.disconnect().await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;

    let name = "bench-mqtt-source";
    let mut spec = spec_with(
        name,
        ConnectorType::Source,
        "MqttSource",
        &[
            ("mqtt.server.uri", broker.uri()),
            ("mqtt.topics", filter.into()),
            ("mqtt.client.id", "bench-source".into()),
            ("kafka.topic", "bench-mqtt-source".into()),
        ],
        "--mqtt-connector",
    )?;
    spec.conversion.key = string_converter(Side::Key);
    spec.conversion.value = byte_array_converter();
    let offsets = Arc::new(OffsetStore::open(None)?);
    let done = format!("{{\"seq\":{}}}", messages - 1);
    let secs = run_until_committed(spec, bootstrap, offsets, &done).await?;
    Ok(Figure {
        name: "source_mqtt_qos1".into(),
        records: messages,
        size: PAYLOAD,
        secs,
        baseline_secs: baseline,
    })
}

async fn sink(broker: &Broker, bootstrap: &str, messages: u64) -> anyhow::Result<Vec<Figure>> {
    {
        let bootstrap = bootstrap.to_string();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let producer: ThreadedProducer<DefaultProducerContext> =
                producer_config(&bootstrap, BTreeMap::new()).create()?;
            for i in 0..messages {
                let value = payload(i);
                send(
                    &producer,
                    BaseRecord::<(), [u8]>::to(TOPIC).payload(&value[..]),
                );
            }
            producer.flush(TIMEOUT)?;
            Ok(())
        })
        .await??;
    }
    let count = broker.counter("bench/out/#").await?;

    // The baseline: the same messages published by one client at QoS 1.
    let started = Instant::now();
    broker.publish("bench/out/base", messages).await?;
    while count.load(Ordering::Relaxed) < messages {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let baseline = started.elapsed().as_secs_f64();
    tracing::info!(baseline, "sink baseline published");
    count.store(0, Ordering::Relaxed);

    let mut spec = spec_with(
        "bench-mqtt-sink",
        ConnectorType::Sink,
        "MqttSink",
        &[
            ("mqtt.server.uri", broker.uri()),
            ("topics", TOPIC.into()),
            ("mqtt.topic", "bench/out/sink".into()),
        ],
        "--mqtt-connector",
    )?;
    spec.conversion.value = byte_array_converter();
    let ctx = worker_context(bootstrap, Arc::new(OffsetStore::open(None)?));
    let (secs, from_first) = run_sink_until(spec, ctx, messages, || {
        let got = count.load(Ordering::Relaxed);
        async move { Ok(got) }
    })
    .await?;
    Ok(vec![
        Figure {
            name: "sink_mqtt_qos1".into(),
            records: messages,
            size: PAYLOAD,
            secs,
            baseline_secs: baseline,
        },
        Figure {
            name: "sink_mqtt_qos1_from_first".into(),
            records: messages,
            size: PAYLOAD,
            secs: from_first,
            baseline_secs: baseline,
        },
    ])
}

pub(crate) fn byte_array_converter() -> Converter {
    Converter::new(
        "org.apache.kafka.connect.converters.ByteArrayConverter",
        &BTreeMap::new(),
        Side::Value,
    )
    .expect("ByteArrayConverter is built in")
}
