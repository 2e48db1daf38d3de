//! PostgreSQL change data capture for Sluice: [`PostgresCdcSource`], Debezium's
//! `io.debezium.connector.postgresql.PostgresConnector` with its keys and its envelope, over
//! logical replication with PostgreSQL's built-in `pgoutput` plugin ([`pgoutput`] decodes its
//! messages).

pub mod pgoutput;
mod server;
mod source;
mod table;
mod task;
mod types;

use sluice_connector_sdk::Plugin;

pub use source::PostgresCdcSource;

/// The `postgres-cdc` plugin: PostgresCdcSource.
pub fn plugin() -> Plugin {
    Plugin::new("postgres-cdc", env!("CARGO_PKG_VERSION")).source(PostgresCdcSource)
}
