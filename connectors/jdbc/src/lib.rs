//! JDBC-style connectors for PostgreSQL and MariaDB/MySQL with Confluent's JDBC connector
//! keys: [`JdbcSource`] (`io.confluent.connect.jdbc.JdbcSourceConnector`) and [`JdbcSink`]
//! (`io.confluent.connect.jdbc.JdbcSinkConnector`). No JDBC driver is involved: the
//! `jdbc:postgresql://…`, `jdbc:mariadb://…` and `jdbc:mysql://…` URLs users already have are
//! read and served by tokio-postgres and mysql_async.

mod db;
mod sink;
mod source;
mod url;
mod value;

use sluice_connector_sdk::proto::{ConfigDef, ConfigType, Importance};
use sluice_connector_sdk::{ConfigDefBuilder, Plugin, TaskError};

pub use sink::JdbcSink;
pub use source::JdbcSource;
pub use url::{Dialect, JdbcUrl};
pub use value::{days_from_civil, unscaled_bytes};

/// The `jdbc` plugin: JdbcSource and JdbcSink.
pub fn plugin() -> Plugin {
    Plugin::new("jdbc", env!("CARGO_PKG_VERSION"))
        .source(JdbcSource)
        .sink(JdbcSink)
}

/// The `connection.*` keys both connectors share.
fn connection_defs() -> Vec<ConfigDef> {
    vec![
        ConfigDefBuilder::new(db::CONNECTION_URL, ConfigType::String)
            .importance(Importance::High)
            .doc("jdbc:postgresql://host:port/database, jdbc:mariadb://host:port/database or jdbc:mysql://host:port/database; user and password may be given as properties (?user=…&password=…)")
            .build(),
        ConfigDefBuilder::new(db::CONNECTION_USER, ConfigType::String)
            .default_value("")
            .importance(Importance::High)
            .doc("The database user")
            .build(),
        ConfigDefBuilder::new(db::CONNECTION_PASSWORD, ConfigType::Password)
            .default_value("")
            .importance(Importance::High)
            .doc("The database user's password")
            .build(),
        ConfigDefBuilder::new(db::CONNECTION_ATTEMPTS, ConfigType::Int)
            .default_value("3")
            .importance(Importance::Low)
            .doc("How many times to try connecting")
            .build(),
        ConfigDefBuilder::new(db::CONNECTION_BACKOFF, ConfigType::Long)
            .default_value("10000")
            .importance(Importance::Low)
            .doc("Milliseconds between connection attempts")
            .build(),
    ]
}

/// A comma-separated list, entries trimmed, empty ones dropped.
pub fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs `future` to completion from synchronous code (validate, plan, monitor), on a thread of
/// its own so that it works inside or outside a runtime.
pub fn block_on<T: Send>(
    future: impl std::future::Future<Output = Result<T, TaskError>> + Send,
) -> Result<T, TaskError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| TaskError::retriable(format!("start a runtime: {e}")))?
                    .block_on(future)
            })
            .join()
    })
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
