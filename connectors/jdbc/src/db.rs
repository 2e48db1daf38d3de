//! One database connection, PostgreSQL (tokio-postgres) or MariaDB/MySQL (mysql_async), behind
//! the few operations the connectors need: list tables, run a query into [`Cell`]s with each
//! column's Connect [`Kind`], read a table's columns, and run statements in one transaction.

use std::collections::HashMap;
use std::time::Duration;

use futures::TryStreamExt as _;
use mysql_async::prelude::Queryable;
use sluice_connector_sdk::{Config, TaskError};
use tokio_postgres::types::ToSql;

mod mysql;
mod pg;

use mysql::{my_cell, my_column, my_param};
use pg::{pg_decode, pg_kind, PgParam, Raw};

use crate::url::{Dialect, JdbcUrl};
use crate::value::{Cell, Kind, NumericMapping};

pub const CONNECTION_URL: &str = "connection.url";
pub const CONNECTION_USER: &str = "connection.user";
pub const CONNECTION_PASSWORD: &str = "connection.password";
pub const CONNECTION_ATTEMPTS: &str = "connection.attempts";
pub const CONNECTION_BACKOFF: &str = "connection.backoff.ms";

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A table: its schema (PostgreSQL) or database (MySQL), and its name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId {
    pub schema: String,
    pub name: String,
}

impl TableId {
    /// `schema.table`, unquoted: Confluent's form in source partitions.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// A column of a result set.
#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    /// How Connect represents it; `None` for types Confluent does not support either (the
    /// column is left out of records, with a warning).
    pub kind: Option<Kind>,
    pub optional: bool,
    pub type_name: String,
}

/// What [`Db::stream`] sends: the columns first, then each row.
#[derive(Debug)]
pub enum Streamed {
    Columns(Vec<Column>),
    Row(Vec<Cell>),
}

/// Where [`Db::each_row`] puts a result as it reads it; `false` stops the reading.
trait RowSink: Send {
    fn columns(&mut self, columns: Vec<Column>) -> impl std::future::Future<Output = bool> + Send;
    fn row(&mut self, row: Vec<Cell>) -> impl std::future::Future<Output = bool> + Send;
}

/// Keeps every row.
struct Collect(Vec<Vec<Cell>>);

impl RowSink for Collect {
    async fn columns(&mut self, _: Vec<Column>) -> bool {
        true
    }

    async fn row(&mut self, row: Vec<Cell>) -> bool {
        self.0.push(row);
        true
    }
}

/// Sends everything on, waiting while the channel is full.
struct Forward<'a>(&'a tokio::sync::mpsc::Sender<Result<Streamed, TaskError>>);

impl RowSink for Forward<'_> {
    async fn columns(&mut self, columns: Vec<Column>) -> bool {
        self.0.send(Ok(Streamed::Columns(columns))).await.is_ok()
    }

    async fn row(&mut self, row: Vec<Cell>) -> bool {
        self.0.send(Ok(Streamed::Row(row))).await.is_ok()
    }
}

/// A result set, read whole.
pub struct Rows {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

/// A column of a table, as the sink sees it.
#[derive(Clone, Debug)]
pub struct TableColumn {
    pub name: String,
}

/// How to reach the database: the URL plus `connection.*` keys.
#[derive(Clone)]
pub struct ConnectionSettings {
    pub url: JdbcUrl,
    pub attempts: u32,
    pub backoff: Duration,
}

impl ConnectionSettings {
    pub fn from_config(config: &Config) -> Result<ConnectionSettings, TaskError> {
        let mut url = JdbcUrl::parse(config.required(CONNECTION_URL)?)
            .map_err(|e| TaskError::fatal(format!("{CONNECTION_URL}: {e}")))?;
        if let Some(user) = config.get(CONNECTION_USER).filter(|u| !u.is_empty()) {
            url.user = Some(user.to_string());
        }
        if let Some(password) = config.get(CONNECTION_PASSWORD).filter(|p| !p.is_empty()) {
            url.password = Some(password.to_string());
        }
        Ok(ConnectionSettings {
            url,
            attempts: config.parse_or(CONNECTION_ATTEMPTS, 3u32)?.max(1),
            backoff: Duration::from_millis(config.parse_or(CONNECTION_BACKOFF, 10_000u64)?),
        })
    }

    /// Connects, trying `connection.attempts` times `connection.backoff.ms` apart.
    pub async fn connect(&self) -> Result<Db, TaskError> {
        let mut attempt = 1;
        loop {
            match Db::connect(&self.url).await {
                Ok(db) => return Ok(db),
                Err(e) if attempt >= self.attempts => {
                    return Err(TaskError::retriable(format!(
                        "could not connect to {} after {attempt} attempt(s): {e}",
                        self.url
                    )))
                }
                Err(e) => {
                    tracing::warn!(
                        "connecting to {} failed (attempt {attempt} of {}): {e}; retrying in {:?}",
                        self.url,
                        self.attempts,
                        self.backoff
                    );
                    attempt += 1;
                    tokio::time::sleep(self.backoff).await;
                }
            }
        }
    }
}

/// An open connection (one per task: the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub enum Db {
    Postgres {
        client: tokio_postgres::Client,
        /// Per table oid: (attnum → (not null, typmod)), read once.
        attributes: HashMap<u32, HashMap<i16, (bool, i32)>>,
        /// Prepared statements by SQL, reused across transactions (cleared by DDL).
        statements: HashMap<String, tokio_postgres::Statement>,
    },
    MySql(mysql_async::Conn),
}

/// An error from either driver, as text with its cause chain.
fn describe(e: impl std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    // PostgreSQL's DETAIL and HINT lines: one line, so that a log line stays one line.
    text.replace('\n', " ")
}

/// Database errors are worth a retry unless they say the statement itself is wrong.
fn pg_error(context: &str, e: tokio_postgres::Error) -> TaskError {
    let fatal = e
        .code()
        .is_some_and(|c| matches!(&c.code()[..2], "42" | "22" | "23" | "0A" | "28"));
    let message = format!("{context}: {}", describe(e));
    if fatal {
        TaskError::fatal(message)
    } else {
        TaskError::retriable(message)
    }
}

fn my_error(context: &str, e: mysql_async::Error) -> TaskError {
    let message = format!("{context}: {}", describe(&e));
    match e {
        mysql_async::Error::Server(s) if !matches!(s.code, 1205 | 1213 | 2006 | 2013) => {
            TaskError::fatal(message)
        }
        _ => TaskError::retriable(message),
    }
}

impl Db {
    async fn connect(url: &JdbcUrl) -> Result<Db, String> {
        match url.dialect {
            Dialect::Postgres => {
                let mut config = tokio_postgres::Config::new();
                config
                    .host(&url.host)
                    .port(url.port)
                    .dbname(&url.database)
                    .user(url.user.as_deref().unwrap_or("postgres"))
                    .application_name("sluice-jdbc")
                    .connect_timeout(Duration::from_secs(10));
                if let Some(password) = &url.password {
                    config.password(password);
                }
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(describe)?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("postgresql connection ended: {}", describe(e));
                    }
                });
                client
                    .batch_execute("SET TIME ZONE 'UTC'")
                    .await
                    .map_err(describe)?;
                Ok(Db::Postgres {
                    client,
                    attributes: HashMap::new(),
                    statements: HashMap::new(),
                })
            }
            Dialect::MySql => {
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname(url.host.clone())
                    .tcp_port(url.port)
                    .db_name(Some(url.database.clone()).filter(|d| !d.is_empty()))
                    .user(url.user.clone())
                    .pass(url.password.clone())
                    .prefer_socket(false)
                    .init(vec!["SET time_zone = '+00:00'"]);
                let conn =
                    tokio::time::timeout(Duration::from_secs(10), mysql_async::Conn::new(opts))
                        .await
                        .map_err(|_| "timed out after 10 s".to_string())?
                        .map_err(|e| describe(&e))?;
                Ok(Db::MySql(conn))
            }
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Postgres { .. } => Dialect::Postgres,
            Db::MySql(_) => Dialect::MySql,
        }
    }

    /// An identifier quoted for this dialect.
    pub fn quote(&self, ident: &str) -> String {
        quote(self.dialect(), ident)
    }

    pub fn table(&self, table: &TableId) -> String {
        format!("{}.{}", self.quote(&table.schema), self.quote(&table.name))
    }

    /// The user's tables: every schema but the system ones (PostgreSQL), the connection's
    /// database (MySQL).
    pub async fn list_tables(&mut self) -> Result<Vec<TableId>, TaskError> {
        let sql_pg = "SELECT table_schema::text, table_name::text FROM information_schema.tables \
                      WHERE table_type = 'BASE TABLE' \
                      AND table_schema NOT IN ('pg_catalog', 'information_schema') \
                      ORDER BY 1, 2";
        let sql_my = "SELECT table_schema, table_name FROM information_schema.tables \
                      WHERE table_type = 'BASE TABLE' AND table_schema = DATABASE() ORDER BY 1, 2";
        let rows = match self {
            Db::Postgres { .. } => self.query(sql_pg, &[], NumericMapping::None).await?,
            Db::MySql(_) => self.query(sql_my, &[], NumericMapping::None).await?,
        };
        Ok(rows
            .rows
            .into_iter()
            .filter_map(|row| match (row.first(), row.get(1)) {
                (Some(Cell::Text(s)), Some(Cell::Text(t))) => Some(TableId {
                    schema: s.clone(),
                    name: t.clone(),
                }),
                _ => None,
            })
            .collect())
    }

    /// The database's current time, microseconds since the epoch (UTC).
    pub async fn current_timestamp(&mut self) -> Result<i64, TaskError> {
        let sql = match self.dialect() {
            Dialect::Postgres => "SELECT CURRENT_TIMESTAMP::timestamp",
            Dialect::MySql => "SELECT CURRENT_TIMESTAMP(6)",
        };
        let rows = self.query(sql, &[], NumericMapping::None).await?;
        match rows.rows.first().and_then(|r| r.first()) {
            Some(Cell::Timestamp(us)) => Ok(*us),
            other => Err(TaskError::retriable(format!(
                "the database's current time came back as {other:?}"
            ))),
        }
    }

    /// Runs a query with parameters and reads every row.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[Cell],
        mapping: NumericMapping,
    ) -> Result<Rows, TaskError> {
        let mut rows = Collect(Vec::new());
        let columns = self.each_row(sql, params, mapping, &mut rows).await?;
        Ok(Rows {
            columns,
            rows: rows.0,
        })
    }

    /// Runs a query without parameters and sends its columns, then its rows one by one as
    /// the server sends them, to `out`, whose capacity bounds how far ahead the query reads
    /// (both drivers stop reading the socket while their consumer waits). Stops early when
    /// `out` is closed.
    pub async fn stream(
        &mut self,
        sql: &str,
        mapping: NumericMapping,
        out: &tokio::sync::mpsc::Sender<Result<Streamed, TaskError>>,
    ) -> Result<(), TaskError> {
        self.each_row(sql, &[], mapping, &mut Forward(out))
            .await
            .map(drop)
    }

    /// Runs a query, giving `sink` the result's columns and then each row as it is read; the
    /// sink answering false stops the reading. Returns the columns.
    async fn each_row(
        &mut self,
        sql: &str,
        params: &[Cell],
        mapping: NumericMapping,
        sink: &mut impl RowSink,
    ) -> Result<Vec<Column>, TaskError> {
        match self {
            Db::Postgres {
                client, attributes, ..
            } => {
                // Prepared each time: a table's columns may change between queries.
                let statement = client
                    .prepare(sql)
                    .await
                    .map_err(|e| pg_error(&format!("prepare {sql}"), e))?;
                let mut columns = Vec::with_capacity(statement.columns().len());
                for column in statement.columns() {
                    let (not_null, typmod) = match (column.table_oid(), column.column_id()) {
                        (Some(oid), Some(attnum)) if oid != 0 => {
                            if let std::collections::hash_map::Entry::Vacant(entry) =
                                attributes.entry(oid)
                            {
                                let rows = client
                                    .query(
                                        "SELECT attnum, attnotnull, atttypmod FROM pg_attribute WHERE attrelid = $1",
                                        &[&oid],
                                    )
                                    .await
                                    .map_err(|e| pg_error("read column attributes", e))?;
                                let mut found = HashMap::new();
                                for r in &rows {
                                    if let (Ok(n), Ok(not_null), Ok(typmod)) =
                                        (r.try_get::<_, i16>(0), r.try_get(1), r.try_get(2))
                                    {
                                        found.insert(n, (not_null, typmod));
                                    }
                                }
                                entry.insert(found);
                            }
                            attributes
                                .get(&oid)
                                .and_then(|a| a.get(&attnum))
                                .copied()
                                .unwrap_or((false, -1))
                        }
                        _ => (false, -1),
                    };
                    columns.push(Column {
                        name: column.name().to_string(),
                        kind: pg_kind(column.type_(), typmod, mapping),
                        optional: !not_null,
                        type_name: column.type_().name().to_string(),
                    });
                }
                if !sink.columns(columns.clone()).await {
                    return Ok(columns);
                }
                let params: Vec<PgParam> = params.iter().map(PgParam).collect();
                let stream = client
                    .query_raw(&statement, params.iter().map(|p| p as &(dyn ToSql + Sync)))
                    .await
                    .map_err(|e| pg_error(&format!("query {sql}"), e))?;
                futures::pin_mut!(stream);
                while let Some(row) = stream
                    .try_next()
                    .await
                    .map_err(|e| pg_error(&format!("query {sql}"), e))?
                {
                    let mut cells = Vec::with_capacity(columns.len());
                    for (i, column) in statement.columns().iter().enumerate() {
                        let raw: Raw = row.try_get(i).map_err(|e| pg_error("read a column", e))?;
                        cells.push(match raw.0 {
                            None => Cell::Null,
                            Some(bytes) => {
                                if columns[i].kind.is_none() {
                                    Cell::Null
                                } else {
                                    pg_decode(column.type_(), bytes).map_err(|e| {
                                        TaskError::fatal(format!(
                                            "column {:?} ({}): {e}",
                                            column.name(),
                                            column.type_()
                                        ))
                                    })?
                                }
                            }
                        });
                    }
                    if !sink.row(cells).await {
                        break;
                    }
                }
                Ok(columns)
            }
            Db::MySql(conn) => {
                let params: Vec<mysql_async::Value> = params.iter().map(my_param).collect();
                let params = if params.is_empty() {
                    mysql_async::Params::Empty
                } else {
                    mysql_async::Params::Positional(params)
                };
                let mut result = conn
                    .exec_iter(sql, params)
                    .await
                    .map_err(|e| my_error(&format!("query {sql}"), e))?;
                let columns: Vec<Column> = result
                    .columns_ref()
                    .iter()
                    .map(|c| my_column(c, mapping))
                    .collect();
                if !sink.columns(columns.clone()).await {
                    return Ok(columns);
                }
                while let Some(row) = result.next().await.map_err(|e| my_error("read a row", e))? {
                    let values = row.unwrap();
                    let mut cells = Vec::with_capacity(values.len());
                    for (value, column) in values.into_iter().zip(&columns) {
                        cells.push(my_cell(value, column).map_err(|e| {
                            TaskError::fatal(format!(
                                "column {:?} ({}): {e}",
                                column.name, column.type_name
                            ))
                        })?);
                    }
                    if !sink.row(cells).await {
                        break;
                    }
                }
                Ok(columns)
            }
        }
    }

    /// Takes a lock named `name` for as long as this connection lives (PostgreSQL's advisory
    /// locks, MySQL's `GET_LOCK`), waiting up to `wait` for a holder to go away: a task's
    /// previous instance whose process has not exited yet.
    pub async fn lock(&mut self, name: &str, wait: Duration) -> Result<(), TaskError> {
        let name = format!("sluice:{:016x}", fnv1a(name.as_bytes()));
        let secs = wait.as_secs().max(1);
        match self {
            Db::Postgres { client, .. } => {
                client
                    .batch_execute(&format!("SET lock_timeout = '{secs}s'"))
                    .await
                    .map_err(|e| pg_error("set lock_timeout", e))?;
                let taken = client
                    .execute("SELECT pg_advisory_lock(hashtext($1))", &[&name])
                    .await;
                client
                    .batch_execute("SET lock_timeout = 0")
                    .await
                    .map_err(|e| pg_error("reset lock_timeout", e))?;
                taken.map(drop).map_err(|e| {
                    TaskError::retriable(format!(
                        "another instance of this task still holds its lock after {secs} s: {}",
                        describe(e)
                    ))
                })
            }
            Db::MySql(conn) => {
                let got: Option<i64> = conn
                    .exec_first("SELECT GET_LOCK(?, ?)", (name, secs))
                    .await
                    .map_err(|e| my_error("GET_LOCK", e))?;
                if got == Some(1) {
                    Ok(())
                } else {
                    Err(TaskError::retriable(format!(
                        "another instance of this task still holds its lock after {secs} s"
                    )))
                }
            }
        }
    }

    /// Runs statements without results (DDL).
    pub async fn execute(&mut self, sql: &str) -> Result<(), TaskError> {
        match self {
            Db::Postgres {
                client,
                attributes,
                statements,
            } => {
                attributes.clear();
                statements.clear();
                client
                    .batch_execute(sql)
                    .await
                    .map_err(|e| pg_error(sql, e))
            }
            Db::MySql(conn) => conn.query_drop(sql).await.map_err(|e| my_error(sql, e)),
        }
    }

    /// The columns of `table`, or `None` when it does not exist.
    pub async fn table_columns(
        &mut self,
        table: &TableId,
    ) -> Result<Option<Vec<TableColumn>>, TaskError> {
        let sql = match self.dialect() {
            Dialect::Postgres => {
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position"
            }
            Dialect::MySql => {
                "SELECT column_name FROM information_schema.columns \
                 WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position"
            }
        };
        let rows = self
            .query(
                sql,
                &[
                    Cell::Text(table.schema.clone()),
                    Cell::Text(table.name.clone()),
                ],
                NumericMapping::None,
            )
            .await?;
        if rows.rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.rows
                .into_iter()
                .filter_map(|r| match r.into_iter().next() {
                    Some(Cell::Text(name)) => Some(TableColumn { name }),
                    Some(Cell::Bytes(b)) => Some(TableColumn {
                        name: String::from_utf8_lossy(&b).into_owned(),
                    }),
                    _ => None,
                })
                .collect(),
        ))
    }

    /// The table's auto-increment column (PostgreSQL: a serial or identity column), the
    /// incrementing column Confluent's source uses when none is configured.
    pub async fn auto_increment_column(
        &mut self,
        table: &TableId,
    ) -> Result<Option<String>, TaskError> {
        let sql = match self.dialect() {
            Dialect::Postgres => {
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2 \
                 AND (column_default LIKE 'nextval(%' OR is_identity = 'YES') \
                 ORDER BY ordinal_position LIMIT 1"
            }
            Dialect::MySql => {
                "SELECT column_name FROM information_schema.columns \
                 WHERE table_schema = ? AND table_name = ? AND extra LIKE '%auto_increment%' \
                 ORDER BY ordinal_position LIMIT 1"
            }
        };
        let params = [
            Cell::Text(table.schema.clone()),
            Cell::Text(table.name.clone()),
        ];
        let rows = self.query(sql, &params, NumericMapping::None).await?;
        Ok(
            match rows
                .rows
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
            {
                Some(Cell::Text(name)) => Some(name),
                Some(Cell::Bytes(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
                _ => None,
            },
        )
    }

    /// The schema (PostgreSQL: `current_schema()`) or database (MySQL) unqualified names
    /// belong to.
    pub async fn default_schema(&mut self) -> Result<String, TaskError> {
        let sql = match self.dialect() {
            Dialect::Postgres => "SELECT current_schema()::text",
            Dialect::MySql => "SELECT DATABASE()",
        };
        let rows = self.query(sql, &[], NumericMapping::None).await?;
        match rows.rows.first().and_then(|r| r.first()) {
            Some(Cell::Text(s)) => Ok(s.clone()),
            Some(Cell::Bytes(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
            _ => Err(TaskError::fatal(
                "the connection has no current schema or database",
            )),
        }
    }

    /// Runs `batches` in one transaction: each a statement and its rows of parameters, in
    /// order. Returns the affected row count of each row (PostgreSQL; none for MySQL).
    pub async fn transaction(
        &mut self,
        batches: &[(String, Vec<Vec<Cell>>)],
    ) -> Result<Vec<u64>, TaskError> {
        let mut counts = Vec::new();
        match self {
            Db::Postgres {
                client, statements, ..
            } => {
                for (sql, _) in batches {
                    if !statements.contains_key(sql) {
                        let statement = client
                            .prepare(sql)
                            .await
                            .map_err(|e| pg_error(&format!("prepare {sql}"), e))?;
                        statements.insert(sql.clone(), statement);
                    }
                }
                let tx = client
                    .transaction()
                    .await
                    .map_err(|e| pg_error("begin", e))?;
                for (sql, rows) in batches {
                    let statement = statements
                        .get(sql)
                        .ok_or_else(|| TaskError::fatal("a statement was not prepared"))?;
                    // Pipelined: every execute is sent before the first answer is read.
                    let params: Vec<Vec<PgParam>> = rows
                        .iter()
                        .map(|row| row.iter().map(PgParam).collect())
                        .collect();
                    for chunk in params.chunks(1024) {
                        let results = futures::future::join_all(chunk.iter().map(|row| {
                            let refs: Vec<&(dyn ToSql + Sync)> =
                                row.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                            let tx = &tx;
                            async move { tx.execute(statement, &refs).await }
                        }))
                        .await;
                        for result in results {
                            counts.push(result.map_err(|e| pg_error(sql, e))?);
                        }
                    }
                }
                tx.commit().await.map_err(|e| pg_error("commit", e))?;
            }
            Db::MySql(conn) => {
                let mut tx = conn
                    .start_transaction(mysql_async::TxOpts::default())
                    .await
                    .map_err(|e| my_error("begin", e))?;
                for (sql, rows) in batches {
                    // Batched: the rows' executes are pipelined.
                    tx.exec_batch(
                        sql.as_str(),
                        rows.iter()
                            .map(|row| row.iter().map(my_param).collect::<Vec<_>>()),
                    )
                    .await
                    .map_err(|e| my_error(sql, e))?;
                }
                tx.commit().await.map_err(|e| my_error("commit", e))?;
            }
        }
        Ok(counts)
    }
}

/// FNV-1a, for short lock names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub fn quote(dialect: Dialect, ident: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("\"{}\"", ident.replace('"', "\"\"")),
        Dialect::MySql => format!("`{}`", ident.replace('`', "``")),
    }
}

#[cfg(test)]
mod tests {
    use super::pg::{pg_numeric_bytes, pg_numeric_text};
    use super::*;
    use bytes::BytesMut;

    /// `Db::stream` hands rows over as the server sends them and reads no further than its
    /// consumer takes: a result of hundreds of millions of rows gives its first rows at once
    /// (reading it whole, as `query` does, would take minutes and gigabytes). Against the
    /// machine's PostgreSQL and MariaDB (the test suite's variables and defaults).
    #[tokio::test]
    async fn stream_reads_no_further_than_its_consumer() {
        let servers = [
            (
                "SLUICE_TEST_POSTGRES_URL",
                "jdbc:postgresql://127.0.0.1:5432/test?user=postgres",
                "SELECT generate_series(1, 500000000)",
            ),
            (
                "SLUICE_TEST_MARIADB_URL",
                "jdbc:mariadb://127.0.0.1:3306/test?user=root",
                "SELECT 1 FROM information_schema.columns a, information_schema.columns b, information_schema.columns c",
            ),
        ];
        for (env, default, sql) in servers {
            let url = std::env::var(env).unwrap_or_else(|_| default.to_string());
            let settings = ConnectionSettings {
                url: JdbcUrl::parse(&url).unwrap(),
                attempts: 1,
                backoff: Duration::ZERO,
            };
            let mut db = settings
                .connect()
                .await
                .unwrap_or_else(|e| panic!("{env} ({url}): {}", e.message));
            let (tx, mut rx) = tokio::sync::mpsc::channel(4);
            let reader =
                tokio::spawn(async move { db.stream(sql, NumericMapping::None, &tx).await });
            let first = tokio::time::timeout(Duration::from_secs(10), async {
                let mut got = Vec::new();
                while got.len() < 4 {
                    got.push(rx.recv().await.expect("the stream ended").expect("a row"));
                }
                got
            })
            .await
            .unwrap_or_else(|_| panic!("{sql}: no rows within 10 s"));
            assert!(matches!(first[0], Streamed::Columns(_)), "{first:?}");
            assert!(matches!(first[3], Streamed::Row(_)), "{first:?}");
            // Closing the consumer ends the reading.
            drop(rx);
            tokio::time::timeout(Duration::from_secs(30), reader)
                .await
                .unwrap_or_else(|_| panic!("{sql}: the reader did not stop"))
                .unwrap()
                .unwrap();
        }
    }

    #[test]
    fn numeric_binary_round_trips() {
        for text in [
            "0",
            "1",
            "-1",
            "12345.6789",
            "0.0001",
            "-0.5",
            "10000",
            "123456789012345678901234.5",
            "7.10",
        ] {
            let mut out = BytesMut::new();
            pg_numeric_bytes(text, &mut out).unwrap();
            assert_eq!(pg_numeric_text(&out).unwrap(), text, "{text}");
        }
    }
}
