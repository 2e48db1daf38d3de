//! Writing: Connect data as the JSON Kafka's JsonConverter writes, schemas and values,
//! logical types, maps as objects or entry arrays.

use base64::Engine as _;
use sluice_proto::connector::v1::{value, MapValue, Schema, SchemaType, Value};

use crate::error::ConversionError;

use super::decimal::{self, BigDecimal};
use super::{
    java_float, kafka_type_name, kind_name, logical, type_name, write_str, DecimalFormat,
    JsonOptions, Logical, MILLIS_PER_DAY,
};
use crate::logical::is_null;

/// Writes the JSON form of a schema, as Kafka's `JsonConverter.asJsonSchema`: type, then
/// items/keys+values/fields, optional, name, version, doc, parameters, default, and for a
/// struct field its name last.
pub(crate) fn write_schema_with(
    out: &mut Vec<u8>,
    schema: Option<&Schema>,
    options: JsonOptions,
) -> Result<(), ConversionError> {
    let Some(schema) = schema else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    write_schema_fields(out, schema, None, options)
}

fn write_schema_fields(
    out: &mut Vec<u8>,
    schema: &Schema,
    field_name: Option<&str>,
    options: JsonOptions,
) -> Result<(), ConversionError> {
    out.extend_from_slice(b"{\"type\":");
    write_str(out, type_name(schema.r#type));
    match SchemaType::try_from(schema.r#type).unwrap_or(SchemaType::Unspecified) {
        SchemaType::Array => {
            out.extend_from_slice(b",\"items\":");
            write_schema_with(out, schema.value_schema.as_deref(), options)?;
        }
        SchemaType::Map => {
            out.extend_from_slice(b",\"keys\":");
            write_schema_with(out, schema.key_schema.as_deref(), options)?;
            out.extend_from_slice(b",\"values\":");
            write_schema_with(out, schema.value_schema.as_deref(), options)?;
        }
        SchemaType::Struct => {
            out.extend_from_slice(b",\"fields\":[");
            for (i, field) in schema.fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let field_schema = field.schema.as_ref().ok_or_else(|| {
                    ConversionError::new(format!("struct field {} has no schema", field.name))
                })?;
                write_schema_fields(out, field_schema, Some(&field.name), options)?;
            }
            out.push(b']');
        }
        SchemaType::Unspecified => {
            return Err(ConversionError::new("schema has no type"));
        }
        _ => {}
    }
    out.extend_from_slice(b",\"optional\":");
    out.extend_from_slice(if schema.optional { b"true" } else { b"false" });
    if let Some(name) = &schema.name {
        out.extend_from_slice(b",\"name\":");
        write_str(out, name);
    }
    if let Some(version) = schema.version {
        out.extend_from_slice(format!(",\"version\":{version}").as_bytes());
    }
    if let Some(doc) = &schema.doc {
        out.extend_from_slice(b",\"doc\":");
        write_str(out, doc);
    }
    if !schema.parameters.is_empty() {
        // Kafka keeps the order the parameters were added in; the protocol's map has none,
        // so they are sorted by name to keep the bytes stable, except that a Decimal's
        // `scale` comes first: `Decimal.builder(scale)` adds it before anything else
        // (Confluent's and Debezium's `connect.decimal.precision` follow it).
        out.extend_from_slice(b",\"parameters\":{");
        let mut params: Vec<_> = schema.parameters.iter().collect();
        let decimal = schema.name.as_deref() == Some(crate::logical::DECIMAL);
        params.sort_by_key(|(k, _)| (!(decimal && k.as_str() == "scale"), k.as_str()));
        for (i, (k, v)) in params.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, k);
            out.push(b':');
            write_str(out, v);
        }
        out.push(b'}');
    }
    if let Some(default) = schema.default_value.as_ref().filter(|d| !is_null(d)) {
        out.extend_from_slice(b",\"default\":");
        write_value_with(out, Some(schema), Some(default), options)?;
    }
    if let Some(name) = field_name {
        out.extend_from_slice(b",\"field\":");
        write_str(out, name);
    }
    out.push(b'}');
    Ok(())
}

/// Writes a value with default options.
pub(crate) fn write_value(
    out: &mut Vec<u8>,
    schema: Option<&Schema>,
    value: Option<&Value>,
) -> Result<(), ConversionError> {
    write_value_with(out, schema, value, JsonOptions::default())
}

fn invalid_type(schema: &Schema, kind: Option<&value::Kind>) -> ConversionError {
    ConversionError::new(format!(
        "invalid type for {}: {}",
        kafka_type_name(schema.r#type),
        kind_name(kind)
    ))
}

fn ranged(schema: &Schema, i: i64, min: i64, max: i64) -> Result<(), ConversionError> {
    if (min..=max).contains(&i) {
        Ok(())
    } else {
        Err(ConversionError::new(format!(
            "invalid value for {}: {i} is out of range",
            kafka_type_name(schema.r#type)
        )))
    }
}

/// Writes a value as Kafka's `JsonConverter.convertToJson` does.
pub(crate) fn write_value_with(
    out: &mut Vec<u8>,
    schema: Option<&Schema>,
    value: Option<&Value>,
    options: JsonOptions,
) -> Result<(), ConversionError> {
    let kind = value.and_then(|v| v.kind.as_ref());
    let kind = match kind {
        None | Some(value::Kind::Null(_)) => {
            let Some(schema) = schema else {
                out.extend_from_slice(b"null");
                return Ok(());
            };
            if options.replace_null_with_default {
                if let Some(default) = schema.default_value.as_ref().filter(|d| !is_null(d)) {
                    return write_value_with(out, Some(schema), Some(default), options);
                }
            }
            if !schema.optional {
                return Err(ConversionError::new(
                    "conversion error: null value for field that is required and has no default value",
                ));
            }
            out.extend_from_slice(b"null");
            return Ok(());
        }
        Some(kind) => kind,
    };
    if let Some(schema) = schema {
        if let Some(logical) = logical(schema) {
            return write_logical(out, schema, logical, kind, options);
        }
        let expected = SchemaType::try_from(schema.r#type).unwrap_or(SchemaType::Unspecified);
        let range = match expected {
            SchemaType::Int8 => Some((i8::MIN.into(), i8::MAX.into())),
            SchemaType::Int16 => Some((i16::MIN.into(), i16::MAX.into())),
            SchemaType::Int32 => Some((i32::MIN.into(), i32::MAX.into())),
            SchemaType::Unspecified => return Err(ConversionError::new("schema has no type")),
            _ => None,
        };
        if let (Some((min, max)), value::Kind::Int(i)) = (range, kind) {
            ranged(schema, *i, min, max)?;
        }
        let ok = matches!(
            (expected, kind),
            (
                SchemaType::Int8 | SchemaType::Int16 | SchemaType::Int32 | SchemaType::Int64,
                value::Kind::Int(_)
            ) | (SchemaType::Float32, value::Kind::Float32(_))
                | (SchemaType::Float64, value::Kind::Float64(_))
                | (SchemaType::Boolean, value::Kind::Boolean(_))
                | (SchemaType::String, value::Kind::String(_))
                | (SchemaType::Bytes, value::Kind::Bytes(_))
                | (SchemaType::Array, value::Kind::Array(_))
                | (SchemaType::Map, value::Kind::Map(_))
                | (SchemaType::Struct, value::Kind::Struct(_))
        );
        if !ok {
            return Err(invalid_type(schema, Some(kind)));
        }
    }
    match kind {
        value::Kind::Null(_) => out.extend_from_slice(b"null"),
        value::Kind::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        value::Kind::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        value::Kind::Float32(f) => out.extend_from_slice(java_f32(*f).as_bytes()),
        value::Kind::Float64(f) => out.extend_from_slice(java_f64(*f).as_bytes()),
        value::Kind::String(s) => write_str(out, s),
        value::Kind::Bytes(b) => write_base64(out, b),
        value::Kind::Array(a) => {
            let items = schema.and_then(|s| s.value_schema.as_deref());
            out.push(b'[');
            for (i, item) in a.items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value_with(out, items, Some(item), options)?;
            }
            out.push(b']');
        }
        value::Kind::Map(m) => write_map(out, schema, m, options)?,
        value::Kind::Struct(s) => {
            out.push(b'{');
            match schema {
                Some(schema) => {
                    if schema.fields.len() != s.fields.len() {
                        return Err(ConversionError::new(format!(
                            "struct has {} values for {} schema fields",
                            s.fields.len(),
                            schema.fields.len()
                        )));
                    }
                    for (i, (field, v)) in schema.fields.iter().zip(&s.fields).enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_str(out, &field.name);
                        out.push(b':');
                        let field_schema = field.schema.as_ref().ok_or_else(|| {
                            ConversionError::new(format!(
                                "struct field {} has no schema",
                                field.name
                            ))
                        })?;
                        write_value_with(out, Some(field_schema), Some(v), options)?;
                    }
                }
                None => {
                    // Kafka has no schemaless structs; the protocol's carry their field names.
                    for (i, v) in s.fields.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        let name = s.names.get(i).ok_or_else(|| {
                            ConversionError::new("schemaless struct field has no name")
                        })?;
                        write_str(out, name);
                        out.push(b':');
                        write_value_with(out, None, Some(v), options)?;
                    }
                }
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .as_bytes(),
    );
    out.push(b'"');
}

/// A map as a JSON object when its keys are strings (by schema, or all of them without one),
/// else as an array of `[key, value]` pairs.
fn write_map(
    out: &mut Vec<u8>,
    schema: Option<&Schema>,
    m: &MapValue,
    options: JsonOptions,
) -> Result<(), ConversionError> {
    let key_schema = schema.and_then(|s| s.key_schema.as_deref());
    let value_schema = schema.and_then(|s| s.value_schema.as_deref());
    let object_mode = match schema {
        Some(_) => key_schema.is_some_and(|k| k.r#type == SchemaType::String as i32),
        None => m.entries.iter().all(|e| {
            matches!(
                e.key.as_ref().and_then(|k| k.kind.as_ref()),
                Some(value::Kind::String(_))
            )
        }),
    };
    if object_mode {
        out.push(b'{');
        for (i, entry) in m.entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match entry.key.as_ref().and_then(|k| k.kind.as_ref()) {
                Some(value::Kind::String(k)) => write_str(out, k),
                other => {
                    return Err(ConversionError::new(format!(
                        "invalid type for map key: expected string, got {}",
                        kind_name(other)
                    )))
                }
            }
            out.push(b':');
            write_value_with(out, value_schema, entry.value.as_ref(), options)?;
        }
        out.push(b'}');
    } else {
        out.push(b'[');
        for (i, entry) in m.entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            write_value_with(out, key_schema, entry.key.as_ref(), options)?;
            out.push(b',');
            write_value_with(out, value_schema, entry.value.as_ref(), options)?;
            out.push(b']');
        }
        out.push(b']');
    }
    Ok(())
}

fn write_logical(
    out: &mut Vec<u8>,
    schema: &Schema,
    logical: Logical,
    kind: &value::Kind,
    options: JsonOptions,
) -> Result<(), ConversionError> {
    match (logical, kind) {
        (Logical::Decimal, value::Kind::Bytes(bytes)) => {
            let scale = decimal::schema_scale(&schema.parameters)?;
            let decimal = BigDecimal::from_unscaled(bytes, scale)?;
            match options.decimal_format {
                DecimalFormat::Base64 => write_base64(out, bytes),
                DecimalFormat::Numeric => {
                    out.extend_from_slice(decimal.to_java_string().as_bytes())
                }
            }
        }
        (Logical::Date, value::Kind::Int(days)) => {
            let days = i32::try_from(*days).map_err(|_| {
                ConversionError::new(format!(
                    "invalid value for date: {days} days is out of range"
                ))
            })?;
            out.extend_from_slice(days.to_string().as_bytes());
        }
        (Logical::Time, value::Kind::Int(ms)) => {
            if !(0..MILLIS_PER_DAY).contains(ms) {
                return Err(ConversionError::new(format!(
                    "invalid value for time: {ms} is not a millisecond of the day (0 to 86399999)"
                )));
            }
            out.extend_from_slice(ms.to_string().as_bytes());
        }
        (Logical::Timestamp, value::Kind::Int(ms)) => {
            out.extend_from_slice(ms.to_string().as_bytes())
        }
        (logical, kind) => {
            let expected = match logical {
                Logical::Decimal => "bytes (the unscaled value)",
                Logical::Date => "int (days since the epoch)",
                Logical::Time => "int (milliseconds of the day)",
                Logical::Timestamp => "int (milliseconds since the epoch)",
            };
            return Err(ConversionError::new(format!(
                "invalid type for {}: expected {expected}, got {}",
                schema.name.as_deref().unwrap_or_default(),
                kind_name(Some(kind))
            )));
        }
    }
    Ok(())
}

fn java_f32(f: f32) -> String {
    java_float(f64::from(f), f.to_string(), format!("{f:E}"))
}

fn java_f64(f: f64) -> String {
    java_float(f, f.to_string(), format!("{f:E}"))
}

/// The text of a value for StringConverter and logs (Java `toString` style for scalars).
pub(crate) fn display(v: &Value) -> String {
    match &v.kind {
        None | Some(value::Kind::Null(_)) => "null".into(),
        Some(value::Kind::String(s)) => s.clone(),
        Some(value::Kind::Boolean(b)) => b.to_string(),
        Some(value::Kind::Int(i)) => i.to_string(),
        Some(value::Kind::Float32(f)) => java_f32(*f),
        Some(value::Kind::Float64(f)) => java_f64(*f),
        Some(_) => {
            let mut out = Vec::new();
            match write_value(&mut out, None, Some(v)) {
                Ok(()) => String::from_utf8_lossy(&out).into_owned(),
                Err(e) => format!("<{e}>"),
            }
        }
    }
}
