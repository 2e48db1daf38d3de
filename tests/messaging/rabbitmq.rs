//! The RabbitMQ connectors against RabbitMQ (`SLUICE_TEST_RABBITMQ_HOST` and
//! `SLUICE_TEST_RABBITMQ_PORT`, default 127.0.0.1:5672, user guest/guest; a broker that cannot
//! be reached fails the tests, it never skips them): RabbitMqSource across a SIGKILL of its
//! process and across a worker killed while Kafka was gone (nothing lost, order per queue
//! kept, duplicates counted, every delivery acknowledged in the end), RabbitMqSink confirmed
//! by publisher confirms with Kafka metadata and headers as AMQP headers, unroutable and bad
//! records to the dead-letter queue, both recovering when their connections are cut by a
//! proxy that then refuses them, and both through the conformance kit. Queues the tests
//! declare expire ten minutes after their last use, whatever happens to the test.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, ExchangeKind};

use crate::harness::cluster::{error_policy, read_all};
use crate::harness::*;
use crate::{check_order, distinct, side, Proxy, TIMEOUT};

pub(crate) fn host() -> String {
    std::env::var("SLUICE_TEST_RABBITMQ_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}

pub(crate) fn port() -> u16 {
    std::env::var("SLUICE_TEST_RABBITMQ_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5672)
}

/// A name no other test (or earlier run) uses.
pub(crate) fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sluice-test.{what}.{}.{nanos}", std::process::id())
}

/// The test's own AMQP client, on a runtime of its own.
pub(crate) struct Amqp {
    runtime: tokio::runtime::Runtime,
    connection: lapin::Connection,
    channel: lapin::Channel,
}

impl Amqp {
    /// Connects to the broker at `port` (on the test host), panicking if it cannot.
    pub(crate) fn connect(port: u16) -> Amqp {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let uri = format!("amqp://guest:guest@{}:{port}/%2f", host());
        let (connection, channel) = runtime.block_on(async {
            let connection = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
                .await
                .unwrap_or_else(|e| {
                    panic!("RabbitMQ is not reachable at {uri} (start it, or set SLUICE_TEST_RABBITMQ_HOST/PORT): {e}")
                });
            let channel = connection.create_channel().await.unwrap();
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            (connection, channel)
        });
        Amqp {
            runtime,
            connection,
            channel,
        }
    }

    /// Declares the durable queue `name`, deleted by the broker ten minutes after its last use.
    pub(crate) fn queue(&self, name: &str) {
        let mut arguments = FieldTable::default();
        arguments.insert("x-expires".into(), AMQPValue::LongInt(600_000));
        self.runtime
            .block_on(self.channel.queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            ))
            .unwrap();
    }

    /// A direct exchange `name` (gone once its last queue is) with `queue` bound to it for
    /// each of `keys`.
    fn exchange(&self, name: &str, bindings: &[(&str, &str)]) {
        self.runtime.block_on(async {
            self.channel
                .exchange_declare(
                    name.into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions {
                        auto_delete: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            for (queue, key) in bindings {
                self.channel
                    .queue_bind(
                        (*queue).into(),
                        name.into(),
                        (*key).into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
            }
        });
    }

    /// Publishes `(queue, body)` through the default exchange, persistent, with a header
    /// `seq` and a message ID, and waits until the broker confirmed each.
    fn publish(&self, messages: &[(String, String)]) {
        self.runtime.block_on(async {
            let mut confirms = Vec::new();
            for (queue, body) in messages {
                let mut headers = FieldTable::default();
                headers.insert(
                    "seq".into(),
                    AMQPValue::LongString(LongString::from(body.as_bytes())),
                );
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(format!("m{body}").as_str().into())
                    .with_headers(headers);
                confirms.push(
                    self.channel
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions::default(),
                            body.as_bytes(),
                            properties,
                        )
                        .await
                        .unwrap(),
                );
            }
            for confirm in confirms {
                assert!(
                    confirm.await.unwrap().is_ack(),
                    "the broker refused a message"
                );
            }
        });
    }

    /// Messages ready in `queue` (neither delivered nor waiting for an acknowledgement).
    fn ready(&self, queue: &str) -> u32 {
        self.runtime
            .block_on(self.channel.queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            ))
            .unwrap()
            .message_count()
    }

    /// Consumes `queue` in the background, acknowledging on receipt: what came, as body,
    /// correlation ID and headers (as text).
    fn collect(&self, queue: &str) -> std::sync::Arc<std::sync::Mutex<Vec<Received>>> {
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        let channel = self
            .runtime
            .block_on(self.connection.create_channel())
            .unwrap();
        let mut consumer = self
            .runtime
            .block_on(channel.basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ))
            .unwrap();
        self.runtime.spawn(async move {
            let _channel = channel;
            while let Some(Ok(delivery)) = consumer.next().await {
                let headers = delivery
                    .properties
                    .headers()
                    .as_ref()
                    .map(|t| {
                        t.inner()
                            .iter()
                            .map(|(k, v)| (k.to_string(), text(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                sink.lock().unwrap().push(Received {
                    body: String::from_utf8_lossy(&delivery.data).into_owned(),
                    correlation_id: delivery
                        .properties
                        .correlation_id()
                        .as_ref()
                        .map(|c| c.to_string()),
                    headers,
                });
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
        });
        received
    }
}

impl Drop for Amqp {
    fn drop(&mut self) {
        let _ = self
            .runtime
            .block_on(self.connection.close(200, "done".into()));
    }
}

fn text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::LongInt(v) => v.to_string(),
        AMQPValue::LongLongInt(v) => v.to_string(),
        other => format!("{other:?}"),
    }
}

/// A message the test's consumer took.
#[derive(Clone, Debug)]
struct Received {
    body: String,
    correlation_id: Option<String>,
    headers: BTreeMap<String, String>,
}

/// Messages `range` alternating between queues `<prefix>.a` and `<prefix>.b`, body `<seq>`.
fn messages(prefix: &str, range: std::ops::Range<u64>) -> Vec<(String, String)> {
    range
        .map(|seq| (format!("{prefix}.{}", side(seq)), seq.to_string()))
        .collect()
}

fn source_config(port: u16, prefix: &str, topic: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "connector.class",
            "io.confluent.connect.rabbitmq.RabbitMQSourceConnector".into(),
        ),
        ("rabbitmq.host", host()),
        ("rabbitmq.port", port.to_string()),
        ("rabbitmq.queue", format!("{prefix}.a,{prefix}.b")),
        ("kafka.topic", topic.into()),
        ("rabbitmq.prefetch.count", "200".into()),
        (
            "value.converter",
            "org.apache.kafka.connect.converters.ByteArrayConverter".into(),
        ),
    ]
}

/// Waits until the source's task said it is consuming `times` times in all.
pub(crate) fn wait_consuming(sluice: &Sluice, times: usize) {
    wait_for("the RabbitMQ source consuming", TIMEOUT, || {
        sluice.output().matches("consuming").count() >= times
    });
}

/// What `topic` holds: per queue (the `rabbitmq.queue` header), the bodies in Kafka order,
/// and how many records the broker marked redelivered.
fn by_queue(kafka: &DevKafka, topic: &str) -> (BTreeMap<String, Vec<u64>>, usize) {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut redelivered = 0;
    for (_, _, value, headers) in read_all(&kafka.bootstrap, topic) {
        let value = String::from_utf8(value.expect("a body")).unwrap();
        let seq: u64 = value.parse().expect("a sequence number");
        let queue = headers
            .get("rabbitmq.queue")
            .expect("rabbitmq.queue header");
        assert!(queue.ends_with(side(seq)), "{seq} from {queue}");
        assert_eq!(headers.get("rabbitmq.seq"), Some(&value), "{headers:?}");
        assert_eq!(
            headers.get("rabbitmq.message.id"),
            Some(&format!("m{seq}")),
            "{headers:?}"
        );
        if headers.get("rabbitmq.redelivered").map(String::as_str) == Some("true") {
            redelivered += 1;
        }
        out.entry(side(seq).to_string()).or_default().push(seq);
    }
    (out, redelivered)
}

/// 4,000 messages on two queues through RabbitMqSource, its process SIGKILLed mid-stream:
/// every message reaches Kafka, in order per queue, with AMQP properties and headers as
/// record headers; duplicates only after the kill and never more than the broker marked
/// redelivered; once the connector stopped, both queues are empty: every delivery was
/// acknowledged.
#[test]
fn rabbitmq_source_loses_nothing_across_a_kill() {
    let amqp = Amqp::connect(port());
    let prefix = unique("kill");
    amqp.queue(&format!("{prefix}.a"));
    amqp.queue(&format!("{prefix}.b"));
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["rmq-in:1"]);
    let source = connector_file(
        dir.path(),
        "rsource",
        &source_config(port(), &prefix, "rmq-in"),
    );
    let mut sluice = standalone_on(dir.path(), &kafka, &[source]);
    wait_consuming(&sluice, 1);
    amqp.publish(&messages(&prefix, 0..1000));
    wait_for("the first messages in Kafka", TIMEOUT, || {
        distinct(&kafka, "rmq-in") >= 1000
    });
    // Kill it while messages are on their way.
    amqp.publish(&messages(&prefix, 1000..2000));
    let pid = sluice
        .connector_pid("rsource")
        .expect("the source's process");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // While it is down, the queues keep what comes.
    amqp.publish(&messages(&prefix, 2000..2500));
    wait_consuming(&sluice, 2);
    amqp.publish(&messages(&prefix, 2500..4000));
    wait_for("every message in Kafka", TIMEOUT, || {
        distinct(&kafka, "rmq-in") >= 4000
    });
    let (seen, redelivered) = by_queue(&kafka, "rmq-in");
    let duplicates = check_order(&seen, 4000, &[]);
    println!("4000 messages, {duplicates} delivered twice after the kill ({redelivered} marked redelivered)");
    assert!(
        duplicates <= redelivered,
        "{duplicates} duplicates, {redelivered} marked redelivered"
    );
    sluice.stop_cleanly();
    for q in ["a", "b"] {
        assert_eq!(
            amqp.ready(&format!("{prefix}.{q}")),
            0,
            "queue {q} not drained"
        );
    }
}

/// Messages the source read while Kafka was gone were not acknowledged: with the worker
/// SIGKILLed, a new worker on a new Kafka gets every one of them from the queues.
#[test]
fn rabbitmq_deliveries_are_not_acknowledged_before_kafka_has_them() {
    let amqp = Amqp::connect(port());
    let prefix = unique("unacked");
    amqp.queue(&format!("{prefix}.a"));
    amqp.queue(&format!("{prefix}.b"));
    let first = tempfile::tempdir().unwrap();
    let mut kafka = DevKafka::start(first.path(), &["unacked:1"]);
    let source = connector_file(
        first.path(),
        "rsource",
        &source_config(port(), &prefix, "unacked"),
    );
    let sluice = standalone_on(first.path(), &kafka, &[source]);
    wait_consuming(&sluice, 1);
    amqp.publish(&messages(&prefix, 0..100));
    wait_for("the first messages in Kafka", TIMEOUT, || {
        distinct(&kafka, "unacked") == 100
    });
    kafka.kill();
    amqp.publish(&messages(&prefix, 100..300));
    // Given time to take them (and, were it to acknowledge on receipt, to lose them).
    wait_for("the source to take the messages", TIMEOUT, || {
        amqp.ready(&format!("{prefix}.a")) + amqp.ready(&format!("{prefix}.b")) == 0
    });
    sluice.signal(libc::SIGKILL);
    drop(sluice);
    let second = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(second.path(), &["unacked:1"]);
    let source = connector_file(
        second.path(),
        "rsource",
        &source_config(port(), &prefix, "unacked"),
    );
    let sluice = standalone_on(second.path(), &kafka, &[source]);
    wait_for("the messages read while Kafka was gone", TIMEOUT, || {
        distinct(&kafka, "unacked") >= 200
    });
    let (seen, redelivered) = by_queue(&kafka, "unacked");
    let got: BTreeSet<u64> = seen.values().flatten().copied().collect();
    assert!(
        (100..300).all(|s| got.contains(&s)),
        "messages lost: {:?}",
        (100..300).filter(|s| !got.contains(s)).collect::<Vec<_>>()
    );
    assert!(redelivered >= 200, "{redelivered} marked redelivered");
    drop(sluice);
}

/// Produces `range` to `topic`: key `a`/`b` by parity (`c` for 1500: no queue is bound for
/// it), value the number as a JSON string (an object for 1001), header `origin: test`.
fn produce_keyed(bootstrap: &str, topic: &str, range: std::ops::Range<u64>) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for seq in range {
        let key = if seq == 1500 { "c" } else { side(seq) };
        let value = if seq == 1001 {
            r#"{"not":"a body"}"#.to_string()
        } else {
            format!("\"{seq}\"")
        };
        let headers = OwnedHeaders::new().insert(Header {
            key: "origin",
            value: Some("test"),
        });
        producer
            .send(
                BaseRecord::to(topic)
                    .key(key)
                    .payload(&value)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// RabbitMqSink publishes 2,000 records to a direct exchange, routing key the record key, its
/// process SIGKILLed midway: the two bound queues get every record, in order per key
/// (duplicates only after the kill), with the key as correlation ID, Kafka's topic, partition
/// and offset and the record's headers as AMQP headers; a record no queue is bound for comes
/// back from the broker and goes to the dead-letter queue, as does one whose value is an
/// object.
#[test]
fn rabbitmq_sink_publishes_every_record_in_order_across_a_kill() {
    let amqp = Amqp::connect(port());
    let prefix = unique("sink");
    let (qa, qb) = (format!("{prefix}.a"), format!("{prefix}.b"));
    amqp.queue(&qa);
    amqp.queue(&qb);
    amqp.exchange(&prefix, &[(&qa, "a"), (&qb, "b")]);
    let got_a = amqp.collect(&qa);
    let got_b = amqp.collect(&qb);
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["to-rmq:1", "rmq-dlq:1"]);
    produce_keyed(&kafka.bootstrap, "to-rmq", 0..1000);
    let mut config = vec![
        (
            "connector.class",
            "io.confluent.connect.rabbitmq.sink.RabbitMQSinkConnector".to_string(),
        ),
        ("rabbitmq.host", host()),
        ("rabbitmq.port", port().to_string()),
        ("topics", "to-rmq".into()),
        ("rabbitmq.exchange", prefix.clone()),
        ("rabbitmq.routing.key", "${key}".into()),
        ("rabbitmq.forward.kafka.key", "true".into()),
        ("rabbitmq.forward.kafka.metadata", "true".into()),
        ("rabbitmq.forward.kafka.headers", "true".into()),
        (
            "key.converter",
            "org.apache.kafka.connect.storage.StringConverter".into(),
        ),
        (
            "value.converter",
            "org.apache.kafka.connect.json.JsonConverter".into(),
        ),
        ("value.converter.schemas.enable", "false".into()),
    ];
    config.extend(error_policy("all", "rmq-dlq"));
    let sink = connector_file(dir.path(), "rsink", &config);
    let sluice = standalone_on(dir.path(), &kafka, &[sink]);
    let received = || -> Vec<Received> {
        let mut all = got_a.lock().unwrap().clone();
        all.extend(got_b.lock().unwrap().iter().cloned());
        all
    };
    wait_for("the first records published", TIMEOUT, || {
        received().len() >= 300
    });
    let pid = sluice.connector_pid("rsink").expect("the sink's process");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    produce_keyed(&kafka.bootstrap, "to-rmq", 1000..2000);
    let bodies = || -> BTreeSet<String> { received().into_iter().map(|r| r.body).collect() };
    wait_for("every record published", TIMEOUT, || bodies().len() >= 1998);
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (side, got) in [("a", &got_a), ("b", &got_b)] {
        for r in got.lock().unwrap().iter() {
            let seq: u64 = r.body.parse().unwrap();
            assert_eq!(r.correlation_id.as_deref(), Some(side), "{r:?}");
            assert_eq!(
                r.headers.get("origin").map(String::as_str),
                Some("test"),
                "{r:?}"
            );
            assert_eq!(
                r.headers.get("KAFKA_TOPIC").map(String::as_str),
                Some("to-rmq")
            );
            assert_eq!(
                r.headers.get("KAFKA_PARTITION").map(String::as_str),
                Some("0")
            );
            // One record a number: the offset is the sequence number.
            assert_eq!(
                r.headers.get("KAFKA_OFFSET"),
                Some(&seq.to_string()),
                "{r:?}"
            );
            seen.entry(side.to_string()).or_default().push(seq);
        }
    }
    let duplicates = check_order(&seen, 2000, &[1001, 1500]);
    println!("2000 records, {duplicates} published twice after the kill");
    wait_for(
        "the two bad records in the dead-letter queue",
        TIMEOUT,
        || read_all(&kafka.bootstrap, "rmq-dlq").len() >= 2,
    );
    let dlq = read_all(&kafka.bootstrap, "rmq-dlq");
    let reasons: Vec<String> = dlq
        .iter()
        .map(|r| r.3.values().cloned().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("message body")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("NO_ROUTE")),
        "{reasons:?}"
    );
    drop(sluice);
}

/// The connections of a source and a sink are cut by a proxy in front of RabbitMQ, which
/// then refuses them until both tasks failed on it twice: the worker restarts them with
/// backoff and, once the proxy lets them through, they carry on with no restart by hand —
/// nothing lost, order per queue kept.
#[test]
fn rabbitmq_connectors_recover_when_the_broker_goes_away_and_comes_back() {
    let amqp = Amqp::connect(port());
    let prefix = unique("outage");
    amqp.queue(&format!("{prefix}.a"));
    amqp.queue(&format!("{prefix}.b"));
    let copy = format!("{prefix}.copy");
    amqp.queue(&copy);
    let copied = amqp.collect(&copy);
    let proxy = Proxy::start(&format!("{}:{}", host(), port()));
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["outage:1", "back:1"]);
    let mut config = source_config(proxy.port, &prefix, "outage");
    config.push(("restart.backoff.initial.ms", "200".into()));
    config.push(("rabbitmq.connection.timeout.ms", "2000".into()));
    let source = connector_file(dir.path(), "osource", &config);
    let sink = connector_file(
        dir.path(),
        "osink",
        &[
            ("connector.class", "RabbitMqSink".into()),
            ("rabbitmq.port", proxy.port.to_string()),
            ("rabbitmq.host", host()),
            ("topics", "back".into()),
            ("rabbitmq.exchange", "".into()),
            ("rabbitmq.routing.key", copy.clone()),
            ("rabbitmq.connection.timeout.ms", "2000".into()),
            ("restart.backoff.initial.ms", "200".into()),
            (
                "value.converter",
                "org.apache.kafka.connect.storage.StringConverter".into(),
            ),
        ],
    );
    let mut sluice = standalone_on(dir.path(), &kafka, &[source, sink]);
    wait_consuming(&sluice, 1);
    amqp.publish(&messages(&prefix, 0..500));
    wait_for("the first messages in Kafka", TIMEOUT, || {
        distinct(&kafka, "outage") >= 500
    });
    crate::harness::cluster::produce(
        &kafka.bootstrap,
        "back",
        &(0..300).map(|i| i.to_string()).collect::<Vec<_>>(),
    );
    wait_for("the first records copied", TIMEOUT, || {
        copied.lock().unwrap().len() >= 300
    });
    proxy.cut();
    // Records for the sink while it cannot reach the broker.
    crate::harness::cluster::produce(
        &kafka.bootstrap,
        "back",
        &(300..400).map(|i| i.to_string()).collect::<Vec<_>>(),
    );
    wait_for(
        "both tasks failing and restarting while the broker is gone",
        TIMEOUT,
        || {
            let out = sluice.output();
            ["osource", "osink"].iter().all(|c| {
                out.lines()
                    .any(|l| l.contains(&format!("connector={c}")) && l.contains("restart 2 of"))
            })
        },
    );
    amqp.publish(&messages(&prefix, 500..1000));
    proxy.restore();
    crate::harness::cluster::produce(
        &kafka.bootstrap,
        "back",
        &(400..600).map(|i| i.to_string()).collect::<Vec<_>>(),
    );
    wait_for("every message in Kafka after the outage", TIMEOUT, || {
        distinct(&kafka, "outage") >= 1000
    });
    let (seen, _) = by_queue(&kafka, "outage");
    check_order(&seen, 1000, &[]);
    wait_for("the sink publishing after the outage", TIMEOUT, || {
        let got: BTreeSet<String> = copied
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.body.clone())
            .collect();
        (0..600).all(|i| got.contains(&i.to_string()))
    });
    sluice.stop_cleanly();
}

/// A sink naming an exchange that does not exist fails its task at once, naming it (a
/// retry cannot help), rather than retrying or dropping records.
#[test]
fn rabbitmq_sink_fails_clearly_on_a_missing_exchange() {
    let _amqp = Amqp::connect(port());
    let missing = unique("no-such-exchange");
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["nowhere:1"]);
    let sink = connector_file(
        dir.path(),
        "nsink",
        &[
            ("connector.class", "RabbitMqSink".into()),
            ("rabbitmq.host", host()),
            ("rabbitmq.port", port().to_string()),
            ("topics", "nowhere".into()),
            ("rabbitmq.exchange", missing.clone()),
            ("rabbitmq.routing.key", "${topic}".into()),
        ],
    );
    let sluice = standalone_on(dir.path(), &kafka, &[sink]);
    wait_for("the task failing on the missing exchange", TIMEOUT, || {
        let out = sluice.output();
        out.lines()
            .any(|l| l.contains(&missing) && l.contains("NOT_FOUND") && l.contains("FAILED"))
    });
    drop(sluice);
}

/// Both RabbitMQ connectors pass the conformance kit.
#[test]
fn rabbitmq_connectors_pass_the_conformance_kit() {
    let amqp = Amqp::connect(port());
    let prefix = unique("kit");
    amqp.queue(&format!("{prefix}.a"));
    amqp.queue(&format!("{prefix}.b"));
    amqp.publish(&messages(&prefix, 0..20));
    amqp.queue(&format!("{prefix}.out"));
    for (class, config) in [
        ("RabbitMqSource", {
            let mut c: Vec<(&str, String)> = source_config(port(), &prefix, "kit")
                .into_iter()
                .filter(|(k, _)| !k.contains("converter"))
                .collect();
            c.retain(|(k, _)| *k != "connector.class");
            c
        }),
        (
            "RabbitMqSink",
            vec![
                ("rabbitmq.host", host()),
                ("rabbitmq.port", port().to_string()),
                ("rabbitmq.exchange", String::new()),
                ("rabbitmq.routing.key", format!("{prefix}.out")),
            ],
        ),
    ] {
        let (ok, text) = plugins_check(class, &config, "rabbitmq");
        assert!(ok, "{class}: {text}");
        assert!(text.contains(" passed, 0 failed"), "{class}: {text}");
    }
}
