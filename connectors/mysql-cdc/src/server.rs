//! MySqlCdcSource's keys, its connection settings and what it asks the server: the binlog
//! settings, the binlog files, the current position.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use sluice_connector_sdk::{Config, TaskError};
use sluice_debezium::FilterKeys;

/// The keys shared with the other CDC connector.
pub(crate) use sluice_debezium::keys::*;

pub(crate) const SERVER_ID: &str = "database.server.id";
pub(crate) const DATABASE_INCLUDE: &str = "database.include.list";
pub(crate) const DATABASE_EXCLUDE: &str = "database.exclude.list";
pub(crate) const SCHEMA_CHANGES: &str = "include.schema.changes";
pub(crate) const HISTORY_TOPIC: &str = "schema.history.internal.kafka.topic";
pub(crate) const HISTORY_SERVERS: &str = "schema.history.internal.kafka.bootstrap.servers";
pub(crate) const FILTER_KEYS: FilterKeys = FilterKeys {
    container_include: DATABASE_INCLUDE,
    container_exclude: DATABASE_EXCLUDE,
    table_include: TABLE_INCLUDE,
    table_exclude: TABLE_EXCLUDE,
};
/// Databases that are the server's own, never captured.
pub(crate) const SYSTEM_DATABASES: &[&str] =
    &["mysql", "information_schema", "performance_schema", "sys"];

/// The connection keys.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) server_id: u32,
}

impl Settings {
    pub(crate) fn from_config(config: &Config) -> Result<Settings, TaskError> {
        let server_id = match config.get_or(SERVER_ID, "").trim() {
            "" => 5400 + std::process::id() % 1000,
            text => text.parse().map_err(|_| {
                TaskError::fatal(format!(
                    "{SERVER_ID} {text:?} is not a server id (1 to 4294967295)"
                ))
            })?,
        };
        Ok(Settings {
            host: config.required(HOSTNAME)?.trim().to_string(),
            port: config.parse_or(PORT, 3306u16)?,
            user: config.required(USER)?.trim().to_string(),
            password: config.get_or(PASSWORD, "").to_string(),
            server_id,
        })
    }

    pub(crate) async fn connect(&self) -> Result<Conn, TaskError> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()).filter(|p| !p.is_empty()))
            .prefer_socket(false)
            .init(vec!["SET time_zone = '+00:00'", "SET NAMES utf8mb4"]);
        tokio::time::timeout(Duration::from_secs(10), Conn::new(opts))
            .await
            .map_err(|_| {
                TaskError::retriable(format!(
                    "connect to {}:{}: timed out after 10 s",
                    self.host, self.port
                ))
            })?
            .map_err(|e| my_error(&format!("connect to {}:{}", self.host, self.port), e))
    }
}

pub(crate) fn my_error(context: &str, e: mysql_async::Error) -> TaskError {
    TaskError::retriable(format!("{context}: {e}"))
}

pub(crate) async fn query<T: mysql_async::prelude::FromRow + Send + 'static>(
    conn: &mut Conn,
    sql: &str,
) -> Result<Vec<T>, TaskError> {
    conn.query(sql).await.map_err(|e| my_error(sql, e))
}

/// Refuses a server whose binlog a change data capture cannot read rows from.
pub(crate) async fn check_binlog(conn: &mut Conn) -> Result<(), TaskError> {
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = query(
        conn,
        "SELECT CAST(@@log_bin AS CHAR), @@binlog_format, @@binlog_row_image",
    )
    .await?;
    let Some((log_bin, format, image)) = rows.into_iter().next() else {
        return Err(TaskError::retriable(
            "the server answered no binlog settings",
        ));
    };
    if !matches!(log_bin.as_deref(), Some("1" | "ON")) {
        return Err(TaskError::fatal(
            "the server's binary log is off, and change data capture reads it: start the server with log_bin (e.g. --log-bin=binlog), binlog_format=ROW and a server_id",
        ));
    }
    let format = format.unwrap_or_default();
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(TaskError::fatal(format!(
            "the server's binlog_format is {format}, and change data capture needs ROW: SET GLOBAL binlog_format = 'ROW' (and binlog_format=ROW in the server's configuration)"
        )));
    }
    let image = image.unwrap_or_default();
    if !image.eq_ignore_ascii_case("FULL") {
        return Err(TaskError::fatal(format!(
            "the server's binlog_row_image is {image}, and change data capture needs FULL: SET GLOBAL binlog_row_image = 'FULL'"
        )));
    }
    Ok(())
}

/// The server's binlog files.
pub(crate) async fn binlog_files(conn: &mut Conn) -> Result<Vec<String>, TaskError> {
    let rows: Vec<Row> = query(conn, "SHOW BINARY LOGS").await?;
    Ok(rows
        .into_iter()
        .filter_map(|mut r| r.take::<String, _>(0))
        .collect())
}

/// The server's current binlog position.
pub(crate) async fn master_position(conn: &mut Conn) -> Result<(String, u64), TaskError> {
    let rows: Vec<Row> = query(conn, "SHOW MASTER STATUS").await?;
    let mut row = rows
        .into_iter()
        .next()
        .ok_or_else(|| TaskError::fatal("SHOW MASTER STATUS is empty: is log_bin on?"))?;
    match (row.take::<String, _>(0), row.take::<u64, _>(1)) {
        (Some(file), Some(pos)) => Ok((file, pos)),
        _ => Err(TaskError::retriable(
            "SHOW MASTER STATUS answered no position",
        )),
    }
}

pub(crate) fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}
