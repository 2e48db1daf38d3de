//! The controller's state, split as quickwit and neon split theirs: **desired** state is what
//! users asked for and where the controller decided it runs (connector records with their
//! configs, target states and task configs; the placement and its generation; cluster logger
//! levels), **observed** state is what workers report (who is connected, their plugins,
//! unit statuses, units still draining on an old owner). Only `Cluster` holds a `State`, behind
//! its lock; every change of durable state returns its store writes.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use sluice_model::{ConnectorName, Generation, UnitKey, WorkerId};
use sluice_proto::api::v1 as api;
use sluice_proto::cluster::v1 as wire;
use tokio::sync::watch;
use tokio_stream::Stream;

use crate::error::ApiError;
use crate::scheduler::Placement;
use crate::store::{ConnectorRecord, PlacementChange, StatusRecord, Store, StoreError};

/// A worker's assignment stream, one slot. A worker that has not read the previous
/// assignment yet reads what the two amount to ([`wire::Assignment::then`]: the newest whole
/// one, or two deltas combined): a slow reader never makes the controller queue assignments.
/// (HTTP/2 still sends what the stream's window allows, so a worker must read the stream as it
/// arrives: unread, it holds connection window its heartbeats need.) The slot is emptied when
/// read.
#[derive(Clone)]
pub struct AssignmentSender(Arc<watch::Sender<Option<wire::Assignment>>>);

impl AssignmentSender {
    /// A sender and the stream of assignments it sends (each read once, the newest).
    pub fn channel() -> (Self, impl Stream<Item = wire::Assignment> + Send + 'static) {
        let (tx, rx) = watch::channel(None);
        let tx = Arc::new(tx);
        let stream = futures::stream::unfold((tx.clone(), rx), |(tx, mut rx)| async move {
            loop {
                // The stream holds the sender: `changed` fails only if it is gone, never.
                rx.changed().await.ok()?;
                let mut taken = None;
                // Takes the value under the channel's lock without telling the receiver.
                tx.send_if_modified(|slot| {
                    taken = slot.take();
                    false
                });
                if let Some(assignment) = taken {
                    return Some((assignment, (tx, rx)));
                }
            }
        });
        (AssignmentSender(tx), stream)
    }

    /// Adds to what the worker has not read yet; false once the worker's stream is gone.
    pub fn send(&self, assignment: wire::Assignment) -> bool {
        if self.0.is_closed() {
            return false;
        }
        self.0.send_modify(|slot| {
            *slot = Some(match slot.take() {
                Some(unread) => unread.then(assignment),
                None => assignment,
            })
        });
        true
    }

    pub fn same_channel(&self, other: &AssignmentSender) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Connector records, and the names of those changed since the reconcile loop last looked:
/// read through `Deref`, changed only through methods that note the name, so a pass places
/// and re-sends only what changed.
#[derive(Default)]
pub struct Connectors {
    records: BTreeMap<ConnectorName, ConnectorRecord>,
    changed: BTreeSet<ConnectorName>,
}

impl Deref for Connectors {
    type Target = BTreeMap<ConnectorName, ConnectorRecord>;

    fn deref(&self) -> &Self::Target {
        &self.records
    }
}

impl From<BTreeMap<ConnectorName, ConnectorRecord>> for Connectors {
    fn from(records: BTreeMap<ConnectorName, ConnectorRecord>) -> Self {
        Connectors {
            records,
            changed: BTreeSet::new(),
        }
    }
}

impl FromIterator<(ConnectorName, ConnectorRecord)> for Connectors {
    fn from_iter<I: IntoIterator<Item = (ConnectorName, ConnectorRecord)>>(iter: I) -> Self {
        BTreeMap::from_iter(iter).into()
    }
}

impl Connectors {
    pub fn insert(&mut self, name: ConnectorName, record: ConnectorRecord) {
        self.changed.insert(name.clone());
        self.records.insert(name, record);
    }

    pub fn remove(&mut self, name: &ConnectorName) -> Option<ConnectorRecord> {
        self.changed.insert(name.clone());
        self.records.remove(name)
    }

    /// The record to change in place; noted as changed whether or not it is.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut ConnectorRecord> {
        let name = self.records.get_key_value(name)?.0.clone();
        let record = self.records.get_mut(&name);
        self.changed.insert(name);
        record
    }

    /// Connectors changed since [`Connectors::take_changed`] last ran.
    pub fn changed(&self) -> &BTreeSet<ConnectorName> {
        &self.changed
    }

    /// Notes a connector as changed without changing it: its units' assignments are
    /// rebuilt on the next pass (a release let its new owner start a unit).
    pub fn touch(&mut self, name: &ConnectorName) {
        if self.records.contains_key(name) {
            self.changed.insert(name.clone());
        }
    }

    pub fn take_changed(&mut self) -> BTreeSet<ConnectorName> {
        std::mem::take(&mut self.changed)
    }
}

/// Where every unit runs, with each worker's units beside it, so a pass reads what one worker
/// runs (or how much) without walking the whole placement. Read through `Deref`; changed only
/// by [`Placed::apply`], which keeps both in step.
#[derive(Default, Debug, Clone, PartialEq)]
pub struct Placed {
    units: Placement,
    by_worker: BTreeMap<WorkerId, Owned>,
}

/// A worker's units, and how many are planning instances (the rest are tasks).
#[derive(Default, Debug, Clone, PartialEq)]
pub struct Owned {
    pub units: BTreeSet<UnitKey>,
    pub planning: usize,
}

impl Owned {
    /// Planning instances and tasks held.
    pub fn loads(&self) -> [usize; 2] {
        [self.planning, self.units.len() - self.planning]
    }
}

impl Deref for Placed {
    type Target = Placement;

    fn deref(&self) -> &Placement {
        &self.units
    }
}

impl From<Placement> for Placed {
    fn from(units: Placement) -> Self {
        let mut placed = Placed::default();
        placed.apply(&PlacementChange {
            set: units.into_iter().collect(),
            ..PlacementChange::default()
        });
        placed
    }
}

impl Placed {
    /// Makes a change: units removed, units set on their (new) worker.
    pub fn apply(&mut self, change: &PlacementChange) {
        let removed = change.removed.iter();
        let moved = change.set.iter().map(|(unit, _)| unit);
        for unit in removed.chain(moved) {
            if let Some(old) = self.units.remove(unit) {
                self.forget(&old, unit);
            }
        }
        for (unit, worker) in &change.set {
            self.units.insert(unit.clone(), worker.clone());
            let owned = self.by_worker.entry(worker.clone()).or_default();
            if owned.units.insert(unit.clone()) && unit.task.is_none() {
                owned.planning += 1;
            }
        }
    }

    fn forget(&mut self, worker: &WorkerId, unit: &UnitKey) {
        if let Some(owned) = self.by_worker.get_mut(worker) {
            if owned.units.remove(unit) && unit.task.is_none() {
                owned.planning -= 1;
            }
            if owned.units.is_empty() {
                self.by_worker.remove(worker);
            }
        }
    }

    /// What `worker` runs.
    pub fn of(&self, worker: &WorkerId) -> Option<&Owned> {
        self.by_worker.get(worker)
    }
}

/// What users asked for, and where the controller placed it.
#[derive(Default)]
pub struct Desired {
    pub connectors: Connectors,
    pub placement: Placed,
    pub generation: Generation,
    /// The worker membership (see [`Observed::membership`]) for which the placement holds
    /// every unit some live worker can run: a pass then places only what changed. `None`
    /// (at start, after a join or a pass that left units out) recomputes it all.
    pub complete_for: Option<u64>,
    /// Cluster-scoped logger levels (logger → level), sent to every worker that connects.
    pub log_levels: BTreeMap<String, String>,
}

/// What the workers report.
#[derive(Default)]
pub struct Observed {
    pub workers: BTreeMap<WorkerId, WorkerEntry>,
    /// Counts joins: the set of workers, their plugins and capacities changed.
    pub membership: u64,
    pub statuses: BTreeMap<UnitKey, StatusRecord>,
    /// Units moved or taken away from a live worker, by old owner and since when: a new
    /// owner gets them only once the old one released them (drained and committed), so that
    /// a clean move replays nothing. Not persisted: after a controller restart a move in
    /// progress no longer waits.
    pub releasing: BTreeMap<UnitKey, (WorkerId, Instant)>,
}

pub struct WorkerEntry {
    pub plugins: Vec<wire::PluginClass>,
    /// Executables the worker found broken.
    pub broken: Vec<api::BrokenPlugin>,
    pub capacity: u32,
    pub last_seen: Instant,
    pub stream: Option<AssignmentSender>,
    /// What the worker holds once it read everything sent on its stream; `None` until a
    /// whole assignment is sent, and again whenever the stream is gone.
    pub sent: Option<Sent>,
    /// The generation of the last assignment sent: the base of the next delta.
    pub sent_generation: u64,
    /// The worker applies deltas; otherwise every assignment goes whole.
    pub accepts_deltas: bool,
    /// Being drained: placed nothing, and told to leave once it holds nothing. A join (a new
    /// process) ends it.
    pub draining: bool,
}

impl WorkerEntry {
    /// The worker's stream is gone (or dropped): nothing sent on it counts any more.
    pub fn disconnect(&mut self) {
        self.stream = None;
        self.sent = None;
    }
}

/// A worker's assignment, by connector: what it was sent and holds.
pub type Sent = BTreeMap<ConnectorName, Slice>;

/// One connector's part of a worker's assignment: the config, and the units it runs here.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub config: wire::ConnectorConfig,
    pub planning: bool,
    pub tasks: Vec<wire::TaskAssignment>,
}

/// A worker's assignment as the wire has it, whole.
pub fn whole(sent: &Sent, generation: u64, cluster_id: &str) -> wire::Assignment {
    let mut assignment = wire::Assignment {
        generation,
        cluster_id: cluster_id.to_string(),
        ..Default::default()
    };
    for slice in sent.values() {
        add(&mut assignment, slice);
    }
    assignment
}

/// The delta from generation `base` that replaces (`Some`) or removes (`None`) the named
/// connectors' slices.
pub fn delta(
    changes: &BTreeMap<ConnectorName, Option<Slice>>,
    base: u64,
    generation: u64,
    cluster_id: &str,
) -> wire::Assignment {
    let mut assignment = wire::Assignment {
        generation,
        cluster_id: cluster_id.to_string(),
        delta: true,
        base_generation: base,
        ..Default::default()
    };
    for (name, change) in changes {
        match change {
            Some(slice) => add(&mut assignment, slice),
            None => assignment.removed_connectors.push(name.to_string()),
        }
    }
    assignment
}

fn add(assignment: &mut wire::Assignment, slice: &Slice) {
    assignment.connectors.push(slice.config.clone());
    if slice.planning {
        assignment.planning.push(slice.config.name.clone());
    }
    assignment.tasks.extend(slice.tasks.iter().cloned());
}

impl WorkerEntry {
    /// Whether the worker can run `class` (a class name or an alias).
    pub fn has_plugin(&self, class: &str) -> bool {
        self.plugins
            .iter()
            .any(|p| p.class_name == class || p.aliases.iter().any(|a| a == class))
    }
}

#[derive(Default)]
pub struct State {
    pub desired: Desired,
    pub observed: Observed,
}

impl State {
    /// Loads the durable state. Workers known before a restart count as alive until they miss
    /// the timeout, so nothing moves while they reconnect.
    pub fn load(store: &Store) -> Result<State, StoreError> {
        let now = Instant::now();
        let mut workers = BTreeMap::new();
        for (id, record) in store.workers()? {
            let plugins = record
                .plugins
                .iter()
                .filter_map(|b| prost::Message::decode(b.as_slice()).ok())
                .collect();
            let broken = record
                .broken
                .iter()
                .filter_map(|b| prost::Message::decode(b.as_slice()).ok())
                .collect();
            workers.insert(
                id,
                WorkerEntry {
                    plugins,
                    broken,
                    capacity: record.capacity,
                    last_seen: now,
                    stream: None,
                    sent: None,
                    sent_generation: 0,
                    accepts_deltas: false,
                    draining: false,
                },
            );
        }
        Ok(State {
            desired: Desired {
                connectors: store.connectors()?.into(),
                placement: store.placement()?.into(),
                generation: store.generation()?,
                complete_for: None,
                log_levels: store.log_levels()?,
            },
            observed: Observed {
                workers,
                membership: 0,
                statuses: store.statuses()?,
                releasing: BTreeMap::new(),
            },
        })
    }

    pub fn connector(&self, name: &str) -> Result<&ConnectorRecord, ApiError> {
        self.desired
            .connectors
            .get(name)
            .ok_or_else(|| ApiError::ConnectorNotFound(name.to_string()))
    }

    /// A plugin some joined worker has, by class name or alias.
    pub fn plugin(&self, class: &str) -> Option<&wire::PluginClass> {
        self.observed
            .workers
            .values()
            .flat_map(|w| w.plugins.iter())
            .find(|p| p.class_name == class || p.aliases.iter().any(|a| a == class))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt as _, StreamExt as _};

    fn assignment(generation: u64) -> wire::Assignment {
        wire::Assignment {
            generation,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_slow_reader_gets_only_the_newest_assignment_and_a_gone_one_gets_none() {
        let (tx, stream) = AssignmentSender::channel();
        let mut stream = Box::pin(stream);
        assert!(stream.next().now_or_never().is_none(), "nothing sent yet");
        for generation in 1..=3 {
            assert!(tx.send(assignment(generation)));
        }
        assert_eq!(stream.next().await.unwrap().generation, 3);
        assert!(
            stream.next().now_or_never().is_none(),
            "1 and 2 were replaced"
        );
        assert!(tx.send(assignment(4)));
        assert_eq!(stream.next().await.unwrap().generation, 4);
        drop(stream);
        assert!(!tx.send(assignment(5)));
    }

    #[tokio::test]
    async fn a_slow_reader_gets_unread_deltas_combined() {
        let (tx, stream) = AssignmentSender::channel();
        let mut stream = Box::pin(stream);
        let slice = |name: &str| Slice {
            config: wire::ConnectorConfig {
                name: name.into(),
                ..Default::default()
            },
            planning: true,
            tasks: Vec::new(),
        };
        let name = ConnectorName::from_trusted;
        let held: Sent = [(name("a"), slice("a"))].into();
        assert!(tx.send(whole(&held, 1, "k")));
        assert_eq!(stream.next().await.unwrap().planning, ["a"]);
        let first = [(name("b"), Some(slice("b")))].into();
        assert!(tx.send(delta(&first, 1, 2, "k")));
        let second = [(name("a"), None), (name("c"), Some(slice("c")))].into();
        assert!(tx.send(delta(&second, 2, 3, "k")));
        let read = stream.next().await.unwrap();
        assert!(read.delta);
        assert_eq!((read.base_generation, read.generation), (1, 3));
        let now = whole(&held, 1, "k").then(read);
        assert_eq!(now.planning, ["b", "c"]);
        assert!(stream.next().now_or_never().is_none());
    }
}
