//! One database connection, PostgreSQL (tokio-postgres) or MariaDB/MySQL (mysql_async), behind
//! the few operations the connectors need: list tables, run a query into [`Cell`]s with each
//! column's Connect [`Kind`], read a table's columns, and run statements in one transaction.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use futures::TryStreamExt as _;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use sluice_connector_sdk::{Config, TaskError};
use tokio_postgres::types::{FromSql, IsNull, Kind as PgKind, ToSql, Type};

use crate::url::{Dialect, JdbcUrl};
use crate::value::{civil_from_micros, days_from_civil, Cell, Kind, NumericMapping};

pub const CONNECTION_URL: &str = "connection.url";
pub const CONNECTION_USER: &str = "connection.user";
pub const CONNECTION_PASSWORD: &str = "connection.password";
pub const CONNECTION_ATTEMPTS: &str = "connection.attempts";
pub const CONNECTION_BACKOFF: &str = "connection.backoff.ms";

/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS: i32 = 10_957;
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

/// A PostgreSQL value as it came: any type, bytes in the binary format, or NULL.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn is_text_type(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR | Type::UNKNOWN
    ) || matches!(ty.kind(), PgKind::Enum(_))
        || ty.name() == "citext"
}

/// Confluent's PostgreSQL mapping, by type and type modifier.
fn pg_kind(ty: &Type, typmod: i32, mapping: NumericMapping) -> Option<Kind> {
    Some(match *ty {
        Type::BOOL => Kind::Boolean,
        Type::INT2 => Kind::Int16,
        Type::INT4 => Kind::Int32,
        Type::INT8 | Type::OID => Kind::Int64,
        Type::FLOAT4 => Kind::Float32,
        Type::FLOAT8 => Kind::Float64,
        Type::NUMERIC => {
            let (precision, scale) = if typmod >= 4 {
                let t = typmod - 4;
                (Some(((t >> 16) & 0xffff) as u32), Some(t & 0xffff))
            } else {
                (None, None)
            };
            Kind::numeric(mapping, precision, scale)
        }
        Type::JSON | Type::JSONB | Type::UUID | Type::XML => Kind::String,
        Type::BYTEA => Kind::Bytes,
        Type::DATE => Kind::Date,
        Type::TIME | Type::TIMETZ => Kind::Time,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => Kind::Timestamp,
        _ if is_text_type(ty) => Kind::String,
        _ => return None,
    })
}

fn be<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{} bytes where {N} were expected", raw.len()))
}

/// A PostgreSQL binary value of a supported type as a [`Cell`].
fn pg_decode(ty: &Type, raw: &[u8]) -> Result<Cell, String> {
    Ok(match *ty {
        Type::BOOL => Cell::Bool(be::<1>(raw)?[0] != 0),
        Type::INT2 => Cell::Int(i64::from(i16::from_be_bytes(be(raw)?))),
        Type::INT4 => Cell::Int(i64::from(i32::from_be_bytes(be(raw)?))),
        Type::INT8 => Cell::Int(i64::from_be_bytes(be(raw)?)),
        Type::OID => Cell::Int(i64::from(u32::from_be_bytes(be(raw)?))),
        Type::FLOAT4 => Cell::Float32(f32::from_be_bytes(be(raw)?)),
        Type::FLOAT8 => Cell::Float64(f64::from_be_bytes(be(raw)?)),
        Type::NUMERIC => Cell::Decimal(pg_numeric_text(raw)?),
        Type::BYTEA => Cell::Bytes(raw.to_vec()),
        Type::JSONB => Cell::Text(
            String::from_utf8(raw.get(1..).unwrap_or_default().to_vec())
                .map_err(|_| "jsonb is not UTF-8")?,
        ),
        Type::UUID => {
            let b: [u8; 16] = be(raw)?;
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Cell::Text(format!(
                "{}-{}-{}-{}-{}",
                &hex[0..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            ))
        }
        Type::DATE => {
            let days = i32::from_be_bytes(be(raw)?);
            if days == i32::MAX || days == i32::MIN {
                return Err("infinite dates have no Connect value".into());
            }
            Cell::Date(days + PG_EPOCH_DAYS)
        }
        Type::TIME => Cell::Time(i64::from_be_bytes(be(raw)?)),
        Type::TIMETZ => {
            let micros = i64::from_be_bytes(be(raw)?);
            let zone = i32::from_be_bytes(be(raw.get(8..).unwrap_or_default())?);
            Cell::Time((micros + i64::from(zone) * 1_000_000).rem_euclid(MICROS_PER_DAY))
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let micros = i64::from_be_bytes(be(raw)?);
            if micros == i64::MAX || micros == i64::MIN {
                return Err("infinite timestamps have no Connect value".into());
            }
            Cell::Timestamp(micros + PG_EPOCH_MICROS)
        }
        _ => Cell::Text(String::from_utf8(raw.to_vec()).map_err(|_| "text is not UTF-8")?),
    })
}

/// PostgreSQL's binary NUMERIC (base-10000 digits) as decimal text.
fn pg_numeric_text(raw: &[u8]) -> Result<String, String> {
    let header: [u8; 8] = be(raw)?;
    let ndigits = u16::from_be_bytes([header[0], header[1]]) as usize;
    let weight = i16::from_be_bytes([header[2], header[3]]) as i32;
    let sign = u16::from_be_bytes([header[4], header[5]]);
    let dscale = u16::from_be_bytes([header[6], header[7]]) as usize;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN has no Connect Decimal value".into()),
        _ => return Err("infinity has no Connect Decimal value".into()),
    }
    let mut groups = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let at = 8 + 2 * i;
        groups.push(u16::from_be_bytes(be(raw.get(at..).unwrap_or_default())?));
    }
    let group = |i: i32| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| groups.get(i).copied())
            .unwrap_or(0)
    };
    // Integer part: groups 0..=weight.
    let mut whole = String::new();
    for i in 0..=weight {
        if whole.is_empty() {
            let g = group(i);
            if g != 0 {
                whole = g.to_string();
            }
        } else {
            whole.push_str(&format!("{:04}", group(i)));
        }
    }
    if whole.is_empty() {
        whole.push('0');
    }
    let mut frac = String::new();
    let mut i = weight + 1;
    while frac.len() < dscale {
        frac.push_str(&format!("{:04}", group(i)));
        i += 1;
    }
    frac.truncate(dscale);
    let mut text = if sign == 0x4000 {
        format!("-{whole}")
    } else {
        whole
    };
    if !frac.is_empty() {
        text.push('.');
        text.push_str(&frac);
    }
    Ok(text)
}

/// Decimal text as PostgreSQL's binary NUMERIC.
fn pg_numeric_bytes(text: &str, out: &mut BytesMut) -> Result<(), String> {
    let t = text.trim();
    let (negative, body) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(format!("{text:?} is not a decimal number"));
    }
    let whole = whole.trim_start_matches('0');
    let pad_left = (4 - whole.len() % 4) % 4;
    let pad_right = (4 - frac.len() % 4) % 4;
    let digits = format!(
        "{}{whole}{frac}{}",
        "0".repeat(pad_left),
        "0".repeat(pad_right)
    );
    let mut groups: Vec<u16> = digits
        .as_bytes()
        .chunks(4)
        .map(|c| {
            std::str::from_utf8(c)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    let mut weight = ((pad_left + whole.len()) / 4) as i32 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let n = u16::try_from(groups.len()).map_err(|_| "too many digits".to_string())?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(
        &(if negative && !groups.is_empty() {
            0x4000u16
        } else {
            0
        })
        .to_be_bytes(),
    );
    out.extend_from_slice(&(frac.len() as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(())
}

/// A [`Cell`] as a PostgreSQL parameter, encoded for the type the server inferred.
#[derive(Debug)]
struct PgParam<'a>(&'a Cell);

impl ToSql for PgParam<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let mismatch = || -> Box<dyn std::error::Error + Sync + Send> {
            format!("a {:?} cannot be written to a column of type {ty}", self.0).into()
        };
        let int =
            |i: i64, out: &mut BytesMut| -> Result<(), Box<dyn std::error::Error + Sync + Send>> {
                match *ty {
                    Type::INT2 => out.extend_from_slice(&i16::try_from(i)?.to_be_bytes()),
                    Type::INT4 => out.extend_from_slice(&i32::try_from(i)?.to_be_bytes()),
                    Type::INT8 => out.extend_from_slice(&i.to_be_bytes()),
                    Type::OID => out.extend_from_slice(&u32::try_from(i)?.to_be_bytes()),
                    Type::FLOAT4 => out.extend_from_slice(&(i as f32).to_be_bytes()),
                    Type::FLOAT8 => out.extend_from_slice(&(i as f64).to_be_bytes()),
                    Type::NUMERIC => pg_numeric_bytes(&i.to_string(), out)?,
                    Type::BOOL => out.extend_from_slice(&[u8::from(i != 0)]),
                    _ if is_text_type(ty) => out.extend_from_slice(i.to_string().as_bytes()),
                    _ => return Err(mismatch()),
                }
                Ok(())
            };
        match self.0 {
            Cell::Null => return Ok(IsNull::Yes),
            Cell::Bool(b) => match *ty {
                Type::BOOL => out.extend_from_slice(&[u8::from(*b)]),
                _ => int(i64::from(*b), out)?,
            },
            Cell::Int(i) => int(*i, out)?,
            Cell::UInt(u) => match *ty {
                Type::NUMERIC => pg_numeric_bytes(&u.to_string(), out)?,
                _ if is_text_type(ty) => out.extend_from_slice(u.to_string().as_bytes()),
                _ => int(i64::try_from(*u)?, out)?,
            },
            Cell::Float32(f) => match *ty {
                Type::FLOAT4 => out.extend_from_slice(&f.to_be_bytes()),
                Type::FLOAT8 => out.extend_from_slice(&f64::from(*f).to_be_bytes()),
                Type::NUMERIC => pg_numeric_bytes(&f.to_string(), out)?,
                _ if is_text_type(ty) => out.extend_from_slice(f.to_string().as_bytes()),
                _ => return Err(mismatch()),
            },
            Cell::Float64(f) => match *ty {
                Type::FLOAT4 => out.extend_from_slice(&(*f as f32).to_be_bytes()),
                Type::FLOAT8 => out.extend_from_slice(&f.to_be_bytes()),
                Type::NUMERIC => pg_numeric_bytes(&f.to_string(), out)?,
                _ if is_text_type(ty) => out.extend_from_slice(f.to_string().as_bytes()),
                _ => return Err(mismatch()),
            },
            Cell::Decimal(text) => match *ty {
                Type::NUMERIC => pg_numeric_bytes(text, out)?,
                Type::FLOAT4 => out.extend_from_slice(&text.parse::<f32>()?.to_be_bytes()),
                Type::FLOAT8 => out.extend_from_slice(&text.parse::<f64>()?.to_be_bytes()),
                _ if is_text_type(ty) => out.extend_from_slice(text.as_bytes()),
                _ => int(text.parse()?, out)?,
            },
            Cell::Text(s) => match *ty {
                Type::JSON | Type::XML => out.extend_from_slice(s.as_bytes()),
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(s.as_bytes());
                }
                Type::UUID => {
                    let hex: String = s.chars().filter(|c| *c != '-').collect();
                    if hex.len() != 32 {
                        return Err(format!("{s:?} is not a UUID").into());
                    }
                    for i in 0..16 {
                        out.extend_from_slice(&[u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?]);
                    }
                }
                Type::NUMERIC => pg_numeric_bytes(s, out)?,
                Type::BYTEA => out.extend_from_slice(s.as_bytes()),
                _ if is_text_type(ty) => out.extend_from_slice(s.as_bytes()),
                _ => return Err(mismatch()),
            },
            Cell::Bytes(b) => match *ty {
                Type::BYTEA => out.extend_from_slice(b),
                _ => return Err(mismatch()),
            },
            Cell::Date(days) => match *ty {
                Type::DATE => out.extend_from_slice(&(days - PG_EPOCH_DAYS).to_be_bytes()),
                Type::TIMESTAMP | Type::TIMESTAMPTZ => out.extend_from_slice(
                    &(i64::from(*days) * MICROS_PER_DAY - PG_EPOCH_MICROS).to_be_bytes(),
                ),
                _ => return Err(mismatch()),
            },
            Cell::Time(us) => match *ty {
                Type::TIME => out.extend_from_slice(&us.to_be_bytes()),
                Type::TIMETZ => {
                    out.extend_from_slice(&us.to_be_bytes());
                    out.extend_from_slice(&0i32.to_be_bytes());
                }
                _ => return Err(mismatch()),
            },
            Cell::Timestamp(us) => match *ty {
                Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                    out.extend_from_slice(&(us - PG_EPOCH_MICROS).to_be_bytes())
                }
                Type::DATE => out.extend_from_slice(
                    &(i32::try_from(us.div_euclid(MICROS_PER_DAY))? - PG_EPOCH_DAYS).to_be_bytes(),
                ),
                _ => return Err(mismatch()),
            },
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Confluent's MySQL mapping, from the result set's column definition.
fn my_column(c: &mysql_async::Column, mapping: NumericMapping) -> Column {
    let unsigned = c.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    let binary = c.character_set() == 63;
    let kind = match c.column_type() {
        ColumnType::MYSQL_TYPE_TINY if unsigned => Some(Kind::Int16),
        ColumnType::MYSQL_TYPE_TINY => Some(Kind::Int8),
        ColumnType::MYSQL_TYPE_SHORT if unsigned => Some(Kind::Int32),
        ColumnType::MYSQL_TYPE_SHORT | ColumnType::MYSQL_TYPE_YEAR => Some(Kind::Int16),
        ColumnType::MYSQL_TYPE_INT24 | ColumnType::MYSQL_TYPE_LONG if unsigned => Some(Kind::Int64),
        ColumnType::MYSQL_TYPE_INT24 | ColumnType::MYSQL_TYPE_LONG => Some(Kind::Int32),
        ColumnType::MYSQL_TYPE_LONGLONG if unsigned => Some(Kind::Decimal {
            scale: 0,
            precision: Some(20),
        }),
        ColumnType::MYSQL_TYPE_LONGLONG => Some(Kind::Int64),
        ColumnType::MYSQL_TYPE_FLOAT => Some(Kind::Float32),
        ColumnType::MYSQL_TYPE_DOUBLE => Some(Kind::Float64),
        ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => {
            let scale = i32::from(c.decimals());
            // The display length counts a sign and a point.
            let precision = c
                .column_length()
                .saturating_sub(u32::from(scale > 0) + u32::from(!unsigned));
            Some(Kind::numeric(mapping, Some(precision), Some(scale)))
        }
        ColumnType::MYSQL_TYPE_BIT if c.column_length() == 1 => Some(Kind::Int8),
        ColumnType::MYSQL_TYPE_BIT => Some(Kind::Bytes),
        ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => Some(Kind::Date),
        ColumnType::MYSQL_TYPE_TIME | ColumnType::MYSQL_TYPE_TIME2 => Some(Kind::Time),
        ColumnType::MYSQL_TYPE_DATETIME
        | ColumnType::MYSQL_TYPE_DATETIME2
        | ColumnType::MYSQL_TYPE_TIMESTAMP
        | ColumnType::MYSQL_TYPE_TIMESTAMP2 => Some(Kind::Timestamp),
        ColumnType::MYSQL_TYPE_JSON | ColumnType::MYSQL_TYPE_ENUM | ColumnType::MYSQL_TYPE_SET => {
            Some(Kind::String)
        }
        ColumnType::MYSQL_TYPE_VARCHAR
        | ColumnType::MYSQL_TYPE_VAR_STRING
        | ColumnType::MYSQL_TYPE_STRING
        | ColumnType::MYSQL_TYPE_TINY_BLOB
        | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
        | ColumnType::MYSQL_TYPE_LONG_BLOB
        | ColumnType::MYSQL_TYPE_BLOB => Some(if binary { Kind::Bytes } else { Kind::String }),
        _ => None,
    };
    Column {
        name: c.name_str().into_owned(),
        kind,
        optional: !c.flags().contains(ColumnFlags::NOT_NULL_FLAG),
        type_name: format!("{:?}", c.column_type())
            .trim_start_matches("MYSQL_TYPE_")
            .to_string(),
    }
}

fn my_cell(value: mysql_async::Value, column: &Column) -> Result<Cell, String> {
    use mysql_async::Value as V;
    Ok(match (value, &column.kind) {
        (_, None) | (V::NULL, _) => Cell::Null,
        (V::Int(i), _) => Cell::Int(i),
        (V::UInt(u), _) => i64::try_from(u).map_or(Cell::UInt(u), Cell::Int),
        (V::Float(f), _) => Cell::Float32(f),
        (V::Double(d), _) => Cell::Float64(d),
        (V::Bytes(b), Some(Kind::Int8)) if column.type_name == "BIT" => {
            Cell::Int(b.iter().fold(0i64, |acc, &x| (acc << 8) | i64::from(x)))
        }
        (V::Bytes(b), Some(Kind::Bytes)) => Cell::Bytes(b),
        (V::Bytes(b), Some(Kind::String)) => {
            Cell::Text(String::from_utf8(b).map_err(|_| "text is not valid UTF-8")?)
        }
        (V::Bytes(b), Some(_)) => {
            // DECIMAL (and anything else sent as text).
            Cell::Decimal(String::from_utf8(b).map_err(|_| "a number is not valid text")?)
        }
        (V::Date(y, m, d, h, mi, s, us), Some(kind)) => {
            if y == 0 && m == 0 && d == 0 {
                // MySQL's zero date has no value in Connect (Connector/J's
                // zeroDateTimeBehavior=convertToNull).
                return Ok(Cell::Null);
            }
            let days = days_from_civil(i32::from(y), u32::from(m), u32::from(d))
                .ok_or_else(|| format!("invalid date {y}-{m}-{d}"))?;
            if *kind == Kind::Date {
                Cell::Date(days)
            } else {
                Cell::Timestamp(
                    i64::from(days) * MICROS_PER_DAY
                        + (i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s)) * 1_000_000
                        + i64::from(us),
                )
            }
        }
        (V::Time(negative, days, h, m, s, us), _) => {
            let micros =
                ((i64::from(days) * 24 + i64::from(h)) * 3600 + i64::from(m) * 60 + i64::from(s))
                    * 1_000_000
                    + i64::from(us);
            Cell::Time(if negative { -micros } else { micros })
        }
    })
}

fn my_param(cell: &Cell) -> mysql_async::Value {
    use mysql_async::Value as V;
    match cell {
        Cell::Null => V::NULL,
        Cell::Bool(b) => V::Int(i64::from(*b)),
        Cell::Int(i) => V::Int(*i),
        Cell::UInt(u) => V::UInt(*u),
        Cell::Float32(f) => V::Float(*f),
        Cell::Float64(f) => V::Double(*f),
        Cell::Decimal(s) | Cell::Text(s) => V::Bytes(s.clone().into_bytes()),
        Cell::Bytes(b) => V::Bytes(b.clone()),
        Cell::Date(days) => {
            let date = civil_from_micros(i64::from(*days) * MICROS_PER_DAY);
            match date {
                Some(t) => {
                    use chrono::Datelike;
                    V::Date(t.year() as u16, t.month() as u8, t.day() as u8, 0, 0, 0, 0)
                }
                None => V::NULL,
            }
        }
        Cell::Time(us) => {
            let negative = *us < 0;
            let us = us.unsigned_abs();
            let secs = us / 1_000_000;
            V::Time(
                negative,
                (secs / 86_400) as u32,
                ((secs / 3600) % 24) as u8,
                ((secs / 60) % 60) as u8,
                (secs % 60) as u8,
                (us % 1_000_000) as u32,
            )
        }
        Cell::Timestamp(us) => match civil_from_micros(*us) {
            Some(t) => {
                use chrono::{Datelike, Timelike};
                V::Date(
                    t.year() as u16,
                    t.month() as u8,
                    t.day() as u8,
                    t.hour() as u8,
                    t.minute() as u8,
                    t.second() as u8,
                    t.nanosecond() / 1000,
                )
            }
            None => V::NULL,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
