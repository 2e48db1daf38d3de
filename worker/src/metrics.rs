//! The worker's Prometheus metrics, served at `/metrics` on `--metrics-listen`: Kafka Connect's
//! task and worker metrics under their names (`source-record-poll-total` is
//! `sluice_source_record_poll_total`; Kafka's `-rate` figures are Prometheus's `rate()` of the
//! totals) with `connector` and `task` labels, and what only Sluice has: restarts and backoff,
//! each connector process's memory and CPU, batches waiting on the connector.
//!
//! One worker runs per process, so the metrics are the process's ([`worker`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tokio_util::sync::CancellationToken;

/// A task's labels; the connector instance (planning) is `task="connector"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct TaskLabels {
    pub connector: String,
    pub task: String,
}

impl TaskLabels {
    pub fn new(connector: &str, task: Option<u32>) -> TaskLabels {
        TaskLabels {
            connector: connector.to_string(),
            task: task.map_or_else(|| "connector".to_string(), |t| t.to_string()),
        }
    }
}

fn batch_seconds() -> Histogram {
    // 100 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 9))
}

/// Every metric of this worker.
pub struct WorkerMetrics {
    registry: Registry,
    source_record_poll: Family<TaskLabels, Counter>,
    source_record_write: Family<TaskLabels, Counter>,
    sink_record_read: Family<TaskLabels, Counter>,
    sink_record_send: Family<TaskLabels, Counter>,
    offset_commit_completion: Family<TaskLabels, Counter>,
    put_batch_time: Family<TaskLabels, Histogram, fn() -> Histogram>,
    source_batch_time: Family<TaskLabels, Histogram, fn() -> Histogram>,
    sink_batches_in_flight: Family<TaskLabels, Gauge>,
    sink_consumer_lag: Family<TaskLabels, Gauge>,
    total_record_errors: Family<TaskLabels, Counter>,
    total_records_skipped: Family<TaskLabels, Counter>,
    deadletterqueue_produce_requests: Family<TaskLabels, Counter>,
    deadletterqueue_produce_failures: Family<TaskLabels, Counter>,
    restarts: Family<TaskLabels, Counter>,
    restarting: Family<TaskLabels, Gauge>,
    process_resident: Family<TaskLabels, Gauge>,
    process_cpu: Family<TaskLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    connector_count: Gauge,
    task_count: Gauge,
    completed_rebalances: Counter,
    lease_remaining: Gauge<f64, std::sync::atomic::AtomicU64>,
    lease_lapses: Gauge,
    /// The worker's lease on its assignment (distributed mode), read at each scrape.
    lease: Mutex<Option<std::sync::Arc<crate::lease::Lease>>>,
    /// Connector processes alive, by the unit they run: read at each scrape.
    processes: Mutex<BTreeMap<TaskLabels, u32>>,
}

impl WorkerMetrics {
    fn new() -> WorkerMetrics {
        let mut registry = Registry::with_prefix("sluice");
        let m = WorkerMetrics {
            source_record_poll: Family::default(),
            source_record_write: Family::default(),
            sink_record_read: Family::default(),
            sink_record_send: Family::default(),
            offset_commit_completion: Family::default(),
            put_batch_time: Family::new_with_constructor(batch_seconds),
            source_batch_time: Family::new_with_constructor(batch_seconds),
            sink_batches_in_flight: Family::default(),
            sink_consumer_lag: Family::default(),
            total_record_errors: Family::default(),
            total_records_skipped: Family::default(),
            deadletterqueue_produce_requests: Family::default(),
            deadletterqueue_produce_failures: Family::default(),
            restarts: Family::default(),
            restarting: Family::default(),
            process_resident: Family::default(),
            process_cpu: Family::default(),
            connector_count: Gauge::default(),
            task_count: Gauge::default(),
            completed_rebalances: Counter::default(),
            lease_remaining: Gauge::default(),
            lease_lapses: Gauge::default(),
            lease: Mutex::default(),
            processes: Mutex::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "source_record_poll",
            "Records the source task's connector returned (source-record-poll-total)",
            m.source_record_poll.clone(),
        );
        r.register(
            "source_record_write",
            "Records handed to Kafka after transforms (source-record-write-total)",
            m.source_record_write.clone(),
        );
        r.register(
            "sink_record_read",
            "Records read from Kafka by the sink task (sink-record-read-total)",
            m.sink_record_read.clone(),
        );
        r.register(
            "sink_record_send",
            "Records sent to the sink task's connector (sink-record-send-total)",
            m.sink_record_send.clone(),
        );
        r.register(
            "offset_commit_completion",
            "Offset commits of the task (offset-commit-completion-total)",
            m.offset_commit_completion.clone(),
        );
        r.register_with_unit(
            "put_batch_time",
            "Time from sending a batch to the sink connector to its acknowledgement (put-batch-*-time-ms)",
            Unit::Seconds,
            m.put_batch_time.clone(),
        );
        r.register_with_unit(
            "source_batch_time",
            "Time from a batch leaving the source connector to its records acknowledged by Kafka and its positions committed (the connector's Ack)",
            Unit::Seconds,
            m.source_batch_time.clone(),
        );
        r.register(
            "sink_batches_in_flight",
            "Batches sent to the sink connector and not yet acknowledged (credits in use)",
            m.sink_batches_in_flight.clone(),
        );
        r.register(
            "sink_consumer_lag",
            "Records in the sink task's partitions past what it read (high watermark - next offset)",
            m.sink_consumer_lag.clone(),
        );
        r.register(
            "total_record_errors",
            "Records that failed in a stage (total-record-errors)",
            m.total_record_errors.clone(),
        );
        r.register(
            "total_records_skipped",
            "Failed records tolerated and skipped (total-records-skipped)",
            m.total_records_skipped.clone(),
        );
        r.register(
            "deadletterqueue_produce_requests",
            "Records written to the dead-letter queue (deadletterqueue-produce-requests)",
            m.deadletterqueue_produce_requests.clone(),
        );
        r.register(
            "deadletterqueue_produce_failures",
            "Dead-letter queue writes that failed (deadletterqueue-produce-failures)",
            m.deadletterqueue_produce_failures.clone(),
        );
        r.register(
            "unit_restarts",
            "Restarts after failures of a connector instance or task",
            m.restarts.clone(),
        );
        r.register(
            "unit_restarting",
            "1 while a connector instance or task waits out its restart backoff",
            m.restarting.clone(),
        );
        r.register_with_unit(
            "connector_process_resident_memory",
            "Resident memory of the unit's connector process",
            Unit::Bytes,
            m.process_resident.clone(),
        );
        r.register_with_unit(
            "connector_process_cpu",
            "CPU time the unit's connector process used",
            Unit::Seconds,
            m.process_cpu.clone(),
        );
        r.register(
            "connector_count",
            "Connector instances running on this worker (connector-count)",
            m.connector_count.clone(),
        );
        r.register(
            "task_count",
            "Tasks running on this worker (task-count)",
            m.task_count.clone(),
        );
        r.register(
            "completed_rebalances",
            "Assignments received from the controller (completed-rebalances-total)",
            m.completed_rebalances.clone(),
        );
        r.register_with_unit(
            "lease_remaining",
            "How long this worker's lease on its assignment holds (exactly-once tasks commit only within it)",
            Unit::Seconds,
            m.lease_remaining.clone(),
        );
        r.register(
            "lease_lapses",
            "Times the lease ran out before the worker rejoined (its exactly-once tasks restarted)",
            m.lease_lapses.clone(),
        );
        WorkerMetrics { registry, ..m }
    }

    /// The handles a task counts with; only a sink's or only a source's series are listed.
    pub fn task(&self, connector: &str, task: u32, sink: bool) -> TaskMetrics {
        let labels = TaskLabels::new(connector, Some(task));
        let listed = |family: &Family<TaskLabels, Counter>, mine: bool| {
            if mine {
                family.get_or_create_owned(&labels)
            } else {
                Counter::default()
            }
        };
        TaskMetrics {
            source_record_poll: listed(&self.source_record_poll, !sink),
            source_record_write: listed(&self.source_record_write, !sink),
            sink_record_read: listed(&self.sink_record_read, sink),
            sink_record_send: listed(&self.sink_record_send, sink),
            offset_commit_completion: self.offset_commit_completion.get_or_create_owned(&labels),
            put_batch_time: if sink {
                self.put_batch_time.get_or_create_owned(&labels)
            } else {
                batch_seconds()
            },
            source_batch_time: if sink {
                batch_seconds()
            } else {
                self.source_batch_time.get_or_create_owned(&labels)
            },
            sink_batches_in_flight: if sink {
                self.sink_batches_in_flight.get_or_create_owned(&labels)
            } else {
                Gauge::default()
            },
            sink_consumer_lag: if sink {
                self.sink_consumer_lag.get_or_create_owned(&labels)
            } else {
                Gauge::default()
            },
            total_record_errors: self.total_record_errors.get_or_create_owned(&labels),
            total_records_skipped: self.total_records_skipped.get_or_create_owned(&labels),
            deadletterqueue_produce_requests: self
                .deadletterqueue_produce_requests
                .get_or_create_owned(&labels),
            deadletterqueue_produce_failures: self
                .deadletterqueue_produce_failures
                .get_or_create_owned(&labels),
        }
    }

    /// A restart of `unit` begins its backoff.
    pub fn restarting(&self, labels: &TaskLabels) {
        self.restarts.get_or_create(labels).inc();
        self.restarting.get_or_create(labels).set(1);
    }

    /// `unit` runs (again, or for the first time: its restart series are listed at 0).
    pub fn restarted(&self, labels: &TaskLabels) {
        self.restarting.get_or_create(labels).set(0);
        drop(self.restarts.get_or_create(labels));
    }

    /// The connector process of `unit` runs as `pid`.
    pub fn process_started(&self, labels: TaskLabels, pid: u32) {
        self.processes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(labels, pid);
    }

    pub fn process_ended(&self, labels: &TaskLabels, pid: u32) {
        let mut processes = self.processes.lock().unwrap_or_else(|p| p.into_inner());
        if processes.get(labels) == Some(&pid) {
            processes.remove(labels);
            self.process_resident.remove(labels);
            self.process_cpu.remove(labels);
        }
    }

    pub fn set_units(&self, connectors: usize, tasks: usize) {
        self.connector_count.set(connectors as i64);
        self.task_count.set(tasks as i64);
    }

    /// Reads `lease` at each scrape.
    pub fn watch_lease(&self, lease: std::sync::Arc<crate::lease::Lease>) {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(lease);
    }

    pub fn assignment_received(&self) {
        self.completed_rebalances.inc();
    }

    /// The Prometheus text exposition of every metric, processes read now.
    pub fn render(&self) -> String {
        let processes = self
            .processes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (labels, pid) in processes {
            match process_usage(pid) {
                Some((resident, cpu)) => {
                    self.process_resident
                        .get_or_create(&labels)
                        .set(resident as i64);
                    self.process_cpu.get_or_create(&labels).set(cpu);
                }
                // Gone without its end told (its unit was dropped mid-launch): unlisted.
                None => self.process_ended(&labels, pid),
            }
        }
        if let Some(lease) = &*self.lease.lock().unwrap_or_else(|p| p.into_inner()) {
            let (left, lapses) = lease.standing();
            self.lease_remaining.set(left.as_secs_f64());
            self.lease_lapses.set(lapses as i64);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// (resident bytes, CPU seconds) of a process, from /proc; `None` once it is gone.
fn process_usage(pid: u32) -> Option<(u64, f64)> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let (page, hz) = unsafe {
        (
            libc::sysconf(libc::_SC_PAGESIZE),
            libc::sysconf(libc::_SC_CLK_TCK),
        )
    };
    let (page, hz) = (u64::try_from(page).ok()?, hz.max(1) as f64);
    Some((pages * page, ticks as f64 / hz))
}

/// One task's handles (cheap to clone: each is an `Arc`).
#[derive(Clone)]
pub struct TaskMetrics {
    pub source_record_poll: Counter,
    pub source_record_write: Counter,
    pub sink_record_read: Counter,
    pub sink_record_send: Counter,
    pub offset_commit_completion: Counter,
    pub put_batch_time: Histogram,
    pub source_batch_time: Histogram,
    pub sink_batches_in_flight: Gauge,
    pub sink_consumer_lag: Gauge,
    pub total_record_errors: Counter,
    pub total_records_skipped: Counter,
    pub deadletterqueue_produce_requests: Counter,
    pub deadletterqueue_produce_failures: Counter,
}

static WORKER: LazyLock<WorkerMetrics> = LazyLock::new(WorkerMetrics::new);

/// This process's worker metrics.
pub fn worker() -> &'static WorkerMetrics {
    &WORKER
}

/// Serves what `render` writes as `/metrics` on `at` until `stop` (the worker's metrics, or
/// the controller's); prints `metrics listening on ADDR`.
pub async fn serve<F, Fut>(
    at: SocketAddr,
    render: F,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .with_context(|| format!("listen on {at} (--metrics-listen)"))?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    render().await,
                )
            }
        }),
    );
    println!("metrics listening on {address}");
    tracing::info!(%address, "Prometheus metrics at /metrics");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::warn!("metrics listener: {e}");
        }
    }))
}
