//! AvroConverter as Confluent's `io.confluent.connect.avro.AvroConverter` writes and reads
//! Kafka bytes: the Schema Registry wire format (magic byte 0, the schema id as 4 bytes
//! big-endian, the Avro binary datum) and Connect schemas mapped to Avro schemas as Confluent's
//! `AvroData` maps them (records named by the Connect schema's name or `ConnectDefault`,
//! optional as a union with null, `connect.*` properties for what Avro cannot say).
//!
//! Avro schemas are built here as JSON; parsing, binary encoding and decoding are
//! apache-avro's. Registry answers are cached both ways, so a cache hit does no I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value as Json;
use sluice_proto::connector::v1::{data, Data, Schema, SchemaType, Structured, Value};

mod from_avro;
mod to_avro;

use from_avro::{from_avro_value, FromAvro};
use to_avro::{to_avro_value, ToAvro};

use super::registry::{
    HttpRegistry, RegistryError, SchemaId, SchemaRegistry, SCHEMA_NOT_FOUND, SUBJECT_NOT_FOUND,
};
use super::{bool_setting, ConversionError};
use crate::record::{self, Side};

/// Confluent's namespace for names it makes up.
const NAMESPACE: &str = "io.confluent.connect.avro";
const DEFAULT_NAME: &str = "ConnectDefault";
const MAP_ENTRY: &str = "MapEntry";
/// A Connect struct standing for an Avro union of several types.
const UNION: &str = "io.confluent.connect.avro.Union";
const RECORD_DOC: &str = "io.confluent.connect.avro.record.doc";
const FIELD_DOC_PREFIX: &str = "io.confluent.connect.avro.field.doc.";
const FIELD_DEFAULT_FLAG: &str = "io.confluent.connect.avro.field.default";
const ENUM_PARAM: &str = "io.confluent.connect.avro.Enum";
const PRECISION_PARAM: &str = "connect.decimal.precision";
const DEFAULT_PRECISION: i64 = 64;

const TOPIC_NAME_STRATEGY: &str = "io.confluent.kafka.serializers.subject.TopicNameStrategy";
const RECORD_NAME_STRATEGY: &str = "io.confluent.kafka.serializers.subject.RecordNameStrategy";
const TOPIC_RECORD_NAME_STRATEGY: &str =
    "io.confluent.kafka.serializers.subject.TopicRecordNameStrategy";

/// The magic byte of the Schema Registry wire format.
pub const MAGIC_BYTE: u8 = 0;

/// How the subject a schema is registered under is named (`*.subject.name.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectNameStrategy {
    /// `<topic>-key` / `<topic>-value`.
    TopicName,
    /// The record's full name.
    RecordName,
    /// `<topic>-<record full name>`.
    TopicRecordName,
}

impl SubjectNameStrategy {
    fn from_class(class: &str) -> Option<SubjectNameStrategy> {
        let class = class.trim();
        [
            (TOPIC_NAME_STRATEGY, SubjectNameStrategy::TopicName),
            (RECORD_NAME_STRATEGY, SubjectNameStrategy::RecordName),
            (
                TOPIC_RECORD_NAME_STRATEGY,
                SubjectNameStrategy::TopicRecordName,
            ),
        ]
        .into_iter()
        .find(|(full, _)| class == *full || Some(class) == full.rsplit('.').next())
        .map(|(_, strategy)| strategy)
    }

    fn subject(self, topic: &str, side: Side, schema: &Json) -> String {
        match self {
            SubjectNameStrategy::TopicName => format!("{topic}-{}", side.name()),
            SubjectNameStrategy::RecordName => record_full_name(schema),
            SubjectNameStrategy::TopicRecordName => {
                format!("{topic}-{}", record_full_name(schema))
            }
        }
    }
}

/// Avro's full name of a schema: a record's `namespace.name`, else its type's name. An
/// optional record (a union with null) counts as the record.
fn record_full_name(schema: &Json) -> String {
    match schema {
        Json::String(s) => s.clone(),
        Json::Array(members) => members
            .iter()
            .find(|m| m.as_str() != Some("null"))
            .filter(|_| members.len() == 2)
            .map_or_else(|| "union".into(), record_full_name),
        Json::Object(m) => {
            let name = m.get("name").and_then(Json::as_str);
            let namespace = m.get("namespace").and_then(Json::as_str);
            match (name, namespace) {
                (Some(name), Some(ns)) if !name.contains('.') => format!("{ns}.{name}"),
                (Some(name), _) => name.to_string(),
                (None, _) => m
                    .get("type")
                    .and_then(Json::as_str)
                    .unwrap_or("unknown")
                    .to_string(),
            }
        }
        _ => "unknown".into(),
    }
}

/// A schema this converter writes with: its registry id and its parsed form.
#[derive(Debug)]
struct WriterSchema {
    id: SchemaId,
    avro: apache_avro::Schema,
}

/// A schema this converter read bytes with: parsed, and as the Connect schema it reads into.
#[derive(Debug)]
struct ReaderSchema {
    avro: apache_avro::Schema,
    connect: Schema,
}

/// A map that forgets everything when it grows past its size (`schemas.cache.size`): schemas
/// are few in practice, and a full map means something is generating them.
#[derive(Debug)]
struct Cache<K, V> {
    size: usize,
    map: Mutex<HashMap<K, Arc<V>>>,
}

impl<K: std::hash::Hash + Eq, V> Cache<K, V> {
    fn new(size: usize) -> Self {
        Cache {
            size: size.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<Arc<V>> {
        self.lock().get(key).cloned()
    }

    fn put(&self, key: K, value: V) -> Arc<V> {
        let value = Arc::new(value);
        let mut map = self.lock();
        if map.len() >= self.size {
            map.clear();
        }
        map.insert(key, value.clone());
        value
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<V>>> {
        // Entries are inserted whole; a panic elsewhere cannot leave one half-written.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The Avro converter for a key or a value, with its registry client and caches.
#[derive(Debug)]
pub struct AvroConverter {
    registry: Arc<dyn SchemaRegistry>,
    side: Side,
    auto_register: bool,
    use_latest_version: bool,
    strategy: SubjectNameStrategy,
    /// (subject, Avro schema JSON) → the id it is registered under.
    writers: Cache<(String, String), WriterSchema>,
    /// Subject → its latest schema (`use.latest.version`).
    latest: Cache<String, WriterSchema>,
    /// Id → the schema to read with.
    readers: Cache<SchemaId, ReaderSchema>,
}

/// The configuration keys of AvroConverter that this converter reads.
pub const REGISTRY_URL: &str = "schema.registry.url";

impl AvroConverter {
    /// Reads the converter's settings and makes the HTTP registry client; no request is made.
    pub(super) fn from_settings(
        settings: &BTreeMap<String, String>,
        side: Side,
    ) -> Result<AvroConverter, (String, String)> {
        let urls = settings
            .get(REGISTRY_URL)
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| {
                (
                    REGISTRY_URL.to_string(),
                    "missing required configuration: the Schema Registry's URL".to_string(),
                )
            })?;
        let user_info = match settings
            .get("basic.auth.credentials.source")
            .map(|s| s.trim().to_ascii_uppercase())
            .as_deref()
        {
            None | Some("URL") => None,
            Some("USER_INFO") => Some(
                settings
                    .get("basic.auth.user.info")
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        (
                            "basic.auth.user.info".to_string(),
                            "missing: basic.auth.credentials.source is USER_INFO".to_string(),
                        )
                    })?
                    .as_str(),
            ),
            Some(other) => {
                return Err((
                    "basic.auth.credentials.source".into(),
                    format!("invalid value {other:?}: expected USER_INFO or URL"),
                ))
            }
        };
        let registry =
            HttpRegistry::new(urls, user_info).map_err(|e| (REGISTRY_URL.to_string(), e))?;
        AvroConverter::with_registry(settings, side, Arc::new(registry))
    }

    /// A converter with its settings and a registry of the caller's (`schema.registry.url`
    /// is not read).
    pub fn with_registry(
        settings: &BTreeMap<String, String>,
        side: Side,
        registry: Arc<dyn SchemaRegistry>,
    ) -> Result<AvroConverter, (String, String)> {
        let strategy_key = format!("{}.subject.name.strategy", side.name());
        let strategy = match settings.get(&strategy_key) {
            None => SubjectNameStrategy::TopicName,
            Some(class) => SubjectNameStrategy::from_class(class).ok_or_else(|| {
                (
                    strategy_key.clone(),
                    format!(
                        "unsupported subject name strategy {class:?}: expected \
                         {TOPIC_NAME_STRATEGY}, {RECORD_NAME_STRATEGY} or \
                         {TOPIC_RECORD_NAME_STRATEGY}"
                    ),
                )
            })?,
        };
        let cache_size = match settings.get("schemas.cache.size") {
            None => 1000,
            Some(size) => size
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= i32::MAX as u32)
                .ok_or_else(|| {
                    (
                        "schemas.cache.size".to_string(),
                        format!("invalid value {size:?}: expected a non-negative integer"),
                    )
                })? as usize,
        };
        Ok(AvroConverter {
            registry,
            side,
            auto_register: bool_setting(settings, "auto.register.schemas", true)?,
            use_latest_version: bool_setting(settings, "use.latest.version", false)?,
            strategy,
            writers: Cache::new(cache_size),
            latest: Cache::new(cache_size),
            readers: Cache::new(cache_size),
        })
    }

    /// Connect data to the wire format; `None` (a Kafka null) for null data.
    pub fn from_connect(
        &self,
        topic: &str,
        data: Option<&Data>,
    ) -> Result<Option<Vec<u8>>, ConversionError> {
        let structured = match data.and_then(|d| d.kind.as_ref()) {
            None => return Ok(None),
            Some(data::Kind::Raw(bytes)) => return Ok(Some(bytes.clone())),
            Some(data::Kind::Structured(s)) => s,
        };
        let value = structured.value.as_ref().filter(|v| !record::is_null(v));
        let Some(schema) = structured.schema.as_ref() else {
            return match value {
                None => Ok(None),
                Some(_) => Err(ConversionError::new(format!(
                    "AvroConverter cannot write schemaless data (the {} of a record for topic \
                     {topic:?} has no schema): use a converter for schemaless data or give the \
                     data a schema",
                    self.side.name()
                ))),
            };
        };
        if value.is_none() && schema.default_value.as_ref().is_none_or(record::is_null) {
            return Ok(None);
        }
        let avro_json = ToAvro::default().schema(schema)?;
        let text = avro_json.to_string();
        let subject = self.strategy.subject(topic, self.side, &avro_json);
        let datum = to_avro_value(schema, value)?;
        let (writer, datum) = if self.use_latest_version {
            let writer = self.latest_schema(&subject)?;
            let datum = datum.resolve(&writer.avro).map_err(|e| {
                ConversionError::new(format!(
                    "data does not fit the latest schema (id {}) of subject {subject:?}: {e}",
                    writer.id
                ))
            })?;
            (writer, datum)
        } else {
            (self.writer_schema(&subject, text)?, datum)
        };
        let mut out = Vec::with_capacity(64);
        out.push(MAGIC_BYTE);
        out.extend_from_slice(&writer.id.0.to_be_bytes());
        let body = apache_avro::to_avro_datum(&writer.avro, datum).map_err(|e| {
            ConversionError::new(format!(
                "encode Avro data with schema id {}: {e}",
                writer.id
            ))
        })?;
        out.extend_from_slice(&body);
        Ok(Some(out))
    }

    /// Wire-format bytes to Connect data; a Kafka null is null.
    pub fn to_connect(&self, _topic: &str, bytes: Option<&[u8]>) -> Result<Data, ConversionError> {
        let Some(bytes) = bytes else {
            return Ok(Data { kind: None });
        };
        let (id, mut body) = match bytes {
            [MAGIC_BYTE, a, b, c, d, body @ ..] => {
                (SchemaId(i32::from_be_bytes([*a, *b, *c, *d])), body)
            }
            [MAGIC_BYTE, ..] | [] => {
                return Err(ConversionError::new(format!(
                    "unknown magic byte: {} bytes are too short for the Schema Registry wire \
                     format (magic byte 0, a 4-byte schema id, the Avro data)",
                    bytes.len()
                )))
            }
            [magic, ..] => {
                return Err(ConversionError::new(format!(
                    "unknown magic byte {magic}: not in the Schema Registry wire format \
                     (expected 0)"
                )))
            }
        };
        let reader = self.reader_schema(id)?;
        let datum = apache_avro::from_avro_datum(&reader.avro, &mut body, None).map_err(|e| {
            ConversionError::new(format!("decode Avro data written with schema id {id}: {e}"))
        })?;
        // apache-avro reads a string or bytes cut short as null: a datum that does not match
        // its own schema was truncated.
        if !datum.validate(&reader.avro) {
            return err(format!(
                "decode Avro data written with schema id {id}: the data is truncated or does \
                 not match the schema"
            ));
        }
        let value = from_avro_value(&reader.connect, datum)?;
        Ok(Data {
            kind: Some(data::Kind::Structured(Structured {
                schema: Some(reader.connect.clone()),
                value: Some(value),
            })),
        })
    }

    fn writer_schema(
        &self,
        subject: &str,
        text: String,
    ) -> Result<Arc<WriterSchema>, ConversionError> {
        let key = (subject.to_string(), text);
        if let Some(writer) = self.writers.get(&key) {
            return Ok(writer);
        }
        let avro = apache_avro::Schema::parse_str(&key.1).map_err(|e| {
            ConversionError::new(format!(
                "invalid Avro schema made from the Connect schema: {e}"
            ))
        })?;
        let id = if self.auto_register {
            self.registry.register(subject, &key.1)
        } else {
            self.registry.lookup(subject, &key.1)
        }
        .map_err(|e| {
            let verb = if self.auto_register {
                "register"
            } else {
                "look up (auto.register.schemas=false)"
            };
            registry_failure(format!("{verb} schema under subject {subject:?}"), e)
        })?;
        Ok(self.writers.put(key, WriterSchema { id, avro }))
    }

    fn latest_schema(&self, subject: &str) -> Result<Arc<WriterSchema>, ConversionError> {
        if let Some(writer) = self.latest.get(&subject.to_string()) {
            return Ok(writer);
        }
        let latest = self.registry.latest(subject).map_err(|e| {
            registry_failure(
                format!("get the latest schema of subject {subject:?} (use.latest.version)"),
                e,
            )
        })?;
        let avro = apache_avro::Schema::parse_str(&latest.schema).map_err(|e| {
            ConversionError::new(format!(
                "the latest schema of subject {subject:?} (id {}) is not valid Avro: {e}",
                latest.id
            ))
        })?;
        Ok(self.latest.put(
            subject.to_string(),
            WriterSchema {
                id: latest.id,
                avro,
            },
        ))
    }

    fn reader_schema(&self, id: SchemaId) -> Result<Arc<ReaderSchema>, ConversionError> {
        if let Some(reader) = self.readers.get(&id) {
            return Ok(reader);
        }
        let text = self.registry.schema(id).map_err(|e| match e.code() {
            Some(SCHEMA_NOT_FOUND | SUBJECT_NOT_FOUND) | Some(404) => {
                ConversionError::new(format!(
                    "schema id {id} not found in the schema registry at {}: {e}",
                    self.registry.location()
                ))
            }
            _ => registry_failure(format!("get schema id {id}"), e),
        })?;
        let reader = reader_for(&text)
            .map_err(|e| ConversionError::new(format!("schema id {id}: {}", e.message)))?;
        Ok(self.readers.put(id, reader))
    }
}

/// Parses a writer's schema and maps it to Connect.
fn reader_for(text: &str) -> Result<ReaderSchema, ConversionError> {
    let avro = apache_avro::Schema::parse_str(text)
        .map_err(|e| ConversionError::new(format!("invalid Avro schema: {e}")))?;
    let json: Json = serde_json::from_str(text)
        .map_err(|e| ConversionError::new(format!("invalid Avro schema JSON: {e}")))?;
    let connect = FromAvro::default().schema(&json, None, false, None)?;
    Ok(ReaderSchema { avro, connect })
}

/// A registry failure while doing `what`, retriable when the registry may answer later.
fn registry_failure(what: String, e: RegistryError) -> ConversionError {
    let mut error = ConversionError::from(e);
    error.message = format!("{what}: {}", error.message);
    error
}

/// A registry error as a conversion error (for callers outside this module).
impl From<RegistryError> for ConversionError {
    fn from(e: RegistryError) -> Self {
        // A registry that cannot be reached or fails on its side may answer later; a 4xx answer
        // (unknown id, incompatible schema) will not change.
        let retriable = match &e {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Api { status, .. } => *status >= 500,
            RegistryError::Invalid { .. } => false,
        };
        ConversionError {
            message: e.to_string(),
            retriable,
        }
    }
}

fn err<T>(message: impl Into<String>) -> Result<T, ConversionError> {
    Err(ConversionError::new(message))
}

fn schema_type(s: &Schema) -> Result<SchemaType, ConversionError> {
    match SchemaType::try_from(s.r#type) {
        Ok(SchemaType::Unspecified) | Err(_) => err(format!("unknown schema type {}", s.r#type)),
        Ok(t) => Ok(t),
    }
}

fn is_logical(s: &Schema, name: &str) -> bool {
    s.name
        .as_deref()
        .is_some_and(|n| n.eq_ignore_ascii_case(name))
}

fn default_of(s: &Schema) -> Option<&Value> {
    s.default_value.as_ref().filter(|v| !record::is_null(v))
}

/// A decimal schema's scale and Avro precision.
fn decimal_params(s: &Schema) -> Result<(i64, i64), ConversionError> {
    let scale = s
        .parameters
        .get("scale")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .ok_or_else(|| ConversionError::new("decimal schema without a valid scale parameter"))?;
    let precision = match s.parameters.get(PRECISION_PARAM) {
        None => DEFAULT_PRECISION,
        Some(p) => p.trim().parse::<i64>().map_err(|_| {
            ConversionError::new(format!(
                "invalid {PRECISION_PARAM} {p:?}: expected an integer"
            ))
        })?,
    };
    Ok((scale, precision))
}

/// Whether a decimal is written with Avro's decimal logical type; otherwise (a scale Avro
/// cannot express) as plain bytes, as Confluent does.
fn native_decimal(scale: i64, precision: i64) -> bool {
    (0..=precision).contains(&scale) && precision >= 1
}

fn non_optional(s: &Schema) -> Schema {
    Schema {
        optional: false,
        ..s.clone()
    }
}

fn type_name(t: SchemaType) -> String {
    t.as_str_name()
        .trim_start_matches("SCHEMA_TYPE_")
        .to_ascii_lowercase()
}

/// The Avro schema (JSON text) AvroConverter writes for a Connect schema.
pub fn avro_schema_text(schema: &Schema) -> Result<String, ConversionError> {
    Ok(ToAvro::default().schema(schema)?.to_string())
}

/// Connect data as the Avro value of the schema [`avro_schema_text`] gives (for writers of Avro
/// container files, which carry the schema once rather than a registry id per record).
pub fn avro_value(
    schema: &Schema,
    value: Option<&Value>,
) -> Result<apache_avro::types::Value, ConversionError> {
    to_avro_value(schema, value)
}

/// The Connect schema AvroConverter reads data written with this Avro schema into.
pub fn connect_schema(avro_schema: &str) -> Result<Schema, ConversionError> {
    Ok(reader_for(avro_schema)?.connect)
}

#[cfg(test)]
mod tests;
