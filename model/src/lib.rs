//! Sluice's config model: the typed ids every part passes ([`ids`]), Kafka Connect's
//! configuration files ([`file`]), the framework's connector keys declared once ([`keys`]) and
//! the one parse of a connector configuration ([`connector`]) that the controller, both worker
//! modes, dry runs and the CLI share.
//!
//! This crate knows nothing of Kafka, processes or sled: it is data and its validation.

pub mod connector;
pub mod file;
pub mod ids;
pub mod keys;

pub use connector::{ConnectorConfig, ErrorPolicy, RestartPolicy, TransactionBoundary};
pub use file::{ConfigError, ConfigFile};
pub use ids::{ConnectorName, Generation, TaskId, UnitKey, WorkerId};
pub use sluice_data::transforms::ConfigIssue;
