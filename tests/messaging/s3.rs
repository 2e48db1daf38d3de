//! S3Sink against a real S3-compatible server: moto's server mode (`python3 -m moto.server`,
//! installed with the test tools, bound to 127.0.0.1 on a port of its own per test). The
//! tests read the bucket back with an S3 client: objects listed and read, equal to the
//! topic, none doubled after a SIGKILL of the connector, multipart uploads completed or
//! aborted (never left), Avro files read with an Avro reader, the partitioners' paths, bad
//! records in the dead-letter queue, an outage of the store recovered without a hand.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use ::s3::creds::Credentials;
use ::s3::{Bucket, BucketConfiguration, Region};

use crate::harness::cluster::{error_policy, read_all};
use crate::harness::*;
use crate::{Proxy, TIMEOUT};

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

/// A moto S3 server of this test's own, killed on drop.
struct Moto {
    process: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let site = crate::harness::tools::tools().site.clone();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let process = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .env("PYTHONPATH", &site)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto's S3 server (python3 -m moto.server)");
        wait_for("moto's S3 server answering", TIMEOUT, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Moto { process, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new bucket on this server.
    fn bucket(&self, name: &str) -> Box<Bucket> {
        bucket_at(&self.url(), name, true)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn bucket_at(url: &str, name: &str, create: bool) -> Box<Bucket> {
    let region = Region::Custom {
        region: "us-west-2".into(),
        endpoint: url.into(),
    };
    let credentials = Credentials::new(Some("test"), Some("test"), None, None, None).unwrap();
    if create {
        rt().block_on(Bucket::create_with_path_style(
            name,
            region.clone(),
            credentials.clone(),
            BucketConfiguration::default(),
        ))
        .expect("create the bucket");
    }
    Bucket::new(name, region, credentials)
        .unwrap()
        .with_path_style()
}

/// [`wait_for`], printing the pipeline's output when it times out.
fn wait_on(sluice: &Sluice, what: &str, condition: impl FnMut() -> bool) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(what, TIMEOUT, condition)
    }));
    if let Err(panic) = result {
        eprintln!("--- sluice output ---\n{}", sluice.output());
        std::panic::resume_unwind(panic);
    }
}

/// Every object under `prefix`: key → bytes.
fn objects(bucket: &Bucket, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let pages = rt().block_on(bucket.list(prefix.into(), None)).unwrap();
    let keys: Vec<String> = pages
        .iter()
        .flat_map(|p| p.contents.iter().map(|o| o.key.clone()))
        .collect();
    keys.into_iter()
        .map(|k| {
            let body = rt().block_on(bucket.get_object(&k)).unwrap().to_vec();
            (k, body)
        })
        .collect()
}

fn keys(bucket: &Bucket, prefix: &str) -> Vec<String> {
    let pages = rt().block_on(bucket.list(prefix.into(), None)).unwrap();
    pages
        .iter()
        .flat_map(|p| p.contents.iter().map(|o| o.key.clone()))
        .collect()
}

/// The multipart uploads not completed nor aborted under `prefix`: their keys.
fn uploads(bucket: &Bucket, prefix: &str) -> Vec<String> {
    rt().block_on(bucket.list_multiparts_uploads(Some(prefix), None))
        .unwrap()
        .iter()
        .flat_map(|p| p.uploads.iter().map(|u| u.key.clone()))
        .collect()
}

/// Produces JSON values `{"seq": n, "pad": "..."}` to partition `n % partitions` of `topic`.
fn produce_seq(
    bootstrap: &str,
    topic: &str,
    range: std::ops::Range<u64>,
    partitions: u64,
    pad: usize,
) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        // The embedded broker keeps 5 MB per partition; the padding compresses to nothing.
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    let padding = "x".repeat(pad);
    for seq in range {
        let value = format!(r#"{{"seq":{seq},"pad":"{padding}"}}"#);
        let key = seq.to_string();
        loop {
            match producer.send(
                BaseRecord::to(topic)
                    .partition((seq % partitions) as i32)
                    .key(&key)
                    .payload(&value),
            ) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "{e}"
                    );
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn sink_config(
    url: &str,
    bucket: &str,
    topic: &str,
    flush_size: u64,
) -> Vec<(&'static str, String)> {
    vec![
        (
            "connector.class",
            "io.confluent.connect.s3.S3SinkConnector".into(),
        ),
        ("topics", topic.into()),
        ("s3.bucket.name", bucket.into()),
        ("s3.region", "us-west-2".into()),
        ("store.url", url.into()),
        ("aws.access.key.id", "test".into()),
        ("aws.secret.access.key", "test".into()),
        ("flush.size", flush_size.to_string()),
        (
            "format.class",
            "io.confluent.connect.s3.format.json.JsonFormat".into(),
        ),
        (
            "key.converter",
            "org.apache.kafka.connect.storage.StringConverter".into(),
        ),
        (
            "value.converter",
            "org.apache.kafka.connect.json.JsonConverter".into(),
        ),
        ("value.converter.schemas.enable", "false".into()),
    ]
}

/// Checks the JSON objects of `topic` under `dir`: each named
/// `<dir>/<topic>/partition=P/<topic>+P+<start, 10 digits>.json`, holding `flush_size` lines
/// whose offsets run on from its start (the value at offset `o` of partition `p` is
/// `seq = o * partitions + p`); returns every sequence number and how often it was seen.
fn check_json_objects(
    objects: &BTreeMap<String, Vec<u8>>,
    dir: &str,
    topic: &str,
    partitions: u64,
    flush_size: usize,
) -> BTreeMap<u64, usize> {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for (key, body) in objects {
        let rest = key
            .strip_prefix(&format!("{dir}/{topic}/partition="))
            .unwrap_or_else(|| panic!("unexpected object {key}"));
        let (p, file) = rest.split_once('/').unwrap();
        let p: u64 = p.parse().unwrap();
        let start = file
            .strip_prefix(&format!("{topic}+{p}+"))
            .and_then(|f| f.strip_suffix(".json"))
            .unwrap_or_else(|| panic!("unexpected file name {key}"));
        assert_eq!(
            start.len(),
            10,
            "{key}: the offset is zero-padded to 10 digits"
        );
        let start: u64 = start.parse().unwrap();
        let text = String::from_utf8(body.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), flush_size, "{key}: not flush.size records");
        for (i, line) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let seq = v["seq"].as_u64().unwrap();
            assert_eq!(
                seq,
                (start + i as u64) * partitions + p,
                "{key}: line {i} is not the record at offset {}",
                start + i as u64
            );
            *seen.entry(seq).or_default() += 1;
        }
    }
    seen
}

/// S3Sink writes two partitions' 20,000 JSON records in objects of `flush.size` (250), its
/// process SIGKILLed while each partition has 50 records in a file not uploaded yet (and the
/// worker has committed since): every object is named by topic, partition and start offset
/// and holds the records of its offsets in order, and every record is in exactly one object —
/// nothing held in memory was lost (the offsets committed were the open files' starts) and
/// nothing written again was doubled.
#[test]
fn s3_sink_writes_every_record_exactly_once_across_a_kill() {
    let moto = Moto::start();
    let bucket = moto.bucket("once");
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["to-s3:2"]);
    produce_seq(&kafka.bootstrap, "to-s3", 0..16100, 2, 20);
    let sink = connector_file(
        dir.path(),
        "s3sink",
        &sink_config(&moto.url(), "once", "to-s3", 250),
    );
    let sluice = standalone_on(dir.path(), &kafka, &[sink]);
    wait_on(&sluice, "the first 64 objects", || {
        keys(&bucket, "topics/").len() >= 64
    });
    // Offset commits every 500 ms: several by now, none past an open file's start.
    std::thread::sleep(Duration::from_secs(2));
    let pid = sluice.connector_pid("s3sink").expect("the sink's process");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    produce_seq(&kafka.bootstrap, "to-s3", 16100..20000, 2, 20);
    wait_on(&sluice, "every record in an object", || {
        keys(&bucket, "topics/").len() >= 80
    });
    let objects = objects(&bucket, "");
    assert_eq!(
        objects.len(),
        80,
        "{:?}",
        objects.keys().collect::<Vec<_>>()
    );
    let seen = check_json_objects(&objects, "topics", "to-s3", 2, 250);
    assert_eq!(seen.len(), 20000, "records missing");
    assert!(seen.values().all(|n| *n == 1), "a record in two objects");
    let restarts = sluice.output().matches("started connector process").count();
    println!("20000 records in 80 objects, each once; connector processes started: {restarts}");
    drop(sluice);
}

/// Objects larger than `s3.part.size` (5 MiB) go up as multipart uploads. A multipart upload
/// left as a killed task leaves one (planted here: started, one part sent) is aborted when
/// the partition opens; the connector is SIGKILLed in the middle of one of its multipart
/// uploads (seen listed unfinished); in the end no upload of
/// the topic's partition is left unfinished (an unrelated one is left alone), every object is
/// whole and every record in exactly one.
#[test]
fn s3_sink_multipart_uploads_are_completed_or_aborted_never_left_half() {
    let moto = Moto::start();
    let bucket = moto.bucket("multi");
    let left = "topics/big/partition=0/big+0+0000000000.json";
    let unrelated = "topics/big/partition=7/big+7+0000000000.json";
    for key in [left, unrelated] {
        rt().block_on(async {
            let up = bucket
                .initiate_multipart_upload(key, "application/json")
                .await
                .unwrap();
            bucket
                .put_multipart_chunk(
                    vec![b'x'; 5 * 1024 * 1024],
                    key,
                    1,
                    &up.upload_id,
                    "application/json",
                )
                .await
                .unwrap();
        });
    }
    assert_eq!(uploads(&bucket, "topics/").len(), 2);
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["big:1"]);
    // 1,200 records of about 5 KB: objects of 6 MB, two parts each.
    produce_seq(&kafka.bootstrap, "big", 0..3600, 1, 5000);
    let mut config = sink_config(&moto.url(), "multi", "big", 1200);
    config.push(("s3.part.size", (5 * 1024 * 1024).to_string()));
    let sink = connector_file(dir.path(), "bigsink", &config);
    let sluice = standalone_on(dir.path(), &kafka, &[sink]);
    wait_on(&sluice, "the left upload aborted", || {
        uploads(&bucket, "topics/") == vec![unrelated.to_string()]
    });
    // Killed while one of its uploads is listed unfinished: in the middle of a multipart upload.
    let pid = sluice.connector_pid("bigsink").expect("the sink's process");
    let deadline = std::time::Instant::now() + TIMEOUT;
    let cut = loop {
        let open: Vec<String> = uploads(&bucket, "topics/")
            .into_iter()
            .filter(|u| u != unrelated)
            .collect();
        if !open.is_empty() {
            break open;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no upload seen in progress"
        );
    };
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let done_before_kill = keys(&bucket, "topics/").len();
    produce_seq(&kafka.bootstrap, "big", 3600..6000, 1, 5000);
    wait_on(&sluice, "every record in an object", || {
        keys(&bucket, "topics/").len() >= 5
    });
    // The upload the kill may have cut is aborted when the restarted task opens the
    // partition; by now every one of the partition's is finished either way.
    wait_on(&sluice, "no upload of the partition unfinished", || {
        uploads(&bucket, "topics/") == vec![unrelated.to_string()]
    });
    println!("killed uploading {cut:?}, {done_before_kill} objects finished before");
    let objects = objects(&bucket, "");
    assert_eq!(objects.len(), 5);
    assert!(objects.values().all(|b| b.len() > 5 * 1024 * 1024));
    let seen = check_json_objects(&objects, "topics", "big", 1, 1200);
    assert_eq!(seen.len(), 6000, "records missing");
    assert!(seen.values().all(|n| *n == 1), "a record in two objects");
    drop(sluice);
}

/// Produces JSON-with-schema structs `{seq, region, ts}` (ts = 2026-01-01T00:00Z + seq × 7
/// minutes) and, at `tombstone`, a record with a null value.
fn produce_structs(bootstrap: &str, topic: &str, count: u64, tombstone: u64) -> i64 {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let base: i64 = 1_767_225_600_000;
    for seq in 0..count {
        let key = seq.to_string();
        if seq == tombstone {
            producer
                .send(BaseRecord::<str, str>::to(topic).key(&key))
                .map_err(|(e, _)| e)
                .unwrap();
            continue;
        }
        let region = if seq % 3 == 0 { "eu" } else { "us" };
        let ts = base + seq as i64 * 7 * 60_000;
        let value = format!(
            r#"{{"schema":{{"type":"struct","name":"reading","fields":[{{"field":"seq","type":"int64"}},{{"field":"region","type":"string"}},{{"field":"ts","type":"int64"}}]}},"payload":{{"seq":{seq},"region":"{region}","ts":{ts}}}}}"#
        );
        producer
            .send(BaseRecord::to(topic).key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    base
}

/// AvroFormat with FieldPartitioner (by region) and gzipped JsonFormat with an hourly
/// TimeBasedPartitioner on a field of the value in a named zone (Asia/Tokyo), side by side on
/// one topic of structs: the Avro files read back with an Avro reader, each under its region's
/// folder; the JSON files (`.json.gz`) each under the Tokyo hour of their records (rotated
/// when the hour changes); the tombstone goes to the dead-letter queue from both
/// (behavior.on.null.values=fail, errors tolerated).
#[test]
fn s3_sink_writes_avro_by_field_and_json_by_hour() {
    let moto = Moto::start();
    let bucket = moto.bucket("shapes");
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["readings:1", "s3-dlq:1"]);
    let base = produce_structs(&kafka.bootstrap, "readings", 300, 150);
    let with_schemas = |mut c: Vec<(&'static str, String)>| {
        c.retain(|(k, _)| *k != "value.converter.schemas.enable");
        c.push(("value.converter.schemas.enable", "true".into()));
        c.extend(error_policy("all", "s3-dlq"));
        c
    };
    let mut avro = with_schemas(sink_config(&moto.url(), "shapes", "readings", 60));
    avro.extend([
        ("topics.dir", "by-region".to_string()),
        (
            "format.class",
            "io.confluent.connect.s3.format.avro.AvroFormat".into(),
        ),
        ("avro.codec", "deflate".into()),
        (
            "partitioner.class",
            "io.confluent.connect.storage.partitioner.FieldPartitioner".into(),
        ),
        ("partition.field.name", "region".into()),
    ]);
    let mut json = with_schemas(sink_config(&moto.url(), "shapes", "readings", 100_000));
    json.extend([
        ("topics.dir", "by-hour".to_string()),
        (
            "partitioner.class",
            "io.confluent.connect.storage.partitioner.TimeBasedPartitioner".into(),
        ),
        ("path.format", "'date'=YYYY-MM-dd/'hour'=HH".into()),
        ("partition.duration.ms", "3600000".into()),
        ("timezone", "Asia/Tokyo".into()),
        ("s3.compression.type", "gzip".into()),
        ("locale", "en-US".into()),
        ("timestamp.extractor", "RecordField".into()),
        ("timestamp.field", "ts".into()),
        ("rotate.interval.ms", "3600000".into()),
    ]);
    let files = [
        connector_file(dir.path(), "avrosink", &avro),
        connector_file(dir.path(), "hoursink", &json),
    ];
    let sluice = standalone_on(dir.path(), &kafka, &files);
    // 299 structs: an upload per 60, of a file per region; the last 59 stay open
    // (flush.size not reached).
    wait_on(&sluice, "the Avro objects", || {
        keys(&bucket, "by-region/").len() >= 8
    });
    // 300 × 7 minutes = 35 hours: the last hour's file stays open.
    wait_on(&sluice, "the hourly objects", || {
        keys(&bucket, "by-hour/").len() >= 34
    });
    wait_on(
        &sluice,
        "the tombstone in the dead-letter queue twice",
        || read_all(&kafka.bootstrap, "s3-dlq").len() >= 2,
    );

    let mut avro_seqs = BTreeSet::new();
    for (key, body) in objects(&bucket, "by-region/") {
        let region = key
            .strip_prefix("by-region/readings/region=")
            .and_then(|r| r.split_once('/'))
            .map(|(r, _)| r.to_string())
            .unwrap_or_else(|| panic!("unexpected object {key}"));
        let reader = apache_avro::Reader::new(&body[..]).unwrap();
        assert!(reader.writer_schema().canonical_form().contains("\"seq\""));
        for value in reader {
            let apache_avro::types::Value::Record(fields) = value.unwrap() else {
                panic!("{key}: not a record")
            };
            let get = |name: &str| fields.iter().find(|(n, _)| n == name).unwrap().1.clone();
            let apache_avro::types::Value::Long(seq) = get("seq") else {
                panic!()
            };
            assert_eq!(
                get("region"),
                apache_avro::types::Value::String(region.clone())
            );
            assert!(avro_seqs.insert(seq as u64), "{seq} twice");
        }
    }
    // Four uploads of 60 structs: the first 240 (the tombstone, 150, is not one).
    let expected: BTreeSet<u64> = (0..241).filter(|s| *s != 150).collect();
    assert_eq!(avro_seqs, expected);

    let mut hour_seqs = BTreeSet::new();
    for (key, body) in objects(&bucket, "by-hour/") {
        let hour_path = key
            .strip_prefix("by-hour/readings/")
            .and_then(|r| r.rsplit_once('/'))
            .map(|(h, _)| h.to_string())
            .unwrap_or_else(|| panic!("unexpected object {key}"));
        assert!(key.ends_with(".json.gz"), "{key}");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
            .unwrap_or_else(|e| panic!("{key} is not gzip: {e}"));
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let seq = v["seq"].as_u64().unwrap();
            let ts = v["ts"].as_i64().unwrap();
            assert_eq!(ts, base + seq as i64 * 7 * 60_000);
            // Tokyo is 9 hours ahead of UTC (no daylight saving).
            let hours = (ts - base) / 3_600_000 + 9;
            let expected = format!("date=2026-01-{:02}/hour={:02}", 1 + hours / 24, hours % 24);
            assert_eq!(hour_path, expected, "{key}: seq {seq}");
            assert!(hour_seqs.insert(seq), "{seq} twice");
        }
    }
    // The 35 hours from the first record's hold seq 0..=299; the last one's (seq ≥ 292) is
    // still open.
    let written: BTreeSet<u64> = (0..292).filter(|s| *s != 150).collect();
    assert_eq!(hour_seqs, written);
    let dlq = read_all(&kafka.bootstrap, "s3-dlq");
    let reasons: Vec<String> = dlq
        .iter()
        .map(|r| r.3.values().cloned().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("behavior.on.null.values")),
        "{reasons:?}"
    );
    drop(sluice);
}

/// The store goes away (a proxy in front of it closes every connection and refuses new
/// ones) while records keep coming: the task fails its upload after its retries, the worker
/// restarts it with backoff, and once the store is back every record is in exactly one
/// object with no restart by hand.
#[test]
fn s3_sink_recovers_when_the_store_goes_away_and_comes_back() {
    let moto = Moto::start();
    let bucket = moto.bucket("outage");
    let proxy = Proxy::start(&format!("127.0.0.1:{}", moto.port));
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["flaky:1"]);
    let mut config = sink_config(
        &format!("http://127.0.0.1:{}", proxy.port),
        "outage",
        "flaky",
        100,
    );
    config.extend([
        ("s3.part.retries", "1".to_string()),
        ("s3.retry.backoff.ms", "100".into()),
        ("restart.backoff.initial.ms", "200".into()),
    ]);
    let sink = connector_file(dir.path(), "flakysink", &config);
    let mut sluice = standalone_on(dir.path(), &kafka, &[sink]);
    produce_seq(&kafka.bootstrap, "flaky", 0..1000, 1, 20);
    wait_on(&sluice, "the first objects", || {
        keys(&bucket, "topics/").len() >= 10
    });
    proxy.cut();
    produce_seq(&kafka.bootstrap, "flaky", 1000..2000, 1, 20);
    wait_on(
        &sluice,
        "the task failing and restarting while the store is gone",
        || {
            sluice
                .output()
                .lines()
                .any(|l| l.contains("connector=flakysink") && l.contains("restart 2 of"))
        },
    );
    proxy.restore();
    produce_seq(&kafka.bootstrap, "flaky", 2000..3000, 1, 20);
    wait_on(
        &sluice,
        "every record in an object after the outage",
        || keys(&bucket, "topics/").len() >= 30,
    );
    let seen = check_json_objects(&objects(&bucket, ""), "topics", "flaky", 1, 100);
    assert_eq!(seen.len(), 3000);
    assert!(seen.values().all(|n| *n == 1), "a record in two objects");
    sluice.stop_cleanly();
}

/// `rotate.schedule.interval.ms` uploads a partition's open file when the wall clock passes
/// the next multiple of the interval, also on a topic that went quiet (the worker keeps
/// asking a task that holds records back), and the offsets are committed after it: a
/// restarted pipeline writes nothing twice.
#[test]
fn s3_sink_rotates_on_schedule_on_an_idle_topic() {
    let moto = Moto::start();
    let bucket = moto.bucket("scheduled");
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["quiet:1"]);
    let mut config = sink_config(&moto.url(), "scheduled", "quiet", 1_000_000);
    config.push(("rotate.schedule.interval.ms", "1000".into()));
    let sink = connector_file(dir.path(), "quietsink", &config);
    let mut sluice = standalone_on(dir.path(), &kafka, &[sink]);
    produce_seq(&kafka.bootstrap, "quiet", 0..10, 1, 20);
    wait_on(&sluice, "the scheduled upload", || {
        !keys(&bucket, "topics/").is_empty()
    });
    let seen = check_json_objects(&objects(&bucket, ""), "topics", "quiet", 1, 10);
    assert_eq!(seen.len(), 10);
    // Committed after the upload: a new pipeline on the same group starts past them.
    std::thread::sleep(Duration::from_secs(2));
    sluice.stop_cleanly();
    let sluice = standalone_on(
        dir.path(),
        &kafka,
        &[connector_file(dir.path(), "quietsink", &config)],
    );
    produce_seq(&kafka.bootstrap, "quiet", 10..15, 1, 20);
    wait_on(&sluice, "the second scheduled upload", || {
        keys(&bucket, "topics/").len() >= 2
    });
    let objects = objects(&bucket, "");
    assert_eq!(
        objects.keys().collect::<Vec<_>>(),
        [
            "topics/quiet/partition=0/quiet+0+0000000000.json",
            "topics/quiet/partition=0/quiet+0+0000000010.json"
        ]
    );
    drop(sluice);
}

/// A bucket that does not exist fails the task at once, naming it (a retry cannot help).
#[test]
fn s3_sink_fails_clearly_on_a_missing_bucket() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["nowhere:1"]);
    let sink = connector_file(
        dir.path(),
        "nobucket",
        &sink_config(&moto.url(), "no-such-bucket", "nowhere", 10),
    );
    let sluice = standalone_on(dir.path(), &kafka, &[sink]);
    wait_on(&sluice, "the task failing on the missing bucket", || {
        sluice.output().lines().any(|l| {
            l.contains("no-such-bucket") && l.contains("NoSuchBucket") && l.contains("FAILED")
        })
    });
    drop(sluice);
}

/// S3Sink passes the conformance kit.
#[test]
fn s3_sink_passes_the_conformance_kit() {
    let moto = Moto::start();
    let _bucket = moto.bucket("kit");
    let config = sink_config(&moto.url(), "kit", "kit", 10);
    let (ok, text) = plugins_check("S3Sink", &config, "s3");
    assert!(ok, "{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
}
