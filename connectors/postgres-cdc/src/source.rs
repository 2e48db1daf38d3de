//! `PostgresCdcSource`: Debezium's PostgreSQL connector with its keys and its envelope. A
//! snapshot read in the transaction the replication slot exported, then the slot's stream
//! (`pgoutput`), so that nothing falls between them and nothing is read twice; the slot's
//! confirmed position moves only when the worker reports the records before it committed.

use sluice_connector_sdk::proto::{ConfigDef, ConfigType, FieldError, Importance};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, SourceConnector, SourceTask, TaskError,
};
use sluice_debezium::keys;

use crate::server::{
    check_wal_level, Settings, AUTOCREATE, DBNAME, FILTER_KEYS, HOSTNAME, PLUGIN, PUBLICATION,
    SLOT, SNAPSHOT_MODE,
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
        let server = keys::Server {
            name: "The PostgreSQL server",
            default_port: 5432,
            user_doc: "A user with the REPLICATION attribute (and, to create the publication, ownership of the tables)",
        };
        let events = keys::Events {
            fetch_doc: "Rows fetched at a time during the snapshot",
            heartbeat_doc: "they let the slot advance while captured tables are quiet",
            skipped_doc: "c, u, d, t (truncate)",
        };
        [
            keys::connection(&server),
            vec![
                def(DBNAME, ConfigType::String)
                    .importance(Importance::High)
                    .doc("The database to capture")
                    .build(),
                keys::topic_prefix("schema"),
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
            ],
            keys::filters(&FILTER_KEYS, "schema"),
            vec![def(SNAPSHOT_MODE, ConfigType::String)
                .default_value("initial")
                .valid_values(&["initial", "always", "never", "no_data", "initial_only"])
                .doc("initial: snapshot the tables unless a snapshot completed, then stream; always: snapshot on every start; never/no_data: stream only; initial_only: snapshot and stop")
                .build()],
            keys::events(&events),
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
