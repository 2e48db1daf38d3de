//! `PostgresCdcSource`: Debezium's PostgreSQL connector with its keys and its envelope. A
//! snapshot read in the transaction the replication slot exported, then the slot's stream
//! (`pgoutput`), so that nothing falls between them and nothing is read twice; the slot's
//! confirmed position moves only when the worker reports the records before it committed.

use sluice_connector_sdk::proto::{ConfigDef, ConfigType, FieldError, Importance};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, SourceConnector, SourceTask, TaskError,
};
use sluice_debezium::patterns;

use crate::server::{
    check_wal_level, Settings, AUTOCREATE, DBNAME, FILTER_KEYS, HEARTBEAT, HEARTBEAT_PREFIX,
    HOSTNAME, PASSWORD, PLUGIN, PORT, PUBLICATION, SCHEMA_EXCLUDE, SCHEMA_INCLUDE, SKIPPED, SLOT,
    SNAPSHOT_FETCH, SNAPSHOT_MODE, TABLE_EXCLUDE, TABLE_INCLUDE, TOMBSTONES, TOPIC_PREFIX, USER,
};
use crate::task::CdcTask;

pub struct PostgresCdcSource;

impl Connector for PostgresCdcSource {
    fn class_name(&self) -> &'static str {
        "PostgresCdcSource"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "io.debezium.connector.postgresql.PostgresConnector",
            "PostgresConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Change data capture from PostgreSQL (logical replication, pgoutput) in Debezium's envelope, with Debezium's keys"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let def = ConfigDefBuilder::new;
        vec![
            def(HOSTNAME, ConfigType::String)
                .importance(Importance::High)
                .doc("The PostgreSQL server's host")
                .build(),
            def(PORT, ConfigType::Int)
                .default_value("5432")
                .importance(Importance::High)
                .doc("The PostgreSQL server's port")
                .build(),
            def(USER, ConfigType::String)
                .importance(Importance::High)
                .doc("A user with the REPLICATION attribute (and, to create the publication, ownership of the tables)")
                .build(),
            def(PASSWORD, ConfigType::Password)
                .default_value("")
                .importance(Importance::High)
                .doc("The user's password")
                .build(),
            def(DBNAME, ConfigType::String)
                .importance(Importance::High)
                .doc("The database to capture")
                .build(),
            def(TOPIC_PREFIX, ConfigType::String)
                .importance(Importance::High)
                .doc("The logical server name: topics are <prefix>.<schema>.<table>, and it names the offsets")
                .build(),
            def(SLOT, ConfigType::String)
                .default_value("debezium")
                .doc("The logical replication slot (created when missing)")
                .build(),
            def(PUBLICATION, ConfigType::String)
                .default_value("dbz_publication")
                .doc("The publication the slot streams")
                .build(),
            def(AUTOCREATE, ConfigType::String)
                .default_value("all_tables")
                .valid_values(&["all_tables", "disabled", "filtered"])
                .doc("all_tables: create the publication FOR ALL TABLES when missing; filtered: for the included tables, kept in step on each start; disabled: it must exist")
                .build(),
            def(PLUGIN, ConfigType::String)
                .default_value("pgoutput")
                .valid_values(&["pgoutput"])
                .doc("The logical decoding plugin; only PostgreSQL's built-in pgoutput")
                .build(),
            def(TABLE_INCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching schema.table of the tables to capture; empty for all")
                .build(),
            def(TABLE_EXCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching schema.table of tables not to capture")
                .build(),
            def(SCHEMA_INCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching the schemas to capture; empty for all")
                .build(),
            def(SCHEMA_EXCLUDE, ConfigType::List)
                .default_value("")
                .doc("Regular expressions matching schemas not to capture")
                .build(),
            def(SNAPSHOT_MODE, ConfigType::String)
                .default_value("initial")
                .valid_values(&["initial", "always", "never", "no_data", "initial_only"])
                .doc("initial: snapshot the tables unless a snapshot completed, then stream; always: snapshot on every start; never/no_data: stream only; initial_only: snapshot and stop")
                .build(),
            def(SNAPSHOT_FETCH, ConfigType::Int)
                .default_value("10240")
                .doc("Rows fetched at a time during the snapshot")
                .build(),
            def(HEARTBEAT, ConfigType::Int)
                .default_value("0")
                .doc("Milliseconds between heartbeat records (0: none); they let the slot advance while captured tables are quiet")
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
                .doc("Operations not to emit: c, u, d, t (truncate), or none")
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
                errors.push(FieldError {
                    name: HOSTNAME.into(),
                    message: e.message,
                });
                return errors;
            }
        };
        let checked = sluice_connector_jdbc::block_on(async move {
            let client = settings.connect().await?;
            check_wal_level(&client).await
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
        // One slot, one stream: one task, as Debezium's PostgreSQL connector.
        Ok(vec![config.clone()])
    }
}

impl SourceConnector for PostgresCdcSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(CdcTask::default())
    }
}
