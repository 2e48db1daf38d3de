//! Source offsets, keyed by connector and source partition. Standalone mode keeps them in a
//! JSON file (`offset.storage.file.filename`) replaced atomically on every flush; distributed
//! mode keeps them in a Kafka topic (`offset.storage.topic`, default `connect-offsets`) in
//! Kafka Connect's format, so that a task moved to another worker resumes where it stopped.
//! As Kafka Connect's `KafkaBasedLog`, each worker reads that topic from its beginning once
//! and then follows it (a consumer thread applies every record as it arrives); a task that
//! starts only waits until that reader has reached the end the topic has at that moment.
//! Kafka Connect's record key is `["<connector>",{<source partition>}]` and its value the
//! source offset as JSON (null for a reset); both as schemaless JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sluice_proto::connector::v1::SourcePosition;

use crate::kafka::log::KafkaLog;

/// Kafka Connect's default `offset.storage.topic`.
pub const DEFAULT_OFFSET_TOPIC: &str = "connect-offsets";
/// How long reaching the end of the offsets topic may take before a task start fails.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default, Serialize, Deserialize)]
struct OffsetFile {
    version: u32,
    /// connector name → source partition (JSON text) → source offset (JSON text)
    offsets: BTreeMap<String, BTreeMap<String, String>>,
}

enum Backend {
    Memory,
    File(PathBuf),
    Kafka(KafkaOffsets),
}

struct KafkaOffsets {
    topic: String,
    producer: FutureProducer<KafkaLog>,
    tail: Tail,
}

/// Kafka Connect's `KafkaBasedLog` reader: a consumer thread that reads the offsets topic
/// from its beginning and then follows it, applying every record to the store's map.
struct Tail {
    follow: Arc<Follow>,
    /// Partition → the next offset not yet applied (past commit markers once at the end).
    applied: tokio::sync::watch::Receiver<BTreeMap<i32, i64>>,
}

/// What the reader thread and the tasks waiting on it share.
struct Follow {
    topic: String,
    consumer: BaseConsumer<KafkaLog>,
    /// Set once the consumer is assigned every partition of the topic (it may not exist
    /// when the worker starts: the first flush creates it).
    assigned: Mutex<bool>,
    stop: AtomicBool,
}

/// Committed source positions. `commit` records positions whose records Kafka acknowledged;
/// `flush` makes them durable.
pub struct OffsetStore {
    backend: Backend,
    /// Shared with the offsets topic's reader thread, in Kafka.
    state: Arc<Mutex<State>>,
    /// Held through a flush, from its snapshot to its write's acknowledgement, and through a
    /// read of the topic: flushes land in the order they were taken (an older snapshot
    /// written after a newer one would win, and a restart would replay what the newer one
    /// covered), and a task that starts sees every flush that began before it.
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    file: OffsetFile,
    /// (connector, partition) committed here and not yet flushed.
    pending: BTreeSet<(String, String)>,
    /// Taken from `pending` by the flush in progress, until it lands.
    flushing: BTreeSet<(String, String)>,
}

impl OffsetStore {
    /// Opens the store at `path` (created on first flush), or an in-memory store.
    pub fn open(path: Option<&Path>) -> anyhow::Result<OffsetStore> {
        let mut file = OffsetFile {
            version: 1,
            ..OffsetFile::default()
        };
        if let Some(path) = path {
            match std::fs::read(path) {
                Ok(bytes) => {
                    file = serde_json::from_slice(&bytes).with_context(|| {
                        format!(
                            "read offsets file {}: not a Sluice offsets file",
                            path.display()
                        )
                    })?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("read offsets file {}", path.display()))
                }
            }
        }
        Ok(OffsetStore {
            flushing: tokio::sync::Mutex::new(()),
            backend: match path {
                Some(p) => Backend::File(p.to_path_buf()),
                None => Backend::Memory,
            },
            state: Arc::new(Mutex::new(State {
                file,
                ..State::default()
            })),
        })
    }

    /// A store in the Kafka topic `topic`, followed from its beginning by a reader thread
    /// and written on flush.
    pub fn kafka(
        topic: &str,
        producer_config: &ClientConfig,
        consumer_config: &ClientConfig,
    ) -> anyhow::Result<OffsetStore> {
        let producer = producer_config
            .create_with_context(KafkaLog::new(format!("offsets writer ({topic})")))
            .context("create the offsets producer")?;
        let state = Arc::new(Mutex::new(State::default()));
        let tail = Tail::start(topic, consumer_config, state.clone())?;
        Ok(OffsetStore {
            flushing: tokio::sync::Mutex::new(()),
            backend: Backend::Kafka(KafkaOffsets {
                topic: topic.to_string(),
                producer,
                tail,
            }),
            state,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The connector's positions as this process knows them, without reading Kafka.
    pub fn local_positions(&self, connector: &str) -> Vec<SourcePosition> {
        self.lock()
            .file
            .offsets
            .get(connector)
            .map(|m| {
                m.iter()
                    .map(|(partition, offset)| SourcePosition {
                        partition: partition.clone(),
                        offset: offset.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The connector's committed positions, for a task that starts. In Kafka, the reader of
    /// the offsets topic reaches the end the topic has now first, so positions another worker
    /// flushed are seen.
    pub async fn positions(&self, connector: &str) -> anyhow::Result<Vec<SourcePosition>> {
        if let Backend::Kafka(kafka) = &self.backend {
            let _flushing = self.flushing.lock().await;
            kafka.tail.read_to_end().await?;
        }
        Ok(self.local_positions(connector))
    }

    /// The offsets topic, when offsets live in Kafka.
    pub fn kafka_topic(&self) -> Option<&str> {
        match &self.backend {
            Backend::Kafka(kafka) => Some(&kafka.topic),
            _ => None,
        }
    }

    /// The offsets topic and its records (key, value) for `positions` of `connector`, for a
    /// task that writes them in its own transaction with the records they follow: the store's
    /// encoding stays here.
    pub fn transactional_records<'a>(
        &self,
        connector: &str,
        positions: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> anyhow::Result<(&str, Vec<(String, String)>)> {
        let topic = self.kafka_topic().ok_or_else(|| {
            anyhow::anyhow!("exactly-once source tasks keep their offsets in Kafka")
        })?;
        let records = positions
            .into_iter()
            .map(|(partition, offset)| (record_key(connector, partition), offset.clone()))
            .collect();
        Ok((topic, records))
    }

    /// Records positions that are already durable (written to the offsets topic in a
    /// transaction with their records): nothing is left to flush.
    pub fn committed_durably<'a>(
        &self,
        connector: &str,
        positions: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let mut state = self.lock();
        let entry = state.file.offsets.entry(connector.to_string()).or_default();
        for (partition, offset) in positions {
            entry.insert(partition.to_string(), offset.to_string());
        }
    }

    pub fn commit<'a>(
        &self,
        connector: &str,
        positions: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let mut state = self.lock();
        let mut touched = Vec::new();
        let entry = state.file.offsets.entry(connector.to_string()).or_default();
        for (partition, offset) in positions {
            entry.insert(partition.to_string(), offset.to_string());
            touched.push((connector.to_string(), partition.to_string()));
        }
        state.pending.extend(touched);
    }

    /// Forgets the positions of `partitions` (every partition of the connector when `None`);
    /// the next flush writes Kafka Connect's tombstones for them.
    pub fn reset(&self, connector: &str, partitions: Option<Vec<String>>) {
        let mut state = self.lock();
        let known: Vec<String> = state
            .file
            .offsets
            .get(connector)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let partitions = partitions.unwrap_or(known);
        if let Some(entry) = state.file.offsets.get_mut(connector) {
            for p in &partitions {
                entry.remove(p);
            }
        }
        state
            .pending
            .extend(partitions.into_iter().map(|p| (connector.to_string(), p)));
    }

    /// Makes committed positions durable: the file is replaced (temporary file, fsync, rename,
    /// fsync directory), or the changed positions are written to the topic and acknowledged.
    pub async fn flush(&self) -> anyhow::Result<()> {
        let _flushing = self.flushing.lock().await;
        let result = match &self.backend {
            Backend::Memory => {
                self.lock().pending.clear();
                return Ok(());
            }
            Backend::File(path) => {
                let path = path.clone();
                let (bytes, pending) = {
                    let mut state = self.lock();
                    if state.pending.is_empty() {
                        return Ok(());
                    }
                    let pending = std::mem::take(&mut state.pending);
                    state.flushing = pending.clone();
                    (serde_json::to_vec_pretty(&state.file)?, pending)
                };
                let result = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
                    .await
                    .context("offsets writer")
                    .and_then(|r| r);
                (result, pending)
            }
            Backend::Kafka(kafka) => {
                let (records, pending) = {
                    let mut state = self.lock();
                    let pending = std::mem::take(&mut state.pending);
                    state.flushing = pending.clone();
                    let records: Vec<(String, Option<String>)> = pending
                        .iter()
                        .map(|(c, p)| {
                            let value = state.file.offsets.get(c).and_then(|m| m.get(p)).cloned();
                            (record_key(c, p), value)
                        })
                        .collect();
                    (records, pending)
                };
                (kafka.write(records).await, pending)
            }
        };
        let (result, pending) = result;
        let mut state = self.lock();
        state.flushing.clear();
        if result.is_err() {
            state.pending.extend(pending);
        }
        result
    }

    /// The positions of `connector` as this store has them, as `partition → offset` lines.
    pub fn held_positions(&self, connector: &str) -> Vec<String> {
        self.lock()
            .file
            .offsets
            .get(connector)
            .map(|m| m.iter().map(|(p, o)| position_line(p, o)).collect())
            .unwrap_or_default()
    }

    /// Positions committed here (their records acknowledged by Kafka) that no flush has made
    /// durable yet, as `connector partition → offset` lines: what a restart would replay
    /// from before.
    pub fn uncommitted(&self) -> Vec<String> {
        let state = self.lock();
        state
            .pending
            .union(&state.flushing)
            .map(|(connector, partition)| {
                let offset = state
                    .file
                    .offsets
                    .get(connector)
                    .and_then(|m| m.get(partition))
                    .map_or("null", String::as_str);
                format!("{connector} {}", position_line(partition, offset))
            })
            .collect()
    }
}

/// A source partition and its offset, for messages: `{"filename":"a"} → {"position":1}`.
fn position_line(partition: &str, offset: &str) -> String {
    format!("{partition} → {offset}")
}

/// Creates the offsets topic as Kafka Connect does (compacted, `partitions` partitions,
/// `replication` replicas; -1 for the broker's default) unless it exists.
pub async fn ensure_offsets_topic(
    admin_config: &ClientConfig,
    topic: &str,
    partitions: i32,
    replication: i32,
) {
    ensure_topic(admin_config, topic, partitions, replication, true).await
}

/// Creates `topic` unless it exists. Failures are only logged: a broker that refuses
/// CreateTopics (or has auto-creation) still works, and a missing topic shows up as a clear
/// error on the first write.
pub async fn ensure_topic(
    admin_config: &ClientConfig,
    topic: &str,
    partitions: i32,
    replication: i32,
    compacted: bool,
) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<KafkaLog> =
        match admin_config.create_with_context(KafkaLog::new("admin")) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("cannot create an admin client to create {topic}: {e}");
                return;
            }
        };
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    if compacted {
        new = new.set("cleanup.policy", "compact");
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    match admin.create_topics([&new], &options).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(t) => tracing::info!(topic = %t, partitions, "created topic"),
                    Err((t, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                        tracing::debug!(topic = %t, "topic exists")
                    }
                    Err((t, code)) => tracing::info!(
                        topic = %t,
                        "topic not created ({code}); relying on the broker to create it"
                    ),
                }
            }
        }
        Err(e) => {
            tracing::info!("topic {topic} not created ({e}); relying on the broker to create it")
        }
    }
}

/// Flushes `offsets` every `every` until `stop`; failures are logged and retried next time.
pub async fn flush_every(
    offsets: std::sync::Arc<OffsetStore>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(e) = offsets.flush().await {
                    tracing::error!("write source offsets: {e:#}");
                }
            }
            _ = stop.cancelled() => return,
        }
    }
}

impl KafkaOffsets {
    async fn write(&self, records: Vec<(String, Option<String>)>) -> anyhow::Result<()> {
        let sends = records.iter().map(|(key, value)| {
            let mut record = FutureRecord::to(&self.topic).key(key.as_bytes());
            if let Some(v) = value {
                record = record.payload(v.as_bytes());
            }
            self.producer.send(record, WRITE_TIMEOUT)
        });
        for result in futures::future::join_all(sends).await {
            if let Err((e, _)) = result {
                bail!("write source offsets to topic {}: {e}", self.topic);
            }
        }
        Ok(())
    }
}

/// Kafka Connect's offsets key: `["<connector>",<partition JSON>]`.
fn record_key(connector: &str, partition: &str) -> String {
    format!(
        "[{},{partition}]",
        serde_json::Value::String(connector.to_string())
    )
}

/// The connector and the partition text, exactly as written, of an offsets key.
fn parse_key(key: &[u8]) -> Option<(String, String)> {
    let (name, partition): (String, Box<serde_json::value::RawValue>) =
        serde_json::from_slice(key).ok()?;
    Some((name, partition.get().to_string()))
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the map half-written: every update is a
    // single insert, so the data is usable even if poisoned.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Applies a record of the offsets topic (`value` `None` for a tombstone) to `state`, unless
/// this worker committed a newer position for it that is not flushed yet.
fn apply_record(state: &mut State, topic: &str, key: &[u8], value: Option<&[u8]>) {
    let Some((name, partition)) = parse_key(key) else {
        tracing::warn!(
            topic,
            "skipping an offsets record whose key is not [\"connector\",{{partition}}]"
        );
        return;
    };
    let held = (name, partition);
    if state.pending.contains(&held) || state.flushing.contains(&held) {
        return;
    }
    let (name, partition) = held;
    let entry = state.file.offsets.entry(name).or_default();
    match value.and_then(|v| std::str::from_utf8(v).ok()) {
        Some(v) if v != "null" => {
            entry.insert(partition, v.to_string());
        }
        _ => {
            entry.remove(&partition);
        }
    }
}

impl Tail {
    fn start(
        topic: &str,
        consumer_config: &ClientConfig,
        state: Arc<Mutex<State>>,
    ) -> anyhow::Result<Tail> {
        let mut config = consumer_config.clone();
        // librdkafka wants a group even for assigned partitions; this one never joins or
        // commits.
        config.set("group.id", "sluice-offsets-reader");
        config.set("enable.auto.commit", "false");
        // Offsets written in an aborted transaction never count; the end of a partition is
        // then past its last record (a commit marker), so ends are found by EOF too.
        config.set("isolation.level", "read_committed");
        config.set("enable.partition.eof", "true");
        // A fetch waits at the broker until a record arrives (or this long): a new record is
        // seen at once, and an idle topic costs two requests a second.
        config.set("fetch.wait.max.ms", "500");
        let consumer: BaseConsumer<KafkaLog> = config
            .create_with_context(KafkaLog::new(format!("offsets reader ({topic})")))
            .context("create the offsets reader")?;
        let follow = Arc::new(Follow {
            topic: topic.to_string(),
            consumer,
            assigned: Mutex::new(false),
            stop: AtomicBool::new(false),
        });
        let (applied_tx, applied) = tokio::sync::watch::channel(BTreeMap::new());
        let reader = Reader {
            follow: follow.clone(),
            applied: applied_tx,
            state,
        };
        std::thread::Builder::new()
            .name("offsets-reader".into())
            .spawn(move || reader.run())
            .context("start the offsets reader")?;
        Ok(Tail { follow, applied })
    }

    /// Waits until every record the topic holds now is applied (Kafka Connect's
    /// `KafkaBasedLog.readToEnd`).
    async fn read_to_end(&self) -> anyhow::Result<()> {
        let follow = self.follow.clone();
        let ends = tokio::task::spawn_blocking(move || follow.ends())
            .await
            .context("offsets reader")??;
        if ends.is_empty() {
            return Ok(());
        }
        let mut applied = self.applied.clone();
        let reached = applied.wait_for(|applied| {
            ends.iter()
                .all(|(p, end)| applied.get(p).is_some_and(|at| at >= end))
        });
        let reached = tokio::time::timeout(READ_TIMEOUT, reached)
            .await
            .map(|r| r.map(|_| ()));
        match reached {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => bail!("the reader of offsets topic {} stopped", self.follow.topic),
            Err(_) => bail!(
                "offsets topic {} not read to its end within {READ_TIMEOUT:?}",
                self.follow.topic
            ),
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.follow.stop.store(true, Ordering::Relaxed);
    }
}

/// The offsets topic's reader thread.
struct Reader {
    follow: Arc<Follow>,
    applied: tokio::sync::watch::Sender<BTreeMap<i32, i64>>,
    state: Arc<Mutex<State>>,
}

impl Reader {
    fn run(self) {
        let follow = &*self.follow;
        let mut last_error = None;
        while !follow.stop.load(Ordering::Relaxed) {
            if !*lock_flag(&follow.assigned) {
                // A task start assigns the reader itself (`Follow::ends`) as soon as the topic
                // exists; this only catches up on one that was created without any.
                let wait = match follow.assign() {
                    Ok(true) => None,
                    Ok(false) => Some(Duration::from_secs(1)),
                    Err(e) => {
                        let e = format!("{e:#}");
                        if last_error.as_ref() != Some(&e) {
                            tracing::warn!("follow offsets topic {}: {e}", follow.topic);
                            last_error = Some(e);
                        }
                        Some(Duration::from_secs(1))
                    }
                };
                if let Some(wait) = wait {
                    follow.pause(wait);
                    continue;
                }
            }
            match follow.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // At the end of what is committed: the position is past any commit
                    // marker, where the end offset is.
                    let position =
                        follow.consumer.position().ok().and_then(|list| {
                            list.find_partition(&follow.topic, p)?.offset().to_raw()
                        });
                    if let Some(at) = position {
                        self.applied.send_if_modified(|applied| {
                            let before = applied.insert(p, at);
                            before != Some(at)
                        });
                    }
                }
                Some(Err(e)) => {
                    let e = e.to_string();
                    if last_error.as_ref() != Some(&e) {
                        tracing::warn!("read offsets topic {}: {e}", follow.topic);
                        last_error = Some(e);
                    }
                }
                Some(Ok(m)) => {
                    apply_record(
                        &mut lock(&self.state),
                        &follow.topic,
                        m.key().unwrap_or_default(),
                        m.payload(),
                    );
                    self.applied.send_modify(|applied| {
                        applied.insert(m.partition(), m.offset() + 1);
                    });
                }
            }
        }
    }
}

fn lock_flag(flag: &Mutex<bool>) -> std::sync::MutexGuard<'_, bool> {
    flag.lock().unwrap_or_else(|p| p.into_inner())
}

impl Follow {
    /// Sleeps for `wait`, or less once a task start assigned the reader or the store is
    /// dropped.
    fn pause(&self, wait: Duration) {
        let step = Duration::from_millis(100);
        let mut slept = Duration::ZERO;
        while slept < wait && !self.stop.load(Ordering::Relaxed) && !*lock_flag(&self.assigned) {
            std::thread::sleep(step);
            slept += step;
        }
    }

    /// Assigns the consumer every partition of the topic from its beginning, once the topic
    /// exists; whether it is assigned.
    fn assign(&self) -> anyhow::Result<bool> {
        let mut assigned = lock_flag(&self.assigned);
        if *assigned {
            return Ok(true);
        }
        let Some(partitions) = self.partitions()? else {
            return Ok(false);
        };
        let mut list = TopicPartitionList::new();
        for p in partitions {
            list.add_partition_offset(&self.topic, p, Offset::Beginning)?;
        }
        self.consumer
            .assign(&list)
            .with_context(|| format!("assign offsets topic {}", self.topic))?;
        *assigned = true;
        Ok(true)
    }

    /// The partitions of the topic, or `None` while it does not exist.
    fn partitions(&self) -> anyhow::Result<Option<Vec<i32>>> {
        let topic = &self.topic;
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), READ_TIMEOUT)
            .with_context(|| format!("read metadata of offsets topic {topic}"))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect()))
    }

    /// The end of every partition of the topic that holds records (none while the topic
    /// does not exist: nothing was ever flushed), after making sure the reader follows it.
    fn ends(&self) -> anyhow::Result<BTreeMap<i32, i64>> {
        let Some(partitions) = self.partitions()? else {
            return Ok(BTreeMap::new());
        };
        self.assign()?;
        let topic = &self.topic;
        let mut ends = BTreeMap::new();
        for p in partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(topic, p, READ_TIMEOUT)
                .with_context(|| format!("read the end of offsets topic {topic}[{p}]"))?;
            if high > low {
                ends.insert(p, high);
            }
        }
        Ok(ends)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("write offsets into {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("replace offsets file {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offsets_survive_reopen_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.json");
        let store = OffsetStore::open(Some(&path)).unwrap();
        store.commit("c", [("{\"f\":1}", "{\"position\":5}")]);
        store.flush().await.unwrap();
        let again = OffsetStore::open(Some(&path)).unwrap();
        assert_eq!(again.local_positions("c")[0].offset, "{\"position\":5}");
        assert!(again.positions("other").await.unwrap().is_empty());
        assert_eq!(
            parse_key(record_key("c\"1", "{\"f\": 1}").as_bytes()),
            Some(("c\"1".to_string(), "{\"f\": 1}".to_string()))
        );

        std::fs::write(&path, "garbage").unwrap();
        let e = OffsetStore::open(Some(&path)).err().unwrap();
        assert!(format!("{e:#}").contains("o.json"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_flushes_land_in_the_order_they_were_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.json");
        let store = std::sync::Arc::new(OffsetStore::open(Some(&path)).unwrap());
        // Tasks that drain at once each flush the shared store: the last position must win.
        let mut flushes = Vec::new();
        for position in 0..300 {
            store.commit("c", [("{\"f\":1}", position.to_string().as_str())]);
            let store = store.clone();
            flushes.push(tokio::spawn(async move { store.flush().await }));
        }
        for flush in flushes {
            flush.await.unwrap().unwrap();
        }
        let again = OffsetStore::open(Some(&path)).unwrap();
        assert_eq!(again.local_positions("c")[0].offset, "299");
    }

    /// Offsets in Kafka as two workers see them: one flushes, the other follows the topic
    /// (without asking) and reads it to its end when a task starts; a topic created only by
    /// the first flush, tombstones, and a reader started last that reads from the beginning.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workers_follow_the_offsets_topic_others_write() {
        use crate::kafka::embedded::EmbeddedKafka;
        use crate::runner::{consumer_config, producer_config};
        let kafka = EmbeddedKafka::start(1, &[], 3).unwrap();
        let bootstrap = kafka.bootstrap_servers();
        let open = || {
            OffsetStore::kafka(
                "offsets",
                &producer_config(bootstrap, BTreeMap::new()),
                &consumer_config(bootstrap, BTreeMap::new()),
            )
            .unwrap()
        };
        let (writer, follower) = (open(), open());
        // The topic does not exist yet.
        assert!(follower.positions("c").await.unwrap().is_empty());

        writer.commit("c", [("{\"f\":1}", "{\"position\":5}")]);
        writer.flush().await.unwrap();
        let positions = follower.positions("c").await.unwrap();
        assert_eq!(positions.len(), 1);
        assert_eq!(positions[0].offset, "{\"position\":5}");

        writer.commit("c", [("{\"f\":1}", "{\"position\":9}")]);
        writer.commit("c", [("{\"f\":2}", "{\"position\":1}")]);
        writer.flush().await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while follower.held_positions("c").len() != 2
            || follower.local_positions("c")[0].offset != "{\"position\":9}"
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the follower never applied the second flush by itself: {:?}",
                follower.held_positions("c")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        writer.reset("c", Some(vec!["{\"f\":1}".to_string()]));
        writer.flush().await.unwrap();
        let positions = follower.positions("c").await.unwrap();
        assert_eq!(positions.len(), 1, "{positions:?}");
        assert_eq!(positions[0].partition, "{\"f\":2}");

        let late = open();
        let positions = late.positions("c").await.unwrap();
        assert_eq!(positions.len(), 1, "{positions:?}");
        assert_eq!(positions[0].offset, "{\"position\":1}");
    }
}
