//! The Sluice worker: launches connector processes and runs the data path between them and
//! Kafka — converters, producers and consumers, offsets, restarts — plus standalone mode.

pub mod admin;
pub mod config_file;
pub mod distributed;
pub mod embedded;
pub mod errors;
pub mod kafka_log;
pub mod lease;
pub mod metrics;
pub mod offsets;
pub mod plugins;
pub mod process;
pub mod proto_json;
pub mod restart;
pub mod runner;
pub mod settings;
mod sink;
mod source;
pub mod standalone;
pub mod stop;
