//! JSON in the exact form Kafka's JsonConverter (Jackson) writes it: compact, fields in Kafka's
//! order, Jackson's string escapes, base64 bytes, Java's number formatting; and the reverse
//! mapping from the `{"schema":…,"payload":…}` envelope, logical types (Decimal, Date, Time,
//! Timestamp) included.

use sluice_proto::connector::v1::{value, Schema, SchemaType};

pub(crate) mod decimal;
mod parse;
pub(crate) mod reader;
mod write;

pub(crate) use parse::{from_envelope_node, schemaless_node};
pub(crate) use write::{display, write_schema_with, write_value, write_value_with};

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

pub(crate) use crate::logical::{DATE, DECIMAL, TIME, TIMESTAMP};

/// Kafka's message for a document that is not a `{"schema":…,"payload":…}` envelope.
pub(crate) const ENVELOPE_ERROR: &str = "JsonConverter with schemas.enable requires \"schema\" and \"payload\" fields and may not contain additional fields. If you are trying to deserialize plain JSON data, set schemas.enable=false in your converter configuration";

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

#[cfg(test)]
mod tests {
    use super::reader::Node;
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
