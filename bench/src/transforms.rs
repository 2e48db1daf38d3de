//! Transforms figure: records per second through a chain of three transforms and the JSON
//! converter, against the JSON converter alone on the same records, in the same run. In
//! process, with no Kafka: it measures the worker's per-record data path and nothing else.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use sluice_data::converter::Converter;
use sluice_data::record::{Record, Side};
use sluice_data::transforms::Chain;
use sluice_proto::connector::v1::{
    data, value, Data, Field, Schema, SchemaType, StructValue, Structured, Value,
};

use crate::Figure;

fn primitive(kind: SchemaType, optional: bool) -> Schema {
    Schema {
        r#type: kind as i32,
        optional,
        ..Schema::default()
    }
}

/// A row as a database source would send it: id, name, email, score, updated timestamp.
fn row(i: u64) -> Data {
    let field = |name: &str, schema: Schema| Field {
        name: name.into(),
        schema: Some(Box::new(schema)),
    };
    let schema = Schema {
        r#type: SchemaType::Struct as i32,
        name: Some("db.public.users.Value".into()),
        fields: vec![
            field("id", primitive(SchemaType::Int64, false)),
            field("name", primitive(SchemaType::String, true)),
            field("email", primitive(SchemaType::String, true)),
            field("score", primitive(SchemaType::Float64, true)),
            field("updated_at", primitive(SchemaType::Int64, false)),
        ],
        ..Schema::default()
    };
    let v = |kind| Value { kind: Some(kind) };
    let value = v(value::Kind::Struct(StructValue {
        fields: vec![
            v(value::Kind::Int(i as i64)),
            v(value::Kind::String(format!("user number {i}"))),
            v(value::Kind::String(format!("user{i}@example.com"))),
            v(value::Kind::Float64(i as f64 * 0.5)),
            v(value::Kind::Int(1_700_000_000_000 + i as i64)),
        ],
        names: Vec::new(),
    }));
    Data {
        kind: Some(data::Kind::Structured(Structured {
            schema: Some(schema),
            value: Some(value),
        })),
    }
}

fn chain() -> anyhow::Result<Chain> {
    let config: BTreeMap<String, String> = [
        ("transforms", "insert,rename,mask"),
        (
            "transforms.insert.type",
            "org.apache.kafka.connect.transforms.InsertField$Value",
        ),
        ("transforms.insert.static.field", "origin"),
        ("transforms.insert.static.value", "bench"),
        (
            "transforms.rename.type",
            "org.apache.kafka.connect.transforms.ReplaceField$Value",
        ),
        (
            "transforms.rename.renames",
            "updated_at:updated,name:full_name",
        ),
        ("transforms.rename.exclude", "score"),
        (
            "transforms.mask.type",
            "org.apache.kafka.connect.transforms.MaskField$Value",
        ),
        ("transforms.mask.fields", "email"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Chain::from_config(&config).map_err(|e| anyhow::anyhow!("bench chain: {e:?}"))
}

/// Times both paths over the same records; the converter-alone path is the baseline.
pub fn figure(records: u64) -> anyhow::Result<Figure> {
    let chain = chain()?;
    let json = Converter::new(
        "org.apache.kafka.connect.json.JsonConverter",
        &BTreeMap::new(),
        Side::Value,
    )
    .map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    let inputs: Vec<Data> = (0..records.min(100_000)).map(row).collect();
    let record = |i: u64| Record {
        topic: "users".into(),
        kafka_partition: None,
        offset: None,
        key: None,
        value: Some(inputs[(i as usize) % inputs.len()].clone()),
        timestamp_ms: Some(1_700_000_000_000),
        headers: Vec::new(),
    };

    let converter_alone = |records: u64| -> anyhow::Result<usize> {
        let mut bytes = 0usize;
        for i in 0..records {
            let r = record(i);
            let out = json.from_connect(&r.topic, r.value.as_ref())?;
            bytes += black_box(out).map_or(0, |b| b.len());
        }
        Ok(bytes)
    };
    let transformed = |records: u64| -> anyhow::Result<usize> {
        let mut bytes = 0usize;
        for i in 0..records {
            let Some(r) = chain.apply(record(i))? else {
                continue;
            };
            let out = json.from_connect(&r.topic, r.value.as_ref())?;
            bytes += black_box(out).map_or(0, |b| b.len());
        }
        Ok(bytes)
    };
    // Both paths once before timing: whichever ran first would otherwise pay for growing
    // the heap.
    black_box((converter_alone(records / 10)?, transformed(records / 10)?));

    let started = Instant::now();
    let bytes = converter_alone(records)?;
    let baseline_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let transformed_bytes = transformed(records)?;
    let secs = started.elapsed().as_secs_f64();
    black_box((bytes, transformed_bytes));
    Ok(Figure {
        size: 0,
        name: "transforms_3_json".into(),
        records,
        secs,
        baseline_secs,
    })
}
