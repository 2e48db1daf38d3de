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
use sluice_debezium::keys;

use crate::server::{
    check_binlog, Settings, FILTER_KEYS, HISTORY_SERVERS, HISTORY_TOPIC, HOSTNAME, SCHEMA_CHANGES,
    SERVER_ID, SNAPSHOT_MODE,
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
        let server = keys::Server {
            name: "The server",
            default_port: 3306,
            user_doc: "A user with SELECT, RELOAD, REPLICATION SLAVE and REPLICATION CLIENT",
        };
        let events = keys::Events {
            fetch_doc: "Rows of the snapshot read ahead of the worker",
            heartbeat_doc: "they carry the binlog position while captured tables are quiet",
            skipped_doc: "c, u, d",
        };
        [
            keys::connection(&server),
            vec![
                // A string, so that "unset" can choose one: two replicas with one id cut each
                // other off, so Debezium's default is random too.
                def(SERVER_ID, ConfigType::String)
                    .default_value("")
                    .importance(Importance::High)
                    .doc("The replica server id the connector reads the binlog as; unique among the server's replicas (default: 5400-6399 by process)")
                    .build(),
                keys::topic_prefix("database"),
            ],
            keys::filters(&FILTER_KEYS, "database"),
            vec![def(SNAPSHOT_MODE, ConfigType::String)
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
                .build()],
            keys::events(&events),
            vec![
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
            ],
        ]
        .concat()
    }

    fn validate(&self, config: &Config) -> Vec<FieldError> {
        let mut errors = keys::validate(config, &self.config_defs(), &FILTER_KEYS);
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
