//! Transforms that route or drop whole records: Filter, RegexRouter, TimestampRouter.

use super::{timestamp::JavaDateFormat, Settings, Transform};
use crate::record::Record;

/// Drops every record it sees; used with a predicate.
#[derive(Debug)]
pub(super) struct Filter;

impl Transform for Filter {
    fn apply(&self, _record: &mut Record) -> Result<bool, String> {
        Ok(false)
    }
}

/// Renames the topic when the whole name matches `regex`: Java's
/// `matcher.matches() ? matcher.replaceFirst(replacement)`.
#[derive(Debug)]
pub(super) struct RegexRouter {
    regex: Option<regex::Regex>,
    replacement: String,
}

impl RegexRouter {
    pub(super) fn new(s: &mut Settings<'_>) -> RegexRouter {
        let regex = s.required("regex").and_then(|r| s.regex("regex", &r, true));
        let replacement = s
            .required("replacement")
            .map(|r| java_replacement(&r))
            .unwrap_or_default();
        RegexRouter { regex, replacement }
    }
}

impl Transform for RegexRouter {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        if let Some(re) = &self.regex {
            if re.is_match(&record.topic) {
                record.topic = re.replace(&record.topic, &self.replacement).into_owned();
            }
        }
        Ok(true)
    }
}

/// Java's replacement syntax (`$1`, `\$`) in the regex crate's (`${1}`, `$$`).
pub(super) fn java_replacement(java: &str) -> String {
    let mut out = String::with_capacity(java.len() + 4);
    let mut chars = java.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(other) => out.push(other),
                None => {}
            },
            '$' => {
                let mut group = String::new();
                if chars.peek() == Some(&'{') {
                    // Java's named group `${name}` reads the same in the regex crate.
                    chars.next();
                    for c in chars.by_ref() {
                        if c == '}' {
                            break;
                        }
                        group.push(c);
                    }
                } else {
                    while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                        group.push(*d);
                        chars.next();
                    }
                }
                out.push_str(&format!("${{{group}}}"));
            }
            other => out.push(other),
        }
    }
    out
}

/// Renames the topic from the record's timestamp: `topic.format` with `${topic}` and
/// `${timestamp}`, the timestamp written with `timestamp.format` (Java's SimpleDateFormat, UTC).
#[derive(Debug)]
pub(super) struct TimestampRouter {
    topic_format: String,
    timestamp_format: Option<JavaDateFormat>,
}

impl TimestampRouter {
    pub(super) fn new(s: &mut Settings<'_>) -> TimestampRouter {
        let topic_format = s.string("topic.format", "${topic}-${timestamp}");
        let pattern = s.string("timestamp.format", "yyyyMMdd");
        let timestamp_format = match JavaDateFormat::parse(&pattern) {
            Ok(f) => Some(f),
            Err(e) => {
                s.issue("timestamp.format", e);
                None
            }
        };
        TimestampRouter {
            topic_format,
            timestamp_format,
        }
    }
}

impl Transform for TimestampRouter {
    fn apply(&self, record: &mut Record) -> Result<bool, String> {
        let Some(ts) = record.timestamp_ms else {
            return Err(format!(
                "timestamp missing on record for topic {}",
                record.topic
            ));
        };
        let Some(format) = &self.timestamp_format else {
            return Ok(true);
        };
        let stamp = format.format_millis(ts)?;
        record.topic = self
            .topic_format
            .replace("${topic}", &record.topic)
            .replace("${timestamp}", &stamp);
        Ok(true)
    }
}
