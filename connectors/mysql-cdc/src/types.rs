//! MySQL/MariaDB column types as Debezium's MySQL connector maps them with its defaults
//! (`decimal.handling.mode=precise`, `time.precision.mode=adaptive_time_microseconds`,
//! `bigint.unsigned.handling.mode=long`, `binary.handling.mode=bytes`), read from
//! `information_schema.COLUMNS`, and their values as the snapshot (binary protocol, session
//! time zone UTC) and the binlog (row events) give them. The two differ for a few types: the
//! binlog carries ENUM as its index, SET as a bit mask, TIMESTAMP as epoch seconds, strings
//! in the column's character set, and integers without their signedness.

use std::collections::HashMap;

use mysql_async::Value as My;
use sluice_connector_jdbc::{days_from_civil, unscaled_bytes};
use sluice_connector_sdk::proto::value::Kind;
use sluice_connector_sdk::proto::{Schema, SchemaType, Value};
use sluice_debezium::{boolean, decimal_schema, int, kind, logical, null, string};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Where a value was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Snapshot,
    Binlog,
}

/// How a column is represented in Debezium's events.
#[derive(Clone, Debug, PartialEq)]
pub enum MyType {
    /// An integer of `bits` bits, in a Connect integer `schema`.
    Int {
        schema: SchemaType,
        bits: u32,
        unsigned: bool,
    },
    Float32,
    Float64,
    Decimal {
        precision: u32,
        scale: i32,
    },
    /// BIT(1).
    Boolean,
    /// BIT(n > 1): `io.debezium.data.Bits`, little-endian bytes.
    Bits(u32),
    /// Text; `latin1` when the column's character set is latin1 (the binlog carries its bytes).
    String {
        latin1: bool,
    },
    /// MySQL's JSON: `io.debezium.data.Json`.
    Json,
    Bytes,
    Enum(Vec<String>),
    Set(Vec<String>),
    Year,
    Date,
    Time,
    /// DATETIME: `io.debezium.time.Timestamp` (fsp ≤ 3) or `MicroTimestamp`.
    DateTime {
        micros: bool,
    },
    /// TIMESTAMP: `io.debezium.time.ZonedTimestamp`.
    Timestamp,
}

/// One row of `information_schema.COLUMNS` as the connector reads it.
pub struct ColumnInfo<'a> {
    pub data_type: &'a str,
    pub column_type: &'a str,
    pub precision: Option<u64>,
    pub scale: Option<u64>,
    pub datetime_precision: Option<u64>,
    pub charset: Option<&'a str>,
}

impl MyType {
    /// The type of a column; `None` for types the connector leaves out (spatial types).
    pub fn of(info: &ColumnInfo) -> Option<MyType> {
        let column_type = info.column_type.to_ascii_lowercase();
        let unsigned = column_type.contains("unsigned");
        let int = |bits: u32, signed: SchemaType, widened: SchemaType| MyType::Int {
            schema: if unsigned { widened } else { signed },
            bits,
            unsigned,
        };
        Some(match info.data_type.to_ascii_lowercase().as_str() {
            "tinyint" => int(8, SchemaType::Int16, SchemaType::Int16),
            "smallint" => int(16, SchemaType::Int16, SchemaType::Int32),
            "mediumint" => int(24, SchemaType::Int32, SchemaType::Int32),
            "int" | "integer" => int(32, SchemaType::Int32, SchemaType::Int64),
            "bigint" => int(64, SchemaType::Int64, SchemaType::Int64),
            "float" => MyType::Float32,
            "double" | "real" => MyType::Float64,
            "decimal" | "numeric" => MyType::Decimal {
                precision: info.precision.unwrap_or(10) as u32,
                scale: info.scale.unwrap_or(0) as i32,
            },
            "bit" => match info.precision.unwrap_or(1) {
                1 => MyType::Boolean,
                n => MyType::Bits(n as u32),
            },
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                MyType::String {
                    latin1: info
                        .charset
                        .is_some_and(|c| c.eq_ignore_ascii_case("latin1")),
                }
            }
            "json" => MyType::Json,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                MyType::Bytes
            }
            "enum" => MyType::Enum(members(&column_type, info.column_type)),
            "set" => MyType::Set(members(&column_type, info.column_type)),
            "year" => MyType::Year,
            "date" => MyType::Date,
            "time" => MyType::Time,
            "datetime" => MyType::DateTime {
                micros: info.datetime_precision.unwrap_or(0) > 3,
            },
            "timestamp" => MyType::Timestamp,
            _ => return None,
        })
    }

    pub fn schema(&self, optional: bool) -> Schema {
        let none = HashMap::new;
        let (kind, name, parameters) = match self {
            MyType::Int { schema, .. } => (*schema, None, none()),
            MyType::Float32 => (SchemaType::Float32, None, none()),
            MyType::Float64 => (SchemaType::Float64, None, none()),
            MyType::Decimal { precision, scale } => {
                return decimal_schema(*precision, *scale, optional)
            }
            MyType::Boolean => (SchemaType::Boolean, None, none()),
            MyType::Bits(n) => (
                SchemaType::Bytes,
                Some("io.debezium.data.Bits"),
                HashMap::from([("length".to_string(), n.to_string())]),
            ),
            MyType::String { .. } => (SchemaType::String, None, none()),
            MyType::Json => (SchemaType::String, Some("io.debezium.data.Json"), none()),
            MyType::Bytes => (SchemaType::Bytes, None, none()),
            MyType::Enum(allowed) => (
                SchemaType::String,
                Some("io.debezium.data.Enum"),
                HashMap::from([("allowed".to_string(), allowed.join(","))]),
            ),
            MyType::Set(allowed) => (
                SchemaType::String,
                Some("io.debezium.data.EnumSet"),
                HashMap::from([("allowed".to_string(), allowed.join(","))]),
            ),
            MyType::Year => (SchemaType::Int32, Some("io.debezium.time.Year"), none()),
            MyType::Date => (SchemaType::Int32, Some("io.debezium.time.Date"), none()),
            MyType::Time => (
                SchemaType::Int64,
                Some("io.debezium.time.MicroTime"),
                none(),
            ),
            MyType::DateTime { micros: false } => (
                SchemaType::Int64,
                Some("io.debezium.time.Timestamp"),
                none(),
            ),
            MyType::DateTime { micros: true } => (
                SchemaType::Int64,
                Some("io.debezium.time.MicroTimestamp"),
                none(),
            ),
            MyType::Timestamp => (
                SchemaType::String,
                Some("io.debezium.time.ZonedTimestamp"),
                none(),
            ),
        };
        logical(kind, name, parameters, optional)
    }

    /// The event value of `value`, read from `origin`; an error says what was wrong with it.
    /// Zero dates (`0000-00-00`) are null when the column allows it and the epoch when not,
    /// as Debezium does.
    pub fn value(&self, value: My, origin: Origin, optional: bool) -> Result<Value, String> {
        if value == My::NULL {
            return Ok(if optional { null() } else { self.zero() });
        }
        let unexpected = |v: &My| format!("an unexpected value {v:?} for a {self:?} column");
        Ok(match self {
            MyType::Int { bits, unsigned, .. } => {
                let n: i64 = match value {
                    My::Int(i) if *unsigned && i < 0 && *bits < 64 => i & ((1i64 << bits) - 1),
                    My::Int(i) => i,
                    // BIGINT UNSIGNED above 2^63 wraps, as bigint.unsigned.handling.mode=long.
                    My::UInt(u) => u as i64,
                    My::Bytes(ref b) => text(b)?
                        .trim()
                        .parse::<i128>()
                        .map(|n| n as i64)
                        .map_err(|_| unexpected(&value))?,
                    ref other => return Err(unexpected(other)),
                };
                int(n)
            }
            MyType::Float32 | MyType::Float64 => {
                let f = match value {
                    My::Float(f) => f64::from(f),
                    My::Double(d) => d,
                    My::Int(i) => i as f64,
                    My::UInt(u) => u as f64,
                    My::Bytes(ref b) => text(b)?.trim().parse().map_err(|_| unexpected(&value))?,
                    ref other => return Err(unexpected(other)),
                };
                if *self == MyType::Float32 {
                    kind(Kind::Float32(f as f32))
                } else {
                    kind(Kind::Float64(f))
                }
            }
            MyType::Decimal { scale, .. } => match value {
                My::Bytes(b) => kind(Kind::Bytes(unscaled_bytes(text(&b)?.trim(), *scale)?)),
                My::Int(i) => kind(Kind::Bytes(unscaled_bytes(&i.to_string(), *scale)?)),
                My::UInt(u) => kind(Kind::Bytes(unscaled_bytes(&u.to_string(), *scale)?)),
                other => return Err(unexpected(&other)),
            },
            MyType::Boolean => match value {
                My::Bytes(b) => boolean(b.iter().any(|&x| x != 0)),
                My::Int(i) => boolean(i != 0),
                My::UInt(u) => boolean(u != 0),
                other => return Err(unexpected(&other)),
            },
            MyType::Bits(n) => match value {
                My::Bytes(mut b) => {
                    // MySQL sends the bits big-endian; Debezium's Bits are little-endian,
                    // ceil(n / 8) bytes.
                    b.reverse();
                    b.resize((*n as usize).div_ceil(8), 0);
                    kind(Kind::Bytes(b))
                }
                My::Int(i) => kind(Kind::Bytes(
                    i.to_le_bytes()[..(*n as usize).div_ceil(8).min(8)].to_vec(),
                )),
                other => return Err(unexpected(&other)),
            },
            MyType::String { latin1 } => match value {
                My::Bytes(b) if *latin1 && origin == Origin::Binlog => {
                    string(&b.iter().map(|&c| c as char).collect::<String>())
                }
                My::Bytes(b) => string(text(&b)?),
                other => string(&other.as_sql(true)),
            },
            MyType::Json => match value {
                My::Bytes(b) => string(text(&b)?),
                other => return Err(unexpected(&other)),
            },
            MyType::Bytes => match value {
                My::Bytes(b) => kind(Kind::Bytes(b)),
                other => return Err(unexpected(&other)),
            },
            MyType::Enum(allowed) => match value {
                // The binlog's ENUM is the member's 1-based index (0: the empty error value).
                My::Int(i) => string(
                    usize::try_from(i - 1)
                        .ok()
                        .and_then(|i| allowed.get(i))
                        .map_or("", String::as_str),
                ),
                My::Bytes(b) => string(text(&b)?),
                other => return Err(unexpected(&other)),
            },
            MyType::Set(allowed) => match value {
                // The binlog's SET is a little-endian bit mask of members.
                My::Bytes(b) if origin == Origin::Binlog => {
                    let chosen: Vec<&str> = allowed
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| {
                            b.get(i / 8).is_some_and(|byte| byte & (1 << (i % 8)) != 0)
                        })
                        .map(|(_, m)| m.as_str())
                        .collect();
                    string(&chosen.join(","))
                }
                My::Bytes(b) => string(text(&b)?),
                My::Int(mask) => {
                    let chosen: Vec<&str> = allowed
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i < 64 && mask & (1 << i) != 0)
                        .map(|(_, m)| m.as_str())
                        .collect();
                    string(&chosen.join(","))
                }
                other => return Err(unexpected(&other)),
            },
            MyType::Year => match value {
                My::Int(y) => int(y),
                My::UInt(y) => int(y as i64),
                My::Bytes(ref b) => int(text(b)?.trim().parse().map_err(|_| unexpected(&value))?),
                My::Date(y, ..) => int(i64::from(y)),
                ref other => return Err(unexpected(other)),
            },
            MyType::Date => match value {
                My::Date(0, ..) | My::Date(_, 0, ..) | My::Date(_, _, 0, ..) => {
                    if optional {
                        null()
                    } else {
                        int(0)
                    }
                }
                My::Date(y, m, d, ..) => int(i64::from(
                    days_from_civil(i32::from(y), u32::from(m), u32::from(d))
                        .ok_or_else(|| unexpected(&value))?,
                )),
                ref other => return Err(unexpected(other)),
            },
            MyType::Time => match value {
                My::Time(negative, days, h, m, s, us) => {
                    let micros = i64::from(days) * MICROS_PER_DAY
                        + (i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s)) * 1_000_000
                        + i64::from(us);
                    int(if negative { -micros } else { micros })
                }
                ref other => return Err(unexpected(other)),
            },
            MyType::DateTime { micros } => match civil_micros(&value) {
                Some(None) if optional => null(),
                Some(None) => int(0),
                Some(Some(at)) => int(if *micros { at } else { at.div_euclid(1000) }),
                None => return Err(unexpected(&value)),
            },
            MyType::Timestamp => {
                let at = match value {
                    // The binlog's TIMESTAMP2: epoch seconds, with microseconds after a point.
                    My::Bytes(ref b) => {
                        let t = text(b)?;
                        let (seconds, fraction) = t.split_once('.').unwrap_or((t, "0"));
                        let seconds: i64 = seconds.parse().map_err(|_| unexpected(&value))?;
                        let fraction = format!("{fraction:0<6}");
                        let micros: i64 = fraction[..6].parse().map_err(|_| unexpected(&value))?;
                        Some(seconds * 1_000_000 + micros)
                    }
                    My::Int(seconds) => Some(seconds * 1_000_000),
                    // The snapshot's, in the session's time zone (UTC).
                    ref v => civil_micros(v).ok_or_else(|| unexpected(v))?,
                };
                match at {
                    None if optional => null(),
                    None => string("1970-01-01T00:00:00Z"),
                    Some(at) => string(
                        &sluice_debezium::zoned_timestamp(at).ok_or_else(|| unexpected(&value))?,
                    ),
                }
            }
        })
    }

    /// The value a NOT NULL column gets when the row has none (a zero date).
    pub fn zero(&self) -> Value {
        match self {
            MyType::Boolean => boolean(false),
            MyType::Float32 => kind(Kind::Float32(0.0)),
            MyType::Float64 => kind(Kind::Float64(0.0)),
            MyType::Decimal { .. } | MyType::Bits(_) | MyType::Bytes => {
                kind(Kind::Bytes(Vec::new()))
            }
            MyType::String { .. } | MyType::Json | MyType::Enum(_) | MyType::Set(_) => string(""),
            MyType::Timestamp => string("1970-01-01T00:00:00Z"),
            _ => int(0),
        }
    }
}

/// A DATE/DATETIME value as microseconds since the epoch; `Some(None)` for a zero date.
fn civil_micros(value: &My) -> Option<Option<i64>> {
    match *value {
        My::Date(0, 0, 0, ..) => Some(None),
        My::Date(y, m, d, h, mi, s, us) => {
            let days = days_from_civil(i32::from(y), u32::from(m), u32::from(d))?;
            Some(Some(
                i64::from(days) * MICROS_PER_DAY
                    + (i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s)) * 1_000_000
                    + i64::from(us),
            ))
        }
        _ => None,
    }
}

fn text(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|_| "a value that is not UTF-8 text".to_string())
}

/// The members of an `enum('a','b')` or `set(…)` column type, unquoted.
fn members(lower: &str, original: &str) -> Vec<String> {
    let Some(open) = lower.find('(') else {
        return Vec::new();
    };
    let body = &original[open + 1..original.rfind(')').unwrap_or(original.len())];
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if quoted && chars.peek() == Some(&'\'') => {
                current.push('\'');
                chars.next();
            }
            '\'' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    current.push(n);
                }
            }
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            c if quoted => current.push(c),
            _ => {}
        }
    }
    out.push(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(data_type: &'a str, column_type: &'a str) -> ColumnInfo<'a> {
        ColumnInfo {
            data_type,
            column_type,
            precision: None,
            scale: None,
            datetime_precision: None,
            charset: None,
        }
    }

    fn of(data_type: &str, column_type: &str) -> MyType {
        MyType::of(&info(data_type, column_type)).unwrap()
    }

    fn int_of(v: Value) -> i64 {
        match v.kind {
            Some(Kind::Int(i)) => i,
            other => panic!("not an int: {other:?}"),
        }
    }

    fn string_of(v: Value) -> String {
        match v.kind {
            Some(Kind::String(s)) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    #[test]
    fn enum_and_set_members_unquote() {
        assert_eq!(
            members("enum('a','b''c','d,e')", "enum('a','b''c','d,e')"),
            ["a", "b'c", "d,e"]
        );
        let set = of("set", "set('x','y','z')");
        assert_eq!(
            string_of(
                set.value(My::Bytes(vec![0b101]), Origin::Binlog, true)
                    .unwrap()
            ),
            "x,z"
        );
        assert_eq!(
            string_of(
                set.value(My::Bytes(b"x,z".to_vec()), Origin::Snapshot, true)
                    .unwrap()
            ),
            "x,z"
        );
        let e = of("enum", "enum('small','large')");
        assert_eq!(
            string_of(e.value(My::Int(2), Origin::Binlog, true).unwrap()),
            "large"
        );
    }

    #[test]
    fn unsigned_integers_from_the_binlog_regain_their_sign() {
        let t = of("tinyint", "tinyint(3) unsigned");
        assert_eq!(t.schema(true).r#type, SchemaType::Int16 as i32);
        assert_eq!(
            int_of(t.value(My::Int(-56), Origin::Binlog, true).unwrap()),
            200
        );
        let i = of("int", "int(10) unsigned");
        assert_eq!(i.schema(true).r#type, SchemaType::Int64 as i32);
        assert_eq!(
            int_of(i.value(My::Int(-1), Origin::Binlog, true).unwrap()),
            4_294_967_295
        );
        let signed = of("int", "int(11)");
        assert_eq!(
            int_of(signed.value(My::Int(-1), Origin::Binlog, true).unwrap()),
            -1
        );
    }

    #[test]
    fn time_types_follow_debeziums_defaults() {
        let ts = of("timestamp", "timestamp(3)");
        assert_eq!(
            string_of(
                ts.value(
                    My::Bytes(b"1709207101.500000".to_vec()),
                    Origin::Binlog,
                    true
                )
                .unwrap()
            ),
            "2024-02-29T11:45:01.5Z"
        );
        assert_eq!(
            string_of(
                ts.value(
                    My::Date(2024, 2, 29, 11, 45, 1, 500_000),
                    Origin::Snapshot,
                    true
                )
                .unwrap()
            ),
            "2024-02-29T11:45:01.5Z"
        );
        let dt = MyType::of(&ColumnInfo {
            datetime_precision: Some(6),
            ..info("datetime", "datetime(6)")
        })
        .unwrap();
        assert_eq!(dt, MyType::DateTime { micros: true });
        assert_eq!(
            int_of(
                dt.value(
                    My::Date(1969, 12, 31, 23, 59, 59, 999_999),
                    Origin::Binlog,
                    true
                )
                .unwrap()
            ),
            -1
        );
        let millis = of("datetime", "datetime");
        assert_eq!(
            int_of(
                millis
                    .value(My::Date(1970, 1, 1, 0, 0, 1, 0), Origin::Binlog, true)
                    .unwrap()
            ),
            1000
        );
        let date = of("date", "date");
        assert!(matches!(
            date.value(My::Date(0, 0, 0, 0, 0, 0, 0), Origin::Binlog, true)
                .unwrap()
                .kind,
            Some(Kind::Null(_))
        ));
        let time = of("time", "time(6)");
        assert_eq!(
            int_of(
                time.value(My::Time(true, 1, 2, 0, 0, 5), Origin::Binlog, true)
                    .unwrap()
            ),
            -(26 * 3_600_000_000 + 5)
        );
    }

    #[test]
    fn bits_are_little_endian_as_debezium() {
        let bits = MyType::of(&ColumnInfo {
            precision: Some(12),
            ..info("bit", "bit(12)")
        })
        .unwrap();
        assert_eq!(bits, MyType::Bits(12));
        let value = bits
            .value(My::Bytes(vec![0x0a, 0xbc]), Origin::Binlog, true)
            .unwrap();
        assert_eq!(value.kind, Some(Kind::Bytes(vec![0xbc, 0x0a])));
        assert!(MyType::of(&info("geometry", "geometry")).is_none());
    }
}
