//! TimestampConverter, and Java SimpleDateFormat patterns (UTC, as Kafka's transforms use
//! them) translated to chrono's formats.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use sluice_proto::connector::v1::{value, Schema, SchemaType, Value};

use super::{Settings, Transform};
use crate::record::{
    self, date_schema, field_index, fill_defaults, int_value, is_null, map_entries, map_value,
    schema_of, string_value, struct_fields, struct_value, struct_values, time_schema,
    timestamp_schema, type_of, Part, Record, Side,
};

const MILLIS_PER_DAY: i64 = 86_400_000;
const PURPOSE: &str = "converting timestamp formats";

/// A SimpleDateFormat pattern as a chrono format string.
#[derive(Debug, Clone)]
pub struct JavaDateFormat {
    pattern: String,
    chrono: String,
}

/// Translates a Java SimpleDateFormat pattern, for tools that show the equivalent.
pub fn java_date_format(pattern: &str) -> Result<String, String> {
    JavaDateFormat::parse(pattern).map(|f| f.chrono)
}

impl JavaDateFormat {
    pub fn parse(pattern: &str) -> Result<JavaDateFormat, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' {
                // Quoted text; '' is a quote.
                if chars.get(i + 1) == Some(&'\'') {
                    out.push('\'');
                    i += 2;
                    continue;
                }
                i += 1;
                while i < chars.len() {
                    if chars[i] == '\'' {
                        if chars.get(i + 1) == Some(&'\'') {
                            out.push('\'');
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    push_literal(&mut out, chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(format!("unterminated quote in date format {pattern:?}"));
                }
                i += 1;
                continue;
            }
            if !c.is_ascii_alphabetic() {
                push_literal(&mut out, c);
                i += 1;
                continue;
            }
            let mut n = 1;
            while chars.get(i + n) == Some(&c) {
                n += 1;
            }
            let spec = match (c, n) {
                ('y', 2) => "%y",
                ('y', _) => "%Y",
                ('M', 1) => "%-m",
                ('M', 2) => "%m",
                ('M', 3) => "%b",
                ('M', _) => "%B",
                ('d', 1) => "%-d",
                ('d', _) => "%d",
                ('H', 1) => "%-H",
                ('H', _) => "%H",
                ('h', 1) => "%-I",
                ('h', _) => "%I",
                ('m', 1) => "%-M",
                ('m', _) => "%M",
                ('s', 1) => "%-S",
                ('s', _) => "%S",
                ('S', 3) => "%3f",
                ('E', 1..=3) => "%a",
                ('E', _) => "%A",
                ('a', _) => "%p",
                ('D', _) => "%j",
                ('Z', _) => "%z",
                ('X', 1) | ('X', 2) | ('X', 3) => "Z",
                ('z', _) => "UTC",
                _ => {
                    return Err(format!(
                        "unsupported pattern letters {:?} in date format {pattern:?}",
                        c.to_string().repeat(n)
                    ))
                }
            };
            out.push_str(spec);
            i += n;
        }
        Ok(JavaDateFormat {
            pattern: pattern.to_string(),
            chrono: out,
        })
    }

    pub fn format_millis(&self, ms: i64) -> Result<String, String> {
        let t = Utc
            .timestamp_millis_opt(ms)
            .single()
            .ok_or_else(|| format!("timestamp {ms} is out of range"))?;
        Ok(t.format(&self.chrono).to_string())
    }

    pub fn parse_millis(&self, text: &str) -> Result<i64, String> {
        let f = &self.chrono;
        if let Ok(t) = DateTime::parse_from_str(text, f) {
            return Ok(t.timestamp_millis());
        }
        if let Ok(t) = NaiveDateTime::parse_from_str(text, f) {
            return Ok(t.and_utc().timestamp_millis());
        }
        if let Ok(d) = NaiveDate::parse_from_str(text, f) {
            return Ok(d.and_time(NaiveTime::MIN).and_utc().timestamp_millis());
        }
        if let Ok(t) = NaiveTime::parse_from_str(text, f) {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
            return Ok(epoch.and_time(t).and_utc().timestamp_millis());
        }
        Err(format!(
            "could not parse timestamp: value ({text}) does not match pattern ({})",
            self.pattern
        ))
    }
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Unix,
    Date,
    Time,
    Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

/// Converts timestamps between strings, epoch numbers and the Date/Time/Timestamp logical
/// types, for the whole key/value or one field of it.
#[derive(Debug)]
pub(super) struct TimestampConverter {
    side: Side,
    field: String,
    target: Kind,
    format: Option<JavaDateFormat>,
    precision: Precision,
    replace_null: bool,
}

impl TimestampConverter {
    pub(super) fn new(side: Side, s: &mut Settings<'_>) -> TimestampConverter {
        let field = s.string("field", "");
        let target = match s.choice(
            "target.type",
            &["string", "unix", "Date", "Time", "Timestamp"],
            None,
        ) {
            Some("string") => Kind::String,
            Some("Date") => Kind::Date,
            Some("Time") => Kind::Time,
            Some("Timestamp") => Kind::Timestamp,
            _ => Kind::Unix,
        };
        let format = match s.get("format").filter(|f| !f.is_empty()) {
            Some(f) => match JavaDateFormat::parse(&f) {
                Ok(f) => Some(f),
                Err(e) => {
                    s.issue("format", e);
                    None
                }
            },
            None => {
                if target == Kind::String {
                    s.issue(
                        "format",
                        "TimestampConverter requires format option to be specified when using string timestamps",
                    );
                }
                None
            }
        };
        let precision = match s.choice(
            "unix.precision",
            &["seconds", "milliseconds", "microseconds", "nanoseconds"],
            Some("milliseconds"),
        ) {
            Some("seconds") => Precision::Seconds,
            Some("microseconds") => Precision::Micros,
            Some("nanoseconds") => Precision::Nanos,
            _ => Precision::Millis,
        };
        TimestampConverter {
            side,
            field,
            target,
            format,
            precision,
            replace_null: s.replace_null_with_default(),
        }
    }

    fn target_schema(&self, optional: bool) -> Schema {
        match self.target {
            Kind::String => schema_of(SchemaType::String, optional),
            Kind::Unix => schema_of(SchemaType::Int64, optional),
            Kind::Date => date_schema(optional),
            Kind::Time => time_schema(optional),
            Kind::Timestamp => timestamp_schema(optional),
        }
    }

    fn to_millis(&self, kind: Kind, v: &Value) -> Result<i64, String> {
        match (kind, &v.kind) {
            (Kind::String, Some(value::Kind::String(s))) => match &self.format {
                Some(f) => f.parse_millis(s),
                None => Err(
                    "TimestampConverter requires format option to be specified when using string timestamps"
                        .into(),
                ),
            },
            (Kind::Unix, Some(value::Kind::Int(n))) => Ok(match self.precision {
                Precision::Seconds => n.saturating_mul(1000),
                Precision::Millis => *n,
                Precision::Micros => n / 1000,
                Precision::Nanos => n / 1_000_000,
            }),
            (Kind::Date, Some(value::Kind::Int(days))) => Ok(days.saturating_mul(MILLIS_PER_DAY)),
            (Kind::Time | Kind::Timestamp, Some(value::Kind::Int(ms))) => Ok(*ms),
            _ => Err(format!(
                "expected a {} timestamp, found a {} value",
                kind_name(kind),
                record::kind_label(v)
            )),
        }
    }

    fn millis_to_target(&self, ms: i64) -> Result<Value, String> {
        Ok(match self.target {
            Kind::String => match &self.format {
                Some(f) => string_value(f.format_millis(ms)?),
                None => return Err("format is not set".into()),
            },
            Kind::Unix => int_value(match self.precision {
                Precision::Seconds => ms / 1000,
                Precision::Millis => ms,
                Precision::Micros => ms.saturating_mul(1000),
                Precision::Nanos => ms.saturating_mul(1_000_000),
            }),
            Kind::Date => int_value(ms.div_euclid(MILLIS_PER_DAY)),
            Kind::Time => int_value(ms.rem_euclid(MILLIS_PER_DAY)),
            Kind::Timestamp => int_value(ms),
        })
    }

    fn convert(&self, kind: Kind, v: Option<Value>) -> Result<Option<Value>, String> {
        match v.filter(|v| !is_null(v)) {
            None => Ok(None),
            Some(v) => self.millis_to_target(self.to_millis(kind, &v)?).map(Some),
        }
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::String => "string",
        Kind::Unix => "unix",
        Kind::Date => "Date",
        Kind::Time => "Time",
        Kind::Timestamp => "Timestamp",
    }
}

/// The timestamp kind a schema stands for.
fn schema_kind(schema: &Schema) -> Result<Kind, String> {
    match (schema.name.as_deref(), type_of(schema)) {
        (Some(record::TIMESTAMP), _) => Ok(Kind::Timestamp),
        (Some(record::DATE), _) => Ok(Kind::Date),
        (Some(record::TIME), _) => Ok(Kind::Time),
        (_, SchemaType::Int64) => Ok(Kind::Unix),
        (_, SchemaType::String) => Ok(Kind::String),
        _ => Err(format!(
            "schema {} does not correspond to a known timestamp type format",
            schema
                .name
                .clone()
                .unwrap_or_else(|| record::type_label(schema).to_string())
        )),
    }
}

/// The timestamp kind of a schemaless value.
fn value_kind(v: &Value) -> Result<Kind, String> {
    match &v.kind {
        Some(value::Kind::Int(_)) => Ok(Kind::Unix),
        Some(value::Kind::String(_)) => Ok(Kind::String),
        _ => Err(format!(
            "TimestampConverter does not support {} objects as timestamps",
            record::kind_label(v)
        )),
    }
}

impl Transform for TimestampConverter {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        let part = record.take(self.side);
        let out = match (part.schema, self.field.is_empty()) {
            (Some(schema), true) => {
                let kind = schema_kind(&schema)?;
                Part {
                    value: self.convert(kind, part.value)?,
                    schema: Some(self.target_schema(schema.optional)),
                }
            }
            (None, true) => match part.value {
                None => Part::default(),
                Some(v) => {
                    let kind = value_kind(&v)?;
                    Part {
                        schema: None,
                        value: self.convert(kind, Some(v))?,
                    }
                }
            },
            (Some(mut schema), false) => {
                struct_fields(&schema, PURPOSE)?;
                let Some(i) = field_index(&schema, &self.field) else {
                    return Err(format!("unknown field: {}", self.field));
                };
                let field_schema = schema.fields[i].schema.clone().unwrap_or_default();
                let kind = schema_kind(&field_schema)?;
                let value = match part.value.filter(|v| !is_null(v)) {
                    None => None,
                    Some(v) => {
                        let mut values = struct_values(Some(v), PURPOSE)?;
                        if self.replace_null {
                            fill_defaults(&schema, &mut values);
                        }
                        if let Some(slot) = values.get_mut(i) {
                            let converted = self.convert(kind, Some(std::mem::take(slot)))?;
                            *slot = converted.unwrap_or_else(record::null);
                        }
                        Some(struct_value(values))
                    }
                };
                schema.fields[i].schema = Some(Box::new(self.target_schema(field_schema.optional)));
                Part {
                    schema: Some(schema),
                    value,
                }
            }
            (None, false) => match part.value {
                None => Part::default(),
                Some(v) => {
                    let mut entries = map_entries(v, PURPOSE)?;
                    for (name, slot) in entries.iter_mut() {
                        if *name == self.field && !is_null(slot) {
                            let kind = value_kind(slot)?;
                            let converted = self.convert(kind, Some(std::mem::take(slot)))?;
                            *slot = converted.unwrap_or_else(record::null);
                        }
                    }
                    Part {
                        schema: None,
                        value: Some(map_value(entries)),
                    }
                }
            },
        };
        record.put(self.side, out);
        Ok(true)
    }
}
