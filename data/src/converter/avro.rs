//! AvroConverter as Confluent's `io.confluent.connect.avro.AvroConverter` writes and reads
//! Kafka bytes: the Schema Registry wire format (magic byte 0, the schema id as 4 bytes
//! big-endian, the Avro binary datum) and Connect schemas mapped to Avro schemas as Confluent's
//! `AvroData` maps them (records named by the Connect schema's name or `ConnectDefault`,
//! optional as a union with null, `connect.*` properties for what Avro cannot say).
//!
//! Avro schemas are built here as JSON; parsing, binary encoding and decoding are
//! apache-avro's. Registry answers are cached both ways, so a cache hit does no I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use apache_avro::types::Value as AvroValue;
use serde_json::{json, Map, Value as Json};
use sluice_proto::connector::v1::{
    data, value, ArrayValue, Data, Field, MapEntry, MapValue, Schema, SchemaType, StructValue,
    Structured, Value,
};

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

/// Builds the Avro schema (as JSON) for a Connect schema, as Confluent's AvroData does.
#[derive(Default)]
struct ToAvro {
    /// Records already written, by full name: later uses refer to them by name.
    named: HashMap<String, Schema>,
    /// How many made-up names (`ConnectDefault`, `MapEntry`) are in use.
    made_up: HashMap<&'static str, usize>,
}

impl ToAvro {
    fn schema(&mut self, s: &Schema) -> Result<Json, ConversionError> {
        let t = schema_type(s)?;
        if t == SchemaType::Struct && is_logical(s, UNION) {
            let mut members = Vec::new();
            if s.optional {
                members.push(json!("null"));
            }
            for field in &s.fields {
                let member = field.schema.as_ref().ok_or_else(|| {
                    ConversionError::new(format!("union member {:?} has no schema", field.name))
                })?;
                members.push(self.schema(&non_optional(member))?);
            }
            return Ok(Json::Array(members));
        }
        let base = self.base(s, t)?;
        if !s.optional {
            return Ok(base);
        }
        // A default must match the union's first branch.
        Ok(match default_of(s) {
            Some(_) => json!([base, "null"]),
            None => json!(["null", base]),
        })
    }

    fn made_up_name(&mut self, base: &'static str) -> String {
        let n = self.made_up.entry(base).or_insert(0);
        *n += 1;
        match *n {
            1 => base.to_string(),
            n => format!("{base}{n}"),
        }
    }

    /// The non-optional schema with its properties.
    fn base(&mut self, s: &Schema, t: SchemaType) -> Result<Json, ConversionError> {
        let mut m = Map::new();
        let mut connect_type = None;
        let (namespace, name) = match s.name.as_deref() {
            Some(full) => match full.rsplit_once('.') {
                Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
                None => (None, full.to_string()),
            },
            None => (Some(NAMESPACE.to_string()), DEFAULT_NAME.to_string()),
        };
        match t {
            SchemaType::Int8 | SchemaType::Int16 => {
                m.insert("type".into(), json!("int"));
                connect_type = Some(if t == SchemaType::Int8 {
                    "int8"
                } else {
                    "int16"
                });
            }
            SchemaType::Int32 => {
                m.insert("type".into(), json!("int"));
            }
            SchemaType::Int64 => {
                m.insert("type".into(), json!("long"));
            }
            SchemaType::Float32 => {
                m.insert("type".into(), json!("float"));
            }
            SchemaType::Float64 => {
                m.insert("type".into(), json!("double"));
            }
            SchemaType::Boolean => {
                m.insert("type".into(), json!("boolean"));
            }
            SchemaType::String => {
                m.insert("type".into(), json!("string"));
            }
            SchemaType::Bytes => {
                m.insert("type".into(), json!("bytes"));
                if is_logical(s, record::DECIMAL) {
                    let (scale, precision) = decimal_params(s)?;
                    m.insert("scale".into(), json!(scale));
                    m.insert("precision".into(), json!(precision));
                }
            }
            SchemaType::Array => {
                let items = s
                    .value_schema
                    .as_deref()
                    .ok_or_else(|| ConversionError::new("array schema without items"))?;
                m.insert("type".into(), json!("array"));
                m.insert("items".into(), self.schema(items)?);
            }
            SchemaType::Map => {
                let (keys, values) = match (s.key_schema.as_deref(), s.value_schema.as_deref()) {
                    (Some(k), Some(v)) => (k, v),
                    _ => return err("map schema without key or value schema"),
                };
                if keys.r#type == SchemaType::String as i32 && !keys.optional {
                    m.insert("type".into(), json!("map"));
                    m.insert("values".into(), self.schema(values)?);
                } else {
                    // Avro maps have string keys: other maps are arrays of key/value records.
                    let mut entry = Map::new();
                    entry.insert("type".into(), json!("record"));
                    match s.name.is_some() {
                        true => {
                            entry.insert("name".into(), json!(name));
                            if let Some(ns) = &namespace {
                                entry.insert("namespace".into(), json!(ns));
                            }
                        }
                        false => {
                            entry.insert("name".into(), json!(self.made_up_name(MAP_ENTRY)));
                            entry.insert("namespace".into(), json!(NAMESPACE));
                        }
                    }
                    let fields = vec![
                        self.field("key", keys, None)?,
                        self.field("value", values, None)?,
                    ];
                    entry.insert("fields".into(), Json::Array(fields));
                    if s.name.is_some() {
                        entry.insert("connect.internal.type".into(), json!(MAP_ENTRY));
                    }
                    m.insert("type".into(), json!("array"));
                    m.insert("items".into(), Json::Object(entry));
                }
            }
            SchemaType::Struct => {
                let full = match &namespace {
                    Some(ns) if s.name.is_some() => format!("{ns}.{name}"),
                    _ => name.clone(),
                };
                let name = match s.name.is_some() {
                    true => {
                        match self.named.get(&full) {
                            Some(seen) if *seen == non_optional(s) => return Ok(json!(full)),
                            Some(_) => {
                                return err(format!(
                                    "two different struct schemas are named {full:?}: Avro \
                                     needs distinct names"
                                ))
                            }
                            None => {}
                        }
                        self.named.insert(full, non_optional(s));
                        name
                    }
                    false => self.made_up_name(DEFAULT_NAME),
                };
                m.insert("type".into(), json!("record"));
                m.insert("name".into(), json!(name));
                if let Some(ns) = &namespace {
                    m.insert("namespace".into(), json!(ns));
                }
                if let Some(doc) = s.parameters.get(RECORD_DOC) {
                    m.insert("doc".into(), json!(doc));
                }
                let mut fields = Vec::with_capacity(s.fields.len());
                for field in &s.fields {
                    let schema = field.schema.as_ref().ok_or_else(|| {
                        ConversionError::new(format!("field {:?} has no schema", field.name))
                    })?;
                    let doc = s
                        .parameters
                        .get(&format!("{FIELD_DOC_PREFIX}{}", field.name));
                    fields.push(self.field(&field.name, schema, doc.map(String::as_str))?);
                }
                m.insert("fields".into(), Json::Array(fields));
            }
            SchemaType::Unspecified => return err("schema without a type"),
        }

        // What Avro cannot say, as Confluent's connect.* properties.
        if let Some(doc) = &s.doc {
            m.insert("connect.doc".into(), json!(doc));
        }
        if let Some(version) = s.version {
            m.insert("connect.version".into(), json!(version));
        }
        let params: BTreeMap<&String, &String> = s
            .parameters
            .iter()
            .filter(|(k, _)| *k != FIELD_DEFAULT_FLAG)
            .collect();
        if !params.is_empty() {
            m.insert("connect.parameters".into(), json!(params));
        }
        if let Some(default) = default_of(s) {
            if !s.parameters.contains_key(FIELD_DEFAULT_FLAG) {
                m.insert("connect.default".into(), default_json(s, default)?);
            }
        }
        if let Some(name) = &s.name {
            m.insert("connect.name".into(), json!(name));
        }
        if let Some(connect_type) = connect_type {
            m.insert("connect.type".into(), json!(connect_type));
        }
        if is_logical(s, record::DECIMAL) {
            // Also when Avro cannot express the scale (Confluent's legacy form): apache-avro
            // then reads the schema as plain bytes, and `base_value` writes plain bytes.
            m.insert("logicalType".into(), json!("decimal"));
        } else if is_logical(s, record::TIME) && t == SchemaType::Int32 {
            m.insert("logicalType".into(), json!("time-millis"));
        } else if is_logical(s, record::TIMESTAMP) && t == SchemaType::Int64 {
            m.insert("logicalType".into(), json!("timestamp-millis"));
        } else if is_logical(s, record::DATE) && t == SchemaType::Int32 {
            m.insert("logicalType".into(), json!("date"));
        }
        let mut avro_params: Vec<(&String, &String)> = s
            .parameters
            .iter()
            .filter(|(k, _)| k.starts_with("avro"))
            .collect();
        avro_params.sort();
        for (k, v) in avro_params {
            m.insert(k.clone(), json!(v));
        }
        if m.len() == 1 {
            if let Some(Json::String(primitive)) = m.get("type") {
                return Ok(json!(primitive));
            }
        }
        Ok(Json::Object(m))
    }

    fn field(
        &mut self,
        name: &str,
        schema: &Schema,
        doc: Option<&str>,
    ) -> Result<Json, ConversionError> {
        let mut f = Map::new();
        f.insert("name".into(), json!(name));
        f.insert("type".into(), self.schema(schema)?);
        if let Some(doc) = doc {
            f.insert("doc".into(), json!(doc));
        }
        match default_of(schema) {
            Some(default) => {
                f.insert("default".into(), default_json(schema, default)?);
            }
            None if schema.optional => {
                f.insert("default".into(), Json::Null);
            }
            None => {}
        }
        Ok(Json::Object(f))
    }
}

/// A Connect default value as Avro writes defaults in JSON (bytes as ISO-8859-1 text).
fn default_json(s: &Schema, v: &Value) -> Result<Json, ConversionError> {
    use value::Kind;
    let t = schema_type(s)?;
    let bad = || {
        err(format!(
            "invalid default value for a {} schema",
            t.as_str_name()
                .trim_start_matches("SCHEMA_TYPE_")
                .to_ascii_lowercase()
        ))
    };
    Ok(match (&v.kind, t) {
        (None | Some(Kind::Null(_)), _) => Json::Null,
        (Some(Kind::Int(i)), _) => json!(i),
        (Some(Kind::Float32(f)), _) => json!(f),
        (Some(Kind::Float64(f)), _) => json!(f),
        (Some(Kind::Boolean(b)), _) => json!(b),
        (Some(Kind::String(s)), _) => json!(s),
        (Some(Kind::Bytes(b)), _) => Json::String(b.iter().map(|&b| char::from(b)).collect()),
        (Some(Kind::Array(a)), SchemaType::Array) => {
            let items = s
                .value_schema
                .as_deref()
                .ok_or_else(|| ConversionError::new("array schema without items"))?;
            Json::Array(
                a.items
                    .iter()
                    .map(|i| default_json(items, i))
                    .collect::<Result<_, _>>()?,
            )
        }
        (Some(Kind::Map(map)), SchemaType::Map) => {
            let (Some(keys), Some(values)) = (s.key_schema.as_deref(), s.value_schema.as_deref())
            else {
                return bad();
            };
            let null = Value { kind: None };
            if keys.r#type == SchemaType::String as i32 && !keys.optional {
                let mut out = Map::new();
                for e in &map.entries {
                    let Some(Kind::String(k)) = e.key.as_ref().and_then(|k| k.kind.as_ref()) else {
                        return bad();
                    };
                    out.insert(
                        k.clone(),
                        default_json(values, e.value.as_ref().unwrap_or(&null))?,
                    );
                }
                Json::Object(out)
            } else {
                let mut out = Vec::new();
                for e in &map.entries {
                    out.push(json!({
                        "key": default_json(keys, e.key.as_ref().unwrap_or(&null))?,
                        "value": default_json(values, e.value.as_ref().unwrap_or(&null))?,
                    }));
                }
                Json::Array(out)
            }
        }
        (Some(Kind::Struct(st)), SchemaType::Struct) => {
            let mut out = Map::new();
            let null = Value { kind: None };
            for (i, field) in s.fields.iter().enumerate() {
                let Some(fs) = field.schema.as_ref() else {
                    return bad();
                };
                let v = st.fields.get(i).filter(|v| !record::is_null(v));
                let v = v.or(default_of(fs)).unwrap_or(&null);
                out.insert(field.name.clone(), default_json(fs, v)?);
            }
            Json::Object(out)
        }
        _ => return bad(),
    })
}

fn type_name(t: SchemaType) -> String {
    t.as_str_name()
        .trim_start_matches("SCHEMA_TYPE_")
        .to_ascii_lowercase()
}

/// Connect data to an Avro value shaped as `ToAvro` shapes the schema.
fn to_avro_value(s: &Schema, v: Option<&Value>) -> Result<AvroValue, ConversionError> {
    let v = v.filter(|v| !record::is_null(v)).or(default_of(s));
    let t = schema_type(s)?;
    if t == SchemaType::Struct && is_logical(s, UNION) {
        let offset = u32::from(s.optional);
        let Some(value::Kind::Struct(st)) = v.and_then(|v| v.kind.as_ref()) else {
            return match (v, s.optional) {
                (None, true) => Ok(AvroValue::Union(0, Box::new(AvroValue::Null))),
                _ => err("a union must be a struct with one field set"),
            };
        };
        for (i, (field, fv)) in s.fields.iter().zip(&st.fields).enumerate() {
            if record::is_null(fv) {
                continue;
            }
            let fs = field.schema.as_ref().map(non_optional).unwrap_or_default();
            let index = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(offset);
            return Ok(AvroValue::Union(index, Box::new(base_value(&fs, fv)?)));
        }
        return match s.optional {
            true => Ok(AvroValue::Union(0, Box::new(AvroValue::Null))),
            false => err("a union struct with no field set"),
        };
    }
    if s.optional {
        let (value_index, null_index) = match default_of(s) {
            Some(_) => (0, 1),
            None => (1, 0),
        };
        return Ok(match v {
            None => AvroValue::Union(null_index, Box::new(AvroValue::Null)),
            Some(v) => AvroValue::Union(value_index, Box::new(base_value(s, v)?)),
        });
    }
    match v {
        None => err(format!(
            "found null value for non-optional {} schema{}",
            type_name(t),
            s.name
                .as_deref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default()
        )),
        Some(v) => base_value(s, v),
    }
}

fn mismatch(s: &Schema, v: &Value) -> ConversionError {
    let t = SchemaType::try_from(s.r#type).unwrap_or(SchemaType::Unspecified);
    ConversionError::new(format!(
        "invalid value for {} schema{}: {}",
        type_name(t),
        s.name
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default(),
        crate::json::kind_name(v.kind.as_ref())
    ))
}

fn int32(s: &Schema, v: &Value, min: i64, max: i64) -> Result<i32, ConversionError> {
    match v.kind {
        Some(value::Kind::Int(i)) if (min..=max).contains(&i) => Ok(i as i32),
        Some(value::Kind::Int(i)) => err(format!(
            "value {i} out of range for {} schema",
            type_name(schema_type(s)?)
        )),
        _ => Err(mismatch(s, v)),
    }
}

fn base_value(s: &Schema, v: &Value) -> Result<AvroValue, ConversionError> {
    use value::Kind;
    let t = schema_type(s)?;
    Ok(match t {
        SchemaType::Int8 => AvroValue::Int(int32(s, v, i8::MIN.into(), i8::MAX.into())?),
        SchemaType::Int16 => AvroValue::Int(int32(s, v, i16::MIN.into(), i16::MAX.into())?),
        SchemaType::Int32 => {
            let i = int32(s, v, i32::MIN.into(), i32::MAX.into())?;
            if is_logical(s, record::DATE) {
                AvroValue::Date(i)
            } else if is_logical(s, record::TIME) {
                AvroValue::TimeMillis(i)
            } else {
                AvroValue::Int(i)
            }
        }
        SchemaType::Int64 => match v.kind {
            Some(Kind::Int(i)) if is_logical(s, record::TIMESTAMP) => AvroValue::TimestampMillis(i),
            Some(Kind::Int(i)) => AvroValue::Long(i),
            _ => return Err(mismatch(s, v)),
        },
        SchemaType::Float32 => match v.kind {
            Some(Kind::Float32(f)) => AvroValue::Float(f),
            Some(Kind::Float64(f)) => AvroValue::Float(f as f32),
            _ => return Err(mismatch(s, v)),
        },
        SchemaType::Float64 => match v.kind {
            Some(Kind::Float64(f)) => AvroValue::Double(f),
            Some(Kind::Float32(f)) => AvroValue::Double(f.into()),
            _ => return Err(mismatch(s, v)),
        },
        SchemaType::Boolean => match v.kind {
            Some(Kind::Boolean(b)) => AvroValue::Boolean(b),
            _ => return Err(mismatch(s, v)),
        },
        SchemaType::String => match &v.kind {
            Some(Kind::String(text)) => AvroValue::String(text.clone()),
            _ => return Err(mismatch(s, v)),
        },
        SchemaType::Bytes => match &v.kind {
            Some(Kind::Bytes(b)) if is_logical(s, record::DECIMAL) => {
                let (scale, precision) = decimal_params(s)?;
                match native_decimal(scale, precision) {
                    true => AvroValue::Decimal(apache_avro::Decimal::from(b)),
                    false => AvroValue::Bytes(b.clone()),
                }
            }
            Some(Kind::Bytes(b)) => AvroValue::Bytes(b.clone()),
            _ => return Err(mismatch(s, v)),
        },
        SchemaType::Array => {
            let items = s.value_schema.as_deref().unwrap_or(s);
            match &v.kind {
                Some(Kind::Array(a)) => AvroValue::Array(
                    a.items
                        .iter()
                        .map(|i| to_avro_value(items, Some(i)))
                        .collect::<Result<_, _>>()?,
                ),
                _ => return Err(mismatch(s, v)),
            }
        }
        SchemaType::Map => {
            let (Some(keys), Some(values)) = (s.key_schema.as_deref(), s.value_schema.as_deref())
            else {
                return err("map schema without key or value schema");
            };
            let Some(Kind::Map(map)) = &v.kind else {
                return Err(mismatch(s, v));
            };
            if keys.r#type == SchemaType::String as i32 && !keys.optional {
                let mut out = HashMap::with_capacity(map.entries.len());
                for e in &map.entries {
                    let Some(Kind::String(k)) = e.key.as_ref().and_then(|k| k.kind.as_ref()) else {
                        return err("map key is not a string");
                    };
                    out.insert(k.clone(), to_avro_value(values, e.value.as_ref())?);
                }
                AvroValue::Map(out)
            } else {
                AvroValue::Array(
                    map.entries
                        .iter()
                        .map(|e| {
                            Ok(AvroValue::Record(vec![
                                ("key".into(), to_avro_value(keys, e.key.as_ref())?),
                                ("value".into(), to_avro_value(values, e.value.as_ref())?),
                            ]))
                        })
                        .collect::<Result<_, ConversionError>>()?,
                )
            }
        }
        SchemaType::Struct => {
            let Some(Kind::Struct(st)) = &v.kind else {
                return Err(mismatch(s, v));
            };
            let mut fields = Vec::with_capacity(s.fields.len());
            for (i, field) in s.fields.iter().enumerate() {
                let fs = field.schema.as_ref().ok_or_else(|| {
                    ConversionError::new(format!("field {:?} has no schema", field.name))
                })?;
                let value = to_avro_value(fs, st.fields.get(i)).map_err(|e| {
                    ConversionError::new(format!("field {:?}: {}", field.name, e.message))
                })?;
                fields.push((field.name.clone(), value));
            }
            AvroValue::Record(fields)
        }
        SchemaType::Unspecified => return err("schema without a type"),
    })
}

fn null_value() -> Value {
    Value {
        kind: Some(value::Kind::Null(true)),
    }
}

/// An Avro value read with the writer's schema to Connect, following the Connect schema made
/// from that writer's schema.
fn from_avro_value(s: &Schema, v: AvroValue) -> Result<Value, ConversionError> {
    use value::Kind;
    let kind = match v {
        AvroValue::Null => return Ok(null_value()),
        AvroValue::Union(_, inner) if is_logical(s, UNION) => {
            if matches!(*inner, AvroValue::Null) {
                return Ok(null_value());
            }
            let index = union_branch(s, &inner)
                .ok_or_else(|| ConversionError::new("union value matches no union member"))?;
            let mut fields = vec![null_value(); s.fields.len()];
            let fs = s.fields[index].schema.clone().unwrap_or_default();
            fields[index] = from_avro_value(&fs, *inner)?;
            Kind::Struct(StructValue {
                fields,
                names: vec![],
            })
        }
        AvroValue::Union(_, inner) => return from_avro_value(s, *inner),
        AvroValue::Boolean(b) => Kind::Boolean(b),
        AvroValue::Int(i) | AvroValue::Date(i) | AvroValue::TimeMillis(i) => Kind::Int(i.into()),
        AvroValue::Long(i)
        | AvroValue::TimeMicros(i)
        | AvroValue::TimestampMillis(i)
        | AvroValue::TimestampMicros(i)
        | AvroValue::TimestampNanos(i)
        | AvroValue::LocalTimestampMillis(i)
        | AvroValue::LocalTimestampMicros(i)
        | AvroValue::LocalTimestampNanos(i) => Kind::Int(i),
        AvroValue::Float(f) => Kind::Float32(f),
        AvroValue::Double(f) => Kind::Float64(f),
        AvroValue::String(text) | AvroValue::Enum(_, text) => Kind::String(text),
        AvroValue::Uuid(u) => Kind::String(u.to_string()),
        AvroValue::Bytes(b) | AvroValue::Fixed(_, b) => Kind::Bytes(b),
        AvroValue::Decimal(d) => Kind::Bytes(
            Vec::<u8>::try_from(&d)
                .map_err(|e| ConversionError::new(format!("invalid decimal: {e}")))?,
        ),
        AvroValue::Array(items) if s.r#type == SchemaType::Map as i32 => {
            let keys = s.key_schema.clone().unwrap_or_default();
            let values = s.value_schema.clone().unwrap_or_default();
            let mut entries = Vec::with_capacity(items.len());
            for item in items {
                let AvroValue::Record(fields) = item else {
                    return err("map entry is not a record");
                };
                let mut key = None;
                let mut value = None;
                for (name, v) in fields {
                    match name.as_str() {
                        "key" => key = Some(from_avro_value(&keys, v)?),
                        "value" => value = Some(from_avro_value(&values, v)?),
                        _ => {}
                    }
                }
                entries.push(MapEntry { key, value });
            }
            Kind::Map(MapValue { entries })
        }
        AvroValue::Array(items) => {
            let schema = s.value_schema.clone().unwrap_or_default();
            Kind::Array(ArrayValue {
                items: items
                    .into_iter()
                    .map(|i| from_avro_value(&schema, i))
                    .collect::<Result<_, _>>()?,
            })
        }
        AvroValue::Map(map) => {
            let values = s.value_schema.clone().unwrap_or_default();
            let mut sorted: Vec<(String, AvroValue)> = map.into_iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let entries = sorted
                .into_iter()
                .map(|(k, v)| {
                    Ok(MapEntry {
                        key: Some(Value {
                            kind: Some(Kind::String(k)),
                        }),
                        value: Some(from_avro_value(&values, v)?),
                    })
                })
                .collect::<Result<_, ConversionError>>()?;
            Kind::Map(MapValue { entries })
        }
        AvroValue::Record(fields) => {
            let mut by_name: HashMap<String, AvroValue> = fields.into_iter().collect();
            let mut out = Vec::with_capacity(s.fields.len());
            for field in &s.fields {
                let fs = field.schema.clone().unwrap_or_default();
                out.push(match by_name.remove(&field.name) {
                    Some(v) => from_avro_value(&fs, v)?,
                    None => null_value(),
                });
            }
            Kind::Struct(StructValue {
                fields: out,
                names: vec![],
            })
        }
        other => return err(format!("unsupported Avro value {other:?}")),
    };
    Ok(Value { kind: Some(kind) })
}

/// Which field of a union struct holds a value of this Avro kind.
fn union_branch(s: &Schema, v: &AvroValue) -> Option<usize> {
    s.fields.iter().position(|f| {
        let Some(fs) = f.schema.as_ref() else {
            return false;
        };
        let t = SchemaType::try_from(fs.r#type).unwrap_or(SchemaType::Unspecified);
        match v {
            AvroValue::Boolean(_) => t == SchemaType::Boolean,
            AvroValue::Int(_) | AvroValue::Date(_) | AvroValue::TimeMillis(_) => {
                matches!(t, SchemaType::Int8 | SchemaType::Int16 | SchemaType::Int32)
            }
            AvroValue::Long(_) | AvroValue::TimestampMillis(_) => t == SchemaType::Int64,
            AvroValue::Float(_) => t == SchemaType::Float32,
            AvroValue::Double(_) => t == SchemaType::Float64,
            AvroValue::String(_) | AvroValue::Enum(..) => t == SchemaType::String,
            AvroValue::Bytes(_) | AvroValue::Fixed(..) | AvroValue::Decimal(_) => {
                t == SchemaType::Bytes
            }
            AvroValue::Array(_) => matches!(t, SchemaType::Array | SchemaType::Map),
            AvroValue::Map(_) => t == SchemaType::Map,
            AvroValue::Record(fields) => {
                t == SchemaType::Struct
                    && fs.fields.len() == fields.len()
                    && fs.fields.iter().zip(fields).all(|(a, (b, _))| a.name == *b)
            }
            _ => false,
        }
    })
}

/// Maps an Avro schema (as JSON) to Connect, as Confluent's AvroData reads it.
#[derive(Default)]
struct FromAvro {
    /// Named types already read, by full name.
    named: HashMap<String, Schema>,
    /// Records being read: a reference to one of them is a recursive schema.
    open: HashSet<String>,
}

fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

fn is_made_up(full: &str, base: &str) -> bool {
    full.strip_prefix(NAMESPACE)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_prefix(base))
        .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
}

fn primitive(t: SchemaType) -> Schema {
    Schema {
        r#type: t as i32,
        ..Schema::default()
    }
}

fn logical(t: SchemaType, name: &str) -> Schema {
    Schema {
        name: Some(name.to_string()),
        version: Some(1),
        ..primitive(t)
    }
}

impl FromAvro {
    fn schema(
        &mut self,
        j: &Json,
        namespace: Option<&str>,
        force_optional: bool,
        field_default: Option<&Json>,
    ) -> Result<Schema, ConversionError> {
        let empty = Map::new();
        let (type_name, m) = match j {
            Json::String(t) => (t.as_str(), &empty),
            Json::Object(m) => match m.get("type") {
                Some(Json::String(t)) => (t.as_str(), m),
                Some(inner @ (Json::Object(_) | Json::Array(_))) => {
                    return self.schema(inner, namespace, force_optional, field_default)
                }
                _ => return err(format!("Avro schema without a type: {j}")),
            },
            Json::Array(members) => return self.union(members, namespace),
            _ => return err(format!("invalid Avro schema: {j}")),
        };
        let prop_str = |k: &str| m.get(k).and_then(Json::as_str);
        let logical_type = prop_str("logicalType");
        let own_namespace = m
            .get("namespace")
            .and_then(Json::as_str)
            .or(namespace)
            .map(str::to_string);
        let mut s = match type_name {
            "boolean" => primitive(SchemaType::Boolean),
            "int" => match (prop_str("connect.type"), logical_type) {
                (_, Some("date")) => logical(SchemaType::Int32, record::DATE),
                (_, Some("time-millis")) => logical(SchemaType::Int32, record::TIME),
                (Some("int8"), _) => primitive(SchemaType::Int8),
                (Some("int16"), _) => primitive(SchemaType::Int16),
                _ => primitive(SchemaType::Int32),
            },
            "long" => match logical_type {
                Some("timestamp-millis") => logical(SchemaType::Int64, record::TIMESTAMP),
                _ => primitive(SchemaType::Int64),
            },
            "float" => primitive(SchemaType::Float32),
            "double" => primitive(SchemaType::Float64),
            "string" => primitive(SchemaType::String),
            "bytes" | "fixed" => {
                if type_name == "fixed" {
                    if let Some(name) = prop_str("name") {
                        let full = full_name(name, own_namespace.as_deref());
                        self.named.insert(full, primitive(SchemaType::Bytes));
                    }
                }
                match logical_type {
                    Some("decimal") => {
                        let scale = m.get("scale").and_then(Json::as_i64).ok_or_else(|| {
                            ConversionError::new("scale must be specified and must be a number")
                        })?;
                        let mut s = logical(SchemaType::Bytes, record::DECIMAL);
                        s.parameters.insert("scale".into(), scale.to_string());
                        match m.get("precision").map(Json::as_i64) {
                            Some(Some(DEFAULT_PRECISION)) | None => {}
                            Some(Some(p)) => {
                                s.parameters.insert(PRECISION_PARAM.into(), p.to_string());
                            }
                            Some(None) => return err("precision property must be a JSON integer"),
                        }
                        s
                    }
                    _ => primitive(SchemaType::Bytes),
                }
            }
            "enum" => {
                let name = prop_str("name").unwrap_or_default();
                let full = full_name(name, own_namespace.as_deref());
                let mut s = primitive(SchemaType::String);
                s.parameters.insert(ENUM_PARAM.into(), full.clone());
                if let Some(Json::Array(symbols)) = m.get("symbols") {
                    for symbol in symbols.iter().filter_map(Json::as_str) {
                        s.parameters
                            .insert(format!("{ENUM_PARAM}.{symbol}"), symbol.to_string());
                    }
                }
                s.name = Some(full.clone());
                self.named.insert(full, s.clone());
                s
            }
            "array" => {
                let items = m
                    .get("items")
                    .ok_or_else(|| ConversionError::new("Avro array without items"))?;
                match self.map_entry(items, own_namespace.as_deref())? {
                    Some((k, v)) => Schema {
                        r#type: SchemaType::Map as i32,
                        key_schema: Some(Box::new(k)),
                        value_schema: Some(Box::new(v)),
                        ..Schema::default()
                    },
                    None => Schema {
                        r#type: SchemaType::Array as i32,
                        value_schema: Some(Box::new(self.schema(
                            items,
                            own_namespace.as_deref(),
                            false,
                            None,
                        )?)),
                        ..Schema::default()
                    },
                }
            }
            "map" => {
                let values = m
                    .get("values")
                    .ok_or_else(|| ConversionError::new("Avro map without values"))?;
                Schema {
                    r#type: SchemaType::Map as i32,
                    key_schema: Some(Box::new(primitive(SchemaType::String))),
                    value_schema: Some(Box::new(self.schema(
                        values,
                        own_namespace.as_deref(),
                        false,
                        None,
                    )?)),
                    ..Schema::default()
                }
            }
            "record" | "error" => self.record(m, own_namespace.as_deref())?,
            "null" => return err("standalone null schemas are not supported by this converter"),
            reference => {
                let full = full_name(reference, namespace);
                if self.open.contains(&full) {
                    return err(format!(
                        "recursive Avro schema {full:?} is not supported by this converter"
                    ));
                }
                let mut s = self
                    .named
                    .get(&full)
                    .or_else(|| self.named.get(reference))
                    .cloned()
                    .ok_or_else(|| {
                        ConversionError::new(format!("unknown Avro type {reference:?}"))
                    })?;
                s.optional = force_optional;
                return Ok(s);
            }
        };

        // Confluent's connect.* properties.
        if let Some(doc) = prop_str("connect.doc") {
            s.doc = Some(doc.to_string());
        }
        match m.get("connect.version") {
            None => {}
            Some(v) => {
                let v = v
                    .as_i64()
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(|| {
                        ConversionError::new(format!("invalid Connect version found: {v}"))
                    })?;
                s.version = Some(v);
            }
        }
        match m.get("connect.parameters") {
            None => {}
            Some(Json::Object(params)) => {
                for (k, v) in params {
                    let Json::String(v) = v else {
                        return err(format!(
                            "expected schema parameter values to be strings but found: {v}"
                        ));
                    };
                    s.parameters.insert(k.clone(), v.clone());
                }
            }
            Some(other) => {
                return err(format!(
                    "expected JSON object for schema parameters but found: {other}"
                ))
            }
        }
        for (k, v) in m.iter().filter(|(k, _)| k.starts_with("avro")) {
            let text = match v {
                Json::String(text) => text.clone(),
                other => other.to_string(),
            };
            s.parameters.insert(k.clone(), text);
        }
        match m.get("connect.name") {
            Some(Json::String(name)) => s.name = Some(name.clone()),
            Some(other) => return err(format!("invalid schema name: {other}")),
            None => {}
        }
        if type_name == "record" || type_name == "error" {
            let full = full_name(
                prop_str("name").unwrap_or_default(),
                own_namespace.as_deref(),
            );
            if s.name.is_none() && !is_made_up(&full, DEFAULT_NAME) {
                s.name = Some(full.clone());
            }
            self.open.remove(&full);
            self.named.insert(full, s.clone());
        }
        let default = match (m.get("connect.default"), field_default) {
            (Some(d), _) => Some(d),
            (None, Some(d)) => {
                s.parameters
                    .insert(FIELD_DEFAULT_FLAG.into(), "true".into());
                Some(d)
            }
            (None, None) => None,
        };
        if let Some(default) = default {
            s.default_value = default_from_json(&s, default)?;
        }
        s.optional = force_optional;
        Ok(s)
    }

    fn record(
        &mut self,
        m: &Map<String, Json>,
        namespace: Option<&str>,
    ) -> Result<Schema, ConversionError> {
        let name = m
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| ConversionError::new("Avro record without a name"))?;
        let full = full_name(name, namespace);
        let record_namespace = full.rsplit_once('.').map(|(ns, _)| ns.to_string());
        self.open.insert(full);
        let mut s = primitive(SchemaType::Struct);
        if let Some(doc) = m.get("doc").and_then(Json::as_str) {
            s.parameters.insert(RECORD_DOC.into(), doc.to_string());
        }
        let Some(Json::Array(fields)) = m.get("fields") else {
            return err(format!("Avro record {name:?} without fields"));
        };
        for f in fields {
            let fname = f.get("name").and_then(Json::as_str).ok_or_else(|| {
                ConversionError::new(format!("a field of record {name:?} has no name"))
            })?;
            if let Some(doc) = f.get("doc").and_then(Json::as_str) {
                s.parameters
                    .insert(format!("{FIELD_DOC_PREFIX}{fname}"), doc.to_string());
            }
            let ftype = f
                .get("type")
                .ok_or_else(|| ConversionError::new(format!("field {fname:?} has no type")))?;
            let fs = self.schema(ftype, record_namespace.as_deref(), false, f.get("default"))?;
            s.fields.push(Field {
                name: fname.to_string(),
                schema: Some(fs),
            });
        }
        Ok(s)
    }

    /// An array's items as the key and value schemas of a map, when they are map entries.
    fn map_entry(
        &mut self,
        items: &Json,
        namespace: Option<&str>,
    ) -> Result<Option<(Schema, Schema)>, ConversionError> {
        let Json::Object(m) = items else {
            return Ok(None);
        };
        if m.get("type").and_then(Json::as_str) != Some("record") {
            return Ok(None);
        }
        let name = m.get("name").and_then(Json::as_str).unwrap_or_default();
        let ns = m.get("namespace").and_then(Json::as_str).or(namespace);
        let full = full_name(name, ns);
        let internal = m.get("connect.internal.type").and_then(Json::as_str) == Some(MAP_ENTRY);
        if !internal && !is_made_up(&full, MAP_ENTRY) {
            return Ok(None);
        }
        let fields = match m.get("fields") {
            Some(Json::Array(fields)) if fields.len() == 2 => fields,
            _ => {
                return err(
                    "found map encoded as array of key-value pairs, but array elements \
                            do not match the expected format",
                )
            }
        };
        let field = |n: &str| {
            fields
                .iter()
                .find(|f| f.get("name").and_then(Json::as_str) == Some(n))
                .and_then(|f| f.get("type"))
        };
        let (Some(k), Some(v)) = (field("key"), field("value")) else {
            return err(
                "found map encoded as array of key-value pairs, but array elements do \
                        not match the expected format",
            );
        };
        let ns = full.rsplit_once('.').map(|(ns, _)| ns.to_string());
        let key = self.schema(k, ns.as_deref(), false, None)?;
        let value = self.schema(v, ns.as_deref(), false, None)?;
        Ok(Some((key, value)))
    }

    fn union(
        &mut self,
        members: &[Json],
        namespace: Option<&str>,
    ) -> Result<Schema, ConversionError> {
        let is_null = |j: &Json| j.as_str() == Some("null");
        if members.len() == 2 && members.iter().any(is_null) {
            if let Some(other) = members.iter().find(|m| !is_null(m)) {
                return self.schema(other, namespace, true, None);
            }
        }
        let mut s = primitive(SchemaType::Struct);
        s.name = Some(UNION.into());
        let mut names = HashSet::new();
        for member in members {
            if is_null(member) {
                s.optional = true;
                continue;
            }
            let name = match member {
                Json::String(t) => t.rsplit('.').next().unwrap_or(t).to_string(),
                Json::Object(m) => match m.get("type").and_then(Json::as_str) {
                    Some("record" | "enum" | "fixed") => m
                        .get("name")
                        .and_then(Json::as_str)
                        .map(|n| n.rsplit('.').next().unwrap_or(n).to_string())
                        .unwrap_or_default(),
                    Some(t) => t.to_string(),
                    None => String::new(),
                },
                _ => String::new(),
            };
            if !names.insert(name.clone()) {
                return err("multiple union schemas map to the Connect union field name");
            }
            let schema = self.schema(member, namespace, true, None)?;
            s.fields.push(Field {
                name,
                schema: Some(schema),
            });
        }
        Ok(s)
    }
}

/// An Avro JSON default to a Connect value of the schema; `None` for null.
fn default_from_json(s: &Schema, j: &Json) -> Result<Option<Value>, ConversionError> {
    use value::Kind;
    if j.is_null() {
        return Ok(None);
    }
    let t = schema_type(s)?;
    let bad = || err(format!("invalid default {j} for a {} schema", type_name(t)));
    let kind = match t {
        SchemaType::Int8 | SchemaType::Int16 | SchemaType::Int32 | SchemaType::Int64 => {
            match j.as_i64() {
                Some(i) => Kind::Int(i),
                None => return bad(),
            }
        }
        SchemaType::Float32 => match j.as_f64() {
            Some(f) => Kind::Float32(f as f32),
            None => return bad(),
        },
        SchemaType::Float64 => match j.as_f64() {
            Some(f) => Kind::Float64(f),
            None => return bad(),
        },
        SchemaType::Boolean => match j.as_bool() {
            Some(b) => Kind::Boolean(b),
            None => return bad(),
        },
        SchemaType::String => match j.as_str() {
            Some(text) => Kind::String(text.to_string()),
            None => return bad(),
        },
        SchemaType::Bytes => match j.as_str() {
            Some(text) => Kind::Bytes(
                text.chars()
                    .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                    .collect(),
            ),
            None => return bad(),
        },
        SchemaType::Array => {
            let items = s.value_schema.clone().unwrap_or_default();
            let Some(a) = j.as_array() else {
                return bad();
            };
            Kind::Array(ArrayValue {
                items: a
                    .iter()
                    .map(|i| Ok(default_from_json(&items, i)?.unwrap_or_else(null_value)))
                    .collect::<Result<_, ConversionError>>()?,
            })
        }
        SchemaType::Map => {
            let keys = s.key_schema.clone().unwrap_or_default();
            let values = s.value_schema.clone().unwrap_or_default();
            let mut entries = Vec::new();
            match j {
                Json::Object(m) => {
                    for (k, v) in m {
                        entries.push(MapEntry {
                            key: Some(Value {
                                kind: Some(Kind::String(k.clone())),
                            }),
                            value: default_from_json(&values, v)?,
                        });
                    }
                }
                Json::Array(a) => {
                    for e in a {
                        let (k, v) = match e {
                            Json::Array(pair) if pair.len() == 2 => (&pair[0], &pair[1]),
                            Json::Object(o) => match (o.get("key"), o.get("value")) {
                                (Some(k), Some(v)) => (k, v),
                                _ => return bad(),
                            },
                            _ => return bad(),
                        };
                        entries.push(MapEntry {
                            key: default_from_json(&keys, k)?,
                            value: default_from_json(&values, v)?,
                        });
                    }
                }
                _ => return bad(),
            }
            Kind::Map(MapValue { entries })
        }
        SchemaType::Struct => {
            let Some(o) = j.as_object() else {
                return bad();
            };
            let mut fields = Vec::with_capacity(s.fields.len());
            for field in &s.fields {
                let fs = field.schema.clone().unwrap_or_default();
                fields.push(match o.get(&field.name) {
                    Some(v) => default_from_json(&fs, v)?.unwrap_or_else(null_value),
                    None => null_value(),
                });
            }
            Kind::Struct(StructValue {
                fields,
                names: vec![],
            })
        }
        SchemaType::Unspecified => return bad(),
    };
    Ok(Some(Value { kind: Some(kind) }))
}

/// The Avro schema (JSON text) AvroConverter writes for a Connect schema.
pub fn avro_schema_text(schema: &Schema) -> Result<String, ConversionError> {
    Ok(ToAvro::default().schema(schema)?.to_string())
}

/// The Connect schema AvroConverter reads data written with this Avro schema into.
pub fn connect_schema(avro_schema: &str) -> Result<Schema, ConversionError> {
    Ok(reader_for(avro_schema)?.connect)
}

#[cfg(test)]
mod tests;
