//! What an object holds: Confluent's S3 formats (`format.class`).
//!
//! - `JsonFormat` (`.json`): one JSON document per line, each record's value as Kafka
//!   Connect's JsonConverter writes it without schemas (structs and maps as objects, bytes as
//!   base64). A value that arrives as raw bytes (ByteArrayConverter) is written as the JSON
//!   it holds when it is JSON (on one line), else as a base64 string.
//! - `AvroFormat` (`.avro`): an Avro object container file whose schema is the one
//!   Confluent's AvroData makes of the values' Connect schema; a record whose schema differs
//!   from the open file's starts a new file (Confluent's `schema.compatibility` NONE).
//!   `avro.codec`: `null` or `deflate`.
//! - `ByteArrayFormat` (`format.bytearray.extension`, `.bin`): each value's bytes followed by
//!   `format.bytearray.separator` (a line feed by default).
//!
//! `s3.compression.type=gzip` (with `s3.compression.level`, -1 for zlib's default) gzips JSON
//! and ByteArray files, whose names then end in `.gz`; Avro files are compressed inside by
//! `avro.codec`, as Confluent's connector does.

use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::types::Value as AvroValue;
use apache_avro::{Codec, DeflateSettings, Schema as AvroSchema};
use base64::Engine as _;
use sluice_connector_sdk::proto::{data, Data};
use sluice_connector_sdk::{Config, SinkRecordRef};
use sluice_data::converter::{avro, Converter, Side};

pub const FORMAT: &str = "format.class";
pub const AVRO_CODEC: &str = "avro.codec";
pub const BYTES_EXTENSION: &str = "format.bytearray.extension";
pub const BYTES_SEPARATOR: &str = "format.bytearray.separator";
pub const COMPRESSION: &str = "s3.compression.type";
pub const COMPRESSION_LEVEL: &str = "s3.compression.level";

pub const JSON: &str = "io.confluent.connect.s3.format.json.JsonFormat";
const AVRO: &str = "io.confluent.connect.s3.format.avro.AvroFormat";
const BYTES: &str = "io.confluent.connect.s3.format.bytearray.ByteArrayFormat";

/// How records become an object's bytes, and the objects' name ending.
pub struct Format {
    kind: Kind,
    /// gzip's level, when JSON or ByteArray files are gzipped.
    gzip: Option<flate2::Compression>,
    extension: String,
}

enum Kind {
    Json(Box<Converter>),
    Avro(Codec),
    Bytes { separator: Vec<u8> },
}

impl Format {
    pub fn from_config(config: &Config) -> Result<Format, (String, String)> {
        let kind = Kind::from_config(config)?;
        let gzip = match config.get_or(COMPRESSION, "none").trim() {
            "none" | "" => None,
            "gzip" => {
                let level = config.get_or(COMPRESSION_LEVEL, "-1").trim();
                match level.parse::<i32>() {
                    Ok(-1) => Some(flate2::Compression::default()),
                    Ok(l @ 0..=9) => Some(flate2::Compression::new(l as u32)),
                    _ => {
                        return Err((
                            COMPRESSION_LEVEL.into(),
                            format!("{level:?} is not -1 (the default) or a level from 0 to 9"),
                        ))
                    }
                }
            }
            other => return Err((COMPRESSION.into(), format!("{other:?} is not none or gzip"))),
        };
        // Avro files are compressed inside (avro.codec).
        let gzip = gzip.filter(|_| !matches!(kind, Kind::Avro(_)));
        let mut extension = match &kind {
            Kind::Json(_) => ".json".to_string(),
            Kind::Avro(_) => ".avro".to_string(),
            Kind::Bytes { .. } => config.get_or(BYTES_EXTENSION, ".bin").to_string(),
        };
        if gzip.is_some() {
            extension.push_str(".gz");
        }
        Ok(Format {
            kind,
            gzip,
            extension,
        })
    }

    pub fn extension(&self) -> &str {
        &self.extension
    }

    /// The objects' Content-Type.
    pub fn content_type(&self) -> &'static str {
        match (&self.kind, self.gzip) {
            (_, Some(_)) => "application/gzip",
            (Kind::Json(_), None) => "application/json",
            _ => "application/octet-stream",
        }
    }
}

impl Kind {
    fn from_config(config: &Config) -> Result<Kind, (String, String)> {
        let class = config.get_or(FORMAT, JSON).trim();
        let simple = class.rsplit('.').next().unwrap_or(class);
        match simple {
            "JsonFormat" => {
                let settings =
                    BTreeMap::from([("schemas.enable".to_string(), "false".to_string())]);
                let converter = Converter::new(
                    "org.apache.kafka.connect.json.JsonConverter",
                    &settings,
                    Side::Value,
                )
                .map_err(|(_, e)| (FORMAT.to_string(), e))?;
                Ok(Kind::Json(Box::new(converter)))
            }
            "AvroFormat" => {
                let codec = match config.get_or(AVRO_CODEC, "null").trim() {
                    "null" => Codec::Null,
                    "deflate" => Codec::Deflate(DeflateSettings::default()),
                    other => {
                        return Err((
                            AVRO_CODEC.into(),
                            format!(
                                "{other:?} is not a codec this connector writes (null, deflate)"
                            ),
                        ))
                    }
                };
                Ok(Kind::Avro(codec))
            }
            "ByteArrayFormat" => Ok(Kind::Bytes {
                separator: config.get_or(BYTES_SEPARATOR, "\n").as_bytes().to_vec(),
            }),
            _ => Err((
                FORMAT.into(),
                format!("{class:?} is not one of {JSON}, {AVRO}, {BYTES}"),
            )),
        }
    }
}

impl Format {
    /// A new, empty file body of this format.
    pub fn new_body(&self, schema: Option<&Arc<FileSchema>>) -> Body {
        match (&self.kind, schema) {
            (Kind::Avro(_), Some(schema)) => Body::Avro {
                schema: schema.clone(),
                values: Vec::new(),
            },
            _ => Body::Lines(Vec::new()),
        }
    }

    /// The record's value in this format: bytes to append, or an Avro value and its schema.
    pub fn encode(&self, record: &SinkRecordRef<'_>) -> Result<Encoded, String> {
        match &self.kind {
            Kind::Json(converter) => {
                let mut line = match record.value.to_data() {
                    Data {
                        kind: Some(data::Kind::Raw(bytes)),
                    } => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                        Ok(json) => serde_json::to_vec(&json).map_err(|e| e.to_string())?,
                        Err(_) => serde_json::to_vec(
                            &base64::engine::general_purpose::STANDARD.encode(&bytes),
                        )
                        .map_err(|e| e.to_string())?,
                    },
                    data => converter
                        .from_connect(&record.topic, Some(&data))
                        .map_err(|e| format!("cannot write the value as JSON: {e}"))?
                        .unwrap_or_else(|| b"null".to_vec()),
                };
                line.push(b'\n');
                Ok(Encoded::Bytes(line))
            }
            Kind::Bytes { separator } => {
                let mut out = record.value.scalar_bytes().ok_or_else(|| {
                    "ByteArrayFormat writes bytes or strings; this value is a struct, map or array (use JsonFormat or AvroFormat)".to_string()
                })?.into_owned();
                out.extend_from_slice(separator);
                Ok(Encoded::Bytes(out))
            }
            Kind::Avro(_) => {
                let data = record.value.to_data();
                let Some(data::Kind::Structured(s)) = data.kind else {
                    return Err("AvroFormat needs a value with a schema; this one is raw bytes (use a converter that reads schemas, e.g. AvroConverter or JsonConverter with schemas.enable)".into());
                };
                let schema = s.schema.as_ref().ok_or_else(|| {
                    "AvroFormat needs a value with a schema; this one is schemaless".to_string()
                })?;
                let text = avro::avro_schema_text(schema).map_err(|e| e.to_string())?;
                let value =
                    avro::avro_value(schema, s.value.as_ref()).map_err(|e| e.to_string())?;
                Ok(Encoded::Avro { text, value })
            }
        }
    }
}

/// An Avro file's schema: its text (to tell a change) and parsed.
pub struct FileSchema {
    pub text: String,
    pub parsed: AvroSchema,
}

impl FileSchema {
    pub fn parse(text: String) -> Result<FileSchema, String> {
        let parsed = AvroSchema::parse_str(&text)
            .map_err(|e| format!("the Avro schema made of the value's schema is invalid: {e}"))?;
        Ok(FileSchema { text, parsed })
    }
}

/// One record, encoded.
pub enum Encoded {
    Bytes(Vec<u8>),
    Avro { text: String, value: AvroValue },
}

/// An open file's contents so far.
pub enum Body {
    Lines(Vec<u8>),
    Avro {
        schema: Arc<FileSchema>,
        values: Vec<AvroValue>,
    },
}

impl Body {
    pub fn push(&mut self, encoded: Encoded) -> Result<(), String> {
        match (self, encoded) {
            (Body::Lines(out), Encoded::Bytes(b)) => {
                out.extend_from_slice(&b);
                Ok(())
            }
            (Body::Avro { schema, values }, Encoded::Avro { value, .. }) => {
                // Checked here, so a value that does not fit goes to errors.* alone; the
                // file is encoded once, when it is finished.
                if !value.validate(&schema.parsed) {
                    return Err("the value does not fit its Avro schema".into());
                }
                values.push(value);
                Ok(())
            }
            _ => Err("internal: a record of another format for this file".into()),
        }
    }

    /// The object's bytes.
    pub fn finish(self, format: &Format) -> Result<Vec<u8>, String> {
        match self {
            Body::Lines(out) => match format.gzip {
                None => Ok(out),
                Some(level) => {
                    use std::io::Write as _;
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::with_capacity(out.len() / 4), level);
                    gz.write_all(&out)
                        .and_then(|()| gz.finish())
                        .map_err(|e| format!("gzip the file: {e}"))
                }
            },
            Body::Avro { schema, values } => {
                let codec = match &format.kind {
                    Kind::Avro(codec) => *codec,
                    _ => Codec::Null,
                };
                let mut writer = apache_avro::Writer::with_codec(&schema.parsed, Vec::new(), codec);
                writer
                    .extend_from_slice(&values)
                    .map_err(|e| format!("write the Avro file: {e}"))?;
                writer
                    .into_inner()
                    .map_err(|e| format!("write the Avro file: {e}"))
            }
        }
    }
}
