//! Where in the bucket a record goes: Confluent's storage partitioners (`partitioner.class`)
//! and timestamp extractors (`timestamp.extractor`), with their keys.
//!
//! - `DefaultPartitioner`: `partition=<Kafka partition>`.
//! - `FieldPartitioner`: `<field>=<value>` per name in `partition.field.name`, joined by the
//!   directory delimiter; the fields are read from a struct or map value.
//! - `TimeBasedPartitioner`: the record's timestamp (`timestamp.extractor`), floored to
//!   `partition.duration.ms` in `timezone`, printed with `path.format` (a Joda-Time pattern, as
//!   Confluent's: `'year'=YYYY/'month'=MM/'day'=dd/'hour'=HH`); `DailyPartitioner` and
//!   `HourlyPartitioner` are it with a day's or an hour's duration and format.

use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDateTime, Offset as _, TimeZone as _, Timelike,
};
use sluice_connector_sdk::proto::{data, value, Schema, Value};
use sluice_connector_sdk::{Config, DataRef, SinkRecordRef};

pub const PARTITIONER: &str = "partitioner.class";
pub const FIELD_NAME: &str = "partition.field.name";
pub const PATH_FORMAT: &str = "path.format";
pub const DURATION: &str = "partition.duration.ms";
pub const TIMEZONE: &str = "timezone";
pub const EXTRACTOR: &str = "timestamp.extractor";
pub const TIMESTAMP_FIELD: &str = "timestamp.field";

const PACKAGE: &str = "io.confluent.connect.storage.partitioner.";
pub const DEFAULT: &str = "io.confluent.connect.storage.partitioner.DefaultPartitioner";

/// Where a record's timestamp comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Extractor {
    /// The time the sink writes the record (not repeatable: a retry may place it elsewhere).
    Wallclock,
    /// The Kafka record's timestamp.
    Record,
    /// A field of the value: epoch milliseconds, or an ISO-8601 / RFC 3339 string.
    RecordField(String),
}

impl Extractor {
    pub fn from_config(config: &Config) -> Result<Extractor, (String, String)> {
        let name = config.get_or(EXTRACTOR, "Wallclock").trim();
        let simple = name.rsplit('.').next().unwrap_or(name);
        let simple = simple.strip_suffix("TimestampExtractor").unwrap_or(simple);
        match simple {
            "Wallclock" => Ok(Extractor::Wallclock),
            "Record" => Ok(Extractor::Record),
            "RecordField" => match config.get(TIMESTAMP_FIELD).map(str::trim) {
                Some(field) if !field.is_empty() => Ok(Extractor::RecordField(field.to_string())),
                _ => Err((
                    TIMESTAMP_FIELD.into(),
                    "timestamp.extractor RecordField needs the field to read".into(),
                )),
            },
            _ => Err((
                EXTRACTOR.into(),
                format!("{name:?} is not Wallclock, Record or RecordField"),
            )),
        }
    }

    /// The record's timestamp in epoch milliseconds.
    pub fn timestamp(&self, record: &SinkRecordRef<'_>, now_ms: i64) -> Result<i64, String> {
        match self {
            Extractor::Wallclock => Ok(now_ms),
            Extractor::Record => record.timestamp_ms.ok_or_else(|| {
                "the record has no timestamp (timestamp.extractor is Record)".to_string()
            }),
            Extractor::RecordField(path) => {
                let field = field_of(&record.value, path)
                    .ok_or_else(|| format!("the value has no field {path:?} (timestamp.field)"))?;
                match field.kind.as_ref() {
                    Some(value::Kind::Int(ms)) => Ok(*ms),
                    Some(value::Kind::String(s)) => DateTime::parse_from_rfc3339(s.trim())
                        .map(|t| t.timestamp_millis())
                        .map_err(|e| {
                            format!("field {path:?} = {s:?} is not an ISO-8601 timestamp: {e}")
                        }),
                    _ => Err(format!(
                        "field {path:?} is neither epoch milliseconds nor an ISO-8601 string"
                    )),
                }
            }
        }
    }
}

/// The partitioner a connector config names.
#[derive(Debug, Clone)]
pub enum Partitioner {
    Default,
    Field(Vec<String>),
    Time(TimeBased),
}

#[derive(Debug, Clone)]
pub struct TimeBased {
    format: Vec<Token>,
    duration_ms: i64,
    zone: Zone,
}

/// A timezone: a fixed offset, or a named zone of the tz database (its offset by the date).
#[derive(Debug, Clone)]
enum Zone {
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

impl Zone {
    /// Milliseconds the zone's clocks are ahead of UTC at `timestamp_ms`.
    fn offset_ms(&self, timestamp_ms: i64) -> i64 {
        let seconds = match self {
            Zone::Fixed(offset) => offset.local_minus_utc(),
            Zone::Named(tz) => DateTime::from_timestamp_millis(timestamp_ms).map_or(0, |utc| {
                tz.offset_from_utc_datetime(&utc.naive_utc())
                    .fix()
                    .local_minus_utc()
            }),
        };
        i64::from(seconds) * 1000
    }
}

impl Partitioner {
    pub fn from_config(config: &Config) -> Result<Partitioner, (String, String)> {
        let class = config.get_or(PARTITIONER, DEFAULT).trim();
        let simple = class.strip_prefix(PACKAGE).unwrap_or(class);
        let (duration, format) = match simple {
            "DefaultPartitioner" => return Ok(Partitioner::Default),
            "FieldPartitioner" => {
                let fields: Vec<String> = config
                    .get_or(FIELD_NAME, "")
                    .split(',')
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .map(String::from)
                    .collect();
                if fields.is_empty() {
                    return Err((
                        FIELD_NAME.into(),
                        "FieldPartitioner needs the fields to partition by".into(),
                    ));
                }
                return Ok(Partitioner::Field(fields));
            }
            "DailyPartitioner" => (Some(86_400_000), Some("'year'=YYYY/'month'=MM/'day'=dd")),
            "HourlyPartitioner" => (
                Some(3_600_000),
                Some("'year'=YYYY/'month'=MM/'day'=dd/'hour'=HH"),
            ),
            "TimeBasedPartitioner" => (None, None),
            _ => {
                return Err((
                    PARTITIONER.into(),
                    format!(
                        "{class:?} is not one of DefaultPartitioner, FieldPartitioner, \
                         TimeBasedPartitioner, DailyPartitioner, HourlyPartitioner (in {PACKAGE})"
                    ),
                ))
            }
        };
        let duration_ms = match duration {
            Some(d) => d,
            None => match config.get(DURATION).map(str::trim) {
                Some(d) => d.parse::<i64>().ok().filter(|d| *d > 0).ok_or_else(|| {
                    (
                        DURATION.to_string(),
                        format!("{d:?} is not a positive number of milliseconds"),
                    )
                })?,
                None => {
                    return Err((
                        DURATION.into(),
                        "TimeBasedPartitioner needs the length of a partition".into(),
                    ))
                }
            },
        };
        let pattern = match format {
            Some(f) => f.to_string(),
            None => match config.get(PATH_FORMAT).map(str::trim) {
                Some(f) if !f.is_empty() => f.to_string(),
                _ => {
                    return Err((
                        PATH_FORMAT.into(),
                        "TimeBasedPartitioner needs a path format, e.g. 'year'=YYYY/'month'=MM/'day'=dd".into(),
                    ))
                }
            },
        };
        let format = parse_format(&pattern).map_err(|e| (PATH_FORMAT.to_string(), e))?;
        let zone =
            match config.get(TIMEZONE).map(str::trim) {
                Some(z) if !z.is_empty() => parse_zone(z).map_err(|e| (TIMEZONE.to_string(), e))?,
                _ => return Err((
                    TIMEZONE.into(),
                    "a time-based partitioner needs a timezone (UTC, a zone such as Europe/Paris, or an offset such as +02:00)"
                        .into(),
                )),
            };
        Ok(Partitioner::Time(TimeBased {
            format,
            duration_ms,
            zone,
        }))
    }

    /// Whether the partition depends on the record's timestamp.
    pub fn time_based(&self) -> bool {
        matches!(self, Partitioner::Time(_))
    }

    /// The encoded partition (the path between the topic and the file name).
    pub fn encode(
        &self,
        record: &SinkRecordRef<'_>,
        timestamp_ms: i64,
        delim: &str,
    ) -> Result<String, String> {
        match self {
            Partitioner::Default => Ok(format!("partition={}", record.partition)),
            Partitioner::Field(fields) => {
                let mut parts = Vec::with_capacity(fields.len());
                for name in fields {
                    let v = field_of(&record.value, name).ok_or_else(|| {
                        format!("the value has no field {name:?} (partition.field.name)")
                    })?;
                    let text = match v.kind.as_ref() {
                        Some(value::Kind::String(s)) => s.clone(),
                        Some(value::Kind::Int(i)) => i.to_string(),
                        Some(value::Kind::Boolean(b)) => b.to_string(),
                        _ => {
                            return Err(format!(
                                "field {name:?} is not a string, an integer or a boolean (partition.field.name)"
                            ))
                        }
                    };
                    parts.push(format!("{name}={text}"));
                }
                Ok(parts.join(delim))
            }
            Partitioner::Time(t) => t.encode(timestamp_ms),
        }
    }
}

impl TimeBased {
    fn encode(&self, timestamp_ms: i64) -> Result<String, String> {
        let offset_ms = self.zone.offset_ms(timestamp_ms);
        let local = timestamp_ms.saturating_add(offset_ms);
        let floored = local.div_euclid(self.duration_ms) * self.duration_ms;
        let time = DateTime::from_timestamp_millis(floored)
            .ok_or_else(|| format!("timestamp {timestamp_ms} is out of range"))?
            .naive_utc();
        Ok(render(&self.format, &time))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(String),
    /// A Joda-Time field letter and how many times it was repeated.
    Field(char, usize),
}

/// Reads a Joda-Time pattern: letters are fields, text in single quotes is literal (`''` is a
/// quote), anything else is literal too.
fn parse_format(pattern: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    let mut literal = String::new();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                chars.next();
                literal.push('\'');
                continue;
            }
            loop {
                match chars.next() {
                    None => return Err(format!("{pattern:?} has an unclosed quote")),
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        literal.push('\'');
                    }
                    Some('\'') => break,
                    Some(c) => literal.push(c),
                }
            }
        } else if c.is_ascii_alphabetic() {
            if !"YyMdHms".contains(c) {
                return Err(format!(
                    "{pattern:?}: the field letter {c:?} is not supported (Y/y year, M month, d day, H hour, m minute, s second; quote literal text)"
                ));
            }
            let mut n = 1;
            while chars.peek() == Some(&c) {
                chars.next();
                n += 1;
            }
            if !literal.is_empty() {
                out.push(Token::Literal(std::mem::take(&mut literal)));
            }
            out.push(Token::Field(c, n));
        } else {
            literal.push(c);
        }
    }
    if !literal.is_empty() {
        out.push(Token::Literal(literal));
    }
    Ok(out)
}

fn render(format: &[Token], t: &NaiveDateTime) -> String {
    let mut out = String::new();
    for token in format {
        match token {
            Token::Literal(s) => out.push_str(s),
            Token::Field(c, n) => {
                let v = match c {
                    'Y' | 'y' if *n == 2 => i64::from(t.year().rem_euclid(100)),
                    'Y' | 'y' => i64::from(t.year()),
                    'M' => i64::from(t.month()),
                    'd' => i64::from(t.day()),
                    'H' => i64::from(t.hour()),
                    'm' => i64::from(t.minute()),
                    _ => i64::from(t.second()),
                };
                out.push_str(&format!("{v:0n$}"));
            }
        }
    }
    out
}

/// `UTC`/`GMT`/`Z`, a fixed offset `+HH:MM` / `-HH:MM` (optionally after `UTC`/`GMT`), or a
/// zone of the tz database by name (`Europe/Paris`), as Joda-Time's `DateTimeZone.forID`.
fn parse_zone(zone: &str) -> Result<Zone, String> {
    if let Ok(tz) = zone.parse::<chrono_tz::Tz>() {
        return Ok(Zone::Named(tz));
    }
    parse_offset(zone).map(Zone::Fixed)
}

fn parse_offset(zone: &str) -> Result<FixedOffset, String> {
    let rest = zone
        .strip_prefix("UTC")
        .or_else(|| zone.strip_prefix("GMT"))
        .unwrap_or(zone);
    if rest.is_empty() || rest == "Z" {
        return Ok(FixedOffset::east_opt(0).expect("zero offset"));
    }
    let bad = || {
        format!(
            "{zone:?} is not a timezone: use UTC, a zone of the tz database such as Europe/Paris, or a fixed offset such as +02:00"
        )
    };
    let (sign, digits) = match rest.as_bytes().first() {
        Some(b'+') => (1, &rest[1..]),
        Some(b'-') => (-1, &rest[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = digits.split_once(':').unwrap_or((digits, "0"));
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if h > 18 || m > 59 {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

/// A (dotted) field of a struct or map value; `None` when the value has no such field. A
/// struct's field names are its schema's (or, schemaless, its own `names`).
pub fn field_of<'a>(data: &'a DataRef<'_>, path: &str) -> Option<&'a Value> {
    let DataRef::Data(d) = data else {
        return None;
    };
    let data::Kind::Structured(s) = d.kind.as_ref()? else {
        return None;
    };
    let mut v = s.value.as_ref()?;
    let mut schema: Option<&Schema> = s.schema.as_ref();
    for name in path.split('.') {
        let (next, next_schema) = match v.kind.as_ref()? {
            value::Kind::Struct(st) => {
                let i = match schema.filter(|s| !s.fields.is_empty()) {
                    Some(s) => s.fields.iter().position(|f| f.name == name)?,
                    None => st.names.iter().position(|n| n == name)?,
                };
                (
                    st.fields.get(i)?,
                    schema.and_then(|s| s.fields.get(i)?.schema.as_deref()),
                )
            }
            value::Kind::Map(m) => (
                m.entries
                    .iter()
                    .find(|e| {
                        matches!(e.key.as_ref().and_then(|k| k.kind.as_ref()),
                            Some(value::Kind::String(k)) if k == name)
                    })?
                    .value
                    .as_ref()?,
                schema.and_then(|s| s.value_schema.as_deref()),
            ),
            _ => return None,
        };
        v = next;
        schema = next_schema;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn hourly_paths_floor_the_timestamp_in_the_timezone() {
        let p = Partitioner::from_config(&config(&[
            (
                PARTITIONER,
                "io.confluent.connect.storage.partitioner.HourlyPartitioner",
            ),
            (TIMEZONE, "UTC"),
        ]))
        .unwrap();
        let Partitioner::Time(t) = &p else { panic!() };
        // 2026-12-07T01:23:45.678Z
        let ts = 1_796_606_625_678;
        assert_eq!(t.encode(ts).unwrap(), "year=2026/month=12/day=07/hour=01");
        let p = Partitioner::from_config(&config(&[
            (PARTITIONER, "TimeBasedPartitioner"),
            (PATH_FORMAT, "'dt'=YYYY-MM-dd/'min'=mm"),
            (DURATION, "900000"),
            (TIMEZONE, "-03:30"),
        ]))
        .unwrap();
        let Partitioner::Time(t) = &p else { panic!() };
        assert_eq!(t.encode(ts).unwrap(), "dt=2026-12-06/min=45");
    }

    #[test]
    fn named_zones_follow_daylight_saving() {
        let p = Partitioner::from_config(&config(&[
            (PARTITIONER, "HourlyPartitioner"),
            (TIMEZONE, "Europe/Paris"),
        ]))
        .unwrap();
        let Partitioner::Time(t) = &p else { panic!() };
        let at = |text: &str| {
            t.encode(
                DateTime::parse_from_rfc3339(text)
                    .unwrap()
                    .timestamp_millis(),
            )
            .unwrap()
        };
        // Clocks go from +01:00 to +02:00 at 2026-03-29T01:00Z.
        assert_eq!(
            at("2026-03-29T00:30:00Z"),
            "year=2026/month=03/day=29/hour=01"
        );
        assert_eq!(
            at("2026-03-29T01:30:00Z"),
            "year=2026/month=03/day=29/hour=03"
        );
        assert_eq!(
            at("2026-12-31T23:30:00Z"),
            "year=2027/month=01/day=01/hour=00"
        );
        let err = Partitioner::from_config(&config(&[
            (PARTITIONER, "HourlyPartitioner"),
            (TIMEZONE, "Mars/Olympus"),
        ]))
        .unwrap_err();
        assert_eq!(err.0, TIMEZONE);
        assert!(err.1.contains("Europe/Paris"), "{}", err.1);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let err = |pairs: &[(&str, &str)]| Partitioner::from_config(&config(pairs)).unwrap_err().0;
        assert_eq!(err(&[(PARTITIONER, "Nope")]), PARTITIONER);
        assert_eq!(err(&[(PARTITIONER, "FieldPartitioner")]), FIELD_NAME);
        assert_eq!(
            err(&[
                (PARTITIONER, "DailyPartitioner"),
                (TIMEZONE, "Europe/Atlantis")
            ]),
            TIMEZONE
        );
        assert_eq!(
            err(&[
                (PARTITIONER, "TimeBasedPartitioner"),
                (DURATION, "1000"),
                (PATH_FORMAT, "'unclosed"),
                (TIMEZONE, "UTC")
            ]),
            PATH_FORMAT
        );
        assert_eq!(
            Extractor::from_config(&config(&[(EXTRACTOR, "RecordField")]))
                .unwrap_err()
                .0,
            TIMESTAMP_FIELD
        );
    }
}
