//! JSON in the exact form Kafka's JsonConverter (Jackson) writes it: compact, fields in Kafka's
//! order, Jackson's string escapes, base64 bytes, Java's number formatting; and the reverse
//! mapping from the `{"schema":…,"payload":…}` envelope, logical types (Decimal, Date, Time,
//! Timestamp) included.

use base64::Engine as _;
use sluice_proto::connector::v1::{
    value, ArrayValue, Field, MapEntry, MapValue, Schema, SchemaType, StructValue, Structured,
    Value,
};

pub(crate) mod decimal;
pub(crate) mod reader;

use crate::error::{base64_decode, ConversionError};
use decimal::BigDecimal;
use reader::Node;

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

/// Writes a string literal as Jackson's `UTF8JsonGenerator` does by default (what Kafka
/// Connect's JsonConverter writes): `"` and `\\` escaped, short forms for \b \t \n \f \r,
/// upper-case `\u00XX` for the other control characters (U+0000 to U+001F), a character outside
/// the Basic Multilingual Plane as its UTF-16 surrogate pair of upper-case `\uXXXX` escapes
/// (`🎉` → `\uD83C\uDF89`), and everything else (DEL, `/`, other non-ASCII) raw UTF-8.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    fn escape_u16(out: &mut Vec<u8>, unit: u16) {
        out.extend_from_slice(b"\\u");
        for shift in [12, 8, 4, 0] {
            out.push(HEX[((unit >> shift) & 0xF) as usize]);
        }
    }
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0A => b'n',
            0x0C => b'f',
            0x0D => b'r',
            0x00..=0x1F => 0,
            // The lead byte of a 4-byte UTF-8 sequence: a supplementary character.
            0xF0..=0xFF => 1,
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        match short {
            0 => escape_u16(out, b as u16),
            1 => {
                // `s` is a str, so a 4-byte sequence starts here and `chars` yields it whole.
                let c = s[i..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    escape_u16(out, *unit);
                }
                i += c.len_utf8();
                start = i;
                continue;
            }
            _ => {
                out.push(b'\\');
                out.push(short);
            }
        }
        i += 1;
        start = i;
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

pub(crate) use crate::logical::{is_null, DATE, DECIMAL, TIME, TIMESTAMP};

const MILLIS_PER_DAY: i64 = 24 * 60 * 60 * 1000;

/// How JsonConverter writes a `Decimal` (its `decimal.format` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecimalFormat {
    /// Base64 of the unscaled two's-complement bytes, like any `bytes` value.
    #[default]
    Base64,
    /// A plain JSON number, as Java's `BigDecimal.toString` prints it.
    Numeric,
}

/// JsonConverter settings that change the JSON of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JsonOptions {
    pub decimal_format: DecimalFormat,
    /// `replace.null.with.default`: a null with a schema default is written (and read) as
    /// the default.
    pub replace_null_with_default: bool,
}

impl Default for JsonOptions {
    fn default() -> JsonOptions {
        JsonOptions {
            decimal_format: DecimalFormat::Base64,
            replace_null_with_default: true,
        }
    }
}

/// Kafka's `Schema.Type` names, as its error messages print them.
pub(crate) fn kafka_type_name(kind: i32) -> &'static str {
    match SchemaType::try_from(kind).unwrap_or(SchemaType::Unspecified) {
        SchemaType::Int8 => "INT8",
        SchemaType::Int16 => "INT16",
        SchemaType::Int32 => "INT32",
        SchemaType::Int64 => "INT64",
        SchemaType::Float32 => "FLOAT32",
        SchemaType::Float64 => "FLOAT64",
        SchemaType::Boolean => "BOOLEAN",
        SchemaType::String => "STRING",
        SchemaType::Bytes => "BYTES",
        SchemaType::Array => "ARRAY",
        SchemaType::Map => "MAP",
        SchemaType::Struct => "STRUCT",
        SchemaType::Unspecified => "UNSPECIFIED",
    }
}

/// The name of a value's kind, for error messages.
pub(crate) fn kind_name(kind: Option<&value::Kind>) -> &'static str {
    match kind {
        None | Some(value::Kind::Null(_)) => "null",
        Some(value::Kind::Boolean(_)) => "boolean",
        Some(value::Kind::Int(_)) => "int",
        Some(value::Kind::Float32(_)) => "float32",
        Some(value::Kind::Float64(_)) => "float64",
        Some(value::Kind::String(_)) => "string",
        Some(value::Kind::Bytes(_)) => "bytes",
        Some(value::Kind::Array(_)) => "array",
        Some(value::Kind::Map(_)) => "map",
        Some(value::Kind::Struct(_)) => "struct",
    }
}

/// Which logical type a schema carries, when its underlying type is the one Kafka defines for
/// that name (a mismatched name is treated as a plain name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Logical {
    Decimal,
    Date,
    Time,
    Timestamp,
}

pub(crate) fn logical(schema: &Schema) -> Option<Logical> {
    let kind = SchemaType::try_from(schema.r#type).ok()?;
    match (schema.name.as_deref()?, kind) {
        (DECIMAL, SchemaType::Bytes) => Some(Logical::Decimal),
        (DATE, SchemaType::Int32) => Some(Logical::Date),
        (TIME, SchemaType::Int32) => Some(Logical::Time),
        (TIMESTAMP, SchemaType::Int64) => Some(Logical::Timestamp),
        _ => None,
    }
}

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

pub(crate) const ENVELOPE_ERROR: &str = "JsonConverter with schemas.enable requires \"schema\" and \"payload\" fields and may not contain additional fields. If you are trying to deserialize plain JSON data, set schemas.enable=false in your converter configuration";

/// Reads the `{"schema":…,"payload":…}` envelope; `None` for Kafka's null (no schema, null
/// payload).
pub(crate) fn from_envelope_node(
    doc: Node,
    options: JsonOptions,
) -> Result<Option<Structured>, ConversionError> {
    let Node::Object(members) = doc else {
        return Err(ConversionError::new(ENVELOPE_ERROR));
    };
    if members.len() != 2 {
        return Err(ConversionError::new(ENVELOPE_ERROR));
    }
    let mut schema = None;
    let mut payload = None;
    for (k, v) in members {
        match k.as_str() {
            "schema" => schema = Some(v),
            "payload" => payload = Some(v),
            _ => return Err(ConversionError::new(ENVELOPE_ERROR)),
        }
    }
    let (Some(schema), Some(payload)) = (schema, payload) else {
        return Err(ConversionError::new(ENVELOPE_ERROR));
    };
    if schema == Node::Null {
        return Ok(schemaless_node(payload)?.map(|value| Structured {
            schema: None,
            value: Some(value),
        }));
    }
    let schema = parse_schema(&schema, options)?;
    let value = parse_value(&schema, Some(payload), options)?;
    Ok(Some(Structured {
        schema: Some(schema),
        value: Some(value),
    }))
}

fn null_value() -> Value {
    Value {
        kind: Some(value::Kind::Null(true)),
    }
}

/// Plain JSON to a schemaless value, as Kafka's JsonConverter reads it with no schema: integers
/// as int64, other numbers as float64, objects as maps with string keys. `None` for null.
pub(crate) fn schemaless_node(doc: Node) -> Result<Option<Value>, ConversionError> {
    let kind = match doc {
        Node::Null => return Ok(None),
        Node::Bool(b) => value::Kind::Boolean(b),
        Node::Number { text, integral } => {
            if integral {
                value::Kind::Int(text.parse().map_err(|_| {
                    ConversionError::new(format!("integer {text} does not fit int64"))
                })?)
            } else {
                value::Kind::Float64(
                    text.parse()
                        .map_err(|_| ConversionError::new(format!("invalid number {text}")))?,
                )
            }
        }
        Node::String(s) => value::Kind::String(s),
        Node::Array(items) => value::Kind::Array(ArrayValue {
            items: items
                .into_iter()
                .map(|i| Ok(schemaless_node(i)?.unwrap_or_else(null_value)))
                .collect::<Result<_, ConversionError>>()?,
        }),
        Node::Object(members) => value::Kind::Map(MapValue {
            entries: members
                .into_iter()
                .map(|(k, v)| {
                    Ok(MapEntry {
                        key: Some(Value {
                            kind: Some(value::Kind::String(k)),
                        }),
                        value: Some(schemaless_node(v)?.unwrap_or_else(null_value)),
                    })
                })
                .collect::<Result<_, ConversionError>>()?,
        }),
    };
    Ok(Some(Value { kind: Some(kind) }))
}

fn parse_schema(doc: &Node, options: JsonOptions) -> Result<Schema, ConversionError> {
    let type_name = match doc.get("type") {
        Some(Node::String(t)) => t.as_str(),
        _ => return Err(ConversionError::new("schema must contain 'type' field")),
    };
    let kind = type_from_name(type_name)
        .ok_or_else(|| ConversionError::new(format!("unknown schema type: {type_name}")))?;
    let mut schema = Schema {
        r#type: kind as i32,
        ..Schema::default()
    };
    match kind {
        SchemaType::Array => {
            let items = doc
                .get("items")
                .filter(|i| **i != Node::Null)
                .ok_or_else(|| {
                    ConversionError::new("array schema did not specify the element type")
                })?;
            schema.value_schema = Some(Box::new(parse_schema(items, options)?));
        }
        SchemaType::Map => {
            let keys = doc
                .get("keys")
                .ok_or_else(|| ConversionError::new("map schema did not specify the key type"))?;
            let values = doc
                .get("values")
                .ok_or_else(|| ConversionError::new("map schema did not specify the value type"))?;
            schema.key_schema = Some(Box::new(parse_schema(keys, options)?));
            schema.value_schema = Some(Box::new(parse_schema(values, options)?));
        }
        SchemaType::Struct => {
            let Some(Node::Array(fields)) = doc.get("fields") else {
                return Err(ConversionError::new(
                    "struct schema's \"fields\" argument is not an array",
                ));
            };
            for field in fields {
                let Some(Node::String(name)) = field.get("field") else {
                    return Err(ConversionError::new(
                        "struct schema's field name not specified properly",
                    ));
                };
                schema.fields.push(Field {
                    name: name.clone(),
                    schema: Some(parse_schema(field, options)?),
                });
            }
        }
        _ => {}
    }
    schema.optional = doc.get("optional") == Some(&Node::Bool(true));
    if let Some(Node::String(name)) = doc.get("name") {
        schema.name = Some(name.clone());
    }
    if let Some(Node::Number {
        text,
        integral: true,
    }) = doc.get("version")
    {
        schema.version = text.parse().ok();
    }
    if let Some(Node::String(d)) = doc.get("doc") {
        schema.doc = Some(d.clone());
    }
    if let Some(Node::Object(params)) = doc.get("parameters") {
        for (k, v) in params {
            let Node::String(v) = v else {
                return Err(ConversionError::new(
                    "schema parameters must have string values",
                ));
            };
            schema.parameters.insert(k.clone(), v.clone());
        }
    }
    if let Some(default) = doc.get("default") {
        let value = parse_value(&schema, Some(default.clone()), options)?;
        if !is_null(&value) {
            schema.default_value = Some(value);
        }
    }
    Ok(schema)
}

fn integral_text(doc: &Node) -> Option<&str> {
    match doc {
        Node::Number {
            text,
            integral: true,
        } => Some(text),
        _ => None,
    }
}

/// A JSON number as a whole number in `min..=max` (Jackson's `intValue`/`longValue`, minus
/// their silent truncation).
fn whole_number(schema: &Schema, doc: &Node, min: i64, max: i64) -> Result<i64, ConversionError> {
    let Node::Number { text, .. } = doc else {
        return Err(ConversionError::new(format!(
            "invalid json for {}: expected a number, found {}",
            kafka_type_name(schema.r#type),
            doc.type_name()
        )));
    };
    BigDecimal::parse(text)
        .and_then(|d| d.to_i64())
        .filter(|i| (min..=max).contains(i))
        .ok_or_else(|| {
            ConversionError::new(format!(
                "invalid json for {}: {text} is not a whole number in range",
                kafka_type_name(schema.r#type)
            ))
        })
}

fn parse_value(
    schema: &Schema,
    doc: Option<Node>,
    options: JsonOptions,
) -> Result<Value, ConversionError> {
    let doc = match doc {
        None | Some(Node::Null) => {
            if options.replace_null_with_default {
                if let Some(default) = &schema.default_value {
                    return Ok(default.clone());
                }
            }
            if schema.optional {
                return Ok(null_value());
            }
            return Err(ConversionError::new(format!(
                "invalid null value for required {} field",
                kafka_type_name(schema.r#type)
            )));
        }
        Some(doc) => doc,
    };
    let mismatch = |expected: &str, doc: &Node| {
        ConversionError::new(format!(
            "invalid json for {}: expected {expected}, found {}",
            kafka_type_name(schema.r#type),
            doc.type_name()
        ))
    };
    if let Some(logical) = logical(schema) {
        return parse_logical(schema, logical, doc);
    }
    let kind = match SchemaType::try_from(schema.r#type).unwrap_or(SchemaType::Unspecified) {
        SchemaType::Int8 => {
            value::Kind::Int(whole_number(schema, &doc, i8::MIN.into(), i8::MAX.into())?)
        }
        SchemaType::Int16 => value::Kind::Int(whole_number(
            schema,
            &doc,
            i16::MIN.into(),
            i16::MAX.into(),
        )?),
        SchemaType::Int32 => value::Kind::Int(whole_number(
            schema,
            &doc,
            i32::MIN.into(),
            i32::MAX.into(),
        )?),
        SchemaType::Int64 => value::Kind::Int(whole_number(schema, &doc, i64::MIN, i64::MAX)?),
        SchemaType::Float32 => match &doc {
            // Straight from the decimal text, as Java's `BigDecimal.floatValue` rounds.
            Node::Number { text, .. } => value::Kind::Float32(
                text.parse()
                    .map_err(|_| ConversionError::new(format!("invalid number {text}")))?,
            ),
            other => return Err(mismatch("a number", other)),
        },
        SchemaType::Float64 => match &doc {
            Node::Number { text, .. } => value::Kind::Float64(
                text.parse()
                    .map_err(|_| ConversionError::new(format!("invalid number {text}")))?,
            ),
            other => return Err(mismatch("a number", other)),
        },
        SchemaType::Boolean => match doc {
            Node::Bool(b) => value::Kind::Boolean(b),
            other => return Err(mismatch("a boolean", &other)),
        },
        SchemaType::String => match doc {
            Node::String(s) => value::Kind::String(s),
            other => return Err(mismatch("a string", &other)),
        },
        SchemaType::Bytes => match doc {
            Node::String(s) => value::Kind::Bytes(
                base64_decode(&s)
                    .map_err(|e| ConversionError::new(format!("invalid bytes field: {e}")))?,
            ),
            other => return Err(mismatch("base64 text", &other)),
        },
        SchemaType::Array => {
            let items_schema = schema.value_schema.as_deref().ok_or_else(|| {
                ConversionError::new("array schema did not specify the element type")
            })?;
            let Node::Array(items) = doc else {
                return Err(mismatch("an array", &doc));
            };
            value::Kind::Array(ArrayValue {
                items: items
                    .into_iter()
                    .map(|i| parse_value(items_schema, Some(i), options))
                    .collect::<Result<_, _>>()?,
            })
        }
        SchemaType::Map => parse_map(schema, doc, options)?,
        SchemaType::Struct => {
            let Node::Object(mut members) = doc else {
                return Err(ConversionError::new(format!(
                    "structs should be encoded as JSON objects, but found {}",
                    doc.type_name()
                )));
            };
            let values = schema
                .fields
                .iter()
                .map(|f| {
                    let field_schema = f.schema.as_ref().ok_or_else(|| {
                        ConversionError::new(format!("struct field {} has no schema", f.name))
                    })?;
                    let member = members
                        .iter()
                        .position(|(k, _)| *k == f.name)
                        .map(|i| members.swap_remove(i).1);
                    parse_value(field_schema, member, options)
                })
                .collect::<Result<_, _>>()?;
            value::Kind::Struct(StructValue {
                fields: values,
                names: Vec::new(),
            })
        }
        SchemaType::Unspecified => return Err(ConversionError::new("schema has no type")),
    };
    Ok(Value { kind: Some(kind) })
}

fn parse_map(
    schema: &Schema,
    doc: Node,
    options: JsonOptions,
) -> Result<value::Kind, ConversionError> {
    let (Some(key_schema), Some(value_schema)) =
        (schema.key_schema.as_deref(), schema.value_schema.as_deref())
    else {
        return Err(ConversionError::new(
            "map schema did not specify the key and value types",
        ));
    };
    let entries = if key_schema.r#type == SchemaType::String as i32 {
        let Node::Object(members) = doc else {
            return Err(ConversionError::new(format!(
                "maps with string fields should be encoded as JSON objects, but found {}",
                doc.type_name()
            )));
        };
        members
            .into_iter()
            .map(|(k, v)| {
                Ok(MapEntry {
                    key: Some(Value {
                        kind: Some(value::Kind::String(k)),
                    }),
                    value: Some(parse_value(value_schema, Some(v), options)?),
                })
            })
            .collect::<Result<_, ConversionError>>()?
    } else {
        let Node::Array(pairs) = doc else {
            return Err(ConversionError::new(format!(
                "maps with non-string fields should be encoded as JSON array of tuples, but found {}",
                doc.type_name()
            )));
        };
        pairs
            .into_iter()
            .map(|pair| match pair {
                Node::Array(kv) if kv.len() == 2 => {
                    let mut kv = kv.into_iter();
                    Ok(MapEntry {
                        key: Some(parse_value(key_schema, kv.next(), options)?),
                        value: Some(parse_value(value_schema, kv.next(), options)?),
                    })
                }
                Node::Array(kv) => Err(ConversionError::new(format!(
                    "found invalid map entry, expected length 2 but found: {}",
                    kv.len()
                ))),
                other => Err(ConversionError::new(format!(
                    "found invalid map entry instead of array tuple: {}",
                    other.type_name()
                ))),
            })
            .collect::<Result<_, ConversionError>>()?
    };
    Ok(value::Kind::Map(MapValue { entries }))
}

fn parse_logical(schema: &Schema, logical: Logical, doc: Node) -> Result<Value, ConversionError> {
    let kind = match logical {
        Logical::Decimal => {
            let scale = decimal::schema_scale(&schema.parameters)?;
            match doc {
                // Accepted whatever decimal.format says, as Kafka does.
                Node::Number { text, .. } => {
                    let decimal = BigDecimal::parse(&text)
                        .ok_or_else(|| ConversionError::new(format!("invalid decimal {text}")))?;
                    let exact = decimal.with_scale(i64::from(scale)).ok_or_else(|| {
                        ConversionError::new(format!(
                            "invalid decimal {text}: does not fit the schema's scale {scale}"
                        ))
                    })?;
                    value::Kind::Bytes(exact.unscaled_bytes())
                }
                Node::String(s) => {
                    let bytes = base64_decode(&s)
                        .ok()
                        .filter(|b| !b.is_empty())
                        .ok_or_else(|| {
                            ConversionError::new("invalid bytes for decimal field")
                        })?;
                    value::Kind::Bytes(bytes)
                }
                other => {
                    return Err(ConversionError::new(format!(
                        "invalid type for decimal, underlying representation should be numeric or bytes but was {}",
                        other.type_name()
                    )))
                }
            }
        }
        Logical::Date | Logical::Time => {
            let name = if logical == Logical::Date {
                "date"
            } else {
                "time"
            };
            let v = integral_text(&doc)
                .and_then(|t| t.parse::<i32>().ok())
                .ok_or_else(|| {
                    ConversionError::new(format!(
                        "invalid type for {name}, underlying representation should be integer but was {}",
                        doc.type_name()
                    ))
                })?;
            if logical == Logical::Time && !(0..=MILLIS_PER_DAY).contains(&i64::from(v)) {
                return Err(ConversionError::new(
                    "time values must use number of milliseconds greater than 0 and less than 86400000",
                ));
            }
            value::Kind::Int(i64::from(v))
        }
        Logical::Timestamp => {
            let v = integral_text(&doc)
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| {
                    ConversionError::new(format!(
                        "invalid type for timestamp, underlying representation should be integral but was {}",
                        doc.type_name()
                    ))
                })?;
            value::Kind::Int(v)
        }
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

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn jackson_string_escapes() {
        assert_eq!(escaped("a\"\\\n\t\u{7}é/"), "\"a\\\"\\\\\\n\\t\\u0007é/\"");
    }

    /// Each of Jackson's rules, byte for byte, as Kafka Connect 4.1's JsonConverter writes them.
    #[test]
    fn jackson_escapes_rule_by_rule() {
        // Short forms, and every other control character as upper-case \u00XX.
        assert_eq!(escaped("\u{8}\u{9}\u{a}\u{c}\u{d}"), r#""\b\t\n\f\r""#);
        assert_eq!(
            escaped("\u{0}\u{1}\u{b}\u{e}\u{1f}"),
            r#""\u0000\u0001\u000B\u000E\u001F""#
        );
        // Quote and backslash; the solidus stays raw.
        assert_eq!(escaped(r#"say "hi" \ /"#), r#""say \"hi\" \\ /""#);
        // DEL, C1 controls, Latin-1, BMP (CJK, €, U+2028, U+FFFF) stay raw UTF-8.
        let raw = "\u{7f}\u{80}\u{9f}é ü 日本 € \u{2028}\u{2029}\u{fffd}\u{ffff}";
        assert_eq!(escaped(raw), format!("\"{raw}\""));
        // Outside the BMP: the UTF-16 surrogate pair, upper-case hex.
        assert_eq!(
            escaped("unicode: é ü 日本 🎉"),
            r#""unicode: é ü 日本 \uD83C\uDF89""#
        );
        assert_eq!(escaped("\u{10000}"), r#""\uD800\uDC00""#);
        assert_eq!(escaped("\u{10ffff}"), r#""\uDBFF\uDFFF""#);
        assert_eq!(escaped("𝄞x😀"), r#""\uD834\uDD1Ex\uD83D\uDE00""#);
        // Between escapes, at the start and the end.
        assert_eq!(escaped("🎉\n🎉"), r#""\uD83C\uDF89\n\uD83C\uDF89""#);
    }

    /// The reader takes both forms: escaped surrogate pairs and raw UTF-8.
    #[test]
    fn reads_supplementary_characters_escaped_or_raw() {
        for text in [r#""\uD83C\uDF89 🎉""#, r#""\ud83c\udf89 🎉""#] {
            let read = reader::parse(text.as_bytes()).unwrap();
            assert_eq!(read, Some(Node::String("🎉 🎉".into())));
        }
    }
}
