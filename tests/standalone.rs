//! Standalone mode end to end: real `sluice` processes, connector child processes, and a
//! Kafka-protocol broker (embedded, or `sluice dev-kafka` in its own process).

mod harness;

use std::time::Duration;

use harness::*;

const SIGTERM: i32 = libc::SIGTERM;
const SIGKILL: i32 = libc::SIGKILL;

#[test]
fn file_to_kafka_to_file_100k_lines_on_embedded_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let total = 100_000;
    append_lines(&dir.path().join("test.txt"), 0..total);
    let worker = worker_properties(dir.path(), None);
    let [source, sink] = file_connectors(dir.path());
    let mut sluice = Sluice::standalone(dir.path(), &[worker, source, sink]);

    let output = dir.path().join("test.sink.txt");
    wait_for(
        "100,000 lines in the sink file",
        Duration::from_secs(120),
        || count_lines(&output) >= total,
    );
    assert!(sluice
        .output()
        .contains("embedded Kafka listening at 127.0.0.1:"));
    sluice.stop_cleanly();
    assert_eq!(
        std::fs::read(dir.path().join("test.txt")).unwrap(),
        std::fs::read(&output).unwrap(),
        "the sink file must equal the input, in order"
    );
}

/// Stops standalone mid-stream with `signal`, restarts it, and returns (missing, duplicates,
/// out of order) once the sink has everything.
fn stop_mid_stream_and_resume(signal: i32) -> (usize, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["connect-test:1"]);
    let worker = worker_properties(dir.path(), Some(&kafka.bootstrap));
    let [source, sink] = file_connectors(dir.path());
    let input = dir.path().join("test.txt");
    let output = dir.path().join("test.sink.txt");
    let total = 60_000;
    let writer = grow_file(input.clone(), total, 500, Duration::from_millis(10));

    let mut first = Sluice::standalone(dir.path(), &[worker, source, sink]);
    wait_for(
        "the pipeline to be mid-stream",
        Duration::from_secs(60),
        || count_lines(&output) >= 5_000,
    );
    first.signal(signal);
    let status = first.wait(Duration::from_secs(60));
    if signal == SIGTERM {
        assert_eq!(status.code(), Some(0), "output:\n{}", first.output());
    }
    let lines_at_stop = count_lines(&output);
    assert!(lines_at_stop < total, "the stop must come mid-stream");

    let mut second = Sluice::standalone(dir.path(), &[worker, source, sink]);
    writer.join().unwrap();
    wait_for(
        "every line in the sink file",
        Duration::from_secs(120),
        || {
            let (missing, _, _) = verify(&input, &output);
            missing == 0
        },
    );
    // Give a duplicate, if any were coming, the chance to land before counting.
    second.stop_cleanly();
    drop(kafka);
    verify(&input, &output)
}

#[test]
fn sigterm_mid_stream_then_restart_loses_nothing_and_duplicates_nothing() {
    let (missing, duplicates, out_of_order) = stop_mid_stream_and_resume(SIGTERM);
    assert_eq!((missing, duplicates, out_of_order), (0, 0, 0));
}

#[test]
fn sigkill_mid_stream_then_restart_loses_nothing() {
    let (missing, duplicates, out_of_order) = stop_mid_stream_and_resume(SIGKILL);
    eprintln!("after SIGKILL: {duplicates} duplicated lines re-delivered");
    assert_eq!(missing, 0, "no line may be lost");
    assert_eq!(
        out_of_order, 0,
        "first occurrences must keep the input order"
    );
}

#[test]
fn killed_connector_processes_are_restarted_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let worker = worker_properties(dir.path(), None);
    let [source, sink] = file_connectors(dir.path());
    let input = dir.path().join("test.txt");
    let output = dir.path().join("test.sink.txt");
    let total = 40_000;
    let writer = grow_file(input.clone(), total, 200, Duration::from_millis(10));
    let mut sluice = Sluice::standalone(dir.path(), &[worker, source, sink]);

    for (connector, after) in [("local-file-source", 3_000), ("local-file-sink", 10_000)] {
        let mut pid = None;
        wait_for(
            "the connector to be running mid-stream",
            Duration::from_secs(60),
            || {
                pid = sluice.connector_pid(connector);
                pid.is_some() && count_lines(&output) >= after
            },
        );
        let pid = pid.unwrap();
        // SAFETY: kill(2) on the connector process the worker started.
        unsafe {
            libc::kill(pid, SIGKILL);
        }
        wait_for(
            "the worker to restart the connector",
            Duration::from_secs(30),
            || sluice.connector_pid(connector).is_some_and(|p| p != pid),
        );
    }
    writer.join().unwrap();
    wait_for(
        "every line in the sink file",
        Duration::from_secs(120),
        || verify(&input, &output).0 == 0,
    );
    sluice.stop_cleanly();
    let (missing, duplicates, out_of_order) = verify(&input, &output);
    eprintln!("after killing connectors: {duplicates} duplicated lines");
    assert_eq!((missing, out_of_order), (0, 0));
    assert!(sluice
        .output()
        .contains("connector failed, restart 1 of 10 in "));
}

/// Runs standalone on files that must be refused; returns (exit code, output).
fn refused(files: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let mut sluice = Sluice::start(dir.path(), &[&["standalone"], args].concat());
    let status = sluice.wait(Duration::from_secs(30));
    (status.code(), sluice.output())
}

#[test]
fn bad_configuration_files_give_located_errors_and_exit_code_2() {
    let worker = ("w.properties", "offset.flush.interval.ms=1000\n");
    let good_sink = (
        "sink.properties",
        "name=s\nconnector.class=FileStreamSink\ntopics=t\nfile=out.txt\n",
    );
    // (files to write, files on the command line, expected error text)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("w.properties", "a=1\nb=\\uZZZZ\n"), good_sink],
            vec!["w.properties", "sink.properties"],
            "w.properties:2: malformed properties",
        ),
        (
            vec![worker, ("c.json", "{\"name\": \"x\",\n \"config\": {\n \"file\": }\n}")],
            vec!["w.properties", "c.json"],
            "c.json:3: malformed JSON",
        ),
        (
            vec![worker, ("c.properties", "name=x\nconnector.class=com.example.NoSuchConnector\n")],
            vec!["w.properties", "c.properties"],
            "c.properties:2: connector.class: unknown connector class \"com.example.NoSuchConnector\"",
        ),
        (
            vec![worker, ("c.properties", "name=x\nconnector.class=FileStreamSource\nfile=in.txt\n")],
            vec!["w.properties", "c.properties"],
            "c.properties: topic: missing required configuration \"topic\"",
        ),
        (
            vec![worker, ("c.properties", "connector.class=FileStreamSource\nfile=in.txt\ntopic=t\n")],
            vec!["w.properties", "c.properties"],
            "c.properties: name: missing required configuration",
        ),
        (
            vec![worker, ("c.properties", "name=x\nconnector.class=FileStreamSource\ntasks.max=many\n")],
            vec!["w.properties", "c.properties"],
            "c.properties:3: tasks.max: invalid value \"many\"",
        ),
        (
            vec![worker, ("c.properties", "name=x\nconnector.class=FileStreamSource\nfile=in\ntopic=t\nbatch.size=-5\n")],
            vec!["w.properties", "c.properties"],
            "c.properties:5: batch.size: invalid value -5",
        ),
        (
            vec![worker, ("c.properties", "name=x\nconnector.class=FileStreamSink\nfile=out\n")],
            vec!["w.properties", "c.properties"],
            "c.properties: topics: a sink connector needs topics or topics.regex",
        ),
        (
            vec![("w.properties", "value.converter=com.example.Nope\n"), good_sink],
            vec!["w.properties", "sink.properties"],
            "w.properties:1: value.converter: unknown converter class",
        ),
        (
            vec![("w.properties", "bootstrap.server=localhost:9092\n"), good_sink],
            vec!["w.properties", "sink.properties"],
            "w.properties:1: bootstrap.server: unknown worker configuration key",
        ),
        (
            vec![worker],
            vec!["w.properties", "missing.properties"],
            "missing.properties: cannot read file",
        ),
    ];
    for (files, args, expected) in cases {
        let (code, output) = refused(&files, &args);
        assert_eq!(
            code,
            Some(2),
            "expected exit code 2 for {expected:?}; output:\n{output}"
        );
        assert!(
            output.contains(&format!("error: {expected}")),
            "expected {expected:?} in:\n{output}"
        );
        assert!(!output.contains("panicked"), "{output}");
    }
}
