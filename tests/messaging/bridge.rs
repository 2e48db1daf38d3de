//! The bridge: messages published to MQTT travel MQTT → MqttSource → Kafka → RabbitMqSink →
//! RabbitMQ → RabbitMqSource → Kafka → NatsSink → NATS JetStream, four connectors in one
//! pipeline on the real services, the RabbitMQ source SIGKILLed three times while it takes
//! messages; counted by sequence number at the far end.

use std::collections::BTreeSet;

use crate::harness::cluster::read_all;
use crate::harness::*;
use crate::{mqtt, nats, rabbitmq, TIMEOUT};

const BYTES: &str = "org.apache.kafka.connect.converters.ByteArrayConverter";
const STRING: &str = "org.apache.kafka.connect.storage.StringConverter";

/// 3,000 MQTT messages, published at a steady pace, cross two brokers and two Kafka topics into
/// a JetStream stream while the RabbitMQ source is SIGKILLed three times mid-flow (the
/// messages it held unacknowledged come back redelivered, at least once over the three kills):
/// every one arrives, in order of first arrival, duplicates only from the kills (counted).
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
    // How far the RabbitMQ source has written into Kafka: one cheap request.
    let watermarks: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .create()
        .unwrap();
    let written = || {
        rdkafka::consumer::Consumer::fetch_watermarks(
            &watermarks,
            "bridge-rmq",
            0,
            std::time::Duration::from_secs(5),
        )
        .map_or(0, |(_, high)| high)
    };
    let publish = |range: std::ops::Range<u64>| {
        let messages: Vec<(String, String)> = range
            .map(|seq| (format!("{prefix}/in"), seq.to_string()))
            .collect();
        publisher.publish(&messages);
    };
    // Three rounds of 1,000: 500 messages in steps of 100 every 30 ms, then a burst of 500
    // (the shared Mosquitto queues 1,000 messages for a subscriber at most), the RabbitMQ
    // source killed the moment it writes again, so in the middle of taking the burst; back
    // before the next round.
    let mut kills = 0;
    for round in 0..3u64 {
        let base = round * 1000;
        for step in 0..5 {
            publish(base + step * 100..base + (step + 1) * 100);
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        let pid = sluice
            .connector_pid("b-rmq-in")
            .expect("the RabbitMQ source's process");
        let before = written();
        publish(base + 500..base + 1000);
        let deadline = std::time::Instant::now() + TIMEOUT;
        while written() <= before {
            assert!(std::time::Instant::now() < deadline, "the burst never came");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        unsafe { libc::kill(pid, libc::SIGKILL) };
        kills += 1;
        wait_for("the RabbitMQ source back", TIMEOUT, || {
            sluice.connector_pid("b-rmq-in") != Some(pid)
        });
        rabbitmq::wait_consuming(&sluice, kills + 1);
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
    let redelivered = read_all(&kafka.bootstrap, "bridge-rmq")
        .iter()
        .filter(|(_, _, _, h)| h.get("rabbitmq.redelivered").map(String::as_str) == Some("true"))
        .count();
    println!(
        "3000 messages MQTT → Kafka → RabbitMQ → Kafka → NATS, {kills} kills, {redelivered} \
         redelivered by RabbitMQ, {} duplicates at the end",
        got.len() - first.len()
    );
    assert!(
        redelivered > 0,
        "no kill landed while the RabbitMQ source held unacknowledged messages"
    );
    drop(sluice);
}
