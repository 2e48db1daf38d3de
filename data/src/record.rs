//! The record as transforms and predicates see it, and small helpers over the protocol's data
//! model (schemas, values, structs and maps) that the transforms share.
//!
//! A key or value is either raw bytes (written to Kafka as they are) or a structured value
//! with an optional schema. Schemaless objects are maps with string keys, as in Kafka Connect;
//! schema'd objects are structs whose fields follow their schema's order.

use sluice_proto::connector::v1::{
    data, value, ArrayValue, Data, Field, Header, MapEntry, MapValue, Schema, SchemaType,
    StructValue, Structured, Value,
};

pub use crate::logical::{is_null, DATE, DECIMAL, TIME, TIMESTAMP};

/// One record between a connector and Kafka. Sink records carry their Kafka coordinates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub topic: String,
    pub kafka_partition: Option<i32>,
    /// The Kafka offset of a sink record; `None` for a source record.
    pub offset: Option<i64>,
    pub key: Option<Data>,
    pub value: Option<Data>,
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<Header>,
}

/// A schema'd struct in a record: its STRUCT schema and its field values, one per field.
pub struct StructMut<'r> {
    pub schema: &'r mut Schema,
    pub values: &'r mut Vec<Value>,
}

/// Which half of a record a `$Key`/`$Value` transform works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Key,
    Value,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Key => "key",
            Side::Value => "value",
        }
    }
}

/// A key or value taken out of a record: its schema (absent for schemaless data) and its
/// value (absent for null).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Part {
    pub schema: Option<Schema>,
    pub value: Option<Value>,
}

impl Part {
    /// Takes a key or value apart; raw bytes become a schemaless bytes value.
    pub fn from_data(data: Option<Data>) -> Part {
        match data.and_then(|d| d.kind) {
            None => Part::default(),
            Some(data::Kind::Raw(bytes)) => Part {
                schema: None,
                value: Some(bytes_value(bytes)),
            },
            Some(data::Kind::Structured(s)) => Part {
                schema: s.schema,
                value: s.value.filter(|v| !is_null(v)),
            },
        }
    }

    pub fn into_data(self) -> Option<Data> {
        if self.schema.is_none() && self.value.is_none() {
            return None;
        }
        Some(Data {
            kind: Some(data::Kind::Structured(Structured {
                schema: self.schema,
                value: self.value,
            })),
        })
    }
}

impl Record {
    pub fn take(&mut self, side: Side) -> Part {
        Part::from_data(match side {
            Side::Key => self.key.take(),
            Side::Value => self.value.take(),
        })
    }

    pub fn put(&mut self, side: Side, part: Part) {
        let data = part.into_data();
        match side {
            Side::Key => self.key = data,
            Side::Value => self.value = data,
        }
    }

    pub fn get(&self, side: Side) -> Option<&Data> {
        match side {
            Side::Key => self.key.as_ref(),
            Side::Value => self.value.as_ref(),
        }
    }

    /// A schema'd struct key or value borrowed where it is, for transforms that change a
    /// struct's fields without taking the record apart (and moving its schema twice).
    /// `None` for anything else: raw bytes, schemaless data, a null or non-struct value.
    pub fn struct_mut(&mut self, side: Side) -> Option<StructMut<'_>> {
        let data = match side {
            Side::Key => self.key.as_mut(),
            Side::Value => self.value.as_mut(),
        }?;
        let Some(data::Kind::Structured(Structured {
            schema: Some(schema),
            value:
                Some(Value {
                    kind: Some(value::Kind::Struct(values)),
                }),
        })) = data.kind.as_mut()
        else {
            return None;
        };
        if type_of(schema) != SchemaType::Struct {
            return None;
        }
        // A schema'd struct's values are positional; names belong to schemaless ones.
        values.names.clear();
        Some(StructMut {
            schema,
            values: &mut values.fields,
        })
    }

    /// Whether the value is null: a tombstone.
    pub fn is_tombstone(&self) -> bool {
        match self.value.as_ref().and_then(|d| d.kind.as_ref()) {
            None => true,
            Some(data::Kind::Raw(_)) => false,
            Some(data::Kind::Structured(s)) => s.value.as_ref().is_none_or(is_null),
        }
    }
}

pub fn null() -> Value {
    Value {
        kind: Some(value::Kind::Null(true)),
    }
}

pub fn string_value(s: impl Into<String>) -> Value {
    Value {
        kind: Some(value::Kind::String(s.into())),
    }
}

pub fn int_value(i: i64) -> Value {
    Value {
        kind: Some(value::Kind::Int(i)),
    }
}

pub fn bytes_value(b: Vec<u8>) -> Value {
    Value {
        kind: Some(value::Kind::Bytes(b)),
    }
}

pub fn schema_of(kind: SchemaType, optional: bool) -> Schema {
    Schema {
        r#type: kind as i32,
        optional,
        ..Schema::default()
    }
}

/// A schema's type; an unknown number reads as unspecified.
pub fn type_of(schema: &Schema) -> SchemaType {
    SchemaType::try_from(schema.r#type).unwrap_or(SchemaType::Unspecified)
}

/// The schema type's name as Kafka prints it (`INT32`, `STRUCT`, ...).
pub fn type_label(schema: &Schema) -> &'static str {
    crate::json::kafka_type_name(schema.r#type)
}

/// A value's kind for error messages.
pub fn kind_label(v: &Value) -> &'static str {
    crate::json::kind_name(v.kind.as_ref())
}

/// The fields of a struct schema, or an error naming what was found instead.
pub fn struct_fields<'s>(schema: &'s Schema, purpose: &str) -> Result<&'s [Field], String> {
    if type_of(schema) != SchemaType::Struct {
        return Err(format!(
            "only Struct objects supported for [{purpose}], found: {}",
            type_label(schema)
        ));
    }
    Ok(&schema.fields)
}

pub fn field_index(schema: &Schema, name: &str) -> Option<usize> {
    schema.fields.iter().position(|f| f.name == name)
}

/// A schema'd struct value's fields, positional; a null struct has none.
pub fn struct_values(value: Option<Value>, purpose: &str) -> Result<Vec<Value>, String> {
    match value.and_then(|v| v.kind) {
        None | Some(value::Kind::Null(_)) => Ok(Vec::new()),
        Some(value::Kind::Struct(s)) => Ok(s.fields),
        Some(other) => Err(format!(
            "only Struct objects supported for [{purpose}], found: {}",
            kind_label(&Value { kind: Some(other) })
        )),
    }
}

/// Null field values replaced by their field's default, as Kafka's `Struct.get` reads them
/// (`replace.null.with.default=true`, the default of the transforms that have that key).
pub fn fill_defaults(schema: &Schema, values: &mut [Value]) {
    for (v, field) in values.iter_mut().zip(&schema.fields) {
        if is_null(v) {
            if let Some(d) = field.schema.as_ref().and_then(|s| s.default_value.as_ref()) {
                *v = d.clone();
            }
        }
    }
}

pub fn struct_value(fields: Vec<Value>) -> Value {
    Value {
        kind: Some(value::Kind::Struct(StructValue {
            fields,
            names: Vec::new(),
        })),
    }
}

/// A schemaless object: a map with string keys. Schemaless structs (names given) read as maps.
pub fn map_entries(value: Value, purpose: &str) -> Result<Vec<(String, Value)>, String> {
    match value.kind {
        Some(value::Kind::Map(m)) => m
            .entries
            .into_iter()
            .map(|e| {
                let key = match e.key.and_then(|k| k.kind) {
                    Some(value::Kind::String(s)) => s,
                    Some(other) => crate::json_text(&Value { kind: Some(other) }),
                    None => "null".to_string(),
                };
                Ok((key, e.value.unwrap_or_else(null)))
            })
            .collect(),
        Some(value::Kind::Struct(s)) if s.names.len() == s.fields.len() => {
            Ok(s.names.into_iter().zip(s.fields).collect())
        }
        other => Err(format!(
            "only Map objects supported in absence of schema for [{purpose}], found: {}",
            kind_label(&Value { kind: other })
        )),
    }
}

pub fn map_value(entries: Vec<(String, Value)>) -> Value {
    Value {
        kind: Some(value::Kind::Map(MapValue {
            entries: entries
                .into_iter()
                .map(|(k, v)| MapEntry {
                    key: Some(string_value(k)),
                    value: Some(v),
                })
                .collect(),
        })),
    }
}

pub fn array_value(items: Vec<Value>) -> Value {
    Value {
        kind: Some(value::Kind::Array(ArrayValue { items })),
    }
}

/// The Kafka Connect logical type of a schema, if any (its name on its physical type).
pub fn logical(schema: &Schema) -> Option<&'static str> {
    use crate::json::Logical;
    crate::json::logical(schema).map(|l| match l {
        Logical::Decimal => DECIMAL,
        Logical::Date => DATE,
        Logical::Time => TIME,
        Logical::Timestamp => TIMESTAMP,
    })
}

/// The optional Timestamp logical schema, as InsertField and TimestampConverter use it.
pub fn timestamp_schema(optional: bool) -> Schema {
    Schema {
        name: Some(TIMESTAMP.into()),
        version: Some(1),
        ..schema_of(SchemaType::Int64, optional)
    }
}

pub fn date_schema(optional: bool) -> Schema {
    Schema {
        name: Some(DATE.into()),
        version: Some(1),
        ..schema_of(SchemaType::Int32, optional)
    }
}

pub fn time_schema(optional: bool) -> Schema {
    Schema {
        name: Some(TIME.into()),
        version: Some(1),
        ..schema_of(SchemaType::Int32, optional)
    }
}

/// A copy of a schema with its optional flag set.
pub fn with_optional(schema: &Schema, optional: bool) -> Schema {
    Schema {
        optional,
        ..schema.clone()
    }
}

/// Checks a value against a schema's type, as Kafka's `ConnectSchema.validateValue` does for
/// the cases transforms produce (a null in a required field, a wrong primitive kind).
pub fn validate(schema: &Schema, value: Option<&Value>, field: &str) -> Result<(), String> {
    let Some(v) = value.filter(|v| !is_null(v)) else {
        if schema.optional || schema.default_value.is_some() {
            return Ok(());
        }
        return Err(format!(
            "conversion error: null value for field \"{field}\" that is required and has no default value"
        ));
    };
    let ok = matches!(
        (type_of(schema), &v.kind),
        (
            SchemaType::Int8 | SchemaType::Int16 | SchemaType::Int32 | SchemaType::Int64,
            Some(value::Kind::Int(_)),
        ) | (
            SchemaType::Float32 | SchemaType::Float64,
            Some(value::Kind::Float32(_) | value::Kind::Float64(_)),
        ) | (SchemaType::Boolean, Some(value::Kind::Boolean(_)))
            | (SchemaType::String, Some(value::Kind::String(_)))
            | (SchemaType::Bytes, Some(value::Kind::Bytes(_)))
            | (SchemaType::Array, Some(value::Kind::Array(_)))
            | (SchemaType::Map, Some(value::Kind::Map(_)))
            | (SchemaType::Struct, Some(value::Kind::Struct(_)))
    );
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {} value for field \"{field}\" of schema type {}",
            kind_label(v),
            type_label(schema)
        ))
    }
}

/// A Decimal's value as Java's `BigDecimal.toString` writes it, from the unscaled
/// two's-complement big-endian bytes and the schema's `scale` parameter.
pub fn decimal_text(unscaled: &[u8], schema: &Schema) -> Result<String, String> {
    use crate::json::decimal::{schema_scale, BigDecimal};
    schema_scale(&schema.parameters)
        .and_then(|scale| BigDecimal::from_unscaled(unscaled, scale))
        .map(|d| d.to_java_string())
        .map_err(|e| e.message)
}
