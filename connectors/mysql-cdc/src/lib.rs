//! MariaDB and MySQL change data capture for Sluice: [`MySqlCdcSource`], Debezium's
//! `io.debezium.connector.mysql.MySqlConnector` with its keys and its envelope, reading the
//! server's row-based binlog as a replica does (mysql_async's binlog stream).

mod server;
mod source;
mod table;
mod task;
mod types;

use sluice_connector_sdk::Plugin;

pub use source::MySqlCdcSource;

/// The `mysql-cdc` plugin: MySqlCdcSource.
pub fn plugin() -> Plugin {
    Plugin::new("mysql-cdc", env!("CARGO_PKG_VERSION")).source(MySqlCdcSource)
}
