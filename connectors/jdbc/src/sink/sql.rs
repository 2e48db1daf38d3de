//! The SQL of a sink: tables created and evolved from record schemas (`auto.create`,
//! `auto.evolve`), each row operation's statement in the table's own spelling of its columns,
//! and the offsets table's upsert.

use sluice_connector_sdk::proto::{Schema, SchemaType};
use sluice_connector_sdk::TaskError;

use super::records::{Action, Op};
use super::{InsertMode, JdbcSinkTask, AUTO_CREATE, AUTO_EVOLVE};
use crate::db::{self, TableId};
use crate::url::Dialect;
use crate::value::{Cell, DATE, DECIMAL, TIME, TIMESTAMP};

impl JdbcSinkTask {
    /// [`Self::prepare_table`] once per run of ops of one shape.
    pub(super) async fn prepare_tables(&mut self, ops: &[Op]) -> Result<(), TaskError> {
        let mut previous: Option<&Op> = None;
        for op in ops {
            if !previous.is_some_and(|p| p.same_shape(op)) {
                self.prepare_table(op).await?;
            }
            previous = Some(op);
        }
        Ok(())
    }

    /// Makes sure the op's table exists with its columns (auto.create, auto.evolve).
    async fn prepare_table(&mut self, op: &Op) -> Result<(), TaskError> {
        let table = op.table.clone();
        if !self.tables.contains_key(&table) {
            let auto_create = self.auto_create;
            let db = self.connection().await?;
            let columns = match db.table_columns(&table).await? {
                Some(c) => c,
                None if auto_create => {
                    let sql = create_table(db.dialect(), db.table(&table), op)?;
                    tracing::info!("creating table {}: {sql}", table.qualified());
                    db.execute(&sql).await?;
                    db.table_columns(&table).await?.ok_or_else(|| {
                        TaskError::fatal(format!(
                            "table {} was created but is not there",
                            table.qualified()
                        ))
                    })?
                }
                None => {
                    return Err(TaskError::fatal(format!(
                        "table {} is missing and {AUTO_CREATE} is disabled",
                        table.qualified()
                    )))
                }
            };
            self.tables.insert(
                table.clone(),
                columns
                    .into_iter()
                    .map(|c| (c.name.to_lowercase(), c.name))
                    .collect(),
            );
        }
        let known = &self.tables[&table];
        let missing: Vec<&(String, Schema)> = op
            .keys
            .iter()
            .chain(&op.values)
            .filter(|(name, _)| !known.contains_key(&name.to_lowercase()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
        if !self.auto_evolve {
            return Err(TaskError::fatal(format!(
                "table {} is missing fields {names:?} and {AUTO_EVOLVE} is disabled",
                table.qualified()
            )));
        }
        let db = self.connection().await?;
        let dialect = db.dialect();
        for (name, schema) in missing.iter().copied() {
            if !schema.optional {
                return Err(TaskError::fatal(format!(
                    "cannot add field {name:?} to table {}: it is not optional and has no default value",
                    table.qualified()
                )));
            }
            let sql = format!(
                "ALTER TABLE {} ADD {} {} NULL",
                db.table(&table),
                db.quote(name),
                sql_type(dialect, schema, false)?
            );
            tracing::info!("evolving table {}: {sql}", table.qualified());
            db.execute(&sql).await?;
        }
        self.tables.remove(&table);
        Box::pin(self.prepare_table(op)).await
    }

    /// The statement for an op, with the table's own spelling of each column.
    pub(super) fn statement(&self, dialect: Dialect, op: &Op) -> Result<String, TaskError> {
        let known = self.tables.get(&op.table);
        let column = |name: &str| {
            let actual = known
                .and_then(|k| k.get(&name.to_lowercase()))
                .map_or(name, String::as_str);
            db::quote(dialect, actual)
        };
        let table = format!(
            "{}.{}",
            db::quote(dialect, &op.table.schema),
            db::quote(dialect, &op.table.name)
        );
        let mut n = 0;
        let mut next = || {
            n += 1;
            match dialect {
                Dialect::Postgres => format!("${n}"),
                Dialect::MySql => "?".to_string(),
            }
        };
        let keys: Vec<String> = op.keys.iter().map(|(k, _)| column(k)).collect();
        let values: Vec<String> = op.values.iter().map(|(v, _)| column(v)).collect();
        if op.action == Action::Delete {
            let conditions: Vec<String> =
                keys.iter().map(|k| format!("{k} = {}", next())).collect();
            return Ok(format!(
                "DELETE FROM {table} WHERE {}",
                conditions.join(" AND ")
            ));
        }
        let all: Vec<&String> = keys.iter().chain(&values).collect();
        let columns = all.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",");
        match self.insert.unwrap_or(InsertMode::Insert) {
            InsertMode::Insert => {
                let params: Vec<String> = all.iter().map(|_| next()).collect();
                Ok(format!(
                    "INSERT INTO {table} ({columns}) VALUES ({})",
                    params.join(",")
                ))
            }
            InsertMode::Upsert => {
                let params: Vec<String> = all.iter().map(|_| next()).collect();
                let insert = format!(
                    "INSERT INTO {table} ({columns}) VALUES ({})",
                    params.join(",")
                );
                Ok(match dialect {
                    Dialect::Postgres if values.is_empty() => {
                        format!("{insert} ON CONFLICT ({}) DO NOTHING", keys.join(","))
                    }
                    Dialect::Postgres => format!(
                        "{insert} ON CONFLICT ({}) DO UPDATE SET {}",
                        keys.join(","),
                        values
                            .iter()
                            .map(|v| format!("{v}=EXCLUDED.{v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                    Dialect::MySql => format!(
                        "{insert} ON DUPLICATE KEY UPDATE {}",
                        if values.is_empty() { &keys } else { &values }
                            .iter()
                            .map(|v| format!("{v}=VALUES({v})"))
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                })
            }
            InsertMode::Update => {
                // Bound values first, then keys (see `bound`).
                if values.is_empty() {
                    return Err(TaskError::fatal(format!(
                        "insert.mode=update needs value fields besides the key in {}",
                        op.table.qualified()
                    )));
                }
                let sets: Vec<String> =
                    values.iter().map(|v| format!("{v} = {}", next())).collect();
                let conditions: Vec<String> =
                    keys.iter().map(|k| format!("{k} = {}", next())).collect();
                Ok(format!(
                    "UPDATE {table} SET {} WHERE {}",
                    sets.join(", "),
                    conditions.join(" AND ")
                ))
            }
        }
    }

    /// The op's cells in the order its statement binds them.
    pub(super) fn bound(&self, op: &Op) -> Vec<Cell> {
        let mut cells = op.cells.clone();
        if op.action == Action::Write && self.insert == Some(InsertMode::Update) {
            cells.rotate_left(op.keys.len());
        }
        cells
    }
}

pub(super) fn upsert_offset(dialect: Dialect, table: &TableId) -> String {
    let q = |c: &str| db::quote(dialect, c);
    let name = format!("{}.{}", q(&table.schema), q(&table.name));
    match dialect {
        Dialect::Postgres => format!(
            "INSERT INTO {name} (\"connector\",\"topic\",\"partition\",\"next_offset\") VALUES ($1,$2,$3,$4) \
             ON CONFLICT (\"connector\",\"topic\",\"partition\") DO UPDATE SET \"next_offset\"=EXCLUDED.\"next_offset\""
        ),
        Dialect::MySql => format!(
            "INSERT INTO {name} (`connector`,`topic`,`partition`,`next_offset`) VALUES (?,?,?,?) \
             ON DUPLICATE KEY UPDATE `next_offset`=VALUES(`next_offset`)"
        ),
    }
}

/// A column type for a field schema (Confluent's dialect mappings).
fn sql_type(dialect: Dialect, schema: &Schema, key: bool) -> Result<String, TaskError> {
    let kind = SchemaType::try_from(schema.r#type).unwrap_or(SchemaType::Unspecified);
    let name = schema.name.as_deref().unwrap_or("");
    let pg = dialect == Dialect::Postgres;
    let t = match (name, kind) {
        (DECIMAL, _) => {
            let scale = schema.parameters.get("scale").map_or("0", String::as_str);
            if pg {
                "DECIMAL".to_string()
            } else {
                // MySQL's largest scale is 30 (MariaDB's 38).
                let scale: u32 = scale.parse().unwrap_or(0);
                format!("DECIMAL(65,{})", scale.min(30))
            }
        }
        (DATE, _) => "DATE".into(),
        (TIME, _) => if pg { "TIME" } else { "TIME(3)" }.into(),
        (TIMESTAMP, _) => if pg { "TIMESTAMP" } else { "DATETIME(3)" }.into(),
        (_, SchemaType::Int8) => if pg { "SMALLINT" } else { "TINYINT" }.into(),
        (_, SchemaType::Int16) => "SMALLINT".into(),
        (_, SchemaType::Int32) => "INT".into(),
        (_, SchemaType::Int64) => "BIGINT".into(),
        (_, SchemaType::Float32) => if pg { "REAL" } else { "FLOAT" }.into(),
        (_, SchemaType::Float64) => if pg { "DOUBLE PRECISION" } else { "DOUBLE" }.into(),
        (_, SchemaType::Boolean) => if pg { "BOOLEAN" } else { "TINYINT" }.into(),
        (_, SchemaType::String) => if pg {
            "TEXT"
        } else if key {
            "VARCHAR(256)"
        } else {
            "TEXT"
        }
        .into(),
        (_, SchemaType::Bytes) => if pg {
            "BYTEA"
        } else if key {
            "VARBINARY(1024)"
        } else {
            "BLOB"
        }
        .into(),
        (_, other) => {
            return Err(TaskError::fatal(format!(
                "a {} field has no column type",
                other.as_str_name()
            )))
        }
    };
    Ok(t)
}

fn create_table(dialect: Dialect, table: String, op: &Op) -> Result<String, TaskError> {
    let mut columns = Vec::new();
    for (name, schema) in &op.keys {
        columns.push(format!(
            "{} {} NOT NULL",
            db::quote(dialect, name),
            sql_type(dialect, schema, true)?
        ));
    }
    for (name, schema) in &op.values {
        columns.push(format!(
            "{} {}{}",
            db::quote(dialect, name),
            sql_type(dialect, schema, false)?,
            if schema.optional {
                " NULL"
            } else {
                " NOT NULL"
            }
        ));
    }
    if !op.keys.is_empty() {
        columns.push(format!(
            "PRIMARY KEY({})",
            op.keys
                .iter()
                .map(|(k, _)| db::quote(dialect, k))
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    Ok(format!("CREATE TABLE {table} ({})", columns.join(", ")))
}
