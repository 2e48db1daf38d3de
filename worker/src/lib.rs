//! The Sluice worker: launches connector processes and runs the data path between them and
//! Kafka — converters, producers and consumers, offsets, restarts — in standalone or
//! distributed mode. Laid out by role:
//! - [`host`]: connector processes (sockets, handshake, heartbeats, logs) and plugin discovery;
//! - [`task`]: the source and sink pipelines, offsets, error reporting, counters;
//! - [`mode`]: standalone and distributed workers, and the offset requests the controller
//!   hands to a worker;
//! - [`kafka`]: the compacted-topic log and the embedded broker;
//! - beside them, what all share: [`runner`] (the life of one connector: its process, plan,
//!   tasks and restarts), [`settings`], [`restart`], [`lease`], [`stop`],
//!   [`proto_json`].

pub mod host;
pub mod isolation;
pub mod kafka;
pub mod lease;
pub mod link;
pub mod metrics;
pub mod mode;
pub mod proto_json;
pub mod providers;
pub mod restart;
pub mod runner;
pub mod settings;
pub mod stop;
pub mod task;
pub mod unit;
