//! The NATS connectors against NATS with JetStream (`SLUICE_TEST_NATS_URL`, default
//! nats://127.0.0.1:4222; a server that cannot be reached fails the tests, it never skips
//! them): NatsSource through a durable consumer across a SIGKILL of its process and across a
//! worker killed while Kafka was gone (nothing lost, order per subject kept for first
//! deliveries, duplicates only among redeliveries), core NATS at most once, NatsSink confirmed
//! by JetStream publish acks with headers, bad records to the dead-letter queue, both
//! recovering when a proxy cuts their connections and refuses them for a while, and both
//! through the conformance kit. Streams the tests create are deleted at the end and keep
//! messages ten minutes at most.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream;

use crate::harness::cluster::{error_policy, read_all};
use crate::harness::*;
use crate::{check_order, distinct, side, Proxy, TIMEOUT};

pub(crate) fn nats_url() -> String {
    std::env::var("SLUICE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A stream name and a subject prefix no other test (or earlier run) uses.
pub(crate) fn unique(what: &str) -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{what}-{}-{nanos}", std::process::id());
    (
        format!("SLUICE_TEST_{}", id.replace('-', "_")),
        format!("sluice-test.{id}"),
    )
}

/// The test's own NATS client, on a runtime of its own.
pub(crate) struct Nats {
    runtime: tokio::runtime::Runtime,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    streams: Vec<String>,
}

impl Nats {
    pub(crate) fn connect(url: &str) -> Nats {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = runtime.block_on(async {
            async_nats::connect(url).await.unwrap_or_else(|e| {
                panic!("NATS is not reachable at {url} (start nats-server -js, or set SLUICE_TEST_NATS_URL): {e}")
            })
        });
        // The context spawns its acknowledgement task: inside the runtime.
        let jetstream = {
            let _runtime = runtime.enter();
            jetstream::new(client.clone())
        };
        Nats {
            runtime,
            client,
            jetstream,
            streams: Vec::new(),
        }
    }

    /// Creates stream `name` on `<prefix>.>`, keeping messages ten minutes.
    pub(crate) fn stream(&mut self, name: &str, prefix: &str) {
        self.runtime
            .block_on(self.jetstream.create_stream(jetstream::stream::Config {
                name: name.to_string(),
                subjects: vec![format!("{prefix}.>")],
                max_age: Duration::from_secs(600),
                ..Default::default()
            }))
            .unwrap();
        self.streams.push(name.to_string());
    }

    /// Publishes `(subject, payload)` to JetStream with a header `seq`, waiting for every ack.
    fn publish(&self, messages: &[(String, String)]) {
        self.runtime.block_on(async {
            let mut acks = Vec::new();
            for (subject, payload) in messages {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("seq", payload.as_str());
                acks.push(
                    self.jetstream
                        .publish_with_headers(subject.clone(), headers, payload.clone().into())
                        .await
                        .unwrap(),
                );
                if acks.len() >= 1000 {
                    for ack in acks.drain(..) {
                        ack.await.unwrap();
                    }
                }
            }
            for ack in acks {
                ack.await.unwrap();
            }
        });
    }

    /// Publishes `(subject, payload)` on core NATS.
    fn publish_core(&self, messages: &[(String, String)]) {
        self.runtime.block_on(async {
            for (subject, payload) in messages {
                self.client
                    .publish(subject.clone(), payload.clone().into())
                    .await
                    .unwrap();
            }
            self.client.flush().await.unwrap();
        });
    }

    /// Every message of stream `name`: subject, payload, headers (first value of each).
    pub(crate) fn read(&self, name: &str) -> Vec<(String, String, BTreeMap<String, String>)> {
        self.runtime.block_on(async {
            let mut stream = self.jetstream.get_stream(name).await.unwrap();
            let last = stream.info().await.unwrap().state.last_sequence;
            let mut out = Vec::new();
            for seq in 1..=last {
                let Ok(m) = stream.get_raw_message(seq).await else {
                    continue;
                };
                let headers = m
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            v.first()
                                .map(|v| v.as_str().to_string())
                                .unwrap_or_default(),
                        )
                    })
                    .collect();
                out.push((
                    m.subject.to_string(),
                    String::from_utf8_lossy(&m.payload).into_owned(),
                    headers,
                ));
            }
            out
        })
    }

    /// Messages of consumer `durable` on stream `name` delivered and not acknowledged.
    fn ack_pending(&self, name: &str, durable: &str) -> usize {
        self.runtime.block_on(async {
            let stream = self.jetstream.get_stream(name).await.unwrap();
            let mut consumer: jetstream::consumer::PullConsumer =
                stream.get_consumer(durable).await.unwrap();
            consumer.info().await.unwrap().num_ack_pending
        })
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for name in std::mem::take(&mut self.streams) {
            let _ = self.runtime.block_on(self.jetstream.delete_stream(&name));
        }
    }
}

/// Messages `range` alternating between `<prefix>.a` and `<prefix>.b`, payload `<seq>`.
fn messages(prefix: &str, range: std::ops::Range<u64>) -> Vec<(String, String)> {
    range
        .map(|seq| (format!("{prefix}.{}", side(seq)), seq.to_string()))
        .collect()
}

fn source_config(url: &str, stream: &str, topic: &str) -> Vec<(&'static str, String)> {
    vec![
        ("connector.class", "NatsSource".into()),
        ("nats.servers", url.into()),
        ("nats.stream", stream.into()),
        ("nats.durable", "sluice".into()),
        // A killed task's messages come again after this long.
        ("nats.ack.wait.ms", "3000".into()),
        ("kafka.topic", topic.into()),
        (
            "value.converter",
            "org.apache.kafka.connect.converters.ByteArrayConverter".into(),
        ),
    ]
}

fn wait_consuming(sluice: &Sluice, times: usize) {
    wait_for("the NATS source consuming", TIMEOUT, || {
        sluice.output().matches("consuming").count() >= times
    });
}

/// What `topic` holds: per side, the payloads of first deliveries (`nats.delivered` 1) in
/// Kafka order, every payload seen, and how many records were redeliveries.
fn by_subject(kafka: &DevKafka, topic: &str) -> (BTreeMap<String, Vec<u64>>, BTreeSet<u64>, usize) {
    let mut first: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut all = BTreeSet::new();
    let mut redelivered = 0;
    for (_, _, value, headers) in read_all(&kafka.bootstrap, topic) {
        let value = String::from_utf8(value.expect("a payload")).unwrap();
        let seq: u64 = value.parse().expect("a sequence number");
        let subject = headers.get("nats.subject").expect("nats.subject header");
        assert!(subject.ends_with(side(seq)), "{seq} from {subject}");
        assert_eq!(headers.get("seq"), Some(&value), "{headers:?}");
        all.insert(seq);
        if headers.get("nats.delivered").map(String::as_str) == Some("1") {
            first.entry(side(seq).to_string()).or_default().push(seq);
        } else {
            redelivered += 1;
        }
    }
    (first, all, redelivered)
}

/// Per side, `seqs` (payloads of first deliveries) are increasing: a subject's order holds
/// for every message delivered once.
fn increasing(first: &BTreeMap<String, Vec<u64>>) {
    for (side, seqs) in first {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{side}: first deliveries out of order"
        );
    }
}

/// 4,000 JetStream messages on two subjects through NatsSource, its process SIGKILLed
/// mid-stream: every message reaches Kafka, first deliveries in order per subject; the
/// killed task's unacknowledged messages come again (marked `nats.delivered` > 1) after the
/// ack wait; once the connector stopped nothing is left unacknowledged.
#[test]
fn nats_jetstream_source_loses_nothing_across_a_kill() {
    let url = nats_url();
    let mut nats = Nats::connect(&url);
    let (stream, prefix) = unique("kill");
    nats.stream(&stream, &prefix);
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["nats-in:1"]);
    let source = connector_file(
        dir.path(),
        "nsource",
        &source_config(&url, &stream, "nats-in"),
    );
    let mut sluice = standalone_on(dir.path(), &kafka, &[source]);
    wait_consuming(&sluice, 1);
    nats.publish(&messages(&prefix, 0..1000));
    wait_for("the first messages in Kafka", TIMEOUT, || {
        distinct(&kafka, "nats-in") >= 1000
    });
    nats.publish(&messages(&prefix, 1000..2000));
    let pid = sluice
        .connector_pid("nsource")
        .expect("the source's process");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    nats.publish(&messages(&prefix, 2000..2500));
    wait_consuming(&sluice, 2);
    nats.publish(&messages(&prefix, 2500..4000));
    wait_for("every message in Kafka", TIMEOUT, || {
        distinct(&kafka, "nats-in") >= 4000
    });
    let (first, all, redelivered) = by_subject(&kafka, "nats-in");
    assert_eq!(all.len(), 4000);
    increasing(&first);
    // First deliveries strictly increase per subject: every duplicate is a redelivery.
    let records = read_all(&kafka.bootstrap, "nats-in").len();
    println!("4000 messages, {records} records ({redelivered} redeliveries)");
    wait_for("every message acknowledged", TIMEOUT, || {
        nats.ack_pending(&stream, "sluice") == 0
    });
    sluice.stop_cleanly();
}

/// Messages the source read while Kafka was gone were not acknowledged: with the worker
/// SIGKILLed, a new worker on a new Kafka gets every one of them from the durable consumer.
#[test]
fn nats_messages_are_not_acknowledged_before_kafka_has_them() {
    let url = nats_url();
    let mut nats = Nats::connect(&url);
    let (stream, prefix) = unique("unacked");
    nats.stream(&stream, &prefix);
    let first = tempfile::tempdir().unwrap();
    let mut kafka = DevKafka::start(first.path(), &["unacked:1"]);
    let source = connector_file(
        first.path(),
        "nsource",
        &source_config(&url, &stream, "unacked"),
    );
    let sluice = standalone_on(first.path(), &kafka, &[source]);
    wait_consuming(&sluice, 1);
    nats.publish(&messages(&prefix, 0..100));
    wait_for("the first messages in Kafka", TIMEOUT, || {
        distinct(&kafka, "unacked") == 100
    });
    kafka.kill();
    nats.publish(&messages(&prefix, 100..300));
    wait_for("the source to take the messages", TIMEOUT, || {
        nats.ack_pending(&stream, "sluice") >= 200
    });
    sluice.signal(libc::SIGKILL);
    drop(sluice);
    let second = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(second.path(), &["unacked:1"]);
    let source = connector_file(
        second.path(),
        "nsource",
        &source_config(&url, &stream, "unacked"),
    );
    let sluice = standalone_on(second.path(), &kafka, &[source]);
    wait_for("the messages read while Kafka was gone", TIMEOUT, || {
        distinct(&kafka, "unacked") >= 200
    });
    let (_, all, redelivered) = by_subject(&kafka, "unacked");
    assert!(
        (100..300).all(|s| all.contains(&s)),
        "messages lost: {:?}",
        (100..300).filter(|s| !all.contains(s)).collect::<Vec<_>>()
    );
    assert!(redelivered >= 200, "{redelivered} redeliveries");
    drop(sluice);
}

/// Core NATS (no stream): messages published while the source is subscribed reach Kafka, in
/// order — at most once, as its documentation says.
#[test]
fn nats_core_source_takes_what_is_published_while_it_listens() {
    let url = nats_url();
    let nats = Nats::connect(&url);
    let (_, prefix) = unique("core");
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["core:1"]);
    let source = connector_file(
        dir.path(),
        "csource",
        &[
            ("connector.class", "NatsSource".into()),
            ("nats.servers", url.clone()),
            ("nats.subject", format!("{prefix}.>")),
            ("kafka.topic", "core".into()),
            (
                "value.converter",
                "org.apache.kafka.connect.storage.StringConverter".into(),
            ),
        ],
    );
    let sluice = standalone_on(dir.path(), &kafka, &[source]);
    wait_for("the core subscription", TIMEOUT, || {
        sluice.output().contains("subscribed (core NATS")
    });
    nats.publish_core(&messages(&prefix, 0..1000));
    wait_for("every message in Kafka", TIMEOUT, || {
        distinct(&kafka, "core") >= 1000
    });
    let values: Vec<u64> = read_all(&kafka.bootstrap, "core")
        .into_iter()
        .map(|(_, _, v, _)| String::from_utf8(v.unwrap()).unwrap().parse().unwrap())
        .collect();
    assert_eq!(values, (0..1000).collect::<Vec<_>>());
    drop(sluice);
}

/// NatsSink publishes 2,000 records to JetStream on `<prefix>.<key>`, its process SIGKILLed
/// midway: the stream holds every record, in order per key (duplicates only after the kill),
/// with the Kafka headers; a record whose value is an object goes to the dead-letter queue.
#[test]
fn nats_sink_publishes_every_record_in_order_across_a_kill() {
    let url = nats_url();
    let mut nats = Nats::connect(&url);
    let (stream, prefix) = unique("sink");
    nats.stream(&stream, &prefix);
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["to-nats:1", "nats-dlq:1"]);
    let produce = |range: std::ops::Range<u64>| {
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &kafka.bootstrap)
            .create()
            .unwrap();
        for seq in range {
            let value = if seq == 1001 {
                r#"{"not":"a payload"}"#.to_string()
            } else {
                format!("\"{seq}\"")
            };
            let headers = OwnedHeaders::new().insert(Header {
                key: "origin",
                value: Some("test"),
            });
            producer
                .send(
                    BaseRecord::to("to-nats")
                        .key(side(seq))
                        .payload(&value)
                        .headers(headers),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    };
    produce(0..5000);
    let mut config = vec![
        ("connector.class", "NatsSink".to_string()),
        ("nats.servers", url.clone()),
        ("topics", "to-nats".into()),
        ("nats.subject", format!("{prefix}.${{key}}")),
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
    config.extend(error_policy("all", "nats-dlq"));
    let sink = connector_file(dir.path(), "nsink", &config);
    let sluice = standalone_on(dir.path(), &kafka, &[sink]);
    wait_for("the first records published", TIMEOUT, || {
        nats.read(&stream).len() >= 300
    });
    let pid = sluice.connector_pid("nsink").expect("the sink's process");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    produce(5000..6000);
    let payloads = || -> BTreeSet<String> { nats.read(&stream).into_iter().map(|m| m.1).collect() };
    wait_for("every record published", TIMEOUT, || {
        payloads().len() >= 5999
    });
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (subject, payload, headers) in nats.read(&stream) {
        let seq: u64 = payload.parse().unwrap();
        let last = subject.rsplit('.').next().unwrap().to_string();
        assert_eq!(last, side(seq), "{subject}: {seq}");
        assert_eq!(
            headers.get("origin").map(String::as_str),
            Some("test"),
            "{headers:?}"
        );
        seen.entry(last).or_default().push(seq);
    }
    let duplicates = check_order(&seen, 6000, &[1001]);
    println!("6000 records, {duplicates} published twice after the kill");
    wait_for("the bad record in the dead-letter queue", TIMEOUT, || {
        !read_all(&kafka.bootstrap, "nats-dlq").is_empty()
    });
    let dlq = read_all(&kafka.bootstrap, "nats-dlq");
    assert!(
        dlq[0].3.values().any(|h| h.contains("NATS payload")),
        "{:?}",
        dlq[0].3
    );
    drop(sluice);
}

/// A proxy in front of NATS cuts the connections of a source and a sink and refuses them
/// until both tasks failed on it twice: the worker restarts them with backoff and, once the
/// proxy lets them through, they carry on with no restart by hand — nothing lost.
#[test]
fn nats_connectors_recover_when_the_server_goes_away_and_comes_back() {
    let url = nats_url();
    let mut nats = Nats::connect(&url);
    let (stream, prefix) = unique("outage");
    nats.stream(&stream, &prefix);
    let address = url.trim_start_matches("nats://").to_string();
    let proxy = Proxy::start(&address);
    let through = format!("nats://127.0.0.1:{}", proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["outage:1", "back:1"]);
    let mut config = source_config(&through, &stream, "outage");
    config.push(("restart.backoff.initial.ms", "200".into()));
    config.push(("nats.connection.timeout.ms", "2000".into()));
    let source = connector_file(dir.path(), "osource", &config);
    let sink = connector_file(
        dir.path(),
        "osink",
        &[
            ("connector.class", "NatsSink".into()),
            ("nats.servers", through.clone()),
            ("topics", "back".into()),
            ("nats.subject", format!("{prefix}.copy")),
            ("nats.connection.timeout.ms", "2000".into()),
            ("nats.publish.ack.timeout.ms", "2000".into()),
            ("restart.backoff.initial.ms", "200".into()),
            (
                "value.converter",
                "org.apache.kafka.connect.storage.StringConverter".into(),
            ),
        ],
    );
    let mut sluice = standalone_on(dir.path(), &kafka, &[source, sink]);
    wait_consuming(&sluice, 1);
    nats.publish(&messages(&prefix, 0..500));
    wait_for("the first messages in Kafka", TIMEOUT, || {
        distinct(&kafka, "outage") >= 500
    });
    proxy.cut();
    crate::harness::cluster::produce(
        &kafka.bootstrap,
        "back",
        &(0..300).map(|i| format!("c{i}")).collect::<Vec<_>>(),
    );
    wait_for(
        "both tasks failing and restarting while the server is gone",
        TIMEOUT,
        || {
            let out = sluice.output();
            ["osource", "osink"].iter().all(|c| {
                out.lines()
                    .any(|l| l.contains(&format!("connector={c}")) && l.contains("restart 2 of"))
            })
        },
    );
    nats.publish(&messages(&prefix, 500..1000));
    proxy.restore();
    wait_for("every message in Kafka after the outage", TIMEOUT, || {
        distinct(&kafka, "outage") >= 1000
    });
    let (first, all, _) = by_subject(&kafka, "outage");
    assert_eq!(all.len(), 1000);
    increasing(&first);
    wait_for("the sink publishing after the outage", TIMEOUT, || {
        let got: BTreeSet<String> = nats
            .read(&stream)
            .into_iter()
            .filter(|m| m.0.ends_with(".copy"))
            .map(|m| m.1)
            .collect();
        (0..300).all(|i| got.contains(&format!("c{i}")))
    });
    sluice.stop_cleanly();
}

/// An existing durable consumer that does not take explicit acknowledgements (here: none)
/// would make the source at most once: its task fails at once, naming the consumer.
#[test]
fn nats_source_refuses_a_consumer_without_explicit_acks() {
    let url = nats_url();
    let mut nats = Nats::connect(&url);
    let (stream, prefix) = unique("ackpolicy");
    nats.stream(&stream, &prefix);
    nats.runtime.block_on(async {
        let s = nats.jetstream.get_stream(&stream).await.unwrap();
        s.create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("sluice".into()),
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["never:1"]);
    let source = connector_file(
        dir.path(),
        "asource",
        &source_config(&url, &stream, "never"),
    );
    let sluice = standalone_on(dir.path(), &kafka, &[source]);
    wait_for(
        "the task failing on the consumer's ack policy",
        TIMEOUT,
        || {
            sluice
                .output()
                .lines()
                .any(|l| l.contains("FAILED") && l.contains("explicit acknowledgements"))
        },
    );
    drop(sluice);
}

/// Both NATS connectors pass the conformance kit.
#[test]
fn nats_connectors_pass_the_conformance_kit() {
    let url = nats_url();
    let mut nats = Nats::connect(&url);
    let (stream, prefix) = unique("kit");
    nats.stream(&stream, &prefix);
    nats.publish(&messages(&prefix, 0..20));
    for (class, config) in [
        (
            "NatsSource",
            vec![
                ("nats.servers", url.clone()),
                ("nats.stream", stream.clone()),
                ("kafka.topic", "kit".to_string()),
            ],
        ),
        (
            "NatsSink",
            vec![
                ("nats.servers", url.clone()),
                ("nats.subject", format!("{prefix}.out.${{topic}}")),
            ],
        ),
    ] {
        let (ok, text) = plugins_check(class, &config, "nats");
        assert!(ok, "{class}: {text}");
        assert!(text.contains(" passed, 0 failed"), "{class}: {text}");
    }
}
