//! Transforms and converters end to end: real `sluice` processes, connector child processes
//! and a Kafka-protocol broker in its own process, configured with Kafka Connect's keys.

mod harness;

use std::time::Duration;

use harness::cluster::{produce, read_all};
use harness::*;

/// A file source with four transforms (hoist, cast, insert, route) writes JSON envelopes to a
/// renamed topic; a file sink reading that topic and another filters the other one out with a
/// predicate and extracts the number back.
#[test]
fn a_chain_of_transforms_runs_end_to_end_through_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["connect-test:1", "routed-test:1", "other:1"]);
    let worker = worker_properties(dir.path(), Some(&kafka.bootstrap));
    let total = 500;
    append_lines_of(
        &dir.path().join("test.txt"),
        (0..total).map(|i| i.to_string()),
    );
    std::fs::write(
        dir.path().join("source.properties"),
        "name=numbers\n\
         connector.class=FileStreamSource\n\
         file=test.txt\n\
         topic=connect-test\n\
         transforms=hoist,cast,insert,route\n\
         transforms.hoist.type=org.apache.kafka.connect.transforms.HoistField$Value\n\
         transforms.hoist.field=line\n\
         transforms.cast.type=org.apache.kafka.connect.transforms.Cast$Value\n\
         transforms.cast.spec=line:int32\n\
         transforms.insert.type=org.apache.kafka.connect.transforms.InsertField$Value\n\
         transforms.insert.topic.field=src_topic\n\
         transforms.insert.static.field=origin\n\
         transforms.insert.static.value=file\n\
         transforms.route.type=org.apache.kafka.connect.transforms.RegexRouter\n\
         transforms.route.regex=connect-(.*)\n\
         transforms.route.replacement=routed-$1\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sink.properties"),
        "name=numbers-out\n\
         connector.class=FileStreamSink\n\
         file=out.txt\n\
         topics=routed-test,other\n\
         transforms=dropOther,extract\n\
         transforms.dropOther.type=org.apache.kafka.connect.transforms.Filter\n\
         transforms.dropOther.predicate=isOther\n\
         transforms.extract.type=org.apache.kafka.connect.transforms.ExtractField$Value\n\
         transforms.extract.field=line\n\
         predicates=isOther\n\
         predicates.isOther.type=org.apache.kafka.connect.transforms.predicates.TopicNameMatches\n\
         predicates.isOther.pattern=oth.*\n",
    )
    .unwrap();
    let other: Vec<String> = (0..50)
        .map(|i| {
            format!(r#"{{"schema":{{"type":"string","optional":false}},"payload":"other-{i}"}}"#)
        })
        .collect();
    produce(&kafka.bootstrap, "other", &other);

    let mut sluice = Sluice::standalone(
        dir.path(),
        &[worker, "source.properties", "sink.properties"],
    );
    let output = dir.path().join("out.txt");
    wait_for(
        "every number in the sink file",
        Duration::from_secs(60),
        || count_lines(&output) >= total,
    );
    let expected: Vec<String> = (0..total).map(|i| i.to_string()).collect();
    let text = std::fs::read_to_string(&output).unwrap();
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got, expected, "sink output:\n{}", sluice.output());

    // In Kafka: Kafka's JsonConverter envelope of the transformed struct, byte for byte.
    let records = read_all(&kafka.bootstrap, "routed-test");
    assert_eq!(records.len(), total);
    assert_eq!(
        String::from_utf8_lossy(records[7].2.as_deref().unwrap()),
        concat!(
            r#"{"schema":{"type":"struct","fields":["#,
            r#"{"type":"int32","optional":false,"field":"line"},"#,
            r#"{"type":"string","optional":true,"field":"src_topic"},"#,
            r#"{"type":"string","optional":true,"field":"origin"}],"optional":false},"#,
            r#""payload":{"line":7,"src_topic":"connect-test","origin":"file"}}"#
        )
    );
    assert!(
        read_all(&kafka.bootstrap, "connect-test").is_empty(),
        "every record was routed"
    );
    sluice.stop_cleanly();
}

/// A standalone connector file with a bad transform is refused before anything starts, each
/// problem located by its key.
#[test]
fn a_bad_transform_config_is_refused_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let worker = worker_properties(dir.path(), None);
    std::fs::write(
        dir.path().join("source.properties"),
        "name=bad\n\
         connector.class=FileStreamSource\n\
         file=test.txt\n\
         topic=t\n\
         transforms=ts\n\
         transforms.ts.type=org.apache.kafka.connect.transforms.TimestampConverter$Value\n\
         transforms.ts.target.type=string\n",
    )
    .unwrap();
    let (code, _, stderr) = run_sluice(dir.path(), &["standalone", worker, "source.properties"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("transforms.ts.format") && stderr.contains("requires format"),
        "{stderr}"
    );
}

/// AvroConverter end to end against `sluice dev-registry` in its own process: file lines
/// hoisted into a struct are written as Avro in the Schema Registry wire format under subject
/// `<topic>-value`, read back by a sink, and land in its file; the registry refuses an
/// incompatible schema with Confluent's 409; a record with an unknown schema id goes to the
/// sink's dead-letter queue with the id in its error header.
#[test]
fn avro_through_the_schema_registry_round_trips_and_unknown_ids_go_to_the_dead_letter_queue() {
    use std::io::{Read as _, Write as _};

    /// One HTTP/1.1 request to the registry: (status, JSON body).
    fn http(url: &str, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let authority = url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(authority).expect("connect to registry");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
             Content-Type: application/vnd.schemaregistry.v1+json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        // The answer is small and sent whole: with Connection: close it is not chunked.
        (
            status,
            serde_json::from_str(body.trim()).unwrap_or_default(),
        )
    }

    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["lines:1", "lines-dlq:1"]);
    let registry = Sluice::start(dir.path(), &["dev-registry", "--listen", "127.0.0.1:0"]);
    let mut url = String::new();
    wait_for(
        "dev-registry URL",
        Duration::from_secs(20),
        || match registry
            .output()
            .lines()
            .find_map(|l| l.strip_prefix("schema.registry.url=").map(str::to_string))
        {
            Some(u) => {
                url = u;
                true
            }
            None => false,
        },
    );
    let worker = worker_properties(dir.path(), Some(&kafka.bootstrap));
    let total = 200;
    append_lines_of(
        &dir.path().join("test.txt"),
        (0..total).map(|i| format!("line {i}")),
    );
    let avro = format!(
        "value.converter=io.confluent.connect.avro.AvroConverter\n\
         value.converter.schema.registry.url={url}\n"
    );
    std::fs::write(
        dir.path().join("source.properties"),
        format!(
            "name=avro-source\n\
             connector.class=FileStreamSource\n\
             file=test.txt\n\
             topic=lines\n\
             transforms=hoist\n\
             transforms.hoist.type=org.apache.kafka.connect.transforms.HoistField$Value\n\
             transforms.hoist.field=line\n\
             {avro}"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sink.properties"),
        format!(
            "name=avro-sink\n\
             connector.class=FileStreamSink\n\
             file=out.txt\n\
             topics=lines\n\
             transforms=extract\n\
             transforms.extract.type=org.apache.kafka.connect.transforms.ExtractField$Value\n\
             transforms.extract.field=line\n\
             errors.tolerance=all\n\
             errors.deadletterqueue.topic.name=lines-dlq\n\
             errors.deadletterqueue.topic.replication.factor=1\n\
             errors.deadletterqueue.context.headers.enable=true\n\
             {avro}"
        ),
    )
    .unwrap();
    let mut sluice = Sluice::standalone(
        dir.path(),
        &[worker, "source.properties", "sink.properties"],
    );
    let output = dir.path().join("out.txt");
    wait_for(
        "every line in the sink file",
        Duration::from_secs(60),
        || count_lines(&output) >= total,
    );
    let expected: Vec<String> = (0..total).map(|i| format!("line {i}")).collect();
    let text = std::fs::read_to_string(&output).unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        expected,
        "output:\n{}",
        sluice.output()
    );

    // The registry has the struct's schema under <topic>-value; Kafka has magic 0 + its id.
    let (status, latest) = http(&url, "GET", "/subjects/lines-value/versions/latest", None);
    assert_eq!(status, 200, "{latest}");
    let id = latest["id"].as_i64().expect("an id") as i32;
    assert_eq!(latest["version"], 1);
    let schema: serde_json::Value =
        serde_json::from_str(latest["schema"].as_str().unwrap()).unwrap();
    assert_eq!(
        schema,
        serde_json::json!({
            "type": "record",
            "name": "ConnectDefault",
            "namespace": "io.confluent.connect.avro",
            "fields": [{"name": "line", "type": "string"}]
        })
    );
    let records = read_all(&kafka.bootstrap, "lines");
    assert_eq!(records.len(), total);
    for (_, _, value, _) in &records {
        let value = value.as_deref().expect("a value");
        assert_eq!(value[0], 0, "magic byte");
        assert_eq!(value[1..5], id.to_be_bytes(), "schema id");
    }
    // Avro binary of {"line": "line 7"}: zigzag length 6 (= 12), then the text.
    assert_eq!(records[7].2.as_deref().unwrap()[5..], *b"\x0cline 7");

    // An incompatible version (the field becomes an int) is refused as Confluent does.
    let incompatible = serde_json::json!({
        "schema": serde_json::json!({
            "type": "record",
            "name": "ConnectDefault",
            "namespace": "io.confluent.connect.avro",
            "fields": [{"name": "line", "type": "int"}]
        })
        .to_string()
    });
    let (status, body) = http(
        &url,
        "POST",
        "/subjects/lines-value/versions",
        Some(&incompatible.to_string()),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error_code"], 409, "{body}");
    assert!(
        body["message"].as_str().unwrap_or_default().starts_with(
            "Schema being registered is incompatible with an earlier schema for subject \"lines-value\""
        ),
        "{body}"
    );
    let (status, body) = http(&url, "GET", "/schemas/ids/99", None);
    assert_eq!(
        (status, body["error_code"].as_i64()),
        (404, Some(40403)),
        "{body}"
    );

    // A record with an unknown schema id: the sink's error policy sends it to the DLQ.
    harness::cluster::produce_bytes(&kafka.bootstrap, "lines", &[&[0, 0, 0, 0, 99, 2, b'x']]);
    let mut dlq = Vec::new();
    wait_for("the record in the DLQ", Duration::from_secs(30), || {
        dlq = read_all(&kafka.bootstrap, "lines-dlq");
        !dlq.is_empty()
    });
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].2.as_deref(), Some(&[0u8, 0, 0, 0, 99, 2, b'x'][..]));
    let message = &dlq[0].3["__connect.errors.exception.message"];
    assert!(
        message.contains("schema id 99 not found in the schema registry at"),
        "{message}"
    );
    assert_eq!(count_lines(&output), total, "nothing more reached the sink");
    sluice.stop_cleanly();
}

/// A schema registry that is down when records arrive is waited for as errors.retry.* allow:
/// the records reach Kafka once it is up, and none goes to the dead-letter queue.
#[test]
fn a_schema_registry_that_comes_up_late_delays_records_and_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["late:1", "late-dlq:1"]);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let worker = worker_properties(dir.path(), Some(&kafka.bootstrap));
    let total = 50;
    append_lines_of(
        &dir.path().join("test.txt"),
        (0..total).map(|i| format!("line {i}")),
    );
    std::fs::write(
        dir.path().join("source.properties"),
        format!(
            "name=late\n\
             connector.class=FileStreamSource\n\
             file=test.txt\n\
             topic=late\n\
             transforms=hoist\n\
             transforms.hoist.type=org.apache.kafka.connect.transforms.HoistField$Value\n\
             transforms.hoist.field=line\n\
             value.converter=io.confluent.connect.avro.AvroConverter\n\
             value.converter.schema.registry.url={url}\n\
             errors.tolerance=all\n\
             errors.retry.timeout=60000\n\
             errors.retry.delay.max.ms=500\n\
             errors.deadletterqueue.topic.name=late-dlq\n"
        ),
    )
    .unwrap();
    let sluice = Sluice::standalone(dir.path(), &[worker, "source.properties"]);
    wait_for(
        "the worker to retry the unreachable registry",
        Duration::from_secs(30),
        || sluice.output().contains("retriable failure, retrying"),
    );
    let listen = format!("127.0.0.1:{port}");
    let _registry = Sluice::start(dir.path(), &["dev-registry", "--listen", &listen]);
    wait_for(
        "every record in Kafka once the registry is up",
        Duration::from_secs(60),
        || read_all(&kafka.bootstrap, "late").len() == total,
    );
    let records = read_all(&kafka.bootstrap, "late");
    assert!(
        records
            .iter()
            .all(|r| r.2.as_deref().is_some_and(|v| v.first() == Some(&0))),
        "every value in the wire format"
    );
    assert!(
        read_all(&kafka.bootstrap, "late-dlq").is_empty(),
        "nothing in the dead-letter queue"
    );
}
