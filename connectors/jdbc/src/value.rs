//! Values between a database and Kafka Connect's data model: [`Cell`], one column's value in a
//! form both databases read and write, and [`Kind`], how a column maps to a Connect schema
//! (Confluent's JDBC mapping: `GenericDatabaseDialect.addFieldToSchema`).

use std::collections::HashMap;

use sluice_connector_sdk::proto::{value, Schema, SchemaType, Value};

pub const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";
pub const DATE: &str = "org.apache.kafka.connect.data.Date";
pub const TIME: &str = "org.apache.kafka.connect.data.Time";
pub const TIMESTAMP: &str = "org.apache.kafka.connect.data.Timestamp";
/// Confluent adds the column's precision to a Decimal schema under this parameter.
pub const DECIMAL_PRECISION: &str = "connect.decimal.precision";
/// The scale Confluent gives a NUMERIC column declared without one (`NUMERIC_TYPE_SCALE_HIGH`).
pub const UNSET_SCALE: i32 = 127;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// One column value as read from or written to a database.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    /// BIGINT UNSIGNED values above `i64::MAX`.
    UInt(u64),
    Float32(f32),
    Float64(f64),
    /// A decimal number as text: an optional `-`, digits, an optional `.` and digits.
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since 1970-01-01T00:00:00 UTC.
    Timestamp(i64),
}

/// How a column is represented in Connect.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Boolean,
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// Decimal logical type with this scale (and precision, when the database knows it).
    Decimal {
        scale: i32,
        precision: Option<u32>,
    },
    String,
    Bytes,
    Date,
    Time,
    Timestamp,
}

impl Kind {
    pub fn schema(&self, optional: bool) -> Schema {
        let (kind, name, mut parameters) = match self {
            Kind::Boolean => (SchemaType::Boolean, None, HashMap::new()),
            Kind::Int8 => (SchemaType::Int8, None, HashMap::new()),
            Kind::Int16 => (SchemaType::Int16, None, HashMap::new()),
            Kind::Int32 => (SchemaType::Int32, None, HashMap::new()),
            Kind::Int64 => (SchemaType::Int64, None, HashMap::new()),
            Kind::Float32 => (SchemaType::Float32, None, HashMap::new()),
            Kind::Float64 => (SchemaType::Float64, None, HashMap::new()),
            Kind::Decimal { scale, .. } => (
                SchemaType::Bytes,
                Some(DECIMAL),
                HashMap::from([("scale".to_string(), scale.to_string())]),
            ),
            Kind::String => (SchemaType::String, None, HashMap::new()),
            Kind::Bytes => (SchemaType::Bytes, None, HashMap::new()),
            Kind::Date => (SchemaType::Int32, Some(DATE), HashMap::new()),
            Kind::Time => (SchemaType::Int32, Some(TIME), HashMap::new()),
            Kind::Timestamp => (SchemaType::Int64, Some(TIMESTAMP), HashMap::new()),
        };
        if let Kind::Decimal {
            precision: Some(p), ..
        } = self
        {
            parameters.insert(DECIMAL_PRECISION.to_string(), p.to_string());
        }
        Schema {
            r#type: kind as i32,
            optional,
            name: name.map(str::to_string),
            version: name.map(|_| 1),
            parameters,
            ..Schema::default()
        }
    }

    /// Confluent's `numeric.mapping` for a NUMERIC column of `precision` and `scale`
    /// (`None`: declared without them).
    pub fn numeric(mapping: NumericMapping, precision: Option<u32>, scale: Option<i32>) -> Kind {
        if let (Some(p), Some(s)) = (precision, scale) {
            let int_of = |p: u32| match p {
                p if p > 9 => Kind::Int64,
                p if p > 4 => Kind::Int32,
                p if p > 2 => Kind::Int16,
                _ => Kind::Int8,
            };
            match mapping {
                NumericMapping::PrecisionOnly if s == 0 && p <= 18 => return int_of(p),
                NumericMapping::BestFit if p <= 18 && s <= 0 => return int_of(p),
                NumericMapping::BestFit if p <= 18 && s > 0 => return Kind::Float64,
                _ => {}
            }
        }
        Kind::Decimal {
            scale: scale.unwrap_or(UNSET_SCALE),
            precision,
        }
    }

    /// The Connect value of `cell` for a column of this kind; an error names what did not fit.
    pub fn value(&self, cell: &Cell) -> Result<Value, String> {
        let kind = match (self, cell) {
            (_, Cell::Null) => value::Kind::Null(true),
            (Kind::Boolean, Cell::Bool(b)) => value::Kind::Boolean(*b),
            (Kind::Boolean, Cell::Int(i)) => value::Kind::Boolean(*i != 0),
            (Kind::Int8 | Kind::Int16 | Kind::Int32 | Kind::Int64, Cell::Bool(b)) => {
                value::Kind::Int(i64::from(*b))
            }
            (Kind::Int8 | Kind::Int16 | Kind::Int32 | Kind::Int64, Cell::Int(i)) => {
                self.check_range(*i)?;
                value::Kind::Int(*i)
            }
            (Kind::Int8 | Kind::Int16 | Kind::Int32 | Kind::Int64, Cell::Decimal(text)) => {
                let i = integer_of(text)?;
                self.check_range(i)?;
                value::Kind::Int(i)
            }
            (Kind::Float32, Cell::Float32(f)) => value::Kind::Float32(*f),
            (Kind::Float64, Cell::Float64(f)) => value::Kind::Float64(*f),
            (Kind::Float64, Cell::Float32(f)) => value::Kind::Float64(f64::from(*f)),
            (Kind::Float64, Cell::Decimal(text)) => value::Kind::Float64(
                text.parse()
                    .map_err(|_| format!("{text:?} is not a number"))?,
            ),
            (Kind::Decimal { scale, .. }, Cell::Decimal(text)) => {
                value::Kind::Bytes(unscaled_bytes(text, *scale)?)
            }
            (Kind::Decimal { scale, .. }, Cell::Int(i)) => {
                value::Kind::Bytes(unscaled_bytes(&i.to_string(), *scale)?)
            }
            (Kind::Decimal { scale, .. }, Cell::UInt(u)) => {
                value::Kind::Bytes(unscaled_bytes(&u.to_string(), *scale)?)
            }
            (Kind::String, Cell::Text(s)) => value::Kind::String(s.clone()),
            (Kind::String, Cell::Bytes(b)) => value::Kind::String(
                String::from_utf8(b.clone()).map_err(|_| "text is not valid UTF-8".to_string())?,
            ),
            (Kind::String, Cell::Decimal(s)) => value::Kind::String(s.clone()),
            (Kind::Bytes, Cell::Bytes(b)) => value::Kind::Bytes(b.clone()),
            (Kind::Bytes, Cell::Text(s)) => value::Kind::Bytes(s.clone().into_bytes()),
            (Kind::Date, Cell::Date(d)) => value::Kind::Int(i64::from(*d)),
            (Kind::Date, Cell::Timestamp(us)) => value::Kind::Int(us.div_euclid(MICROS_PER_DAY)),
            (Kind::Time, Cell::Time(us)) => value::Kind::Int(us.div_euclid(1000)),
            (Kind::Timestamp, Cell::Timestamp(us)) => value::Kind::Int(us.div_euclid(1000)),
            (Kind::Timestamp, Cell::Date(d)) => value::Kind::Int(i64::from(*d) * 86_400_000),
            (kind, cell) => return Err(format!("a {cell:?} does not fit a {kind:?} column")),
        };
        Ok(Value { kind: Some(kind) })
    }

    fn check_range(&self, i: i64) -> Result<(), String> {
        let (lo, hi) = match self {
            Kind::Int8 => (i64::from(i8::MIN), i64::from(i8::MAX)),
            Kind::Int16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
            Kind::Int32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
            _ => (i64::MIN, i64::MAX),
        };
        if i < lo || i > hi {
            return Err(format!("{i} is out of range for {self:?}"));
        }
        Ok(())
    }
}

/// `numeric.mapping`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumericMapping {
    None,
    PrecisionOnly,
    BestFit,
}

impl NumericMapping {
    pub fn parse(text: &str) -> Option<NumericMapping> {
        match text.trim() {
            "" | "none" => Some(NumericMapping::None),
            "precision_only" => Some(NumericMapping::PrecisionOnly),
            "best_fit" => Some(NumericMapping::BestFit),
            _ => None,
        }
    }
}

/// The integer a decimal text stands for, if it has no fractional part.
fn integer_of(text: &str) -> Result<i64, String> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.bytes().any(|b| b != b'0') {
        return Err(format!("{text} is not an integer"));
    }
    whole
        .parse()
        .map_err(|_| format!("{text} is out of range for a 64-bit integer"))
}

/// Splits a decimal text into (negative, digits without the point, digits after the point).
fn parse_decimal(text: &str) -> Result<(bool, String, usize), String> {
    let bad = || format!("{text:?} is not a decimal number");
    let (negative, body) = match text.trim().strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.trim().strip_prefix('+').unwrap_or(text.trim())),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    Ok((negative, format!("{whole}{frac}"), frac.len()))
}

/// The unscaled value of `text` at `scale`, as Java's `BigInteger.toByteArray` (two's
/// complement, big-endian, shortest): Kafka Connect's Decimal bytes. Digits beyond `scale`
/// that are not zero are an error, never silently dropped.
pub fn unscaled_bytes(text: &str, scale: i32) -> Result<Vec<u8>, String> {
    let (negative, mut digits, frac) = parse_decimal(text)?;
    let scale = usize::try_from(scale).map_err(|_| format!("negative scale {scale}"))?;
    if frac > scale {
        let cut = digits.len() - (frac - scale);
        if digits[cut..].bytes().any(|b| b != b'0') {
            return Err(format!(
                "{text} has more than {scale} digits after the point"
            ));
        }
        digits.truncate(cut);
    } else {
        digits.extend(std::iter::repeat_n('0', scale - frac));
    }
    // Base-256 magnitude, little-endian while building.
    let mut magnitude: Vec<u8> = Vec::new();
    for d in digits.bytes() {
        let mut carry = u32::from(d - b'0');
        for byte in magnitude.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            magnitude.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    if magnitude.iter().all(|&b| b == 0) {
        return Ok(vec![0]);
    }
    if negative {
        // Two's complement: invert and add one.
        let mut carry = 1u16;
        for byte in magnitude.iter_mut() {
            let v = u16::from(!*byte) + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        if magnitude.last().is_some_and(|&b| b & 0x80 == 0) {
            magnitude.push(0xff);
        }
        while magnitude.len() > 1
            && magnitude[magnitude.len() - 1] == 0xff
            && magnitude[magnitude.len() - 2] & 0x80 != 0
        {
            magnitude.pop();
        }
    } else if magnitude.last().is_some_and(|&b| b & 0x80 != 0) {
        magnitude.push(0);
    }
    magnitude.reverse();
    Ok(magnitude)
}

/// The decimal text of Kafka Connect Decimal bytes at `scale` (the inverse of
/// [`unscaled_bytes`]).
pub fn decimal_text(unscaled: &[u8], scale: i32) -> String {
    let negative = unscaled.first().is_some_and(|&b| b & 0x80 != 0);
    let mut magnitude: Vec<u8> = if negative {
        // Negate: invert and add one, big-endian.
        let mut out: Vec<u8> = unscaled.iter().map(|b| !b).collect();
        for byte in out.iter_mut().rev() {
            let (v, overflow) = byte.overflowing_add(1);
            *byte = v;
            if !overflow {
                break;
            }
        }
        out
    } else {
        unscaled.to_vec()
    };
    // Repeated division by 10 of the big-endian magnitude.
    let mut digits = Vec::new();
    while magnitude.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for byte in magnitude.iter_mut() {
            let v = (rem << 8) | u32::from(*byte);
            *byte = (v / 10) as u8;
            rem = v % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    let scale = scale.max(0) as usize;
    while digits.len() <= scale {
        digits.push(b'0');
    }
    digits.reverse();
    let mut text = String::from_utf8(digits).unwrap_or_default();
    if scale > 0 {
        text.insert(text.len() - scale, '.');
    }
    if negative {
        text.insert(0, '-');
    }
    text
}

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(year: i32, month: u32, day: u32) -> Option<i32> {
    let date = chrono::NaiveDate::from_ymd_opt(year, month, day)?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from(date.signed_duration_since(epoch).num_days()).ok()
}

/// The civil date and time of microseconds since the epoch.
pub fn civil_from_micros(micros: i64) -> Option<chrono::NaiveDateTime> {
    chrono::DateTime::from_timestamp_micros(micros).map(|t| t.naive_utc())
}

/// The Connect (schema, value) of a record field read back as a [`Cell`] for writing.
pub fn cell_of(schema: &Schema, value: Option<&Value>) -> Result<Cell, String> {
    let Some(kind) = value.and_then(|v| v.kind.as_ref()) else {
        return Ok(Cell::Null);
    };
    let name = schema.name.as_deref().unwrap_or("");
    Ok(match (name, kind) {
        (_, value::Kind::Null(_)) => Cell::Null,
        (DECIMAL, value::Kind::Bytes(b)) => {
            let scale = schema
                .parameters
                .get("scale")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| "a Decimal schema without a scale".to_string())?;
            Cell::Decimal(decimal_text(b, scale))
        }
        (DATE, value::Kind::Int(d)) => {
            Cell::Date(i32::try_from(*d).map_err(|_| format!("date {d} is out of range"))?)
        }
        (TIME, value::Kind::Int(ms)) => Cell::Time(ms * 1000),
        (TIMESTAMP, value::Kind::Int(ms)) => Cell::Timestamp(
            ms.checked_mul(1000)
                .ok_or_else(|| format!("timestamp {ms} is out of range"))?,
        ),
        (_, value::Kind::Boolean(b)) => Cell::Bool(*b),
        (_, value::Kind::Int(i)) => Cell::Int(*i),
        (_, value::Kind::Float32(f)) => Cell::Float32(*f),
        (_, value::Kind::Float64(f)) => Cell::Float64(*f),
        (_, value::Kind::String(s)) => Cell::Text(s.clone()),
        (_, value::Kind::Bytes(b)) => Cell::Bytes(b.clone()),
        (_, value::Kind::Array(_) | value::Kind::Map(_) | value::Kind::Struct(_)) => {
            return Err(format!(
                "a {} value cannot be written to a column",
                SchemaType::try_from(schema.r#type)
                    .map(|t| t.as_str_name())
                    .unwrap_or("nested")
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_bytes_match_java_big_integer() {
        // BigInteger.valueOf(n).toByteArray()
        for (text, scale, bytes) in [
            ("0", 0, vec![0x00]),
            ("1", 0, vec![0x01]),
            ("127", 0, vec![0x7f]),
            ("128", 0, vec![0x00, 0x80]),
            ("-1", 0, vec![0xff]),
            ("-128", 0, vec![0x80]),
            ("-129", 0, vec![0xff, 0x7f]),
            ("1.5", 2, vec![0x00, 0x96]),
            ("-12.34", 2, vec![0xfb, 0x2e]),
            ("65536", 0, vec![0x01, 0x00, 0x00]),
        ] {
            assert_eq!(unscaled_bytes(text, scale).unwrap(), bytes, "{text}");
            let back = decimal_text(&bytes, scale);
            let expected = if scale == 2 && !text.contains('.') {
                format!("{text}.00")
            } else if text == "1.5" {
                "1.50".to_string()
            } else {
                text.to_string()
            };
            assert_eq!(back, expected);
        }
        assert!(unscaled_bytes("1.234", 2).is_err());
        assert_eq!(unscaled_bytes("1.230", 2).unwrap(), vec![0x7b]);
        let big = "123456789012345678901234567890.123456789";
        assert_eq!(decimal_text(&unscaled_bytes(big, 9).unwrap(), 9), big);
        assert_eq!(
            decimal_text(&unscaled_bytes("-0.5", 3).unwrap(), 3),
            "-0.500"
        );
    }

    #[test]
    fn numeric_mapping_follows_confluent() {
        use NumericMapping as M;
        assert_eq!(
            Kind::numeric(M::PrecisionOnly, Some(5), Some(0)),
            Kind::Int32
        );
        assert_eq!(
            Kind::numeric(M::PrecisionOnly, Some(19), Some(0)),
            Kind::Decimal {
                scale: 0,
                precision: Some(19)
            }
        );
        assert_eq!(Kind::numeric(M::BestFit, Some(10), Some(2)), Kind::Float64);
        assert_eq!(Kind::numeric(M::BestFit, Some(2), Some(0)), Kind::Int8);
        assert_eq!(
            Kind::numeric(M::None, Some(10), Some(2)),
            Kind::Decimal {
                scale: 2,
                precision: Some(10)
            }
        );
        assert_eq!(
            Kind::numeric(M::BestFit, None, None),
            Kind::Decimal {
                scale: 127,
                precision: None
            }
        );
    }
}
