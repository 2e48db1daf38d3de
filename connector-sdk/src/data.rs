//! Constructors for the protocol's keys, values and headers.

use crate::proto::{data, value, Data, Header, Schema, SchemaType, Structured, Value};

/// A null key or a tombstone value.
pub fn null() -> Data {
    Data { kind: None }
}

/// Bytes already in their Kafka wire form: the worker writes them unchanged.
pub fn raw(bytes: impl Into<Vec<u8>>) -> Data {
    Data {
        kind: Some(data::Kind::Raw(bytes.into())),
    }
}

/// A string with Kafka Connect's non-optional STRING schema (what FileStreamSource emits).
pub fn string(s: impl Into<String>) -> Data {
    structured(
        schema(SchemaType::String, false),
        value::Kind::String(s.into()),
    )
}

/// Bytes with Kafka Connect's non-optional BYTES schema; the converter serializes them.
pub fn bytes(b: impl Into<Vec<u8>>) -> Data {
    structured(
        schema(SchemaType::Bytes, false),
        value::Kind::Bytes(b.into()),
    )
}

/// A 64-bit integer with a non-optional INT64 schema.
pub fn int64(v: i64) -> Data {
    structured(schema(SchemaType::Int64, false), value::Kind::Int(v))
}

/// A 32-bit integer with a non-optional INT32 schema.
pub fn int32(v: i32) -> Data {
    structured(
        schema(SchemaType::Int32, false),
        value::Kind::Int(i64::from(v)),
    )
}

/// A record header.
pub fn header(key: impl Into<String>, value: Data) -> Header {
    Header {
        key: key.into(),
        value: Some(value),
    }
}

/// `template` with `token` replaced by `name` as a Kafka topic name: every character of
/// `name` but ASCII letters, digits, `.`, `_` and `-` becomes `_`. A template without the
/// token is the topic itself.
pub fn topic_from_template(template: &str, token: &str, name: &str) -> String {
    if !template.contains(token) {
        return template.to_string();
    }
    let name: String = name
        .chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' => c,
            _ => '_',
        })
        .collect();
    template.replace(token, &name)
}

/// A 64-bit float with a non-optional FLOAT64 schema.
pub fn float64(v: f64) -> Data {
    structured(schema(SchemaType::Float64, false), value::Kind::Float64(v))
}

/// A boolean with a non-optional BOOLEAN schema.
pub fn boolean(v: bool) -> Data {
    structured(schema(SchemaType::Boolean, false), value::Kind::Boolean(v))
}

pub fn schema(kind: SchemaType, optional: bool) -> Schema {
    Schema {
        r#type: kind as i32,
        optional,
        ..Schema::default()
    }
}

fn structured(schema: Schema, kind: value::Kind) -> Data {
    Data {
        kind: Some(data::Kind::Structured(Structured {
            schema: Some(schema),
            value: Some(Value { kind: Some(kind) }),
        })),
    }
}

/// The text form of a record's key or value, as a sink writing lines would print it.
/// Structured values render like Kafka Connect's `toString`; raw bytes are taken as UTF-8.
pub fn to_text(data: &Data) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    match &data.kind {
        None => None,
        Some(data::Kind::Raw(b)) => Some(String::from_utf8_lossy(b)),
        Some(data::Kind::Structured(s)) => match s.value.as_ref().and_then(|v| v.kind.as_ref()) {
            None | Some(value::Kind::Null(_)) => None,
            Some(value::Kind::String(s)) => Some(Cow::Borrowed(s)),
            Some(value::Kind::Bytes(b)) => Some(String::from_utf8_lossy(b)),
            Some(other) => Some(Cow::Owned(render(other))),
        },
    }
}

/// A primitive value's bytes: text and bytes as they are, numbers and booleans as Kafka
/// Connect prints them; `None` for null, structs, maps and arrays.
pub fn primitive_bytes(kind: &value::Kind) -> Option<std::borrow::Cow<'_, [u8]>> {
    use std::borrow::Cow;
    Some(match kind {
        value::Kind::String(s) => Cow::Borrowed(s.as_bytes()),
        value::Kind::Bytes(b) => Cow::Borrowed(b),
        value::Kind::Boolean(b) => Cow::Owned(b.to_string().into_bytes()),
        value::Kind::Int(i) => Cow::Owned(i.to_string().into_bytes()),
        value::Kind::Float32(f) => Cow::Owned(f.to_string().into_bytes()),
        value::Kind::Float64(f) => Cow::Owned(f.to_string().into_bytes()),
        _ => return None,
    })
}

fn render(kind: &value::Kind) -> String {
    fn one(v: &Value) -> String {
        v.kind.as_ref().map_or_else(|| "null".to_string(), render)
    }
    match kind {
        value::Kind::Null(_) => "null".into(),
        value::Kind::Boolean(b) => b.to_string(),
        value::Kind::Int(i) => i.to_string(),
        value::Kind::Float32(f) => f.to_string(),
        value::Kind::Float64(f) => f.to_string(),
        value::Kind::String(s) => s.clone(),
        value::Kind::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        value::Kind::Array(a) => {
            let items: Vec<_> = a.items.iter().map(one).collect();
            format!("[{}]", items.join(", "))
        }
        value::Kind::Map(m) => {
            let entries: Vec<_> = m
                .entries
                .iter()
                .map(|e| {
                    let k = e.key.as_ref().map_or_else(|| "null".into(), one);
                    let v = e.value.as_ref().map_or_else(|| "null".into(), one);
                    format!("{k}={v}")
                })
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
        value::Kind::Struct(s) => {
            let fields: Vec<_> = s
                .fields
                .iter()
                .enumerate()
                .map(|(i, v)| match s.names.get(i) {
                    Some(name) => format!("{name}={}", one(v)),
                    None => one(v),
                })
                .collect();
            format!("Struct{{{}}}", fields.join(","))
        }
    }
}
