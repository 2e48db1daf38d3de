//! The messaging connectors against the real services of this machine, through `sluice
//! standalone` and a `sluice dev-kafka` broker (MQTT: `messaging/mqtt.rs`; RabbitMQ:
//! `messaging/rabbitmq.rs`; NATS: `messaging/nats.rs`; S3 on moto's server:
//! `messaging/s3.rs`; HTTP on a server of the test's own: `messaging/http.rs`; MQTT →
//! RabbitMQ → NATS through Kafka in one pipeline: `messaging/bridge.rs`). Redis (`SLUICE_TEST_REDIS_URL`, default
//! redis://127.0.0.1:6379; a Redis that cannot be reached fails the tests, it never skips
//! them): RedisStreamSource through a consumer group, counted by sequence numbers across a
//! SIGKILL of its process (nothing lost, order kept, every entry acknowledged in the end, none
//! before Kafka has it); RedisSink writing hashes, strings with tombstones and stream entries,
//! exactly once with `redis.multiexec` across a SIGKILL, bad records to the dead-letter queue;
//! both through the conformance kit.

#[path = "messaging/bridge.rs"]
mod bridge;
mod harness;
#[path = "messaging/http.rs"]
mod http;
#[path = "messaging/mqtt.rs"]
mod mqtt;
#[path = "messaging/nats.rs"]
mod nats;
#[path = "messaging/rabbitmq.rs"]
mod rabbitmq;
#[path = "messaging/s3.rs"]
mod s3;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::cluster::{error_policy, read_all, total_records};
use harness::*;
use serde_json::Value as Json;

const TIMEOUT: Duration = Duration::from_secs(90);

fn redis_url() -> String {
    std::env::var("SLUICE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn redis() -> redis::Connection {
    let url = redis_url();
    redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .unwrap_or_else(|e| {
            panic!("Redis is not reachable at {url} (start it, or set SLUICE_TEST_REDIS_URL): {e}")
        })
}

/// A key no other test (or earlier run) uses.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sluice-test:{what}:{}:{nanos}", std::process::id())
}

/// Appends entries `seq` in `range` to `stream`: fields `seq` and `text`.
fn xadd(con: &mut redis::Connection, stream: &str, range: std::ops::Range<u64>) {
    let mut pipe = redis::pipe();
    for seq in range {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("seq")
            .arg(seq)
            .arg("text")
            .arg(format!("v{seq}"))
            .ignore();
    }
    let () = pipe.query(con).expect("XADD");
}

/// Entries delivered to the group's consumers and not acknowledged; -1 while the group is
/// not there yet.
fn pending(con: &mut redis::Connection, stream: &str, group: &str) -> i64 {
    let reply: redis::Value = match redis::cmd("XPENDING").arg(stream).arg(group).query(con) {
        Ok(reply) => reply,
        Err(e) if e.code() == Some("NOGROUP") => return -1,
        Err(e) => panic!("XPENDING: {e}"),
    };
    match reply {
        redis::Value::Array(parts) => match parts.first() {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("XPENDING count: {other:?}"),
        },
        other => panic!("XPENDING: {other:?}"),
    }
}

/// The JSON values of `topic`.
fn json_values(kafka: &DevKafka, topic: &str) -> Vec<Json> {
    read_all(&kafka.bootstrap, topic)
        .into_iter()
        .filter_map(|(_, _, v, _)| v)
        .map(|v| serde_json::from_slice(&v).expect("a JSON value"))
        .collect()
}

fn source_config(stream: &str, topic: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "connector.class",
            "com.redis.kafka.connect.RedisStreamSourceConnector".into(),
        ),
        ("redis.uri", redis_url()),
        ("redis.stream.name", stream.into()),
        ("redis.stream.consumer.group", "sluice".into()),
        ("topic", topic.into()),
        ("batch.size", "200".into()),
        ("redis.stream.claim.min.idle.ms", "2000".into()),
    ]
}

/// 6,000 entries through RedisStreamSource, its process SIGKILLed mid-stream: every entry
/// reaches Kafka, in stream order (duplicates only after the kill, counted), keyed by entry ID
/// in the Redis Kafka Connector's value shape; every entry ends acknowledged. A RedisSink in
/// the same standalone copies each record into a hash `copy:<entry id>` (HSET, keys from the
/// record keys).
#[test]
fn redis_stream_source_loses_nothing_across_a_kill_and_a_sink_copies_it_into_hashes() {
    let mut con = redis();
    let stream = unique("in");
    let copy = unique("copy");
    xadd(&mut con, &stream, 0..2000);
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["redis-in:1"]);
    let source = connector_file(dir.path(), "rsource", &source_config(&stream, "redis-in"));
    // Named per run: a sink's offsets live in Redis, beyond the test's own files.
    let sink_name = format!("rsink{}", std::process::id());
    let sink = connector_file(
        dir.path(),
        &sink_name,
        &[
            (
                "connector.class",
                "com.redis.kafka.connect.RedisSinkConnector".into(),
            ),
            ("redis.uri", redis_url()),
            ("topics", "redis-in".into()),
            ("redis.command", "HSET".into()),
            ("redis.key", copy.clone()),
        ],
    );
    let mut sluice = standalone_on(dir.path(), &kafka, &[source, sink]);
    wait_for("records in Kafka", TIMEOUT, || {
        total_records(&kafka.bootstrap, "redis-in") >= 500
    });
    xadd(&mut con, &stream, 2000..4000);
    let pid = sluice
        .connector_pid("rsource")
        .expect("the source's process");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    xadd(&mut con, &stream, 4000..6000);
    wait_for("every entry in Kafka", TIMEOUT, || {
        if total_records(&kafka.bootstrap, "redis-in") < 6000 {
            return false;
        }
        let values = json_values(&kafka, "redis-in");
        let seen: std::collections::BTreeSet<u64> = values
            .iter()
            .filter_map(|v| v["payload"]["body"]["seq"].as_str()?.parse().ok())
            .collect();
        seen.len() == 6000
    });
    let values = json_values(&kafka, "redis-in");
    let mut first_seen = Vec::new();
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for v in &values {
        let payload = &v["payload"];
        assert_eq!(payload["stream"], Json::from(stream.as_str()), "{v}");
        let seq: u64 = payload["body"]["seq"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            payload["body"]["text"],
            Json::from(format!("v{seq}")),
            "{v}"
        );
        assert!(payload["id"].as_str().unwrap().contains('-'), "{v}");
        let n = count.entry(seq).or_default();
        if *n == 0 {
            first_seen.push(seq);
        }
        *n += 1;
    }
    assert_eq!(
        first_seen,
        (0..6000).collect::<Vec<_>>(),
        "entries first reached Kafka out of stream order"
    );
    let duplicates: usize = count.values().map(|n| n - 1).sum();
    println!("6000 entries, {duplicates} delivered twice after the kill");
    assert!(duplicates < 4000, "{duplicates} duplicates");
    // Acknowledged once Kafka had them: nothing stays pending.
    wait_for("every entry acknowledged", TIMEOUT, || {
        pending(&mut con, &stream, "sluice") == 0
    });
    // The sink's hashes: one per entry, keyed by the record key (the entry ID).
    let ids: Vec<String> = values
        .iter()
        .map(|v| v["payload"]["id"].as_str().unwrap().to_string())
        .collect();
    wait_for("every entry copied into a hash", TIMEOUT, || {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{copy}:*"))
            .query(&mut con)
            .unwrap();
        keys.len() == 6000
    });
    let last = ids.last().unwrap();
    let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{copy}:{last}"))
        .query(&mut con)
        .unwrap();
    assert_eq!(fields["id"], *last);
    assert_eq!(fields["stream"], stream);
    assert!(fields["body"].contains("seq=5999"), "{fields:?}");
    sluice.stop_cleanly();
    cleanup(&mut con, &[&stream]);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{copy}:*"))
        .query(&mut con)
        .unwrap();
    cleanup(
        &mut con,
        &keys.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    cleanup_offsets(&mut con, &sink_name);
}

/// With Kafka gone, entries the task reads stay pending in the group: an entry is
/// acknowledged once Kafka has its record, never on receipt.
#[test]
fn redis_stream_entries_are_not_acknowledged_before_kafka_has_them() {
    let mut con = redis();
    let stream = unique("unacked");
    xadd(&mut con, &stream, 0..100);
    let dir = tempfile::tempdir().unwrap();
    let mut kafka = DevKafka::start(dir.path(), &["unacked:1"]);
    let source = connector_file(dir.path(), "rsource", &source_config(&stream, "unacked"));
    let sluice = standalone_on(dir.path(), &kafka, &[source]);
    wait_for("the first entries acknowledged", TIMEOUT, || {
        pending(&mut con, &stream, "sluice") == 0
            && total_records(&kafka.bootstrap, "unacked") == 100
    });
    kafka.kill();
    xadd(&mut con, &stream, 100..150);
    wait_for("the new entries delivered to the task", TIMEOUT, || {
        pending(&mut con, &stream, "sluice") == 50
    });
    holds_for(
        "the entries staying pending while Kafka is gone",
        Duration::from_secs(3),
        || pending(&mut con, &stream, "sluice") == 50,
    );
    sluice.signal(libc::SIGKILL);
    cleanup(&mut con, &[&stream]);
}

/// Produces `records` (key, value; `None` for a tombstone) to `topic`, in order.
fn produce_keyed(bootstrap: &str, topic: &str, records: &[(String, Option<String>)]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for (key, value) in records {
        let mut record = BaseRecord::<str, str>::to(topic).key(key.as_str());
        if let Some(v) = value {
            record = record.payload(v.as_str());
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// RedisSink with SET: `<redis.key>:<record key>` holds each latest value; a tombstone
/// deletes its key.
#[test]
fn redis_sink_sets_strings_and_deletes_on_tombstones() {
    let mut con = redis();
    let space = unique("set");
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["to-set:1"]);
    let mut records: Vec<(String, Option<String>)> = (0..100)
        .map(|i| (format!("k{i}"), Some(format!("v{i}"))))
        .collect();
    records.push(("k7".into(), Some("newer".into())));
    records.push(("k3".into(), None));
    produce_keyed(&kafka.bootstrap, "to-set", &records);
    let sink_name = format!("setsink{}", std::process::id());
    let sink = connector_file(
        dir.path(),
        &sink_name,
        &[
            ("connector.class", "RedisSink".into()),
            ("redis.uri", redis_url()),
            ("topics", "to-set".into()),
            ("redis.command", "SET".into()),
            ("redis.key", space.clone()),
            (
                "key.converter",
                "org.apache.kafka.connect.storage.StringConverter".into(),
            ),
            (
                "value.converter",
                "org.apache.kafka.connect.storage.StringConverter".into(),
            ),
        ],
    );
    let mut sluice = standalone_on(dir.path(), &kafka, &[sink]);
    let get = |con: &mut redis::Connection, k: &str| -> Option<String> {
        redis::cmd("GET")
            .arg(format!("{space}:{k}"))
            .query(con)
            .unwrap()
    };
    wait_for("the last records written", TIMEOUT, || {
        get(&mut con, "k7").as_deref() == Some("newer") && get(&mut con, "k3").is_none()
    });
    for i in (0..100).filter(|i| *i != 3 && *i != 7) {
        assert_eq!(get(&mut con, &format!("k{i}")), Some(format!("v{i}")));
    }
    sluice.stop_cleanly();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{space}:*"))
        .query(&mut con)
        .unwrap();
    assert_eq!(keys.len(), 99);
    cleanup(
        &mut con,
        &keys.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    cleanup_offsets(&mut con, &sink_name);
}

/// RedisSink with XADD and `redis.multiexec=true`: 4,000 JSON records into one stream, the
/// sink's process SIGKILLed midway and then the worker, which committed no consumer offsets;
/// every record is in the stream exactly once, in order (the offsets travel in the same
/// atomic step as the data). The records that are not objects (1500, 3000) go to the
/// dead-letter queue with the reason, never lost although the sink's offsets move past them
/// before the worker writes them there: the step records each in the errant list (seen there
/// while no flush has happened), a task opening the partition reports again what the list
/// holds (an entry planted for offset 500, as a worker killed at the wrong moment leaves one,
/// reaches the dead-letter queue), and flushes empty the list once the worker is past them.
#[test]
fn redis_sink_xadd_with_multiexec_writes_each_record_once_across_a_kill() {
    let mut con = redis();
    let out = unique("xadd");
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["to-stream:1", "redis-dlq:1"]);
    let values = |range: std::ops::Range<u64>| -> Vec<String> {
        range
            .map(|i| {
                if i == 1500 || i == 3000 {
                    "\"not an object\"".to_string()
                } else {
                    format!(r#"{{"seq":{i},"name":"n{i}"}}"#)
                }
            })
            .collect()
    };
    harness::cluster::produce(&kafka.bootstrap, "to-stream", &values(0..2000));
    let mut config = vec![
        ("connector.class", "RedisSink".to_string()),
        ("redis.uri", redis_url()),
        ("topics", "to-stream".into()),
        ("redis.command", "XADD".into()),
        ("redis.key", out.clone()),
        ("redis.multiexec", "true".into()),
        (
            "value.converter",
            "org.apache.kafka.connect.json.JsonConverter".into(),
        ),
        ("value.converter.schemas.enable", "false".into()),
    ];
    config.extend(error_policy("all", "redis-dlq"));
    let name = format!("xsink{}", std::process::id());
    let sink = connector_file(dir.path(), &name, &config);
    let errant = format!("sluice:sink-errant:{name}");
    let _: () = redis::cmd("RPUSH")
        .arg(&errant)
        .arg("to-stream\t0\t500\tplanted: the worker died before the dead-letter queue had it")
        .query(&mut con)
        .unwrap();
    let entries = |con: &mut redis::Connection| -> Vec<String> {
        redis::cmd("LRANGE")
            .arg(&errant)
            .arg(0)
            .arg(-1)
            .query(con)
            .unwrap()
    };
    // The worker commits no consumer offsets before it is killed: everything it read would
    // come again but for the offsets the sink keeps in Redis.
    let worker = worker_properties(dir.path(), Some(&kafka.bootstrap));
    let text = std::fs::read_to_string(dir.path().join(worker)).unwrap();
    std::fs::write(
        dir.path().join(worker),
        text.replace(
            "offset.flush.interval.ms=500",
            "offset.flush.interval.ms=600000",
        ),
    )
    .unwrap();
    let start = || Sluice::start(dir.path(), &["standalone", worker, &sink]);
    let mut sluice = start();
    let xlen =
        |con: &mut redis::Connection| -> usize { redis::cmd("XLEN").arg(&out).query(con).unwrap() };
    wait_for("the first records in the stream", TIMEOUT, || {
        xlen(&mut con) >= 1000
    });
    // The sink's process, then the whole worker.
    let pid = sluice.connector_pid(&name).expect("the sink's process");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("the first half in the stream", TIMEOUT, || {
        xlen(&mut con) >= 1999
    });
    // No flush yet: record 1500's entry went into the list with the step that passed it.
    let listed = entries(&mut con);
    assert!(
        listed
            .iter()
            .any(|e| e.starts_with("to-stream\t0\t1500\t") && e.contains("struct or a map")),
        "{listed:?}"
    );
    sluice.signal(libc::SIGKILL);
    let _ = sluice.wait(Duration::from_secs(10));
    harness::cluster::produce(&kafka.bootstrap, "to-stream", &values(2000..4000));
    // From now on the worker flushes (and commits) every 500 ms.
    std::fs::write(dir.path().join(worker), &text).unwrap();
    let mut sluice = start();
    wait_for("every record in the stream", TIMEOUT, || {
        xlen(&mut con) >= 3998
    });
    holds_for(
        "nothing applied twice showing up later",
        Duration::from_secs(2),
        || xlen(&mut con) == 3998,
    );
    wait_for("the errant list settled", TIMEOUT, || {
        entries(&mut con).is_empty()
    });
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&out)
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    let seqs: Vec<u64> = entries
        .ids
        .iter()
        .map(|e| e.get::<String>("seq").unwrap().parse().unwrap())
        .collect();
    let expected: Vec<u64> = (0..4000).filter(|i| *i != 1500 && *i != 3000).collect();
    assert_eq!(seqs.len(), expected.len(), "records applied twice or lost");
    assert_eq!(seqs, expected);
    // By offset: the reasons each reached the dead-letter queue with (a restored entry may
    // be written twice: at least once).
    let mut dlq: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, _, _, headers) in read_all(&kafka.bootstrap, "redis-dlq") {
        let offset = headers["__connect.errors.offset"].clone();
        let reason = headers
            .iter()
            .filter(|(k, _)| k.contains("message"))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
            .join(" ");
        dlq.entry(offset).or_default().push(reason);
    }
    assert_eq!(
        dlq.keys().map(String::as_str).collect::<Vec<_>>(),
        ["1500", "3000", "500"],
        "{dlq:?}"
    );
    assert!(dlq["500"].iter().all(|r| r.contains("planted")), "{dlq:?}");
    assert!(
        dlq["1500"].iter().all(|r| r.contains("struct or a map")),
        "{dlq:?}"
    );
    assert_eq!(dlq["3000"].len(), 1, "{dlq:?}");
    sluice.stop_cleanly();
    cleanup(&mut con, &[&out]);
    cleanup_offsets(&mut con, &name);
}

/// Both Redis connectors pass the conformance kit.
#[test]
fn redis_connectors_pass_the_conformance_kit() {
    let mut con = redis();
    let stream = unique("kit");
    let kit_keys = unique("kitsink");
    xadd(&mut con, &stream, 0..20);
    for (class, config) in [
        (
            "RedisStreamSource",
            vec![
                ("redis.uri", redis_url()),
                ("redis.stream.name", stream.clone()),
            ],
        ),
        (
            "RedisSink",
            vec![
                ("redis.uri", redis_url()),
                ("redis.command", "SET".into()),
                ("redis.key", kit_keys.clone()),
            ],
        ),
    ] {
        let (ok, text) = plugins_check(class, &config, "redis");
        assert!(ok, "{class}: {text}");
        assert!(text.contains(" passed, 0 failed"), "{class}: {text}");
    }
    cleanup(&mut con, &[&stream]);
    // What the kit's sink streams wrote, and their offsets.
    for pattern in [
        format!("{kit_keys}:*"),
        "sluice:sink-offset:*conformance*".into(),
    ] {
        let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut con).unwrap();
        cleanup(
            &mut con,
            &keys.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
}

/// Polls `condition` for `period`; panics naming `what` as soon as it does not hold.
fn holds_for(what: &str, period: Duration, mut condition: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + period;
    while std::time::Instant::now() < until {
        assert!(condition(), "{what}: no longer true");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Redis server of the test's own (`redis-server` on a free port, appending every write to
/// its file before answering), to kill and start again: the service going away.
struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start(dir: &std::path::Path) -> OwnRedis {
        let mut redis = OwnRedis {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on its port and data) and waits until it answers.
    fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server (install redis-server)");
        self.child = Some(child);
        let url = self.url();
        wait_for("the test's own Redis to answer", TIMEOUT, || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
    }

    /// SIGKILL: the service is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connect to the test's own Redis")
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Redis goes away (SIGKILL) while a source and a sink run, and comes back once both tasks
/// failed on it twice: the worker restarts them with backoff and they carry on — every entry reaches
/// Kafka and every record its hash, with no restart by hand.
#[test]
fn redis_connectors_recover_when_redis_goes_away_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("redis");
    std::fs::create_dir_all(&data).unwrap();
    let mut server = OwnRedis::start(&data);
    let stream = "outage";
    xadd(&mut server.connection(), stream, 0..1000);
    let kafka = DevKafka::start(dir.path(), &["outage:1"]);
    let mut config = source_config(stream, "outage");
    for (k, v) in config.iter_mut() {
        if *k == "redis.uri" {
            *v = server.url();
        }
    }
    config.push(("restart.backoff.initial.ms", "200".into()));
    config.push(("redis.timeout", "2".into()));
    let source = connector_file(dir.path(), "osource", &config);
    let sink = connector_file(
        dir.path(),
        "osink",
        &[
            ("connector.class", "RedisSink".into()),
            ("redis.uri", server.url()),
            ("redis.timeout", "2".into()),
            ("restart.backoff.initial.ms", "200".into()),
            ("topics", "outage".into()),
            ("redis.command", "HSET".into()),
            ("redis.key", "copy".into()),
        ],
    );
    let mut sluice = standalone_on(dir.path(), &kafka, &[source, sink]);
    wait_for("the first entries in Kafka", TIMEOUT, || {
        total_records(&kafka.bootstrap, "outage") >= 1000
    });
    server.kill();
    // Down until both tasks failed on it and were restarted into it again.
    wait_for(
        "both tasks failing and restarting while Redis is gone",
        TIMEOUT,
        || {
            let out = sluice.output();
            ["osource", "osink"].iter().all(|c| {
                out.lines()
                    .filter(|l| l.contains(&format!("connector={c}")) && l.contains("restart 2 of"))
                    .count()
                    > 0
            })
        },
    );
    server.restart();
    xadd(&mut server.connection(), stream, 1000..2000);
    let seqs = || -> std::collections::BTreeSet<u64> {
        json_values(&kafka, "outage")
            .iter()
            .filter_map(|v| v["payload"]["body"]["seq"].as_str()?.parse().ok())
            .collect()
    };
    wait_for("every entry in Kafka after the outage", TIMEOUT, || {
        total_records(&kafka.bootstrap, "outage") >= 2000 && seqs().len() == 2000
    });
    let mut con = server.connection();
    wait_for("every record in its hash after the outage", TIMEOUT, || {
        let keys: Vec<String> = redis::cmd("KEYS").arg("copy:*").query(&mut con).unwrap();
        keys.len() == 2000
    });
    wait_for("every entry acknowledged", TIMEOUT, || {
        pending(&mut con, stream, "sluice") == 0
    });
    sluice.stop_cleanly();
}

/// Deletes the offsets sink connector `name` stored.
fn cleanup_offsets(con: &mut redis::Connection, name: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("sluice:sink-offset:{name}:*"))
        .query(con)
        .unwrap();
    assert!(!keys.is_empty(), "{name} stored no offsets");
    cleanup(con, &keys.iter().map(String::as_str).collect::<Vec<_>>());
}

fn cleanup(con: &mut redis::Connection, keys: &[&str]) {
    for chunk in keys.chunks(500) {
        if !chunk.is_empty() {
            let _: () = redis::cmd("DEL").arg(chunk).query(con).unwrap();
        }
    }
}

/// A TCP proxy in front of a service, to take the service away from the connectors without
/// touching it: [`cut`](Proxy::cut) closes every connection through it and refuses new ones
/// (accepted, then closed at once) until [`restore`](Proxy::restore).
pub struct Proxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (up2, open2, upstream) = (up.clone(), open.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let pipes = [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ];
                open2.lock().unwrap().extend([client, server]);
                for (mut from, mut to) in pipes {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, up, open }
    }

    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Where message `seq` goes in the messaging tests: `a` for even numbers, `b` for odd ones.
pub fn side(seq: u64) -> &'static str {
    if seq.is_multiple_of(2) {
        "a"
    } else {
        "b"
    }
}

/// Every sequence number of `0..count` but `missing` reached its side in order of first
/// arrival; returns the number of duplicates.
pub fn check_order(seen: &BTreeMap<String, Vec<u64>>, count: u64, missing: &[u64]) -> usize {
    let mut duplicates = 0;
    for (side, seqs) in seen {
        let mut first = Vec::new();
        let mut set = std::collections::BTreeSet::new();
        for s in seqs {
            if set.insert(*s) {
                first.push(*s);
            } else {
                duplicates += 1;
            }
        }
        let parity = u64::from(side == "b");
        let expected: Vec<u64> = (0..count)
            .filter(|s| s % 2 == parity && !missing.contains(s))
            .collect();
        assert_eq!(first, expected, "{side}: messages lost or out of order");
    }
    duplicates
}

/// How many different values `topic` holds.
pub fn distinct(kafka: &DevKafka, topic: &str) -> usize {
    read_all(&kafka.bootstrap, topic)
        .into_iter()
        .filter_map(|(_, _, v, _)| v)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}
