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
    sluice.signal(libc::SIGTERM);
    let status = sluice.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "output:\n{}", sluice.output());
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

fn append_lines_of(path: &std::path::Path, lines: impl Iterator<Item = String>) {
    let mut text = String::new();
    for l in lines {
        text.push_str(&l);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}
