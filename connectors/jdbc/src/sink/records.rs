//! Records as row operations: which table, insert or delete, the key columns by `pk.mode`
//! and the value columns, with their cells.

use sluice_connector_sdk::proto::{
    data as proto_data, value, Schema, SchemaType, SinkRecord, Value,
};

use super::{coordinates, JdbcSinkTask, PkMode, DELETE_ENABLED, PK_FIELDS};
use crate::db::TableId;
use crate::value::{cell_of, Cell};

/// What a record asks of the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Action {
    Write,
    Delete,
}

/// One record as a row operation.
pub(super) struct Op {
    pub(super) table: TableId,
    pub(super) action: Action,
    /// Key columns, then value columns, each with the field's schema.
    pub(super) keys: Vec<(String, Schema)>,
    pub(super) values: Vec<(String, Schema)>,
    pub(super) cells: Vec<Cell>,
    pub(super) record: SinkRecord,
}

impl Op {
    /// Same table, action and columns: the same statement and table checks.
    pub(super) fn same_shape(&self, other: &Op) -> bool {
        let names = |columns: &[(String, Schema)], others: &[(String, Schema)]| {
            columns.len() == others.len()
                && columns.iter().zip(others).all(|((a, _), (b, _))| a == b)
        };
        self.table == other.table
            && self.action == other.action
            && names(&self.keys, &other.keys)
            && names(&self.values, &other.values)
    }
}

impl JdbcSinkTask {
    /// The row operation of a record, `None` to skip it, or why it cannot be written.
    pub(super) fn op(&self, record: &SinkRecord) -> Result<Option<Op>, String> {
        let table = self.table_id(&self.table_format.replace("${topic}", &record.topic));
        let pk = self.pk.unwrap_or(PkMode::None);
        let value = structured(record.value.as_ref());
        let key = structured(record.key.as_ref());
        let value = match value {
            Structured::Null => {
                if self.delete_enabled {
                    let (keys, cells) = self.key_columns(pk, record, key, None)?;
                    return Ok(Some(Op {
                        table,
                        action: Action::Delete,
                        keys,
                        values: Vec::new(),
                        cells,
                        record: coordinates(record),
                    }));
                }
                return Err(format!(
                    "a null value (tombstone) with {DELETE_ENABLED}=false: nothing to write"
                ));
            }
            Structured::Struct(schema, fields) => (schema, fields),
            Structured::Primitive(..) => {
                return Err(
                    "the JDBC sink needs records whose value is a struct, found a primitive value"
                        .into(),
                )
            }
            Structured::Other(what) => {
                return Err(format!(
                    "the JDBC sink needs records whose value is a struct with a schema, found {what} (use a converter with schemas, e.g. JsonConverter with schemas.enable=true)"
                ))
            }
        };
        let (keys, mut cells) = self.key_columns(pk, record, key, Some(value))?;
        let mut values = Vec::new();
        let (schema, fields) = value;
        for (i, field) in schema.fields.iter().enumerate() {
            // Key columns come from the key (Confluent's FieldsMetadata): a value field of the
            // same name is not written twice.
            if keys.iter().any(|(k, _)| *k == field.name) {
                continue;
            }
            if !self.whitelist.is_empty() && !self.whitelist.contains(&field.name) {
                continue;
            }
            let field_schema = field.schema.as_deref().cloned().unwrap_or_default();
            let cell = cell_of(&field_schema, fields.get(i))
                .map_err(|e| format!("field {:?}: {e}", field.name))?;
            values.push((field.name.clone(), field_schema));
            cells.push(cell);
        }
        Ok(Some(Op {
            table,
            action: Action::Write,
            keys,
            values,
            cells,
            record: coordinates(record),
        }))
    }

    /// The key columns and their values for `pk.mode`.
    #[allow(clippy::type_complexity)]
    fn key_columns(
        &self,
        pk: PkMode,
        record: &SinkRecord,
        key: Structured,
        value: Option<(&Schema, &[Value])>,
    ) -> Result<(Vec<(String, Schema)>, Vec<Cell>), String> {
        let primitive = |t: SchemaType| Schema {
            r#type: t as i32,
            ..Schema::default()
        };
        match pk {
            PkMode::None => Ok((Vec::new(), Vec::new())),
            PkMode::Kafka => {
                let names = &self.pk_fields;
                Ok((
                    vec![
                        (names[0].clone(), primitive(SchemaType::String)),
                        (names[1].clone(), primitive(SchemaType::Int32)),
                        (names[2].clone(), primitive(SchemaType::Int64)),
                    ],
                    vec![
                        Cell::Text(record.topic.clone()),
                        Cell::Int(i64::from(record.partition)),
                        Cell::Int(record.offset),
                    ],
                ))
            }
            PkMode::RecordKey => match key {
                Structured::Struct(schema, fields) => {
                    let (columns, cells) = self.pk_columns(schema, fields, "key field")?;
                    if columns.is_empty() {
                        return Err(format!(
                            "the key has none of the fields {:?}",
                            self.pk_fields
                        ));
                    }
                    Ok((columns, cells))
                }
                Structured::Primitive(schema, v) => {
                    let [name] = self.pk_fields.as_slice() else {
                        return Err(format!(
                            "need exactly one PK column in {PK_FIELDS} since the key schema is a primitive type, defined columns are: {:?}",
                            self.pk_fields
                        ));
                    };
                    let cell = cell_of(schema, Some(v)).map_err(|e| format!("key: {e}"))?;
                    Ok((vec![(name.clone(), schema.clone())], vec![cell]))
                }
                Structured::Null => Err("pk.mode=record_key but the record has a null key".into()),
                Structured::Other(what) => Err(format!(
                    "pk.mode=record_key needs a key with a schema, found {what}"
                )),
            },
            PkMode::RecordValue => {
                let Some((schema, fields)) = value else {
                    return Err("pk.mode=record_value but the value is null".into());
                };
                let (columns, cells) = self.pk_columns(schema, fields, "field")?;
                if let Some(missing) = self
                    .pk_fields
                    .iter()
                    .find(|f| !columns.iter().any(|(c, _)| c == *f))
                {
                    return Err(format!(
                        "the value has no field {missing:?} named in {PK_FIELDS}"
                    ));
                }
                Ok((columns, cells))
            }
        }
    }

    /// The struct's fields named in `pk.fields` (all when empty) as key columns; a null key
    /// value names the field (`what`).
    #[allow(clippy::type_complexity)]
    fn pk_columns(
        &self,
        schema: &Schema,
        fields: &[Value],
        what: &str,
    ) -> Result<(Vec<(String, Schema)>, Vec<Cell>), String> {
        let mut columns = Vec::new();
        let mut cells = Vec::new();
        for (i, field) in schema.fields.iter().enumerate() {
            if !self.pk_fields.is_empty() && !self.pk_fields.contains(&field.name) {
                continue;
            }
            let s = field.schema.as_deref().cloned().unwrap_or_default();
            let cell =
                cell_of(&s, fields.get(i)).map_err(|e| format!("{what} {:?}: {e}", field.name))?;
            if cell == Cell::Null {
                return Err(format!(
                    "{what} {:?} is part of the key and null",
                    field.name
                ));
            }
            columns.push((field.name.clone(), s));
            cells.push(cell);
        }
        Ok((columns, cells))
    }
}

/// A record's key or value as the sink sees it.
enum Structured<'a> {
    Null,
    Struct(&'a Schema, &'a [Value]),
    Primitive(&'a Schema, &'a Value),
    /// Anything without a schema, described.
    Other(&'static str),
}

fn structured(data: Option<&sluice_connector_sdk::proto::Data>) -> Structured<'_> {
    let Some(kind) = data.and_then(|d| d.kind.as_ref()) else {
        return Structured::Null;
    };
    match kind {
        proto_data::Kind::Raw(_) => Structured::Other("raw bytes"),
        proto_data::Kind::Structured(s) => {
            let value = s.value.as_ref();
            let is_null = value
                .and_then(|v| v.kind.as_ref())
                .is_none_or(|k| matches!(k, value::Kind::Null(_)));
            match (&s.schema, value) {
                _ if is_null => Structured::Null,
                (None, _) => Structured::Other("a value without a schema"),
                (Some(schema), Some(v)) => match v.kind.as_ref() {
                    Some(value::Kind::Struct(fields)) => Structured::Struct(schema, &fields.fields),
                    Some(value::Kind::Map(_)) | Some(value::Kind::Array(_)) => {
                        Structured::Other("a map or an array")
                    }
                    _ => Structured::Primitive(schema, v),
                },
                (Some(_), None) => Structured::Null,
            }
        }
    }
}
