//! Everything the controller keeps durable, in sled, and nothing else touches sled. One record
//! per connector holds its config, target state, task configs and restart epochs, so each
//! change is a single atomic insert; every write is flushed (by the journal) before the caller
//! answers, so a SIGKILL at any point leaves either the old or the new record, never a torn one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::Transactional as _;

use sluice_model::{ConnectorName, Generation, UnitKey, WorkerId};
use sluice_proto::api::v1 as api;

use crate::scheduler::Placement;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("controller store: {0}")]
    Sled(#[from] sled::Error),
    #[error("controller store: corrupt record {key}: {error}")]
    Corrupt { key: String, error: String },
    #[error("controller store: {0}")]
    Journal(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Desired state of a connector: what users asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetState {
    Running,
    Paused,
    Stopped,
}

/// Observed state of a connector or task, as workers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Unassigned,
    Running,
    Paused,
    Stopped,
    Failed,
    Restarting,
}

impl TargetState {
    pub fn to_wire(self) -> api::TargetState {
        match self {
            TargetState::Running => api::TargetState::Running,
            TargetState::Paused => api::TargetState::Paused,
            TargetState::Stopped => api::TargetState::Stopped,
        }
    }
}

impl State {
    pub fn to_wire(self) -> api::State {
        match self {
            State::Unassigned => api::State::Unassigned,
            State::Running => api::State::Running,
            State::Paused => api::State::Paused,
            State::Stopped => api::State::Stopped,
            State::Failed => api::State::Failed,
            State::Restarting => api::State::Restarting,
        }
    }

    pub fn from_wire(s: i32) -> State {
        match api::State::try_from(s) {
            Ok(api::State::Running) => State::Running,
            Ok(api::State::Paused) => State::Paused,
            Ok(api::State::Stopped) => State::Stopped,
            Ok(api::State::Failed) => State::Failed,
            Ok(api::State::Restarting) => State::Restarting,
            _ => State::Unassigned,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectorRecord {
    pub config: BTreeMap<String, String>,
    pub config_version: u64,
    pub target_state: TargetState,
    pub restart_epoch: u64,
    /// "source" or "sink", once a worker has planned the connector.
    pub kind: Option<String>,
    /// Task configurations, and the config version they were planned from.
    pub tasks: Vec<BTreeMap<String, String>>,
    pub tasks_version: u64,
    pub task_restart_epochs: BTreeMap<u32, u64>,
    /// Topics its tasks used since the last reset (Kafka Connect's active topics).
    #[serde(default)]
    pub topics: std::collections::BTreeSet<String>,
    /// The trace context of the call that made the current config version, target state or
    /// restart (empty if it was not traced): the connector's start joins that trace.
    #[serde(default)]
    pub trace: BTreeMap<String, String>,
    /// The same for each task: the call that made its config or restarted it.
    #[serde(default)]
    pub task_traces: BTreeMap<u32, BTreeMap<String, String>>,
}

impl ConnectorRecord {
    /// A new connector, not yet planned.
    pub fn new(config: BTreeMap<String, String>, target_state: TargetState) -> ConnectorRecord {
        ConnectorRecord {
            config,
            config_version: 1,
            target_state,
            restart_epoch: 0,
            kind: None,
            tasks: Vec::new(),
            tasks_version: 0,
            task_restart_epochs: BTreeMap::new(),
            topics: Default::default(),
            trace: BTreeMap::new(),
            task_traces: BTreeMap::new(),
        }
    }

    /// Records `trace` (the calling span's context) for what changed since `before`: the
    /// connector when its config, target state or restart epoch did, each task whose config,
    /// restart epoch or target state did.
    pub fn stamp(&mut self, before: Option<&ConnectorRecord>, trace: &HashMap<String, String>) {
        let trace: BTreeMap<String, String> =
            trace.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let connector_changed = before.is_none_or(|b| {
            b.config_version != self.config_version
                || b.restart_epoch != self.restart_epoch
                || b.target_state != self.target_state
        });
        if connector_changed {
            self.trace = trace.clone();
        }
        for t in 0..self.tasks.len() as u32 {
            let task_changed = before.is_none_or(|b| {
                b.target_state != self.target_state
                    || b.tasks_version != self.tasks_version
                    || b.tasks.get(t as usize) != self.tasks.get(t as usize)
                    || b.task_restart_epochs.get(&t) != self.task_restart_epochs.get(&t)
            });
            if task_changed {
                self.task_traces.insert(t, trace.clone());
            }
        }
        self.task_traces
            .retain(|t, _| (*t as usize) < self.tasks.len());
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub state: State,
    pub worker_id: WorkerId,
    pub trace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// The worker's plugins, as the encoded `PluginClass` messages of its join.
    pub plugins: Vec<Vec<u8>>,
    pub capacity: u32,
    /// The executables it could not use, as encoded `BrokenPlugin` messages.
    #[serde(default)]
    pub broken: Vec<Vec<u8>>,
}

/// One change of durable state, as the controller's state produced it under its lock; the
/// journal applies them in that order.
#[derive(Debug, Clone)]
pub enum Write {
    Connector(ConnectorName, ConnectorRecord),
    DeleteConnector(ConnectorName),
    Status(UnitKey, StatusRecord),
    RemoveStatus(UnitKey),
    Worker(WorkerId, WorkerRecord),
    RemoveWorker(WorkerId),
    Placement(PlacementChange),
    LogLevels(BTreeMap<String, String>),
}

/// A placement written as its difference from the previous one: a placement of 20,000 units
/// rewritten on every change would dominate the controller's time.
#[derive(Debug, Clone, Default)]
pub struct PlacementChange {
    pub removed: Vec<UnitKey>,
    pub set: Vec<(UnitKey, WorkerId)>,
    pub generation: Generation,
}

impl PlacementChange {
    pub fn between(previous: &Placement, next: &Placement, generation: Generation) -> Self {
        PlacementChange {
            removed: previous
                .keys()
                .filter(|u| !next.contains_key(*u))
                .cloned()
                .collect(),
            set: next
                .iter()
                .filter(|(unit, worker)| previous.get(*unit) != Some(*worker))
                .map(|(u, w)| (u.clone(), w.clone()))
                .collect(),
            generation,
        }
    }
}

pub struct Store {
    db: sled::Db,
    connectors: sled::Tree,
    statuses: sled::Tree,
    workers: sled::Tree,
    placement: sled::Tree,
    meta: sled::Tree,
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        error: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records serialize: plain structs and string maps")
}

/// Every record of a tree keyed by a name.
fn load_named<K: Ord, T: for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
    id: impl Fn(String) -> K,
) -> Result<BTreeMap<K, T>> {
    let mut out = BTreeMap::new();
    for item in tree.iter() {
        let (k, v) = item?;
        out.insert(
            id(String::from_utf8_lossy(&k).into_owned()),
            decode(&k, &v)?,
        );
    }
    Ok(out)
}

/// Key of a unit in the statuses and placement trees: connector name, NUL, task id (if any).
fn unit_key(unit: &UnitKey) -> Vec<u8> {
    let mut key = unit.connector.as_bytes().to_vec();
    key.push(0);
    if let Some(t) = unit.task {
        key.extend_from_slice(&t.0.to_be_bytes());
    }
    key
}

fn unit_of(key: &[u8]) -> Option<UnitKey> {
    let nul = key.iter().position(|&b| b == 0)?;
    let connector = std::str::from_utf8(&key[..nul]).ok()?;
    let rest = &key[nul + 1..];
    let task = match rest.len() {
        0 => None,
        4 => Some(u32::from_be_bytes(rest.try_into().ok()?)),
        _ => return None,
    };
    Some(UnitKey::from_wire(connector, task))
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store> {
        let db = sled::open(dir)?;
        Ok(Store {
            connectors: db.open_tree("connectors")?,
            statuses: db.open_tree("statuses")?,
            workers: db.open_tree("workers")?,
            placement: db.open_tree("placement")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }

    /// Makes every write so far durable. A blocking flush on tokio's blocking pool: sled's
    /// `flush_async` runs on sled's own small thread pool, and enough concurrent callers
    /// (a burst of API calls and status reports) occupy every one of its threads waiting for
    /// writes that need a thread of that pool: a deadlock seen with 100 workers.
    /// The flush itself, for a thread that may block (the journal's).
    pub fn flush_blocking(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    pub async fn flush(&self) -> Result<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| sled::Error::Io(std::io::Error::other(format!("flush task: {e}"))))??;
        Ok(())
    }

    pub fn cluster_id(&self) -> Result<String> {
        if let Some(id) = self.meta.get("cluster_id")? {
            return Ok(String::from_utf8_lossy(&id).into_owned());
        }
        let id = format!("sluice-{:016x}", rand::random::<u64>());
        self.meta.insert("cluster_id", id.as_bytes())?;
        Ok(id)
    }

    /// Cluster-scoped logger levels (logger → level), applied to every worker that joins.
    pub fn log_levels(&self) -> Result<BTreeMap<String, String>> {
        match self.meta.get("log_levels")? {
            Some(bytes) => decode(b"log_levels", &bytes),
            None => Ok(BTreeMap::new()),
        }
    }

    pub fn generation(&self) -> Result<Generation> {
        Ok(Generation(
            self.meta
                .get("generation")?
                .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(0),
        ))
    }

    pub fn connectors(&self) -> Result<BTreeMap<ConnectorName, ConnectorRecord>> {
        load_named(&self.connectors, ConnectorName::from_trusted)
    }

    /// Removes a connector with its statuses and placement, in one transaction.
    fn delete_connector(&self, name: &str) -> Result<()> {
        let prefix = unit_key(&UnitKey::planning(name));
        let keys = |tree: &sled::Tree| -> Result<Vec<sled::IVec>> {
            Ok(tree
                .scan_prefix(&prefix)
                .keys()
                .collect::<std::result::Result<_, _>>()?)
        };
        let (statuses, placement) = (keys(&self.statuses)?, keys(&self.placement)?);
        (&self.connectors, &self.statuses, &self.placement)
            .transaction(|(connectors, status_tree, placement_tree)| {
                connectors.remove(name.as_bytes())?;
                for key in &statuses {
                    status_tree.remove(key)?;
                }
                for key in &placement {
                    placement_tree.remove(key)?;
                }
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                // The closure above never aborts; keep the type honest anyway.
                sled::transaction::TransactionError::Abort(()) => StoreError::Sled(
                    sled::Error::ReportableBug("connector delete aborted".into()),
                ),
            })?;
        Ok(())
    }

    pub fn statuses(&self) -> Result<BTreeMap<UnitKey, StatusRecord>> {
        let mut out = BTreeMap::new();
        for item in self.statuses.iter() {
            let (k, v) = item?;
            if let Some(unit) = unit_of(&k) {
                out.insert(unit, decode(&k, &v)?);
            }
        }
        Ok(out)
    }

    pub fn workers(&self) -> Result<BTreeMap<WorkerId, WorkerRecord>> {
        load_named(&self.workers, WorkerId::new)
    }

    pub fn placement(&self) -> Result<Placement> {
        let mut out = Placement::new();
        for item in self.placement.iter() {
            let (k, v) = item?;
            if let Some(unit) = unit_of(&k) {
                out.insert(unit, WorkerId::new(String::from_utf8_lossy(&v)));
            }
        }
        Ok(out)
    }

    /// Applies a change of the placement and its generation, one batch per tree.
    fn put_placement(&self, change: &PlacementChange) -> Result<()> {
        let mut batch = sled::Batch::default();
        for unit in &change.removed {
            batch.remove(unit_key(unit));
        }
        for (unit, worker) in &change.set {
            batch.insert(unit_key(unit), worker.as_bytes());
        }
        self.placement.apply_batch(batch)?;
        self.meta
            .insert("generation", &change.generation.0.to_be_bytes())?;
        Ok(())
    }

    /// Applies writes in order. Not yet durable: see [`Store::flush`].
    pub fn apply(&self, writes: &[Write]) -> Result<()> {
        for write in writes {
            match write {
                Write::Connector(name, record) => {
                    self.connectors.insert(name.as_bytes(), encode(record))?;
                }
                Write::DeleteConnector(name) => self.delete_connector(name)?,
                Write::Status(unit, record) => {
                    self.statuses.insert(unit_key(unit), encode(record))?;
                }
                Write::RemoveStatus(unit) => {
                    self.statuses.remove(unit_key(unit))?;
                }
                Write::Worker(id, record) => {
                    self.workers.insert(id.as_bytes(), encode(record))?;
                }
                Write::RemoveWorker(id) => {
                    self.workers.remove(id.as_bytes())?;
                }
                Write::Placement(change) => self.put_placement(change)?,
                Write::LogLevels(levels) => {
                    self.meta.insert("log_levels", encode(levels))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_records_its_trace_on_what_it_changed_only() {
        let trace = |id: &str| HashMap::from([("traceparent".to_string(), id.to_string())]);
        let mut record = ConnectorRecord::new(BTreeMap::new(), TargetState::Running);
        record.tasks = vec![BTreeMap::new(); 2];
        record.tasks_version = 1;
        record.stamp(None, &trace("created"));
        let traced = |r: &ConnectorRecord| {
            (
                r.trace["traceparent"].clone(),
                r.task_traces[&0]["traceparent"].clone(),
                r.task_traces[&1]["traceparent"].clone(),
            )
        };
        assert_eq!(
            traced(&record),
            ("created".into(), "created".into(), "created".into())
        );

        let before = record.clone();
        *record.task_restart_epochs.entry(1).or_default() += 1;
        record.stamp(Some(&before), &trace("restart task 1"));
        assert_eq!(
            traced(&record),
            ("created".into(), "created".into(), "restart task 1".into())
        );

        let before = record.clone();
        record.config_version += 1;
        record.stamp(Some(&before), &trace("new config"));
        assert_eq!(record.trace["traceparent"], "new config");
        assert_eq!(record.task_traces[&0]["traceparent"], "created");

        let before = record.clone();
        record.tasks = vec![[("k".to_string(), "v".to_string())].into()];
        record.stamp(Some(&before), &trace("replanned"));
        assert_eq!(record.trace["traceparent"], "new config");
        assert_eq!(record.task_traces.len(), 1, "task 1 is gone");
        assert_eq!(record.task_traces[&0]["traceparent"], "replanned");
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let record = ConnectorRecord {
            config: [("connector.class".to_string(), "X".to_string())].into(),
            config_version: 3,
            target_state: TargetState::Paused,
            restart_epoch: 1,
            kind: Some("source".into()),
            tasks: vec![BTreeMap::new()],
            tasks_version: 3,
            task_restart_epochs: [(0, 2)].into(),
            topics: ["t".to_string()].into(),
            trace: [("traceparent".to_string(), "00-a-b-01".to_string())].into(),
            task_traces: [(
                0,
                [("traceparent".to_string(), "00-a-c-01".to_string())].into(),
            )]
            .into(),
        };
        let status = StatusRecord {
            state: State::Failed,
            worker_id: WorkerId::new("w1"),
            trace: "boom".into(),
        };
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .apply(&[
                    Write::Connector(ConnectorName::from_trusted("c"), record.clone()),
                    Write::Status(UnitKey::task("c", 0), status.clone()),
                ])
                .unwrap();
            let first: Placement = [
                (UnitKey::task("c", 0), WorkerId::new("w2")),
                (UnitKey::task("c", 1), WorkerId::new("w2")),
            ]
            .into();
            store
                .put_placement(&PlacementChange::between(
                    &Placement::new(),
                    &first,
                    Generation(6),
                ))
                .unwrap();
            // Written as a difference: c/0 moves, c/1 goes.
            let second: Placement = [(UnitKey::task("c", 0), WorkerId::new("w1"))].into();
            store
                .put_placement(&PlacementChange::between(&first, &second, Generation(7)))
                .unwrap();
            store.db.flush().unwrap();
        }
        // sled's background threads may hold the file lock a moment after the drop (a
        // reopen in the same process; a restarted controller is a new process).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let store = loop {
            match Store::open(dir.path()) {
                Ok(store) => break store,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("reopen: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        assert_eq!(store.connectors().unwrap()["c"], record);
        assert_eq!(store.statuses().unwrap()[&UnitKey::task("c", 0)], status);
        assert_eq!(
            store.placement().unwrap(),
            [(UnitKey::task("c", 0), WorkerId::new("w1"))].into()
        );
        assert_eq!(store.generation().unwrap(), Generation(7));
        store.delete_connector("c").unwrap();
        assert!(store.connectors().unwrap().is_empty());
        assert!(store.statuses().unwrap().is_empty());
        assert!(store.placement().unwrap().is_empty());
    }
}
