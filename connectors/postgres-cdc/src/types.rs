//! PostgreSQL column types as Debezium's PostgreSQL connector maps them with its defaults
//! (`decimal.handling.mode=precise`, `time.precision.mode=adaptive`,
//! `binary.handling.mode=bytes`), and their values read from PostgreSQL's text format, which
//! both the snapshot (simple queries) and the replication stream (`pgoutput` without `binary`)
//! use. Sessions run with `DateStyle=ISO`, `TimeZone=UTC`, `IntervalStyle=iso_8601` and
//! `bytea_output=hex`, so that each type has one text form.

use std::collections::HashMap;

use chrono::{NaiveTime, Timelike};
use sluice_connector_jdbc::{days_from_civil, unscaled_bytes};
use sluice_connector_sdk::proto::{value, Schema, SchemaType, StructValue, Value};
pub use sluice_debezium::{boolean, field, int, kind, null, plain, string, structure};
use sluice_debezium::{decimal_schema, fraction, logical};

/// The settings every session that reads values runs with.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("bytea_output", "hex"),
];

/// What Debezium puts in place of a TOASTed value an UPDATE did not send
/// (`unavailable.value.placeholder`).
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Debezium's `MicroDuration`: a month is 365.25 / 12 days.
const MICROS_PER_MONTH: f64 = 365.25 / 12.0 * 86_400_000_000.0;

/// How a column is represented in Debezium's events.
#[derive(Clone, Debug, PartialEq)]
pub enum PgType {
    Boolean,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// NUMERIC(p, s): Kafka Connect Decimal.
    Decimal {
        precision: u32,
        scale: i32,
    },
    /// NUMERIC without a scale: `io.debezium.data.VariableScaleDecimal`.
    VariableDecimal,
    String,
    /// A string with a Debezium logical name: Json, Xml, Uuid.
    Named(&'static str),
    Bytes,
    /// `io.debezium.time.Date`: days since the epoch.
    Date,
    /// `io.debezium.time.Time`: milliseconds of the day (precision ≤ 3).
    TimeMillis,
    /// `io.debezium.time.MicroTime`.
    TimeMicros,
    /// `io.debezium.time.Timestamp`: epoch milliseconds (precision ≤ 3).
    TimestampMillis,
    /// `io.debezium.time.MicroTimestamp`.
    TimestampMicros,
    /// `io.debezium.time.ZonedTimestamp`: ISO-8601 text in UTC.
    ZonedTimestamp,
    /// `io.debezium.time.ZonedTime`.
    ZonedTime,
    /// `io.debezium.time.MicroDuration`.
    Interval,
}

impl PgType {
    /// The mapping of a column of type `oid` with type modifier `typmod`; types without a
    /// mapping of their own (arrays, enums, ranges, network and geometric types, …) are
    /// strings in PostgreSQL's text form.
    pub fn of(oid: u32, typmod: i32) -> PgType {
        // Fractional-second precision of time types: the modifier, or 6 when absent.
        let precision = if typmod >= 0 { typmod } else { 6 };
        match oid {
            16 => PgType::Boolean,
            21 => PgType::Int16,
            23 => PgType::Int32,
            20 | 26 => PgType::Int64,
            700 => PgType::Float32,
            701 => PgType::Float64,
            1700 if typmod >= 4 => {
                let t = typmod - 4;
                PgType::Decimal {
                    precision: ((t >> 16) & 0xffff) as u32,
                    scale: t & 0xffff,
                }
            }
            1700 => PgType::VariableDecimal,
            114 | 3802 => PgType::Named("io.debezium.data.Json"),
            142 => PgType::Named("io.debezium.data.Xml"),
            2950 => PgType::Named("io.debezium.data.Uuid"),
            17 => PgType::Bytes,
            1082 => PgType::Date,
            1083 if precision <= 3 => PgType::TimeMillis,
            1083 => PgType::TimeMicros,
            1114 if precision <= 3 => PgType::TimestampMillis,
            1114 => PgType::TimestampMicros,
            1184 => PgType::ZonedTimestamp,
            1266 => PgType::ZonedTime,
            1186 => PgType::Interval,
            _ => PgType::String,
        }
    }

    pub fn schema(&self, optional: bool) -> Schema {
        let (kind, name, parameters) = match self {
            PgType::Boolean => (SchemaType::Boolean, None, HashMap::new()),
            PgType::Int16 => (SchemaType::Int16, None, HashMap::new()),
            PgType::Int32 => (SchemaType::Int32, None, HashMap::new()),
            PgType::Int64 => (SchemaType::Int64, None, HashMap::new()),
            PgType::Float32 => (SchemaType::Float32, None, HashMap::new()),
            PgType::Float64 => (SchemaType::Float64, None, HashMap::new()),
            PgType::Decimal { precision, scale } => {
                return decimal_schema(*precision, *scale, optional)
            }
            PgType::VariableDecimal => {
                return Schema {
                    r#type: SchemaType::Struct as i32,
                    optional,
                    name: Some("io.debezium.data.VariableScaleDecimal".into()),
                    version: Some(1),
                    doc: Some("Variable scaled decimal".into()),
                    fields: vec![
                        field("scale", plain(SchemaType::Int32, false)),
                        field("value", plain(SchemaType::Bytes, false)),
                    ],
                    ..Schema::default()
                }
            }
            PgType::String => (SchemaType::String, None, HashMap::new()),
            PgType::Named(name) => (SchemaType::String, Some(*name), HashMap::new()),
            PgType::Bytes => (SchemaType::Bytes, None, HashMap::new()),
            PgType::Date => (
                SchemaType::Int32,
                Some("io.debezium.time.Date"),
                HashMap::new(),
            ),
            PgType::TimeMillis => (
                SchemaType::Int32,
                Some("io.debezium.time.Time"),
                HashMap::new(),
            ),
            PgType::TimeMicros => (
                SchemaType::Int64,
                Some("io.debezium.time.MicroTime"),
                HashMap::new(),
            ),
            PgType::TimestampMillis => (
                SchemaType::Int64,
                Some("io.debezium.time.Timestamp"),
                HashMap::new(),
            ),
            PgType::TimestampMicros => (
                SchemaType::Int64,
                Some("io.debezium.time.MicroTimestamp"),
                HashMap::new(),
            ),
            PgType::ZonedTimestamp => (
                SchemaType::String,
                Some("io.debezium.time.ZonedTimestamp"),
                HashMap::new(),
            ),
            PgType::ZonedTime => (
                SchemaType::String,
                Some("io.debezium.time.ZonedTime"),
                HashMap::new(),
            ),
            PgType::Interval => (
                SchemaType::Int64,
                Some("io.debezium.time.MicroDuration"),
                HashMap::new(),
            ),
        };
        logical(kind, name, parameters, optional)
    }

    /// The value of `text`, PostgreSQL's text form of a value of this type; an error says
    /// what did not parse.
    pub fn value(&self, text: &str) -> Result<Value, String> {
        let bad = |what: &str| format!("{text:?} is not a valid {what}");
        Ok(match self {
            PgType::Boolean => match text {
                "t" | "true" => boolean(true),
                "f" | "false" => boolean(false),
                _ => return Err(bad("boolean")),
            },
            PgType::Int16 | PgType::Int32 | PgType::Int64 => {
                int(text.parse::<i64>().map_err(|_| bad("integer"))?)
            }
            PgType::Float32 => kind(value::Kind::Float32(
                parse_float(text).map_err(|_| bad("real"))? as f32,
            )),
            PgType::Float64 => kind(value::Kind::Float64(
                parse_float(text).map_err(|_| bad("double precision"))?,
            )),
            PgType::Decimal { scale, .. } => {
                kind(value::Kind::Bytes(unscaled_bytes(text, *scale)?))
            }
            PgType::VariableDecimal => {
                if text == "NaN" || text.ends_with("Infinity") {
                    return Err(format!("{text} has no decimal value"));
                }
                let scale = text.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
                kind(value::Kind::Struct(StructValue {
                    fields: vec![
                        int(i64::from(scale)),
                        kind(value::Kind::Bytes(unscaled_bytes(text, scale)?)),
                    ],
                    names: Vec::new(),
                }))
            }
            PgType::String | PgType::Named(_) => string(text),
            PgType::Bytes => {
                let hex = text.strip_prefix("\\x").ok_or_else(|| bad("bytea (hex)"))?;
                kind(value::Kind::Bytes(
                    decode_hex(hex).ok_or_else(|| bad("bytea (hex)"))?,
                ))
            }
            PgType::Date => int(i64::from(parse_date(text).ok_or_else(|| bad("date"))?)),
            PgType::TimeMillis => int(parse_time(text).ok_or_else(|| bad("time"))? / 1000),
            PgType::TimeMicros => int(parse_time(text).ok_or_else(|| bad("time"))?),
            PgType::TimestampMillis => int(parse_timestamp(text)
                .ok_or_else(|| bad("timestamp"))?
                .div_euclid(1000)),
            PgType::TimestampMicros => int(parse_timestamp(text).ok_or_else(|| bad("timestamp"))?),
            PgType::ZonedTimestamp => {
                string(&zoned_timestamp(text).ok_or_else(|| bad("timestamptz"))?)
            }
            PgType::ZonedTime => string(&zoned_time(text).ok_or_else(|| bad("timetz"))?),
            PgType::Interval => {
                int(parse_interval(text).ok_or_else(|| bad("interval (ISO 8601)"))?)
            }
        })
    }

    /// The value of a NOT NULL column that an event does not carry (a key-only old row):
    /// the type's zero, as Debezium fills such fields.
    pub fn zero(&self) -> Value {
        match self {
            PgType::Boolean => boolean(false),
            PgType::Float32 => kind(value::Kind::Float32(0.0)),
            PgType::Float64 => kind(value::Kind::Float64(0.0)),
            PgType::Decimal { .. } | PgType::Bytes => kind(value::Kind::Bytes(vec![0])),
            PgType::VariableDecimal => kind(value::Kind::Struct(StructValue {
                fields: vec![int(0), kind(value::Kind::Bytes(vec![0]))],
                names: Vec::new(),
            })),
            PgType::String | PgType::Named(_) | PgType::ZonedTimestamp | PgType::ZonedTime => {
                string("")
            }
            _ => int(0),
        }
    }

    /// The value of a TOASTed column an UPDATE did not send: Debezium's placeholder where
    /// the type can hold it, else null (or zero when the column is NOT NULL).
    pub fn unavailable(&self, optional: bool) -> Value {
        match self {
            PgType::String | PgType::Named(_) => string(UNAVAILABLE),
            PgType::Bytes => kind(value::Kind::Bytes(UNAVAILABLE.as_bytes().to_vec())),
            _ if optional => null(),
            _ => self.zero(),
        }
    }
}

fn parse_float(text: &str) -> Result<f64, std::num::ParseFloatError> {
    match text {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => text.parse(),
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `YYYY-MM-DD` (or `… BC`) as days since 1970-01-01.
fn parse_date(text: &str) -> Option<i32> {
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (text, false),
    };
    let mut parts = text.splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    // 1 BC is year 0 of the proleptic Gregorian calendar.
    days_from_civil(if bc { 1 - year } else { year }, month, day)
}

/// `HH:MM:SS[.ffffff]` as microseconds of the day (24:00:00 included).
fn parse_time(text: &str) -> Option<i64> {
    if text == "24:00:00" {
        return Some(MICROS_PER_DAY);
    }
    let time = NaiveTime::parse_from_str(text, "%H:%M:%S%.f").ok()?;
    Some(
        i64::from(time.num_seconds_from_midnight()) * 1_000_000
            + i64::from(time.nanosecond() / 1000),
    )
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` as microseconds since the epoch.
fn parse_timestamp(text: &str) -> Option<i64> {
    let (date, time) = text.split_once(' ')?;
    let (time, bc) = match time.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (time, false),
    };
    let days = parse_date(&if bc {
        format!("{date} BC")
    } else {
        date.to_string()
    })?;
    Some(i64::from(days) * MICROS_PER_DAY + parse_time(time)?)
}

/// The offset at the end of a `timetz`/`timestamptz` text (`+00`, `-05:30`, `+05:30:15`), in
/// seconds, and the text before it.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    let at = text.rfind(['+', '-'])?;
    let (rest, zone) = text.split_at(at);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let mut seconds = 0;
    for (i, part) in zone[1..].split(':').enumerate() {
        let n: i64 = part.parse().ok()?;
        seconds += n * [3600, 60, 1].get(i)?;
    }
    Some((rest, sign * seconds))
}

/// A `timestamptz` text as Debezium's ZonedTimestamp: ISO 8601 in UTC.
fn zoned_timestamp(text: &str) -> Option<String> {
    let (local, offset) = split_offset(text)?;
    sluice_debezium::zoned_timestamp(parse_timestamp(local)? - offset * 1_000_000)
}

/// A `timetz` text as Debezium's ZonedTime: ISO 8601 time in UTC.
fn zoned_time(text: &str) -> Option<String> {
    let (local, offset) = split_offset(text)?;
    let micros = (parse_time(local)? - offset * 1_000_000).rem_euclid(MICROS_PER_DAY);
    let time = NaiveTime::from_num_seconds_from_midnight_opt(
        (micros / 1_000_000) as u32,
        ((micros % 1_000_000) * 1000) as u32,
    )?;
    Some(format!(
        "{}{}Z",
        time.format("%H:%M:%S"),
        fraction(time.nanosecond())
    ))
}

/// An `interval` in `IntervalStyle=iso_8601` (`P1Y2M3DT4H5M6.5S`, parts may be negative) as
/// Debezium's MicroDuration.
fn parse_interval(text: &str) -> Option<i64> {
    let body = text.strip_prefix('P')?;
    let (date, time) = body.split_once('T').unwrap_or((body, ""));
    let mut micros = 0f64;
    let mut read = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if let Some((_, scale)) = units.iter().find(|(u, _)| *u == c) {
                micros += number.parse::<f64>().ok()? * scale;
                number.clear();
            } else {
                number.push(c);
            }
        }
        number.is_empty().then_some(())
    };
    read(
        date,
        &[
            ('Y', 12.0 * MICROS_PER_MONTH),
            ('M', MICROS_PER_MONTH),
            ('W', 7.0 * MICROS_PER_DAY as f64),
            ('D', MICROS_PER_DAY as f64),
        ],
    )?;
    read(time, &[('H', 3.6e9), ('M', 6e7), ('S', 1e6)])?;
    Some(micros.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_of(v: Value) -> i64 {
        match v.kind {
            Some(value::Kind::Int(i)) => i,
            other => panic!("not an int: {other:?}"),
        }
    }

    fn string_of(v: Value) -> String {
        match v.kind {
            Some(value::Kind::String(s)) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    #[test]
    fn time_types_follow_debezium_adaptive_mode() {
        let ts = PgType::of(1114, -1);
        assert_eq!(ts, PgType::TimestampMicros);
        assert_eq!(
            int_of(ts.value("2024-02-29 12:34:56.789012").unwrap()),
            1_709_210_096_789_012
        );
        assert_eq!(PgType::of(1114, 3), PgType::TimestampMillis);
        assert_eq!(
            int_of(
                PgType::TimestampMillis
                    .value("1969-12-31 23:59:59.999")
                    .unwrap()
            ),
            -1
        );
        assert_eq!(int_of(PgType::Date.value("1970-01-02").unwrap()), 1);
        assert_eq!(
            int_of(PgType::Date.value("0001-01-01 BC").unwrap()),
            -719_528
        );
        assert_eq!(
            int_of(PgType::TimeMicros.value("01:00:00.5").unwrap()),
            3_600_500_000
        );
        assert_eq!(
            string_of(
                PgType::ZonedTimestamp
                    .value("2024-01-01 01:30:00.12+02")
                    .unwrap()
            ),
            "2023-12-31T23:30:00.12Z"
        );
        assert_eq!(
            string_of(
                PgType::ZonedTimestamp
                    .value("2024-01-01 00:00:00+00")
                    .unwrap()
            ),
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(
            string_of(PgType::ZonedTime.value("10:15:30.25-05:30").unwrap()),
            "15:45:30.25Z"
        );
        assert_eq!(
            int_of(PgType::Interval.value("P1DT2H0.5S").unwrap()),
            86_400_000_000 + 7_200_000_000 + 500_000
        );
        assert_eq!(
            int_of(PgType::Interval.value("P-1M").unwrap()),
            -(MICROS_PER_MONTH as i64)
        );
    }

    #[test]
    fn numbers_bytes_and_bad_text() {
        assert_eq!(
            PgType::of(1700, ((10 << 16) | 2) + 4),
            PgType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        let d = PgType::Decimal {
            precision: 10,
            scale: 2,
        };
        assert_eq!(
            d.value("-1.5").unwrap(),
            kind(value::Kind::Bytes(vec![0xff, 0x6a]))
        );
        assert_eq!(
            PgType::VariableDecimal.value("12.345").unwrap(),
            structure(vec![int(3), kind(value::Kind::Bytes(vec![0x30, 0x39]))])
        );
        assert_eq!(
            PgType::Bytes.value("\\x00ff").unwrap(),
            kind(value::Kind::Bytes(vec![0, 255]))
        );
        assert!(PgType::Bytes.value("\\x0").is_err());
        assert!(PgType::Int32.value("x").unwrap_err().contains("integer"));
        assert!(PgType::Date.value("infinity").is_err());
        assert!(PgType::VariableDecimal.value("NaN").is_err());
    }
}
