//! Converters between the protocol's keys/values and Kafka bytes, with Kafka Connect's class
//! names, configuration keys and byte-for-byte output: JsonConverter (with and without the
//! schema envelope, logical types included), StringConverter, ByteArrayConverter and the
//! fixed-width primitive converters (Integer, Long, Short, Float, Double, Boolean); Confluent's
//! AvroConverter with the Schema Registry wire format; headers as SimpleHeaderConverter writes
//! and reads them.
//!
//! As in Kafka, a converter knows whether it converts keys or values (`Side`, Kafka's
//! `configure(configs, isKey)`) and is told each record's topic.

pub mod avro;
pub mod header;
mod primitive;
pub mod registry;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use sluice_proto::connector::v1::{data, value, Data, Schema, SchemaType, Structured, Value};

use self::avro::AvroConverter;
pub use self::header::{header_bytes, header_value};
pub use crate::error::ConversionError;
use crate::json::{self, DecimalFormat, JsonOptions};
pub use crate::record::Side;
/// A key or value that may be its own Kafka bytes. See [`Converter::from_connect_plain`].
pub use sluice_proto::wire::PlainData;

/// Which converter class, by any of its accepted names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConverterKind {
    Json,
    String,
    ByteArray,
    /// `IntegerConverter`: 4 bytes, big-endian.
    Integer,
    /// `LongConverter`: 8 bytes, big-endian.
    Long,
    /// `ShortConverter`: 2 bytes, big-endian.
    Short,
    /// `FloatConverter`: IEEE 754 single, big-endian.
    Float,
    /// `DoubleConverter`: IEEE 754 double, big-endian.
    Double,
    /// `BooleanConverter`: one byte, 1 or 0.
    Boolean,
    /// Confluent's `AvroConverter`: Avro with the Schema Registry wire format.
    Avro,
}

const ALL_KINDS: [ConverterKind; 10] = [
    ConverterKind::Json,
    ConverterKind::String,
    ConverterKind::ByteArray,
    ConverterKind::Integer,
    ConverterKind::Long,
    ConverterKind::Short,
    ConverterKind::Float,
    ConverterKind::Double,
    ConverterKind::Boolean,
    ConverterKind::Avro,
];

impl ConverterKind {
    /// The kind for a class name: Kafka's fully qualified name, its simple name, or a short
    /// lowercase alias (`json`, `string`, `bytearray`, `integer`, ...).
    pub fn from_class(class: &str) -> Option<ConverterKind> {
        let class = class.trim();
        ALL_KINDS.into_iter().find(|kind| {
            let full = kind.class_name();
            let simple = full.rsplit('.').next().unwrap_or(full);
            class == full
                || class == simple
                || class == simple.trim_end_matches("Converter").to_ascii_lowercase()
        })
    }

    /// Kafka Connect's class name, for error reports.
    pub fn class_name(self) -> &'static str {
        match self {
            ConverterKind::Json => "org.apache.kafka.connect.json.JsonConverter",
            ConverterKind::String => "org.apache.kafka.connect.storage.StringConverter",
            ConverterKind::ByteArray => "org.apache.kafka.connect.converters.ByteArrayConverter",
            ConverterKind::Integer => "org.apache.kafka.connect.converters.IntegerConverter",
            ConverterKind::Long => "org.apache.kafka.connect.converters.LongConverter",
            ConverterKind::Short => "org.apache.kafka.connect.converters.ShortConverter",
            ConverterKind::Float => "org.apache.kafka.connect.converters.FloatConverter",
            ConverterKind::Double => "org.apache.kafka.connect.converters.DoubleConverter",
            ConverterKind::Boolean => "org.apache.kafka.connect.converters.BooleanConverter",
            ConverterKind::Avro => "io.confluent.connect.avro.AvroConverter",
        }
    }

    /// The simple class name (`IntegerConverter`), for error messages.
    pub fn simple_name(self) -> &'static str {
        let full = self.class_name();
        full.rsplit('.').next().unwrap_or(full)
    }
}

/// Every converter class this crate knows, with Kafka's (or Confluent's) full names.
pub fn converter_classes() -> Vec<&'static str> {
    ALL_KINDS.iter().map(|k| k.class_name()).collect()
}

/// The header converter's Kafka Connect class; `header_bytes`/`header_value` behave as it does.
pub const HEADER_CONVERTER: &str = "org.apache.kafka.connect.storage.SimpleHeaderConverter";

/// Kafka Connect's exception class for conversion failures.
pub const DATA_EXCEPTION: &str = "org.apache.kafka.connect.errors.DataException";

/// A record's key or value as bytes for a dead-letter queue when its converter failed: raw
/// bytes as they are, a structured value as schemaless JSON (best effort), null as null.
pub fn dead_letter_bytes(data: Option<&Data>) -> Option<Vec<u8>> {
    match data.and_then(|d| d.kind.as_ref())? {
        data::Kind::Raw(bytes) => Some(bytes.clone()),
        data::Kind::Structured(s) => {
            let mut out = Vec::new();
            json::write_value(&mut out, None, s.value.as_ref()).ok()?;
            Some(out)
        }
    }
}

/// A character set StringConverter can use (`converter.encoding`, Java's charset names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Ascii,
    Latin1,
    /// Java's `UTF-16`: writes a big-endian byte order mark, reads either order by its mark.
    Utf16,
    Utf16Be,
    Utf16Le,
}

impl Encoding {
    /// Java's canonical names and common aliases, case-insensitive.
    pub fn from_name(name: &str) -> Option<Encoding> {
        Some(match name.trim().to_ascii_uppercase().as_str() {
            "UTF-8" | "UTF8" => Encoding::Utf8,
            "US-ASCII" | "ASCII" | "US_ASCII" => Encoding::Ascii,
            "ISO-8859-1" | "ISO8859_1" | "ISO_8859_1" | "ISO8859-1" | "LATIN1" | "L1" => {
                Encoding::Latin1
            }
            "UTF-16" | "UTF_16" | "UTF16" => Encoding::Utf16,
            "UTF-16BE" | "UTF_16BE" | "X-UTF-16BE" => Encoding::Utf16Be,
            "UTF-16LE" | "UTF_16LE" | "X-UTF-16LE" => Encoding::Utf16Le,
            _ => return None,
        })
    }

    /// Java's `String.getBytes(charset)`: unmappable characters become `?`.
    pub fn encode(self, s: &str) -> Vec<u8> {
        match self {
            Encoding::Utf8 => s.as_bytes().to_vec(),
            Encoding::Ascii => s
                .chars()
                .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
                .collect(),
            Encoding::Latin1 => s
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect(),
            Encoding::Utf16 => {
                let mut out = vec![0xFE, 0xFF];
                out.extend(s.encode_utf16().flat_map(u16::to_be_bytes));
                out
            }
            Encoding::Utf16Be => s.encode_utf16().flat_map(u16::to_be_bytes).collect(),
            Encoding::Utf16Le => s.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        }
    }

    /// Java's `new String(bytes, charset)`: malformed input becomes U+FFFD.
    pub fn decode(self, bytes: &[u8]) -> String {
        let utf16 = |bytes: &[u8], big: bool| {
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| match c {
                    [a, b] if big => u16::from_be_bytes([*a, *b]),
                    [a, b] => u16::from_le_bytes([*a, *b]),
                    _ => 0xFFFD,
                })
                .collect();
            String::from_utf16_lossy(&units)
        };
        match self {
            Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            Encoding::Ascii => bytes
                .iter()
                .map(|&b| {
                    if b.is_ascii() {
                        char::from(b)
                    } else {
                        '\u{FFFD}'
                    }
                })
                .collect(),
            Encoding::Latin1 => bytes.iter().map(|&b| char::from(b)).collect(),
            Encoding::Utf16 => match bytes {
                [0xFE, 0xFF, rest @ ..] => utf16(rest, true),
                [0xFF, 0xFE, rest @ ..] => utf16(rest, false),
                _ => utf16(bytes, true),
            },
            Encoding::Utf16Be => utf16(bytes, true),
            Encoding::Utf16Le => utf16(bytes, false),
        }
    }
}

/// What [`Converter::passthrough`] finds: the schema type the bytes are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passthrough {
    /// An optional STRING, for bytes that are valid UTF-8 (others go through `to_connect`,
    /// which replaces what is not UTF-8 as Java does).
    Utf8String,
    /// An optional BYTES.
    Bytes,
}

/// A configured converter for keys or for values. Clones share the Avro converter's registry
/// client and caches.
#[derive(Debug, Clone)]
pub struct Converter {
    kind: ConverterKind,
    side: Side,
    schemas_enable: bool,
    json: JsonOptions,
    encoding: Encoding,
    avro: Option<Arc<AvroConverter>>,
}

/// Kafka's `ConfigDef` boolean: `true`/`false`, any case, surrounding spaces ignored.
fn bool_setting(
    settings: &BTreeMap<String, String>,
    key: &str,
    default: bool,
) -> Result<bool, (String, String)> {
    match settings.get(key).map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(v) => Err((
            key.into(),
            format!("invalid value {v:?}: expected true or false"),
        )),
    }
}

/// Kafka Connect's default converter class.
pub const DEFAULT_CONVERTER: &str = "org.apache.kafka.connect.json.JsonConverter";

impl Converter {
    /// The key or value converter a config names (`key.converter`, or JsonConverter when
    /// absent) with its own `key.converter.*` settings, as Kafka Connect reads a worker or a
    /// connector config. Returns the class with it; an error names the full key.
    pub fn from_config(
        config: &BTreeMap<String, String>,
        side: Side,
    ) -> Result<(String, Converter), (String, String)> {
        let class_key = format!("{}.converter", side.name());
        let prefix = format!("{class_key}.");
        let class = config
            .get(&class_key)
            .map_or(DEFAULT_CONVERTER, String::as_str)
            .trim()
            .to_string();
        let settings: BTreeMap<String, String> = config
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
            .collect();
        Converter::new(&class, &settings, side)
            .map(|c| (class, c))
            .map_err(|(key, message)| {
                let key = if key.is_empty() {
                    class_key
                } else {
                    format!("{prefix}{key}")
                };
                (key, message)
            })
    }

    /// Builds a converter for keys or values from its class and its own settings (keys after
    /// the `key.converter.`/`value.converter.` prefix). As in Kafka, keys a converter does not
    /// define are ignored; the ones it defines are validated here. No I/O: the Avro
    /// converter reaches its registry with the first record.
    pub fn new(
        class: &str,
        settings: &BTreeMap<String, String>,
        side: Side,
    ) -> Result<Converter, (String, String)> {
        let kind = ConverterKind::from_class(class).ok_or_else(|| {
            let known: Vec<&str> = ALL_KINDS.iter().map(|k| k.class_name()).collect();
            (
                String::new(),
                format!(
                    "unknown converter class {class:?}; expected one of {}",
                    known.join(", ")
                ),
            )
        })?;
        if let Some(t) = settings.get("converter.type") {
            if !matches!(t.trim(), "key" | "value" | "header") {
                return Err((
                    "converter.type".into(),
                    format!("invalid value {t:?}: expected key, value or header"),
                ));
            }
        }
        let mut converter = Converter {
            kind,
            side,
            schemas_enable: true,
            json: JsonOptions::default(),
            encoding: Encoding::Utf8,
            avro: None,
        };
        match kind {
            ConverterKind::Json => {
                converter.schemas_enable = bool_setting(settings, "schemas.enable", true)?;
                if let Some(size) = settings.get("schemas.cache.size") {
                    // The cache only saves work here; the size is validated as Kafka does.
                    if size
                        .trim()
                        .parse::<u32>()
                        .map_or(true, |n| n > i32::MAX as u32)
                    {
                        return Err((
                            "schemas.cache.size".into(),
                            format!("invalid value {size:?}: expected a non-negative integer"),
                        ));
                    }
                }
                if let Some(format) = settings.get("decimal.format") {
                    converter.json.decimal_format =
                        match format.trim().to_ascii_uppercase().as_str() {
                            "BASE64" => DecimalFormat::Base64,
                            "NUMERIC" => DecimalFormat::Numeric,
                            _ => {
                                return Err((
                                    "decimal.format".into(),
                                    format!("invalid value {format:?}: expected BASE64 or NUMERIC"),
                                ))
                            }
                        };
                }
                converter.json.replace_null_with_default =
                    bool_setting(settings, "replace.null.with.default", true)?;
            }
            ConverterKind::String => {
                if let Some(name) = settings.get("converter.encoding") {
                    converter.encoding = Encoding::from_name(name).ok_or_else(|| {
                        (
                            "converter.encoding".to_string(),
                            format!(
                                "unsupported encoding {name:?}: expected UTF-8, US-ASCII, \
                                 ISO-8859-1, UTF-16, UTF-16BE or UTF-16LE"
                            ),
                        )
                    })?;
                }
            }
            ConverterKind::Avro => {
                converter.avro = Some(Arc::new(AvroConverter::from_settings(settings, side)?));
            }
            _ => {}
        }
        Ok(converter)
    }

    /// An AvroConverter with a registry of the caller's (an in-memory one for tests and
    /// tools); `schema.registry.url` is not read.
    pub fn avro(
        settings: &BTreeMap<String, String>,
        side: Side,
        registry: Arc<dyn registry::SchemaRegistry>,
    ) -> Result<Converter, (String, String)> {
        Ok(Converter {
            kind: ConverterKind::Avro,
            side,
            schemas_enable: true,
            json: JsonOptions::default(),
            encoding: Encoding::Utf8,
            avro: Some(Arc::new(AvroConverter::with_registry(
                settings, side, registry,
            )?)),
        })
    }

    pub fn kind(&self) -> ConverterKind {
        self.kind
    }

    /// The converters whose Kafka Connect form of some bytes is those bytes themselves, with
    /// an optional primitive schema: `ByteArrayConverter` (BYTES) and `StringConverter` in
    /// UTF-8 (STRING, for bytes that are valid UTF-8). A data path may carry such bytes to a
    /// connector without building the [`Data`] that [`Converter::to_connect`] would.
    pub fn passthrough(&self) -> Option<Passthrough> {
        match (self.kind, self.encoding, &self.avro) {
            (_, _, Some(_)) => None,
            (ConverterKind::ByteArray, _, None) => Some(Passthrough::Bytes),
            (ConverterKind::String, Encoding::Utf8, None) => Some(Passthrough::Utf8String),
            _ => None,
        }
    }

    /// Whether this converter converts keys or values.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Serializes a record's key or value for `topic`; `None` is a Kafka null.
    pub fn from_connect(
        &self,
        topic: &str,
        data: Option<&Data>,
    ) -> Result<Option<Vec<u8>>, ConversionError> {
        Ok(self
            .from_connect_borrowed(topic, data)?
            .map(Cow::into_owned))
    }

    /// [`Converter::from_connect`], borrowing the bytes where they are the data's own: raw
    /// bytes, a string for a UTF-8 StringConverter, bytes for StringConverter and
    /// ByteArrayConverter. A source task's strings reach the producer without a copy.
    pub fn from_connect_borrowed<'a>(
        &self,
        topic: &str,
        data: Option<&'a Data>,
    ) -> Result<Option<Cow<'a, [u8]>>, ConversionError> {
        if let Some(bytes) = PlainData::of(data).and_then(|p| self.from_connect_plain(p)) {
            return Ok(bytes.map(Cow::Borrowed));
        }
        if let Some(avro) = &self.avro {
            return Ok(avro.from_connect(topic, data)?.map(Cow::Owned));
        }
        let structured = match data.and_then(|d| d.kind.as_ref()) {
            None => return Ok(None),
            Some(data::Kind::Raw(bytes)) => return Ok(Some(Cow::Borrowed(bytes))),
            Some(data::Kind::Structured(s)) => s,
        };
        let schema = structured.schema.as_ref();
        let value = structured.value.as_ref().filter(|v| !is_null(v));
        match self.kind {
            ConverterKind::Json => {
                if value.is_none() && schema.is_none() {
                    return Ok(None);
                }
                let mut out = Vec::with_capacity(64);
                if self.schemas_enable {
                    out.extend_from_slice(b"{\"schema\":");
                    json::write_schema_with(&mut out, schema, self.json)?;
                    out.extend_from_slice(b",\"payload\":");
                    json::write_value_with(&mut out, schema, value, self.json)?;
                    out.push(b'}');
                } else {
                    json::write_value_with(&mut out, schema, value, self.json)?;
                }
                Ok(Some(Cow::Owned(out)))
            }
            ConverterKind::String => Ok(value.map(|v| match &v.kind {
                // Java would print a byte[]'s identity; the bytes themselves are more useful.
                Some(value::Kind::Bytes(b)) if schema.and_then(json::logical).is_none() => {
                    Cow::Borrowed(b.as_slice())
                }
                // A string is its own text: UTF-8 needs no re-encoding.
                Some(value::Kind::String(s)) if self.encoding == Encoding::Utf8 => {
                    Cow::Borrowed(s.as_bytes())
                }
                _ => Cow::Owned(self.encoding.encode(&java_to_string(schema, v))),
            })),
            ConverterKind::ByteArray => {
                if let Some(schema) = schema {
                    if schema.r#type != SchemaType::Bytes as i32 {
                        return Err(ConversionError::new(format!(
                            "invalid schema type for ByteArrayConverter: {}",
                            json::kafka_type_name(schema.r#type)
                        )));
                    }
                }
                match value.map(|v| &v.kind) {
                    None => Ok(None),
                    Some(Some(value::Kind::Bytes(b))) => Ok(Some(Cow::Borrowed(b))),
                    Some(other) => Err(ConversionError::new(format!(
                        "ByteArrayConverter is not compatible with objects of type {}",
                        json::kind_name(other.as_ref())
                    ))),
                }
            }
            kind => Ok(primitive::from_connect(kind, schema, value)?.map(Cow::Owned)),
        }
    }

    /// What [`Converter::from_connect_borrowed`] gives for `data` when that is `data`'s own
    /// bytes (or a Kafka null), without the `Data` itself: the worker reads a source record's
    /// plain key and value straight off the wire. `None` when this converter needs the whole
    /// `Data` (Avro, JSON, a string in another encoding, what ByteArrayConverter refuses).
    pub fn from_connect_plain<'a>(&self, data: PlainData<'a>) -> Option<Option<&'a [u8]>> {
        if self.avro.is_some() {
            return None;
        }
        match (data, self.kind) {
            (PlainData::Null, _) => Some(None),
            (PlainData::Raw(bytes), _) => Some(Some(bytes)),
            // A plain schema has no name, so no logical type: the bytes are the text.
            (PlainData::Bytes { bytes, .. }, ConverterKind::String) => Some(Some(bytes)),
            (PlainData::String { text, .. }, ConverterKind::String) => {
                (self.encoding == Encoding::Utf8).then_some(Some(text.as_bytes()))
            }
            (PlainData::Bytes { schema, bytes }, ConverterKind::ByteArray) => schema
                .is_none_or(|t| t == SchemaType::Bytes as i32)
                .then_some(Some(bytes)),
            _ => None,
        }
    }

    /// Deserializes Kafka bytes of `topic` into a key or value; `None` (a Kafka null) gives a
    /// null.
    pub fn to_connect(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Data, ConversionError> {
        if let Some(avro) = &self.avro {
            return avro.to_connect(topic, bytes);
        }
        let Some(bytes) = bytes else {
            return Ok(Data { kind: None });
        };
        let structured = match self.kind {
            ConverterKind::ByteArray => Structured {
                schema: Some(optional(SchemaType::Bytes)),
                value: Some(Value {
                    kind: Some(value::Kind::Bytes(bytes.to_vec())),
                }),
            },
            ConverterKind::String => Structured {
                schema: Some(optional(SchemaType::String)),
                value: Some(Value {
                    kind: Some(value::Kind::String(self.encoding.decode(bytes))),
                }),
            },
            ConverterKind::Json => {
                let doc = json::reader::parse(bytes).map_err(|e| {
                    ConversionError::new(format!(
                        "converting byte[] to Kafka Connect data failed due to serialization error: {e}"
                    ))
                })?;
                let structured = if self.schemas_enable {
                    // An empty document is Jackson's missing node: not an envelope.
                    let doc = doc.ok_or_else(|| ConversionError::new(json::ENVELOPE_ERROR))?;
                    json::from_envelope_node(doc, self.json)?
                } else {
                    match doc {
                        None => None,
                        Some(doc) => json::schemaless_node(doc)?.map(|value| Structured {
                            schema: None,
                            value: Some(value),
                        }),
                    }
                };
                match structured {
                    Some(s) => s,
                    None => return Ok(Data { kind: None }),
                }
            }
            kind => primitive::to_connect(kind, bytes)?,
        };
        Ok(Data {
            kind: Some(data::Kind::Structured(structured)),
        })
    }
}

use crate::record::is_null;

fn optional(kind: SchemaType) -> Schema {
    crate::record::schema_of(kind, true)
}

/// Java's `toString` of the value Kafka Connect would hold, as StringConverter writes it:
/// `Float.toString`/`Double.toString` for floats, `BigDecimal.toString` for decimals,
/// `[a, b]` for lists, `{k=v, k2=v2}` for maps, `Struct{a=1,b=2}` (null fields left out).
pub(crate) fn java_to_string(schema: Option<&Schema>, v: &Value) -> String {
    match &v.kind {
        Some(value::Kind::Bytes(b)) => match schema.filter(|s| json::logical(s).is_some()) {
            Some(s) => json::decimal::schema_scale(&s.parameters)
                .and_then(|scale| json::decimal::BigDecimal::from_unscaled(b, scale))
                .map_or_else(
                    |_| base64::engine::general_purpose::STANDARD.encode(b),
                    |d| d.to_java_string(),
                ),
            None => base64::engine::general_purpose::STANDARD.encode(b),
        },
        Some(value::Kind::Array(a)) => {
            let items = schema.and_then(|s| s.value_schema.as_deref());
            let parts: Vec<String> = a.items.iter().map(|i| java_to_string(items, i)).collect();
            format!("[{}]", parts.join(", "))
        }
        Some(value::Kind::Map(m)) => {
            let keys = schema.and_then(|s| s.key_schema.as_deref());
            let values = schema.and_then(|s| s.value_schema.as_deref());
            let null = Value { kind: None };
            let parts: Vec<String> = m
                .entries
                .iter()
                .map(|e| {
                    format!(
                        "{}={}",
                        java_to_string(keys, e.key.as_ref().unwrap_or(&null)),
                        java_to_string(values, e.value.as_ref().unwrap_or(&null))
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        Some(value::Kind::Struct(s)) => {
            let mut parts = Vec::new();
            for (i, field) in s.fields.iter().enumerate() {
                if is_null(field) {
                    continue;
                }
                let (name, field_schema) = match schema.and_then(|sc| sc.fields.get(i)) {
                    Some(f) => (f.name.as_str(), f.schema.as_deref()),
                    None => (s.names.get(i).map_or("", String::as_str), None),
                };
                parts.push(format!("{name}={}", java_to_string(field_schema, field)));
            }
            format!("Struct{{{}}}", parts.join(","))
        }
        _ => json::display(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::connector::v1::{ArrayValue, Field, MapEntry, MapValue, StructValue};

    fn json(schemas: bool) -> Converter {
        let mut settings = BTreeMap::new();
        settings.insert("schemas.enable".to_string(), schemas.to_string());
        Converter::new(
            "org.apache.kafka.connect.json.JsonConverter",
            &settings,
            Side::Value,
        )
        .unwrap()
    }

    fn string_data(s: &str) -> Data {
        Data {
            kind: Some(data::Kind::Structured(Structured {
                schema: Some(Schema {
                    r#type: SchemaType::String as i32,
                    ..Schema::default()
                }),
                value: Some(Value {
                    kind: Some(value::Kind::String(s.into())),
                }),
            })),
        }
    }

    #[test]
    fn borrowed_conversion_gives_what_from_connect_gives() {
        let converter = |class: &str, settings: &[(&str, &str)]| {
            let settings = settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Converter::new(class, &settings, Side::Value).unwrap()
        };
        let string = "org.apache.kafka.connect.storage.StringConverter";
        let bytes = "org.apache.kafka.connect.converters.ByteArrayConverter";
        let converters = [
            converter(string, &[]),
            converter(string, &[("converter.encoding", "ISO-8859-1")]),
            converter(bytes, &[]),
            converter("org.apache.kafka.connect.json.JsonConverter", &[]),
        ];
        let structured = |schema: Option<SchemaType>, kind: Option<value::Kind>| Data {
            kind: Some(data::Kind::Structured(Structured {
                schema: schema.map(|t| Schema {
                    r#type: t as i32,
                    ..Schema::default()
                }),
                value: Some(Value { kind }),
            })),
        };
        let data = [
            Data { kind: None },
            Data {
                kind: Some(data::Kind::Raw(b"raw \xff".to_vec())),
            },
            string_data("h\u{e9}llo"),
            structured(None, Some(value::Kind::String("no schema".into()))),
            structured(
                Some(SchemaType::Bytes),
                Some(value::Kind::Bytes(vec![0, 255])),
            ),
            structured(None, Some(value::Kind::Bytes(vec![1, 2]))),
            structured(Some(SchemaType::String), Some(value::Kind::Bytes(vec![3]))),
            structured(Some(SchemaType::Int32), Some(value::Kind::Int(7))),
            structured(Some(SchemaType::String), None),
        ];
        let mut borrowed = 0;
        let mut plain = 0;
        for converter in &converters {
            for data in &data {
                let owned = converter.from_connect("t", Some(data));
                // The same bytes without the `Data`, where the converter takes them plain.
                if let Some(bytes) =
                    PlainData::of(Some(data)).and_then(|p| converter.from_connect_plain(p))
                {
                    plain += 1;
                    assert_eq!(
                        Ok(bytes.map(<[u8]>::to_vec)),
                        owned.as_ref().map_err(|e| e.to_string()).cloned(),
                        "{converter:?} {data:?}"
                    );
                }
                let cow = converter.from_connect_borrowed("t", Some(data));
                if let Ok(Some(Cow::Borrowed(b))) = &cow {
                    borrowed += 1;
                    // What is borrowed is the data's own bytes, unchanged.
                    let own: &[u8] = match &data.kind {
                        Some(data::Kind::Raw(raw)) => raw,
                        Some(data::Kind::Structured(Structured {
                            value: Some(Value { kind: Some(kind) }),
                            ..
                        })) => match kind {
                            value::Kind::String(s) => s.as_bytes(),
                            value::Kind::Bytes(b) => b,
                            other => panic!("borrowed from {other:?}"),
                        },
                        other => panic!("borrowed from {other:?}"),
                    };
                    assert_eq!(*b, own, "{converter:?} {data:?}");
                }
                assert_eq!(
                    cow.map(|c| c.map(Cow::into_owned))
                        .map_err(|e| e.to_string()),
                    owned.map_err(|e| e.to_string()),
                    "{converter:?} {data:?}"
                );
            }
        }
        // Raw bytes under every converter (4); under the UTF-8 StringConverter two strings and
        // three bytes values (5), under Latin-1 the three bytes values (3); under
        // ByteArrayConverter the two bytes values its schema allows (2).
        assert_eq!(borrowed, 4 + 5 + 3 + 2);
        // Every borrowed case, and the null under each converter.
        assert_eq!(plain, borrowed + 4);
    }

    #[test]
    fn plain_data_is_no_data_raw_bytes_or_a_string_or_bytes_with_a_plain_schema() {
        let with = |schema: Option<Schema>, kind: value::Kind| Data {
            kind: Some(data::Kind::Structured(Structured {
                schema,
                value: Some(Value { kind: Some(kind) }),
            })),
        };
        let text = || value::Kind::String("x".into());
        let plain = Schema {
            r#type: SchemaType::String as i32,
            optional: true,
            ..Schema::default()
        };
        assert_eq!(PlainData::of(None), Some(PlainData::Null));
        assert_eq!(
            PlainData::of(Some(&Data { kind: None })),
            Some(PlainData::Null)
        );
        assert_eq!(
            PlainData::of(Some(&with(Some(plain.clone()), text()))),
            Some(PlainData::String {
                schema: Some(SchemaType::String as i32),
                text: "x"
            })
        );
        assert_eq!(
            PlainData::of(Some(&with(None, value::Kind::Bytes(vec![1])))),
            Some(PlainData::Bytes {
                schema: None,
                bytes: &[1]
            })
        );
        let named = Schema {
            name: Some("io.debezium.data.Json".into()),
            ..plain.clone()
        };
        let with_doc = Schema {
            doc: Some("d".into()),
            ..plain
        };
        for data in [
            with(Some(named), text()),
            with(Some(with_doc), text()),
            with(None, value::Kind::Int(1)),
            with(None, value::Kind::Null(true)),
            Data {
                kind: Some(data::Kind::Structured(Structured::default())),
            },
        ] {
            assert_eq!(PlainData::of(Some(&data)), None, "{data:?}");
        }
    }

    #[test]
    fn json_envelope_matches_kafka_for_file_source_lines() {
        let out = json(true)
            .from_connect("t", Some(&string_data("hello \"w\"\u{1}")))
            .unwrap();
        assert_eq!(
            String::from_utf8(out.unwrap()).unwrap(),
            r#"{"schema":{"type":"string","optional":false},"payload":"hello \"w\"\u0001"}"#
        );
        let out = json(false)
            .from_connect("t", Some(&string_data("x")))
            .unwrap();
        assert_eq!(out.unwrap(), b"\"x\"");
        // FileStreamSource's null key with no schema stays a Kafka null.
        assert_eq!(
            json(true)
                .from_connect("t", Some(&Data { kind: None }))
                .unwrap(),
            None
        );
    }

    #[test]
    fn json_struct_envelope_and_round_trip() {
        let schema = Schema {
            r#type: SchemaType::Struct as i32,
            name: Some("rec".into()),
            fields: vec![
                Field {
                    name: "id".into(),
                    schema: Some(Box::new(Schema {
                        r#type: SchemaType::Int32 as i32,
                        ..Schema::default()
                    })),
                },
                Field {
                    name: "blob".into(),
                    schema: Some(Box::new(Schema {
                        r#type: SchemaType::Bytes as i32,
                        optional: true,
                        ..Schema::default()
                    })),
                },
            ],
            ..Schema::default()
        };
        let value = Value {
            kind: Some(value::Kind::Struct(StructValue {
                fields: vec![
                    Value {
                        kind: Some(value::Kind::Int(7)),
                    },
                    Value {
                        kind: Some(value::Kind::Bytes(vec![1, 2, 3])),
                    },
                ],
                names: vec![],
            })),
        };
        let data = Data {
            kind: Some(data::Kind::Structured(Structured {
                schema: Some(schema),
                value: Some(value),
            })),
        };
        let bytes = json(true).from_connect("t", Some(&data)).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            concat!(
                r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"},"#,
                r#"{"type":"bytes","optional":true,"field":"blob"}],"optional":false,"name":"rec"},"#,
                r#""payload":{"id":7,"blob":"AQID"}}"#
            )
        );
        let back = json(true).to_connect("t", Some(&bytes)).unwrap();
        assert_eq!(back, data);
    }

    /// Jackson's escapes reach every string the JsonConverter writes: keys, values, field
    /// names, schema names and docs, parameters and map keys; a character outside the BMP becomes
    /// its surrogate pair (Kafka Connect 4.1 writes `\uD83C\uDF89`), and reads back either way.
    #[test]
    fn json_converter_escapes_supplementary_characters_everywhere_as_kafka() {
        let text = |s: &str| Value {
            kind: Some(value::Kind::String(s.into())),
        };
        let string_schema = Schema {
            r#type: SchemaType::String as i32,
            ..Schema::default()
        };
        let schema = Schema {
            r#type: SchemaType::Struct as i32,
            name: Some("rec🎉".into()),
            doc: Some("doc é 🎉\u{1}".into()),
            parameters: [("p🎉".to_string(), "v😀".to_string())].into(),
            fields: vec![Field {
                name: "f🎉".into(),
                schema: Some(Box::new(string_schema.clone())),
            }],
            ..Schema::default()
        };
        let data = Data {
            kind: Some(data::Kind::Structured(Structured {
                schema: Some(schema),
                value: Some(Value {
                    kind: Some(value::Kind::Struct(StructValue {
                        fields: vec![text("unicode: é ü 日本 🎉")],
                        names: vec![],
                    })),
                }),
            })),
        };
        let bytes = json(true).from_connect("t", Some(&data)).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            concat!(
                r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"field":"f\uD83C\uDF89"}],"#,
                r#""optional":false,"name":"rec\uD83C\uDF89","doc":"doc é \uD83C\uDF89\u0001","#,
                r#""parameters":{"p\uD83C\uDF89":"v\uD83D\uDE00"}},"#,
                r#""payload":{"f\uD83C\uDF89":"unicode: é ü 日本 \uD83C\uDF89"}}"#
            )
        );
        assert_eq!(json(true).to_connect("t", Some(&bytes)).unwrap(), data);
        // The raw UTF-8 form reads back to the same record.
        let raw = String::from_utf8(bytes)
            .unwrap()
            .replace("\\uD83C\\uDF89", "🎉")
            .replace("\\uD83D\\uDE00", "😀");
        assert_eq!(
            json(true).to_connect("t", Some(raw.as_bytes())).unwrap(),
            data
        );

        // A key, and a schemaless map key and value.
        let key = Converter::new(
            "org.apache.kafka.connect.json.JsonConverter",
            &BTreeMap::from([("schemas.enable".to_string(), "false".to_string())]),
            Side::Key,
        )
        .unwrap();
        assert_eq!(
            key.from_connect("t", Some(&string_data("k🎉")))
                .unwrap()
                .unwrap(),
            br#""k\uD83C\uDF89""#
        );
        let map = Data {
            kind: Some(data::Kind::Structured(Structured {
                schema: None,
                value: Some(Value {
                    kind: Some(value::Kind::Map(MapValue {
                        entries: vec![MapEntry {
                            key: Some(text("m🎉")),
                            value: Some(text("𝄞")),
                        }],
                    })),
                }),
            })),
        };
        assert_eq!(
            json(false).from_connect("t", Some(&map)).unwrap().unwrap(),
            br#"{"m\uD83C\uDF89":"\uD834\uDD1E"}"#
        );
    }

    /// SimpleHeaderConverter is not Jackson: Kafka's `Values.convertToString` leaves every
    /// character raw, supplementary ones included.
    #[test]
    fn header_strings_keep_supplementary_characters_raw_as_kafka() {
        let bytes = header::header_bytes(Some(&string_data("🎉 \"q\"")))
            .unwrap()
            .unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), "🎉 \"q\"");
    }

    #[test]
    fn string_and_bytearray_converters() {
        let s = Converter::new(
            "org.apache.kafka.connect.storage.StringConverter",
            &BTreeMap::new(),
            Side::Value,
        )
        .unwrap();
        assert_eq!(
            s.from_connect("t", Some(&string_data("é")))
                .unwrap()
                .unwrap(),
            "é".as_bytes()
        );
        let b = Converter::new(
            "org.apache.kafka.connect.converters.ByteArrayConverter",
            &BTreeMap::new(),
            Side::Value,
        )
        .unwrap();
        let err = b.from_connect("t", Some(&string_data("x"))).unwrap_err();
        assert_eq!(
            err.message,
            "invalid schema type for ByteArrayConverter: STRING"
        );
        let raw = Data {
            kind: Some(data::Kind::Raw(vec![0, 255])),
        };
        assert_eq!(
            b.from_connect("t", Some(&raw)).unwrap().unwrap(),
            vec![0, 255]
        );
    }

    #[test]
    fn json_errors_are_clear() {
        let e = json(true).to_connect("t", Some(b"{\"a\":1}")).unwrap_err();
        assert!(e.message.contains("schemas.enable"), "{e}");
        let e = json(true).to_connect("t", Some(b"not json")).unwrap_err();
        assert!(e.message.contains("serialization error"), "{e}");
        assert!(Converter::new("com.example.Nope", &BTreeMap::new(), Side::Value).is_err());
    }

    // Ports of Kafka's JsonConverterTest, byte for byte where Kafka's output is deterministic.

    fn json_with(settings: &[(&str, &str)]) -> Converter {
        let settings = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Converter::new(
            "org.apache.kafka.connect.json.JsonConverter",
            &settings,
            Side::Value,
        )
        .unwrap()
    }

    fn schema_of(kind: SchemaType) -> Schema {
        Schema {
            r#type: kind as i32,
            ..Schema::default()
        }
    }

    fn named(kind: SchemaType, name: &str) -> Schema {
        Schema {
            name: Some(name.into()),
            version: Some(1),
            ..schema_of(kind)
        }
    }

    fn decimal_schema(scale: i32) -> Schema {
        let mut schema = named(SchemaType::Bytes, json::DECIMAL);
        schema.parameters.insert("scale".into(), scale.to_string());
        schema
    }

    fn val(kind: value::Kind) -> Value {
        Value { kind: Some(kind) }
    }

    fn structured(schema: Option<Schema>, value: Option<Value>) -> Data {
        Data {
            kind: Some(data::Kind::Structured(Structured { schema, value })),
        }
    }

    fn write(c: &Converter, schema: Option<Schema>, value: Option<Value>) -> String {
        let out = c
            .from_connect("t", Some(&structured(schema, value)))
            .unwrap();
        String::from_utf8(out.expect("not null")).unwrap()
    }

    fn read(c: &Converter, text: &str) -> (Option<Schema>, Option<value::Kind>) {
        match c.to_connect("t", Some(text.as_bytes())).unwrap().kind {
            Some(data::Kind::Structured(s)) => (s.schema, s.value.and_then(|v| v.kind)),
            Some(data::Kind::Raw(_)) => panic!("raw"),
            None => (None, None),
        }
    }

    #[test]
    fn kafka_primitive_envelopes() {
        use value::Kind;
        let c = json(true);
        let cases = [
            (
                SchemaType::Int8,
                Kind::Int(12),
                r#"{"schema":{"type":"int8","optional":false},"payload":12}"#,
            ),
            (
                SchemaType::Int16,
                Kind::Int(12),
                r#"{"schema":{"type":"int16","optional":false},"payload":12}"#,
            ),
            (
                SchemaType::Int32,
                Kind::Int(12),
                r#"{"schema":{"type":"int32","optional":false},"payload":12}"#,
            ),
            (
                SchemaType::Int64,
                Kind::Int(4398046511104),
                r#"{"schema":{"type":"int64","optional":false},"payload":4398046511104}"#,
            ),
            (
                SchemaType::Float32,
                Kind::Float32(12.34),
                r#"{"schema":{"type":"float","optional":false},"payload":12.34}"#,
            ),
            (
                SchemaType::Float64,
                Kind::Float64(12.34),
                r#"{"schema":{"type":"double","optional":false},"payload":12.34}"#,
            ),
            (
                SchemaType::Boolean,
                Kind::Boolean(true),
                r#"{"schema":{"type":"boolean","optional":false},"payload":true}"#,
            ),
            (
                SchemaType::String,
                Kind::String("test-string".into()),
                r#"{"schema":{"type":"string","optional":false},"payload":"test-string"}"#,
            ),
            (
                SchemaType::Bytes,
                Kind::Bytes(b"test-string".to_vec()),
                r#"{"schema":{"type":"bytes","optional":false},"payload":"dGVzdC1zdHJpbmc="}"#,
            ),
        ];
        for (kind, value, expected) in cases {
            assert_eq!(
                write(&c, Some(schema_of(kind)), Some(val(value.clone()))),
                expected
            );
            assert_eq!(read(&c, expected), (Some(schema_of(kind)), Some(value)));
        }
        // Optional null.
        let optional_bool = Schema {
            optional: true,
            ..schema_of(SchemaType::Boolean)
        };
        assert_eq!(
            write(&c, Some(optional_bool), None),
            r#"{"schema":{"type":"boolean","optional":true},"payload":null}"#
        );
        // Leading zeros, as Kafka's deserializer allows them.
        assert_eq!(
            read(
                &c,
                r#"{ "schema": { "type": "int32" }, "payload": 000012345 }"#
            )
            .1,
            Some(Kind::Int(12345))
        );
        assert_eq!(
            read(
                &c,
                r#"{ "schema": { "type": "int64" }, "payload": 00000123456789 }"#
            )
            .1,
            Some(Kind::Int(123456789))
        );
        // Out of range or the wrong JSON type is an error, never a panic.
        assert!(c
            .to_connect("t", Some(br#"{"schema":{"type":"int8"},"payload":300}"#))
            .is_err());
        assert!(c
            .to_connect("t", Some(br#"{"schema":{"type":"int32"},"payload":"12"}"#))
            .is_err());
        let e = c
            .from_connect(
                "t",
                Some(&structured(
                    Some(schema_of(SchemaType::Float64)),
                    Some(val(Kind::Boolean(true))),
                )),
            )
            .unwrap_err();
        assert_eq!(e.message, "invalid type for FLOAT64: boolean");
        let e = c
            .from_connect(
                "t",
                Some(&structured(
                    Some(schema_of(SchemaType::Int8)),
                    Some(val(Kind::Int(128))),
                )),
            )
            .unwrap_err();
        assert_eq!(e.message, "invalid value for INT8: 128 is out of range");
    }

    #[test]
    fn kafka_schema_metadata_in_kafka_order() {
        let c = json(true);
        let mut schema = Schema {
            name: Some("bool".into()),
            version: Some(3),
            doc: Some("the documentation".into()),
            default_value: Some(val(value::Kind::Boolean(true))),
            ..schema_of(SchemaType::Boolean)
        };
        schema.parameters.insert("foo".into(), "bar".into());
        let text = write(
            &c,
            Some(schema.clone()),
            Some(val(value::Kind::Boolean(true))),
        );
        assert_eq!(
            text,
            r#"{"schema":{"type":"boolean","optional":false,"name":"bool","version":3,"doc":"the documentation","parameters":{"foo":"bar"},"default":true},"payload":true}"#
        );
        assert_eq!(read(&c, &text).0, Some(schema));
        let (schema, v) = read(
            &c,
            r#"{ "schema": { "type": "boolean", "default": true }, "payload": null }"#,
        );
        assert_eq!(
            schema.unwrap().default_value,
            Some(val(value::Kind::Boolean(true)))
        );
        assert_eq!(v, Some(value::Kind::Boolean(true)));
        let e = c
            .to_connect(
                "t",
                Some(br#"{"schema":{"type":"boolean","parameters":{"a":1}},"payload":true}"#),
            )
            .unwrap_err();
        assert_eq!(e.message, "schema parameters must have string values");
    }

    #[test]
    fn kafka_containers() {
        use value::Kind;
        let c = json(true);
        let array = Schema {
            value_schema: Some(Box::new(schema_of(SchemaType::Int32))),
            ..schema_of(SchemaType::Array)
        };
        let items = Kind::Array(ArrayValue {
            items: vec![val(Kind::Int(1)), val(Kind::Int(2)), val(Kind::Int(3))],
        });
        let text = write(&c, Some(array.clone()), Some(val(items.clone())));
        assert_eq!(
            text,
            r#"{"schema":{"type":"array","items":{"type":"int32","optional":false},"optional":false},"payload":[1,2,3]}"#
        );
        assert_eq!(read(&c, &text), (Some(array), Some(items)));

        let entry = |k: Kind, v: i64| MapEntry {
            key: Some(val(k)),
            value: Some(val(Kind::Int(v))),
        };
        let string_map = Schema {
            key_schema: Some(Box::new(schema_of(SchemaType::String))),
            value_schema: Some(Box::new(schema_of(SchemaType::Int32))),
            ..schema_of(SchemaType::Map)
        };
        let map = Kind::Map(MapValue {
            entries: vec![
                entry(Kind::String("key1".into()), 12),
                entry(Kind::String("key2".into()), 15),
            ],
        });
        let text = write(&c, Some(string_map.clone()), Some(val(map.clone())));
        assert_eq!(
            text,
            r#"{"schema":{"type":"map","keys":{"type":"string","optional":false},"values":{"type":"int32","optional":false},"optional":false},"payload":{"key1":12,"key2":15}}"#
        );
        assert_eq!(read(&c, &text), (Some(string_map), Some(map)));

        let int_map = Schema {
            key_schema: Some(Box::new(schema_of(SchemaType::Int32))),
            value_schema: Some(Box::new(schema_of(SchemaType::Int32))),
            ..schema_of(SchemaType::Map)
        };
        let map = Kind::Map(MapValue {
            entries: vec![entry(Kind::Int(1), 12), entry(Kind::Int(2), 15)],
        });
        let text = write(&c, Some(int_map.clone()), Some(val(map.clone())));
        assert_eq!(
            text,
            r#"{"schema":{"type":"map","keys":{"type":"int32","optional":false},"values":{"type":"int32","optional":false},"optional":false},"payload":[[1,12],[2,15]]}"#
        );
        assert_eq!(read(&c, &text), (Some(int_map), Some(map)));
        let e = c
            .to_connect("t", Some(br#"{"schema":{"type":"map","keys":{"type":"int32"},"values":{"type":"int32"}},"payload":[[1]]}"#))
            .unwrap_err();
        assert_eq!(
            e.message,
            "found invalid map entry, expected length 2 but found: 1"
        );

        // Schemaless: a map with a non-string key becomes pairs.
        let mixed = Kind::Map(MapValue {
            entries: vec![
                entry(Kind::String("string".into()), 12),
                entry(Kind::Int(52), 1),
            ],
        });
        assert_eq!(
            write(&c, None, Some(val(mixed))),
            r#"{"schema":null,"payload":[["string",12],[52,1]]}"#
        );

        let structure = Schema {
            fields: ["field1", "field2"]
                .iter()
                .zip([SchemaType::Boolean, SchemaType::String])
                .map(|(name, kind)| Field {
                    name: name.to_string(),
                    schema: Some(Box::new(schema_of(kind))),
                })
                .collect(),
            ..schema_of(SchemaType::Struct)
        };
        let value = Kind::Struct(StructValue {
            fields: vec![
                val(Kind::Boolean(true)),
                val(Kind::String("string2".into())),
            ],
            names: vec![],
        });
        let text = write(&c, Some(structure.clone()), Some(val(value.clone())));
        assert_eq!(
            text,
            r#"{"schema":{"type":"struct","fields":[{"type":"boolean","optional":false,"field":"field1"},{"type":"string","optional":false,"field":"field2"}],"optional":false},"payload":{"field1":true,"field2":"string2"}}"#
        );
        assert_eq!(read(&c, &text), (Some(structure), Some(value)));
        let e = c
            .to_connect("t", Some(br#"{"schema":{"type":"struct","fields":[{"field":"a","type":"string"}]},"payload":{}}"#))
            .unwrap_err();
        assert_eq!(e.message, "invalid null value for required STRING field");
    }

    #[test]
    fn kafka_decimals() {
        let c = json(true);
        let bytes = value::Kind::Bytes(vec![0x00, 0x9C]);
        let base64 = r#"{"schema":{"type":"bytes","optional":false,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2"}},"payload":"AJw="}"#;
        assert_eq!(
            write(&c, Some(decimal_schema(2)), Some(val(bytes.clone()))),
            base64
        );
        assert_eq!(
            read(&c, base64),
            (Some(decimal_schema(2)), Some(bytes.clone()))
        );
        // The brief's example: 150 at scale 2 (1.50).
        assert_eq!(
            write(
                &c,
                Some(decimal_schema(2)),
                Some(val(value::Kind::Bytes(vec![0x00, 0x96])))
            ),
            r#"{"schema":{"type":"bytes","optional":false,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2"}},"payload":"AJY="}"#
        );

        // A Decimal's scale first, as Decimal.builder adds it; what Confluent's JDBC source
        // and Debezium add later (connect.decimal.precision) after it.
        let mut precise = decimal_schema(2);
        precise
            .parameters
            .insert("connect.decimal.precision".into(), "10".into());
        precise.parameters.insert("a".into(), "b".into());
        assert_eq!(
            write(&c, Some(precise), Some(val(bytes.clone()))),
            r#"{"schema":{"type":"bytes","optional":false,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","a":"b","connect.decimal.precision":"10"}},"payload":"AJw="}"#
        );

        let numeric = json_with(&[("decimal.format", "numeric")]);
        let text = write(&numeric, Some(decimal_schema(2)), Some(val(bytes.clone())));
        assert_eq!(
            text,
            r#"{"schema":{"type":"bytes","optional":false,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2"}},"payload":1.56}"#
        );
        // Either form is read whatever decimal.format says.
        assert_eq!(read(&c, &text).1, Some(bytes.clone()));
        assert_eq!(read(&numeric, base64).1, Some(bytes.clone()));
        let trailing = write(
            &numeric,
            Some(decimal_schema(4)),
            Some(val(value::Kind::Bytes(vec![0x3C, 0xF0]))),
        );
        assert!(trailing.ends_with(r#""payload":1.5600}"#), "{trailing}");
        assert_eq!(
            read(&c, r#"{ "schema": { "type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "version": 1, "parameters": { "scale": "4" } }, "payload": 1.5600 }"#).1,
            Some(value::Kind::Bytes(vec![0x3C, 0xF0]))
        );
        // More digits than a float64 keeps.
        let (_, v) = read(
            &c,
            r#"{ "schema": { "type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "version": 1, "parameters": { "scale": "17" } }, "payload": 1.23456789123456789 }"#,
        );
        let value::Kind::Bytes(b) = v.unwrap() else {
            panic!()
        };
        assert_eq!(
            json::decimal::BigDecimal::from_unscaled(&b, 17)
                .unwrap()
                .to_java_string(),
            "1.23456789123456789"
        );
        // Defaults and optional nulls.
        let (schema, v) = read(
            &c,
            r#"{ "schema": { "type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "version": 1, "default": "AJw=", "parameters": { "scale": "2" } }, "payload": null }"#,
        );
        assert_eq!(schema.unwrap().default_value, Some(val(bytes.clone())));
        assert_eq!(v, Some(bytes.clone()));
        let (_, v) = read(
            &c,
            r#"{ "schema": { "type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "version": 1, "optional": true, "parameters": { "scale": "2" } }, "payload": null }"#,
        );
        assert_eq!(v, Some(value::Kind::Null(true)));
        // Errors name the problem.
        let e = c
            .from_connect(
                "t",
                Some(&structured(
                    Some(named(SchemaType::Bytes, json::DECIMAL)),
                    Some(val(bytes.clone())),
                )),
            )
            .unwrap_err();
        assert_eq!(
            e.message,
            "invalid decimal schema: scale parameter not found"
        );
        let e = c
            .from_connect(
                "t",
                Some(&structured(
                    Some(decimal_schema(2)),
                    Some(val(value::Kind::Float64(1.5))),
                )),
            )
            .unwrap_err();
        assert!(e.message.contains("expected bytes"), "{e}");
        let e = c
            .to_connect("t", Some(br#"{"schema":{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"1"}},"payload":1.25}"#))
            .unwrap_err();
        assert!(e.message.contains("scale 1"), "{e}");
    }

    #[test]
    fn kafka_dates_and_times() {
        let c = json(true);
        let cases = [
            (
                named(SchemaType::Int32, json::DATE),
                10000,
                r#"{"schema":{"type":"int32","optional":false,"name":"org.apache.kafka.connect.data.Date","version":1},"payload":10000}"#,
            ),
            (
                named(SchemaType::Int32, json::TIME),
                14400000,
                r#"{"schema":{"type":"int32","optional":false,"name":"org.apache.kafka.connect.data.Time","version":1},"payload":14400000}"#,
            ),
            (
                named(SchemaType::Int64, json::TIMESTAMP),
                4000000000,
                r#"{"schema":{"type":"int64","optional":false,"name":"org.apache.kafka.connect.data.Timestamp","version":1},"payload":4000000000}"#,
            ),
        ];
        for (schema, v, expected) in cases {
            assert_eq!(
                write(&c, Some(schema.clone()), Some(val(value::Kind::Int(v)))),
                expected
            );
            assert_eq!(
                read(&c, expected),
                (Some(schema), Some(value::Kind::Int(v)))
            );
        }
        let (_, v) = read(
            &c,
            r#"{ "schema": { "type": "int64", "name": "org.apache.kafka.connect.data.Timestamp", "version": 1, "default": 42 }, "payload": null }"#,
        );
        assert_eq!(v, Some(value::Kind::Int(42)));
        let e = c
            .to_connect("t", Some(br#"{"schema":{"type":"int32","name":"org.apache.kafka.connect.data.Date"},"payload":1.5}"#))
            .unwrap_err();
        assert_eq!(
            e.message,
            "invalid type for date, underlying representation should be integer but was NUMBER"
        );
        let e = c
            .from_connect(
                "t",
                Some(&structured(
                    Some(named(SchemaType::Int32, json::TIME)),
                    Some(val(value::Kind::Int(-1))),
                )),
            )
            .unwrap_err();
        assert!(e.message.contains("millisecond of the day"), "{e}");
    }

    #[test]
    fn kafka_schemaless_reading_and_writing() {
        use value::Kind;
        let c = json(true);
        assert_eq!(
            read(&c, r#"{ "schema": null, "payload": null }"#),
            (None, None)
        );
        assert_eq!(
            read(&c, r#"{ "schema": null, "payload": 12 }"#),
            (None, Some(Kind::Int(12)))
        );
        assert_eq!(
            read(&c, r#"{ "schema": null, "payload": 12.24 }"#),
            (None, Some(Kind::Float64(12.24)))
        );
        assert_eq!(
            read(&c, r#"{ "schema": null, "payload": [1, "2", 3] }"#).1,
            Some(Kind::Array(ArrayValue {
                items: vec![
                    val(Kind::Int(1)),
                    val(Kind::String("2".into())),
                    val(Kind::Int(3))
                ]
            }))
        );
        let plain = json(false);
        assert_eq!(read(&plain, "true"), (None, Some(Kind::Boolean(true))));
        assert_eq!(
            plain.to_connect("t", Some(b"")).unwrap(),
            Data { kind: None }
        );
        assert_eq!(
            read(&plain, r#"{ "a": "", "b": null}"#).1,
            Some(Kind::Map(MapValue {
                entries: vec![
                    MapEntry {
                        key: Some(val(Kind::String("a".into()))),
                        value: Some(val(Kind::String(String::new())))
                    },
                    MapEntry {
                        key: Some(val(Kind::String("b".into()))),
                        value: Some(val(Kind::Null(true)))
                    },
                ]
            }))
        );
        assert!(c.to_connect("t", Some(b"")).is_err());
        assert_eq!(
            write(&c, None, Some(val(Kind::Boolean(true)))),
            r#"{"schema":null,"payload":true}"#
        );
        assert_eq!(write(&plain, None, Some(val(Kind::Boolean(true)))), "true");
        assert_eq!(
            plain
                .from_connect("t", Some(&structured(None, None)))
                .unwrap(),
            None
        );
    }

    #[test]
    fn kafka_replace_null_with_default() {
        let with_default = Schema {
            optional: true,
            default_value: Some(val(value::Kind::String("default".into()))),
            ..schema_of(SchemaType::String)
        };
        let in_struct = Schema {
            fields: vec![Field {
                name: "field1".into(),
                schema: Some(Box::new(with_default.clone())),
            }],
            ..schema_of(SchemaType::Struct)
        };
        let empty_struct = val(value::Kind::Struct(StructValue {
            fields: vec![val(value::Kind::Null(true))],
            names: vec![],
        }));
        let replace = json_with(&[("replace.null.with.default", "true")]);
        let keep = json_with(&[("replace.null.with.default", "false")]);
        assert_eq!(
            write(&replace, Some(with_default.clone()), None),
            r#"{"schema":{"type":"string","optional":true,"default":"default"},"payload":"default"}"#
        );
        assert_eq!(
            write(&keep, Some(with_default.clone()), None),
            r#"{"schema":{"type":"string","optional":true,"default":"default"},"payload":null}"#
        );
        assert_eq!(
            write(
                &replace,
                Some(in_struct.clone()),
                Some(empty_struct.clone())
            ),
            r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":true,"default":"default","field":"field1"}],"optional":false},"payload":{"field1":"default"}}"#
        );
        let kept = write(&keep, Some(in_struct), Some(empty_struct));
        assert_eq!(
            kept,
            r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":true,"default":"default","field":"field1"}],"optional":false},"payload":{"field1":null}}"#
        );
        let text =
            r#"{"schema":{"type":"string","optional":true,"default":"default"},"payload":null}"#;
        assert_eq!(
            read(&replace, text).1,
            Some(value::Kind::String("default".into()))
        );
        assert_eq!(read(&keep, text).1, Some(value::Kind::Null(true)));
        let field = |c: &Converter| match read(c, &kept).1 {
            Some(value::Kind::Struct(s)) => s.fields[0].kind.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(field(&replace), Some(value::Kind::String("default".into())));
        assert_eq!(field(&keep), Some(value::Kind::Null(true)));
    }

    #[test]
    fn settings_are_validated_with_clear_messages() {
        let json_class = "org.apache.kafka.connect.json.JsonConverter";
        let try_new = |class: &str, k: &str, v: &str| {
            let settings = [(k.to_string(), v.to_string())].into_iter().collect();
            Converter::new(class, &settings, Side::Value)
                .map(|_| ())
                .unwrap_err()
        };
        assert_eq!(
            try_new(json_class, "decimal.format", "X"),
            (
                "decimal.format".to_string(),
                "invalid value \"X\": expected BASE64 or NUMERIC".to_string()
            )
        );
        assert_eq!(
            try_new(json_class, "schemas.cache.size", "lots").0,
            "schemas.cache.size"
        );
        assert_eq!(
            try_new(json_class, "replace.null.with.default", "yes").0,
            "replace.null.with.default"
        );
        assert_eq!(
            try_new(json_class, "converter.type", "body").0,
            "converter.type"
        );
        let e = try_new(
            "org.apache.kafka.connect.storage.StringConverter",
            "converter.encoding",
            "EBCDIC",
        );
        assert_eq!(e.0, "converter.encoding");
        assert!(
            e.1.starts_with("unsupported encoding \"EBCDIC\""),
            "{}",
            e.1
        );
        assert!(
            json_with(&[("schemas.cache.size", " 10 "), ("decimal.format", "Base64")])
                .to_connect("t", Some(br#"{"schema":null,"payload":1}"#))
                .is_ok()
        );
        // Keys another converter defines are ignored, as Kafka ignores them.
        assert!(Converter::new(
            "org.apache.kafka.connect.storage.StringConverter",
            &[("decimal.format".to_string(), "X".to_string())]
                .into_iter()
                .collect(),
            Side::Value
        )
        .is_ok());
    }

    #[test]
    fn string_converter_encodings_and_java_text() {
        let with = |encoding: &str| {
            Converter::new(
                "StringConverter",
                &[("converter.encoding".to_string(), encoding.to_string())]
                    .into_iter()
                    .collect(),
                Side::Value,
            )
            .unwrap()
        };
        let latin1 = with("ISO-8859-1");
        assert_eq!(
            latin1
                .from_connect("t", Some(&string_data("é€")))
                .unwrap()
                .unwrap(),
            vec![0xE9, b'?']
        );
        assert_eq!(
            read(&latin1, "").1,
            Some(value::Kind::String(String::new()))
        );
        assert_eq!(
            latin1.to_connect("t", Some(&[0xE9])).unwrap(),
            structured(
                Some(Schema {
                    optional: true,
                    ..schema_of(SchemaType::String)
                }),
                Some(val(value::Kind::String("é".into())))
            )
        );
        let utf16 = with("utf-16");
        let bytes = utf16
            .from_connect("t", Some(&string_data("hi")))
            .unwrap()
            .unwrap();
        assert_eq!(bytes, vec![0xFE, 0xFF, 0, b'h', 0, b'i']);
        assert_eq!(read(&utf16, "").1, Some(value::Kind::String(String::new())));
        assert_eq!(
            utf16.to_connect("t", Some(&bytes)).unwrap(),
            with("UTF-16BE")
                .to_connect("t", Some(&[0, b'h', 0, b'i']))
                .unwrap()
        );
        let utf8 = with("UTF8");
        assert_eq!(
            utf8.to_connect("t", Some(&[b'a', 0xFF])).unwrap(),
            structured(
                Some(Schema {
                    optional: true,
                    ..schema_of(SchemaType::String)
                }),
                Some(val(value::Kind::String("a\u{FFFD}".into())))
            )
        );
        let list = val(value::Kind::Array(ArrayValue {
            items: vec![val(value::Kind::Int(1)), val(value::Kind::Float64(2.0))],
        }));
        assert_eq!(
            utf8.from_connect("t", Some(&structured(None, Some(list))))
                .unwrap()
                .unwrap(),
            b"[1, 2.0]"
        );
        assert_eq!(
            utf8.from_connect(
                "t",
                Some(&structured(
                    Some(decimal_schema(2)),
                    Some(val(value::Kind::Bytes(vec![0x00, 0x9C])))
                ))
            )
            .unwrap()
            .unwrap(),
            b"1.56"
        );
    }
}
