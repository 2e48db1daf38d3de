//! Dry runs: a connector's converters and transforms applied to sample records, step by step,
//! so a user sees what each step made of a record (or why it failed) before running anything.
//! Pure: no Kafka, no connector process.

use std::collections::BTreeMap;

use base64::Engine as _;
use sluice_data::converter::{Converter, DEFAULT_CONVERTER};
use sluice_data::record::{Record, Side};
use sluice_data::transforms::Chain;
use sluice_proto::api::v1 as api;
use sluice_proto::connector::v1::{data, Data, Header};

const BASE64_PREFIX: &str = "base64:";

/// Which way records go through the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Connector data → transforms → converters → Kafka bytes.
    Source,
    /// Kafka bytes → converters → transforms → connector data.
    Sink,
}

/// A converter refused the record: its step, and the run's error.
fn converter_failed(
    mut result: api::DryRunResult,
    stage: &str,
    name: &str,
    class: &str,
    message: &str,
) -> api::DryRunResult {
    result.steps.push(step(stage, name, class, None, message));
    result.error = format!("{stage} ({class}): {message}");
    result
}

/// A sample's headers as a record's, each value made by `value`.
fn headers(
    sample: std::collections::HashMap<String, String>,
    value: impl Fn(String) -> Data,
) -> Vec<Header> {
    sample
        .into_iter()
        .map(|(key, v)| Header {
            key,
            value: Some(value(v)),
        })
        .collect()
}

/// Runs the samples; a config the chain or the converters refuse gives one error per key.
pub fn dry_run(
    config: &BTreeMap<String, String>,
    direction: Direction,
    samples: Vec<api::SampleRecord>,
) -> Result<Vec<api::DryRunResult>, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let chain = Chain::from_config(config).unwrap_or_else(|issues| {
        errors.extend(issues.into_iter().map(|i| (i.key, i.message)));
        Chain::default()
    });
    // The connector's own converters, else Kafka Connect's default (the worker's defaults are
    // not known here).
    let key = Converter::from_config(config, Side::Key)
        .map_err(|e| errors.push(e))
        .ok();
    let value = Converter::from_config(config, Side::Value)
        .map_err(|e| errors.push(e))
        .ok();
    let (Some(key), Some(value), true) = (key, value, errors.is_empty()) else {
        return Err(errors);
    };
    let view = Viewer::new().map_err(|e| vec![e])?;
    let run = DryRun {
        chain,
        key,
        value,
        view,
    };
    Ok(samples
        .into_iter()
        .map(|sample| match direction {
            Direction::Source => run.source(sample),
            Direction::Sink => run.sink(sample),
        })
        .collect())
}

struct DryRun {
    chain: Chain,
    key: (String, Converter),
    value: (String, Converter),
    view: Viewer,
}

impl DryRun {
    fn source(&self, sample: api::SampleRecord) -> api::DryRunResult {
        let mut record = Record {
            topic: sample.topic,
            kafka_partition: sample.partition,
            offset: None,
            key: sample.key.map(|k| self.view.parse(&k)),
            value: sample.value.map(|v| self.view.parse(&v)),
            timestamp_ms: sample.timestamp_ms,
            headers: headers(sample.headers, |v| self.view.parse(&v)),
        };
        let mut result = self.transform(&mut record);
        if !result.error.is_empty() || result.dropped {
            return result;
        }
        // Then the converters, as the worker does before producing.
        let mut out = self.view.record(&record);
        for (stage, name, (class, converter), is_key) in [
            ("KEY_CONVERTER", "key", &self.key, true),
            ("VALUE_CONVERTER", "value", &self.value, false),
        ] {
            let data = if is_key { &record.key } else { &record.value };
            match converter.from_connect(&record.topic, data.as_ref()) {
                Ok(bytes) => {
                    let text = bytes.map(|b| bytes_text(&b));
                    if is_key {
                        out.key = text;
                    } else {
                        out.value = text;
                    }
                    result
                        .steps
                        .push(step(stage, name, class, Some(out.clone()), ""));
                }
                Err(e) => return converter_failed(result, stage, name, class, &e.message),
            }
        }
        result.output = Some(out);
        result
    }

    fn sink(&self, sample: api::SampleRecord) -> api::DryRunResult {
        let mut result = api::DryRunResult::default();
        let mut converted = Vec::new();
        for (stage, name, (class, converter), text) in [
            ("KEY_CONVERTER", "key", &self.key, &sample.key),
            ("VALUE_CONVERTER", "value", &self.value, &sample.value),
        ] {
            let bytes = match text.as_deref().map(text_bytes) {
                None => None,
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => {
                    result.steps.push(step(stage, name, class, None, &e));
                    result.error = format!("{name}: {e}");
                    return result;
                }
            };
            match converter.to_connect(&sample.topic, bytes.as_deref()) {
                Ok(data) => converted.push(data),
                Err(e) => return converter_failed(result, stage, name, class, &e.message),
            }
            let partial = Record {
                topic: sample.topic.clone(),
                kafka_partition: sample.partition,
                key: converted.first().cloned(),
                value: converted.get(1).cloned(),
                ..Record::default()
            };
            let view = self.view.record(&partial);
            result.steps.push(step(stage, name, class, Some(view), ""));
        }
        let mut converted = converted.into_iter();
        let mut record = Record {
            topic: sample.topic,
            kafka_partition: Some(sample.partition.unwrap_or(0)),
            offset: Some(sample.offset.unwrap_or(0)),
            key: converted.next(),
            value: converted.next(),
            timestamp_ms: sample.timestamp_ms,
            headers: headers(sample.headers, |v| Data {
                kind: Some(data::Kind::Raw(v.into_bytes())),
            }),
        };
        let transformed = self.transform(&mut record);
        result.steps.extend(transformed.steps);
        result.error = transformed.error;
        result.dropped = transformed.dropped;
        if result.error.is_empty() && !result.dropped {
            result.output = Some(self.view.record(&record));
        }
        result
    }

    /// Runs the transforms, recording each step; leaves the last record in `record`.
    fn transform(&self, record: &mut Record) -> api::DryRunResult {
        let mut result = api::DryRunResult::default();
        for outcome in self.chain.trace(std::mem::take(record)) {
            let view = outcome.record.as_ref().map(|r| self.view.record(r));
            let error = outcome.error.clone().unwrap_or_default();
            result.steps.push(api::DryRunStep {
                stage: "TRANSFORMATION".into(),
                name: outcome.alias.clone(),
                class_name: outcome.class.clone(),
                applied: outcome.applied,
                record: view,
                error: error.clone(),
            });
            match outcome.record {
                Some(r) => *record = r,
                None if error.is_empty() => result.dropped = true,
                None => {
                    result.error =
                        format!("transform {} ({}): {error}", outcome.alias, outcome.class)
                }
            }
        }
        result
    }
}

fn step(
    stage: &str,
    name: &str,
    class: &str,
    record: Option<api::RecordView>,
    error: &str,
) -> api::DryRunStep {
    api::DryRunStep {
        stage: stage.into(),
        name: name.into(),
        class_name: class.into(),
        applied: true,
        record,
        error: error.into(),
    }
}

/// Renders records as text and reads sample text as connector data.
struct Viewer {
    envelope: Converter,
    plain: Converter,
}

impl Viewer {
    fn new() -> Result<Viewer, (String, String)> {
        let with = |schemas: &str| {
            let settings = BTreeMap::from([("schemas.enable".to_string(), schemas.to_string())]);
            Converter::new(DEFAULT_CONVERTER, &settings, Side::Value)
        };
        Ok(Viewer {
            envelope: with("true")?,
            plain: with("false")?,
        })
    }

    /// Sample text as connector data: a JSON envelope, plain JSON (schemaless), else the text
    /// as raw bytes (`base64:` for binary).
    fn parse(&self, text: &str) -> Data {
        if let Some(b64) = text.strip_prefix(BASE64_PREFIX) {
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                return Data {
                    kind: Some(data::Kind::Raw(bytes)),
                };
            }
        }
        self.envelope
            .to_connect("", Some(text.as_bytes()))
            .or_else(|_| self.plain.to_connect("", Some(text.as_bytes())))
            .unwrap_or_else(|_| Data {
                kind: Some(data::Kind::Raw(text.as_bytes().to_vec())),
            })
    }

    fn data(&self, data: Option<&Data>) -> Option<String> {
        match data?.kind.as_ref()? {
            data::Kind::Raw(bytes) => Some(bytes_text(bytes)),
            data::Kind::Structured(_) => Some(match self.envelope.from_connect("", data) {
                Ok(Some(bytes)) => bytes_text(&bytes),
                Ok(None) => "null".into(),
                Err(e) => format!("<cannot show as JSON: {}>", e.message),
            }),
        }
    }

    fn record(&self, r: &Record) -> api::RecordView {
        api::RecordView {
            topic: r.topic.clone(),
            partition: r.kafka_partition,
            key: self.data(r.key.as_ref()),
            value: self.data(r.value.as_ref()),
            headers: r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.key.clone(),
                        self.data(h.value.as_ref()).unwrap_or_default(),
                    )
                })
                .collect(),
            timestamp_ms: r.timestamp_ms,
        }
    }
}

/// Bytes as UTF-8 text, or `base64:` and their base64 when they are not UTF-8.
fn bytes_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!(
            "{BASE64_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
    }
}

/// Sample text as bytes: `base64:` decoded, else UTF-8.
fn text_bytes(text: &str) -> Result<Vec<u8>, String> {
    match text.strip_prefix(BASE64_PREFIX) {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("invalid base64 after {BASE64_PREFIX}: {e}")),
        None => Ok(text.as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sample(topic: &str, value: &str) -> api::SampleRecord {
        api::SampleRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_source_record_through_transforms_and_converters() {
        let c = config(&[
            ("transforms", "hoist,route"),
            ("transforms.hoist.type", "HoistField$Value"),
            ("transforms.hoist.field", "line"),
            ("transforms.route.type", "RegexRouter"),
            ("transforms.route.regex", "(.*)"),
            ("transforms.route.replacement", "$1-out"),
            ("value.converter.schemas.enable", "false"),
        ]);
        let results = dry_run(
            &c,
            Direction::Source,
            vec![sample(
                "t",
                r#"{"schema":{"type":"string","optional":false},"payload":"hi"}"#,
            )],
        )
        .unwrap();
        let r = &results[0];
        let stages: Vec<&str> = r.steps.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(
            stages,
            [
                "TRANSFORMATION",
                "TRANSFORMATION",
                "KEY_CONVERTER",
                "VALUE_CONVERTER"
            ]
        );
        assert_eq!(
            r.steps[0].record.as_ref().unwrap().value.as_deref(),
            Some(
                r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"field":"line"}],"optional":false},"payload":{"line":"hi"}}"#
            )
        );
        let out = r.output.as_ref().unwrap();
        assert_eq!(out.topic, "t-out");
        assert_eq!(out.value.as_deref(), Some(r#"{"line":"hi"}"#));
        assert_eq!(out.key, None);
    }

    #[test]
    fn a_sink_record_that_fails_conversion_or_a_transform_shows_where() {
        let c = config(&[
            ("transforms", "cast"),
            ("transforms.cast.type", "Cast$Value"),
            ("transforms.cast.spec", "n:int8"),
            ("value.converter.schemas.enable", "false"),
        ]);
        let results = dry_run(
            &c,
            Direction::Sink,
            vec![
                sample("t", "not json"),
                sample("t", r#"{"n":"x"}"#),
                sample("t", r#"{"n":"7"}"#),
            ],
        )
        .unwrap();
        assert_eq!(results[0].steps.last().unwrap().stage, "VALUE_CONVERTER");
        assert!(
            results[0].error.starts_with("VALUE_CONVERTER"),
            "{results:?}"
        );
        assert!(
            results[1].error.contains("cannot be cast to INT8"),
            "{results:?}"
        );
        let value = results[2].output.as_ref().unwrap().value.clone().unwrap();
        assert!(value.ends_with(r#""payload":{"n":7}}"#), "{value}");
    }

    #[test]
    fn bad_configs_are_refused_per_key() {
        let e = dry_run(
            &config(&[
                ("transforms", "x"),
                ("transforms.x.type", "Nope"),
                ("value.converter", "com.example.Nope"),
            ]),
            Direction::Source,
            vec![],
        )
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["transforms.x.type", "value.converter"]);
    }
}
