//! `MySqlCdcSource`: Debezium's MySQL connector with its keys and its envelope, for MariaDB
//! and MySQL. A snapshot read in a consistent-snapshot transaction whose binlog position the
//! server names (MariaDB's `binlog_snapshot_file`/`_position`, or MySQL's position under a
//! brief global read lock), then the binlog from that position as a replica reads it: nothing
//! falls between them and nothing is read twice. Each event's offset names the transaction's
//! first event and how many changes of it were sent, so a restart reads the transaction again
//! and skips what was committed.

use sluice_connector_sdk::proto::{ConfigDef, ConfigType, FieldError, Importance};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, SourceConnector, SourceTask, TaskError,
};
use sluice_debezium::patterns;

use crate::server::{
    check_binlog, Settings, DATABASE_EXCLUDE, DATABASE_INCLUDE, FILTER_KEYS, HEARTBEAT,
    HEARTBEAT_PREFIX, HISTORY_SERVERS, HISTORY_TOPIC, HOSTNAME, PASSWORD, PORT, SCHEMA_CHANGES,
    SERVER_ID, SKIPPED, SNAPSHOT_FETCH, SNAPSHOT_MODE, TABLE_EXCLUDE, TABLE_INCLUDE, TOMBSTONES,
    TOPIC_PREFIX, USER,
};
use crate::task::CdcTask;

pub struct MySqlCdcSource;

impl Connector for MySqlCdcSource {
    fn class_name(&self) -> &'static str {
        "MySqlCdcSource"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "io.debezium.connector.mysql.MySqlConnector",
            "MySqlConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Change data capture from MariaDB and MySQL (the row-based binlog) in Debezium's envelope, with Debezium's keys"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let def = ConfigDefBuilder::new;
        vec![
            def(HOSTNAME, ConfigType::String)
                .importance(Importance::High)
                .doc("The server's host")
                .build(),
            def(PORT, ConfigType::Int)
                .default_value("3306")
                .importance(Importance::High)
                .doc("The server's port")
                .build(),
            def(USER, ConfigType::String)
                .importance(Importance::High)
                .doc("A user with SELECT, RELOAD, REPLICATION SLAVE and REPLICATION CLIENT")
                .build(),
            def(PASSWORD, ConfigType::Password)
                .default_value("")
                .importance(Importance::High)
                .doc("The user's password")
                .build(),
            // A string, so that "unset" can choose one: two replicas with one id cut each
            // other off, so Debezium's default is random too.
            def(SERVER_ID, ConfigType::String)
                .default_value("")
                .importance(Importance::High)
                .doc("The replica server id the connector reads the binlog as; unique among the server's replicas (default: 5400-6399 by process)")
                .build(),
            def(TOPIC_PREFIX, ConfigType::String)
                .importance(Importance::High)
                .doc("The logical server name: topics are <prefix>.<database>.<table>, and it names the offsets")
                .build(),
            def(DATABASE_INCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching the databases to capture; empty for all")
                .build(),
            def(DATABASE_EXCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching databases not to capture")
                .build(),
            def(TABLE_INCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching database.table of the tables to capture; empty for all")
                .build(),
            def(TABLE_EXCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching database.table of tables not to capture")
                .build(),
            def(SNAPSHOT_MODE, ConfigType::String)
                .default_value("initial")
                .valid_values(&[
                    "initial",
                    "initial_only",
                    "when_needed",
                    "always",
                    "never",
                    "no_data",
                    "schema_only",
                ])
                .doc("initial: snapshot unless a snapshot completed, then read the binlog; when_needed: also when the stored binlog file is gone; always: on every start; never/no_data/schema_only: binlog only; initial_only: snapshot and stop")
                .build(),
            def(SNAPSHOT_FETCH, ConfigType::Int)
                .default_value("10240")
                .doc("Rows of the snapshot read ahead of the worker")
                .build(),
            def(HEARTBEAT, ConfigType::Int)
                .default_value("0")
                .doc("Milliseconds between heartbeat records (0: none); they carry the binlog position while captured tables are quiet")
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
                .doc("Operations not to emit: c, u, d, or none")
                .build(),
            def(SCHEMA_CHANGES, ConfigType::Boolean)
                .default_value("true")
                .doc("Accepted for Debezium files; schema change events are not produced (the schema is read from information_schema)")
                .build(),
            def(HISTORY_TOPIC, ConfigType::String)
                .default_value("")
                .doc("Accepted for Debezium files and not used: no schema history topic is kept")
                .build(),
            def(HISTORY_SERVERS, ConfigType::String)
                .default_value("")
                .doc("Accepted for Debezium files and not used")
                .build(),
        ]
    }

    fn validate(&self, config: &Config) -> Vec<FieldError> {
        let mut errors = config.validate_against(&self.config_defs());
        for key in FILTER_KEYS.all() {
            if let Err(e) = patterns(config, key) {
                errors.push(FieldError {
                    name: key.into(),
                    message: e.message,
                });
            }
        }
        if !errors.is_empty() {
            return errors;
        }
        let settings = match Settings::from_config(config) {
            Ok(s) => s,
            Err(e) => {
                let key = if e.message.starts_with(SERVER_ID) {
                    SERVER_ID
                } else {
                    HOSTNAME
                };
                errors.push(FieldError {
                    name: key.into(),
                    message: e.message,
                });
                return errors;
            }
        };
        let checked = sluice_connector_jdbc::block_on(async move {
            let mut conn = settings.connect().await?;
            let checked = check_binlog(&mut conn).await;
            let _ = conn.disconnect().await;
            checked
        });
        if let Err(e) = checked {
            errors.push(FieldError {
                name: HOSTNAME.into(),
                message: e.message,
            });
        }
        errors
    }

    fn plan(&self, config: &Config, _max_tasks: usize) -> Result<Vec<Config>, TaskError> {
        // One binlog, one reader: one task, as Debezium's MySQL connector.
        Ok(vec![config.clone()])
    }
}

impl SourceConnector for MySqlCdcSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(CdcTask::default())
    }
}
