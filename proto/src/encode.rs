//! A source batch (`SourceResponse.batch`) written with every nested length computed once.
//!
//! prost writes a nested message as its length and then its fields, and works out that length
//! by walking the message; the message's own nested messages are walked again when their
//! turn comes. A batch's records sit four levels deep (`SourceResponse` → `SourceBatch` →
//! `SourceRecord` → `Data` → `Structured` → `Schema`/`Value`), so prost walks each record's
//! schema and value six times to write them once; that walking was the larger part of a
//! connector's encoding time (`encoded_len` of records, schemas and values ~18 % of a Rust
//! connector's samples at 100 B). Here each record's lengths are worked out once, kept, and
//! the bytes written are the ones prost writes (the tests hold them equal).

use bytes::BufMut;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;

use crate::connector::v1::{data, Data, SourceBatch, SourceRecord, Structured};
use crate::wire::PlainData;

/// `SourceResponse.batch`.
const BATCH_FIELD: u32 = 2;

/// The encoded length of a `SourceResponse` holding `batch`, and what writing it needs.
pub struct SourceBatchLen {
    /// The `SourceBatch` message's length.
    batch: usize,
    /// Per record, its lengths, in order.
    records: Vec<RecordLen>,
}

impl SourceBatchLen {
    pub fn of(batch: &SourceBatch) -> SourceBatchLen {
        let records: Vec<RecordLen> = batch.records.iter().map(RecordLen::of).collect();
        let len = uint64_len(1, batch.seq)
            + batch
                .partitions
                .iter()
                .map(|p| nested_len(2, p.len()))
                .sum::<usize>()
            + records
                .iter()
                .map(|r| nested_len(3, r.record))
                .sum::<usize>();
        SourceBatchLen {
            batch: len,
            records,
        }
    }

    /// The whole `SourceResponse`'s length.
    pub fn response(&self) -> usize {
        nested_len(BATCH_FIELD, self.batch)
    }

    /// Writes `SourceResponse { batch }`; `self` must be `SourceBatchLen::of(batch)`.
    pub fn write(&self, batch: &SourceBatch, buf: &mut impl BufMut) {
        put_len(BATCH_FIELD, self.batch, buf);
        if batch.seq != 0 {
            encode_key(1, WireType::Varint, buf);
            encode_varint(batch.seq, buf);
        }
        for p in &batch.partitions {
            put_len(2, p.len(), buf);
            buf.put_slice(p.as_bytes());
        }
        for (record, len) in batch.records.iter().zip(&self.records) {
            put_len(3, len.record, buf);
            len.write(record, buf);
        }
    }
}

/// One record's lengths.
struct RecordLen {
    record: usize,
    key: Option<DataLen>,
    value: Option<DataLen>,
}

impl RecordLen {
    fn of(r: &SourceRecord) -> RecordLen {
        let key = r.key.as_ref().map(DataLen::of);
        let value = r.value.as_ref().map(DataLen::of);
        let record = r.partition.map_or(0, |p| varint_len(1, p as u64))
            + string_len(2, &r.offset)
            + string_len(3, &r.topic)
            + r.kafka_partition
                .map_or(0, |p| varint_len(4, p as i64 as u64))
            + key.as_ref().map_or(0, |k| nested_len(5, k.data))
            + value.as_ref().map_or(0, |v| nested_len(6, v.data))
            + r.headers
                .iter()
                .map(|h| prost::encoding::message::encoded_len(7, h))
                .sum::<usize>()
            + r.timestamp_ms.map_or(0, |t| varint_len(8, t as u64))
            + uint64_len(9, r.transaction as i64 as u64);
        RecordLen { record, key, value }
    }

    fn write(&self, r: &SourceRecord, buf: &mut impl BufMut) {
        if let Some(p) = r.partition {
            encode_key(1, WireType::Varint, buf);
            encode_varint(p as u64, buf);
        }
        put_string(2, &r.offset, buf);
        put_string(3, &r.topic, buf);
        if let Some(p) = r.kafka_partition {
            encode_key(4, WireType::Varint, buf);
            encode_varint(p as i64 as u64, buf);
        }
        if let (Some(data), Some(len)) = (&r.key, &self.key) {
            put_len(5, len.data, buf);
            len.write(data, buf);
        }
        if let (Some(data), Some(len)) = (&r.value, &self.value) {
            put_len(6, len.data, buf);
            len.write(data, buf);
        }
        for h in &r.headers {
            prost::encoding::message::encode(7, h, buf);
        }
        if let Some(t) = r.timestamp_ms {
            encode_key(8, WireType::Varint, buf);
            encode_varint(t as u64, buf);
        }
        if r.transaction != 0 {
            encode_key(9, WireType::Varint, buf);
            encode_varint(r.transaction as i64 as u64, buf);
        }
    }
}

/// A `Data`'s length and, when it is structured, its parts' lengths.
pub struct DataLen {
    data: usize,
    structured: usize,
    schema: Option<usize>,
    value: Option<usize>,
}

impl DataLen {
    pub fn of(d: &Data) -> DataLen {
        match &d.kind {
            None => DataLen::plain(0),
            Some(data::Kind::Raw(raw)) => DataLen::plain(nested_len(1, raw.len())),
            Some(data::Kind::Structured(Structured { schema, value })) => {
                let schema = schema.as_ref().map(Message::encoded_len);
                let value = value.as_ref().map(Message::encoded_len);
                let structured =
                    schema.map_or(0, |s| nested_len(1, s)) + value.map_or(0, |v| nested_len(2, v));
                DataLen {
                    data: nested_len(2, structured),
                    structured,
                    schema,
                    value,
                }
            }
        }
    }

    fn plain(data: usize) -> DataLen {
        DataLen {
            data,
            structured: 0,
            schema: None,
            value: None,
        }
    }

    /// The `Data` message's encoded length (without its key and length prefix).
    pub fn data_len(&self) -> usize {
        self.data
    }

    /// Writes the `Data`'s fields; a schema and a value are written by prost, which walks
    /// only what lies below them again (nothing, for a primitive).
    pub fn write(&self, d: &Data, buf: &mut impl BufMut) {
        match &d.kind {
            None => {}
            Some(data::Kind::Raw(raw)) => {
                put_len(1, raw.len(), buf);
                buf.put_slice(raw);
            }
            Some(data::Kind::Structured(Structured { schema, value })) => {
                put_len(2, self.structured, buf);
                if let (Some(schema), Some(len)) = (schema, self.schema) {
                    put_len(1, len, buf);
                    schema.encode_raw(buf);
                }
                if let (Some(value), Some(len)) = (value, self.value) {
                    put_len(2, len, buf);
                    value.encode_raw(buf);
                }
            }
        }
    }
}

/// A length-delimited field of `len` bytes: its key, length and body.
pub fn nested_len(field: u32, len: usize) -> usize {
    key_len(field) + encoded_len_varint(len as u64) + len
}

/// A proto3 string field: absent when empty.
pub fn string_len(field: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        nested_len(field, s.len())
    }
}

/// A proto3 varint field: absent when zero.
pub fn uint64_len(field: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        varint_len(field, v)
    }
}

/// A varint field that is present (an `optional` one that is set).
pub fn varint_len(field: u32, v: u64) -> usize {
    key_len(field) + encoded_len_varint(v)
}

pub fn put_len(field: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(field, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

pub fn put_string(field: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        put_len(field, s.len(), buf);
        buf.put_slice(s.as_bytes());
    }
}

/// The encoded length of a `Data` message holding `plain` (without its key and length
/// prefix), as prost writes it: a plain schema is its type alone (not optional).
pub fn plain_len(plain: &PlainData<'_>) -> usize {
    match plain {
        PlainData::Null => 0,
        PlainData::Raw(raw) => nested_len(1, raw.len()),
        PlainData::String { schema, text } => {
            nested_len(2, plain_structured_len(*schema, 6, text.len()))
        }
        PlainData::Bytes { schema, bytes } => {
            nested_len(2, plain_structured_len(*schema, 7, bytes.len()))
        }
    }
}

/// `Structured { schema: { type }, value: { field: len bytes } }`'s length.
fn plain_structured_len(schema: Option<i32>, field: u32, len: usize) -> usize {
    schema.map_or(0, |t| nested_len(1, plain_schema_len(t))) + nested_len(2, nested_len(field, len))
}

fn plain_schema_len(schema_type: i32) -> usize {
    uint64_len(1, schema_type as i64 as u64)
}

/// Writes the fields of a `Data` message holding `plain` ([`plain_len`] bytes).
pub fn put_plain(plain: &PlainData<'_>, buf: &mut impl BufMut) {
    let (schema, field, bytes) = match plain {
        PlainData::Null => return,
        PlainData::Raw(raw) => {
            put_len(1, raw.len(), buf);
            buf.put_slice(raw);
            return;
        }
        PlainData::String { schema, text } => (*schema, 6, text.as_bytes()),
        PlainData::Bytes { schema, bytes } => (*schema, 7, *bytes),
    };
    put_len(2, plain_structured_len(schema, field, bytes.len()), buf);
    if let Some(t) = schema {
        put_len(1, plain_schema_len(t), buf);
        if t != 0 {
            encode_key(1, WireType::Varint, buf);
            encode_varint(t as i64 as u64, buf);
        }
    }
    put_len(2, nested_len(field, bytes.len()), buf);
    put_len(field, bytes.len(), buf);
    buf.put_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::v1::{
        source_response, value, Field, Header, Schema, SchemaType, SourceResponse, StructValue,
        Value,
    };

    fn primitive(schema_type: SchemaType, value: value::Kind) -> Data {
        Data {
            kind: Some(data::Kind::Structured(Structured {
                schema: Some(Schema {
                    r#type: schema_type as i32,
                    optional: true,
                    ..Schema::default()
                }),
                value: Some(Value { kind: Some(value) }),
            })),
        }
    }

    /// Keys and values of every shape a record carries.
    fn shapes() -> Vec<Option<Data>> {
        let field = |name: &str, t: SchemaType| Field {
            name: name.into(),
            schema: Some(Box::new(Schema {
                r#type: t as i32,
                ..Schema::default()
            })),
        };
        vec![
            None,
            Some(Data::default()),
            Some(Data {
                kind: Some(data::Kind::Raw(Vec::new())),
            }),
            Some(Data {
                kind: Some(data::Kind::Raw(vec![7; 300])),
            }),
            Some(primitive(
                SchemaType::String,
                value::Kind::String("x".repeat(100)),
            )),
            Some(primitive(SchemaType::Int64, value::Kind::Int(-3))),
            Some(primitive(SchemaType::Bytes, value::Kind::Bytes(Vec::new()))),
            Some(Data {
                kind: Some(data::Kind::Structured(Structured {
                    schema: None,
                    value: Some(Value {
                        kind: Some(value::Kind::Null(true)),
                    }),
                })),
            }),
            Some(Data {
                kind: Some(data::Kind::Structured(Structured::default())),
            }),
            Some(Data {
                kind: Some(data::Kind::Structured(Structured {
                    schema: Some(Schema {
                        r#type: SchemaType::Struct as i32,
                        name: Some("com.example.Row".into()),
                        version: Some(2),
                        parameters: [("a".to_string(), "b".to_string())].into(),
                        fields: vec![
                            field("id", SchemaType::Int32),
                            field("name", SchemaType::String),
                        ],
                        ..Schema::default()
                    }),
                    value: Some(Value {
                        kind: Some(value::Kind::Struct(StructValue {
                            fields: vec![
                                Value {
                                    kind: Some(value::Kind::Int(1)),
                                },
                                Value {
                                    kind: Some(value::Kind::String("ü".repeat(200))),
                                },
                            ],
                            names: Vec::new(),
                        })),
                    }),
                })),
            }),
        ]
    }

    fn batch(seq: u64, partitions: Vec<String>) -> SourceBatch {
        let shapes = shapes();
        let mut records = Vec::new();
        for (i, key) in shapes.iter().enumerate() {
            for (j, value) in shapes.iter().enumerate() {
                let n = i * shapes.len() + j;
                records.push(SourceRecord {
                    partition: [None, Some(0), Some(1), Some(300)][n % 4],
                    offset: if n.is_multiple_of(3) {
                        String::new()
                    } else {
                        format!(r#"{{"seq":{n}}}"#)
                    },
                    topic: ["", "t", "a-much-longer-topic-name"][n % 3].into(),
                    kafka_partition: [None, Some(0), Some(-1), Some(5)][(n / 4) % 4],
                    key: key.clone(),
                    value: value.clone(),
                    headers: if n.is_multiple_of(5) {
                        vec![
                            Header {
                                key: "h".into(),
                                value: value.clone(),
                            },
                            Header::default(),
                        ]
                    } else {
                        Vec::new()
                    },
                    timestamp_ms: [None, Some(0), Some(-5), Some(1_700_000_000_000)][n % 4],
                    transaction: (n % 3) as i32,
                });
            }
        }
        SourceBatch {
            seq,
            partitions,
            records,
        }
    }

    #[test]
    fn a_source_batch_is_written_as_prost_writes_it() {
        let long = "p".repeat(200);
        for (seq, partitions) in [
            (0, Vec::new()),
            (1, vec![String::new(), "a".into()]),
            (u64::MAX, vec![long]),
        ] {
            let batch = batch(seq, partitions);
            let len = SourceBatchLen::of(&batch);
            let mut ours = Vec::new();
            len.write(&batch, &mut ours);
            let response = SourceResponse {
                kind: Some(source_response::Kind::Batch(batch)),
            };
            assert_eq!(len.response(), response.encoded_len());
            assert_eq!(ours, response.encode_to_vec());
        }
    }

    #[test]
    fn an_empty_batch_is_written_as_prost_writes_it() {
        let batch = SourceBatch::default();
        let len = SourceBatchLen::of(&batch);
        let mut ours = Vec::new();
        len.write(&batch, &mut ours);
        let response = SourceResponse {
            kind: Some(source_response::Kind::Batch(batch)),
        };
        assert_eq!(ours, response.encode_to_vec());
    }

    #[test]
    fn plain_data_is_written_as_prost_writes_it() {
        let text = "ü".repeat(100);
        let cases = [
            PlainData::Null,
            PlainData::Raw(b""),
            PlainData::Raw(&[7; 300]),
            PlainData::String {
                schema: Some(SchemaType::String as i32),
                text: &text,
            },
            PlainData::String {
                schema: None,
                text: "",
            },
            PlainData::String {
                schema: Some(0),
                text: "x",
            },
            PlainData::Bytes {
                schema: Some(SchemaType::Bytes as i32),
                bytes: &[1; 200],
            },
            PlainData::Bytes {
                schema: None,
                bytes: b"",
            },
        ];
        for plain in cases {
            let data = plain.to_data();
            let mut ours = Vec::new();
            put_plain(&plain, &mut ours);
            assert_eq!(plain_len(&plain), data.encoded_len(), "{plain:?}");
            assert_eq!(ours, data.encode_to_vec(), "{plain:?}");
        }
    }
}
