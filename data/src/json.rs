//! JSON in the exact form Kafka's JsonConverter (Jackson) writes it: compact, fields in Kafka's
//! order, Jackson's string escapes, base64 bytes, Java's number formatting; and the reverse
//! mapping from the `{"schema":…,"payload":…}` envelope.

use base64::Engine as _;
use sluice_proto::connector::v1::{
    value, ArrayValue, Field, MapEntry, MapValue, Schema, SchemaType, StructValue, Structured,
    Value,
};

use crate::converter::{base64_decode, schemaless, ConversionError};

pub(crate) fn type_name(kind: i32) -> &'static str {
    match SchemaType::try_from(kind).unwrap_or(SchemaType::Unspecified) {
        SchemaType::Int8 => "int8",
        SchemaType::Int16 => "int16",
        SchemaType::Int32 => "int32",
        SchemaType::Int64 => "int64",
        SchemaType::Float32 => "float",
        SchemaType::Float64 => "double",
        SchemaType::Boolean => "boolean",
        SchemaType::String => "string",
        SchemaType::Bytes => "bytes",
        SchemaType::Array => "array",
        SchemaType::Map => "map",
        SchemaType::Struct => "struct",
        SchemaType::Unspecified => "unspecified",
    }
}

fn type_from_name(name: &str) -> Option<SchemaType> {
    Some(match name {
        "int8" => SchemaType::Int8,
        "int16" => SchemaType::Int16,
        "int32" => SchemaType::Int32,
        "int64" => SchemaType::Int64,
        "float" => SchemaType::Float32,
        "double" => SchemaType::Float64,
        "boolean" => SchemaType::Boolean,
        "string" => SchemaType::String,
        "bytes" => SchemaType::Bytes,
        "array" => SchemaType::Array,
        "map" => SchemaType::Map,
        "struct" => SchemaType::Struct,
        _ => return None,
    })
}

/// Writes a string literal with Jackson's escapes (short forms for \b \t \n \f \r, upper-case
/// `\u00XX` for other control characters, nothing else escaped).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0A => b'n',
            0x0C => b'f',
            0x0D => b'r',
            0x00..=0x1F => 0,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short == 0 {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xF) as usize]);
        } else {
            out.push(b'\\');
            out.push(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Java's `Double.toString`/`Float.toString` shape: `1.0`, `0.5`, `1.0E7`, `1.5E-5`.
fn java_float(v: f64, shortest: String, scientific: String) -> String {
    if v.is_nan() {
        return "\"NaN\"".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        }
        .into();
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-3..1e7).contains(&abs) {
        let (mantissa, exp) = scientific.split_once('E').unwrap_or((&scientific, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.to_string()
        } else {
            format!("{mantissa}.0")
        };
        return format!("{mantissa}E{exp}");
    }
    if shortest.contains('.') {
        shortest
    } else {
        format!("{shortest}.0")
    }
}

/// Writes the JSON form of a schema, as Kafka's `JsonConverter.asJsonSchema`.
pub(crate) fn write_schema(
    out: &mut Vec<u8>,
    schema: Option<&Schema>,
) -> Result<(), ConversionError> {
    let Some(schema) = schema else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    write_schema_fields(out, schema, None)
}

fn write_schema_fields(
    out: &mut Vec<u8>,
    schema: &Schema,
    field_name: Option<&str>,
) -> Result<(), ConversionError> {
    out.extend_from_slice(b"{\"type\":");
    write_str(out, type_name(schema.r#type));
    match SchemaType::try_from(schema.r#type).unwrap_or(SchemaType::Unspecified) {
        SchemaType::Array => {
            out.extend_from_slice(b",\"items\":");
            write_schema(out, schema.value_schema.as_deref())?;
        }
        SchemaType::Map => {
            out.extend_from_slice(b",\"keys\":");
            write_schema(out, schema.key_schema.as_deref())?;
            out.extend_from_slice(b",\"values\":");
            write_schema(out, schema.value_schema.as_deref())?;
        }
        SchemaType::Struct => {
            out.extend_from_slice(b",\"fields\":[");
            for (i, field) in schema.fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let field_schema = field.schema.as_ref().ok_or_else(|| {
                    ConversionError(format!("struct field {} has no schema", field.name))
                })?;
                write_schema_fields(out, field_schema, Some(&field.name))?;
            }
            out.push(b']');
        }
        SchemaType::Unspecified => {
            return Err(ConversionError("schema has no type".into()));
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
        out.extend_from_slice(b",\"parameters\":{");
        let mut params: Vec<_> = schema.parameters.iter().collect();
        params.sort();
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
    if let Some(default) = &schema.default_value {
        out.extend_from_slice(b",\"default\":");
        write_value(out, Some(schema), Some(default))?;
    }
    if let Some(name) = field_name {
        out.extend_from_slice(b",\"field\":");
        write_str(out, name);
    }
    out.push(b'}');
    Ok(())
}

/// Writes a value as Kafka's `JsonConverter.convertToJson` does.
pub(crate) fn write_value(
    out: &mut Vec<u8>,
    schema: Option<&Schema>,
    value: Option<&Value>,
) -> Result<(), ConversionError> {
    let kind = value.and_then(|v| v.kind.as_ref());
    let kind = match kind {
        None | Some(value::Kind::Null(_)) => {
            if let Some(default) = schema.and_then(|s| s.default_value.as_ref()) {
                return write_value(out, schema, Some(default));
            }
            if schema.is_some_and(|s| !s.optional) {
                return Err(ConversionError(
                    "conversion error: null value for field that is required and has no default value"
                        .into(),
                ));
            }
            out.extend_from_slice(b"null");
            return Ok(());
        }
        Some(kind) => kind,
    };
    match kind {
        value::Kind::Null(_) => out.extend_from_slice(b"null"),
        value::Kind::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        value::Kind::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        value::Kind::Float32(f) => out.extend_from_slice(
            java_float(f64::from(*f), f.to_string(), format!("{f:E}")).as_bytes(),
        ),
        value::Kind::Float64(f) => {
            out.extend_from_slice(java_float(*f, f.to_string(), format!("{f:E}")).as_bytes())
        }
        value::Kind::String(s) => write_str(out, s),
        value::Kind::Bytes(b) => {
            out.push(b'"');
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(b)
                    .as_bytes(),
            );
            out.push(b'"');
        }
        value::Kind::Array(a) => {
            let items = schema.and_then(|s| s.value_schema.as_deref());
            out.push(b'[');
            for (i, item) in a.items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, items, Some(item))?;
            }
            out.push(b']');
        }
        value::Kind::Map(m) => {
            let key_schema = schema.and_then(|s| s.key_schema.as_deref());
            let value_schema = schema.and_then(|s| s.value_schema.as_deref());
            let string_keys = match key_schema {
                Some(k) => k.r#type == SchemaType::String as i32,
                None => m.entries.iter().all(|e| {
                    matches!(
                        e.key.as_ref().and_then(|k| k.kind.as_ref()),
                        Some(value::Kind::String(_))
                    )
                }),
            };
            if string_keys {
                out.push(b'{');
                for (i, entry) in m.entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    match entry.key.as_ref().and_then(|k| k.kind.as_ref()) {
                        Some(value::Kind::String(k)) => write_str(out, k),
                        _ => return Err(ConversionError("map key is not a string".into())),
                    }
                    out.push(b':');
                    write_value(out, value_schema, entry.value.as_ref())?;
                }
                out.push(b'}');
            } else {
                out.push(b'[');
                for (i, entry) in m.entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'[');
                    write_value(out, key_schema, entry.key.as_ref())?;
                    out.push(b',');
                    write_value(out, value_schema, entry.value.as_ref())?;
                    out.push(b']');
                }
                out.push(b']');
            }
        }
        value::Kind::Struct(s) => {
            out.push(b'{');
            match schema {
                Some(schema) => {
                    if schema.fields.len() != s.fields.len() {
                        return Err(ConversionError(format!(
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
                        write_value(out, field.schema.as_ref(), Some(v))?;
                    }
                }
                None => {
                    for (i, v) in s.fields.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        let name = s.names.get(i).ok_or_else(|| {
                            ConversionError("schemaless struct field has no name".into())
                        })?;
                        write_str(out, name);
                        out.push(b':');
                        write_value(out, None, Some(v))?;
                    }
                }
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// The text of a value for StringConverter and logs (Java `toString` style for scalars).
pub(crate) fn display(v: &Value) -> String {
    match &v.kind {
        None | Some(value::Kind::Null(_)) => "null".into(),
        Some(value::Kind::String(s)) => s.clone(),
        Some(value::Kind::Boolean(b)) => b.to_string(),
        Some(value::Kind::Int(i)) => i.to_string(),
        Some(value::Kind::Float32(f)) => java_float(f64::from(*f), f.to_string(), format!("{f:E}")),
        Some(value::Kind::Float64(f)) => java_float(*f, f.to_string(), format!("{f:E}")),
        Some(_) => {
            let mut out = Vec::new();
            match write_value(&mut out, None, Some(v)) {
                Ok(()) => String::from_utf8_lossy(&out).into_owned(),
                Err(e) => format!("<{e}>"),
            }
        }
    }
}

const ENVELOPE_ERROR: &str = "JsonConverter with schemas.enable requires \"schema\" and \"payload\" fields and may not contain additional fields. If you are trying to deserialize plain JSON data, set schemas.enable=false in your converter configuration";

/// Reads the `{"schema":…,"payload":…}` envelope.
pub(crate) fn from_envelope(doc: serde_json::Value) -> Result<Structured, ConversionError> {
    let serde_json::Value::Object(mut envelope) = doc else {
        return Err(ConversionError(ENVELOPE_ERROR.into()));
    };
    if envelope.len() != 2 {
        return Err(ConversionError(ENVELOPE_ERROR.into()));
    }
    let (Some(schema), Some(payload)) = (envelope.remove("schema"), envelope.remove("payload"))
    else {
        return Err(ConversionError(ENVELOPE_ERROR.into()));
    };
    if schema.is_null() {
        return Ok(Structured {
            schema: None,
            value: Some(schemaless(payload)),
        });
    }
    let schema = parse_schema(&schema)?;
    let value = parse_value(&schema, payload)?;
    Ok(Structured {
        schema: Some(schema),
        value: Some(value),
    })
}

fn parse_schema(doc: &serde_json::Value) -> Result<Schema, ConversionError> {
    let obj = doc
        .as_object()
        .ok_or_else(|| ConversionError(format!("schema must be a JSON object: {doc}")))?;
    let type_name = obj
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| ConversionError("schema must contain 'type' field".into()))?;
    let kind = type_from_name(type_name)
        .ok_or_else(|| ConversionError(format!("unknown schema type: {type_name}")))?;
    let mut schema = Schema {
        r#type: kind as i32,
        optional: obj
            .get("optional")
            .and_then(|o| o.as_bool())
            .unwrap_or(false),
        name: obj.get("name").and_then(|n| n.as_str()).map(str::to_string),
        version: obj
            .get("version")
            .and_then(|v| v.as_i64())
            .and_then(|v| i32::try_from(v).ok()),
        doc: obj.get("doc").and_then(|d| d.as_str()).map(str::to_string),
        ..Schema::default()
    };
    if let Some(params) = obj.get("parameters").and_then(|p| p.as_object()) {
        for (k, v) in params {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            schema.parameters.insert(k.clone(), v);
        }
    }
    match kind {
        SchemaType::Array => {
            let items = obj.get("items").ok_or_else(|| {
                ConversionError("array schema did not specify the items type".into())
            })?;
            schema.value_schema = Some(Box::new(parse_schema(items)?));
        }
        SchemaType::Map => {
            let keys = obj
                .get("keys")
                .ok_or_else(|| ConversionError("map schema did not specify the key type".into()))?;
            let values = obj.get("values").ok_or_else(|| {
                ConversionError("map schema did not specify the value type".into())
            })?;
            schema.key_schema = Some(Box::new(parse_schema(keys)?));
            schema.value_schema = Some(Box::new(parse_schema(values)?));
        }
        SchemaType::Struct => {
            let fields = obj
                .get("fields")
                .and_then(|f| f.as_array())
                .ok_or_else(|| {
                    ConversionError("struct schema's \"fields\" argument is not an array".into())
                })?;
            for field in fields {
                let name = field.get("field").and_then(|f| f.as_str()).ok_or_else(|| {
                    ConversionError("struct schema's field name not specified properly".into())
                })?;
                schema.fields.push(Field {
                    name: name.to_string(),
                    schema: Some(parse_schema(field)?),
                });
            }
        }
        _ => {}
    }
    if let Some(default) = obj.get("default") {
        schema.default_value = Some(parse_value(&schema, default.clone())?);
    }
    Ok(schema)
}

fn parse_value(schema: &Schema, doc: serde_json::Value) -> Result<Value, ConversionError> {
    use serde_json::Value as J;
    let mismatch = |doc: &J| {
        ConversionError(format!(
            "invalid JSON for {} schema: {doc}",
            type_name(schema.r#type)
        ))
    };
    if doc.is_null() {
        if let Some(default) = &schema.default_value {
            return Ok(default.clone());
        }
        if schema.optional {
            return Ok(Value {
                kind: Some(value::Kind::Null(true)),
            });
        }
        return Err(ConversionError(format!(
            "invalid null value for required {} field",
            type_name(schema.r#type)
        )));
    }
    let kind = match SchemaType::try_from(schema.r#type).unwrap_or(SchemaType::Unspecified) {
        SchemaType::Int8 | SchemaType::Int16 | SchemaType::Int32 | SchemaType::Int64 => {
            value::Kind::Int(doc.as_i64().ok_or_else(|| mismatch(&doc))?)
        }
        SchemaType::Float32 => {
            value::Kind::Float32(doc.as_f64().ok_or_else(|| mismatch(&doc))? as f32)
        }
        SchemaType::Float64 => value::Kind::Float64(doc.as_f64().ok_or_else(|| mismatch(&doc))?),
        SchemaType::Boolean => value::Kind::Boolean(doc.as_bool().ok_or_else(|| mismatch(&doc))?),
        SchemaType::String => match doc {
            J::String(s) => value::Kind::String(s),
            other => return Err(mismatch(&other)),
        },
        SchemaType::Bytes => {
            value::Kind::Bytes(base64_decode(doc.as_str().ok_or_else(|| mismatch(&doc))?)?)
        }
        SchemaType::Array => {
            let items_schema = schema
                .value_schema
                .as_deref()
                .ok_or_else(|| mismatch(&doc))?;
            let J::Array(items) = doc else {
                return Err(mismatch(&doc));
            };
            value::Kind::Array(ArrayValue {
                items: items
                    .into_iter()
                    .map(|i| parse_value(items_schema, i))
                    .collect::<Result<_, _>>()?,
            })
        }
        SchemaType::Map => {
            let key_schema = schema.key_schema.as_deref().ok_or_else(|| mismatch(&doc))?;
            let value_schema = schema
                .value_schema
                .as_deref()
                .ok_or_else(|| mismatch(&doc))?;
            let entries = match doc {
                J::Object(fields) if key_schema.r#type == SchemaType::String as i32 => fields
                    .into_iter()
                    .map(|(k, v)| {
                        Ok(MapEntry {
                            key: Some(Value {
                                kind: Some(value::Kind::String(k)),
                            }),
                            value: Some(parse_value(value_schema, v)?),
                        })
                    })
                    .collect::<Result<_, ConversionError>>()?,
                J::Array(pairs) => pairs
                    .into_iter()
                    .map(|pair| match pair {
                        J::Array(mut kv) if kv.len() == 2 => {
                            let v = kv.pop().unwrap_or(J::Null);
                            let k = kv.pop().unwrap_or(J::Null);
                            Ok(MapEntry {
                                key: Some(parse_value(key_schema, k)?),
                                value: Some(parse_value(value_schema, v)?),
                            })
                        }
                        other => Err(mismatch(&other)),
                    })
                    .collect::<Result<_, ConversionError>>()?,
                other => return Err(mismatch(&other)),
            };
            value::Kind::Map(MapValue { entries })
        }
        SchemaType::Struct => {
            let J::Object(mut fields) = doc else {
                return Err(mismatch(&doc));
            };
            let values = schema
                .fields
                .iter()
                .map(|f| {
                    let field_schema = f.schema.as_ref().ok_or_else(|| {
                        ConversionError(format!("struct field {} has no schema", f.name))
                    })?;
                    parse_value(field_schema, fields.remove(&f.name).unwrap_or(J::Null))
                })
                .collect::<Result<_, _>>()?;
            value::Kind::Struct(StructValue {
                fields: values,
                names: Vec::new(),
            })
        }
        SchemaType::Unspecified => return Err(ConversionError("schema has no type".into())),
    };
    Ok(Value { kind: Some(kind) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_number_shapes() {
        assert_eq!(
            java_float(1.0, 1.0f64.to_string(), format!("{:E}", 1.0f64)),
            "1.0"
        );
        assert_eq!(
            java_float(0.5, 0.5f64.to_string(), format!("{:E}", 0.5f64)),
            "0.5"
        );
        assert_eq!(
            java_float(1e7, 1e7f64.to_string(), format!("{:E}", 1e7f64)),
            "1.0E7"
        );
        assert_eq!(
            java_float(1.5e-5, 1.5e-5f64.to_string(), format!("{:E}", 1.5e-5f64)),
            "1.5E-5"
        );
        assert_eq!(
            java_float(
                -2.5e10,
                (-2.5e10f64).to_string(),
                format!("{:E}", -2.5e10f64)
            ),
            "-2.5E10"
        );
    }

    #[test]
    fn jackson_string_escapes() {
        let mut out = Vec::new();
        write_str(&mut out, "a\"\\\n\t\u{7}é/");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"\\\\\\n\\t\\u0007é/\""
        );
    }
}
