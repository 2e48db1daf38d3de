//! Converters between the protocol's keys/values and Kafka bytes, with Kafka Connect's class
//! names, configuration keys and byte-for-byte output: JsonConverter (with and without the
//! schema envelope), StringConverter and ByteArrayConverter.

use std::collections::BTreeMap;

use base64::Engine as _;
use sluice_proto::connector::v1::{
    data, value, ArrayValue, Data, MapEntry, MapValue, Schema, SchemaType, Structured, Value,
};

use crate::json;

/// A conversion failure; names what was wrong with the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConversionError(pub String);

/// Which converter class, by any of its accepted names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConverterKind {
    Json,
    String,
    ByteArray,
}

impl ConverterKind {
    pub fn from_class(class: &str) -> Option<ConverterKind> {
        match class.trim() {
            "org.apache.kafka.connect.json.JsonConverter" | "JsonConverter" | "json" => {
                Some(ConverterKind::Json)
            }
            "org.apache.kafka.connect.storage.StringConverter" | "StringConverter" | "string" => {
                Some(ConverterKind::String)
            }
            "org.apache.kafka.connect.converters.ByteArrayConverter"
            | "ByteArrayConverter"
            | "bytearray" => Some(ConverterKind::ByteArray),
            _ => None,
        }
    }

    /// Kafka Connect's class name, for error reports.
    pub fn class_name(self) -> &'static str {
        match self {
            ConverterKind::Json => "org.apache.kafka.connect.json.JsonConverter",
            ConverterKind::String => "org.apache.kafka.connect.storage.StringConverter",
            ConverterKind::ByteArray => "org.apache.kafka.connect.converters.ByteArrayConverter",
        }
    }
}

/// The header converter's Kafka Connect class (headers are converted as its are).
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

/// A configured converter for keys or for values.
#[derive(Debug, Clone)]
pub struct Converter {
    kind: ConverterKind,
    schemas_enable: bool,
}

impl Converter {
    /// Builds a converter from its class and its own settings (keys after the
    /// `key.converter.`/`value.converter.` prefix).
    pub fn new(
        class: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<Converter, (String, String)> {
        let kind = ConverterKind::from_class(class).ok_or_else(|| {
            (
                String::new(),
                format!(
                    "unknown converter class {class:?}; expected org.apache.kafka.connect.json.JsonConverter, \
                     org.apache.kafka.connect.storage.StringConverter or \
                     org.apache.kafka.connect.converters.ByteArrayConverter"
                ),
            )
        })?;
        let schemas_enable = match settings
            .get("schemas.enable")
            .map(|s| s.trim().to_ascii_lowercase())
        {
            None => true,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => {
                return Err((
                    "schemas.enable".into(),
                    format!("invalid value {v:?}: expected true or false"),
                ))
            }
        };
        Ok(Converter {
            kind,
            schemas_enable,
        })
    }

    pub fn kind(&self) -> ConverterKind {
        self.kind
    }

    /// Serializes a record's key or value; `None` is a Kafka null.
    pub fn from_connect(&self, data: Option<&Data>) -> Result<Option<Vec<u8>>, ConversionError> {
        let structured = match data.and_then(|d| d.kind.as_ref()) {
            None => return Ok(None),
            Some(data::Kind::Raw(bytes)) => return Ok(Some(bytes.clone())),
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
                    json::write_schema(&mut out, schema)?;
                    out.extend_from_slice(b",\"payload\":");
                    json::write_value(&mut out, schema, value)?;
                    out.push(b'}');
                } else {
                    json::write_value(&mut out, schema, value)?;
                }
                Ok(Some(out))
            }
            ConverterKind::String => Ok(value.map(|v| match &v.kind {
                Some(value::Kind::String(s)) => s.as_bytes().to_vec(),
                Some(value::Kind::Bytes(b)) => b.clone(),
                _ => json::display(v).into_bytes(),
            })),
            ConverterKind::ByteArray => {
                if let Some(schema) = schema {
                    if schema.r#type != SchemaType::Bytes as i32 {
                        return Err(ConversionError(format!(
                            "invalid schema type for ByteArrayConverter: {}",
                            json::type_name(schema.r#type).to_uppercase()
                        )));
                    }
                }
                match value.map(|v| &v.kind) {
                    None => Ok(None),
                    Some(Some(value::Kind::Bytes(b))) => Ok(Some(b.clone())),
                    Some(_) => Err(ConversionError(
                        "ByteArrayConverter is not compatible with objects of this type".into(),
                    )),
                }
            }
        }
    }

    /// Deserializes Kafka bytes into a key or value; `None` (a Kafka null) gives a null.
    pub fn to_connect(&self, bytes: Option<&[u8]>) -> Result<Data, ConversionError> {
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
                    kind: Some(value::Kind::String(match std::str::from_utf8(bytes) {
                        Ok(text) => text.to_owned(),
                        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
                    })),
                }),
            },
            ConverterKind::Json => {
                let doc: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
                    ConversionError(format!(
                        "converting byte[] to Kafka Connect data failed due to serialization error: {e}"
                    ))
                })?;
                if self.schemas_enable {
                    json::from_envelope(doc)?
                } else {
                    Structured {
                        schema: None,
                        value: Some(schemaless(doc)),
                    }
                }
            }
        };
        Ok(Data {
            kind: Some(data::Kind::Structured(structured)),
        })
    }
}

/// A header value as Kafka Connect's SimpleHeaderConverter writes it: strings as UTF-8, bytes
/// as they are, other values in their JSON text.
pub fn header_bytes(data: Option<&Data>) -> Result<Option<Vec<u8>>, ConversionError> {
    match data.and_then(|d| d.kind.as_ref()) {
        None => Ok(None),
        Some(data::Kind::Raw(bytes)) => Ok(Some(bytes.clone())),
        Some(data::Kind::Structured(s)) => {
            Ok(s.value
                .as_ref()
                .filter(|v| !is_null(v))
                .map(|v| match &v.kind {
                    Some(value::Kind::String(s)) => s.as_bytes().to_vec(),
                    Some(value::Kind::Bytes(b)) => b.clone(),
                    _ => json::display(v).into_bytes(),
                }))
        }
    }
}

fn is_null(v: &Value) -> bool {
    matches!(v.kind, None | Some(value::Kind::Null(_)))
}

fn optional(kind: SchemaType) -> Schema {
    Schema {
        r#type: kind as i32,
        optional: true,
        ..Schema::default()
    }
}

/// Plain JSON to a schemaless value, as Kafka's JsonConverter does with schemas disabled.
pub(crate) fn schemaless(doc: serde_json::Value) -> Value {
    let kind = match doc {
        serde_json::Value::Null => value::Kind::Null(true),
        serde_json::Value::Bool(b) => value::Kind::Boolean(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => value::Kind::Int(i),
            None => value::Kind::Float64(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => value::Kind::String(s),
        serde_json::Value::Array(items) => value::Kind::Array(ArrayValue {
            items: items.into_iter().map(schemaless).collect(),
        }),
        serde_json::Value::Object(fields) => value::Kind::Map(MapValue {
            entries: fields
                .into_iter()
                .map(|(k, v)| MapEntry {
                    key: Some(Value {
                        kind: Some(value::Kind::String(k)),
                    }),
                    value: Some(schemaless(v)),
                })
                .collect(),
        }),
    };
    Value { kind: Some(kind) }
}

/// Decodes base64 as Jackson's `binaryValue` does.
pub(crate) fn base64_decode(s: &str) -> Result<Vec<u8>, ConversionError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| ConversionError(format!("invalid base64 bytes: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::connector::v1::{Field, StructValue};

    fn json(schemas: bool) -> Converter {
        let mut settings = BTreeMap::new();
        settings.insert("schemas.enable".to_string(), schemas.to_string());
        Converter::new("org.apache.kafka.connect.json.JsonConverter", &settings).unwrap()
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
    fn json_envelope_matches_kafka_for_file_source_lines() {
        let out = json(true)
            .from_connect(Some(&string_data("hello \"w\"\u{1}")))
            .unwrap();
        assert_eq!(
            String::from_utf8(out.unwrap()).unwrap(),
            r#"{"schema":{"type":"string","optional":false},"payload":"hello \"w\"\u0001"}"#
        );
        let out = json(false).from_connect(Some(&string_data("x"))).unwrap();
        assert_eq!(out.unwrap(), b"\"x\"");
        // FileStreamSource's null key with no schema stays a Kafka null.
        assert_eq!(
            json(true).from_connect(Some(&Data { kind: None })).unwrap(),
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
                    schema: Some(Schema {
                        r#type: SchemaType::Int32 as i32,
                        ..Schema::default()
                    }),
                },
                Field {
                    name: "blob".into(),
                    schema: Some(Schema {
                        r#type: SchemaType::Bytes as i32,
                        optional: true,
                        ..Schema::default()
                    }),
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
        let bytes = json(true).from_connect(Some(&data)).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            concat!(
                r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"},"#,
                r#"{"type":"bytes","optional":true,"field":"blob"}],"optional":false,"name":"rec"},"#,
                r#""payload":{"id":7,"blob":"AQID"}}"#
            )
        );
        let back = json(true).to_connect(Some(&bytes)).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn string_and_bytearray_converters() {
        let s = Converter::new(
            "org.apache.kafka.connect.storage.StringConverter",
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            s.from_connect(Some(&string_data("é"))).unwrap().unwrap(),
            "é".as_bytes()
        );
        let b = Converter::new(
            "org.apache.kafka.connect.converters.ByteArrayConverter",
            &BTreeMap::new(),
        )
        .unwrap();
        let err = b.from_connect(Some(&string_data("x"))).unwrap_err();
        assert_eq!(err.0, "invalid schema type for ByteArrayConverter: STRING");
        let raw = Data {
            kind: Some(data::Kind::Raw(vec![0, 255])),
        };
        assert_eq!(b.from_connect(Some(&raw)).unwrap().unwrap(), vec![0, 255]);
    }

    #[test]
    fn json_errors_are_clear() {
        let e = json(true).to_connect(Some(b"{\"a\":1}")).unwrap_err();
        assert!(e.0.contains("schemas.enable"), "{e}");
        let e = json(true).to_connect(Some(b"not json")).unwrap_err();
        assert!(e.0.contains("serialization error"), "{e}");
        assert!(Converter::new("com.example.Nope", &BTreeMap::new()).is_err());
    }
}
