//! Cases from Kafka Connect's documentation and its transforms' unit tests: schemaless and
//! schema'd values, nulls, tombstones, nested fields and errors.

use std::collections::BTreeMap;

use sluice_proto::connector::v1::{data, value, Data, Field, Header, Schema, SchemaType, Value};

use super::*;
use crate::record::*;

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A one-transform chain from `type` and its own keys.
fn chain(class: &str, keys: &[(&str, &str)]) -> Chain {
    let mut c = config(&[("transforms", "t"), ("transforms.t.type", class)]);
    for (k, v) in keys {
        c.insert(format!("transforms.t.{k}"), v.to_string());
    }
    Chain::from_config(&c).unwrap_or_else(|e| panic!("config refused: {e:?}"))
}

fn issues(class: &str, keys: &[(&str, &str)]) -> Vec<ConfigIssue> {
    let mut c = config(&[("transforms", "t"), ("transforms.t.type", class)]);
    for (k, v) in keys {
        c.insert(format!("transforms.t.{k}"), v.to_string());
    }
    Chain::from_config(&c).expect_err("config should be refused")
}

fn s(v: &str) -> Value {
    string_value(v)
}

fn i(v: i64) -> Value {
    int_value(v)
}

fn structured(schema: Option<Schema>, value: Option<Value>) -> Option<Data> {
    Part { schema, value }.into_data()
}

fn record(value: Option<Data>) -> Record {
    Record {
        topic: "test".into(),
        kafka_partition: Some(0),
        offset: None,
        key: None,
        value,
        timestamp_ms: Some(1_700_000_000_000),
        headers: Vec::new(),
    }
}

fn map(entries: &[(&str, Value)]) -> Value {
    map_value(
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

fn fld(name: &str, schema: Schema) -> Field {
    Field {
        name: name.into(),
        schema: Some(Box::new(schema)),
    }
}

fn struct_schema(fields: Vec<Field>) -> Schema {
    Schema {
        fields,
        ..schema_of(SchemaType::Struct, false)
    }
}

fn value_part(r: &Record) -> Part {
    Part::from_data(r.value.clone())
}

fn run(c: &Chain, r: Record) -> Record {
    c.apply(r)
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("record kept")
}

fn fail(c: &Chain, r: Record) -> String {
    c.apply(r).expect_err("transform should fail").message
}

fn user_schema() -> Schema {
    struct_schema(vec![
        fld("id", schema_of(SchemaType::Int32, false)),
        fld("name", schema_of(SchemaType::String, true)),
        fld("age", schema_of(SchemaType::Int64, false)),
    ])
}

fn user(id: i64, name: Option<&str>, age: i64) -> Value {
    struct_value(vec![i(id), name.map(s).unwrap_or_else(null), i(age)])
}

#[test]
fn class_names_and_aliases() {
    for class in transform_classes() {
        // Every class builds with its Kafka name, or reports a missing key by name.
        let mut c = config(&[("transforms", "t"), ("transforms.t.type", &class)]);
        c.insert("transforms.t.unused.key".into(), "x".into());
        let err = Chain::from_config(&c).expect_err("unknown key must be refused");
        assert!(
            err.iter().any(|e| e.key == "transforms.t.unused.key"),
            "{class}: {err:?}"
        );
        assert!(
            err.iter().all(|e| e.key.starts_with("transforms.t.")),
            "{err:?}"
        );
    }
    let e = issues("org.apache.kafka.connect.transforms.Nope", &[]);
    assert_eq!(e[0].key, "transforms.t.type");
    assert!(e[0].message.contains("unknown transform class"));
    // Short names work too.
    chain("InsertField$Value", &[("topic.field", "t")]);
}

#[test]
fn missing_transform_type_and_undefined_predicate() {
    let c = config(&[
        ("transforms", "a,b"),
        (
            "transforms.b.type",
            "org.apache.kafka.connect.transforms.Filter",
        ),
        ("transforms.b.predicate", "nope"),
    ]);
    let e = Chain::from_config(&c).unwrap_err();
    let keys: Vec<&str> = e.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["transforms.a.type", "transforms.b.predicate"]);
}

#[test]
fn insert_field_schemaless_and_schemad() {
    let c = chain(
        "org.apache.kafka.connect.transforms.InsertField$Value",
        &[
            ("topic.field", "topic_field!"),
            ("partition.field", "partition_field"),
            ("timestamp.field", "timestamp_field?"),
            ("static.field", "instance_id"),
            ("static.value", "my-instance-id"),
        ],
    );
    let out = run(&c, record(structured(None, Some(map(&[("magic", i(42))])))));
    assert_eq!(
        value_part(&out).value.unwrap(),
        map(&[
            ("magic", i(42)),
            ("topic_field", s("test")),
            ("partition_field", i(0)),
            ("timestamp_field", i(1_700_000_000_000)),
            ("instance_id", s("my-instance-id")),
        ])
    );
    let schema = struct_schema(vec![fld("magic", schema_of(SchemaType::Int64, false))]);
    let out = run(
        &c,
        record(structured(Some(schema), Some(struct_value(vec![i(42)])))),
    );
    let part = value_part(&out);
    let fields: Vec<(&str, bool)> = part
        .schema
        .as_ref()
        .unwrap()
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.schema.as_ref().unwrap().optional))
        .collect();
    assert_eq!(
        fields,
        [
            ("magic", false),
            ("topic_field", false),
            ("partition_field", true),
            ("timestamp_field", true),
            ("instance_id", true)
        ]
    );
    let ts = part.schema.as_ref().unwrap().fields[3]
        .schema
        .clone()
        .unwrap();
    assert_eq!(ts.name.as_deref(), Some(TIMESTAMP));
    assert_eq!(
        part.value.unwrap(),
        struct_value(vec![
            i(42),
            s("test"),
            i(0),
            i(1_700_000_000_000),
            s("my-instance-id")
        ])
    );
    // Tombstones pass unchanged.
    let tomb = record(None);
    assert_eq!(run(&c, tomb.clone()), tomb);
    // offset.field needs a sink record.
    let c = chain("InsertField$Value", &[("offset.field", "off")]);
    let e = fail(&c, record(structured(None, Some(map(&[])))));
    assert!(e.contains("SinkRecord"), "{e}");
    let mut sink = record(structured(None, Some(map(&[]))));
    sink.offset = Some(77);
    assert_eq!(
        value_part(&run(&c, sink)).value.unwrap(),
        map(&[("off", i(77))])
    );
    // A schema'd value that is not a struct is refused.
    let mut not_struct = record(structured(
        Some(schema_of(SchemaType::Int32, false)),
        Some(i(1)),
    ));
    not_struct.offset = Some(1);
    let e = fail(&c, not_struct);
    assert!(e.contains("only Struct objects supported"), "{e}");
}

#[test]
fn extract_field() {
    let c = chain(
        "org.apache.kafka.connect.transforms.ExtractField$Key",
        &[("field", "id")],
    );
    let mut r = record(None);
    r.key = structured(Some(user_schema()), Some(user(5, Some("x"), 3)));
    let out = run(&c, r);
    let key = Part::from_data(out.key);
    assert_eq!(key.schema.unwrap().r#type, SchemaType::Int32 as i32);
    assert_eq!(key.value.unwrap(), i(5));
    let mut r = record(None);
    r.key = structured(None, Some(map(&[("id", i(5)), ("x", s("y"))])));
    assert_eq!(Part::from_data(run(&c, r).key).value.unwrap(), i(5));
    // A missing schemaless field gives null; a missing schema'd one is an error.
    let mut r = record(None);
    r.key = structured(None, Some(map(&[("x", s("y"))])));
    assert_eq!(run(&c, r).key, None);
    let c = chain("ExtractField$Value", &[("field", "nope")]);
    let e = fail(
        &c,
        record(structured(Some(user_schema()), Some(user(1, None, 2)))),
    );
    assert_eq!(e, "unknown field: nope");
    // Null values stay null with the field's schema.
    let out = run(
        &c.steps
            .is_empty()
            .then(Chain::default)
            .unwrap_or_else(|| chain("ExtractField$Value", &[("field", "name")])),
        record(structured(Some(user_schema()), None)),
    );
    let part = value_part(&out);
    assert_eq!(part.schema.unwrap().r#type, SchemaType::String as i32);
    assert_eq!(part.value, None);
}

#[test]
fn hoist_field() {
    let c = chain("HoistField$Value", &[("field", "line")]);
    let out = run(
        &c,
        record(structured(
            Some(schema_of(SchemaType::String, false)),
            Some(s("hi")),
        )),
    );
    let part = value_part(&out);
    let schema = part.schema.unwrap();
    assert_eq!(schema.fields[0].name, "line");
    assert_eq!(part.value.unwrap(), struct_value(vec![s("hi")]));
    let out = run(&c, record(structured(None, Some(i(42)))));
    assert_eq!(value_part(&out).value.unwrap(), map(&[("line", i(42))]));
    // Raw bytes hoist as schemaless bytes.
    let raw = record(Some(Data {
        kind: Some(data::Kind::Raw(b"ab".to_vec())),
    }));
    assert_eq!(
        value_part(&run(&c, raw)).value.unwrap(),
        map(&[("line", bytes_value(b"ab".to_vec()))])
    );
    // A null under a required schema is refused.
    let e = fail(
        &c,
        record(structured(Some(schema_of(SchemaType::String, false)), None)),
    );
    assert!(e.contains("required"), "{e}");
}

#[test]
fn flatten_nested_structs_and_maps() {
    let inner = Schema {
        optional: true,
        ..struct_schema(vec![
            fld("a", schema_of(SchemaType::Int32, false)),
            fld("b", schema_of(SchemaType::String, false)),
        ])
    };
    let schema = Schema {
        name: Some("outer".into()),
        ..struct_schema(vec![
            fld("id", schema_of(SchemaType::Int64, false)),
            fld("nested", inner),
            fld(
                "tags",
                Schema {
                    value_schema: Some(Box::new(schema_of(SchemaType::String, false))),
                    ..schema_of(SchemaType::Array, false)
                },
            ),
        ])
    };
    let c = chain("Flatten$Value", &[("delimiter", "_")]);
    let value = struct_value(vec![
        i(1),
        struct_value(vec![i(2), s("x")]),
        array_value(vec![s("t")]),
    ]);
    let out = value_part(&run(
        &c,
        record(structured(Some(schema.clone()), Some(value))),
    ));
    let out_schema = out.schema.unwrap();
    assert_eq!(out_schema.name.as_deref(), Some("outer"));
    let names: Vec<(&str, bool)> = out_schema
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.schema.as_ref().unwrap().optional))
        .collect();
    // Fields under the optional parent become optional.
    assert_eq!(
        names,
        [
            ("id", false),
            ("nested_a", true),
            ("nested_b", true),
            ("tags", false)
        ]
    );
    assert_eq!(
        out.value.unwrap(),
        struct_value(vec![i(1), i(2), s("x"), array_value(vec![s("t")])])
    );
    // A null nested struct gives nulls.
    let out = value_part(&run(
        &c,
        record(structured(
            Some(schema),
            Some(struct_value(vec![i(1), null(), array_value(vec![])])),
        )),
    ));
    assert_eq!(
        out.value.unwrap(),
        struct_value(vec![i(1), null(), null(), array_value(vec![])])
    );
    // Schemaless: maps flatten with the default delimiter, lists stay.
    let c = chain("Flatten$Value", &[]);
    let v = map(&[
        ("A", map(&[("B", i(1)), ("C", map(&[("D", s("x"))]))])),
        ("L", array_value(vec![i(1)])),
    ]);
    assert_eq!(
        value_part(&run(&c, record(structured(None, Some(v)))))
            .value
            .unwrap(),
        map(&[
            ("A.B", i(1)),
            ("A.C.D", s("x")),
            ("L", array_value(vec![i(1)]))
        ])
    );
    let tomb = record(None);
    assert_eq!(run(&c, tomb.clone()), tomb);
}

#[test]
fn mask_field() {
    let c = chain("MaskField$Value", &[("fields", "id,name,age")]);
    let out = value_part(&run(
        &c,
        record(structured(
            Some(user_schema()),
            Some(user(5, Some("bob"), 7)),
        )),
    ));
    assert_eq!(out.value.unwrap(), user(0, Some(""), 0));
    let c = chain(
        "MaskField$Value",
        &[("fields", "name,age"), ("replacement", "10")],
    );
    let out = value_part(&run(
        &c,
        record(structured(
            Some(user_schema()),
            Some(user(5, Some("bob"), 7)),
        )),
    ));
    assert_eq!(out.value.unwrap(), user(5, Some("10"), 10));
    // Null fields stay null.
    let out = value_part(&run(
        &c,
        record(structured(Some(user_schema()), Some(user(5, None, 7)))),
    ));
    assert_eq!(out.value.unwrap(), user(5, None, 10));
    let c = chain(
        "MaskField$Value",
        &[("fields", "age"), ("replacement", "abc")],
    );
    let e = fail(
        &c,
        record(structured(Some(user_schema()), Some(user(5, None, 7)))),
    );
    assert!(e.contains("unable to convert abc (INT64) to number"), "{e}");
    let c = chain("MaskField$Value", &[("fields", "ok,list")]);
    let v = map(&[("ok", value_bool(true)), ("list", array_value(vec![i(1)]))]);
    assert_eq!(
        value_part(&run(&c, record(structured(None, Some(v)))))
            .value
            .unwrap(),
        map(&[("ok", value_bool(false)), ("list", array_value(vec![]))])
    );
    assert_eq!(issues("MaskField$Value", &[])[0].key, "transforms.t.fields");
}

fn value_bool(b: bool) -> Value {
    Value {
        kind: Some(value::Kind::Boolean(b)),
    }
}

#[test]
fn replace_field() {
    let c = chain(
        "org.apache.kafka.connect.transforms.ReplaceField$Value",
        &[("exclude", "age"), ("renames", "id:user_id,name:full_name")],
    );
    let out = value_part(&run(
        &c,
        record(structured(
            Some(user_schema()),
            Some(user(5, Some("bob"), 7)),
        )),
    ));
    let names: Vec<String> = out
        .schema
        .unwrap()
        .fields
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["user_id", "full_name"]);
    assert_eq!(out.value.unwrap(), struct_value(vec![i(5), s("bob")]));
    let c = chain("ReplaceField$Value", &[("include", "name,zz")]);
    let v = map(&[("id", i(1)), ("name", s("x"))]);
    assert_eq!(
        value_part(&run(&c, record(structured(None, Some(v)))))
            .value
            .unwrap(),
        map(&[("name", s("x"))])
    );
    let e = issues("ReplaceField$Value", &[("renames", "a:b,c")]);
    assert_eq!(e[0].key, "transforms.t.renames");
    assert!(e[0].message.contains("invalid rename mapping: c"));
    // Tombstones keep the updated schema and a null value.
    let c = chain("ReplaceField$Value", &[("exclude", "age")]);
    let out = value_part(&run(&c, record(structured(Some(user_schema()), None))));
    assert_eq!(out.schema.unwrap().fields.len(), 2);
    assert_eq!(out.value, None);
}

#[test]
fn value_to_key() {
    let c = chain(
        "org.apache.kafka.connect.transforms.ValueToKey",
        &[("fields", "id,age")],
    );
    let out = run(
        &c,
        record(structured(Some(user_schema()), Some(user(5, Some("b"), 7)))),
    );
    let key = Part::from_data(out.key.clone());
    let names: Vec<String> = key
        .schema
        .unwrap()
        .fields
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["id", "age"]);
    assert_eq!(key.value.unwrap(), struct_value(vec![i(5), i(7)]));
    assert_eq!(value_part(&out).value.unwrap(), user(5, Some("b"), 7));
    let out = run(
        &c,
        record(structured(None, Some(map(&[("id", i(1)), ("x", i(2))])))),
    );
    assert_eq!(
        Part::from_data(out.key).value.unwrap(),
        map(&[("id", i(1)), ("age", null())])
    );
    let e = fail(&c, record(None));
    assert!(e.contains("found: null"), "{e}");
    let c = chain("ValueToKey", &[("fields", "nope")]);
    let e = fail(
        &c,
        record(structured(Some(user_schema()), Some(user(5, None, 7)))),
    );
    assert_eq!(e, "field does not exist: nope");
}

#[test]
fn cast_whole_and_fields() {
    let c = chain(
        "org.apache.kafka.connect.transforms.Cast$Value",
        &[("spec", "int8")],
    );
    let out = value_part(&run(
        &c,
        record(structured(
            Some(schema_of(SchemaType::Int32, false)),
            Some(i(300)),
        )),
    ));
    assert_eq!(out.schema.unwrap().r#type, SchemaType::Int8 as i32);
    // Java's narrowing: (byte) 300 == 44.
    assert_eq!(out.value.unwrap(), i(44));
    let c = chain(
        "Cast$Value",
        &[("spec", "id:string,age:float64,name:int32")],
    );
    let out = value_part(&run(
        &c,
        record(structured(
            Some(user_schema()),
            Some(user(5, Some("12"), 7)),
        )),
    ));
    let types: Vec<i32> = out
        .schema
        .unwrap()
        .fields
        .iter()
        .map(|f| f.schema.as_ref().unwrap().r#type)
        .collect();
    assert_eq!(
        types,
        [
            SchemaType::String as i32,
            SchemaType::Int32 as i32,
            SchemaType::Float64 as i32
        ]
    );
    assert_eq!(
        out.value.unwrap(),
        struct_value(vec![
            s("5"),
            i(12),
            Value {
                kind: Some(value::Kind::Float64(7.0))
            }
        ])
    );
    let e = fail(
        &c,
        record(structured(Some(user_schema()), Some(user(5, Some("x"), 7)))),
    );
    assert!(e.contains("cannot be cast to INT32"), "{e}");
    // Schemaless fields; booleans from strings as Java's parseBoolean.
    let c = chain("Cast$Value", &[("spec", "a:boolean,b:int64,c:string")]);
    let v = map(&[
        ("a", s("TRUE")),
        ("b", value_bool(true)),
        (
            "c",
            Value {
                kind: Some(value::Kind::Float64(1.5)),
            },
        ),
    ]);
    assert_eq!(
        value_part(&run(&c, record(structured(None, Some(v)))))
            .value
            .unwrap(),
        map(&[("a", value_bool(true)), ("b", i(1)), ("c", s("1.5"))])
    );
    // Structs cannot be cast; a bad spec names its key.
    let c = chain("Cast$Value", &[("spec", "string")]);
    let e = fail(
        &c,
        record(structured(Some(user_schema()), Some(user(1, None, 1)))),
    );
    assert!(e.contains("does not support casting from STRUCT"), "{e}");
    let e = issues("Cast$Value", &[("spec", "id:int99")]);
    assert_eq!(e[0].key, "transforms.t.spec");
    // A Decimal casts through its value.
    let dec = Schema {
        name: Some(DECIMAL.into()),
        parameters: [("scale".to_string(), "2".to_string())].into(),
        ..schema_of(SchemaType::Bytes, false)
    };
    let c = chain("Cast$Value", &[("spec", "string")]);
    let out = value_part(&run(
        &c,
        record(structured(
            Some(dec.clone()),
            Some(bytes_value(vec![0xfb, 0x2e])),
        )),
    ));
    assert_eq!(out.value.unwrap(), s("-12.34"));
    let c = chain("Cast$Value", &[("spec", "int32")]);
    let out = value_part(&run(
        &c,
        record(structured(Some(dec), Some(bytes_value(vec![0x04, 0xd2])))),
    ));
    assert_eq!(out.value.unwrap(), i(12));
}

#[test]
fn set_schema_metadata() {
    let c = chain(
        "SetSchemaMetadata$Value",
        &[("schema.name", "com.example.User"), ("schema.version", "3")],
    );
    let out = value_part(&run(
        &c,
        record(structured(Some(user_schema()), Some(user(1, None, 2)))),
    ));
    let schema = out.schema.unwrap();
    assert_eq!(schema.name.as_deref(), Some("com.example.User"));
    assert_eq!(schema.version, Some(3));
    let e = fail(&c, record(structured(None, Some(i(1)))));
    assert_eq!(e, "Schema required for [updating schema metadata]");
    let e = issues("SetSchemaMetadata$Value", &[("schema.version", "x")]);
    assert_eq!(e[0].key, "transforms.t.schema.version");
}

#[test]
fn timestamp_converter() {
    // Kafka's documented example: a string field to a unix epoch and back.
    let c = chain(
        "org.apache.kafka.connect.transforms.TimestampConverter$Value",
        &[
            ("field", "ts"),
            ("target.type", "unix"),
            ("format", "yyyy-MM-dd'T'HH:mm:ss.SSS"),
        ],
    );
    let v = map(&[("ts", s("2023-11-14T22:13:20.000")), ("x", i(1))]);
    assert_eq!(
        value_part(&run(&c, record(structured(None, Some(v)))))
            .value
            .unwrap(),
        map(&[("ts", i(1_700_000_000_000)), ("x", i(1))])
    );
    let c = chain(
        "TimestampConverter$Value",
        &[("target.type", "string"), ("format", "yyyy-MM-dd HH:mm:ss")],
    );
    let out = value_part(&run(
        &c,
        record(structured(
            Some(timestamp_schema(false)),
            Some(i(1_700_000_000_000)),
        )),
    ));
    assert_eq!(out.schema.unwrap().r#type, SchemaType::String as i32);
    assert_eq!(out.value.unwrap(), s("2023-11-14 22:13:20"));
    // Date, Time and unix seconds.
    let c = chain("TimestampConverter$Value", &[("target.type", "Date")]);
    let out = value_part(&run(
        &c,
        record(structured(None, Some(i(1_700_000_000_000)))),
    ));
    assert_eq!(out.value.unwrap(), i(19675));
    let c = chain("TimestampConverter$Value", &[("target.type", "Time")]);
    let out = value_part(&run(
        &c,
        record(structured(
            Some(schema_of(SchemaType::Int64, false)),
            Some(i(1_700_000_000_000)),
        )),
    ));
    assert_eq!(out.schema.unwrap().name.as_deref(), Some(TIME));
    assert_eq!(out.value.unwrap(), i(80_000_000));
    let c = chain(
        "TimestampConverter$Value",
        &[("target.type", "unix"), ("unix.precision", "seconds")],
    );
    let out = value_part(&run(
        &c,
        record(structured(Some(date_schema(true)), Some(i(19675)))),
    ));
    assert_eq!(out.value.unwrap(), i(1_699_920_000));
    assert!(out.schema.unwrap().optional);
    // Errors: a string target without format; an unparseable string.
    let e = issues("TimestampConverter$Value", &[("target.type", "string")]);
    assert_eq!(e[0].key, "transforms.t.format");
    let e = issues("TimestampConverter$Value", &[("target.type", "week")]);
    assert_eq!(e[0].key, "transforms.t.target.type");
    let c = chain(
        "TimestampConverter$Value",
        &[("target.type", "unix"), ("format", "yyyy-MM-dd")],
    );
    let e = fail(&c, record(structured(None, Some(s("yesterday")))));
    assert!(e.contains("does not match pattern (yyyy-MM-dd)"), "{e}");
    let out = value_part(&run(&c, record(structured(None, Some(s("2023-11-14"))))));
    assert_eq!(out.value.unwrap(), i(1_699_920_000_000));
}

#[test]
fn routers_and_filter_with_predicates() {
    let c = chain(
        "org.apache.kafka.connect.transforms.RegexRouter",
        &[("regex", "(.*)-(\\d+)"), ("replacement", "$1_v$2")],
    );
    let mut r = record(None);
    r.topic = "orders-7".into();
    assert_eq!(run(&c, r).topic, "orders_v7");
    // The regex must match the whole topic.
    let mut r = record(None);
    r.topic = "x-orders-7y".into();
    assert_eq!(run(&c, r).topic, "x-orders-7y");
    let c = chain("TimestampRouter", &[]);
    assert_eq!(run(&c, record(None)).topic, "test-20231114");
    let c = chain(
        "TimestampRouter",
        &[
            ("topic.format", "${timestamp}.${topic}"),
            ("timestamp.format", "yyyy-MM"),
        ],
    );
    assert_eq!(run(&c, record(None)).topic, "2023-11.test");
    let mut r = record(None);
    r.timestamp_ms = None;
    assert!(fail(&c, r).contains("timestamp missing"));

    let c = Chain::from_config(&config(&[
        ("transforms", "dropTombstones,dropOther"),
        (
            "transforms.dropTombstones.type",
            "org.apache.kafka.connect.transforms.Filter",
        ),
        ("transforms.dropTombstones.predicate", "isTombstone"),
        ("transforms.dropOther.type", "Filter"),
        ("transforms.dropOther.predicate", "isFoo"),
        ("transforms.dropOther.negate", "true"),
        ("predicates", "isTombstone,isFoo,hasH"),
        (
            "predicates.isTombstone.type",
            "org.apache.kafka.connect.transforms.predicates.RecordIsTombstone",
        ),
        (
            "predicates.isFoo.type",
            "org.apache.kafka.connect.transforms.predicates.TopicNameMatches",
        ),
        ("predicates.isFoo.pattern", "foo.*"),
        ("predicates.hasH.type", "HasHeaderKey"),
        ("predicates.hasH.name", "h"),
    ]))
    .unwrap();
    assert_eq!(c.apply(record(None)).unwrap(), None, "tombstone dropped");
    let live = record(structured(None, Some(i(1))));
    assert_eq!(c.apply(live.clone()).unwrap(), None, "not foo: dropped");
    let mut foo = live;
    foo.topic = "foo-1".into();
    assert_eq!(c.apply(foo.clone()).unwrap(), Some(foo));
    let e = Chain::from_config(&config(&[
        ("predicates", "p"),
        ("predicates.p.type", "TopicNameMatches"),
        ("predicates.p.pattern", "(unclosed"),
    ]))
    .unwrap_err();
    assert_eq!(e[0].key, "predicates.p.pattern");
}

#[test]
fn header_transforms() {
    let c = chain(
        "InsertHeader",
        &[("header", "source"), ("value.literal", "db1")],
    );
    let out = run(&c, record(None));
    assert_eq!(out.headers.len(), 1);
    assert_eq!(out.headers[0].key, "source");
    let c = chain("DropHeaders", &[("headers", "a,b")]);
    let mut r = record(None);
    for k in ["a", "c", "b"] {
        r.headers.push(Header {
            key: k.into(),
            value: None,
        });
    }
    let keys: Vec<String> = run(&c, r).headers.into_iter().map(|h| h.key).collect();
    assert_eq!(keys, ["c"]);
    let c = chain(
        "org.apache.kafka.connect.transforms.HeaderFrom$Value",
        &[
            ("fields", "id,name"),
            ("headers", "h_id,h_name"),
            ("operation", "move"),
        ],
    );
    let out = run(
        &c,
        record(structured(Some(user_schema()), Some(user(5, Some("b"), 7)))),
    );
    let keys: Vec<&str> = out.headers.iter().map(|h| h.key.as_str()).collect();
    assert_eq!(keys, ["h_id", "h_name"]);
    let header = Part::from_data(out.headers[0].value.clone());
    assert_eq!(header.value.unwrap(), i(5));
    assert_eq!(header.schema.unwrap().r#type, SchemaType::Int32 as i32);
    let part = value_part(&out);
    assert_eq!(part.schema.unwrap().fields.len(), 1);
    assert_eq!(part.value.unwrap(), struct_value(vec![i(7)]));
    let c = chain(
        "HeaderFrom$Value",
        &[("fields", "id"), ("headers", "h"), ("operation", "copy")],
    );
    let out = run(&c, record(structured(None, Some(map(&[("id", i(1))])))));
    assert_eq!(value_part(&out).value.unwrap(), map(&[("id", i(1))]));
    assert_eq!(out.headers.len(), 1);
    let e = issues(
        "HeaderFrom$Value",
        &[("fields", "a,b"), ("headers", "h"), ("operation", "copy")],
    );
    assert_eq!(e[0].key, "transforms.t.headers");
}

#[test]
fn trace_shows_each_step() {
    let c = Chain::from_config(&config(&[
        ("transforms", "hoist,insert,route"),
        ("transforms.hoist.type", "HoistField$Value"),
        ("transforms.hoist.field", "line"),
        ("transforms.insert.type", "InsertField$Value"),
        ("transforms.insert.static.field", "origin"),
        ("transforms.insert.static.value", "x"),
        ("transforms.route.type", "RegexRouter"),
        ("transforms.route.regex", ".*"),
        ("transforms.route.replacement", "out"),
    ]))
    .unwrap();
    let steps = c.trace(record(structured(None, Some(s("hello")))));
    assert_eq!(steps.len(), 3);
    assert!(steps.iter().all(|s| s.applied && s.error.is_none()));
    assert_eq!(steps[2].record.as_ref().unwrap().topic, "out");
    assert_eq!(
        value_part(steps[1].record.as_ref().unwrap()).value.unwrap(),
        map(&[("line", s("hello")), ("origin", s("x"))])
    );
}

#[test]
fn tombstones_and_null_values() {
    // Schemaless tombstones stay tombstones through the value transforms Kafka passes them by.
    for (class, keys) in [
        ("Cast$Value", &[("spec", "a:int8")][..]),
        ("ExtractField$Value", &[("field", "a")][..]),
        ("Flatten$Value", &[][..]),
        ("InsertField$Value", &[("topic.field", "t")][..]),
        ("MaskField$Value", &[("fields", "a")][..]),
        ("ReplaceField$Value", &[("exclude", "a")][..]),
        ("TimestampConverter$Value", &[("target.type", "unix")][..]),
        (
            "HeaderFrom$Value",
            &[("fields", "a"), ("headers", "h"), ("operation", "copy")][..],
        ),
    ] {
        let c = chain(class, keys);
        let out = run(&c, record(None));
        assert!(out.is_tombstone(), "{class}: {out:?}");
        assert!(out.headers.is_empty(), "{class}");
    }
    // Schema'd nulls keep the (updated) schema and a null value.
    let c = chain("Cast$Value", &[("spec", "int64")]);
    let out = value_part(&run(
        &c,
        record(structured(Some(schema_of(SchemaType::Int32, true)), None)),
    ));
    assert_eq!(out.schema.unwrap().r#type, SchemaType::Int64 as i32);
    assert_eq!(out.value, None);
    let c = chain("SetSchemaMetadata$Value", &[("schema.name", "n")]);
    let out = value_part(&run(&c, record(structured(Some(user_schema()), None))));
    assert_eq!(out.schema.unwrap().name.as_deref(), Some("n"));
    // Null fields inside values: Cast and TimestampConverter leave them null.
    let c = chain("Cast$Value", &[("spec", "name:int32")]);
    let out = value_part(&run(
        &c,
        record(structured(Some(user_schema()), Some(user(1, None, 2)))),
    ));
    assert_eq!(out.value.unwrap(), user(1, None, 2));
    // A key transform on a null key leaves the value alone.
    let c = chain("HoistField$Key", &[("field", "k")]);
    let out = run(&c, record(structured(None, Some(i(1)))));
    assert_eq!(
        Part::from_data(out.key.clone()).value.unwrap(),
        map(&[("k", null())])
    );
    assert_eq!(value_part(&out).value.unwrap(), i(1));
}

#[test]
fn nested_structs_through_extract_and_replace() {
    let address = struct_schema(vec![
        fld("city", schema_of(SchemaType::String, false)),
        fld("zip", schema_of(SchemaType::String, true)),
    ]);
    let schema = struct_schema(vec![
        fld("id", schema_of(SchemaType::Int64, false)),
        fld("address", address.clone()),
    ]);
    let value = struct_value(vec![i(1), struct_value(vec![s("Oslo"), null()])]);
    let c = chain("ExtractField$Value", &[("field", "address")]);
    let out = value_part(&run(
        &c,
        record(structured(Some(schema.clone()), Some(value.clone()))),
    ));
    assert_eq!(out.schema.unwrap(), address);
    assert_eq!(out.value.unwrap(), struct_value(vec![s("Oslo"), null()]));
    // ReplaceField works on top-level fields; a nested struct moves whole.
    let c = chain(
        "ReplaceField$Value",
        &[("renames", "address:addr"), ("exclude", "id")],
    );
    let out = value_part(&run(&c, record(structured(Some(schema), Some(value)))));
    assert_eq!(out.schema.unwrap().fields[0].name, "addr");
    assert_eq!(
        out.value.unwrap(),
        struct_value(vec![struct_value(vec![s("Oslo"), null()])])
    );
}

#[test]
fn has_header_key_sees_headers_added_earlier_in_the_chain() {
    let c = Chain::from_config(&config(&[
        ("transforms", "mark,drop"),
        ("transforms.mark.type", "InsertHeader"),
        ("transforms.mark.header", "seen"),
        ("transforms.mark.value.literal", "yes"),
        ("transforms.mark.predicate", "isAudit"),
        ("transforms.drop.type", "Filter"),
        ("transforms.drop.predicate", "hasSeen"),
        ("predicates", "isAudit,hasSeen"),
        ("predicates.isAudit.type", "TopicNameMatches"),
        ("predicates.isAudit.pattern", "audit-.*"),
        (
            "predicates.hasSeen.type",
            "org.apache.kafka.connect.transforms.predicates.HasHeaderKey",
        ),
        ("predicates.hasSeen.name", "seen"),
    ]))
    .unwrap();
    let mut audit = record(structured(None, Some(i(1))));
    audit.topic = "audit-1".into();
    assert_eq!(c.apply(audit).unwrap(), None, "marked, then dropped");
    let other = record(structured(None, Some(i(1))));
    assert_eq!(c.apply(other.clone()).unwrap(), Some(other));
    // The predicate's own keys are checked too.
    let e = Chain::from_config(&config(&[
        ("predicates", "p"),
        ("predicates.p.type", "HasHeaderKey"),
        ("predicates.p.nam", "x"),
    ]))
    .unwrap_err();
    let keys: Vec<&str> = e.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["predicates.p.name", "predicates.p.nam"]);
}

#[test]
fn null_fields_read_as_their_defaults_unless_replace_null_with_default_is_false() {
    let schema = struct_schema(vec![
        fld("id", schema_of(SchemaType::Int64, false)),
        fld(
            "country",
            Schema {
                default_value: Some(s("NO")),
                ..schema_of(SchemaType::String, true)
            },
        ),
    ]);
    let value = struct_value(vec![i(1), null()]);
    for (class, keys) in [
        ("ReplaceField$Value", &[("exclude", "zz")][..]),
        (
            "InsertField$Value",
            &[("static.field", "x"), ("static.value", "y")][..],
        ),
        ("MaskField$Value", &[("fields", "id")][..]),
    ] {
        let c = chain(class, keys);
        let out = value_part(&run(
            &c,
            record(structured(Some(schema.clone()), Some(value.clone()))),
        ));
        let fields = struct_values(out.value, "test").unwrap();
        assert_eq!(fields[1], s("NO"), "{class}: the default");
        let mut off = keys.to_vec();
        off.push(("replace.null.with.default", "false"));
        let c = chain(class, &off);
        let out = value_part(&run(
            &c,
            record(structured(Some(schema.clone()), Some(value.clone()))),
        ));
        let fields = struct_values(out.value, "test").unwrap();
        assert!(is_null(&fields[1]), "{class}: kept null");
    }
    let c = chain("ValueToKey", &[("fields", "country")]);
    let out = run(
        &c,
        record(structured(Some(schema.clone()), Some(value.clone()))),
    );
    assert_eq!(
        Part::from_data(out.key).value.unwrap(),
        struct_value(vec![s("NO")])
    );
    let c = chain(
        "SetSchemaMetadata$Value",
        &[("schema.name", "n"), ("replace.null.with.default", "false")],
    );
    let out = value_part(&run(
        &c,
        record(structured(Some(schema), Some(value.clone()))),
    ));
    assert_eq!(out.value.unwrap(), value);
}

#[test]
fn struct_transforms_in_place_give_the_schema_a_null_struct_gets() {
    // A struct with a value is changed where it is (`Record::struct_mut`); a null struct is
    // taken apart. Both must end with the same schema: the basics kept, a default dropped
    // as Kafka's `SchemaUtil.copySchemaBasics` drops it.
    let schema = Schema {
        name: Some("users.Value".into()),
        version: Some(3),
        doc: Some("a user".into()),
        default_value: Some(user(0, None, 0)),
        ..struct_schema(user_schema().fields)
    };
    let mut named = user(7, Some("ann"), 40);
    if let Some(value::Kind::Struct(v)) = named.kind.as_mut() {
        v.names = vec!["id".into(), "name".into(), "age".into()];
    }
    for (class, keys, fields, values) in [
        (
            "InsertField$Value",
            &[("static.field", "x"), ("static.value", "y")][..],
            &["id", "name", "age", "x"][..],
            vec![i(7), s("ann"), i(40), s("y")],
        ),
        (
            "ReplaceField$Value",
            &[("exclude", "name"), ("renames", "age:years")][..],
            &["id", "years"][..],
            vec![i(7), i(40)],
        ),
        (
            "MaskField$Value",
            &[("fields", "name")][..],
            &["id", "name", "age"][..],
            vec![i(7), s(""), i(40)],
        ),
    ] {
        let c = chain(class, keys);
        let out = value_part(&run(
            &c,
            record(structured(Some(schema.clone()), Some(named.clone()))),
        ));
        let out_schema = out.schema.unwrap();
        let names: Vec<&str> = out_schema.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, fields, "{class}");
        assert_eq!(
            out.value.unwrap(),
            struct_value(values),
            "{class}: no names"
        );
        assert_eq!(out_schema.name.as_deref(), Some("users.Value"), "{class}");
        assert_eq!(
            (out_schema.version, out_schema.doc.as_deref()),
            (Some(3), Some("a user"))
        );
        if class != "MaskField$Value" {
            assert_eq!(out_schema.default_value, None, "{class}: basics only");
            // Key side: a null struct key goes through the taken-apart path.
            let mut key_keys = keys.to_vec();
            key_keys.push(("replace.null.with.default", "false"));
            let k = chain(&class.replace("$Value", "$Key"), &key_keys);
            let mut r = record(None);
            r.key = structured(Some(schema.clone()), None);
            let out = Part::from_data(run(&k, r).key);
            assert_eq!(out.schema.unwrap(), out_schema, "{class}: null struct");
        }
    }
}
