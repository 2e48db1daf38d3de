//! Delivery guarantees and failure handling in distributed mode, counted: datagen's sequence
//! numbers read back from Kafka by the verifier, processes killed with SIGKILL, restarts
//! observed through the API and the worker's log.

mod harness;

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
    let v = verify(&kafka.bootstrap, "crashy", false, None);
    assert_eq!((v.lost, v.duplicates, v.tasks), (0, 0, 1), "{v:?}");
}
