//! Control-plane scale: a controller in its own process, N simulated workers in this process
//! speaking the real worker protocol over gRPC (join, assignment stream, heartbeats, task
//! config submissions, status reports), and M connectors created through the public API.
//! Each figure is printed beside a baseline measured in the same run:
//! - assignment: a worker's join until every worker holds the new complete assignment, vs the
//!   pure scheduler computing the same placement in-process;
//! - API latency p50/p99 of GetConnectorStatus under that load, vs Health/Check on the same
//!   controller at the same time;
//! - controller RSS with M connectors, vs the same controller empty;
//! - settle after 10 workers die: until every unit runs on a survivor and reports RUNNING, vs
//!   the floor: one worker timeout after the last heartbeat any of them sent.
//!
//! `BENCH_CONTROLLER_LOG=info` shows the controller's log (a `SLUICE_LOG` filter) on stderr.
//!
//! `cargo run --release -p sluice-bench --bin control-plane -- [--connectors 10000] [--workers 100] [--json]`

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use sluice_controller::scheduler::{self, Placement, Slot, Work};
use sluice_model::{UnitKey, WorkerId};
use sluice_proto::api::v1::{self as api, connector_service_client::ConnectorServiceClient};
use sluice_proto::cluster::v1::{self as wire, worker_control_client::WorkerControlClient};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    connectors: usize,
    #[arg(long, default_value_t = 100)]
    workers: usize,
    /// Workers killed for the settle figure.
    #[arg(long, default_value_t = 10)]
    kill: usize,
    /// The controller's --worker-timeout, seconds.
    #[arg(long, default_value_t = 3.0)]
    worker_timeout: f64,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Internal: run the controller (DATA_DIR) in this process.
    #[arg(long, hide = true)]
    serve_controller: Option<std::path::PathBuf>,
}

const CLASS: &str = "DatagenSource";
const TIMEOUT: Duration = Duration::from_secs(600);

struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    baseline: f64,
    baseline_name: &'static str,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    if let Some(dir) = &args.serve_controller {
        if let Ok(filter) = std::env::var("SLUICE_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .init();
        }
        let options = sluice_controller::ControllerOptions {
            listen: "127.0.0.1:0".parse()?,
            rest_listen: None,
            data_dir: dir.clone(),
            worker_timeout: Duration::from_secs_f64(args.worker_timeout),
            log_control: None,
            initial_levels: Default::default(),
            tls: None,
            tokens: None,
            insecure: false,
            health_listen: None,
        };
        return runtime.block_on(sluice_controller::run(options, CancellationToken::new()));
    }
    let figures = runtime.block_on(run(&args))?;
    for f in &figures {
        let ratio = f.value / f.baseline.max(1e-9);
        if args.json {
            println!(
                "{}",
                serde_json::json!({"name": f.name, "value": f.value, "unit": f.unit,
                    "baseline": f.baseline, "baseline_name": f.baseline_name, "ratio": ratio})
            );
        } else {
            println!(
                "{:<28} {:>12.3} {:<3}  baseline {:<28} {:>10.3} {:<3}  ratio {:>7.2}",
                f.name, f.value, f.unit, f.baseline_name, f.baseline, f.unit, ratio
            );
        }
    }
    Ok(())
}

/// The controller as a child process; killed on drop.
struct ControllerProcess {
    child: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_controller(args: &Args) -> anyhow::Result<ControllerProcess> {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--serve-controller")
        .arg(dir.path())
        .arg("--worker-timeout")
        .arg(args.worker_timeout.to_string())
        .env(
            "SLUICE_LOG",
            std::env::var("BENCH_CONTROLLER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("start the controller")?;
    let stdout = child.stdout.take().context("controller stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let address = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(a) = line.strip_prefix("listening on ") {
                    break a.trim().to_string();
                }
            }
            _ => bail!("the controller exited before listening"),
        }
    };
    let echo = std::env::var_os("BENCH_CONTROLLER_LOG").is_some();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if echo {
                eprintln!("controller: {line}");
            }
        }
    });
    Ok(ControllerProcess {
        child,
        address,
        _dir: dir,
    })
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What a simulated worker holds: its latest assignment.
#[derive(Default)]
struct Held {
    generation: u64,
    planning: usize,
    tasks: usize,
    /// When the last heartbeat was sent: the controller may declare the worker dead one
    /// timeout after it, and not before.
    last_beat: Option<Instant>,
}

struct SimWorker {
    held: Arc<Mutex<Held>>,
    stop: CancellationToken,
}

fn plugin() -> wire::PluginClass {
    wire::PluginClass {
        class_name: CLASS.into(),
        aliases: vec![],
        r#type: api::ConnectorType::Source as i32,
        version: "bench".into(),
        configs: vec![],
    }
}

/// A worker speaking the real protocol: plans what it is given (one task per connector),
/// reports the units it starts RUNNING and those it gives up (all it holds once after
/// joining), heartbeats every second.
async fn sim_worker(channel: Channel, id: String, held: Arc<Mutex<Held>>, stop: CancellationToken) {
    let mut client = WorkerControlClient::new(channel)
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024);
    let join = wire::JoinRequest {
        worker_id: id.clone(),
        plugins: vec![plugin()],
        capacity: 0,
        version: "bench".into(),
        broken_plugins: Vec::new(),
        accepts_deltas: true,
    };
    let response = match client.join(join).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{id}: join failed: {e}");
            return;
        }
    };
    let mut stream = response.into_inner();
    let beat = {
        let mut client = client.clone();
        let id = id.clone();
        let stop = stop.clone();
        let held = held.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        held.lock().unwrap().last_beat = Some(Instant::now());
                        let _ = client.heartbeat(wire::HeartbeatRequest { worker_id: id.clone(), generation: 0 }).await;
                    }
                    _ = stop.cancelled() => return,
                }
            }
        })
    };
    // The stream is read as it arrives, as a worker does: an assignment left unread while this
    // loop awaits its own calls would hold HTTP/2 flow-control window that those calls'
    // answers (and the heartbeats) on the same connection need. What arrived meanwhile is
    // combined into one (`Assignment::then`).
    let (arrived, mut unread) = tokio::sync::mpsc::unbounded_channel::<wire::Assignment>();
    let reader = tokio::spawn(async move {
        while let Ok(Some(assignment)) = stream.message().await {
            if arrived.send(assignment).is_err() {
                return;
            }
        }
    });
    // What this worker runs, by connector: its planning instance, and its tasks.
    let mut runs: BTreeMap<String, (bool, BTreeSet<u32>)> = BTreeMap::new();
    let mut planned: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut first = true;
    loop {
        let mut assignment = tokio::select! {
            next = unread.recv() => match next {
                Some(a) => a,
                None => break,
            },
            _ = stop.cancelled() => break,
        };
        while let Ok(more) = unread.try_recv() {
            assignment = assignment.then(more);
        }
        // The slices this assignment sets, and the connectors whose slice it replaces.
        let mut slices: BTreeMap<String, (bool, BTreeSet<u32>)> = assignment
            .connectors
            .iter()
            .map(|c| (c.name.clone(), (false, BTreeSet::new())))
            .collect();
        for name in &assignment.planning {
            slices.entry(name.clone()).or_default().0 = true;
        }
        for t in &assignment.tasks {
            slices
                .entry(t.connector.clone())
                .or_default()
                .1
                .insert(t.task);
        }
        let named: BTreeSet<String> = if assignment.delta {
            slices
                .keys()
                .chain(&assignment.removed_connectors)
                .cloned()
                .collect()
        } else {
            slices.keys().chain(runs.keys()).cloned().collect()
        };
        let versions: BTreeMap<&str, u64> = assignment
            .connectors
            .iter()
            .map(|c| (c.name.as_str(), c.config_version))
            .collect();
        // As a worker reports: the full set once after joining, then what changed (units
        // started RUNNING, units released).
        let mut started: Vec<(String, Option<u32>)> = Vec::new();
        let mut released: Vec<wire::UnitRef> = Vec::new();
        let mut to_plan = Vec::new();
        for name in named {
            let old = runs.remove(&name).unwrap_or_default();
            let new = slices.remove(&name).unwrap_or_default();
            let units = |(planning, tasks): &(bool, BTreeSet<u32>)| {
                let planning = planning.then_some(None);
                planning
                    .into_iter()
                    .chain(tasks.iter().map(|t| Some(*t)))
                    .collect::<BTreeSet<_>>()
            };
            let (before, after) = (units(&old), units(&new));
            for task in after.difference(&before) {
                started.push((name.clone(), *task));
            }
            for task in before.difference(&after) {
                released.push(wire::UnitRef {
                    connector: name.clone(),
                    task: *task,
                });
            }
            if new.0 {
                let version = versions.get(name.as_str()).copied().unwrap_or(0);
                if planned.insert((name.clone(), version)) {
                    to_plan.push((name.clone(), version));
                }
            }
            if !after.is_empty() {
                runs.insert(name, new);
            }
        }
        // Held as soon as applied, as a worker holds it; planning and reporting follow.
        {
            let mut h = held.lock().unwrap();
            h.generation = assignment.generation;
            h.planning = runs.values().filter(|(planning, _)| *planning).count();
            h.tasks = runs.values().map(|(_, tasks)| tasks.len()).sum();
        }
        for (name, version) in to_plan {
            let _ = client
                .submit_task_configs(wire::SubmitTaskConfigsRequest {
                    worker_id: id.clone(),
                    connector: name,
                    config_version: version,
                    tasks: vec![wire::TaskConfig {
                        config: [("task".to_string(), "0".to_string())].into(),
                    }],
                    r#type: api::ConnectorType::Source as i32,
                })
                .await;
        }
        let full = std::mem::take(&mut first);
        if full {
            started = runs
                .iter()
                .flat_map(|(name, (planning, tasks))| {
                    let planning = planning.then_some((name.clone(), None));
                    planning
                        .into_iter()
                        .chain(tasks.iter().map(|t| (name.clone(), Some(*t))))
                })
                .collect();
        }
        let statuses: Vec<wire::UnitStatus> = started
            .into_iter()
            .map(|(connector, task)| wire::UnitStatus {
                topics: task
                    .map(|_| vec![format!("t-{connector}")])
                    .unwrap_or_default(),
                connector,
                task,
                state: api::State::Running as i32,
                trace: String::new(),
            })
            .collect();
        if full || !statuses.is_empty() || !released.is_empty() {
            let _ = client
                .report_status(wire::StatusReport {
                    released,
                    worker_id: id.clone(),
                    generation: assignment.generation,
                    full,
                    statuses,
                })
                .await;
        }
    }
    reader.abort();
    beat.abort();
}

fn spawn_worker(channel: &Channel, id: String) -> SimWorker {
    let held = Arc::new(Mutex::new(Held::default()));
    let stop = CancellationToken::new();
    tokio::spawn(sim_worker(channel.clone(), id, held.clone(), stop.clone()));
    SimWorker { held, stop }
}

/// Waits until the live workers together hold `planning` planning units and `tasks` tasks.
async fn wait_held(
    workers: &BTreeMap<String, SimWorker>,
    planning: usize,
    tasks: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    let mut report = Instant::now() + Duration::from_secs(10);
    loop {
        let (p, t) = workers.values().fold((0, 0), |(p, t), w| {
            let h = w.held.lock().unwrap();
            (p + h.planning, t + h.tasks)
        });
        if p == planning && t == tasks {
            return Ok(());
        }
        if Instant::now() > report {
            eprintln!("  waiting: workers hold {p} planning units and {t} tasks of {planning} and {tasks}");
            report = Instant::now() + Duration::from_secs(10);
        }
        if Instant::now() > deadline {
            bail!("workers hold {p} planning units and {t} tasks, want {planning} and {tasks}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn running_tasks(client: &mut ConnectorServiceClient<Channel>) -> anyhow::Result<usize> {
    let list = client
        .list_connectors(api::ListConnectorsRequest {
            expand_status: true,
            expand_info: false,
        })
        .await?
        .into_inner();
    Ok(list
        .connectors
        .iter()
        .filter_map(|c| c.status.as_ref())
        .flat_map(|s| s.tasks.iter())
        .filter(|t| t.state == api::State::Running as i32)
        .count())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(args: &Args) -> anyhow::Result<Vec<Figure>> {
    let controller = start_controller(args)?;
    let url = format!("http://{}", controller.address);
    let channel = Endpoint::from_shared(url.clone())?.connect().await?;
    let mut api_client =
        ConnectorServiceClient::new(channel.clone()).max_decoding_message_size(256 * 1024 * 1024);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = rss_mib(controller.child.id());

    // Workers: one HTTP/2 connection per 10 workers, as separate machines would multiplex
    // less, but 100 connections to one process measure the same server work.
    let mut channels = Vec::new();
    for _ in 0..args.workers.div_ceil(10) {
        channels.push(Endpoint::from_shared(url.clone())?.connect().await?);
    }
    let mut workers: BTreeMap<String, SimWorker> = BTreeMap::new();
    for i in 0..args.workers {
        let id = format!("w{i:03}");
        workers.insert(id.clone(), spawn_worker(&channels[i / 10], id));
    }

    let mut cluster =
        sluice_proto::api::v1::cluster_service_client::ClusterServiceClient::new(channel.clone());
    let deadline = Instant::now() + TIMEOUT;
    while cluster
        .list_workers(api::ListWorkersRequest {})
        .await?
        .into_inner()
        .workers
        .len()
        < args.workers
    {
        if Instant::now() > deadline {
            bail!("workers did not join");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("creating {} connectors...", args.connectors);
    let created = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut creators = Vec::new();
    for _ in 0..32 {
        let mut client = api_client.clone();
        let next = next.clone();
        let total = args.connectors;
        creators.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, tonic::Status>(());
                }
                client
                    .create_connector(api::CreateConnectorRequest {
                        name: format!("c{i:05}"),
                        config: [
                            ("connector.class".to_string(), CLASS.to_string()),
                            ("tasks.max".to_string(), "1".to_string()),
                            ("topic".to_string(), format!("t{i}")),
                        ]
                        .into(),
                        initial_state: api::TargetState::Running as i32,
                    })
                    .await?;
            }
        }));
    }
    for c in creators {
        c.await??;
    }
    let create_secs = created.elapsed().as_secs_f64();
    eprintln!("create calls done in {create_secs:.1} s");
    wait_held(&workers, args.connectors, args.connectors).await?;
    let deadline = Instant::now() + TIMEOUT;
    while running_tasks(&mut api_client).await? < args.connectors {
        if Instant::now() > deadline {
            bail!("tasks not all RUNNING");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let converged_secs = created.elapsed().as_secs_f64();
    eprintln!(
        "{} connectors created in {create_secs:.1} s, all tasks RUNNING after {converged_secs:.1} s",
        args.connectors
    );
    let loaded_rss = rss_mib(controller.child.id());

    // Baseline for assignment: the pure scheduler on the same work, 101 workers.
    let work: Vec<Work> = (0..args.connectors)
        .flat_map(|i| {
            let name = format!("c{i:05}");
            [
                Work {
                    unit: UnitKey::planning(&name),
                    class: CLASS.into(),
                },
                Work {
                    unit: UnitKey::task(&name, 0),
                    class: CLASS.into(),
                },
            ]
        })
        .collect();
    let slot = |id: String| Slot {
        id: WorkerId::new(id),
        classes: [CLASS.to_string()].into(),
        capacity: None,
    };
    let slots: Vec<Slot> = (0..args.workers)
        .map(|i| slot(format!("w{i:03}")))
        .collect();
    let previous = scheduler::assign(&work, &slots, &Placement::new());
    let mut more = slots.clone();
    more.push(slot("w-new".into()));
    let computed = Instant::now();
    let placement = scheduler::assign(&work, &more, &previous);
    let compute_secs = computed.elapsed().as_secs_f64();
    let new_share = placement.values().filter(|w| *w == "w-new").count();

    // A new worker joins: until every worker holds the new assignment.
    let joined = Instant::now();
    workers.insert("w-new".into(), spawn_worker(&channel, "w-new".into()));
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let held = {
            let h = workers["w-new"].held.lock().unwrap();
            h.planning + h.tasks
        };
        if held == new_share {
            break;
        }
        if Instant::now() > deadline {
            bail!("the new worker holds {held} units, want {new_share}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    wait_held(&workers, args.connectors, args.connectors).await?;
    let deliver_secs = joined.elapsed().as_secs_f64();

    // API latency under load (workers heartbeating and reporting), vs Health/Check.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let (mut status_ms, mut health_ms) = (Vec::new(), Vec::new());
    for i in 0..2000 {
        let t = Instant::now();
        api_client
            .get_connector_status(api::ConnectorRef {
                name: format!("c{:05}", (i * 7919) % args.connectors),
            })
            .await?;
        status_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        health_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    status_ms.sort_by(f64::total_cmp);
    health_ms.sort_by(f64::total_cmp);

    // 10 workers die (streams dropped, heartbeats stop): until every unit is held by a
    // survivor and every task reports RUNNING again.
    let victims: Vec<String> = workers.keys().take(args.kill).cloned().collect();
    let killed = Instant::now();
    let mut floor = killed;
    for id in &victims {
        if let Some(w) = workers.remove(id) {
            w.stop.cancel();
            let beat = w.held.lock().unwrap().last_beat.unwrap_or(killed);
            floor = floor.max(beat + Duration::from_secs_f64(args.worker_timeout));
        }
    }
    // The soonest every victim can be found dead: one timeout after its last heartbeat.
    let floor_secs = floor.duration_since(killed).as_secs_f64();
    wait_held(&workers, args.connectors, args.connectors).await?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let list = api_client
            .list_connectors(api::ListConnectorsRequest {
                expand_status: true,
                expand_info: false,
            })
            .await?
            .into_inner();
        let settled = list
            .connectors
            .iter()
            .filter_map(|c| c.status.as_ref())
            .flat_map(|s| s.tasks.iter())
            .filter(|t| t.state == api::State::Running as i32 && !victims.contains(&t.worker_id))
            .count();
        if settled == args.connectors {
            break;
        }
        if Instant::now() > deadline {
            bail!("{settled} of {} tasks settled", args.connectors);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settle_secs = killed.elapsed().as_secs_f64();

    for w in workers.values() {
        w.stop.cancel();
    }
    Ok(vec![
        Figure {
            name: "assignment_on_join",
            value: deliver_secs * 1000.0,
            unit: "ms",
            baseline: compute_secs * 1000.0,
            baseline_name: "scheduler_compute_only",
        },
        Figure {
            name: "get_status_p50",
            value: percentile(&status_ms, 0.5),
            unit: "ms",
            baseline: percentile(&health_ms, 0.5),
            baseline_name: "health_check_p50",
        },
        Figure {
            name: "get_status_p99",
            value: percentile(&status_ms, 0.99),
            unit: "ms",
            baseline: percentile(&health_ms, 0.99),
            baseline_name: "health_check_p99",
        },
        Figure {
            name: "controller_rss_loaded",
            value: loaded_rss,
            unit: "MiB",
            baseline: idle_rss,
            baseline_name: "controller_rss_empty",
        },
        Figure {
            name: "settle_after_kill",
            value: settle_secs,
            unit: "s",
            baseline: floor_secs,
            baseline_name: "last_heartbeat_plus_timeout",
        },
        Figure {
            name: "create_all_connectors",
            value: converged_secs,
            unit: "s",
            baseline: create_secs,
            baseline_name: "create_calls_only",
        },
    ])
}
