//! Distributed mode as real processes on 127.0.0.1: the embedded Kafka, one controller and
//! several workers, each task in its own connector process. Records are datagen's, each
//! carrying its task and sequence number, read back from Kafka and counted for loss and
//! duplicates.

mod harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use harness::cluster::*;
use harness::{
    free_port, grpcurl, run_sluice, start_worker, wait_for, Controller, DevKafka, Sluice,
};
use sluice_proto::api::v1 as api;

/// The controller's --worker-timeout in these tests.
const WORKER_TIMEOUT: f64 = 2.0;

#[test]
fn six_tasks_spread_move_off_a_killed_worker_and_rebalance_on_join() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["gen:6"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", WORKER_TIMEOUT);
    let api = Api::new(&controller.address);
    let mut workers: BTreeMap<&str, Sluice> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|id| {
            let w = start_worker(dir.path(), id, &controller.url(), &kafka.bootstrap);
            (id, w)
        })
        .collect();
    wait_for("three workers to join", TIMEOUT, || api.live_workers() == 3);

    let config = datagen("gen", "6", "1200");
    api.create("gen", &pairs(&config), api::TargetState::Running);
    wait_for("6 tasks RUNNING, 2 per worker", TIMEOUT, || {
        all_in(
            &tasks(&api, "gen"),
            6,
            api::State::Running,
            &["w1", "w2", "w3"],
        )
    });
    wait_for("records flowing", TIMEOUT, || {
        total_records(&kafka.bootstrap, "gen") > 1000
    });

    // SIGKILL a worker: its two tasks run elsewhere within the timeout + 5 s.
    let killed = Instant::now();
    workers.get("w3").unwrap().signal(libc::SIGKILL);
    let limit = Duration::from_secs_f64(WORKER_TIMEOUT + 5.0);
    wait_for("w3's tasks RUNNING on w1 and w2", limit, || {
        all_in(&tasks(&api, "gen"), 6, api::State::Running, &["w1", "w2"])
    });
    let moved_after = killed.elapsed();
    let flowing = total_records(&kafka.bootstrap, "gen");
    wait_for("records flowing after the move", TIMEOUT, || {
        total_records(&kafka.bootstrap, "gen") > flowing + 1000
    });

    // A new worker joins: it takes its fair share, and nothing else moves.
    let before = owners(&tasks(&api, "gen"));
    workers.insert(
        "w4",
        start_worker(dir.path(), "w4", &controller.url(), &kafka.bootstrap),
    );
    wait_for(
        "6 tasks RUNNING, 2 per worker on w1, w2, w4",
        TIMEOUT,
        || {
            all_in(
                &tasks(&api, "gen"),
                6,
                api::State::Running,
                &["w1", "w2", "w4"],
            )
        },
    );
    let after = owners(&tasks(&api, "gen"));
    let moved: Vec<u32> = after
        .iter()
        .filter(|(t, w)| before.get(t) != Some(w))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(moved.len(), 2, "before {before:?}, after {after:?}");
    assert!(moved.iter().all(|t| after[t] == "w4"));

    // Pause: every task drains and commits; then count.
    let (ok, out) = grpcurl(
        &controller.address,
        "sluice.api.v1.ConnectorService/PauseConnector",
        Some(r#"{"name":"gen"}"#),
    );
    assert!(ok, "{out}");
    wait_for("6 tasks PAUSED", TIMEOUT, || {
        all_in(
            &tasks(&api, "gen"),
            6,
            api::State::Paused,
            &["w1", "w2", "w4"],
        )
    });
    let (records, lost, duplicates, seen) = verify_datagen(&kafka.bootstrap, "gen");
    eprintln!(
        "cluster: tasks moved {:.1} s after SIGKILL; {records} records, {lost} lost, \
         {duplicates} duplicated (at-least-once replay after the kill)",
        moved_after.as_secs_f64()
    );
    assert_eq!(seen, 6);
    assert_eq!(lost, 0, "records lost");
}

#[test]
fn controller_sigkill_under_load_then_everything_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["load:3"]);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut controller = Controller::start(dir.path(), &listen, WORKER_TIMEOUT);
    let api = Api::new(&controller.address);
    let _workers: Vec<Sluice> = ["a", "b", "c"]
        .into_iter()
        .map(|id| start_worker(dir.path(), id, &controller.url(), &kafka.bootstrap))
        .collect();
    wait_for("three workers to join", TIMEOUT, || api.live_workers() == 3);

    // Created through grpcurl, as a user would.
    let config: BTreeMap<&str, String> = datagen("load", "3", "900").into_iter().collect();
    let body = serde_json::json!({"name": "load", "config": config}).to_string();
    let (ok, out) = grpcurl(
        &controller.address,
        "sluice.api.v1.ConnectorService/CreateConnector",
        Some(&body),
    );
    assert!(ok, "{out}");
    let idle = datagen("idle", "2", "10");
    api.create("idle", &pairs(&idle), api::TargetState::Paused);
    wait_for("3 tasks RUNNING, one per worker", TIMEOUT, || {
        all_in(
            &tasks(&api, "load"),
            3,
            api::State::Running,
            &["a", "b", "c"],
        )
    });
    wait_for("the paused connector's tasks PAUSED", TIMEOUT, || {
        all_in(
            &tasks(&api, "idle"),
            2,
            api::State::Paused,
            &["a", "b", "c"],
        )
    });
    let before = owners(&tasks(&api, "load"));
    let (ok, status_before) = grpcurl(
        &controller.address,
        "sluice.api.v1.ConnectorService/GetConnectorStatus",
        Some(r#"{"name":"load"}"#),
    );
    assert!(ok, "{status_before}");

    // SIGKILL the controller: records keep flowing without it.
    controller.process.signal(libc::SIGKILL);
    controller.process.wait(TIMEOUT);
    let at_kill = total_records(&kafka.bootstrap, "load");
    wait_for("records flowing with the controller dead", TIMEOUT, || {
        total_records(&kafka.bootstrap, "load") > at_kill + 1000
    });

    // Restart it on the same address and store: configs, states and statuses are back, and
    // nothing moved while the workers rejoined.
    controller = Controller::start(dir.path(), &listen, WORKER_TIMEOUT);
    wait_for("three workers to rejoin", TIMEOUT, || {
        api.live_workers() == 3
    });
    let (ok, config_back) = grpcurl(
        &controller.address,
        "sluice.api.v1.ConnectorService/GetConnectorConfig",
        Some(r#"{"name":"load"}"#),
    );
    assert!(
        ok && config_back.contains("\"rate\": \"900\""),
        "{config_back}"
    );
    let status = api.status("idle").unwrap();
    assert_eq!(status.target_state(), api::TargetState::Paused);
    wait_for("statuses back", TIMEOUT, || {
        all_in(
            &tasks(&api, "load"),
            3,
            api::State::Running,
            &["a", "b", "c"],
        ) && all_in(
            &tasks(&api, "idle"),
            2,
            api::State::Paused,
            &["a", "b", "c"],
        )
    });
    assert_eq!(
        owners(&tasks(&api, "load")),
        before,
        "tasks moved after a restart"
    );

    // Pause, resume and delete through grpcurl with real workers.
    for (method, state) in [
        ("PauseConnector", api::State::Paused),
        ("ResumeConnector", api::State::Running),
    ] {
        let (ok, out) = grpcurl(
            &controller.address,
            &format!("sluice.api.v1.ConnectorService/{method}"),
            Some(r#"{"name":"load"}"#),
        );
        assert!(ok, "{method}: {out}");
        wait_for(method, TIMEOUT, || {
            all_in(&tasks(&api, "load"), 3, state, &["a", "b", "c"])
        });
    }
    let flowing = total_records(&kafka.bootstrap, "load");
    wait_for("records flowing after resume", TIMEOUT, || {
        total_records(&kafka.bootstrap, "load") > flowing + 300
    });
    let (ok, out) = grpcurl(
        &controller.address,
        "sluice.api.v1.ConnectorService/DeleteConnector",
        Some(r#"{"name":"load"}"#),
    );
    assert!(ok, "{out}");
    let (ok, out) = grpcurl(
        &controller.address,
        "sluice.api.v1.ConnectorService/GetConnectorStatus",
        Some(r#"{"name":"load"}"#),
    );
    assert!(!ok && out.contains("NotFound"), "{out}");
    // The deleted connector's tasks stop: the topic stops growing.
    let mut last = -1;
    wait_for("the deleted connector to stop producing", TIMEOUT, || {
        std::thread::sleep(Duration::from_millis(500));
        let now = total_records(&kafka.bootstrap, "load");
        let stopped = now == last;
        last = now;
        stopped
    });
    let (records, lost, duplicates, seen) = verify_datagen(&kafka.bootstrap, "load");
    eprintln!("controller kill: {records} records, {lost} lost, {duplicates} duplicated");
    assert_eq!(seen, 3);
    assert_eq!(lost, 0, "records lost");
}

#[test]
fn offsets_read_altered_and_reset_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["data:2"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", WORKER_TIMEOUT);
    let api = Api::new(&controller.address);
    let workers: Vec<Sluice> = ["x", "y"]
        .into_iter()
        .map(|id| start_worker(dir.path(), id, &controller.url(), &kafka.bootstrap))
        .collect();
    wait_for("two workers to join", TIMEOUT, || api.live_workers() == 2);

    // Logger levels: cluster scope reaches every worker; a bad level is INVALID_ARGUMENT. A
    // worker that joined but has not opened its request stream yet gets the level when it
    // does, after the answer: ask again (the call is idempotent) until both answer.
    let set_level = || {
        grpcurl(
            &controller.address,
            "sluice.api.v1.ClusterService/SetLogLevel",
            Some(r#"{"logger":"sluice_worker::mode::admin","level":"DEBUG","scope":"cluster"}"#),
        )
    };
    let (mut ok, mut out) = set_level();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !(ok && out.contains("x/") && out.contains("y/")) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        (ok, out) = set_level();
    }
    assert!(
        ok && out.contains("x/sluice_worker::mode::admin")
            && out.contains("y/sluice_worker::mode::admin"),
        "{out}"
    );
    let (ok, out) = grpcurl(
        &controller.address,
        "sluice.api.v1.ClusterService/ListLoggers",
        None,
    );
    assert!(
        ok && out.contains(r#""sluice_worker::mode::admin": "debug""#),
        "{out}"
    );
    assert!(workers
        .iter()
        .all(|w| w.output().contains("logger level set by the controller")));
    let (ok, out) = grpcurl(
        &controller.address,
        "sluice.api.v1.ClusterService/SetLogLevel",
        Some(r#"{"logger":"root","level":"LOUD"}"#),
    );
    assert!(
        !ok && out.contains("InvalidArgument") && out.contains("LOUD"),
        "{out}"
    );

    // 100 records (50 per task) into a file sink.
    let mut source = datagen("data", "2", "0");
    source.push(("count", "100".into()));
    api.create("gen", &pairs(&source), api::TargetState::Running);
    let out = dir.path().join("out.txt");
    let sink = file_sink("data", out.to_str().unwrap());
    api.create("out", &pairs(&sink), api::TargetState::Running);
    wait_for("100 lines in the sink file", TIMEOUT, || {
        harness::count_lines(&out) == 100
    });

    // Read: the source's own partitions and offsets; the sink's Kafka offsets.
    wait_for("source offsets flushed", TIMEOUT, || {
        api.offsets("gen")
            == [
                (
                    r#"{"datagen.task":0}"#.to_string(),
                    r#"{"seq":49}"#.to_string(),
                ),
                (
                    r#"{"datagen.task":1}"#.to_string(),
                    r#"{"seq":49}"#.to_string(),
                ),
            ]
    });
    let ends = high_watermarks(&kafka.bootstrap, "data");
    assert_eq!(ends.iter().sum::<i64>(), 100);
    wait_for("both connectors' active topics", TIMEOUT, || {
        api.topics("gen") == ["data"] && api.topics("out") == ["data"]
    });
    let expected: Vec<(String, String)> = ends
        .iter()
        .enumerate()
        .filter(|(_, end)| **end > 0)
        .map(|(p, end)| {
            (
                format!(r#"{{"kafka_partition":{p},"kafka_topic":"data"}}"#),
                format!(r#"{{"kafka_offset":{end}}}"#),
            )
        })
        .collect();
    wait_for("sink offsets committed", TIMEOUT, || {
        api.offsets("out") == expected
    });

    // Changing offsets of a running connector: FAILED_PRECONDITION.
    let e = api.reset("gen").unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("STOPPED"), "{e:?}");

    // The same through the CLI: tables, JSON, one-line errors and exit codes.
    let url = controller.url();
    let cli = |args: &[&str]| connectors_cli(dir.path(), &url, args);
    let (code, text, _) = cli(&["offsets", "gen"]);
    assert_eq!(code, 0);
    assert!(text.contains(r#"{"datagen.task":1}  {"seq":49}"#), "{text}");
    let (code, text, _) = cli(&["status", "gen", "-o", "json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["connector"]["state"], "STATE_RUNNING", "{text}");
    let (code, _, err) = cli(&["reset-offsets", "gen"]);
    assert_eq!((code, err.lines().count()), (5, 1), "{err}");
    assert!(err.starts_with("error: FAILED_PRECONDITION: "), "{err}");
    let (code, _, err) = cli(&["status", "nope"]);
    assert_eq!(code, 3, "{err}");
    let (code, text, _) = cli(&["list"]);
    assert_eq!(code, 0);
    assert!(
        text.lines()
            .any(|l| l.starts_with("out ") && l.contains("RUNNING")),
        "{text}"
    );

    api.target("gen", "stop");
    api.target("out", "stop");
    wait_for("both stopped", TIMEOUT, || {
        tasks(&api, "gen").is_empty() && tasks(&api, "out").is_empty()
    });

    // A sink offset in the wrong shape: INVALID_ARGUMENT naming the field.
    let e = api
        .alter(
            "out",
            &[(r#"{"kafka_topic":"data"}"#, Some(r#"{"kafka_offset":1}"#))],
        )
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("kafka_partition"), "{e:?}");

    // Sink: partition 0 back by 10 records. Source: task 1 reset, task 0 at 39.
    let back = (ends[0] - 10).max(0);
    api.alter(
        "out",
        &[(
            r#"{"kafka_topic":"data","kafka_partition":0}"#,
            Some(&format!(r#"{{"kafka_offset":{back}}}"#)),
        )],
    )
    .unwrap();
    assert_eq!(
        api.offsets("out")[0],
        (
            r#"{"kafka_partition":0,"kafka_topic":"data"}"#.to_string(),
            format!(r#"{{"kafka_offset":{back}}}"#)
        )
    );
    api.reset("gen").unwrap();
    assert!(api.offsets("gen").is_empty());
    api.alter("gen", &[(r#"{"datagen.task":0}"#, Some(r#"{"seq":39}"#))])
        .unwrap();
    assert_eq!(
        api.offsets("gen"),
        [(
            r#"{"datagen.task":0}"#.to_string(),
            r#"{"seq":39}"#.to_string()
        )]
    );

    // Resumed: task 0 writes seq 40..49 (10), task 1 all of 0..49 again (50); the sink
    // rereads what it was moved back over and takes the 60 new.
    api.target("gen", "resume");
    api.target("out", "resume");
    wait_for("160 records in Kafka", TIMEOUT, || {
        total_records(&kafka.bootstrap, "data") == 160
    });
    let lines = 100 + (ends[0] - back) as usize + 60;
    wait_for(&format!("{lines} lines in the sink file"), TIMEOUT, || {
        harness::count_lines(&out) == lines
    });

    // A task that fails reports FAILED with its trace; a config fix rolls it to RUNNING.
    let bad = [
        ("connector.class", "FileStreamSink"),
        ("topics", "data"),
        ("file", "/nonexistent-dir/out.txt"),
        // No restarts: FAILED at the first failure.
        ("restart.max.attempts", "0"),
    ];
    api.create("bad", &bad, api::TargetState::Running);
    wait_for("the bad sink's task FAILED with its trace", TIMEOUT, || {
        api.status("bad").is_ok_and(|s| {
            s.tasks.iter().any(|t| {
                t.state() == api::State::Failed && t.trace.contains("/nonexistent-dir/out.txt")
            })
        })
    });
    let fixed = dir.path().join("fixed.txt");
    let fixed = fixed.to_str().unwrap();
    let (code, _, err) = cli(&["patch", "bad", &format!("file={fixed}")]);
    assert_eq!(code, 0, "{err}");
    wait_for("the fixed sink RUNNING", TIMEOUT, || {
        all_in(&tasks(&api, "bad"), 1, api::State::Running, &["x", "y"])
    });
}

#[test]
fn a_connector_replan_request_rolls_only_the_task_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["labelled:3"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", WORKER_TIMEOUT);
    let api = Api::new(&controller.address);
    let workers: Vec<Sluice> = ["p", "q"]
        .into_iter()
        .map(|id| start_worker(dir.path(), id, &controller.url(), &kafka.bootstrap))
        .collect();
    wait_for("two workers to join", TIMEOUT, || api.live_workers() == 2);

    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "a\nb\nc\n").unwrap();
    let mut config = datagen("labelled", "3", "30");
    config.push(("labels.file", labels.to_str().unwrap().to_string()));
    api.create("gen", &pairs(&config), api::TargetState::Running);
    wait_for("3 tasks RUNNING", TIMEOUT, || {
        all_in(&tasks(&api, "gen"), 3, api::State::Running, &["p", "q"])
    });
    let started = || {
        workers
            .iter()
            .map(|w| w.output().matches("running connector=gen pid=").count())
            .sum::<usize>()
    };
    let before = started();
    assert_eq!(before, 3, "one process per task");

    // The connector watches its labels file and asks for a re-plan: only task 1's config
    // changes, so only task 1 restarts.
    std::fs::write(&labels, "a\nB\nc\n").unwrap();
    wait_for("task 1 restarted with its new label", TIMEOUT, || {
        started() == before + 1
    });
    let label = |task: u32| {
        let mut client = api.connectors().unwrap();
        let tasks = api
            .runtime
            .block_on(client.list_tasks(api::ConnectorRef { name: "gen".into() }))
            .unwrap()
            .into_inner();
        tasks.tasks[task as usize]
            .config
            .get("datagen.label")
            .cloned()
    };
    assert_eq!(label(1).as_deref(), Some("B"));
    assert_eq!(label(0).as_deref(), Some("a"));
    assert!(workers.iter().any(|w| w
        .output()
        .contains("asks for its tasks to be planned again")));
    wait_for("3 tasks RUNNING after the roll", TIMEOUT, || {
        all_in(&tasks(&api, "gen"), 3, api::State::Running, &["p", "q"])
    });
    // Deliberate pause: nothing else may restart in the meantime.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        started(),
        before + 1,
        "a task whose config did not change restarted"
    );

    // Restarts through the CLI: one task, then the connector with all its tasks.
    let url = controller.url();
    let cli = |args: &[&str]| connectors_cli(dir.path(), &url, args);
    let (code, _, err) = cli(&["restart-task", "gen", "2"]);
    assert_eq!(code, 0, "{err}");
    wait_for("task 2 restarted", TIMEOUT, || started() == before + 2);
    let (code, _, err) = cli(&["restart", "gen", "--include-tasks"]);
    assert_eq!(code, 0, "{err}");
    wait_for("every task restarted", TIMEOUT, || started() == before + 5);
    wait_for("3 tasks RUNNING after the restart", TIMEOUT, || {
        all_in(&tasks(&api, "gen"), 3, api::State::Running, &["p", "q"])
    });
    let (code, _, err) = cli(&["restart-task", "gen", "7"]);
    assert_eq!(code, 3, "{err}");
}

/// SIGTERM to a worker whose Kafka and controller are both gone: its tasks can neither hand
/// their records to Kafka nor commit, so the stop is bounded — each task by
/// task.shutdown.graceful.timeout.ms, the process by --shutdown-timeout — and the worker exits
/// non-zero within the limit, saying what was not committed will be replayed, with its
/// connector processes gone. The controller, asked to stop with a worker still connected,
/// exits within its own limit.
#[test]
fn sigterm_with_kafka_and_the_controller_gone_exits_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut kafka = DevKafka::start(dir.path(), &["gen:2"]);
    let mut controller = Controller::start(dir.path(), "127.0.0.1:0", 10.0);
    let api = Api::new(&controller.address);
    let url = controller.url();
    let mut worker = harness::start_worker_flags(
        dir.path(),
        "w1",
        &url,
        &kafka.bootstrap,
        "",
        &["--shutdown-timeout", "8"],
    );
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);
    let config = datagen("gen", "2", "2000");
    api.create("gen", &pairs(&config), api::TargetState::Running);
    wait_for("records flowing", TIMEOUT, || {
        total_records(&kafka.bootstrap, "gen") > 1000
    });
    // The worker completed the config with the defaults datagen declares before planning:
    // the task configs carry key.cardinality though the connector's config left it out, and
    // what the user gave stays.
    let (ok, listed) = grpcurl(
        &controller.address,
        "sluice.api.v1.ConnectorService/ListTasks",
        Some(r#"{"name":"gen"}"#),
    );
    assert!(ok, "{listed}");
    assert_eq!(
        listed.matches(r#""key.cardinality": "1000""#).count(),
        2,
        "{listed}"
    );
    assert_eq!(
        listed.matches(r#""record.size": "64""#).count(),
        2,
        "{listed}"
    );
    let connectors: Vec<i32> = worker
        .output()
        .lines()
        .filter_map(|l| {
            let at = l.find("running connector=gen pid=")? + "running connector=gen pid=".len();
            l[at..].split_whitespace().next()?.parse().ok()
        })
        .collect();
    assert_eq!(connectors.len(), 2, "{}", worker.output());

    // The controller, with the worker's streams open, stops within its limit.
    let asked = Instant::now();
    controller.process.signal(libc::SIGTERM);
    let status = controller.process.wait(Duration::from_secs(30));
    assert!(
        asked.elapsed() < Duration::from_secs(17),
        "controller took {:?}",
        asked.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{}", controller.process.output());

    kafka.kill();
    wait_for("the outage to be noticed", TIMEOUT, || {
        worker.output().contains("Kafka unreachable")
    });
    let asked = Instant::now();
    worker.signal(libc::SIGTERM);
    let status = worker.wait(Duration::from_secs(30));
    let took = asked.elapsed();
    let log = worker.output();
    assert!(took < Duration::from_secs(11), "took {took:?}:\n{log}");
    assert_ne!(status.code(), Some(0), "{log}");
    assert!(log.contains("at-least-once"), "{log}");
    for pid in connectors {
        wait_for("connector processes gone", Duration::from_secs(5), || {
            !harness::process_alive(pid)
        });
    }
}

/// A Kafka Connect REST client: (status, JSON body or Null) for each call.
struct Rest {
    base: String,
    agent: ureq::Agent,
}

impl Rest {
    fn new(base: String) -> Rest {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        Rest { base, agent }
    }

    fn answer(
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> (u16, serde_json::Value) {
        let mut response = response.expect("an HTTP answer");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, body)
    }

    fn get(&self, path: &str) -> (u16, serde_json::Value) {
        Rest::answer(self.agent.get(format!("{}{path}", self.base)).call())
    }

    fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        Rest::answer(self.agent.delete(format!("{}{path}", self.base)).call())
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.base);
        let text = body.map(|b| b.to_string());
        let response = match (method, text) {
            ("POST", Some(t)) => self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(t),
            ("POST", None) => self.agent.post(&url).send_empty(),
            ("PUT", Some(t)) => self
                .agent
                .put(&url)
                .header("content-type", "application/json")
                .send(t),
            ("PUT", None) => self.agent.put(&url).send_empty(),
            ("PATCH", Some(t)) => self
                .agent
                .patch(&url)
                .header("content-type", "application/json")
                .send(t),
            _ => panic!("{method} {path}"),
        };
        Rest::answer(response)
    }
}

/// Kafka Connect's REST API on the controller, every endpoint driven as a Kafka Connect
/// script would (create, poll status until RUNNING, pause, resume, restart, tasks, topics,
/// stop, offsets, delete), each status code and body shape checked against Kafka Connect's;
/// a PASSWORD value never comes back in plain text; errors are `{"error_code", "message"}`.
#[test]
fn kafka_connect_rest_api_answers_as_kafka_connect_does() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["rest:2"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", WORKER_TIMEOUT);
    let rest = Rest::new(controller.rest_url());
    let _worker = start_worker(dir.path(), "w1", &controller.url(), &kafka.bootstrap);
    let api = Api::new(&controller.address);
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);

    let (status, root) = rest.get("/");
    assert_eq!(status, 200);
    for key in ["version", "commit", "kafka_cluster_id"] {
        assert!(root[key].is_string(), "{root}");
    }
    let (status, plugins) = rest.get("/connector-plugins");
    assert_eq!(status, 200);
    let listed = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["class"] == "DatagenSource")
        .unwrap_or_else(|| panic!("{plugins}"));
    assert_eq!(listed["type"], "source");
    assert!(plugins
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["type"] == "source" || p["type"] == "sink"));
    let (status, all) = rest.get("/connector-plugins?connectorsOnly=false");
    assert_eq!(status, 200);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|p| p["type"] == "transformation"),
        "{all}"
    );
    let (status, defs) = rest.get("/connector-plugins/DatagenSource/config");
    assert_eq!(status, 200);
    assert!(
        defs.as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "topic" && d["type"].is_string()),
        "{defs}"
    );
    let (status, checked) = rest.send(
        "PUT",
        "/connector-plugins/DatagenSource/config/validate",
        Some(json!({"connector.class": "DatagenSource", "tasks.max": "many"})),
    );
    assert_eq!(status, 200, "{checked}");
    assert!(checked["error_count"].as_u64().unwrap() >= 1, "{checked}");
    assert!(
        checked["configs"][0]["definition"]["name"].is_string()
            && checked["configs"][0]["value"]["errors"].is_array(),
        "{checked}"
    );

    // Create: 201 with name, config, tasks and type; again: 409.
    let mut config: serde_json::Map<String, serde_json::Value> = datagen("rest", "2", "200")
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let (status, created) = rest.send(
        "POST",
        "/connectors",
        Some(json!({"name": "gen", "config": config})),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "gen");
    assert_eq!(created["config"]["topic"], "rest");
    assert!(
        created["tasks"].is_array() && created["type"] == "source",
        "{created}"
    );
    let (status, again) = rest.send(
        "POST",
        "/connectors",
        Some(json!({"name": "gen", "config": config})),
    );
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error_code"], 409);
    assert!(
        again["message"].as_str().unwrap().contains("gen"),
        "{again}"
    );
    let (status, bad) = rest.send("POST", "/connectors", Some(json!({"config": config})));
    assert_eq!(
        (status, bad["error_code"].clone()),
        (400, json!(400)),
        "{bad}"
    );

    let running = |rest: &Rest| {
        let (_, s) = rest.get("/connectors/gen/status");
        s["connector"]["state"] == "RUNNING"
            && s["tasks"]
                .as_array()
                .is_some_and(|t| t.len() == 2 && t.iter().all(|t| t["state"] == "RUNNING"))
    };
    wait_for("gen RUNNING over REST", TIMEOUT, || running(&rest));
    let (status, s) = rest.get("/connectors/gen/status");
    assert_eq!(status, 200);
    assert_eq!(s["name"], "gen");
    assert_eq!(s["type"], "source");
    assert_eq!(s["connector"]["worker_id"], "w1");
    assert_eq!(s["tasks"][1]["id"], 1);

    // Listing, plain and expanded.
    assert_eq!(rest.get("/connectors"), (200, json!(["gen"])));
    let (status, expanded) = rest.get("/connectors?expand=status&expand=info");
    assert_eq!(status, 200);
    assert_eq!(expanded["gen"]["status"]["connector"]["state"], "RUNNING");
    assert_eq!(expanded["gen"]["info"]["config"]["topic"], "rest");
    let (_, info) = rest.get("/connectors/gen");
    assert_eq!(
        info["tasks"],
        json!([{"connector": "gen", "task": 0}, {"connector": "gen", "task": 1}])
    );

    // Config: GET, PUT (200 updating, 201 creating), PATCH (null removes).
    let (status, got) = rest.get("/connectors/gen/config");
    assert_eq!(status, 200);
    assert_eq!(got["rate"], "200");
    config.insert("rate".into(), json!("300"));
    let (status, put) = rest.send("PUT", "/connectors/gen/config", Some(json!(config)));
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["config"]["rate"], "300");
    let secret = "pa55-w0rd-never-shown";
    let http_sink = json!({
        "connector.class": "HttpSink",
        "topics": "rest",
        "http.api.url": "http://127.0.0.1:9/in",
        "auth.type": "BASIC",
        "connection.user": "u",
        "connection.password": secret,
    });
    let (status, put) = rest.send("PUT", "/connectors/hook/config", Some(http_sink));
    assert_eq!(status, 201, "{put}");
    let (status, patched) = rest.send(
        "PATCH",
        "/connectors/hook/config",
        Some(json!({"connection.user": "v", "auth.type": null})),
    );
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["config"]["connection.user"], "v");
    assert!(patched["config"].get("auth.type").is_none(), "{patched}");
    for path in [
        "/connectors/hook",
        "/connectors/hook/config",
        "/connectors?expand=info",
    ] {
        let (_, body) = rest.get(path);
        assert!(
            !body.to_string().contains(secret),
            "{path} showed the password: {body}"
        );
    }
    assert_eq!(rest.delete("/connectors/hook").0, 204);

    // Pause 202, resume 202, restarts 204 / 202.
    assert_eq!(rest.send("PUT", "/connectors/gen/pause", None).0, 202);
    wait_for("gen PAUSED", TIMEOUT, || {
        rest.get("/connectors/gen/status").1["connector"]["state"] == "PAUSED"
    });
    assert_eq!(rest.send("PUT", "/connectors/gen/resume", None).0, 202);
    wait_for("gen RUNNING again", TIMEOUT, || running(&rest));
    assert_eq!(rest.send("POST", "/connectors/gen/restart", None).0, 204);
    let (status, restarted) = rest.send(
        "POST",
        "/connectors/gen/restart?includeTasks=true&onlyFailed=false",
        None,
    );
    assert_eq!(status, 202, "{restarted}");
    assert_eq!(restarted["name"], "gen");
    wait_for("gen RUNNING after the restart", TIMEOUT, || running(&rest));

    // Tasks.
    let (status, tasks) = rest.get("/connectors/gen/tasks");
    assert_eq!(status, 200);
    assert_eq!(tasks[0]["id"], json!({"connector": "gen", "task": 0}));
    assert!(tasks[0]["config"].is_object(), "{tasks}");
    let (status, t1) = rest.get("/connectors/gen/tasks/1/status");
    assert_eq!(status, 200);
    assert_eq!(
        (t1["id"].clone(), t1["worker_id"].clone()),
        (json!(1), json!("w1"))
    );
    assert_eq!(
        rest.send("POST", "/connectors/gen/tasks/1/restart", None).0,
        204
    );
    assert_eq!(rest.get("/connectors/gen/tasks/7/status").0, 404);

    // Topics.
    wait_for("gen's topic recorded", TIMEOUT, || {
        rest.get("/connectors/gen/topics").1 == json!({"gen": {"topics": ["rest"]}})
    });
    assert_eq!(
        rest.send("PUT", "/connectors/gen/topics/reset", None).0,
        200
    );

    // Stop 204, then offsets: read, altered, reset.
    wait_for("gen RUNNING before the stop", TIMEOUT, || running(&rest));
    let (status, refused) = rest.delete("/connectors/gen/offsets");
    assert_eq!(status, 400, "offsets reset while RUNNING: {refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("STOPPED"),
        "{refused}"
    );
    assert_eq!(rest.send("PUT", "/connectors/gen/stop", None).0, 204);
    wait_for("gen STOPPED", TIMEOUT, || {
        rest.get("/connectors/gen/status").1["connector"]["state"] == "STOPPED"
    });
    let (status, offsets) = rest.get("/connectors/gen/offsets");
    assert_eq!(status, 200, "{offsets}");
    let first = offsets["offsets"][0].clone();
    assert!(
        first["partition"].is_object() && first["offset"].is_object(),
        "{offsets}"
    );
    let (status, altered) = rest.send(
        "PATCH",
        "/connectors/gen/offsets",
        Some(json!({"offsets": [first]})),
    );
    assert_eq!(status, 200, "{altered}");
    assert!(altered["message"].is_string());
    let (status, reset) = rest.delete("/connectors/gen/offsets");
    assert_eq!(status, 200, "{reset}");
    assert!(reset["message"].is_string());

    // Loggers.
    let (status, loggers) = rest.get("/admin/loggers");
    assert_eq!(status, 200);
    assert!(loggers["root"]["level"].is_string(), "{loggers}");
    let (status, changed) = rest.send(
        "PUT",
        "/admin/loggers/sluice_worker",
        Some(json!({"level": "DEBUG"})),
    );
    assert_eq!(status, 200, "{changed}");
    assert!(
        changed
            .as_array()
            .unwrap()
            .contains(&json!("sluice_worker")),
        "{changed}"
    );
    assert_eq!(rest.get("/admin/loggers/sluice_worker").1["level"], "DEBUG");
    assert_eq!(
        rest.send(
            "PUT",
            "/admin/loggers/sluice_worker?scope=cluster",
            Some(json!({"level": "INFO"}))
        )
        .0,
        204
    );

    // Delete 204; then 404 as Kafka Connect writes it.
    assert_eq!(rest.delete("/connectors/gen").0, 204);
    let (status, missing) = rest.get("/connectors/gen");
    assert_eq!(status, 404);
    assert_eq!(missing["error_code"], 404);
    assert!(
        missing["message"].as_str().unwrap().contains("gen"),
        "{missing}"
    );
    assert_eq!(rest.get("/connectors"), (200, json!([])));
    let (status, body) = rest.delete("/connectors");
    assert_eq!(
        (status, body["error_code"].clone()),
        (405, json!(405)),
        "{body}"
    );
    let (status, body) = rest.get("/no/such/path");
    assert_eq!(
        (status, body["error_code"].clone()),
        (404, json!(404)),
        "{body}"
    );
}

/// A Python script written for Kafka Connect with kafka-connect-py, a Kafka Connect REST
/// client from PyPI, runs unchanged against the controller's REST API
/// (`tests/fixtures/kafka_connect_client.py`: create, RUNNING, pause, resume, restarts, tasks,
/// topics, update, validate, stop, delete).
#[test]
fn a_kafka_connect_python_client_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["py:2"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", WORKER_TIMEOUT);
    let _worker = start_worker(dir.path(), "w1", &controller.url(), &kafka.bootstrap);
    let api = Api::new(&controller.address);
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);
    run_fixture(
        std::process::Command::new("python3").env("PYTHONPATH", harness::tools::python_path(&[])),
        "kafka_connect_client.py",
        &controller.rest_url(),
        "py",
    );
}

/// A shell script of curl calls written for Kafka Connect (`tests/fixtures/
/// kafka_connect_curl.sh`: create, 409 on a second create, RUNNING, pause, resume, restart,
/// update, stop, offsets read and reset, delete, 404) runs unchanged against the controller.
#[test]
fn a_kafka_connect_curl_script_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["sh:1"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", WORKER_TIMEOUT);
    let _worker = start_worker(dir.path(), "w1", &controller.url(), &kafka.bootstrap);
    let api = Api::new(&controller.address);
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);
    run_fixture(
        &mut std::process::Command::new("bash"),
        "kafka_connect_curl.sh",
        &controller.rest_url(),
        "sh",
    );
}

/// Runs `tests/fixtures/<name>` with `command` (the REST API's URL and a topic as arguments):
/// it must exit 0 and say every call was answered.
fn run_fixture(command: &mut std::process::Command, name: &str, rest_url: &str, topic: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    let out = command
        .arg(&script)
        .arg(rest_url)
        .arg(topic)
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("every call answered"), "{text}");
}

/// `sluice apply -f DIR` makes the cluster's connectors what a folder of connector files says
/// (a .properties and a Kafka Connect JSON file): the plan first (create / update with the
/// keys that change / delete with --prune / unchanged), the secret never printed; a second run
/// is a no-op; `sluice diff` and `--dry-run` change nothing; exit codes as the CLI's.
#[test]
fn apply_makes_the_cluster_match_connector_files_and_a_second_run_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["applied:1"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", WORKER_TIMEOUT);
    let _worker = start_worker(dir.path(), "w1", &controller.url(), &kafka.bootstrap);
    let api = Api::new(&controller.address);
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);
    let files = dir.path().join("connectors");
    std::fs::create_dir(&files).unwrap();
    let gen = |rate: u32| {
        format!(
            "name=gen\nconnector.class=DatagenSource\ntopic=applied\ntasks.max=1\nrate={rate}\n"
        )
    };
    let hook = |password: &str| {
        serde_json::json!({"name": "hook", "config": {
            "connector.class": "HttpSink", "topics": "applied",
            "http.api.url": "http://127.0.0.1:9/in", "auth.type": "BASIC",
            "connection.user": "u", "connection.password": password,
        }})
        .to_string()
    };
    std::fs::write(files.join("gen.properties"), gen(10)).unwrap();
    std::fs::write(files.join("hook.json"), hook("first-s3cr3t")).unwrap();
    std::fs::write(files.join("notes.txt"), "not a connector file").unwrap();
    api.create(
        "extra",
        &pairs(&datagen("applied", "1", "5")),
        api::TargetState::Running,
    );
    let url = controller.url();
    let run = |args: &[&str]| {
        let mut all = vec!["--controller", url.as_str()];
        all.splice(0..0, args.iter().copied());
        let (code, out, err) = run_sluice(dir.path(), &all);
        for secret in ["first-s3cr3t", "second-s3cr3t"] {
            assert!(
                !out.contains(secret) && !err.contains(secret),
                "{secret} printed:\n{out}{err}"
            );
        }
        (code, out, err)
    };
    let dir_arg = files.to_str().unwrap();

    // A dry run: the plan, nothing done.
    let (code, out, err) = run(&["apply", "-f", dir_arg, "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("+ create gen") && out.contains("+ create hook"),
        "{out}"
    );
    assert!(
        out.contains("plan: 2 to create, 0 to update, 0 to delete, 0 unchanged"),
        "{out}"
    );
    assert_eq!(api.names(), ["extra"]);

    // Applied, then a no-op.
    let (code, out, err) = run(&["apply", "-f", dir_arg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied: the cluster matches"), "{out}");
    assert_eq!(api.names(), ["extra", "gen", "hook"]);
    let (code, out, _) = run(&["apply", "-f", dir_arg]);
    assert_eq!(code, 0);
    assert!(
        out.contains("plan: 0 to create, 0 to update, 0 to delete, 2 unchanged"),
        "{out}"
    );

    // Changes: a rate and the password; diff shows them, the password hidden.
    std::fs::write(files.join("gen.properties"), gen(20)).unwrap();
    std::fs::write(files.join("hook.json"), hook("second-s3cr3t")).unwrap();
    let (code, out, err) = run(&["diff", "-f", dir_arg, "--prune"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("~ update gen") && out.contains("~ rate: 10 -> 20"),
        "{out}"
    );
    assert!(
        out.contains("~ connection.password: [hidden] -> [hidden]"),
        "{out}"
    );
    assert!(out.contains("- delete extra"), "{out}");
    assert!(
        out.contains("plan: 0 to create, 2 to update, 1 to delete, 0 unchanged"),
        "{out}"
    );
    assert_eq!(
        api.names(),
        ["extra", "gen", "hook"],
        "diff changed something"
    );

    let (code, out, err) = run(&["apply", "-f", dir_arg, "--prune"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(api.names(), ["gen", "hook"]);
    let (code, out, _) = run(&["apply", "-f", dir_arg, "--prune"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("plan: 0 to create, 0 to update, 0 to delete, 2 unchanged"),
        "{out}"
    );

    // A config the plugin refuses: the CLI's INVALID_ARGUMENT (2), nothing applied.
    std::fs::write(
        files.join("gen.properties"),
        "name=gen\nconnector.class=DatagenSource\ntasks.max=many\n",
    )
    .unwrap();
    let (code, out, err) = run(&["apply", "-f", dir_arg]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.starts_with("error: INVALID_ARGUMENT"), "{err}");
}

/// A controller with TLS on both listeners, mTLS for workers and tokens, from `sluice
/// dev-certs`: a worker with the CA's certificate joins and runs a connector; a worker with
/// another CA's certificate, one with only a token, and one that does not trust the
/// controller's certificate never join; a client without a token, with an unknown one, in
/// plaintext or with a rogue certificate is refused (UNAUTHENTICATED / 401, handshake
/// refused); a viewer reads but may not change (PERMISSION_DENIED / 403); every refusal is
/// logged with who and what; no token appears in any output. A listener other hosts can reach
/// without TLS and tokens refuses to start.
#[test]
fn a_secured_controller_takes_only_callers_with_the_right_token_or_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for set in ["certs", "rogue"] {
        let (code, out, err) = run_sluice(d, &["dev-certs", set]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, _, err) = run_sluice(d, &["dev-certs", "certs"]);
    assert_ne!(code, 0, "dev-certs overwrote files");
    assert!(err.contains("--force"), "{err}");
    let file = |set: &str, name: &str| d.join(set).join(name).to_str().unwrap().to_string();
    let token = |role: &str| {
        std::fs::read_to_string(file("certs", &format!("{role}.token")))
            .unwrap()
            .trim()
            .to_string()
    };
    let tokens = [token("admin"), token("viewer"), token("worker")];
    let ca = file("certs", "ca.pem");

    // Exposed without TLS and tokens: refused before anything is bound.
    let data = d.join("exposed").to_str().unwrap().to_string();
    let exposed = [
        "controller",
        "--listen",
        "0.0.0.0:0",
        "--rest-listen",
        "off",
    ];
    let (code, _, err) = run_sluice(d, &[&exposed[..], &["--data-dir", &data]].concat());
    assert_ne!(code, 0);
    assert!(
        err.contains("reachable from other hosts") && err.contains("--insecure"),
        "{err}"
    );
    let with_tls = [
        "--tls-cert",
        &file("certs", "controller.pem"),
        "--tls-key",
        &file("certs", "controller.key"),
    ];
    let (code, _, err) = run_sluice(
        d,
        &[&exposed[..], &with_tls[..], &["--data-dir", &data]].concat(),
    );
    assert_ne!(code, 0);
    assert!(err.contains("without tokens (--tokens)"), "{err}");

    let kafka = DevKafka::start(d, &["secure:1"]);
    let health = format!("127.0.0.1:{}", free_port());
    let controller = Controller::start_with(
        d,
        "127.0.0.1:0",
        WORKER_TIMEOUT,
        &[
            &with_tls[..],
            &["--tls-client-ca", &ca, "--tokens", &file("certs", "tokens")],
            &["--health-listen", &health],
        ]
        .concat(),
    );
    // Probes that can do neither TLS nor tokens reach the health service, and only it.
    let (ok, text) = grpcurl(&health, "grpc.health.v1.Health/Check", None);
    assert!(ok && text.contains("SERVING"), "{text}");
    let (ok, text) = grpcurl(
        &health,
        "sluice.api.v1.ConnectorService/ListConnectors",
        None,
    );
    assert!(!ok, "only health there: {text}");
    let port = controller.address.rsplit(':').next().unwrap();
    let url = format!("https://localhost:{port}");
    let worker = |id: &str, flags: &[&str]| {
        harness::start_worker_flags(d, id, &url, &kafka.bootstrap, "", flags)
    };
    // A worker trusting the CA of `trusted` and presenting the certificate of `presented`.
    let mtls_worker = |id: &str, trusted: &str, presented: &str| {
        let (ca, cert, key) = (
            file(trusted, "ca.pem"),
            file(presented, "worker.pem"),
            file(presented, "worker.key"),
        );
        worker(
            id,
            &["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key],
        )
    };
    let w1 = mtls_worker("w1", "certs", "certs");
    let rogue = mtls_worker("rogue", "certs", "rogue");
    let distrustful = mtls_worker("distrustful", "rogue", "certs");
    let tokened = worker(
        "tokened",
        &[
            "--tls-ca",
            &ca,
            "--token-file",
            &file("certs", "worker.token"),
        ],
    );

    let mut printed = String::new();
    let mut cli = |role: Option<&str>, args: &[&str]| -> (i32, String, String) {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend([
            "--controller".into(),
            url.clone(),
            "--tls-ca".into(),
            ca.clone(),
        ]);
        if let Some(role) = role {
            all.extend([
                "--token-file".into(),
                file("certs", &format!("{role}.token")),
            ]);
        }
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let (code, out, err) = run_sluice(d, &all);
        printed.push_str(&out);
        printed.push_str(&err);
        (code, out, err)
    };
    wait_for("w1 to join over mTLS", TIMEOUT, || {
        let (code, out, _) = cli(Some("viewer"), &["cluster", "workers"]);
        code == 0
            && out
                .lines()
                .any(|l| l.starts_with("w1 ") && l.contains("true"))
    });
    std::fs::write(
        d.join("gen.json"),
        serde_json::json!({"name": "gen", "config": datagen("secure", "1", "50")
            .into_iter().collect::<BTreeMap<_, _>>()})
        .to_string(),
    )
    .unwrap();
    let (code, _, err) = cli(None, &["connectors", "create", "-f", "gen.json"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("UNAUTHENTICATED") && err.contains("bearer token"),
        "{err}"
    );
    let (code, _, err) = cli(Some("viewer"), &["connectors", "create", "-f", "gen.json"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("PERMISSION_DENIED") && err.contains("viewer"),
        "{err}"
    );
    // A viewer may see the plan (a dry run), not apply it.
    let (code, out, err) = cli(Some("viewer"), &["diff", "-f", "gen.json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("create gen"), "{out}");
    let (code, _, err) = cli(Some("viewer"), &["apply", "-f", "gen.json"]);
    assert_ne!(code, 0);
    assert!(err.contains("PERMISSION_DENIED"), "{err}");
    let (code, out, err) = cli(Some("admin"), &["connectors", "create", "-f", "gen.json"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for("gen to run on w1", TIMEOUT, || {
        let (code, out, _) = cli(Some("viewer"), &["connectors", "status", "gen"]);
        code == 0 && out.contains("RUNNING") && out.contains("w1")
    });
    wait_for("records in Kafka", TIMEOUT, || {
        total_records(&kafka.bootstrap, "secure") > 0
    });
    let (code, out, _) = cli(Some("admin"), &["cluster", "workers"]);
    assert_eq!(code, 0);
    for refused in ["rogue", "tokened", "distrustful"] {
        assert!(!out.contains(refused), "{refused} joined:\n{out}");
    }
    assert!(
        tokened
            .output()
            .contains("client certificate signed by the controller's --tls-client-ca"),
        "{}",
        tokened.output()
    );

    // grpcurl: TLS with the CA and a token works; no token, plaintext, a rogue client
    // certificate or a CA that did not sign the controller's certificate do not.
    let list = "sluice.api.v1.ConnectorService/ListConnectors";
    let admin_header = format!("authorization: Bearer {}", tokens[0]);
    let (ok, text) = harness::grpcurl_with(
        &["-cacert", &ca, "-H", &admin_header],
        &format!("localhost:{port}"),
        list,
        None,
    );
    assert!(ok && text.contains("\"gen\""), "{text}");
    let (ok, text) =
        harness::grpcurl_with(&["-cacert", &ca], &format!("localhost:{port}"), list, None);
    assert!(!ok && text.contains("Unauthenticated"), "{text}");
    let (ok, text) = harness::grpcurl(&controller.address, list, None);
    assert!(!ok, "plaintext answered: {text}");
    let (ok, text) = harness::grpcurl_with(
        &[
            "-cacert",
            &ca,
            "-cert",
            &file("rogue", "worker.pem"),
            "-key",
            &file("rogue", "worker.key"),
        ],
        &format!("localhost:{port}"),
        "grpc.health.v1.Health/Check",
        None,
    );
    assert!(!ok, "a rogue client certificate was taken: {text}");
    let (ok, text) = harness::grpcurl_with(
        &["-cacert", &file("rogue", "ca.pem")],
        &format!("localhost:{port}"),
        "grpc.health.v1.Health/Check",
        None,
    );
    assert!(!ok && text.contains("certificate"), "{text}");
    let (ok, text) = harness::grpcurl_with(
        &["-cacert", &ca],
        &format!("localhost:{port}"),
        "grpc.health.v1.Health/Check",
        None,
    );
    assert!(ok && text.contains("SERVING"), "{text}");

    // REST over TLS with curl: 401 without a token, 403 for a viewer changing, 200 reading.
    let rest_port = controller.rest.rsplit(':').next().unwrap().to_string();
    let curl = |token: Option<&str>, method: &str, path: &str| -> (u16, serde_json::Value) {
        let mut command = std::process::Command::new("curl");
        command.args(["-sS", "--cacert", &ca, "-X", method, "-w", "\n%{http_code}"]);
        if let Some(token) = token {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let out = command
            .arg(format!("https://localhost:{rest_port}{path}"))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code = code.trim().parse().unwrap_or(0);
        (
            code,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    };
    let (code, body) = curl(None, "GET", "/connectors");
    assert_eq!(
        (code, body["error_code"].as_u64()),
        (401, Some(401)),
        "{body}"
    );
    let (code, body) = curl(Some("not-a-token-anyone-holds"), "GET", "/connectors");
    assert_eq!(code, 401, "{body}");
    let (code, body) = curl(Some(&tokens[1]), "GET", "/connectors");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, serde_json::json!(["gen"]));
    let (code, body) = curl(Some(&tokens[1]), "PUT", "/connectors/gen/pause");
    assert_eq!(
        (code, body["error_code"].as_u64()),
        (403, Some(403)),
        "{body}"
    );
    let (code, body) = curl(Some(&tokens[2]), "GET", "/connectors");
    assert_eq!(code, 403, "a worker token read the API: {body}");
    let (code, body) = curl(None, "GET", "/");
    assert_eq!(code, 200, "{body}");
    let (code, _) = curl(Some(&tokens[0]), "PUT", "/connectors/gen/pause");
    assert_eq!(code, 202);
    let (code, _, err) = cli(Some("admin"), &["connectors", "delete", "gen"]);
    assert_eq!(code, 0, "{err}");

    // Refusals logged with who and what; no token anywhere.
    let log = controller.process.output();
    assert!(
        log.lines().any(|l| l.contains("call denied")
            && l.contains("who=viewer")
            && l.contains("CreateConnector")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("call denied") && l.contains("PUT /connectors/gen/pause")),
        "{log}"
    );
    let outputs = [
        ("controller", log),
        ("w1", w1.output()),
        ("rogue", rogue.output()),
        ("tokened", tokened.output()),
        ("distrustful", distrustful.output()),
        ("cli", printed),
    ];
    for (who, output) in &outputs {
        for t in &tokens {
            assert!(
                !output.contains(t.as_str()),
                "a token in the output of {who}"
            );
        }
    }
}

/// Kafka Connect's config providers on a worker (`config.providers=file,env,dir`): an HTTP
/// sink's Authorization header comes from `${file:...}` and its URL from `${dir:...}`, and the
/// server sees the resolved values; a JDBC source whose URL names a database `${env:...}` fails
/// with PostgreSQL's error quoting it, shown `[hidden]`. The controller stores and returns the
/// references (the task configs planned from resolved values get theirs back), and neither
/// planted secret is in any API answer, log or file of the controller's store.
#[test]
fn config_provider_references_resolve_on_the_worker_and_their_secrets_appear_nowhere() {
    use std::sync::{Arc, Mutex};
    const FILE_SECRET: &str = "PLANTED-file-secret-4711";
    const ENV_SECRET: &str = "planted_env_secret_0815";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The HTTP server the sink posts to: every Authorization header it is sent.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let seen = seen.clone();
            move |headers: axum::http::HeaderMap| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                seen.lock().unwrap().push(auth);
                axum::http::StatusCode::OK
            }
        }),
    );
    runtime.spawn(async move { axum::serve(listener, app).await });

    let secrets = d.join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let properties = secrets.join("http.properties");
    std::fs::write(&properties, format!("token={FILE_SECRET}\n")).unwrap();
    std::fs::write(secrets.join("url"), format!("http://127.0.0.1:{port}/hook")).unwrap();

    let kafka = DevKafka::start(d, &["provided:1"]);
    let controller = Controller::start(d, "127.0.0.1:0", WORKER_TIMEOUT);
    let worker = harness::start_worker_env(
        d,
        "w1",
        &controller.url(),
        &kafka.bootstrap,
        "config.providers=file,env,dir\n\
         config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider\n\
         config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider\n\
         config.providers.env.param.allowlist.pattern=SLUICE_PLANTED.*\n\
         config.providers.dir.class=org.apache.kafka.common.config.provider.DirectoryConfigProvider\n",
        &[("SLUICE_PLANTED_DB", ENV_SECRET.to_string())],
    );
    let api = Api::new(&controller.address);
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);

    api.create(
        "gen",
        &pairs(&datagen("provided", "1", "200")),
        api::TargetState::Running,
    );
    let file_ref = format!("${{file:{}:token}}", properties.display());
    let dir_ref = format!("${{dir:{}:url}}", secrets.display());
    api.create(
        "hook",
        &[
            ("connector.class", "HttpSink"),
            ("topics", "provided"),
            ("tasks.max", "1"),
            ("http.api.url", &dir_ref),
            ("http.headers.authorization", &format!("Bearer {file_ref}")),
            ("batch.max.size", "50"),
            (
                "key.converter",
                "org.apache.kafka.connect.storage.StringConverter",
            ),
            (
                "value.converter",
                "org.apache.kafka.connect.storage.StringConverter",
            ),
        ],
        api::TargetState::Running,
    );
    let postgres = std::env::var("SLUICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "jdbc:postgresql://127.0.0.1:5432/test?user=postgres".into());
    let (base, query) = postgres.split_once('?').unwrap_or((&postgres, ""));
    let (server, _) = base.rsplit_once('/').expect("a database in the URL");
    let url = format!("{server}/${{env:SLUICE_PLANTED_DB}}?{query}");
    api.create(
        "pg",
        &[
            ("connector.class", "JdbcSource"),
            ("connection.url", &url),
            ("mode", "bulk"),
            ("topic.prefix", "pg-"),
            ("tasks.max", "1"),
        ],
        api::TargetState::Running,
    );

    wait_for(
        "the HTTP sink to post with the resolved token",
        TIMEOUT,
        || seen.lock().unwrap().len() >= 3,
    );
    let expected = format!("Bearer {FILE_SECRET}");
    assert!(
        seen.lock().unwrap().iter().all(|a| *a == expected),
        "an Authorization header that is not the resolved token"
    );
    let mut trace = String::new();
    wait_for("pg to fail on its database", TIMEOUT, || {
        trace = api
            .status("pg")
            .map(|s| s.connector.map(|c| c.trace).unwrap_or_default())
            .unwrap_or_default();
        trace.contains("does not exist")
    });
    assert!(trace.contains("[hidden]"), "{trace}");

    // The controller holds the references, never what they resolve to.
    let rest = Rest::new(controller.rest_url());
    let (status, config) = rest.get("/connectors/hook/config");
    assert_eq!(status, 200);
    assert_eq!(config["http.api.url"], dir_ref.as_str());
    assert_eq!(config["http.headers.authorization"], "[hidden]");
    let (status, tasks) = rest.get("/connectors/hook/tasks");
    assert_eq!(status, 200, "{tasks}");
    assert_eq!(
        tasks[0]["config"]["http.api.url"],
        dir_ref.as_str(),
        "{tasks}"
    );
    let (_, pg) = rest.get("/connectors/pg/config");
    assert_eq!(pg["connection.url"], url.as_str());
    let mut answers = String::new();
    for path in [
        "/connectors?expand=status&expand=info",
        "/connectors/pg/status",
        "/connectors/hook/tasks",
        "/connectors/hook/status",
    ] {
        answers.push_str(&rest.get(path).1.to_string());
    }
    let mut stored = Vec::new();
    let mut files = vec![d.join("data")];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            stored.extend(std::fs::read(&path).unwrap_or_default());
        }
    }
    let stored = String::from_utf8_lossy(&stored).into_owned();
    assert!(
        stored.contains("${env:SLUICE_PLANTED_DB}"),
        "the store's files hold no config at all: the search below would prove nothing"
    );
    for (what, text) in [
        ("controller log", controller.process.output()),
        ("worker log", worker.output()),
        ("API answers", answers),
        ("controller store", stored),
    ] {
        for secret in [FILE_SECRET, ENV_SECRET] {
            assert!(!text.contains(secret), "{secret} in the {what}");
        }
    }
}

/// The value of a Prometheus metric in `text`, summed over the series whose labels include
/// `labels` (0 when none does).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

/// GET `/metrics` at `address` (HOST:PORT) with its content type checked.
fn scrape(address: &str) -> String {
    let mut response = ureq::get(format!("http://{address}/metrics"))
        .call()
        .expect("scrape /metrics");
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    response.body_mut().read_to_string().unwrap()
}

/// The address a process printed as `metrics listening on ADDR`.
fn metrics_address(process: &Sluice) -> String {
    let mut address = String::new();
    wait_for("the metrics listener", TIMEOUT, || {
        match process
            .output()
            .lines()
            .find_map(|l| l.strip_prefix("metrics listening on "))
        {
            Some(a) => {
                address = a.trim().to_string();
                true
            }
            None => false,
        }
    });
    address
}

/// `/metrics` of a worker and of the controller during a datagen → Kafka → file pipeline:
/// Kafka Connect's task metrics move while records flow and end equal to the records counted
/// in Kafka and in the file; commits, batch times, connector process memory and CPU, the
/// worker's and the controller's connector and task counts are there.
#[test]
fn metrics_move_with_the_pipeline_and_match_the_records_counted() {
    const RECORDS: usize = 4000;
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["measured:2"]);
    let controller = Controller::start_with(
        dir.path(),
        "127.0.0.1:0",
        WORKER_TIMEOUT,
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let worker = harness::start_worker_flags(
        dir.path(),
        "w1",
        &controller.url(),
        &kafka.bootstrap,
        "",
        &["--metrics-listen", "127.0.0.1:0", "--log-format", "json"],
    );
    let worker_metrics = metrics_address(&worker);
    let controller_metrics = metrics_address(&controller.process);
    let api = Api::new(&controller.address);
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);

    let mut source = datagen("measured", "1", "1000");
    source.push(("count", RECORDS.to_string()));
    api.create("gen", &pairs(&source), api::TargetState::Running);
    let out = dir.path().join("out.txt");
    let sink = file_sink("measured", out.to_str().unwrap());
    api.create("out", &pairs(&sink), api::TargetState::Running);

    let gen = [("connector", "gen"), ("task", "0")];
    let out_task = [("connector", "out"), ("task", "0")];
    let mut first = 0.0;
    wait_for("records to flow", TIMEOUT, || {
        first = metric(
            &scrape(&worker_metrics),
            "sluice_source_record_write_total",
            &gen,
        );
        first > 0.0 && first < RECORDS as f64
    });
    wait_for("the source's count to move", TIMEOUT, || {
        metric(
            &scrape(&worker_metrics),
            "sluice_source_record_write_total",
            &gen,
        ) > first
    });
    wait_for("every record in the file", TIMEOUT, || {
        harness::count_lines(&out) >= RECORDS
    });
    assert_eq!(total_records(&kafka.bootstrap, "measured"), RECORDS as i64);
    wait_for("the sink's counts to settle", TIMEOUT, || {
        metric(
            &scrape(&worker_metrics),
            "sluice_sink_record_read_total",
            &out_task,
        ) == RECORDS as f64
    });
    let text = scrape(&worker_metrics);
    let value = |name: &str, labels: &[(&str, &str)]| metric(&text, name, labels);
    assert_eq!(
        value("sluice_source_record_poll_total", &gen),
        RECORDS as f64,
        "{text}"
    );
    assert_eq!(
        value("sluice_source_record_write_total", &gen),
        RECORDS as f64
    );
    assert_eq!(
        value("sluice_sink_record_send_total", &out_task),
        RECORDS as f64
    );
    assert_eq!(harness::count_lines(&out), RECORDS);
    assert!(
        value("sluice_offset_commit_completion_total", &gen) >= 1.0,
        "{text}"
    );
    assert!(
        value("sluice_offset_commit_completion_total", &out_task) >= 1.0,
        "{text}"
    );
    // Everything read: no lag left (the series is there, at 0).
    assert!(
        text.contains("sluice_sink_consumer_lag{connector=\"out\",task=\"0\"} 0\n"),
        "{text}"
    );
    assert!(
        value("sluice_source_batch_time_seconds_count", &gen) >= 1.0,
        "{text}"
    );
    assert!(
        value("sluice_put_batch_time_seconds_count", &out_task) >= 1.0,
        "{text}"
    );
    assert_eq!(value("sluice_total_record_errors_total", &gen), 0.0);
    assert_eq!(value("sluice_connector_count", &[]), 2.0, "{text}");
    assert_eq!(value("sluice_task_count", &[]), 2.0, "{text}");
    for task in [&gen[..], &out_task[..]] {
        let resident = value("sluice_connector_process_resident_memory_bytes", task);
        assert!(resident > 1e6 && resident < 1e9, "{resident}\n{text}");
        // A quiet connector may have used less than a clock tick of CPU: the series is there.
        let series = format!(
            "sluice_connector_process_cpu_seconds{{connector=\"{}\",task=\"0\"}} ",
            task[0].1
        );
        assert!(text.contains(&series), "{series}\n{text}");
    }
    assert!(
        value("sluice_connector_process_cpu_seconds", &[]) > 0.0,
        "{text}"
    );
    assert_eq!(value("sluice_unit_restarts_total", &[]), 0.0);
    // Heartbeats keep the lease renewed (3/4 of the 2 s worker timeout ahead at most).
    let lease = value("sluice_lease_remaining_seconds", &[]);
    assert!(lease > 0.0 && lease <= 1.5, "{lease}\n{text}");
    assert_eq!(value("sluice_lease_lapses", &[]), 0.0, "{text}");

    let text = scrape(&controller_metrics);
    let value = |name: &str, labels: &[(&str, &str)]| metric(&text, name, labels);
    assert_eq!(value("sluice_connector_count", &[]), 2.0, "{text}");
    assert_eq!(value("sluice_task_count", &[]), 2.0, "{text}");
    assert_eq!(
        value(
            "sluice_connector_task_count",
            &[("connector", "gen"), ("state", "running")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(value("sluice_workers", &[("alive", "true")]), 1.0, "{text}");
    assert!(value("sluice_assignment_generation", &[]) >= 1.0, "{text}");

    // The Grafana dashboard shipped in deploy/ asks only for metrics that exist.
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/grafana/sluice-dashboard.json"),
    )
    .expect("read the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    let scraped = format!("{}{text}", scrape(&worker_metrics));
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expression");
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("sluice_"))
            {
                asked += 1;
                assert!(
                    scraped.contains(name),
                    "the dashboard asks for {name}, never served"
                );
            }
        }
    }
    assert!(asked >= 15, "{asked}");

    // `--log-format json`: every log line of the worker is a JSON object.
    let log = worker.output();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("metrics listening on "))
        .collect();
    assert!(lines.len() > 3, "{log}");
    for line in lines {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            entry["level"].is_string() && entry["fields"]["message"].is_string(),
            "{line}"
        );
    }
}

/// One trace follows a change from the API call into the connector processes: a
/// `PUT /connectors/NAME/config` carrying a W3C `traceparent` makes the controller's span its
/// child; the worker starts the connector in that trace, its connector process validates and
/// plans in it, the worker's submission of the task configs continues it on the controller,
/// and the task's start runs in it on the worker and in the task's own connector process.
/// Every process exports to a real OTLP receiver; heartbeats make no spans.
#[test]
fn one_trace_follows_a_connector_from_the_api_call_into_its_connector_processes() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";
    let collector = harness::otlp::Collector::start();
    let endpoint = collector.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["traced:1"]);
    let controller = Controller::start_with(
        dir.path(),
        "127.0.0.1:0",
        WORKER_TIMEOUT,
        &["--otlp-endpoint", &endpoint],
    );
    let _worker = harness::start_worker_flags(
        dir.path(),
        "w1",
        &controller.url(),
        &kafka.bootstrap,
        "",
        &["--otlp-endpoint", &endpoint],
    );
    let api = Api::new(&controller.address);
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);

    let config: serde_json::Map<String, serde_json::Value> = datagen("traced", "1", "100")
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
        .collect();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-f",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["-H", &format!("traceparent: 00-{TRACE}-{CALLER}-01")])
        .args(["--data", &serde_json::Value::Object(config).to_string()])
        .arg(format!("{}/connectors/gen/config", controller.rest_url()))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "{out:?}");
    wait_for("the task RUNNING", TIMEOUT, || {
        all_in(&tasks(&api, "gen"), 1, api::State::Running, &["w1"])
    });

    // Each step's span, found by service and name, in the caller's trace.
    let find = |spans: &[harness::otlp::SpanSeen], service: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.trace_id == TRACE && s.service == service && s.name == name)
            .cloned()
    };
    let steps = [
        ("sluice-controller", "PUT /connectors/gen/config"),
        ("sluice-worker", "start connector"),
        ("sluice-connector", "sluice.connector.v1.Connector/Validate"),
        ("sluice-connector", "sluice.connector.v1.Connector/Plan"),
        (
            "sluice-controller",
            "sluice.cluster.v1.WorkerControl/SubmitTaskConfigs",
        ),
        ("sluice-worker", "start task"),
        ("sluice-connector", "sluice.connector.v1.Connector/Source"),
        ("sluice-connector", "start source task"),
    ];
    let deadline = Instant::now() + TIMEOUT;
    let spans = loop {
        let spans = collector.spans();
        let missing: Vec<_> = steps
            .iter()
            .filter(|(service, name)| find(&spans, service, name).is_none())
            .collect();
        if missing.is_empty() {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "no span for {missing:?}; received: {spans:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let span = |i: usize| find(&spans, steps[i].0, steps[i].1).unwrap();
    let parent_of = |child: usize, parent: &str| {
        assert_eq!(
            span(child).parent_id,
            parent,
            "{:?}'s parent; every span of the trace: {:#?}",
            steps[child],
            spans
                .iter()
                .filter(|s| s.trace_id == TRACE)
                .collect::<Vec<_>>()
        );
    };
    parent_of(0, CALLER);
    parent_of(1, &span(0).span_id);
    parent_of(2, &span(1).span_id);
    parent_of(3, &span(1).span_id);
    parent_of(4, &span(1).span_id);
    parent_of(5, &span(4).span_id);
    parent_of(6, &span(5).span_id);
    parent_of(7, &span(6).span_id);
    // The task's process is not the planning instance's: two connector processes took part.
    assert_eq!(span(7).attribute("connector"), Some("gen"), "{:?}", span(7));
    // Heartbeats and status reports are not traced.
    assert!(
        !spans
            .iter()
            .any(|s| s.name.ends_with("/Heartbeat") || s.name.ends_with("/ReportStatus")),
        "{spans:#?}"
    );
}

/// A rolling restart with `sluice cluster drain`: each of three workers in turn is drained
/// (its units move to the other two, each stopped and committed before it starts there), exits
/// by itself with status 0, and is started again; datagen's sequence numbers and a file sink
/// count at the end: nothing lost, nothing replayed — in Kafka or in the sink's file.
#[test]
fn a_rolling_restart_with_drain_moves_every_unit_first_and_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["rolled:6"]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", WORKER_TIMEOUT);
    let api = Api::new(&controller.address);
    let ids = ["w1", "w2", "w3"];
    let mut workers: BTreeMap<&str, Sluice> = ids
        .into_iter()
        .map(|id| {
            (
                id,
                start_worker(dir.path(), id, &controller.url(), &kafka.bootstrap),
            )
        })
        .collect();
    wait_for("three workers", TIMEOUT, || api.live_workers() == 3);
    api.create(
        "gen",
        &pairs(&datagen("rolled", "6", "1200")),
        api::TargetState::Running,
    );
    let out = dir.path().join("rolled.txt");
    let sink = file_sink("rolled", out.to_str().unwrap());
    api.create("out", &pairs(&sink), api::TargetState::Running);
    // Every task of `name` RUNNING, on `on` only (the spread is the scheduler's).
    let running_on = |name: &str, n: usize, on: &[&str]| {
        let tasks = tasks(&api, name);
        tasks.len() == n
            && tasks
                .values()
                .all(|(s, w)| *s == api::State::Running && on.contains(&w.as_str()))
    };
    wait_for("every task RUNNING", TIMEOUT, || {
        running_on("gen", 6, &ids) && running_on("out", 1, &ids)
    });

    for id in ids {
        let flowing = total_records(&kafka.bootstrap, "rolled");
        wait_for("records flowing", TIMEOUT, || {
            total_records(&kafka.bootstrap, "rolled") > flowing + 500
        });
        let (code, stdout, stderr) = run_sluice(
            dir.path(),
            &[
                "cluster",
                "--controller",
                &controller.url(),
                "drain",
                id,
                "--timeout",
                "60",
            ],
        );
        assert_eq!(code, 0, "drain {id}: {stdout}{stderr}");
        assert!(stdout.contains(&format!("{id} drained")), "{stdout}");
        let status = workers.get_mut(id).unwrap().wait(Duration::from_secs(20));
        assert!(
            status.success(),
            "{id} exits by itself, cleanly: {status:?}"
        );
        let others: Vec<&str> = ids.iter().copied().filter(|w| *w != id).collect();
        // Its units were placed elsewhere before it exited (a plain stop would leave them on
        // it until the controller gives it up)...
        for name in ["gen", "out"] {
            let placed = tasks(&api, name);
            assert!(
                placed.values().all(|(_, w)| w != id),
                "{id} exited with {name}'s units still on it: {placed:?}"
            );
        }
        // ...and released before it exited; their new owners start them.
        wait_for("its units RUNNING on the other two", TIMEOUT, || {
            running_on("gen", 6, &others) && running_on("out", 1, &others)
        });
        workers.insert(
            id,
            start_worker(dir.path(), id, &controller.url(), &kafka.bootstrap),
        );
        wait_for("the worker back", TIMEOUT, || api.live_workers() == 3);
    }
    // An unknown worker cannot be drained.
    let (code, _, stderr) = run_sluice(
        dir.path(),
        &[
            "cluster",
            "--controller",
            &controller.url(),
            "drain",
            "nobody",
        ],
    );
    assert_eq!(code, 3, "NOT_FOUND's exit code");
    assert!(stderr.contains("no connected worker nobody"), "{stderr}");

    api.target("gen", "pause");
    wait_for("datagen PAUSED", TIMEOUT, || {
        let gen = tasks(&api, "gen");
        gen.len() == 6 && gen.values().all(|(s, _)| *s == api::State::Paused)
    });
    let total = total_records(&kafka.bootstrap, "rolled") as usize;
    wait_for("the sink to catch up", TIMEOUT, || {
        harness::count_lines(&out) >= total
    });
    let (records, lost, duplicates, seen) = verify_datagen(&kafka.bootstrap, "rolled");
    eprintln!("rolling restart: {records} records, {lost} lost, {duplicates} duplicated");
    assert_eq!(seen, 6);
    assert_eq!(
        (lost, duplicates),
        (0, 0),
        "nothing lost or replayed in Kafka"
    );
    let lines = std::fs::read_to_string(&out).unwrap();
    let distinct: std::collections::BTreeSet<&str> = lines.lines().collect();
    assert_eq!(
        (lines.lines().count(), distinct.len()),
        (total, total),
        "the sink wrote each record once"
    );
}
