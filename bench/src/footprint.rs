//! Footprint figures: `sluice standalone` run as a user runs it (its own process, the
//! built-in FileStreamSource and FileStreamSink as processes of their own), moving `records`
//! lines of 100 B file → Kafka → file, beside a raw librdkafka process (this executable with
//! `--raw-pipe`) moving the same lines the same way, in the same run:
//! - launch → first record in Kafka: from spawning the process until a watching consumer
//!   reads the first record it produced;
//! - peak RSS: once the output file holds every line, the sum of the peaks (VmHWM) of the
//!   process and of every process it runs then (the worker and its connector processes;
//!   the short-lived ones that validated the configs at start-up are gone by then);
//! - idle RSS: a second `sluice standalone` with the same connectors on an empty file and an
//!   empty topic, its processes' resident memory summed 3 s after launch (the baseline: the
//!   raw process's when its first record arrived).
//!
//! Both memory figures also come as proportional set sizes (PSS, from `smaps_rollup`): the
//! worker and its connector processes run one executable, whose pages an RSS sum counts once
//! per process; PSS counts each page once. The peak PSS is the highest sum seen by sampling
//! every 50 ms while the lines move.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_worker::runner::{consumer_config, producer_config};

use crate::{file, send, TIMEOUT};

pub const RAW_TOPIC: &str = "footprint-raw";
pub const SLUICE_TOPIC: &str = "footprint-sluice";
pub const IDLE_TOPIC: &str = "footprint-idle";
pub const TOPICS: [&str; 3] = [RAW_TOPIC, SLUICE_TOPIC, IDLE_TOPIC];
/// Enough partitions that none outgrows what the mock cluster keeps of a partition (it
/// drops a partition's oldest records beyond that: 64 partitions lost 7% of 1,000,000 lines).
pub const PARTITIONS: i32 = 256;

/// The executable's flag that runs the raw baseline process.
pub const RAW_FLAG: &str = "--raw-pipe";

/// A footprint figure: a value beside its baseline.
#[derive(Clone)]
pub struct Measure {
    pub name: &'static str,
    pub unit: &'static str,
    pub value: f64,
    pub baseline: f64,
    pub baseline_name: &'static str,
}

/// What one process tree took to move the lines.
struct Run {
    first_record_secs: f64,
    peak_mb: f64,
    /// The highest proportional set size of the process tree, summed, sampled every 50 ms.
    peak_pss_mb: f64,
    /// Resident memory when the first record arrived.
    at_first_record_mb: f64,
}

/// The `sluice` executable beside this one (`cargo build --release -p sluice-cli`).
pub fn sluice_executable() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let sluice = exe.parent()?.join("sluice");
    sluice.is_file().then_some(sluice)
}

pub fn figures(bootstrap: &str, records: u64) -> anyhow::Result<Vec<Measure>> {
    let sluice = sluice_executable().context(
        "the footprint figures run the sluice executable beside the benchmark's: \
         cargo build --release -p sluice-cli",
    )?;
    let dir = tempfile::tempdir().context("scratch directory")?;
    let input = dir.path().join("input.txt");
    file::write_lines(&input, records)?;
    let expected = records * (file::LINE as u64 + 1);

    let raw_output = dir.path().join("raw-output.txt");
    let mut raw = Command::new(std::env::current_exe()?);
    raw.arg(RAW_FLAG)
        .arg(bootstrap)
        .arg(&input)
        .arg(&raw_output)
        .arg(records.to_string());
    let raw = measure(raw, bootstrap, RAW_TOPIC, &raw_output, expected, dir.path())?;

    let output = dir.path().join("output.txt");
    let worker = dir.path().join("worker.properties");
    let converter = "org.apache.kafka.connect.storage.StringConverter";
    std::fs::write(
        &worker,
        format!(
            "bootstrap.servers={bootstrap}\nkey.converter={converter}\n\
             value.converter={converter}\noffset.storage.file.filename={}\n\
             producer.sticky.partitioning.linger.ms=0\n",
            dir.path().join("offsets").display()
        ),
    )?;
    let standalone = |name: &str, input: &Path, output: &Path, topic: &str| {
        let source = dir.path().join(format!("{name}-source.properties"));
        let sink = dir.path().join(format!("{name}-sink.properties"));
        std::fs::write(
            &source,
            format!(
                "name={name}-source\nconnector.class=FileStreamSource\nfile={}\ntopic={topic}\n",
                input.display()
            ),
        )?;
        std::fs::write(
            &sink,
            format!(
                "name={name}-sink\nconnector.class=FileStreamSink\nfile={}\ntopics={topic}\n",
                output.display()
            ),
        )?;
        let mut command = Command::new(&sluice);
        command
            .arg("standalone")
            .arg(&worker)
            .arg(source)
            .arg(sink)
            .env("SLUICE_LOG", "warn");
        anyhow::Ok(command)
    };
    let moving = standalone("footprint", &input, &output, SLUICE_TOPIC)?;
    let sluice_run = measure(
        moving,
        bootstrap,
        SLUICE_TOPIC,
        &output,
        expected,
        dir.path(),
    )?;

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "")?;
    let idle = standalone(
        "idle",
        &empty,
        &dir.path().join("idle-output.txt"),
        IDLE_TOPIC,
    )?;
    let (idle_mb, idle_pss_mb) = idle_rss(idle, dir.path())?;
    let sluice = sluice_run;
    Ok(vec![
        Measure {
            name: "standalone_launch_to_first_record",
            unit: "s",
            value: sluice.first_record_secs,
            baseline: raw.first_record_secs,
            baseline_name: "raw producer process",
        },
        Measure {
            name: "standalone_file_pipeline_peak_rss",
            unit: "MB",
            value: sluice.peak_mb,
            baseline: raw.peak_mb,
            baseline_name: "raw producer+consumer process",
        },
        Measure {
            name: "standalone_file_pipeline_peak_pss",
            unit: "MB",
            value: sluice.peak_pss_mb,
            baseline: raw.peak_pss_mb,
            baseline_name: "raw producer+consumer process",
        },
        Measure {
            name: "standalone_idle_rss",
            unit: "MB",
            value: idle_mb,
            baseline: raw.at_first_record_mb,
            baseline_name: "raw process at its first record",
        },
        Measure {
            name: "standalone_idle_pss",
            unit: "MB",
            value: idle_pss_mb,
            baseline: raw.at_first_record_mb,
            baseline_name: "raw process RSS at its first record",
        },
    ])
}

/// Runs `command` until `output` holds `expected` bytes, watching `topic` for its first
/// record and sampling the memory of it and its descendants.
fn measure(
    command: Command,
    bootstrap: &str,
    topic: &str,
    output: &Path,
    expected: u64,
    dir: &Path,
) -> anyhow::Result<Run> {
    let watcher = watch(bootstrap, topic)?;
    // The watcher connects and starts fetching before the process starts.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(1) {
        let _ = watcher.poll(Duration::from_millis(100));
    }
    let started = Instant::now();
    let mut child = Killed::spawn(command, &dir.join(format!("{topic}.log")))?;
    let pid = child.0.id();
    let mut first_record = None;
    let mut at_first_record = 0;
    let mut peak_pss = 0;
    let mut sampled = Instant::now() - Duration::from_secs(1);
    loop {
        if sampled.elapsed() >= Duration::from_millis(50) {
            peak_pss = peak_pss.max(tree_pss_kb(pid));
            sampled = Instant::now();
        }
        if first_record.is_none() && watcher.poll(Duration::from_millis(10)).is_some() {
            first_record = Some(started.elapsed().as_secs_f64());
            at_first_record = tree_kb(pid).1;
        }
        let written = std::fs::metadata(output).map_or(0, |m| m.len());
        if first_record.is_some() && written >= expected {
            break;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            bail!(
                "{topic}: the measured process exited ({status}) with {written} of {expected} bytes written; see {}",
                dir.join(format!("{topic}.log")).display()
            );
        }
        if started.elapsed() > TIMEOUT {
            bail!("{topic}: {written} of {expected} bytes written within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The processes that run the pipeline, at their peaks.
    let peak_kb = tree_kb(pid).0;
    detail(topic, pid);
    Ok(Run {
        first_record_secs: first_record.unwrap_or_default(),
        peak_mb: peak_kb as f64 / 1024.0,
        peak_pss_mb: peak_pss.max(tree_pss_kb(pid)) as f64 / 1024.0,
        at_first_record_mb: at_first_record as f64 / 1024.0,
    })
}

/// The resident memory of `command` and its processes, summed, 3 s after launch: their RSS
/// and their proportional set size.
fn idle_rss(command: Command, dir: &Path) -> anyhow::Result<(f64, f64)> {
    let mut child = Killed::spawn(command, &dir.join("idle.log"))?;
    std::thread::sleep(Duration::from_secs(3));
    if let Ok(Some(status)) = child.0.try_wait() {
        bail!(
            "the idle process exited ({status}); see {}",
            dir.join("idle.log").display()
        );
    }
    let kb = tree_kb(child.0.id()).1;
    let pss_kb = tree_pss_kb(child.0.id());
    detail("idle", child.0.id());
    Ok((kb as f64 / 1024.0, pss_kb as f64 / 1024.0))
}

/// A child process killed when dropped.
struct Killed(Child);

impl Killed {
    /// Starts `command` with its output to `log`.
    fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Killed> {
        let file = std::fs::File::create(log)?;
        let child = command
            .stdin(Stdio::piped())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("start {command:?}"))?;
        Ok(Killed(child))
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A consumer reading `topic` from its start, with fetches that answer at once.
fn watch(bootstrap: &str, topic: &str) -> anyhow::Result<BaseConsumer> {
    let mut config = consumer_config(bootstrap, BTreeMap::new());
    config.set("group.id", format!("watch-{topic}"));
    config.set("fetch.wait.max.ms", "5");
    let consumer: BaseConsumer = config.create()?;
    let mut partitions = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        partitions.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&partitions)?;
    Ok(consumer)
}

/// `pid` and every process below it.
fn descendants(pid: u32) -> BTreeSet<u32> {
    let mut found = BTreeSet::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if !found.insert(p) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                todo.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    found
}

/// With `BENCH_FOOTPRINT_DETAIL` set, each process of the tree and its memory on stderr.
fn detail(label: &str, pid: u32) {
    if std::env::var_os("BENCH_FOOTPRINT_DETAIL").is_none() {
        return;
    }
    for p in descendants(pid) {
        let command = std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        let of = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map_or_else(String::new, |v| v.trim().to_string())
        };
        eprintln!(
            "{label}: pid {p} peak {}, now {} (anon {}, file {}): {}",
            of("VmHWM:"),
            of("VmRSS:"),
            of("RssAnon:"),
            of("RssFile:"),
            command.replace('\0', " ")
        );
    }
}

/// [`memory_kb`] summed over `pid` and its descendants.
fn tree_kb(pid: u32) -> (u64, u64) {
    descendants(pid)
        .iter()
        .filter_map(|p| memory_kb(*p))
        .fold((0, 0), |(hwm, rss), m| (hwm + m.0, rss + m.1))
}

/// The proportional set size of `pid` and its descendants, summed, in KiB: each page counted
/// once however many of the processes map it (RSS sums count the executable's pages, shared
/// by the worker and its connector processes, once per process).
fn tree_pss_kb(pid: u32) -> u64 {
    descendants(pid)
        .iter()
        .filter_map(|p| {
            let rollup = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok()?;
            rollup
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// A process's peak and current resident memory in KiB (VmHWM, VmRSS).
fn memory_kb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Records without a key spread over every partition, one by one: the mock cluster drops a
/// partition's oldest records once it grows past its limit, which the sticky partitioner's
/// whole batches to one partition reach at 1,000,000 records. Both processes produce so.
fn spread() -> BTreeMap<String, String> {
    BTreeMap::from([("sticky.partitioning.linger.ms".to_string(), "0".to_string())])
}

/// The raw baseline process: produces the file's lines to [`RAW_TOPIC`] with a plain
/// producer, then consumes them back and appends each to `output`, as the standalone
/// pipeline does with its two connectors.
pub fn raw_pipe(args: &[String]) -> anyhow::Result<()> {
    let [bootstrap, input, output, records] = args else {
        bail!("{RAW_FLAG} BOOTSTRAP INPUT OUTPUT RECORDS");
    };
    let records: u64 = records.parse()?;
    let producer: ThreadedProducer<DefaultProducerContext> =
        producer_config(bootstrap, spread()).create()?;
    for line in std::io::BufReader::new(std::fs::File::open(input)?).lines() {
        let line = line?;
        send(
            &producer,
            BaseRecord::<[u8], [u8]>::to(RAW_TOPIC).payload(line.as_bytes()),
        );
    }
    producer.flush(Duration::from_secs(60))?;
    drop(producer);
    let mut out = std::io::BufWriter::new(std::fs::File::create(output)?);
    let mut config = consumer_config(bootstrap, BTreeMap::new());
    config.set("group.id", "raw-footprint");
    let consumer: BaseConsumer = config.create()?;
    consumer.subscribe(&[RAW_TOPIC])?;
    let mut seen = 0;
    while seen < records {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            out.write_all(rdkafka::Message::payload(&message?).unwrap_or_default())?;
            out.write_all(b"\n")?;
            seen += 1;
        }
    }
    out.flush()?;
    // Stays up, as the standalone worker does, until the benchmark is done with it.
    std::thread::sleep(Duration::from_secs(600));
    Ok(())
}
