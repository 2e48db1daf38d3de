//! Captured tables and their events: a table's columns and Debezium schemas, where an event
//! came from (`Origin`), and `Events`, which names and shapes every change in Debezium's
//! envelope.

use std::sync::Arc;

use sluice_connector_sdk::proto::{Data, Schema, SchemaType, Value};
use sluice_connector_sdk::{SourceRecord, TaskError};
use sluice_debezium::{envelope_schema, row_schema, structured, Change, SourceInfo};

use crate::pgoutput::Datum;
use crate::types::{field, int, null, plain, string, structure, PgType};

/// A captured column.
#[derive(Clone, Debug)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) ty: PgType,
    pub(crate) optional: bool,
}

/// A captured table with its Debezium schemas, built once per relation.
pub(crate) struct Table {
    pub(crate) schema: String,
    pub(crate) name: String,
    pub(crate) columns: Vec<Column>,
    /// Primary key columns, in key order.
    pub(crate) key: Vec<usize>,
    pub(crate) topic: String,
    pub(crate) key_schema: Option<Schema>,
    pub(crate) envelope: Schema,
}

impl Table {
    pub(crate) fn new(
        prefix: &str,
        schema: &str,
        name: &str,
        columns: Vec<Column>,
        key: Vec<usize>,
    ) -> Table {
        let base = format!("{prefix}.{schema}.{name}");
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
                    .map(|&i| field(&columns[i].name, columns[i].ty.schema(false)))
                    .collect(),
                false,
            )
        });
        let envelope = envelope_schema(&base, row, source_schema());
        Table {
            schema: schema.to_string(),
            name: name.to_string(),
            columns,
            key,
            topic: base,
            key_schema,
            envelope,
        }
    }

    /// The row's values from a tuple; `old` fills TOASTed values the tuple did not carry.
    pub(crate) fn values(
        &self,
        datums: &[Datum],
        old: Option<&[Value]>,
    ) -> Result<Vec<Value>, TaskError> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| match datums.get(i) {
                Some(Datum::Text(bytes)) => {
                    let text = std::str::from_utf8(bytes)
                        .map_err(|_| self.error(c, "a value that is not UTF-8 text".to_string()))?;
                    c.ty.value(text).map_err(|e| self.error(c, e))
                }
                Some(Datum::UnchangedToast) => Ok(old
                    .and_then(|o| o.get(i).cloned())
                    .unwrap_or_else(|| c.ty.unavailable(c.optional))),
                Some(Datum::Binary(_)) => {
                    Err(self.error(c, "a binary value where text was asked for".into()))
                }
                // Absent from a key-only old row: null, or the type's zero when NOT NULL.
                Some(Datum::Null) | None if c.optional => Ok(null()),
                Some(Datum::Null) | None => Ok(c.ty.zero()),
            })
            .collect()
    }

    /// A row of the snapshot, in text.
    pub(crate) fn snapshot_values(
        &self,
        row: &tokio_postgres::SimpleQueryRow,
    ) -> Result<Vec<Value>, TaskError> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| match row.get(i) {
                Some(text) => c.ty.value(text).map_err(|e| self.error(c, e)),
                None if c.optional => Ok(null()),
                None => Ok(c.ty.zero()),
            })
            .collect()
    }

    pub(crate) fn error(&self, column: &Column, message: String) -> TaskError {
        TaskError::fatal(format!(
            "{}.{} column {:?}: {message}",
            self.schema, self.name, column.name
        ))
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
}

pub(crate) fn source_schema() -> Schema {
    sluice_debezium::source_schema(
        "io.debezium.connector.postgresql.Source",
        vec![
            field("schema", plain(SchemaType::String, false)),
            field("table", plain(SchemaType::String, false)),
            field("txId", plain(SchemaType::Int64, true)),
            field("lsn", plain(SchemaType::Int64, true)),
            field("xmin", plain(SchemaType::Int64, true)),
        ],
    )
}

/// Where an event came from, for `source`.
pub(crate) struct Origin<'a> {
    /// Commit (or snapshot) time, epoch microseconds.
    pub(crate) ts_us: i64,
    pub(crate) snapshot: &'a str,
    pub(crate) sequence: Option<String>,
    pub(crate) tx_id: Option<i64>,
    pub(crate) lsn: Option<i64>,
}

/// What names every event: the logical server (`topic.prefix`), the database, and the
/// source partition.
#[derive(Default)]
pub(crate) struct Events {
    pub(crate) prefix: String,
    pub(crate) dbname: String,
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
        origin: &Origin,
        offset: String,
    ) -> SourceRecord {
        let key = match (&after, &before) {
            (Some(values), _) | (None, Some(values)) => table.key(values),
            (None, None) => Data::default(),
        };
        let info = SourceInfo {
            connector: "postgresql",
            server: &self.prefix,
            ts_us: origin.ts_us,
            snapshot: origin.snapshot,
            db: &self.dbname,
            sequence: origin.sequence.as_deref(),
        };
        let source = info.value(vec![
            string(&table.schema),
            string(&table.name),
            origin.tx_id.map_or_else(null, int),
            origin.lsn.map_or_else(null, int),
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
    use super::{source_schema, Column, Table};
    use crate::server::key_order;
    use crate::types::PgType;

    #[test]
    fn envelope_fields_are_in_debeziums_order() {
        let table = Table::new(
            "srv",
            "public",
            "t",
            vec![
                Column {
                    name: "id".into(),
                    ty: PgType::Int32,
                    optional: false,
                },
                Column {
                    name: "v".into(),
                    ty: PgType::String,
                    optional: true,
                },
            ],
            vec![0],
        );
        let names: Vec<&str> = table
            .envelope
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "before",
                "after",
                "source",
                "transaction",
                "op",
                "ts_ms",
                "ts_us",
                "ts_ns"
            ]
        );
        assert_eq!(
            table.envelope.name.as_deref(),
            Some("srv.public.t.Envelope")
        );
        assert_eq!(table.topic, "srv.public.t");
        let source = source_schema();
        let names: Vec<&str> = source.fields.iter().map(|f| f.name.as_str()).collect();
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
                "schema",
                "table",
                "txId",
                "lsn",
                "xmin"
            ]
        );
        assert_eq!(key_order(&[None, Some(2), Some(1)]), vec![2, 1]);
    }
}
