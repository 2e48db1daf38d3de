//! `JdbcSource`: Confluent's JdbcSourceConnector for PostgreSQL and MariaDB/MySQL. Tables
//! (or one query) are read in `bulk`, `incrementing`, `timestamp` or `timestamp+incrementing`
//! mode into Connect structs named after the table, with Confluent's source partitions and
//! offsets, so that a restart resumes right after the last committed row.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_connector_sdk::proto::{ConfigDef, ConfigType, FieldError, Importance};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, Reconfigure, SourceConnector, SourceTask, TaskError,
};

use crate::db::{self, ConnectionSettings, TableId};
use crate::{block_on, connection_defs, list};

mod task;

use task::JdbcSourceTask;

const MODE: &str = "mode";
const INCREMENTING_COLUMN: &str = "incrementing.column.name";
const TIMESTAMP_COLUMN: &str = "timestamp.column.name";
const TIMESTAMP_DELAY: &str = "timestamp.delay.interval.ms";
const TIMESTAMP_INITIAL: &str = "timestamp.initial";
const VALIDATE_NON_NULL: &str = "validate.non.null";
const TABLE_WHITELIST: &str = "table.whitelist";
const TABLE_BLACKLIST: &str = "table.blacklist";
const TABLE_INCLUDE: &str = "table.include.list";
const TABLE_EXCLUDE: &str = "table.exclude.list";
const QUERY: &str = "query";
const QUERY_SUFFIX: &str = "query.suffix";
const TOPIC_PREFIX: &str = "topic.prefix";
const POLL_INTERVAL: &str = "poll.interval.ms";
const BATCH_MAX_ROWS: &str = "batch.max.rows";
const TABLE_POLL_INTERVAL: &str = "table.poll.interval.ms";
const NUMERIC_MAPPING: &str = "numeric.mapping";
const DB_TIMEZONE: &str = "db.timezone";
/// Set by `plan`: the task's tables, a JSON array of `[schema, table]`.
const TASK_TABLES: &str = "tables";

/// How long an idle poll waits at most before returning nothing.
const IDLE_WAIT: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Bulk,
    Incrementing,
    Timestamp,
    TimestampIncrementing,
}

impl Mode {
    fn parse(text: &str) -> Option<Mode> {
        match text.trim() {
            "bulk" => Some(Mode::Bulk),
            "incrementing" => Some(Mode::Incrementing),
            "timestamp" => Some(Mode::Timestamp),
            "timestamp+incrementing" => Some(Mode::TimestampIncrementing),
            _ => None,
        }
    }

    fn incrementing(self) -> bool {
        matches!(self, Mode::Incrementing | Mode::TimestampIncrementing)
    }

    fn timestamp(self) -> bool {
        matches!(self, Mode::Timestamp | Mode::TimestampIncrementing)
    }
}

pub struct JdbcSource;

impl Connector for JdbcSource {
    fn class_name(&self) -> &'static str {
        "JdbcSource"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "io.confluent.connect.jdbc.JdbcSourceConnector",
            "JdbcSourceConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Reads tables of PostgreSQL or MariaDB/MySQL (or one query) into Kafka, with Confluent's JDBC source keys"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let mut defs = connection_defs();
        defs.extend([
            ConfigDefBuilder::new(MODE, ConfigType::String)
                .importance(Importance::High)
                .valid_values(&["bulk", "incrementing", "timestamp", "timestamp+incrementing"])
                .doc("bulk: the whole table each poll; incrementing: rows with a larger incrementing.column.name; timestamp: rows with a newer timestamp.column.name; timestamp+incrementing: both, so rows with equal timestamps are never skipped")
                .build(),
            ConfigDefBuilder::new(INCREMENTING_COLUMN, ConfigType::String)
                .default_value("")
                .doc("A strictly increasing integer column; empty: each table's auto-increment (serial, identity) column")
                .build(),
            ConfigDefBuilder::new(TIMESTAMP_COLUMN, ConfigType::List)
                .default_value("")
                .doc("Timestamp columns; with several, the first non-null (COALESCE) is the row's timestamp")
                .build(),
            ConfigDefBuilder::new(TIMESTAMP_DELAY, ConfigType::Long)
                .default_value("0")
                .doc("Only rows older than the database's current time minus this are read, so transactions with earlier timestamps can commit first")
                .build(),
            ConfigDefBuilder::new(TIMESTAMP_INITIAL, ConfigType::String)
                .default_value("")
                .doc("Epoch milliseconds to start from when no offset is stored; -1 for the current time; empty for the beginning")
                .build(),
            ConfigDefBuilder::new(VALIDATE_NON_NULL, ConfigType::Boolean)
                .default_value("true")
                .doc("Refuse incrementing/timestamp columns that are nullable")
                .build(),
            ConfigDefBuilder::new(TABLE_WHITELIST, ConfigType::List)
                .default_value("")
                .doc("Tables to read (name or schema.name); empty for all")
                .build(),
            ConfigDefBuilder::new(TABLE_BLACKLIST, ConfigType::List)
                .default_value("")
                .doc("Tables not to read")
                .build(),
            ConfigDefBuilder::new(TABLE_INCLUDE, ConfigType::List)
                .default_value("")
                .doc("Newer name of table.whitelist")
                .build(),
            ConfigDefBuilder::new(TABLE_EXCLUDE, ConfigType::List)
                .default_value("")
                .doc("Newer name of table.blacklist")
                .build(),
            ConfigDefBuilder::new(QUERY, ConfigType::String)
                .default_value("")
                .doc("Read this query instead of tables (one task); the mode's WHERE clause is appended to it")
                .build(),
            ConfigDefBuilder::new(QUERY_SUFFIX, ConfigType::String)
                .default_value("")
                .doc("Appended to every generated query")
                .build(),
            ConfigDefBuilder::new(TOPIC_PREFIX, ConfigType::String)
                .importance(Importance::High)
                .doc("Topic of a table: this prefix and the table's name; of a query: this prefix")
                .build(),
            ConfigDefBuilder::new(POLL_INTERVAL, ConfigType::Int)
                .default_value("5000")
                .doc("How often each table is queried for new rows")
                .build(),
            ConfigDefBuilder::new(BATCH_MAX_ROWS, ConfigType::Int)
                .default_value("100")
                .doc("Rows read per query")
                .build(),
            ConfigDefBuilder::new(TABLE_POLL_INTERVAL, ConfigType::Long)
                .default_value("60000")
                .doc("How often the table list is read; a change plans the tasks again")
                .build(),
            ConfigDefBuilder::new(NUMERIC_MAPPING, ConfigType::String)
                .default_value("none")
                .valid_values(&["none", "precision_only", "best_fit"])
                .doc("NUMERIC/DECIMAL columns: none: Decimal; precision_only: integers for scale 0; best_fit: integers or FLOAT64 when the precision allows")
                .build(),
            ConfigDefBuilder::new(DB_TIMEZONE, ConfigType::String)
                .default_value("UTC")
                .valid_values(&["UTC"])
                .doc("Time zone of timestamps without one; UTC only")
                .build(),
        ]);
        defs
    }

    fn validate(&self, config: &Config) -> Vec<FieldError> {
        let mut errors = config.validate_against(&self.config_defs());
        let error = |name: &str, message: String| FieldError {
            name: name.into(),
            message,
        };
        if let Some(mode) = config.get(MODE).and_then(Mode::parse) {
            let query = !config.get_or(QUERY, "").trim().is_empty();
            if mode.incrementing()
                && query
                && config.get_or(INCREMENTING_COLUMN, "").trim().is_empty()
            {
                errors.push(error(
                    INCREMENTING_COLUMN,
                    format!(
                        "mode {} on a query needs an incrementing column (tables default to their auto-increment column)",
                        config.get_or(MODE, "")
                    ),
                ));
            }
            if mode.timestamp() && list(config.get_or(TIMESTAMP_COLUMN, "")).is_empty() {
                errors.push(error(
                    TIMESTAMP_COLUMN,
                    format!("mode {} needs a timestamp column", config.get_or(MODE, "")),
                ));
            }
        }
        if let Some(initial) = config.get(TIMESTAMP_INITIAL).map(str::trim) {
            if !initial.is_empty() && initial.parse::<i64>().is_err() {
                errors.push(error(
                    TIMESTAMP_INITIAL,
                    format!(
                        "invalid value {initial:?}: expected epoch milliseconds, -1 or nothing"
                    ),
                ));
            }
        }
        let whitelist = !list(config.get_or(TABLE_WHITELIST, "")).is_empty()
            || !list(config.get_or(TABLE_INCLUDE, "")).is_empty();
        let blacklist = !list(config.get_or(TABLE_BLACKLIST, "")).is_empty()
            || !list(config.get_or(TABLE_EXCLUDE, "")).is_empty();
        if whitelist && blacklist {
            errors.push(error(
                TABLE_BLACKLIST,
                "give a list of tables to read or a list not to read, not both".into(),
            ));
        }
        if errors.iter().any(|e| e.name.starts_with("connection.")) {
            return errors;
        }
        match ConnectionSettings::from_config(config) {
            Err(e) => errors.push(error(db::CONNECTION_URL, e.message)),
            Ok(settings) => {
                let once = ConnectionSettings {
                    attempts: 1,
                    ..settings
                };
                if let Err(e) = block_on(async move { once.connect().await.map(drop) }) {
                    errors.push(error(db::CONNECTION_URL, e.message));
                }
            }
        }
        errors
    }

    fn plan(&self, config: &Config, max_tasks: usize) -> Result<Vec<Config>, TaskError> {
        if !config.get_or(QUERY, "").trim().is_empty() {
            let mut task = config.clone();
            task.set(TASK_TABLES, "[]");
            return Ok(vec![task]);
        }
        let settings = ConnectionSettings::from_config(config)?;
        let filter = TableFilter::from_config(config);
        let tables = block_on(async move {
            let mut db = settings.connect().await?;
            db.list_tables().await
        })?;
        let tables: Vec<TableId> = tables.into_iter().filter(|t| filter.keeps(t)).collect();
        if tables.is_empty() {
            tracing::warn!("no tables to read yet; the task idles until one appears");
        }
        // Contiguous groups, as Kafka's ConnectorUtils.groupPartitions makes them.
        let groups = max_tasks.clamp(1, tables.len().max(1));
        let per = tables.len() / groups;
        let extra = tables.len() % groups;
        let mut at = 0;
        Ok((0..groups)
            .map(|i| {
                let n = per + usize::from(i < extra);
                let mine: Vec<[&str; 2]> = tables[at..at + n]
                    .iter()
                    .map(|t| [t.schema.as_str(), t.name.as_str()])
                    .collect();
                at += n;
                let mut task = config.clone();
                task.set(TASK_TABLES, json!(mine).to_string());
                task
            })
            .collect())
    }

    fn monitor(&self, config: &Config, reconfigure: Reconfigure) {
        if !config.get_or(QUERY, "").trim().is_empty() {
            return;
        }
        let Ok(settings) = ConnectionSettings::from_config(config) else {
            return;
        };
        let filter = TableFilter::from_config(config);
        let every = Duration::from_millis(
            config
                .parse_or(TABLE_POLL_INTERVAL, 60_000u64)
                .unwrap_or(60_000),
        );
        std::thread::spawn(move || {
            let list_now = || -> Option<Vec<TableId>> {
                let settings = settings.clone();
                let tables = block_on(async move {
                    let mut db = settings.connect().await?;
                    db.list_tables().await
                });
                match tables {
                    Ok(t) => Some(t.into_iter().filter(|t| filter.keeps(t)).collect()),
                    Err(e) => {
                        tracing::warn!("listing tables failed: {}", e.message);
                        None
                    }
                }
            };
            let mut seen = list_now();
            let mut last = Instant::now();
            while !reconfigure.is_closed() {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() < every {
                    continue;
                }
                last = Instant::now();
                let now = list_now();
                if now.is_some() && now != seen {
                    let reason = format!(
                        "the tables to read changed: {:?}",
                        now.iter()
                            .flatten()
                            .map(TableId::qualified)
                            .collect::<Vec<_>>()
                    );
                    seen = now;
                    if !reconfigure.request(reason) {
                        return;
                    }
                }
            }
        });
    }
}

impl SourceConnector for JdbcSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(JdbcSourceTask::default())
    }
}

/// `table.whitelist`/`table.blacklist` (and their newer names): entries match a table's name
/// or `schema.name`.
#[derive(Clone)]
struct TableFilter {
    include: HashSet<String>,
    exclude: HashSet<String>,
}

impl TableFilter {
    fn from_config(config: &Config) -> TableFilter {
        let set = |a: &str, b: &str| -> HashSet<String> {
            list(config.get_or(a, ""))
                .into_iter()
                .chain(list(config.get_or(b, "")))
                .collect()
        };
        TableFilter {
            include: set(TABLE_WHITELIST, TABLE_INCLUDE),
            exclude: set(TABLE_BLACKLIST, TABLE_EXCLUDE),
        }
    }

    fn keeps(&self, table: &TableId) -> bool {
        let named =
            |set: &HashSet<String>| set.contains(&table.name) || set.contains(&table.qualified());
        (self.include.is_empty() || named(&self.include)) && !named(&self.exclude)
    }
}

#[cfg(test)]
mod tests {
    use super::task::Offset;
    use super::*;

    #[test]
    fn offsets_keep_confluents_fields() {
        let o = Offset {
            incrementing: Some(42),
            timestamp: Some(1_700_000_000_123_456),
        };
        let text = o.to_json();
        assert_eq!(
            text,
            r#"{"incrementing":42,"timestamp":1700000000123,"timestamp_nanos":123456000}"#
        );
        let back = Offset::from_json(&serde_json::from_str(&text).unwrap());
        assert_eq!(back, o);
    }

    #[test]
    fn filters_match_names_and_qualified_names() {
        let filter = TableFilter::from_config(&Config::from([(TABLE_WHITELIST, "a, public.b")]));
        let t = |s: &str, n: &str| TableId {
            schema: s.into(),
            name: n.into(),
        };
        assert!(filter.keeps(&t("public", "a")));
        assert!(filter.keeps(&t("public", "b")));
        assert!(!filter.keeps(&t("other", "b")));
        let filter = TableFilter::from_config(&Config::from([(TABLE_EXCLUDE, "x")]));
        assert!(!filter.keeps(&t("s", "x")));
        assert!(filter.keeps(&t("s", "y")));
    }
}
