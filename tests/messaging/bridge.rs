//! The bridge: messages published to MQTT travel MQTT → MqttSource → Kafka → RabbitMqSink →
//! RabbitMQ → RabbitMqSource → Kafka → NatsSink → NATS JetStream, four connectors in one
//! pipeline on the real services, the RabbitMQ source SIGKILLed on the way; counted by
//! sequence number at the far end.

use std::collections::BTreeSet;

use crate::harness::*;
use crate::{distinct, mqtt, nats, rabbitmq, TIMEOUT};

const BYTES: &str = "org.apache.kafka.connect.converters.ByteArrayConverter";
const STRING: &str = "org.apache.kafka.connect.storage.StringConverter";

/// 3,000 MQTT messages cross two brokers and two Kafka topics into a JetStream stream: every
/// one arrives, in order of first arrival, duplicates only from the kill (counted).
#[test]
fn bridge_mqtt_to_rabbitmq_to_nats_through_kafka_loses_nothing() {
    let uri = mqtt::mqtt_uri();
    let publisher = mqtt::TestClient::connect(&uri, &[]);
    let prefix = mqtt::unique("sluice-test/bridge");
    let amqp = rabbitmq::Amqp::connect(rabbitmq::port());
    let queue = rabbitmq::unique("bridge");
    amqp.queue(&queue);
    let mut nats = nats::Nats::connect(&nats::nats_url());
    let (stream, subjects) = nats::unique("bridge");
    nats.stream(&stream, &subjects);

    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["bridge-mqtt:1", "bridge-rmq:1"]);
    let files = [
        connector_file(
            dir.path(),
            "b-mqtt-in",
            &mqtt::source_config(&uri, &prefix, &mqtt::unique("bridge"), "bridge-mqtt"),
        ),
        connector_file(
            dir.path(),
            "b-rmq-out",
            &[
                ("connector.class", "RabbitMqSink".into()),
                ("rabbitmq.host", rabbitmq::host()),
                ("rabbitmq.port", rabbitmq::port().to_string()),
                ("topics", "bridge-mqtt".into()),
                ("rabbitmq.exchange", String::new()),
                ("rabbitmq.routing.key", queue.clone()),
                ("key.converter", STRING.into()),
                ("value.converter", BYTES.into()),
            ],
        ),
        connector_file(
            dir.path(),
            "b-rmq-in",
            &[
                ("connector.class", "RabbitMqSource".into()),
                ("rabbitmq.host", rabbitmq::host()),
                ("rabbitmq.port", rabbitmq::port().to_string()),
                ("rabbitmq.queue", queue.clone()),
                ("rabbitmq.prefetch.count", "200".into()),
                ("kafka.topic", "bridge-rmq".into()),
                ("key.converter", STRING.into()),
                ("value.converter", BYTES.into()),
            ],
        ),
        connector_file(
            dir.path(),
            "b-nats-out",
            &[
                ("connector.class", "NatsSink".into()),
                ("nats.servers", nats::nats_url()),
                ("topics", "bridge-rmq".into()),
                ("nats.subject", format!("{subjects}.out")),
                ("key.converter", STRING.into()),
                ("value.converter", BYTES.into()),
            ],
        ),
    ];
    let sluice = standalone_on(dir.path(), &kafka, &files);
    mqtt::wait_subscribed(&sluice, 1);
    rabbitmq::wait_consuming(&sluice, 1);

    let payloads = || -> Vec<u64> {
        nats.read(&stream)
            .iter()
            .map(|(_, payload, _)| payload.parse().unwrap())
            .collect()
    };
    // Steps of 500: the shared Mosquitto queues 1,000 messages for a subscriber at most.
    for step in 0..6u64 {
        let range = step * 500..(step + 1) * 500;
        let messages: Vec<(String, String)> = range
            .clone()
            .map(|seq| (format!("{prefix}/in"), seq.to_string()))
            .collect();
        publisher.publish(&messages);
        wait_for("the step in Kafka", TIMEOUT, || {
            distinct(&kafka, "bridge-mqtt") as u64 >= range.end
        });
        if step == 2 {
            wait_for("the first messages across", TIMEOUT, || {
                payloads().len() >= 1000
            });
            let pid = sluice
                .connector_pid("b-rmq-in")
                .expect("the RabbitMQ source's process");
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    wait_for("every message in the stream", TIMEOUT, || {
        payloads().iter().collect::<BTreeSet<_>>().len() >= 3000
    });
    let got = payloads();
    let mut first = Vec::new();
    let mut seen = BTreeSet::new();
    for p in &got {
        if seen.insert(*p) {
            first.push(*p);
        }
    }
    assert_eq!(
        first,
        (0..3000).collect::<Vec<u64>>(),
        "lost or out of order"
    );
    println!(
        "3000 messages MQTT → Kafka → RabbitMQ → Kafka → NATS, {} duplicates after the kill",
        got.len() - first.len()
    );
    drop(sluice);
}
