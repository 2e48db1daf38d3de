//! What PostgresCdcSource asks of the server: Debezium's keys, the settings they make, the
//! checks (`wal_level`), and the catalog (a table's columns, the publication's tables).

use std::time::Duration;

use pgwire_replication::{ReplicationClient, ReplicationConfig};
use sluice_connector_sdk::{Config, TaskError};
use sluice_debezium::{Filter, FilterKeys};
use tokio_postgres::Client;

use crate::types::{self};

/// The keys shared with the other CDC connector.
pub(crate) use sluice_debezium::keys::*;

pub(crate) const DBNAME: &str = "database.dbname";
pub(crate) const SLOT: &str = "slot.name";
pub(crate) const PUBLICATION: &str = "publication.name";
pub(crate) const AUTOCREATE: &str = "publication.autocreate.mode";
pub(crate) const PLUGIN: &str = "plugin.name";
pub(crate) const SCHEMA_INCLUDE: &str = "schema.include.list";
pub(crate) const SCHEMA_EXCLUDE: &str = "schema.exclude.list";
pub(crate) const FILTER_KEYS: FilterKeys = FilterKeys {
    container_include: SCHEMA_INCLUDE,
    container_exclude: SCHEMA_EXCLUDE,
    table_include: TABLE_INCLUDE,
    table_exclude: TABLE_EXCLUDE,
};

/// How long an idle poll waits for the stream before returning nothing.
pub(crate) const IDLE_WAIT: Duration = Duration::from_millis(500);
/// Seconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
pub(crate) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// The connection keys.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) dbname: String,
}

impl Settings {
    pub(crate) fn from_config(config: &Config) -> Result<Settings, TaskError> {
        Ok(Settings {
            host: config.required(HOSTNAME)?.trim().to_string(),
            port: config.parse_or(PORT, 5432u16)?,
            user: config.required(USER)?.trim().to_string(),
            password: config.get_or(PASSWORD, "").to_string(),
            dbname: config.required(DBNAME)?.trim().to_string(),
        })
    }

    pub(crate) fn session_options() -> String {
        types::SESSION_SETTINGS
            .iter()
            .map(|(k, v)| format!("-c {k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A plain SQL session (catalog, publication, snapshot).
    pub(crate) async fn connect(&self) -> Result<Client, TaskError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("sluice-postgres-cdc")
            .options(Settings::session_options())
            .connect_timeout(Duration::from_secs(10));
        if !self.password.is_empty() {
            config.password(&self.password);
        }
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| pg_error(&format!("connect to {}:{}", self.host, self.port), e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("PostgreSQL connection ended: {e}");
            }
        });
        Ok(client)
    }

    /// A replication session, waiting for commands before it streams.
    pub(crate) async fn replication(
        &self,
        slot: &str,
        publication: &str,
    ) -> Result<ReplicationClient, TaskError> {
        let config = ReplicationConfig::new(
            self.host.clone(),
            self.user.clone(),
            self.password.clone(),
            self.dbname.clone(),
            slot.to_string(),
            publication.to_string(),
        )
        .with_port(self.port)
        .with_status_interval(Duration::from_secs(1))
        .with_wakeup_interval(Duration::from_secs(1))
        .with_options(Settings::session_options());
        ReplicationClient::connect_gated(config)
            .await
            .map_err(|e| TaskError::retriable(format!("open a replication session: {e}")))
    }
}

pub(crate) fn pg_error(context: &str, e: tokio_postgres::Error) -> TaskError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    };
    TaskError::retriable(format!("{context}: {detail}"))
}

pub(crate) async fn check_wal_level(client: &Client) -> Result<(), TaskError> {
    let row = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(|e| pg_error("read wal_level", e))?;
    let level: String = row.get(0);
    if level != "logical" {
        return Err(TaskError::fatal(format!(
            "the PostgreSQL server's wal_level is {level:?}, and change data capture needs \"logical\": run ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf) and restart the server"
        )));
    }
    Ok(())
}

pub(crate) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Columns of a table from the catalog: name, type, modifier, NOT NULL, place in the
/// primary key.
pub(crate) async fn catalog_columns(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<(String, u32, i32, bool, Option<i32>)>, TaskError> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid::int8, a.atttypmod, a.attnotnull, \
               (SELECT array_position(i.indkey::int2[], a.attnum)::int4 FROM pg_index i \
                 WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(|e| pg_error(&format!("read the columns of {schema}.{table}"), e))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, i64>(1) as u32,
                r.get::<_, i32>(2),
                r.get::<_, bool>(3),
                r.get::<_, Option<i32>>(4),
            )
        })
        .collect())
}

pub(crate) fn key_order(positions: &[Option<i32>]) -> Vec<usize> {
    let mut key: Vec<(i32, usize)> = positions
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.map(|p| (p, i)))
        .collect();
    key.sort();
    key.into_iter().map(|(_, i)| i).collect()
}

/// The tables the publication carries that the filter keeps.
pub(crate) async fn published_tables(
    client: &Client,
    publication: &str,
    filter: &Filter,
) -> Result<Vec<(String, String)>, TaskError> {
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2",
            &[&publication],
        )
        .await
        .map_err(|e| pg_error("list the publication's tables", e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .filter(|(s, t)| filter.keeps(s, t))
        .collect())
}
