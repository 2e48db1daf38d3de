//! The tables MySqlCdcSource captures: their columns and Debezium schemas from
//! `information_schema`, and the change events built from their rows.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as My};
use sluice_connector_sdk::proto::{Data, Schema, SchemaType, Value};
use sluice_connector_sdk::{SourceRecord, TaskError};
use sluice_debezium::{
    envelope_schema, field, int, null, plain, row_schema, string, structure, structured, Change,
    SourceInfo,
};

use crate::server::my_error;
use crate::types::{ColumnInfo, MyType, Origin};

/// A captured column.
#[derive(Clone, Debug)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) ty: MyType,
    pub(crate) optional: bool,
    /// Its place in the table's rows (columns the connector leaves out have one too).
    pub(crate) index: usize,
}

/// A captured table with its Debezium schemas, built from `information_schema`.
pub(crate) struct Table {
    pub(crate) db: String,
    pub(crate) name: String,
    /// Every column of the table, the captured ones among them.
    pub(crate) width: usize,
    pub(crate) columns: Vec<Column>,
    /// Primary key columns (places in `columns`), in key order.
    pub(crate) key: Vec<usize>,
    pub(crate) topic: String,
    pub(crate) key_schema: Option<Schema>,
    pub(crate) envelope: Schema,
}

impl Table {
    /// The table's definition now; `None` when it does not exist.
    pub(crate) async fn load(
        conn: &mut Conn,
        prefix: &str,
        db: &str,
        name: &str,
    ) -> Result<Option<Table>, TaskError> {
        type ColumnRow = (
            String,
            String,
            String,
            String,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<String>,
        );
        let rows: Vec<ColumnRow> = conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, \
                   NUMERIC_SCALE, DATETIME_PRECISION, CHARACTER_SET_NAME \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
                (db, name),
            )
            .await
            .map_err(|e| my_error(&format!("read the columns of {db}.{name}"), e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let key_names: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
                 ORDER BY ORDINAL_POSITION",
                (db, name),
            )
            .await
            .map_err(|e| my_error(&format!("read the primary key of {db}.{name}"), e))?;
        let width = rows.len();
        let mut columns = Vec::new();
        for (index, row) in rows.into_iter().enumerate() {
            let (column, data_type, column_type, nullable, precision, scale, dt, charset) = row;
            let info = ColumnInfo {
                data_type: &data_type,
                column_type: &column_type,
                precision,
                scale,
                datetime_precision: dt,
                charset: charset.as_deref(),
            };
            match MyType::of(&info) {
                Some(ty) => columns.push(Column {
                    name: column,
                    ty,
                    optional: nullable.eq_ignore_ascii_case("YES"),
                    index,
                }),
                None => tracing::warn!(
                    "{db}.{name} column {column:?} of type {column_type} is left out of the events: the type is not supported"
                ),
            }
        }
        let key = key_names
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        Ok(Some(Table::new(prefix, db, name, width, columns, key)))
    }

    pub(crate) fn new(
        prefix: &str,
        db: &str,
        name: &str,
        width: usize,
        columns: Vec<Column>,
        key: Vec<usize>,
    ) -> Table {
        let base = format!("{prefix}.{db}.{name}");
        let row = row_schema(
            &base,
            "Value",
            columns
                .iter()
                .map(|c| field(&c.name, c.ty.schema(c.optional)))
                .collect(),
            true,
        );
        let key_schema = (!key.is_empty()).then(|| {
            row_schema(
                &base,
                "Key",
                key.iter()
                    .map(|&i: &usize| field(&columns[i].name, columns[i].ty.schema(false)))
                    .collect(),
                false,
            )
        });
        Table {
            db: db.to_string(),
            name: name.to_string(),
            width,
            columns,
            key,
            topic: base.clone(),
            key_schema,
            envelope: envelope_schema(&base, row, source_schema()),
        }
    }

    /// The event values of a row of the table's width.
    pub(crate) fn values(&self, mut row: Vec<My>, origin: Origin) -> Result<Vec<Value>, TaskError> {
        if row.len() != self.width {
            return Err(TaskError::fatal(format!(
                "{}.{}: a row of {} columns where the table has {}: its definition changed after the row was written (a DDL while the connector was stopped?)",
                self.db,
                self.name,
                row.len(),
                self.width
            )));
        }
        self.columns
            .iter()
            .map(|c| {
                let value = std::mem::replace(&mut row[c.index], My::NULL);
                c.ty.value(value, origin, c.optional).map_err(|e| {
                    TaskError::fatal(format!(
                        "{}.{} column {:?}: {e}",
                        self.db, self.name, c.name
                    ))
                })
            })
            .collect()
    }

    pub(crate) fn key(&self, values: &[Value]) -> Data {
        match &self.key_schema {
            Some(schema) => structured(
                schema.clone(),
                structure(self.key.iter().map(|&i| values[i].clone()).collect()),
            ),
            None => Data::default(),
        }
    }

    pub(crate) fn key_changed(&self, before: &[Value], after: &[Value]) -> bool {
        self.key.iter().any(|&i| before[i] != after[i])
    }
}

pub(crate) fn source_schema() -> Schema {
    sluice_debezium::source_schema(
        "io.debezium.connector.mysql.Source",
        vec![
            field("table", plain(SchemaType::String, true)),
            field("server_id", plain(SchemaType::Int64, false)),
            field("gtid", plain(SchemaType::String, true)),
            field("file", plain(SchemaType::String, false)),
            field("pos", plain(SchemaType::Int64, false)),
            field("row", plain(SchemaType::Int32, false)),
            field("thread", plain(SchemaType::Int64, true)),
            field("query", plain(SchemaType::String, true)),
        ],
    )
}

/// Where an event came from, for `source`.
pub(crate) struct Place<'a> {
    /// Commit (or snapshot) time, epoch microseconds.
    pub(crate) ts_us: i64,
    pub(crate) snapshot: &'a str,
    pub(crate) server_id: u32,
    pub(crate) gtid: Option<&'a str>,
    pub(crate) file: &'a str,
    pub(crate) pos: u64,
    pub(crate) row: usize,
    pub(crate) thread: Option<u32>,
}

/// What names every event: the logical server (`topic.prefix`) and the source partition.
#[derive(Default)]
pub(crate) struct Events {
    pub(crate) prefix: String,
    pub(crate) partition: Arc<str>,
}

impl Events {
    /// A change event in Debezium's envelope.
    pub(crate) fn record(
        &self,
        table: &Table,
        op: &str,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
        origin: &Place,
        offset: String,
    ) -> SourceRecord {
        let key = match (&after, &before) {
            (Some(values), _) | (None, Some(values)) => table.key(values),
            (None, None) => Data::default(),
        };
        let info = SourceInfo {
            connector: "mysql",
            server: &self.prefix,
            ts_us: origin.ts_us,
            snapshot: origin.snapshot,
            db: &table.db,
            sequence: None,
        };
        let source = info.value(vec![
            string(&table.name),
            int(i64::from(origin.server_id)),
            origin.gtid.map_or_else(null, string),
            string(origin.file),
            int(origin.pos as i64),
            int(origin.row as i64),
            origin.thread.map_or_else(null, |t| int(i64::from(t))),
            null(),
        ]);
        Change {
            topic: table.topic.clone(),
            key,
            envelope: table.envelope.clone(),
            before,
            after,
            source,
            op,
        }
        .record(self.partition.clone(), offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_block_is_in_debeziums_order() {
        let names: Vec<String> = source_schema().fields.into_iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "version",
                "connector",
                "name",
                "ts_ms",
                "snapshot",
                "db",
                "sequence",
                "ts_us",
                "ts_ns",
                "table",
                "server_id",
                "gtid",
                "file",
                "pos",
                "row",
                "thread",
                "query"
            ]
        );
    }
}
