//! AvroConverter against an in-memory registry: every Connect type through bytes and back, the
//! wire format, Confluent's schema text, subject names and the errors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use apache_avro::types::Value as AvroValue;
use proptest::prelude::*;
use sluice_proto::connector::v1::{
    data, value, ArrayValue, Data, Field, MapEntry, MapValue, Schema, SchemaType, StructValue,
    Structured, Value,
};

use super::from_avro::logical;
use super::*;
use crate::converter::registry::{MemoryRegistry, SchemaRegistry, SubjectSchema};
use crate::converter::Converter;

/// Counts the calls that reach the registry, to prove cache hits do none.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryRegistry,
    calls: AtomicUsize,
}

impl SchemaRegistry for Counting {
    fn register(&self, subject: &str, schema: &str) -> Result<SchemaId, RegistryError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.register(subject, schema)
    }
    fn lookup(&self, subject: &str, schema: &str) -> Result<SchemaId, RegistryError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.lookup(subject, schema)
    }
    fn latest(&self, subject: &str) -> Result<SubjectSchema, RegistryError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.latest(subject)
    }
    fn schema(&self, id: SchemaId) -> Result<String, RegistryError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.schema(id)
    }
    fn location(&self) -> String {
        "memory".into()
    }
}

fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn converter(registry: Arc<dyn SchemaRegistry>, pairs: &[(&str, &str)]) -> Converter {
    Converter::avro(&settings(pairs), Side::Value, registry).unwrap()
}

fn s(t: SchemaType) -> Schema {
    Schema {
        r#type: t as i32,
        ..Schema::default()
    }
}

fn opt(schema: Schema) -> Schema {
    Schema {
        optional: true,
        ..schema
    }
}

fn v(kind: value::Kind) -> Value {
    Value { kind: Some(kind) }
}

fn null() -> Value {
    v(value::Kind::Null(true))
}

fn field(name: &str, schema: Schema) -> Field {
    Field {
        name: name.into(),
        schema: Some(Box::new(schema)),
    }
}

fn structured(schema: Schema, value: Value) -> Data {
    Data {
        kind: Some(data::Kind::Structured(Structured {
            schema: Some(schema),
            value: Some(value),
        })),
    }
}

fn decimal(scale: i32) -> Schema {
    let mut d = logical(SchemaType::Bytes, record::DECIMAL);
    d.parameters.insert("scale".into(), scale.to_string());
    d
}

fn string_map(entries: &[(&str, Value)]) -> Value {
    v(value::Kind::Map(MapValue {
        entries: entries
            .iter()
            .map(|(k, val)| MapEntry {
                key: Some(v(value::Kind::String(k.to_string()))),
                value: Some(val.clone()),
            })
            .collect(),
    }))
}

/// A struct with a field of every Connect type, logical types, containers, nesting, optional
/// fields (set and null), defaults and docs.
fn everything() -> (Schema, Value) {
    use value::Kind;
    let inner = Schema {
        name: Some("com.example.Inner".into()),
        fields: vec![field("n", s(SchemaType::Int32))],
        ..s(SchemaType::Struct)
    };
    let mut with_default = opt(s(SchemaType::Int32));
    with_default.default_value = Some(v(Kind::Int(42)));
    let mut parameters = std::collections::HashMap::new();
    parameters.insert(format!("{FIELD_DOC_PREFIX}text"), "some text".to_string());
    let schema = Schema {
        name: Some("com.example.Everything".into()),
        version: Some(3),
        doc: Some("all types".into()),
        parameters,
        fields: vec![
            field("i8", s(SchemaType::Int8)),
            field("i16", s(SchemaType::Int16)),
            field("i32", s(SchemaType::Int32)),
            field("i64", s(SchemaType::Int64)),
            field("f32", s(SchemaType::Float32)),
            field("f64", s(SchemaType::Float64)),
            field("bool", s(SchemaType::Boolean)),
            field("text", s(SchemaType::String)),
            field("blob", s(SchemaType::Bytes)),
            field("price", decimal(2)),
            field("day", logical(SchemaType::Int32, record::DATE)),
            field("time", logical(SchemaType::Int32, record::TIME)),
            field("at", logical(SchemaType::Int64, record::TIMESTAMP)),
            field(
                "tags",
                Schema {
                    value_schema: Some(Box::new(s(SchemaType::String))),
                    ..s(SchemaType::Array)
                },
            ),
            field(
                "counts",
                Schema {
                    key_schema: Some(Box::new(s(SchemaType::String))),
                    value_schema: Some(Box::new(s(SchemaType::Int32))),
                    ..s(SchemaType::Map)
                },
            ),
            field(
                "by_id",
                Schema {
                    key_schema: Some(Box::new(s(SchemaType::Int32))),
                    value_schema: Some(Box::new(opt(s(SchemaType::String)))),
                    ..s(SchemaType::Map)
                },
            ),
            field("inner", inner.clone()),
            field("again", opt(inner)),
            field(
                "anonymous",
                Schema {
                    fields: vec![field("x", s(SchemaType::Boolean))],
                    ..s(SchemaType::Struct)
                },
            ),
            field("maybe", opt(s(SchemaType::String))),
            field("missing", opt(s(SchemaType::String))),
            field("defaulted", with_default),
        ],
        ..s(SchemaType::Struct)
    };
    let value = v(Kind::Struct(StructValue {
        names: vec![],
        fields: vec![
            v(Kind::Int(-8)),
            v(Kind::Int(-1600)),
            v(Kind::Int(1 << 30)),
            v(Kind::Int(-(1 << 50))),
            v(Kind::Float32(1.5)),
            v(Kind::Float64(-2.25e100)),
            v(Kind::Boolean(true)),
            v(Kind::String("héllo".into())),
            v(Kind::Bytes(vec![0, 1, 255])),
            // -123.45: unscaled -12345, two's complement big-endian.
            v(Kind::Bytes((-12345i16).to_be_bytes().to_vec())),
            v(Kind::Int(19_000)),
            v(Kind::Int(45_296_789)),
            v(Kind::Int(1_700_000_000_123)),
            v(Kind::Array(ArrayValue {
                items: vec![v(Kind::String("a".into())), v(Kind::String("b".into()))],
            })),
            string_map(&[("one", v(Kind::Int(1))), ("two", v(Kind::Int(2)))]),
            v(Kind::Map(MapValue {
                entries: vec![
                    MapEntry {
                        key: Some(v(Kind::Int(7))),
                        value: Some(v(Kind::String("seven".into()))),
                    },
                    MapEntry {
                        key: Some(v(Kind::Int(8))),
                        value: Some(null()),
                    },
                ],
            })),
            v(Kind::Struct(StructValue {
                fields: vec![v(Kind::Int(1))],
                names: vec![],
            })),
            v(Kind::Struct(StructValue {
                fields: vec![v(Kind::Int(2))],
                names: vec![],
            })),
            v(Kind::Struct(StructValue {
                fields: vec![v(Kind::Boolean(false))],
                names: vec![],
            })),
            v(Kind::String("yes".into())),
            null(),
            v(Kind::Int(7)),
        ],
    }));
    (schema, value)
}

#[test]
fn every_type_round_trips_through_bytes() {
    let registry = Arc::new(MemoryRegistry::new());
    let c = converter(registry.clone(), &[]);
    let (schema, value) = everything();
    let data = structured(schema.clone(), value.clone());
    let bytes = c.from_connect("orders", Some(&data)).unwrap().unwrap();
    let id = registry.latest("orders-value").unwrap().id;
    assert_eq!(bytes[0], 0);
    assert_eq!(bytes[1..5], id.0.to_be_bytes());
    let back = c.to_connect("orders", Some(&bytes)).unwrap();
    let Some(data::Kind::Structured(back)) = back.kind else {
        panic!("not structured: {back:?}");
    };
    assert_eq!(back.value.as_ref(), Some(&value));
    // The schema comes back as written, except that the optional field's Avro default is
    // marked as coming from Avro (Confluent does the same).
    let mut expected = schema;
    assert_eq!(
        back.schema.as_ref().map(|s| s.fields.len()),
        Some(expected.fields.len())
    );
    for (want, got) in expected
        .fields
        .iter_mut()
        .zip(&back.schema.as_ref().unwrap().fields)
    {
        assert_eq!(want.name, got.name);
        assert_eq!(want.schema, got.schema, "field {}", want.name);
    }
    assert_eq!(back.schema, Some(expected));
}

#[test]
fn wire_format_is_magic_byte_id_and_avro_binary() {
    let registry = Arc::new(MemoryRegistry::new());
    // Another schema first, so the id is not 1.
    registry.insert("\"long\"");
    let c = converter(registry.clone(), &[]);
    let data = structured(s(SchemaType::String), v(value::Kind::String("hi".into())));
    let bytes = c.from_connect("t", Some(&data)).unwrap().unwrap();
    // Magic 0, id 2 big-endian, then Avro: zigzag length 2 (= 4) and the UTF-8 bytes.
    assert_eq!(bytes, vec![0, 0, 0, 0, 2, 4, b'h', b'i']);
    assert_eq!(registry.latest("t-value").unwrap().schema, "\"string\"");
    // An optional int: union index 1 (zigzag 2), then zigzag 300 = 600 as a varint.
    let data = structured(opt(s(SchemaType::Int32)), v(value::Kind::Int(300)));
    let bytes = c.from_connect("t", Some(&data)).unwrap().unwrap();
    assert_eq!(bytes[5..], [2, 0xD8, 0x04]);
    // Nulls are Kafka nulls.
    assert_eq!(c.from_connect("t", None).unwrap(), None);
    let tombstone = Data {
        kind: Some(data::Kind::Structured(Structured {
            schema: Some(opt(s(SchemaType::String))),
            value: None,
        })),
    };
    assert_eq!(c.from_connect("t", Some(&tombstone)).unwrap(), None);
    assert_eq!(c.to_connect("t", None).unwrap(), Data { kind: None });
}

#[test]
fn avro_schemas_are_written_as_confluent_writes_them() {
    let mut price = decimal(2);
    price.optional = true;
    let schema = Schema {
        fields: vec![
            field("small", s(SchemaType::Int8)),
            field("price", price),
            field("day", logical(SchemaType::Int32, record::DATE)),
            field("at", logical(SchemaType::Int64, record::TIMESTAMP)),
            field("time", logical(SchemaType::Int32, record::TIME)),
        ],
        ..s(SchemaType::Struct)
    };
    assert_eq!(
        avro_schema_text(&schema).unwrap(),
        concat!(
            r#"{"type":"record","name":"ConnectDefault","namespace":"io.confluent.connect.avro","fields":["#,
            r#"{"name":"small","type":{"type":"int","connect.type":"int8"}},"#,
            r#"{"name":"price","type":["null",{"type":"bytes","scale":2,"precision":64,"connect.version":1,"#,
            r#""connect.parameters":{"scale":"2"},"connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}],"default":null},"#,
            r#"{"name":"day","type":{"type":"int","connect.version":1,"connect.name":"org.apache.kafka.connect.data.Date","logicalType":"date"}},"#,
            r#"{"name":"at","type":{"type":"long","connect.version":1,"connect.name":"org.apache.kafka.connect.data.Timestamp","logicalType":"timestamp-millis"}},"#,
            r#"{"name":"time","type":{"type":"int","connect.version":1,"connect.name":"org.apache.kafka.connect.data.Time","logicalType":"time-millis"}}]}"#,
        )
    );
    // A struct name splits into namespace and name; an optional struct is a union.
    let named = Schema {
        name: Some("com.example.Line".into()),
        fields: vec![field("line", opt(s(SchemaType::String)))],
        ..opt(s(SchemaType::Struct))
    };
    assert_eq!(
        avro_schema_text(&named).unwrap(),
        concat!(
            r#"["null",{"type":"record","name":"Line","namespace":"com.example","fields":["#,
            r#"{"name":"line","type":["null","string"],"default":null}],"connect.name":"com.example.Line"}]"#
        )
    );
}

#[test]
fn avro_written_elsewhere_is_read() {
    use value::Kind;
    let registry = Arc::new(MemoryRegistry::new());
    let text = r#"{"type":"record","name":"User","namespace":"com.acme","doc":"a user","fields":[
        {"name":"name","type":"string","doc":"full name"},
        {"name":"color","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]}},
        {"name":"id","type":{"type":"fixed","name":"Id","size":2}},
        {"name":"either","type":["int","string"]},
        {"name":"age","type":"int","default":18},
        {"name":"micros","type":{"type":"long","logicalType":"timestamp-micros"}}
    ]}"#;
    let avro = apache_avro::Schema::parse_str(text).unwrap();
    let id = registry.insert(text);
    let record = AvroValue::Record(vec![
        ("name".into(), AvroValue::String("Ada".into())),
        ("color".into(), AvroValue::Enum(1, "GREEN".into())),
        ("id".into(), AvroValue::Fixed(2, vec![1, 2])),
        (
            "either".into(),
            AvroValue::Union(1, Box::new(AvroValue::String("x".into()))),
        ),
        ("age".into(), AvroValue::Int(36)),
        ("micros".into(), AvroValue::TimestampMicros(5)),
    ]);
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.0.to_be_bytes());
    bytes.extend(apache_avro::to_avro_datum(&avro, record).unwrap());
    let c = converter(registry, &[]);
    let Some(data::Kind::Structured(back)) = c.to_connect("t", Some(&bytes)).unwrap().kind else {
        panic!("not structured");
    };
    let schema = back.schema.unwrap();
    assert_eq!(schema.name.as_deref(), Some("com.acme.User"));
    assert_eq!(
        schema.parameters.get(RECORD_DOC).map(String::as_str),
        Some("a user")
    );
    let color = schema.fields[1].schema.as_ref().unwrap();
    assert_eq!(color.r#type, SchemaType::String as i32);
    assert_eq!(
        color.parameters.get(ENUM_PARAM).map(String::as_str),
        Some("com.acme.Color")
    );
    let either = schema.fields[3].schema.as_ref().unwrap();
    assert_eq!(either.name.as_deref(), Some(UNION));
    let age = schema.fields[4].schema.as_ref().unwrap();
    assert_eq!(age.default_value, Some(v(Kind::Int(18))));
    assert_eq!(
        age.parameters.get(FIELD_DEFAULT_FLAG).map(String::as_str),
        Some("true")
    );
    assert_eq!(
        back.value.unwrap(),
        v(Kind::Struct(StructValue {
            names: vec![],
            fields: vec![
                v(Kind::String("Ada".into())),
                v(Kind::String("GREEN".into())),
                v(Kind::Bytes(vec![1, 2])),
                v(Kind::Struct(StructValue {
                    names: vec![],
                    fields: vec![null(), v(Kind::String("x".into()))],
                })),
                v(Kind::Int(36)),
                v(Kind::Int(5)),
            ],
        }))
    );
}

#[test]
fn bad_bytes_and_unknown_ids_are_conversion_errors() {
    let registry = Arc::new(MemoryRegistry::new());
    let c = converter(registry, &[]);
    let e = c.to_connect("t", Some(&[1, 0, 0, 0, 1, 2])).unwrap_err();
    assert!(e.message.starts_with("unknown magic byte 1"), "{e}");
    let e = c.to_connect("t", Some(&[0, 0, 1])).unwrap_err();
    assert!(e.message.starts_with("unknown magic byte"), "{e}");
    let e = c.to_connect("t", Some(&[0, 0, 0, 0, 99, 2])).unwrap_err();
    assert!(
        e.message
            .contains("schema id 99 not found in the schema registry at memory"),
        "{e}"
    );
    // Truncated Avro data.
    let data = structured(
        s(SchemaType::String),
        v(value::Kind::String("hello".into())),
    );
    let bytes = c.from_connect("t", Some(&data)).unwrap().unwrap();
    let e = c.to_connect("t", Some(&bytes[..7])).unwrap_err();
    assert!(
        e.message
            .contains("decode Avro data written with schema id 1"),
        "{e}"
    );
}

#[test]
fn schemaless_and_mistyped_data_are_refused() {
    let c = converter(Arc::new(MemoryRegistry::new()), &[]);
    let schemaless = Data {
        kind: Some(data::Kind::Structured(Structured {
            schema: None,
            value: Some(v(value::Kind::String("x".into()))),
        })),
    };
    let e = c.from_connect("t", Some(&schemaless)).unwrap_err();
    assert!(e.message.contains("cannot write schemaless data"), "{e}");
    let e = c
        .from_connect(
            "t",
            Some(&structured(s(SchemaType::Int8), v(value::Kind::Int(300)))),
        )
        .unwrap_err();
    assert!(e.message.contains("out of range"), "{e}");
    let schema = Schema {
        fields: vec![field("a", s(SchemaType::Int32))],
        ..s(SchemaType::Struct)
    };
    let value = v(value::Kind::Struct(StructValue {
        fields: vec![null()],
        names: vec![],
    }));
    let e = c
        .from_connect("t", Some(&structured(schema, value)))
        .unwrap_err();
    assert_eq!(
        e.message,
        "field \"a\": found null value for non-optional int32 schema"
    );
}

#[test]
fn subjects_follow_the_strategy_and_side() {
    let registry = Arc::new(MemoryRegistry::new());
    let record = Schema {
        name: Some("com.example.Order".into()),
        fields: vec![field("id", s(SchemaType::Int64))],
        ..s(SchemaType::Struct)
    };
    let value = v(value::Kind::Struct(StructValue {
        fields: vec![v(value::Kind::Int(1))],
        names: vec![],
    }));
    let data = structured(record, value);
    let key = Converter::avro(&BTreeMap::new(), Side::Key, registry.clone()).unwrap();
    key.from_connect("orders", Some(&data)).unwrap();
    assert!(registry.latest("orders-key").is_ok());
    let by_record = converter(
        registry.clone(),
        &[(
            "value.subject.name.strategy",
            "io.confluent.kafka.serializers.subject.RecordNameStrategy",
        )],
    );
    by_record.from_connect("orders", Some(&data)).unwrap();
    assert!(registry.latest("com.example.Order").is_ok());
    let by_topic_record = converter(
        registry.clone(),
        &[("value.subject.name.strategy", "TopicRecordNameStrategy")],
    );
    by_topic_record.from_connect("orders", Some(&data)).unwrap();
    assert!(registry.latest("orders-com.example.Order").is_ok());
    let e = Converter::avro(
        &settings(&[("value.subject.name.strategy", "com.example.Mine")]),
        Side::Value,
        registry,
    )
    .unwrap_err();
    assert_eq!(e.0, "value.subject.name.strategy");
}

#[test]
fn cache_hits_make_no_registry_calls() {
    let registry = Arc::new(Counting::default());
    let c = converter(registry.clone(), &[]);
    let data = structured(s(SchemaType::String), v(value::Kind::String("x".into())));
    let bytes = c.from_connect("t", Some(&data)).unwrap().unwrap();
    c.to_connect("t", Some(&bytes)).unwrap();
    assert_eq!(registry.calls.load(Ordering::Relaxed), 2);
    for _ in 0..10 {
        let clone = c.clone();
        let bytes = clone.from_connect("t", Some(&data)).unwrap().unwrap();
        clone.to_connect("t", Some(&bytes)).unwrap();
    }
    assert_eq!(registry.calls.load(Ordering::Relaxed), 2);
}

#[test]
fn auto_register_off_looks_schemas_up() {
    let registry = Arc::new(MemoryRegistry::new());
    let c = converter(registry.clone(), &[("auto.register.schemas", "false")]);
    let data = structured(s(SchemaType::String), v(value::Kind::String("x".into())));
    let e = c.from_connect("t", Some(&data)).unwrap_err();
    assert!(
        e.message
            .contains("look up (auto.register.schemas=false) schema under subject \"t-value\""),
        "{e}"
    );
    let id = registry.register("t-value", "\"string\"").unwrap();
    let bytes = c.from_connect("t", Some(&data)).unwrap().unwrap();
    assert_eq!(bytes[1..5], id.0.to_be_bytes());
}

#[test]
fn use_latest_version_writes_with_the_latest_schema() {
    let registry = Arc::new(MemoryRegistry::new());
    let latest = r#"{"type":"record","name":"ConnectDefault","namespace":"io.confluent.connect.avro","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":"none"}]}"#;
    let id = registry.register("t-value", latest).unwrap();
    let c = converter(registry, &[("use.latest.version", "true")]);
    let schema = Schema {
        fields: vec![field("a", s(SchemaType::Int32))],
        ..s(SchemaType::Struct)
    };
    let value = v(value::Kind::Struct(StructValue {
        fields: vec![v(value::Kind::Int(5))],
        names: vec![],
    }));
    let bytes = c
        .from_connect("t", Some(&structured(schema, value)))
        .unwrap()
        .unwrap();
    assert_eq!(bytes[1..5], id.0.to_be_bytes());
    let Some(data::Kind::Structured(back)) = c.to_connect("t", Some(&bytes)).unwrap().kind else {
        panic!("not structured");
    };
    assert_eq!(
        back.value.unwrap(),
        v(value::Kind::Struct(StructValue {
            fields: vec![
                v(value::Kind::Int(5)),
                v(value::Kind::String("none".into()))
            ],
            names: vec![],
        }))
    );
}

#[test]
fn settings_are_validated() {
    let e = Converter::new(
        "io.confluent.connect.avro.AvroConverter",
        &BTreeMap::new(),
        Side::Value,
    )
    .unwrap_err();
    assert_eq!(e.0, "schema.registry.url");
    let ok = Converter::new(
        "AvroConverter",
        &settings(&[
            (
                "schema.registry.url",
                "http://127.0.0.1:1,http://127.0.0.1:2",
            ),
            ("basic.auth.credentials.source", "USER_INFO"),
            ("basic.auth.user.info", "me:secret"),
        ]),
        Side::Key,
    )
    .unwrap();
    assert_eq!(ok.kind(), crate::converter::ConverterKind::Avro);
    assert!(!format!("{ok:?}").contains("secret"));
    let e = Converter::new(
        "AvroConverter",
        &settings(&[
            ("schema.registry.url", "http://x:1"),
            ("basic.auth.credentials.source", "USER_INFO"),
        ]),
        Side::Key,
    )
    .unwrap_err();
    assert_eq!(e.0, "basic.auth.user.info");
    let e = Converter::new(
        "AvroConverter",
        &settings(&[
            ("schema.registry.url", "http://x:1"),
            ("auto.register.schemas", "yes"),
        ]),
        Side::Key,
    )
    .unwrap_err();
    assert_eq!(e.0, "auto.register.schemas");
}

proptest! {
    #[test]
    fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let registry = Arc::new(MemoryRegistry::new());
        let (schema, _) = everything();
        let id = registry.insert(&avro_schema_text(&schema).unwrap());
        let c = converter(registry, &[]);
        let mut bytes = vec![0];
        bytes.extend_from_slice(&id.0.to_be_bytes());
        bytes.extend(body);
        let _ = c.to_connect("t", Some(&bytes));
    }
}
