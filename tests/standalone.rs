//! Standalone mode end to end: real `sluice` processes, connector child processes, and a
//! Kafka-protocol broker (embedded, or `sluice dev-kafka` in its own process).

mod harness;

use std::time::Duration;

use harness::*;

const SIGTERM: i32 = libc::SIGTERM;
const SIGKILL: i32 = libc::SIGKILL;

#[test]
fn file_to_kafka_to_file_100k_lines_on_embedded_kafka() {
    file_to_kafka_to_file(true);
}

/// The same with the sink's batches through the connector's socket, as for a connector that
/// does not take feature `sink.shared_memory`.
#[test]
fn file_to_kafka_to_file_100k_lines_without_shared_memory() {
    file_to_kafka_to_file(false);
}

/// 100,000 lines file -> Kafka -> file. With `shared`, the sink's connector process maps the
/// worker's shared memory (its /proc maps name the memfd) and every batch goes there; without,
/// every batch goes through the connector's socket.
fn file_to_kafka_to_file(shared: bool) {
    let dir = tempfile::tempdir().unwrap();
    let total = 100_000;
    append_lines(&dir.path().join("test.txt"), 0..total);
    let worker = worker_properties(dir.path(), None);
    let [source, sink] = file_connectors(dir.path());
    let env = [("SLUICE_SINK_SHARED_MEMORY", shared.to_string())];
    let mut sluice = Sluice::start_with_env(
        dir.path(),
        &[
            "standalone",
            "--progress-interval",
            "1",
            worker,
            source,
            sink,
        ],
        &env,
    );

    let output = dir.path().join("test.sink.txt");
    let mut mapped = None;
    wait_for(
        "100,000 lines in the sink file",
        Duration::from_secs(120),
        || {
            if let Some(pid) = sluice.connector_pid("local-file-sink") {
                if let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
                    mapped = Some(maps.contains("sluice-sink-batches"));
                }
            }
            count_lines(&output) >= total
        },
    );
    assert_eq!(mapped, Some(shared), "the sink's batches in shared memory");
    assert!(sluice
        .output()
        .contains("embedded Kafka listening at 127.0.0.1:"));
    sluice.stop_cleanly();
    assert_eq!(
        std::fs::read(dir.path().join("test.txt")).unwrap(),
        std::fs::read(&output).unwrap(),
        "the sink file must equal the input, in order"
    );
    let said = sluice.output();
    let ended = said
        .lines()
        .find(|l| l.contains("sink stream ended: "))
        .unwrap_or_else(|| panic!("no sink stream end in:\n{said}"));
    let count = |what: &str| -> u64 {
        let before = &ended[..ended.find(what).unwrap_or_else(|| panic!("{ended}"))];
        before.split_whitespace().last().unwrap().parse().unwrap()
    };
    let (in_shared, in_socket) = (
        count(" batches in shared memory"),
        count(" through the socket"),
    );
    if shared {
        assert!(in_shared > 0 && in_socket == 0, "{ended}");
    } else {
        assert!(in_shared == 0 && in_socket > 0, "{ended}");
    }
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
        // A built-in runs from its own executable beside `sluice`, not from `sluice` itself.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe.parent(), sluice_bin().parent(), "{exe:?}");
        assert_eq!(exe.file_name().unwrap(), "sluice-connector-file", "{exe:?}");
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
    // Each killed process was a task's own: the task restarted alone, with the policy's
    // backoff, and the connector's planning instance never failed.
    let output = sluice.output();
    assert!(
        output.contains("task 0 failed, restart 1 of 10 in "),
        "{output}"
    );
    assert!(!output.contains("connector failed, restart"), "{output}");
}

/// One failed task restarts alone, as in distributed mode: killing one of a connector's two
/// task processes leaves the other task's process (and the connector's planning instance)
/// running, and the killed task comes back in a process of its own.
#[test]
fn a_failed_task_restarts_alone() {
    let dir = tempfile::tempdir().unwrap();
    let worker = worker_properties(dir.path(), None);
    std::fs::write(
        dir.path().join("gen.properties"),
        "name=gen\nconnector.class=DatagenSource\ntasks.max=2\ntopic=gen\nrate=200\ncount=0\n",
    )
    .unwrap();
    let mut sluice = Sluice::standalone(dir.path(), &[worker, "gen.properties"]);
    let pids = |sluice: &Sluice| -> Vec<i32> {
        let needle = "running connector=gen pid=";
        sluice
            .output()
            .lines()
            .filter_map(|l| {
                let at = l.find(needle)? + needle.len();
                l[at..].split_whitespace().next()?.parse().ok()
            })
            .collect()
    };
    wait_for("both tasks running", Duration::from_secs(60), || {
        pids(&sluice).len() >= 2
    });
    let running = pids(&sluice);
    assert_eq!(running.len(), 2, "one process per task: {running:?}");
    // SAFETY: kill(2) on a task process the worker started.
    unsafe {
        libc::kill(running[0], SIGKILL);
    }
    wait_for("the killed task restarted", Duration::from_secs(30), || {
        pids(&sluice).len() == 3
    });
    assert!(process_alive(running[1]), "the other task kept its process");
    let output = sluice.output();
    assert_eq!(
        output.matches("failed, restart 1 of 10 in ").count(),
        1,
        "only the killed task restarted:\n{output}"
    );
    assert!(!output.contains("connector failed"), "{output}");
    sluice.stop_cleanly();
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

/// Kafka's `num.partitions` default: `sluice dev-kafka` (like the embedded Kafka) creates a
/// topic on first use with 1 partition, or `--default-partitions`; librdkafka's mock alone
/// would make 4.
#[test]
fn dev_kafka_creates_topics_on_first_use_with_one_partition() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let dir = tempfile::tempdir().unwrap();
    let partitions_of = |bootstrap: &str, topic: &str| -> usize {
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        producer
            .send(BaseRecord::<(), str>::to(topic).payload("x"))
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        metadata.topics()[0].partitions().len()
    };
    let kafka = DevKafka::start(dir.path(), &[]);
    assert_eq!(partitions_of(&kafka.bootstrap, "fresh"), 1);
    let kafka = DevKafka::start_with(dir.path(), &["made:2"], &["--default-partitions", "3"]);
    assert_eq!(partitions_of(&kafka.bootstrap, "fresh"), 3);
    assert_eq!(partitions_of(&kafka.bootstrap, "made"), 2);
}

/// Kafka's quickstart pipeline (test.txt → connect-test → test.sink.txt) in standalone mode
/// on a `sluice dev-kafka` broker, started with `flags` and waited for until its first 1,000
/// lines are in the sink file.
fn flowing_on_dev_kafka(dir: &std::path::Path, flags: &[&str]) -> (DevKafka, Sluice) {
    let kafka = DevKafka::start(dir, &["connect-test:1"]);
    let worker = worker_properties(dir, Some(&kafka.bootstrap));
    let [source, sink] = file_connectors(dir);
    let output = dir.join("test.sink.txt");
    append_lines(&dir.join("test.txt"), 0..1_000);
    let mut args = vec!["standalone", "--progress-interval", "1"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[worker, source, sink]);
    let sluice = Sluice::start(dir, &args);
    wait_for("the first lines", Duration::from_secs(60), || {
        count_lines(&output) >= 1_000
    });
    (kafka, sluice)
}

/// A broker that goes away while data flows is one WARN naming what it affects (not an ERROR
/// twice a second from every client), and one INFO when it is back; nothing is lost.
#[test]
fn a_broker_away_is_logged_once_and_its_return_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut kafka, mut sluice) = flowing_on_dev_kafka(dir.path(), &[]);
    let input = dir.path().join("test.txt");
    let output = dir.path().join("test.sink.txt");

    kafka.fault("broker-down 1");
    append_lines(&input, 1_000..2_000);
    wait_for("the outage to be noticed", Duration::from_secs(30), || {
        sluice.output().contains("Kafka unreachable")
    });
    // Several seconds of outage: librdkafka reports it many times over from each client.
    std::thread::sleep(Duration::from_secs(4));
    let during = sluice.output();
    assert_eq!(
        levels_of(&during, "Kafka unreachable"),
        ["WARN"],
        "one line for the outage:\n{during}"
    );
    let unreachable = during
        .lines()
        .find(|l| l.contains("Kafka unreachable"))
        .unwrap();
    assert!(
        unreachable.contains("affected: ") && unreachable.contains("local-file-"),
        "it names the clients affected: {unreachable}"
    );
    for noise in ["AllBrokersDown", "BrokerTransportFailure", "PartitionEOF"] {
        assert!(
            !during
                .lines()
                .any(|l| l.contains(noise) && !l.contains("Kafka unreachable")),
            "{noise} logged on its own:\n{during}"
        );
    }
    assert!(
        levels_of(&during, "librdkafka")
            .iter()
            .all(|l| l != "ERROR"),
        "no librdkafka ERROR lines:\n{during}"
    );

    kafka.fault("broker-up 1");
    wait_for("every line in the sink", Duration::from_secs(60), || {
        count_lines(&output) >= 2_000
    });
    wait_for("the return to be logged", Duration::from_secs(30), || {
        sluice.output().contains("Kafka reachable again")
    });
    assert_eq!(
        levels_of(&sluice.output(), "Kafka reachable again"),
        ["INFO"]
    );
    sluice.stop_cleanly();
    // Nothing lost, first occurrences in order. Duplicates are allowed: when the group
    // coordinator comes back late, the sink's session can time out and the records it wrote
    // but could not commit are delivered again (at-least-once; FileStreamSink without
    // offsets.file).
    let (missing, _duplicates, out_of_order) = verify(&input, &output);
    assert_eq!((missing, out_of_order), (0, 0));
}

/// SIGTERM with the broker gone: the tasks cannot hand their records to Kafka nor commit, so
/// the stop is bounded — each task by task.shutdown.graceful.timeout.ms, the process by
/// --shutdown-timeout — and the process exits non-zero within the limit, saying what was not
/// committed and that it will be replayed, with its connector processes gone.
#[test]
fn sigterm_with_the_broker_gone_exits_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut kafka, mut sluice) = flowing_on_dev_kafka(dir.path(), &["--shutdown-timeout", "8"]);
    let input = dir.path().join("test.txt");
    let connectors: Vec<i32> = ["local-file-source", "local-file-sink"]
        .iter()
        .map(|c| sluice.connector_pid(c).expect("connector pid logged"))
        .collect();

    kafka.kill();
    append_lines(&input, 1_000..2_000);
    wait_for("the outage to be noticed", Duration::from_secs(30), || {
        sluice.output().contains("Kafka unreachable")
    });
    let asked = std::time::Instant::now();
    sluice.signal(SIGTERM);
    let status = sluice.wait(Duration::from_secs(30));
    let took = asked.elapsed();
    let log = sluice.output();
    assert!(
        took < Duration::from_secs(11),
        "took {took:?} to exit:\n{log}"
    );
    assert_ne!(status.code(), Some(0), "{log}");
    // Each connector that could not commit says so, and where it resumes (the source, when
    // its producer still held records: its committed file position).
    assert!(
        log.contains("did not stop cleanly") && log.contains("it resumes from"),
        "what was not committed, and where it resumes:\n{log}"
    );
    if log.contains("task local-file-source-0 did not stop cleanly") {
        assert!(
            log.contains("it resumes from {\"filename\":\"test.txt\"} → {\"position\":"),
            "{log}"
        );
    }
    assert!(log.contains("at-least-once"), "{log}");
    for pid in connectors {
        wait_for("connector processes gone", Duration::from_secs(5), || {
            !process_alive(pid)
        });
    }
}

/// A connector process gets only the worker's variables `connector.env.allowlist` allows (a
/// secret in the worker's environment stays there), the limits `connector.limit.*` set, and
/// its own working directory under `connector.working.dir`;
/// with a limit too small for it to run, it fails naming why.
#[test]
fn connector_processes_get_only_allowed_variables_and_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kafka = DevKafka::start(d, &["isolated:1"]);
    let worker = worker_properties(d, Some(&kafka.bootstrap));
    let mut text = std::fs::read_to_string(d.join(worker)).unwrap();
    text.push_str(
        "connector.env.allowlist=PATH,HOME,SLUICE_LOG,ALLOWED_*\n\
         connector.limit.open.files=200\n\
         connector.limit.memory.bytes=4000000000\n\
         connector.working.dir=connectors\n\
         config.providers=env\n\
         config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider\n",
    );
    std::fs::write(d.join(worker), text).unwrap();
    let gen = connector_file(
        d,
        "gen",
        &[
            ("connector.class", "DatagenSource".into()),
            // Resolved by the worker: the connector never sees the variable.
            ("topic", "${env:WORKER_TOPIC}".into()),
            ("rate", "50".into()),
        ],
    );
    let sluice = Sluice::start_with_env(
        d,
        &["standalone", worker, &gen],
        &[
            ("WORKER_SECRET", "planted-worker-secret".into()),
            ("WORKER_TOPIC", "isolated".into()),
            ("ALLOWED_MODE", "on".into()),
        ],
    );
    wait_for(
        "records in the topic the provider named",
        Duration::from_secs(30),
        || harness::cluster::total_records(&kafka.bootstrap, "isolated") > 0,
    );
    let mut pid = 0;
    wait_for("the connector process", Duration::from_secs(30), || {
        pid = sluice.connector_pid("gen").unwrap_or(0);
        pid > 0
    });
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let names: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| {
            String::from_utf8_lossy(v)
                .split('=')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    for hidden in ["WORKER_SECRET", "WORKER_TOPIC"] {
        assert!(!names.contains(&hidden.to_string()), "{names:?}");
    }
    for name in ["PATH", "ALLOWED_MODE", "SLUICE_CONNECTOR_SOCKET"] {
        assert!(
            names.contains(&name.to_string()),
            "{name} missing: {names:?}"
        );
    }
    assert!(
        names.iter().all(
            |n| ["PATH", "HOME", "SLUICE_LOG", "ALLOWED_MODE"].contains(&n.as_str())
                || ["SLUICE_CONNECTOR_SOCKET", "SLUICE_PROTOCOL_VERSIONS"].contains(&n.as_str())
        ),
        "{names:?}"
    );
    // Its own working directory, private to the worker's user.
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(cwd, d.canonicalize().unwrap().join("connectors/gen"));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&cwd).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let limit = |name: &str| -> Vec<String> {
        let line = limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {limits}"));
        line[name.len()..]
            .split_whitespace()
            .take(2)
            .map(str::to_string)
            .collect()
    };
    assert_eq!(limit("Max open files"), ["200", "200"], "{limits}");
    assert_eq!(
        limit("Max address space"),
        ["4000000000", "4000000000"],
        "{limits}"
    );
    drop(sluice);

    // Too few file descriptors for the connector to serve its socket: standalone mode
    // validates connectors before it runs any, so it refuses to start, naming why.
    let mut text = std::fs::read_to_string(d.join(worker)).unwrap();
    text = text.replace(
        "connector.limit.open.files=200",
        "connector.limit.open.files=4",
    );
    std::fs::write(d.join(worker), text).unwrap();
    // Without the variable, the reference is refused, naming the key and the reference.
    let (code, _, err) = run_sluice(d, &["standalone", worker, &gen]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "gen.properties:3: topic: config provider: ${env:WORKER_TOPIC}: no environment variable WORKER_TOPIC"
        ),
        "{err}"
    );
    let text = std::fs::read_to_string(d.join(&gen)).unwrap();
    std::fs::write(
        d.join(&gen),
        text.replace("${env:WORKER_TOPIC}", "isolated"),
    )
    .unwrap();
    let (code, out, err) = run_sluice(d, &["standalone", worker, &gen]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("Too many open files"), "{err}");
}
