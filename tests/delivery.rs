//! Delivery guarantees and failure handling in distributed mode, counted: datagen's sequence
//! numbers read back from Kafka by the verifier, processes killed with SIGKILL, restarts
//! observed through the API and the worker's log.

mod harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use harness::cluster::*;
use harness::{start_worker, wait_for, Controller, DevKafka};
use sluice_proto::api::v1 as api;

/// The controller's --worker-timeout in these tests.
const WORKER_TIMEOUT: f64 = 2.0;

/// Parses a `Duration` printed with `{:?}` ("312.5ms", "1.25s", "900µs").
fn parse_debug_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => number,
        "ms" => number / 1e3,
        "µs" => number / 1e6,
        "ns" => number / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

#[test]
fn a_task_that_keeps_crashing_is_restarted_with_growing_delays_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["crashy:1"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", WORKER_TIMEOUT);
    let api = Api::new(&controller.address);
    let worker = start_worker(dir.path(), "w1", &controller.url(), &kafka.bootstrap);
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);

    let crash = dir.path().join("crash-now");
    std::fs::write(&crash, "").unwrap();
    let mut config = datagen("crashy", "1", "200");
    config.extend([
        ("fault.crash.file", crash.to_str().unwrap().to_string()),
        ("restart.max.attempts", "3".into()),
        ("restart.backoff.initial.ms", "300".into()),
        ("restart.backoff.max.ms", "10000".into()),
    ]);
    api.create("gen", &pairs(&config), api::TargetState::Running);

    // Every state the task passes through, in order, without repeats.
    let mut seen: Vec<api::State> = Vec::new();
    let mut trace = String::new();
    wait_for("the crashing task FAILED", TIMEOUT, || {
        let Ok(status) = api.status("gen") else {
            return false;
        };
        let Some(task) = status.tasks.first() else {
            return false;
        };
        if seen.last() != Some(&task.state()) {
            seen.push(task.state());
        }
        trace = task.trace.clone();
        task.state() == api::State::Failed
    });
    assert!(
        trace.contains("restart limit (3) reached") && trace.contains("70"),
        "{trace}"
    );
    assert!(
        seen.contains(&api::State::Restarting),
        "RESTARTING between the crashes: {seen:?}"
    );
    // The worker logged each restart with its delay: three, each longer than the last.
    let log = worker.output();
    let delays: Vec<Duration> = log
        .lines()
        .filter_map(|line| {
            let at = line.find("task 0 failed, restart ")?;
            let rest = &line[at..];
            let delay = rest.split(" in ").nth(1)?.split(':').next()?;
            parse_debug_duration(delay)
        })
        .collect();
    assert_eq!(delays.len(), 3, "restart delays {delays:?} in\n{log}");
    assert!(
        delays.windows(2).all(|w| w[1] > w[0]),
        "delays must grow: {delays:?}"
    );
    assert_eq!(
        log.matches("crashing as asked").count(),
        4,
        "one first run and three restarts"
    );

    // It stays FAILED: no fifth run.
    let failed_at = Instant::now();
    wait_for("a pause past the longest delay", TIMEOUT, || {
        failed_at.elapsed() > Duration::from_secs(2)
    });
    assert_eq!(worker.output().matches("crashing as asked").count(), 4);
    assert_eq!(tasks(&api, "gen")[&0].0, api::State::Failed);

    // A manual restart, once the fault is gone, recovers it with a fresh count.
    std::fs::remove_file(&crash).unwrap();
    let (code, _, err) =
        connectors_cli(dir.path(), &controller.url(), &["restart-task", "gen", "0"]);
    assert_eq!(code, 0, "{err}");
    wait_for("the task RUNNING again", TIMEOUT, || {
        tasks(&api, "gen")
            .get(&0)
            .is_some_and(|t| t.0 == api::State::Running)
    });
    wait_for("records flowing after the manual restart", TIMEOUT, || {
        total_records(&kafka.bootstrap, "crashy") > 200
    });

    // A hung connector (SIGSTOP: alive, silent) misses its heartbeats, is killed and
    // restarted.
    let hung = worker.connector_pid("gen").expect("the task's process");
    // SAFETY: kill(2) on the task process our worker started, with a valid signal.
    unsafe { libc::kill(hung, libc::SIGSTOP) };
    wait_for("the hung task process replaced", TIMEOUT, || {
        worker.connector_pid("gen").is_some_and(|p| p != hung)
    });
    assert!(worker
        .output()
        .contains("stopped answering heartbeats; killing it"));
    let at = total_records(&kafka.bootstrap, "crashy");
    wait_for("records flowing after the hang", TIMEOUT, || {
        total_records(&kafka.bootstrap, "crashy") > at + 100
    });
    let v = verify(&kafka.bootstrap, "crashy", false, None);
    assert_eq!((v.lost, v.tasks), (0, 1), "{v:?}");
}

/// A small deterministic generator for the kill schedule; the seed is printed so that a
/// failing schedule can be replayed with SLUICE_TEST_SEED.
struct Schedule(u64);

impl Schedule {
    fn new() -> Schedule {
        let seed = std::env::var("SLUICE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("kill schedule seed: {seed} (SLUICE_TEST_SEED={seed} replays it)");
        Schedule(seed | 1)
    }

    /// A pause between `min` and `max` milliseconds.
    fn pause(&mut self, min: u64, max: u64) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(min + self.0 % (max - min + 1))
    }

    /// Sleeps for a random pause: the "random point" of the stream where the next kill lands.
    fn wait(&mut self, min: u64, max: u64) {
        let pause = self.pause(min, max);
        let start = Instant::now();
        wait_for("the next point of the schedule", pause * 2, || {
            start.elapsed() >= pause
        });
    }
}

/// Records of transactions the workers aborted, or committed as their lease ran out (frozen
/// inside the commit), by task, as their logs tell.
fn aborted_records(log: &str) -> BTreeMap<u32, usize> {
    let field = |line: &str, name: &str| -> Option<usize> {
        let at = line.find(&format!(" {name}="))? + name.len() + 2;
        line[at..].split(' ').next()?.parse().ok()
    };
    let mut aborted = BTreeMap::new();
    for line in log.lines().filter(|l| {
        l.contains("aborting the open transaction")
            || l.contains("committed a transaction while this worker's lease ran out")
    }) {
        if let (Some(task), Some(records)) = (field(line, "task"), field(line, "records")) {
            *aborted.entry(task as u32).or_default() += records;
        }
    }
    aborted
}

/// A 3-task datagen stream of `count` records through two workers while a connector process,
/// a worker (`kill_worker`) and the controller are SIGKILLed at random points, and, with
/// exactly-once, a worker is frozen long enough for its tasks to move and then thawed: a
/// zombie that must not commit. Returns what the verifier read back once every record
/// arrived, and the records of the transactions the workers aborted, by task.
fn kill_everything_during_a_stream(
    exactly_once: bool,
    kill_worker: bool,
) -> (Verified, BTreeMap<u32, usize>) {
    const COUNT: u64 = 9000;
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["stream:3"]);
    let listen = format!("127.0.0.1:{}", harness::free_port());
    let mut controller = Controller::start(dir.path(), &listen, WORKER_TIMEOUT);
    let api = Api::new(&controller.address);
    let extra = if exactly_once {
        "exactly.once.source.support=enabled\n"
    } else {
        ""
    };
    let start = |id: &str| {
        harness::start_worker_with(dir.path(), id, &controller.url(), &kafka.bootstrap, extra)
    };
    let mut workers = [start("w1"), start("w2")];
    wait_for("two workers to join", TIMEOUT, || api.live_workers() == 2);

    let mut config = datagen("stream", "3", "600");
    config.push(("count", COUNT.to_string()));
    if exactly_once {
        config.push(("exactly.once.support", "required".into()));
    }
    api.create("gen", &pairs(&config), api::TargetState::Running);
    let running = |api: &Api| {
        let t = tasks(api, "gen");
        t.len() == 3 && t.values().all(|(s, _)| *s == api::State::Running)
    };
    wait_for("3 tasks RUNNING", TIMEOUT, || running(&api));
    let mut schedule = Schedule::new();

    // A task's connector process.
    schedule.wait(300, 1500);
    let victim = workers
        .iter()
        .find_map(|w| w.connector_pid("gen"))
        .expect("a task process in a worker's log");
    eprintln!("SIGKILL connector process {victim}");
    // SAFETY: kill(2) on a pid read from our worker's log, with a valid signal.
    unsafe { libc::kill(victim, libc::SIGKILL) };

    // A worker, restarted under the same id.
    if kill_worker {
        schedule.wait(300, 1500);
        eprintln!("SIGKILL worker w1");
        workers[0].signal(libc::SIGKILL);
        workers[0].wait(TIMEOUT);
        schedule.wait(100, 1000);
        workers[0] = start("w1");
    }

    // The controller, restarted on the same address and store.
    schedule.wait(300, 1500);
    eprintln!("SIGKILL the controller");
    controller.process.signal(libc::SIGKILL);
    controller.process.wait(TIMEOUT);
    schedule.wait(100, 1000);
    controller = Controller::start(dir.path(), &listen, WORKER_TIMEOUT);
    wait_for("both workers back", TIMEOUT, || api.live_workers() == 2);

    if exactly_once {
        // A zombie: w2 freezes, its tasks move to w1 (whose producers fence w2's), then w2
        // thaws and tries to go on.
        wait_for("3 tasks RUNNING", TIMEOUT, || running(&api));
        let on_w2 = |api: &Api| {
            tasks(api, "gen")
                .values()
                .filter(|(_, w)| w == "w2")
                .count()
        };
        assert!(on_w2(&api) > 0, "3 tasks over 2 workers: w2 runs one");
        {
            eprintln!("SIGSTOP worker w2");
            workers[1].signal(libc::SIGSTOP);
            wait_for("w2's tasks RUNNING on w1", TIMEOUT, || {
                on_w2(&api) == 0 && running(&api)
            });
            schedule.wait(200, 800);
            eprintln!("SIGCONT worker w2");
            workers[1].signal(libc::SIGCONT);
            // It stops its tasks for its lease ran out (or, if a commit came first, the
            // commit refuses: the lease lapsed).
            wait_for("the zombie to refuse to commit", TIMEOUT, || {
                let said = workers[1].output();
                said.contains("lease on its assignment lapsed")
                    || said.contains("this worker's lease ran out, so they cannot commit")
            });
        }
    }

    let expected = datagen_counts(COUNT, 3);
    let mut last = Verified::default();
    wait_for("every record in Kafka", Duration::from_secs(90), || {
        last = verify(&kafka.bootstrap, "stream", exactly_once, Some(&expected));
        last.unique as u64 == COUNT
    });
    if last.lost + last.duplicates > 0 {
        // What the workers said about transactions and leases, for the failure's story.
        for (n, worker) in workers.iter().enumerate() {
            for line in worker
                .output()
                .lines()
                .filter(|l| l.contains("lapsed") || l.contains("abort") || l.contains("rejoin"))
            {
                eprintln!("w{}: {line}", n + 1);
            }
        }
    }
    // Whatever is still running cannot add anything: the stream is complete.
    eprintln!(
        "verifier ({}): {} records read, {} lost, {} duplicated",
        if exactly_once {
            "exactly-once, read_committed"
        } else {
            "at-least-once"
        },
        last.records,
        last.lost,
        last.duplicates
    );
    let aborted = workers.iter().map(|w| aborted_records(&w.output())).fold(
        BTreeMap::new(),
        |mut all, one| {
            for (task, records) in one {
                *all.entry(task).or_default() += records;
            }
            all
        },
    );
    drop(controller);
    (last, aborted)
}

#[test]
fn at_least_once_loses_nothing_when_any_process_is_killed() {
    let (v, _) = kill_everything_during_a_stream(false, true);
    assert_eq!((v.lost, v.tasks), (0, 3), "{v:?}");
}

/// Connector process and controller SIGKILLed, a zombie worker thawed after its tasks moved:
/// nothing lost, nothing committed twice.
///
/// librdkafka's mock cluster, this suite's broker, writes no transaction markers (its EndTxn
/// handler only checks the producer id, its Fetch handler lists no aborted transactions):
/// records of an aborted transaction stay visible to `read_committed` readers, where Kafka
/// hides them.
/// A zombie frozen in the middle of a transaction has usually delivered some of its records
/// already; when it thaws it finds its lease lapsed and aborts, and those records show up
/// here as duplicates that Kafka would discard. Nor does the mock fence: a zombie frozen
/// inside the commit call itself commits when it thaws, which Kafka would refuse (the worker
/// says so). So every duplicate must lie in a task where a worker aborted or committed late,
/// and there can be no more of them than those transactions' records; a zombie that went on
/// committing, or a restart that replayed committed records, fails this. (A SIGKILLed worker
/// is left out: it aborts without a word.)
#[test]
fn exactly_once_loses_and_duplicates_nothing_when_processes_are_killed() {
    let (v, aborted) = kill_everything_during_a_stream(true, false);
    assert_eq!((v.lost, v.tasks), (0, 3), "{v:?}");
    for (task, count) in &v.duplicates_by_task {
        let allowed = aborted.get(task).copied().unwrap_or(0);
        assert!(
            *count <= allowed,
            "task {task}: {count} records twice, but only {allowed} in aborted or late transactions \
             ({v:?}, aborted {aborted:?})"
        );
    }
}

/// A controller SIGKILLed and back within the lease costs exactly-once tasks nothing: the
/// worker rejoins before its lease runs out, so its tasks keep their processes and open
/// transactions, nothing is aborted and nothing replayed.
#[test]
fn a_controller_restart_within_the_lease_leaves_exactly_once_tasks_running() {
    const COUNT: u64 = 4000;
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["steady:2"]);
    let listen = format!("127.0.0.1:{}", harness::free_port());
    // A lease of 7.5 s: the restart below fits well inside it.
    let mut controller = Controller::start(dir.path(), &listen, 10.0);
    let api = Api::new(&controller.address);
    let worker = harness::start_worker_with(
        dir.path(),
        "w1",
        &controller.url(),
        &kafka.bootstrap,
        "exactly.once.source.support=enabled\n",
    );
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);
    let mut config = datagen("steady", "2", "800");
    config.extend([
        ("count", COUNT.to_string()),
        ("exactly.once.support", "required".into()),
    ]);
    api.create("gen", &pairs(&config), api::TargetState::Running);
    wait_for("2 tasks RUNNING", TIMEOUT, || {
        let t = tasks(&api, "gen");
        t.len() == 2 && t.values().all(|(s, _)| *s == api::State::Running)
    });
    wait_for("records flowing", TIMEOUT, || {
        total_records(&kafka.bootstrap, "steady") > 500
    });
    let launches = |w: &harness::Sluice| w.output().matches("running connector=gen pid=").count();
    let before = launches(&worker);

    controller.process.signal(libc::SIGKILL);
    controller.process.wait(TIMEOUT);
    controller = Controller::start(dir.path(), &listen, 10.0);
    wait_for("the worker to rejoin", TIMEOUT, || {
        worker.output().contains("rejoined")
    });

    let expected = datagen_counts(COUNT, 2);
    let mut v = Verified::default();
    wait_for("every record in Kafka", Duration::from_secs(60), || {
        v = verify(&kafka.bootstrap, "steady", true, Some(&expected));
        v.unique as u64 == COUNT
    });
    assert_eq!((v.lost, v.duplicates), (0, 0), "{v:?}");
    let log = worker.output();
    assert_eq!(
        launches(&worker),
        before,
        "no connector process restarted:\n{log}"
    );
    assert!(
        !log.contains("lapsed") && !log.contains("aborting the open transaction"),
        "{log}"
    );
    drop(controller);
}

#[test]
fn poison_records_go_to_the_dead_letter_queue_or_fail_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["raw:1", "bytes:1"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", WORKER_TIMEOUT);
    let api = Api::new(&controller.address);
    let worker = start_worker(dir.path(), "w1", &controller.url(), &kafka.bootstrap);
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);

    // Error-handling keys are checked when the connector is created.
    let mut client = api.connectors().unwrap();
    let bad = api::CreateConnectorRequest {
        name: "bad".into(),
        config: [
            ("connector.class", "FileStreamSink"),
            ("topics", "raw"),
            ("file", "x.txt"),
            ("errors.tolerance", "some"),
            ("restart.max.attempts", "-5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        initial_state: 0,
    };
    let e = api
        .runtime
        .block_on(client.create_connector(bad))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("errors.tolerance") && e.message().contains("restart.max.attempts"),
        "{}",
        e.message()
    );

    // Sink: every 10th value is not JSON.
    let values: Vec<String> = (0..100)
        .map(|i| {
            if i % 10 == 9 {
                format!("not json {{{i}")
            } else {
                format!("{{\"n\":{i}}}")
            }
        })
        .collect();
    produce(&kafka.bootstrap, "raw", &values);
    let out = dir.path().join("sink.txt");
    let json = "org.apache.kafka.connect.json.JsonConverter";
    let sink = |file: &std::path::Path, tolerance: &str| {
        vec![
            ("connector.class", "FileStreamSink".to_string()),
            ("topics", "raw".into()),
            ("file", file.to_str().unwrap().into()),
            ("value.converter", json.into()),
            ("value.converter.schemas.enable", "false".into()),
            ("errors.log.enable", "true".into()),
        ]
        .into_iter()
        .chain(error_policy(tolerance, "sink-dlq"))
        .collect::<Vec<_>>()
    };
    api.create(
        "tolerant",
        &pairs(&sink(&out, "all")),
        api::TargetState::Running,
    );
    wait_for("90 good lines in the sink file", TIMEOUT, || {
        harness::count_lines(&out) == 90
    });
    let mut dlq = Vec::new();
    wait_for("10 records in the dead-letter queue", TIMEOUT, || {
        dlq = read_all(&kafka.bootstrap, "sink-dlq");
        dlq.len() == 10
    });
    // The dead-letter topic may have several partitions: in the order of the original offsets.
    dlq.sort_by_key(|(_, _, _, h)| {
        h.get("__connect.errors.offset")
            .and_then(|o| o.parse::<i64>().ok())
    });
    for (n, (_, _, value, headers)) in dlq.iter().enumerate() {
        let i = n * 10 + 9;
        assert_eq!(
            value.as_deref(),
            Some(values[i].as_bytes()),
            "the original bytes"
        );
        let h = |k: &str| headers.get(k).map(String::as_str);
        assert_eq!(h("__connect.errors.topic"), Some("raw"));
        assert_eq!(h("__connect.errors.partition"), Some("0"));
        assert_eq!(h("__connect.errors.offset"), Some(i.to_string().as_str()));
        assert_eq!(h("__connect.errors.connector.name"), Some("tolerant"));
        assert_eq!(h("__connect.errors.task.id"), Some("0"));
        assert_eq!(h("__connect.errors.stage"), Some("VALUE_CONVERTER"));
        assert_eq!(h("__connect.errors.class.name"), Some(json));
        assert_eq!(
            h("__connect.errors.exception.class.name"),
            Some("org.apache.kafka.connect.errors.DataException")
        );
        assert!(h("__connect.errors.exception.message").is_some_and(|m| !m.is_empty()));
    }
    assert!(worker.output().contains("error in stage VALUE_CONVERTER"));
    // The stream goes on past them.
    produce(&kafka.bootstrap, "raw", &["{\"n\":100}".to_string()]);
    wait_for("the next record in the sink file", TIMEOUT, || {
        harness::count_lines(&out) == 91
    });

    // errors.tolerance=none: the first poison record fails the task for good, named.
    let strict = dir.path().join("strict.txt");
    api.create(
        "strict",
        &pairs(&sink(&strict, "none")),
        api::TargetState::Running,
    );
    let mut trace = String::new();
    wait_for("the strict sink's task FAILED", TIMEOUT, || {
        let t = api
            .status("strict")
            .ok()
            .and_then(|s| s.tasks.first().cloned());
        trace = t.as_ref().map(|t| t.trace.clone()).unwrap_or_default();
        t.is_some_and(|t| t.state() == api::State::Failed)
    });
    assert!(
        trace.contains("VALUE_CONVERTER failed for record raw-0@9 and errors.tolerance=none")
            && trace.contains("a restart cannot fix"),
        "{trace}"
    );
    assert!(
        harness::count_lines(&strict) <= 9,
        "nothing past the poison record"
    );

    // Source: every 10th datagen value is invalid for its schema; JsonConverter refuses it.
    let source = |topic: &str, tolerance: &str| {
        let mut c = datagen(topic, "1", "0");
        c.retain(|(k, _)| *k != "value.converter");
        c.extend([
            ("value.converter", json.to_string()),
            ("value.converter.schemas.enable", "false".into()),
            ("count", "100".into()),
            ("fault.invalid.every", "10".into()),
        ]);
        c.extend(error_policy(tolerance, &format!("{topic}-dlq")));
        c
    };
    api.create(
        "gen",
        &pairs(&source("generated", "all")),
        api::TargetState::Running,
    );
    wait_for("90 records in the topic", TIMEOUT, || {
        total_records(&kafka.bootstrap, "generated") == 90
    });
    let mut dlq = Vec::new();
    wait_for(
        "10 records in the source's dead-letter queue",
        TIMEOUT,
        || {
            dlq = read_all(&kafka.bootstrap, "generated-dlq");
            dlq.len() == 10
        },
    );
    let headers = &dlq[0].3;
    assert_eq!(
        headers.get("__connect.errors.topic").map(String::as_str),
        Some("generated")
    );
    assert_eq!(
        headers.get("__connect.errors.stage").map(String::as_str),
        Some("VALUE_CONVERTER")
    );
    assert!(
        !headers.contains_key("__connect.errors.offset"),
        "a source record has no offset yet"
    );
    assert!(
        headers["__connect.errors.exception.message"].contains("required"),
        "{headers:?}"
    );

    api.create(
        "strict-gen",
        &pairs(&source("strict-generated", "none")),
        api::TargetState::Running,
    );
    wait_for("the strict source's task FAILED", TIMEOUT, || {
        api.status("strict-gen")
            .ok()
            .and_then(|s| s.tasks.first().cloned())
            .is_some_and(|t| {
                t.state() == api::State::Failed
                    && t.trace
                        .contains("VALUE_CONVERTER failed for a record for topic strict-generated")
            })
    });

    // Connectors report single bad records through the protocol: a line of the file source
    // that is not UTF-8, a value the file sink cannot write as a line.
    let input = dir.path().join("mixed.txt");
    std::fs::write(&input, b"a\nb\n\xff\xfe\nc\n").unwrap();
    let file_source = [
        ("connector.class", "FileStreamSource"),
        ("file", input.to_str().unwrap()),
        ("topic", "lines"),
        (
            "value.converter",
            "org.apache.kafka.connect.storage.StringConverter",
        ),
        ("errors.tolerance", "all"),
        ("errors.deadletterqueue.topic.name", "lines-dlq"),
        ("errors.deadletterqueue.context.headers.enable", "true"),
    ];
    api.create("lines", &file_source, api::TargetState::Running);
    wait_for("3 good lines in the topic", TIMEOUT, || {
        total_records(&kafka.bootstrap, "lines") == 3
    });
    let mut dlq = Vec::new();
    wait_for("the bad line in the dead-letter queue", TIMEOUT, || {
        dlq = read_all(&kafka.bootstrap, "lines-dlq");
        !dlq.is_empty()
    });
    assert_eq!(dlq.len(), 1);
    assert_eq!(
        dlq[0].2.as_deref(),
        Some(&b"\xff\xfe"[..]),
        "the line's bytes as they were"
    );
    let h = &dlq[0].3;
    assert_eq!(h["__connect.errors.stage"], "TASK_POLL");
    assert_eq!(h["__connect.errors.class.name"], "FileStreamSource");
    assert_eq!(
        h["__connect.errors.exception.class.name"],
        "org.apache.kafka.connect.errors.ConnectException"
    );
    assert!(
        h["__connect.errors.exception.message"].contains("not valid UTF-8"),
        "{h:?}"
    );

    produce_bytes(&kafka.bootstrap, "bytes", &[b"x", b"\xc3\x28", b"y"]);
    let bytes_out = dir.path().join("bytes.txt");
    let file_sink = |file: &std::path::Path, tolerance: &str| {
        vec![
            ("connector.class", "FileStreamSink".to_string()),
            ("topics", "bytes".into()),
            ("file", file.to_str().unwrap().into()),
            (
                "value.converter",
                "org.apache.kafka.connect.converters.ByteArrayConverter".into(),
            ),
            ("errors.tolerance", tolerance.into()),
            ("errors.deadletterqueue.topic.name", "bytes-dlq".into()),
            (
                "errors.deadletterqueue.context.headers.enable",
                "true".into(),
            ),
        ]
    };
    api.create(
        "bytes",
        &pairs(&file_sink(&bytes_out, "all")),
        api::TargetState::Running,
    );
    wait_for("2 lines in the file", TIMEOUT, || {
        harness::count_lines(&bytes_out) == 2
    });
    wait_for("the bad value in the dead-letter queue", TIMEOUT, || {
        dlq = read_all(&kafka.bootstrap, "bytes-dlq");
        !dlq.is_empty()
    });
    assert_eq!(dlq.len(), 1);
    assert_eq!(
        dlq[0].2.as_deref(),
        Some(&b"\xc3\x28"[..]),
        "the original record, read back"
    );
    let h = &dlq[0].3;
    assert_eq!(h["__connect.errors.stage"], "TASK_PUT");
    assert_eq!(h["__connect.errors.offset"], "1");
    assert_eq!(h["__connect.errors.class.name"], "FileStreamSink");
    assert_eq!(std::fs::read_to_string(&bytes_out).unwrap(), "x\ny\n");

    let strict = file_sink(&dir.path().join("s.txt"), "none");
    api.create("bytes-strict", &pairs(&strict), api::TargetState::Running);
    wait_for("the strict file sink FAILED", TIMEOUT, || {
        api.status("bytes-strict")
            .ok()
            .and_then(|s| s.tasks.first().cloned())
            .is_some_and(|t| {
                t.state() == api::State::Failed
                    && t.trace
                        .contains("TASK_PUT failed for record bytes-0@1 and errors.tolerance=none")
            })
    });
}

/// Distinct (task, sequence number) pairs among the lines of a file written by a sink of
/// datagen records, and the number of lines.
fn datagen_lines(path: &std::path::Path) -> (usize, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    let mut lines = 0;
    for line in text.lines() {
        lines += 1;
        if let Some(pair) = sluice_connector_datagen::parse_value(line) {
            seen.insert(pair);
        }
    }
    (seen.len(), lines)
}

#[test]
fn broker_faults_lose_nothing_end_to_end() {
    const COUNT: u64 = 6000;
    let dir = tempfile::tempdir().unwrap();
    let mut kafka = DevKafka::start(dir.path(), &["faulty:3"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", WORKER_TIMEOUT);
    let api = Api::new(&controller.address);
    let _worker = start_worker(dir.path(), "w1", &controller.url(), &kafka.bootstrap);
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);

    let mut source = datagen("faulty", "3", "1000");
    source.push(("count", COUNT.to_string()));
    api.create("gen", &pairs(&source), api::TargetState::Running);
    let out = dir.path().join("out.txt");
    let sink = [
        ("connector.class", "FileStreamSink"),
        ("topics", "faulty"),
        ("file", out.to_str().unwrap()),
        (
            "key.converter",
            "org.apache.kafka.connect.storage.StringConverter",
        ),
        (
            "value.converter",
            "org.apache.kafka.connect.storage.StringConverter",
        ),
    ];
    api.create("out", &sink, api::TargetState::Running);
    wait_for("records flowing through", TIMEOUT, || {
        datagen_lines(&out).0 > 500
    });

    // Request errors on produce, fetch and offset commits, dropped connections, then the
    // broker down and back.
    kafka.fault("fail produce 20 not-leader");
    kafka.fault("fail fetch 20 not-leader");
    kafka.fault("fail offset-commit 5 not-coordinator");
    kafka.fault("fail produce 3 disconnect");
    kafka.fault("fail fetch 3 disconnect");
    kafka.fault("broker-down 1");
    let down = Instant::now();
    wait_for("two seconds of a dead broker", TIMEOUT, || {
        down.elapsed() > Duration::from_secs(2)
    });
    kafka.fault("broker-up 1");

    let expected = datagen_counts(COUNT, 3);
    let mut v = Verified::default();
    wait_for("every record in Kafka", Duration::from_secs(60), || {
        v = verify(&kafka.bootstrap, "faulty", false, Some(&expected));
        v.unique as u64 == COUNT
    });
    let mut lines = (0, 0);
    wait_for(
        "every record in the sink file",
        Duration::from_secs(60),
        || {
            lines = datagen_lines(&out);
            lines.0 as u64 == COUNT
        },
    );
    eprintln!(
        "broker faults: Kafka {} records, {} lost, {} duplicated; sink file {} lines, {} distinct",
        v.records, v.lost, v.duplicates, lines.1, lines.0
    );
    assert_eq!(v.lost, 0, "{v:?}");
}

#[test]
fn clean_moves_pauses_and_stops_replay_nothing() {
    const COUNT: u64 = 12_000;
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["moves:3"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", WORKER_TIMEOUT);
    let api = Api::new(&controller.address);
    let _w1 = start_worker(dir.path(), "w1", &controller.url(), &kafka.bootstrap);
    wait_for("w1 to join", TIMEOUT, || api.live_workers() == 1);
    let mut config = datagen("moves", "4", "1500");
    config.push(("count", COUNT.to_string()));
    api.create("gen", &pairs(&config), api::TargetState::Running);
    let all = |state: api::State| {
        let t = tasks(&api, "gen");
        t.len() == 4 && t.values().all(|(s, _)| *s == state)
    };
    wait_for("4 tasks RUNNING", TIMEOUT, || all(api::State::Running));
    wait_for("records flowing", TIMEOUT, || {
        total_records(&kafka.bootstrap, "moves") > 1000
    });

    // A worker joins: two tasks move to it while records flow. Each starts there only after
    // w1 drained it and committed its offsets.
    let _w2 = start_worker(dir.path(), "w2", &controller.url(), &kafka.bootstrap);
    wait_for("two tasks RUNNING on w2", TIMEOUT, || {
        let t = tasks(&api, "gen");
        all(api::State::Running) && t.values().filter(|(_, w)| w == "w2").count() == 2
    });
    let moved = total_records(&kafka.bootstrap, "moves");

    // Pause and resume, then stop and resume: every task drains and commits each time.
    api.target("gen", "pause");
    wait_for("4 tasks PAUSED", TIMEOUT, || all(api::State::Paused));
    api.target("gen", "resume");
    wait_for("4 tasks RUNNING again", TIMEOUT, || {
        all(api::State::Running)
    });
    api.target("gen", "stop");
    wait_for("no task running", TIMEOUT, || {
        api.status("gen")
            .is_ok_and(|s| s.tasks.iter().all(|t| t.state() != api::State::Running))
    });
    api.target("gen", "resume");

    let expected = datagen_counts(COUNT, 4);
    let mut v = Verified::default();
    wait_for("every record in Kafka", Duration::from_secs(60), || {
        v = verify(&kafka.bootstrap, "moves", false, Some(&expected));
        v.unique as u64 == COUNT
    });
    eprintln!(
        "clean moves: {} records ({moved} when the move was done), {} lost, {} duplicated",
        v.records, v.lost, v.duplicates
    );
    assert_eq!((v.lost, v.duplicates), (0, 0), "{v:?}");
}

/// Lines of a sink file as datagen (task, seq) pairs: (distinct, duplicated, lines).
fn sink_file_counts(path: &std::path::Path) -> (usize, usize, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    let (mut lines, mut duplicated) = (0, 0);
    for line in text.lines() {
        lines += 1;
        if let Some(pair) = sluice_connector_datagen::parse_value(line) {
            if !seen.insert(pair) {
                duplicated += 1;
            }
        }
    }
    (seen.len(), duplicated, lines)
}

#[test]
fn an_exactly_once_sink_resumes_from_its_own_offsets_after_kills() {
    const TOTAL: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["orders:2"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", WORKER_TIMEOUT);
    let api = Api::new(&controller.address);
    let mut worker = start_worker(dir.path(), "w1", &controller.url(), &kafka.bootstrap);
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);

    // Records arrive over about five seconds while processes are killed.
    let bootstrap = kafka.bootstrap.clone();
    let writer = std::thread::spawn(move || {
        for chunk in 0..100 {
            let values: Vec<String> = (chunk * 200..(chunk + 1) * 200)
                .map(|i| sluice_connector_datagen::record_value(0, i as u64, 32))
                .collect();
            produce(&bootstrap, "orders", &values);
            std::thread::sleep(Duration::from_millis(40));
        }
    });
    let eos_out = dir.path().join("eos.txt");
    let alo_out = dir.path().join("alo.txt");
    let sink = |file: &std::path::Path, offsets: Option<&std::path::Path>| {
        let mut c = vec![
            ("connector.class", "FileStreamSink".to_string()),
            ("topics", "orders".into()),
            ("file", file.to_str().unwrap().into()),
            (
                "key.converter",
                "org.apache.kafka.connect.storage.StringConverter".into(),
            ),
            (
                "value.converter",
                "org.apache.kafka.connect.storage.StringConverter".into(),
            ),
        ];
        if let Some(o) = offsets {
            c.push(("offsets.file", o.to_str().unwrap().into()));
        }
        c
    };
    let eos = sink(&eos_out, Some(&dir.path().join("eos.offsets")));
    api.create("eos", &pairs(&eos), api::TargetState::Running);
    api.create(
        "alo",
        &pairs(&sink(&alo_out, None)),
        api::TargetState::Running,
    );

    let mut schedule = Schedule::new();
    let offsets_file = dir.path().join("eos.offsets");
    let stored_offsets = || std::fs::read_to_string(&offsets_file).unwrap_or_default();
    for round in 0..3 {
        // Each kill lands once the sink has stored offsets (so that every restart starts
        // from them), at a random point after that.
        wait_for("the sink to store offsets", TIMEOUT, || {
            !stored_offsets().is_empty()
        });
        schedule.wait(100, 600);
        for name in ["eos", "alo"] {
            if let Some(pid) = worker.connector_pid(name) {
                eprintln!("round {round}: SIGKILL {name}'s task process {pid}");
                // SAFETY: kill(2) on a task process our worker started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    schedule.wait(100, 600);
    eprintln!("SIGKILL the worker");
    worker.signal(libc::SIGKILL);
    worker.wait(TIMEOUT);
    worker = start_worker(dir.path(), "w1", &controller.url(), &kafka.bootstrap);
    writer.join().unwrap();

    let mut eos_counts = (0, 0, 0);
    wait_for(
        "every record in the exactly-once sink's file",
        Duration::from_secs(60),
        || {
            eos_counts = sink_file_counts(&eos_out);
            eos_counts.0 == TOTAL
        },
    );
    let mut alo_counts = (0, 0, 0);
    wait_for(
        "every record in the at-least-once sink's file",
        Duration::from_secs(60),
        || {
            alo_counts = sink_file_counts(&alo_out);
            alo_counts.0 == TOTAL
        },
    );
    eprintln!(
        "sinks after 3 task kills and a worker kill: exactly-once {} lines, {} duplicated; \
         at-least-once {} lines, {} duplicated",
        eos_counts.2, eos_counts.1, alo_counts.2, alo_counts.1
    );
    assert_eq!(
        (eos_counts.1, eos_counts.2),
        (0, TOTAL),
        "exactly-once sink"
    );
    wait_for(
        "the restarted sink to resume from its own offsets",
        TIMEOUT,
        || {
            worker
                .output()
                .contains("starting where the sink stored its offset")
        },
    );
}

/// The other transaction boundaries, through clean stops (a pause commits the open
/// transaction) rather than kills: a kill aborts an open transaction, and the mock cluster
/// still shows the records of aborted transactions to every reader (it keeps no transaction
/// markers), which Kafka hides from read_committed readers.
#[test]
fn exactly_once_interval_and_connector_boundaries_lose_and_duplicate_nothing() {
    const COUNT: u64 = 4500;
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["by-interval:3", "by-connector:3"]);
    // Nothing is killed here: a long worker timeout keeps a worker that a loaded machine
    // stalls for a second from losing its lease and aborting: the mock cluster would show the
    // aborted records (see exactly_once_loses_and_duplicates_nothing_when_processes_are_killed).
    let controller = Controller::start(dir.path(), "127.0.0.1:0", 10.0);
    let api = Api::new(&controller.address);
    let extra = "exactly.once.source.support=enabled\n";
    let _workers: Vec<_> = ["w1", "w2"]
        .iter()
        .map(|id| {
            harness::start_worker_with(dir.path(), id, &controller.url(), &kafka.bootstrap, extra)
        })
        .collect();
    wait_for("two workers to join", TIMEOUT, || api.live_workers() == 2);

    let mut interval = datagen("by-interval", "2", "900");
    interval.extend([
        ("count", COUNT.to_string()),
        ("transaction.boundary", "interval".into()),
        ("transaction.boundary.interval.ms", "300".into()),
    ]);
    let mut by_connector = datagen("by-connector", "2", "900");
    by_connector.extend([
        ("count", COUNT.to_string()),
        ("transaction.boundary", "connector".into()),
        ("transaction.commit.every", "37".into()),
    ]);
    api.create("interval", &pairs(&interval), api::TargetState::Running);
    api.create(
        "by-connector",
        &pairs(&by_connector),
        api::TargetState::Running,
    );
    let all = |name: &str, state: api::State| {
        let t = tasks(&api, name);
        t.len() == 2 && t.values().all(|(s, _)| *s == state)
    };
    let mut schedule = Schedule::new();
    for name in ["interval", "by-connector"] {
        wait_for(&format!("{name}'s tasks RUNNING"), TIMEOUT, || {
            all(name, api::State::Running)
        });
        schedule.wait(300, 1200);
        api.target(name, "pause");
        wait_for(&format!("{name} PAUSED"), TIMEOUT, || {
            all(name, api::State::Paused)
        });
        api.target(name, "resume");
    }

    let expected = datagen_counts(COUNT, 2);
    for topic in ["by-interval", "by-connector"] {
        let mut v = Verified::default();
        wait_for(
            &format!("every record in {topic}"),
            Duration::from_secs(90),
            || {
                v = verify(&kafka.bootstrap, topic, true, Some(&expected));
                v.unique as u64 == COUNT
            },
        );
        eprintln!(
            "verifier ({topic}, read_committed): {} records, {} lost, {} duplicated",
            v.records, v.lost, v.duplicates
        );
        assert_eq!((v.lost, v.duplicates), (0, 0), "{topic}: {v:?}");
    }
}

/// Issue 4's poison records on a source, through a transform: numbers in a file, hoisted into
/// a struct and cast to int32; every tenth line is not a number, so the Cast fails on it.
#[test]
fn a_failing_transform_on_a_source_sends_the_record_to_the_dead_letter_queue_or_fails_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["numbers:1", "strict-numbers:1"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", WORKER_TIMEOUT);
    let api = Api::new(&controller.address);
    let _worker = start_worker(dir.path(), "w1", &controller.url(), &kafka.bootstrap);
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);

    let input = dir.path().join("numbers.txt");
    let lines: Vec<String> = (0..100)
        .map(|i| {
            if i % 10 == 9 {
                format!("bad-{i}")
            } else {
                i.to_string()
            }
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let source = |topic: &str, tolerance: &str| {
        vec![
            ("connector.class", "FileStreamSource".to_string()),
            ("file", input.to_str().unwrap().to_string()),
            ("topic", topic.to_string()),
            (
                "value.converter",
                "org.apache.kafka.connect.json.JsonConverter".into(),
            ),
            ("value.converter.schemas.enable", "false".into()),
            ("transforms", "hoist,cast".into()),
            (
                "transforms.hoist.type",
                "org.apache.kafka.connect.transforms.HoistField$Value".into(),
            ),
            ("transforms.hoist.field", "n".into()),
            (
                "transforms.cast.type",
                "org.apache.kafka.connect.transforms.Cast$Value".into(),
            ),
            ("transforms.cast.spec", "n:int32".into()),
        ]
        .into_iter()
        .chain(error_policy(tolerance, &format!("{topic}-dlq")))
        .collect::<Vec<_>>()
    };

    // A transform config with a bad key is refused at create, naming the key.
    let mut bad = source("numbers", "all");
    bad.push(("transforms.cast.spek", "n:int32".into()));
    let mut client = api.connectors().unwrap();
    let e = api
        .runtime
        .block_on(
            client.create_connector(api::CreateConnectorRequest {
                name: "bad".into(),
                config: bad
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
                initial_state: 0,
            }),
        )
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("transforms.cast.spek"),
        "{}",
        e.message()
    );

    api.create(
        "numbers",
        &pairs(&source("numbers", "all")),
        api::TargetState::Running,
    );
    let mut good = Vec::new();
    wait_for("90 records in the topic", TIMEOUT, || {
        good = read_all(&kafka.bootstrap, "numbers");
        good.len() == 90
    });
    let expected: Vec<String> = (0..100)
        .filter(|i| i % 10 != 9)
        .map(|i| format!("{{\"n\":{i}}}"))
        .collect();
    let got: Vec<String> = good
        .iter()
        .map(|r| String::from_utf8_lossy(r.2.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(got, expected, "hoisted and cast, in order");
    let mut dlq = Vec::new();
    wait_for("10 records in the dead-letter queue", TIMEOUT, || {
        dlq = read_all(&kafka.bootstrap, "numbers-dlq");
        dlq.len() == 10
    });
    // The dead-letter topic may have several partitions: compare as sets.
    let mut originals: Vec<String> = dlq
        .iter()
        .map(|r| String::from_utf8_lossy(r.2.as_deref().unwrap_or_default()).into_owned())
        .collect();
    originals.sort();
    let mut expected: Vec<String> = (0..10).map(|n| format!("\"bad-{}\"", n * 10 + 9)).collect();
    expected.sort();
    assert_eq!(originals, expected, "the original values");
    for (_, _, _, headers) in &dlq {
        let h = |k: &str| headers.get(k).map(String::as_str);
        assert_eq!(h("__connect.errors.stage"), Some("TRANSFORMATION"));
        assert_eq!(
            h("__connect.errors.class.name"),
            Some("org.apache.kafka.connect.transforms.Cast$Value")
        );
        assert_eq!(h("__connect.errors.topic"), Some("numbers"));
        assert_eq!(
            h("__connect.errors.exception.class.name"),
            Some("org.apache.kafka.connect.errors.DataException")
        );
        assert!(
            h("__connect.errors.exception.message")
                .is_some_and(|m| m.contains("cannot be cast to INT32")),
            "{headers:?}"
        );
    }

    // errors.tolerance=none: the first failing record fails the task, with the transform named.
    api.create(
        "strict-numbers",
        &pairs(&source("strict-numbers", "none")),
        api::TargetState::Running,
    );
    let mut trace = String::new();
    wait_for("the strict source's task FAILED", TIMEOUT, || {
        let t = api
            .status("strict-numbers")
            .ok()
            .and_then(|s| s.tasks.first().cloned());
        trace = t.as_ref().map(|t| t.trace.clone()).unwrap_or_default();
        t.is_some_and(|t| t.state() == api::State::Failed)
    });
    assert!(
        trace.contains("TRANSFORMATION failed") && trace.contains("Cast$Value"),
        "{trace}"
    );
    assert!(total_records(&kafka.bootstrap, "strict-numbers") <= 9);
}
