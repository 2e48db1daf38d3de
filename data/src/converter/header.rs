//! Header values as Kafka Connect's `SimpleHeaderConverter` writes and reads them: written with
//! `Values.convertToString` (strings as they are, bytes as base64, lists and maps in Kafka's
//! `[a,b]`/`{"k":v}` text, logical dates in ISO 8601), read back with `Values.parseString`'s
//! type inference for scalars (null, booleans, the smallest integer type, floats, decimals,
//! ISO 8601 dates and times, else a string).

use base64::Engine as _;
use sluice_proto::connector::v1::{data, value, Data, Schema, SchemaType, Structured, Value};

use super::ConversionError;
use crate::json::decimal::{schema_scale, BigDecimal};
use crate::json::{self, Logical};

const MILLIS_PER_DAY: i64 = 24 * 60 * 60 * 1000;

/// A header value as SimpleHeaderConverter writes it; raw bytes pass through unchanged.
pub fn header_bytes(data: Option<&Data>) -> Result<Option<Vec<u8>>, ConversionError> {
    match data.and_then(|d| d.kind.as_ref()) {
        None => Ok(None),
        Some(data::Kind::Raw(bytes)) => Ok(Some(bytes.clone())),
        Some(data::Kind::Structured(s)) => match s.value.as_ref().filter(|v| !is_null(v)) {
            None => Ok(None),
            Some(v) => {
                let mut out = String::new();
                append(&mut out, s.schema.as_ref(), v, false)?;
                Ok(Some(out.into_bytes()))
            }
        },
    }
}

use crate::record::is_null;

/// Kafka's `Values.append`: `embedded` is true inside a list, map or struct, where strings
/// are quoted with `\` and `"` escaped.
fn append(
    out: &mut String,
    schema: Option<&Schema>,
    v: &Value,
    embedded: bool,
) -> Result<(), ConversionError> {
    let logical = schema.and_then(json::logical);
    match &v.kind {
        None | Some(value::Kind::Null(_)) => out.push_str("null"),
        Some(value::Kind::String(s)) if embedded => {
            out.push('"');
            out.push_str(&s.replace('\\', "\\\\").replace('"', "\\\""));
            out.push('"');
        }
        Some(value::Kind::String(s)) => out.push_str(s),
        Some(value::Kind::Bytes(b)) if logical == Some(Logical::Decimal) => {
            let scale = schema.map_or(Ok(0), |s| schema_scale(&s.parameters))?;
            out.push_str(&BigDecimal::from_unscaled(b, scale)?.to_java_string());
        }
        Some(value::Kind::Bytes(b)) => {
            let text = base64::engine::general_purpose::STANDARD.encode(b);
            if embedded {
                out.push('"');
                out.push_str(&text);
                out.push('"');
            } else {
                out.push_str(&text);
            }
        }
        Some(value::Kind::Int(i)) => match logical {
            Some(Logical::Date) => out.push_str(&format_instant(i.saturating_mul(MILLIS_PER_DAY))),
            Some(Logical::Time | Logical::Timestamp) => out.push_str(&format_instant(*i)),
            _ => out.push_str(&i.to_string()),
        },
        Some(value::Kind::Array(a)) => {
            let items = schema.and_then(|s| s.value_schema.as_deref());
            out.push('[');
            for (i, item) in a.items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                append(out, items, item, true)?;
            }
            out.push(']');
        }
        Some(value::Kind::Map(m)) => {
            let keys = schema.and_then(|s| s.key_schema.as_deref());
            let values = schema.and_then(|s| s.value_schema.as_deref());
            let null = Value { kind: None };
            out.push('{');
            for (i, e) in m.entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                append(out, keys, e.key.as_ref().unwrap_or(&null), true)?;
                out.push(':');
                append(out, values, e.value.as_ref().unwrap_or(&null), true)?;
            }
            out.push('}');
        }
        Some(value::Kind::Struct(s)) => {
            out.push('{');
            for (i, field) in s.fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let schema_field = schema.and_then(|sc| sc.fields.get(i));
                let name = match schema_field {
                    Some(f) => f.name.as_str(),
                    None => s.names.get(i).map_or("", String::as_str),
                };
                let field_schema = schema_field.and_then(|f| f.schema.as_deref());
                // Kafka's `Struct.get` falls back to the field's default.
                let field = match field_schema.and_then(|fs| fs.default_value.as_ref()) {
                    Some(default) if is_null(field) => default,
                    _ => field,
                };
                append(out, None, &string_value(name), true)?;
                out.push(':');
                append(out, field_schema, field, true)?;
            }
            out.push('}');
        }
        Some(other) => out.push_str(&json::display(&Value {
            kind: Some(other.clone()),
        })),
    }
    Ok(())
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::String(s.to_string())),
    }
}

/// Kafka's `Values.dateFormatFor` in UTC: before the first day's end a time of day, on a
/// midnight a date, otherwise a timestamp.
fn format_instant(ms: i64) -> String {
    let time = |ms: i64| {
        let ms = ms.rem_euclid(MILLIS_PER_DAY);
        format!(
            "{:02}:{:02}:{:02}.{:03}Z",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    };
    let days = ms.div_euclid(MILLIS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    if ms < MILLIS_PER_DAY {
        time(ms)
    } else if ms % MILLIS_PER_DAY == 0 {
        format!("{y:04}-{m:02}-{d:02}")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{}", time(ms))
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A proleptic Gregorian date to days since 1970-01-01; `None` for an impossible date.
fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > month_days[usize::try_from(m - 1).ok()?] {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `yyyy-MM-dd` to days since the epoch.
fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    days_from_civil(digits(&s[0..4])?, digits(&s[5..7])?, digits(&s[8..10])?)
}

/// `HH:mm:ss.SSS'Z'` to milliseconds of the day.
fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 13 || b[2] != b':' || b[5] != b':' || b[8] != b'.' || b[12] != b'Z' {
        return None;
    }
    let (h, m, sec, ms) = (
        digits(&s[0..2])?,
        digits(&s[3..5])?,
        digits(&s[6..8])?,
        digits(&s[9..12])?,
    );
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    Some(((h * 60 + m) * 60 + sec) * 1000 + ms)
}

fn logical_schema(kind: SchemaType, name: &str) -> Schema {
    Schema {
        r#type: kind as i32,
        name: Some(name.to_string()),
        version: Some(1),
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

fn required(kind: SchemaType) -> Schema {
    Schema {
        r#type: kind as i32,
        ..Schema::default()
    }
}

/// Kafka's ISO 8601 literals: a time (`12:30:00.000Z`), a timestamp
/// (`2024-01-15T12:30:00.000Z`) or a date (`2024-01-15`), in UTC.
fn parse_temporal(s: &str) -> Option<Data> {
    match s.len() {
        13 => Some(structured(
            logical_schema(SchemaType::Int32, json::TIME),
            value::Kind::Int(parse_time(s)?),
        )),
        24 if s.as_bytes()[10] == b'T' => {
            let days = parse_date(&s[..10])?;
            let ms = parse_time(&s[11..])?;
            Some(structured(
                logical_schema(SchemaType::Int64, json::TIMESTAMP),
                value::Kind::Int(days * MILLIS_PER_DAY + ms),
            ))
        }
        10 => Some(structured(
            logical_schema(SchemaType::Int32, json::DATE),
            value::Kind::Int(parse_date(s)?),
        )),
        _ => None,
    }
}

/// Kafka's `Values.parseAsNumber`: whole numbers as the smallest of int8/16/32/64, other
/// numbers as float32 when that is finite, else float64, else a `Decimal`.
fn parse_number(token: &str) -> Option<Data> {
    let decimal = BigDecimal::parse(token)?;
    if decimal.is_integral() {
        if let Some(i) = decimal.to_i64() {
            let kind = if i8::try_from(i).is_ok() {
                SchemaType::Int8
            } else if i16::try_from(i).is_ok() {
                SchemaType::Int16
            } else if i32::try_from(i).is_ok() {
                SchemaType::Int32
            } else {
                SchemaType::Int64
            };
            return Some(structured(required(kind), value::Kind::Int(i)));
        }
    }
    if decimal.scale != 0 {
        let sign = if decimal.negative { "-" } else { "" };
        let text = format!("{sign}{}e{}", decimal.digits, -decimal.scale);
        if let Some(f) = text.parse::<f32>().ok().filter(|f| f.is_finite()) {
            return Some(structured(
                required(SchemaType::Float32),
                value::Kind::Float32(f),
            ));
        }
        if let Some(f) = text.parse::<f64>().ok().filter(|f| f.is_finite()) {
            return Some(structured(
                required(SchemaType::Float64),
                value::Kind::Float64(f),
            ));
        }
    }
    let mut schema = logical_schema(SchemaType::Bytes, json::DECIMAL);
    schema
        .parameters
        .insert("scale".into(), decimal.scale.to_string());
    Some(structured(
        schema,
        value::Kind::Bytes(decimal.unscaled_bytes()),
    ))
}

/// A header's bytes read back as SimpleHeaderConverter does (`Values.parseString` on the UTF-8
/// text); `None` (an absent value) and the literal `null` give a null.
///
/// Lists and maps (`[1,2]`, `{"a":1}`) are kept as strings here, where Kafka would parse them.
pub fn header_value(bytes: Option<&[u8]>) -> Data {
    let Some(bytes) = bytes else {
        return Data { kind: None };
    };
    let text = String::from_utf8_lossy(bytes).into_owned();
    let string = |s: String| structured(required(SchemaType::String), value::Kind::String(s));
    if text.is_empty() {
        return string(text);
    }
    // Kafka reads the text as tokens split at its delimiters; a scalar is judged by the first
    // token, and `null`/`true`/`false` only when nothing follows.
    let first_end = text
        .find([':', ',', '{', '}', '[', ']', '"'])
        .unwrap_or(text.len());
    let first = text[..first_end].trim();
    let alone = first_end == text.len();
    match first {
        "null" if alone => return Data { kind: None },
        "true" if alone => {
            return structured(required(SchemaType::Boolean), value::Kind::Boolean(true))
        }
        "false" if alone => {
            return structured(required(SchemaType::Boolean), value::Kind::Boolean(false))
        }
        _ => {}
    }
    let Some(first_char) = first.chars().next() else {
        return string(text);
    };
    if first_char.is_ascii_digit() {
        if let Some(temporal) = parse_temporal(text.trim()).or_else(|| parse_temporal(first)) {
            return temporal;
        }
    }
    if first_char.is_ascii_digit() || first_char == '+' || first_char == '-' {
        if let Some(number) = parse_number(first) {
            return number;
        }
    }
    string(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::connector::v1::{ArrayValue, Field, MapEntry, MapValue, StructValue};

    fn parsed(text: &str) -> (Option<Schema>, Option<value::Kind>) {
        match header_value(Some(text.as_bytes())).kind {
            Some(data::Kind::Structured(s)) => (s.schema, s.value.and_then(|v| v.kind)),
            Some(data::Kind::Raw(_)) => panic!("raw"),
            None => (None, None),
        }
    }

    fn type_of(text: &str) -> SchemaType {
        let (schema, _) = parsed(text);
        SchemaType::try_from(schema.expect("a schema").r#type).unwrap()
    }

    #[test]
    fn infers_types_like_values_parse_string() {
        assert_eq!(parsed("null"), (None, None));
        assert_eq!(header_value(None), Data { kind: None });
        assert_eq!(parsed("true").1, Some(value::Kind::Boolean(true)));
        assert_eq!(parsed(" false ").1, Some(value::Kind::Boolean(false)));
        assert_eq!(type_of("127"), SchemaType::Int8);
        assert_eq!(type_of("-128"), SchemaType::Int8);
        assert_eq!(type_of("128"), SchemaType::Int16);
        assert_eq!(type_of("40000"), SchemaType::Int32);
        assert_eq!(type_of("1234567890"), SchemaType::Int32);
        assert_eq!(type_of("4000000000"), SchemaType::Int64);
        assert_eq!(parsed("1.0").1, Some(value::Kind::Int(1)));
        assert_eq!(parsed("1.5").1, Some(value::Kind::Float32(1.5)));
        assert_eq!(parsed("1e30").1, Some(value::Kind::Float32(1e30)));
        assert_eq!(type_of("1e39"), SchemaType::Float64);
        assert_eq!(type_of("1.5e39"), SchemaType::Float64);
        let (schema, v) = parsed("99999999999999999999");
        let schema = schema.unwrap();
        assert_eq!(schema.name.as_deref(), Some(json::DECIMAL));
        assert_eq!(
            schema.parameters.get("scale").map(String::as_str),
            Some("0")
        );
        assert_eq!(
            v,
            Some(value::Kind::Bytes(vec![
                0x05, 0x6B, 0xC7, 0x5E, 0x2D, 0x63, 0x0F, 0xFF, 0xFF
            ]))
        );
        assert_eq!(parsed("").1, Some(value::Kind::String(String::new())));
        assert_eq!(parsed("hello").1, Some(value::Kind::String("hello".into())));
        assert_eq!(
            parsed(" 12abc").1,
            Some(value::Kind::String(" 12abc".into()))
        );
        assert_eq!(parsed("truex").1, Some(value::Kind::String("truex".into())));
        assert_eq!(parsed("true,").1, Some(value::Kind::String("true,".into())));
        // Kafka judges a scalar by its first token.
        assert_eq!(parsed("1,2").1, Some(value::Kind::Int(1)));
        assert_eq!(type_of("\u{FFFD}\u{0}"), SchemaType::String);
        assert_eq!(parsed("[1,2]").1, Some(value::Kind::String("[1,2]".into())));
    }

    #[test]
    fn infers_iso_8601_temporals() {
        let (schema, v) = parsed("2024-01-15");
        assert_eq!(schema.unwrap().name.as_deref(), Some(json::DATE));
        assert_eq!(v, Some(value::Kind::Int(19737)));
        let (schema, v) = parsed("12:30:00.250Z");
        assert_eq!(schema.unwrap().name.as_deref(), Some(json::TIME));
        assert_eq!(v, Some(value::Kind::Int(45_000_250)));
        let (schema, v) = parsed("2024-01-15T12:30:00.250Z");
        assert_eq!(schema.unwrap().name.as_deref(), Some(json::TIMESTAMP));
        assert_eq!(
            v,
            Some(value::Kind::Int(19737 * MILLIS_PER_DAY + 45_000_250))
        );
        assert_eq!(type_of("2024-02-30"), SchemaType::String);
    }

    fn header(schema: Option<Schema>, kind: value::Kind) -> String {
        let data = Data {
            kind: Some(data::Kind::Structured(Structured {
                schema,
                value: Some(Value { kind: Some(kind) }),
            })),
        };
        String::from_utf8(header_bytes(Some(&data)).unwrap().unwrap()).unwrap()
    }

    fn v(kind: value::Kind) -> Value {
        Value { kind: Some(kind) }
    }

    #[test]
    fn writes_like_values_convert_to_string() {
        use value::Kind;
        assert_eq!(header(None, Kind::String("a \"b\"".into())), "a \"b\"");
        assert_eq!(header(None, Kind::Bytes(b"hi".to_vec())), "aGk=");
        assert_eq!(header(None, Kind::Float64(1e7)), "1.0E7");
        assert_eq!(
            header(
                None,
                Kind::Array(ArrayValue {
                    items: vec![
                        v(Kind::Int(1)),
                        v(Kind::String("x\"\\".into())),
                        v(Kind::Null(true))
                    ]
                })
            ),
            r#"[1,"x\"\\",null]"#
        );
        assert_eq!(
            header(
                None,
                Kind::Map(MapValue {
                    entries: vec![MapEntry {
                        key: Some(v(Kind::String("k".into()))),
                        value: Some(v(Kind::Boolean(true)))
                    }]
                })
            ),
            r#"{"k":true}"#
        );
        let schema = Schema {
            r#type: SchemaType::Struct as i32,
            fields: vec![
                Field {
                    name: "a".into(),
                    schema: Some(Box::new(required(SchemaType::Int32))),
                },
                Field {
                    name: "b".into(),
                    schema: Some(Box::new(Schema {
                        optional: true,
                        ..required(SchemaType::String)
                    })),
                },
            ],
            ..Schema::default()
        };
        assert_eq!(
            header(
                Some(schema),
                Kind::Struct(StructValue {
                    fields: vec![v(Kind::Int(1)), v(Kind::Null(true))],
                    names: vec![]
                })
            ),
            r#"{"a":1,"b":null}"#
        );
        let mut decimal = logical_schema(SchemaType::Bytes, json::DECIMAL);
        decimal.parameters.insert("scale".into(), "2".into());
        assert_eq!(header(Some(decimal), Kind::Bytes(vec![0x00, 0x9C])), "1.56");
        let date = logical_schema(SchemaType::Int32, json::DATE);
        assert_eq!(header(Some(date), Kind::Int(19737)), "2024-01-15");
        let ts = logical_schema(SchemaType::Int64, json::TIMESTAMP);
        assert_eq!(
            header(Some(ts), Kind::Int(19737 * MILLIS_PER_DAY + 45_000_250)),
            "2024-01-15T12:30:00.250Z"
        );
        let time = logical_schema(SchemaType::Int32, json::TIME);
        assert_eq!(header(Some(time), Kind::Int(45_000_250)), "12:30:00.250Z");
    }

    #[test]
    fn scalars_round_trip() {
        for text in [
            "0",
            "-5",
            "300",
            "70000",
            "5000000000",
            "2.5",
            "true",
            "text",
            "2024-01-15",
        ] {
            let data = header_value(Some(text.as_bytes()));
            let back = header_bytes(Some(&data)).unwrap().unwrap();
            assert_eq!(String::from_utf8(back).unwrap(), text);
        }
    }
}
