//! Kafka Connect's fixed-width converters (IntegerConverter, LongConverter, ShortConverter,
//! FloatConverter, DoubleConverter, BooleanConverter): big-endian bytes exactly as Kafka's
//! `IntegerSerializer` and friends write them, read back with the optional schema of the type.

use sluice_proto::connector::v1::{value, Schema, SchemaType, Structured, Value};

use super::{ConversionError, ConverterKind};
use crate::json::{kafka_type_name, kind_name};

/// The Java type name Kafka's messages use, and the serialized width.
fn type_and_width(kind: ConverterKind) -> (&'static str, usize) {
    match kind {
        ConverterKind::Integer => ("integer", 4),
        ConverterKind::Long => ("long", 8),
        ConverterKind::Short => ("short", 2),
        ConverterKind::Float => ("float", 4),
        ConverterKind::Double => ("double", 8),
        _ => ("boolean", 1),
    }
}

/// Serializes a non-raw value; `value` is `None` for null.
pub(super) fn from_connect(
    kind: ConverterKind,
    schema: Option<&Schema>,
    value: Option<&Value>,
) -> Result<Option<Vec<u8>>, ConversionError> {
    let name = kind.simple_name();
    if kind == ConverterKind::Boolean {
        if let Some(schema) = schema.filter(|s| s.r#type != SchemaType::Boolean as i32) {
            return Err(ConversionError::new(format!(
                "invalid schema type for BooleanConverter: {}",
                kafka_type_name(schema.r#type)
            )));
        }
    }
    let Some(value) = value else {
        return Ok(None);
    };
    let (type_name, _) = type_and_width(kind);
    let out_of_range = |i: &i64| {
        ConversionError::new(format!(
            "{name}: failed to serialize to {type_name}: {i} is out of range"
        ))
    };
    let bytes = match (kind, &value.kind) {
        (ConverterKind::Integer, Some(value::Kind::Int(i))) => i32::try_from(*i)
            .map_err(|_| out_of_range(i))?
            .to_be_bytes()
            .to_vec(),
        (ConverterKind::Long, Some(value::Kind::Int(i))) => i.to_be_bytes().to_vec(),
        (ConverterKind::Short, Some(value::Kind::Int(i))) => i16::try_from(*i)
            .map_err(|_| out_of_range(i))?
            .to_be_bytes()
            .to_vec(),
        (ConverterKind::Float, Some(value::Kind::Float32(f))) => f.to_be_bytes().to_vec(),
        (ConverterKind::Double, Some(value::Kind::Float64(f))) => f.to_be_bytes().to_vec(),
        (ConverterKind::Boolean, Some(value::Kind::Boolean(b))) => vec![u8::from(*b)],
        (ConverterKind::Boolean, other) => {
            return Err(ConversionError::new(format!(
                "BooleanConverter is not compatible with objects of type {}",
                kind_name(other.as_ref())
            )))
        }
        (_, other) => {
            return Err(ConversionError::new(format!(
                "{name}: failed to serialize to {type_name} (was {})",
                kind_name(other.as_ref())
            )))
        }
    };
    Ok(Some(bytes))
}

/// Deserializes non-null bytes, checking the width as Kafka's deserializers do.
pub(super) fn to_connect(kind: ConverterKind, bytes: &[u8]) -> Result<Structured, ConversionError> {
    let (type_name, width) = type_and_width(kind);
    if bytes.len() != width {
        let deserializer = match kind {
            ConverterKind::Integer => "IntegerDeserializer",
            ConverterKind::Long => "LongDeserializer",
            ConverterKind::Short => "ShortDeserializer",
            ConverterKind::Float => "FloatDeserializer",
            ConverterKind::Double => "DoubleDeserializer",
            _ => "BooleanDeserializer",
        };
        return Err(ConversionError::new(format!(
            "{}: failed to deserialize {type_name}: size of data received by {deserializer} is not {width} (got {} bytes)",
            kind.simple_name(),
            bytes.len()
        )));
    }
    let mut buf = [0u8; 8];
    buf[..width].copy_from_slice(bytes);
    let (schema_type, kind) = match kind {
        ConverterKind::Integer => (
            SchemaType::Int32,
            value::Kind::Int(i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]).into()),
        ),
        ConverterKind::Long => (SchemaType::Int64, value::Kind::Int(i64::from_be_bytes(buf))),
        ConverterKind::Short => (
            SchemaType::Int16,
            value::Kind::Int(i16::from_be_bytes([buf[0], buf[1]]).into()),
        ),
        ConverterKind::Float => (
            SchemaType::Float32,
            value::Kind::Float32(f32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]])),
        ),
        ConverterKind::Double => (
            SchemaType::Float64,
            value::Kind::Float64(f64::from_be_bytes(buf)),
        ),
        _ => (
            SchemaType::Boolean,
            value::Kind::Boolean(match buf[0] {
                1 => true,
                0 => false,
                b => {
                    return Err(ConversionError::new(format!(
                        "BooleanConverter: failed to deserialize boolean: unexpected byte {} (expected 0 or 1)",
                        b as i8
                    )))
                }
            }),
        ),
    };
    Ok(Structured {
        schema: Some(Schema {
            r#type: schema_type as i32,
            optional: true,
            ..Schema::default()
        }),
        value: Some(Value { kind: Some(kind) }),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sluice_proto::connector::v1::{data, Data};

    use super::super::{Converter, Side};
    use super::*;

    fn converter(class: &str) -> Converter {
        Converter::new(class, &BTreeMap::new(), Side::Value).unwrap()
    }

    fn data(schema: Option<SchemaType>, kind: value::Kind) -> Data {
        Data {
            kind: Some(data::Kind::Structured(Structured {
                schema: schema.map(|t| Schema {
                    r#type: t as i32,
                    ..Schema::default()
                }),
                value: Some(Value { kind: Some(kind) }),
            })),
        }
    }

    fn round_trip(class: &str, schema: SchemaType, kind: value::Kind, bytes: &[u8]) {
        let c = converter(class);
        let out = c
            .from_connect("t", Some(&data(Some(schema), kind.clone())))
            .unwrap();
        assert_eq!(out.as_deref(), Some(bytes), "{class}");
        let back = c.to_connect("t", Some(bytes)).unwrap();
        let mut expected = data(Some(schema), kind);
        if let Some(data::Kind::Structured(s)) = &mut expected.kind {
            s.schema.as_mut().unwrap().optional = true;
        }
        assert_eq!(back, expected, "{class}");
    }

    #[test]
    fn big_endian_like_kafka_serializers() {
        use value::Kind;
        let p = "org.apache.kafka.connect.converters.";
        round_trip(
            &format!("{p}IntegerConverter"),
            SchemaType::Int32,
            Kind::Int(-2),
            &[0xFF, 0xFF, 0xFF, 0xFE],
        );
        round_trip(
            &format!("{p}IntegerConverter"),
            SchemaType::Int32,
            Kind::Int(0x0102_0304),
            &[1, 2, 3, 4],
        );
        round_trip(
            &format!("{p}LongConverter"),
            SchemaType::Int64,
            Kind::Int(1),
            &[0, 0, 0, 0, 0, 0, 0, 1],
        );
        round_trip(
            &format!("{p}ShortConverter"),
            SchemaType::Int16,
            Kind::Int(-32768),
            &[0x80, 0x00],
        );
        round_trip(
            &format!("{p}FloatConverter"),
            SchemaType::Float32,
            Kind::Float32(1.5),
            &[0x3F, 0xC0, 0, 0],
        );
        round_trip(
            &format!("{p}DoubleConverter"),
            SchemaType::Float64,
            Kind::Float64(-2.0),
            &[0xC0, 0, 0, 0, 0, 0, 0, 0],
        );
        round_trip(
            &format!("{p}BooleanConverter"),
            SchemaType::Boolean,
            Kind::Boolean(true),
            &[1],
        );
        round_trip(
            &format!("{p}BooleanConverter"),
            SchemaType::Boolean,
            Kind::Boolean(false),
            &[0],
        );
        // Short names work too; nulls stay nulls.
        let c = converter("LongConverter");
        assert_eq!(c.kind(), ConverterKind::Long);
        assert_eq!(
            c.from_connect("t", Some(&Data { kind: None })).unwrap(),
            None
        );
        assert_eq!(c.to_connect("t", None).unwrap(), Data { kind: None });
    }

    #[test]
    fn wrong_types_and_lengths_are_named() {
        use value::Kind;
        let int = converter("org.apache.kafka.connect.converters.IntegerConverter");
        let e = int
            .from_connect("t", Some(&data(None, Kind::String("1".into()))))
            .unwrap_err();
        assert_eq!(
            e.message,
            "IntegerConverter: failed to serialize to integer (was string)"
        );
        let e = int
            .from_connect("t", Some(&data(None, Kind::Int(1 << 40))))
            .unwrap_err();
        assert_eq!(
            e.message,
            "IntegerConverter: failed to serialize to integer: 1099511627776 is out of range"
        );
        let e = int.to_connect("t", Some(&[1, 2, 3])).unwrap_err();
        assert_eq!(
            e.message,
            "IntegerConverter: failed to deserialize integer: size of data received by IntegerDeserializer is not 4 (got 3 bytes)"
        );
        let float = converter("FloatConverter");
        let e = float
            .from_connect("t", Some(&data(None, Kind::Float64(1.0))))
            .unwrap_err();
        assert_eq!(
            e.message,
            "FloatConverter: failed to serialize to float (was float64)"
        );
        let boolean = converter("BooleanConverter");
        let e = boolean
            .from_connect(
                "t",
                Some(&data(Some(SchemaType::String), Kind::String("x".into()))),
            )
            .unwrap_err();
        assert_eq!(
            e.message,
            "invalid schema type for BooleanConverter: STRING"
        );
        let e = boolean
            .from_connect("t", Some(&data(None, Kind::Int(1))))
            .unwrap_err();
        assert_eq!(
            e.message,
            "BooleanConverter is not compatible with objects of type int"
        );
        let e = boolean.to_connect("t", Some(&[2])).unwrap_err();
        assert!(e.message.contains("unexpected byte 2"), "{e}");
        assert!(boolean.to_connect("t", Some(&[])).is_err());
    }
}
