//! The keys both CDC connectors take from Debezium with one meaning: the connection, the
//! logical server name, snapshot and heartbeat settings, which events are sent, and the
//! include/exclude lists' check. Each connector adds its own (its server id or slot, its
//! container lists) around these.

use sluice_connector_sdk::proto::{ConfigDef, ConfigType, FieldError, Importance};
use sluice_connector_sdk::{Config, ConfigDefBuilder};

use crate::{patterns, FilterKeys};

pub const HOSTNAME: &str = "database.hostname";
pub const PORT: &str = "database.port";
pub const USER: &str = "database.user";
pub const PASSWORD: &str = "database.password";
pub const TOPIC_PREFIX: &str = "topic.prefix";
pub const TABLE_INCLUDE: &str = "table.include.list";
pub const TABLE_EXCLUDE: &str = "table.exclude.list";
pub const SNAPSHOT_MODE: &str = "snapshot.mode";
pub const SNAPSHOT_FETCH: &str = "snapshot.fetch.size";
pub const HEARTBEAT: &str = "heartbeat.interval.ms";
pub const HEARTBEAT_PREFIX: &str = "topic.heartbeat.prefix";
pub const TOMBSTONES: &str = "tombstones.on.delete";
pub const SKIPPED: &str = "skipped.operations";

/// How a connector describes its server in the connection keys' docs.
pub struct Server {
    /// "The PostgreSQL server" or "The server".
    pub name: &'static str,
    pub default_port: u16,
    /// What the user must be allowed to do.
    pub user_doc: &'static str,
}

/// `database.hostname`, `.port`, `.user`, `.password`.
pub fn connection(server: &Server) -> Vec<ConfigDef> {
    let def = ConfigDefBuilder::new;
    vec![
        def(HOSTNAME, ConfigType::String)
            .importance(Importance::High)
            .doc(&format!("{}'s host", server.name))
            .build(),
        def(PORT, ConfigType::Int)
            .default_value(&server.default_port.to_string())
            .importance(Importance::High)
            .doc(&format!("{}'s port", server.name))
            .build(),
        def(USER, ConfigType::String)
            .importance(Importance::High)
            .doc(server.user_doc)
            .build(),
        def(PASSWORD, ConfigType::Password)
            .default_value("")
            .importance(Importance::High)
            .doc("The user's password")
            .build(),
    ]
}

/// `topic.prefix`, whose topics are `<prefix>.<container>.<table>`.
pub fn topic_prefix(container: &str) -> ConfigDef {
    ConfigDefBuilder::new(TOPIC_PREFIX, ConfigType::String)
        .importance(Importance::High)
        .doc(&format!(
            "The logical server name: topics are <prefix>.<{container}>.<table>, and it names the offsets"
        ))
        .build()
}

/// The four include/exclude lists, `container` naming what the container lists match.
pub fn filters(keys: &FilterKeys, container: &str) -> Vec<ConfigDef> {
    let list = |key: &str, doc: String| {
        ConfigDefBuilder::new(key, ConfigType::List)
            .default_value("")
            .doc(&doc)
            .build()
    };
    vec![
        list(
            keys.table_include,
            format!("Regular expressions matching {container}.table of the tables to capture; empty for all"),
        ),
        list(
            keys.table_exclude,
            format!("Regular expressions matching {container}.table of tables not to capture"),
        ),
        list(
            keys.container_include,
            format!("Regular expressions matching the {container}s to capture; empty for all"),
        ),
        list(
            keys.container_exclude,
            format!("Regular expressions matching {container}s not to capture"),
        ),
    ]
}

/// What a connector says of its own events in the shared keys' docs.
pub struct Events {
    pub fetch_doc: &'static str,
    /// What heartbeats do for this connector's position.
    pub heartbeat_doc: &'static str,
    /// The operations `skipped.operations` may name.
    pub skipped_doc: &'static str,
}

/// `snapshot.fetch.size`, the heartbeat keys, `tombstones.on.delete`, `skipped.operations`.
pub fn events(events: &Events) -> Vec<ConfigDef> {
    let def = ConfigDefBuilder::new;
    vec![
        def(SNAPSHOT_FETCH, ConfigType::Int)
            .default_value("10240")
            .doc(events.fetch_doc)
            .build(),
        def(HEARTBEAT, ConfigType::Int)
            .default_value("0")
            .doc(&format!(
                "Milliseconds between heartbeat records (0: none); {}",
                events.heartbeat_doc
            ))
            .build(),
        def(HEARTBEAT_PREFIX, ConfigType::String)
            .default_value("__debezium-heartbeat")
            .doc("Heartbeats go to <this>.<topic.prefix>")
            .build(),
        def(TOMBSTONES, ConfigType::Boolean)
            .default_value("true")
            .doc("Follow each delete with a tombstone (null value) of the same key")
            .build(),
        def(SKIPPED, ConfigType::List)
            .default_value("t")
            .doc(&format!(
                "Operations not to emit: {}, or none",
                events.skipped_doc
            ))
            .build(),
    ]
}

/// The config checked against `defs`, and each include/exclude list's patterns compiled.
pub fn validate(config: &Config, defs: &[ConfigDef], keys: &FilterKeys) -> Vec<FieldError> {
    let mut errors = config.validate_against(defs);
    for key in keys.all() {
        if let Err(e) = patterns(config, key) {
            errors.push(FieldError {
                name: key.into(),
                message: e.message,
            });
        }
    }
    errors
}
