//! The sink stream's batches in their protobuf wire form, written by the poll thread as it
//! reads each record: the stream sends them without building a `SinkRecord` per record and
//! encoding it again. The bytes are the ones prost writes for the same records (a property
//! test holds them equal), so the protocol and every connector are unchanged.
//!
//! A record whose converters pass its bytes through ([`Passthrough`]: ByteArrayConverter,
//! StringConverter in UTF-8) and that no transform touches is written straight from the
//! consumed message; every other record is converted to a `SinkRecord` and encoded by prost
//! into the same buffer.

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message as _;
use sluice_data::converter::Passthrough;
use sluice_proto::connector::v1 as proto;

/// `SinkBatch.records` and `SinkRequest.batch`.
const RECORDS_FIELD: u32 = 2;
const BATCH_FIELD: u32 = 2;

/// A consumed record as the wire needs it: its coordinates and bytes.
pub struct Consumed<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
    pub timestamp_ms: Option<i64>,
}

/// `SinkBatch.records`, encoded: each record as its field entry, in order.
#[derive(Default)]
pub struct Records {
    buf: BytesMut,
    count: usize,
}

impl Records {
    /// An empty batch written into `spare`'s allocation once every batch frozen from it has
    /// been sent and dropped (`BytesMut` reclaims a buffer it owns alone), else into a new one
    /// of `capacity` bytes: a batch neither grows by doubling nor faults in fresh pages.
    pub fn reusing(spare: &mut BytesMut, capacity: usize) -> Records {
        let mut buf = std::mem::take(spare);
        buf.reserve(capacity);
        Records { buf, count: 0 }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// A record converted (and transformed) the general way.
    pub fn push(&mut self, record: &proto::SinkRecord) {
        prost::encoding::message::encode(RECORDS_FIELD, record, &mut self.buf);
        self.count += 1;
    }

    /// `record` written straight from its bytes, as the converters `key` and `value` would
    /// shape it; `false` (nothing written) when a converter cannot pass it through (a string
    /// that is not UTF-8): the caller converts it the general way.
    pub fn push_passthrough(
        &mut self,
        record: &Consumed<'_>,
        key: Passthrough,
        value: Passthrough,
    ) -> bool {
        let (Some(key), Some(value)) = (
            Primitive::of(record.key, key),
            Primitive::of(record.value, value),
        ) else {
            return false;
        };
        let headers: usize = record.headers.iter().map(header_len).sum();
        let len = string_field_len(record.topic)
            + int_field_len(record.partition as i64 as u64)
            + int_field_len(record.offset as u64)
            + nested_len(key.len())
            + nested_len(value.len())
            + headers
            + record
                .timestamp_ms
                .map_or(0, |t| 1 + encoded_len_varint(t as u64));
        let buf = &mut self.buf;
        buf.reserve(1 + encoded_len_varint(len as u64) + len);
        encode_key(RECORDS_FIELD, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        put_string_field(1, record.topic, buf);
        put_int_field(2, record.partition as i64 as u64, buf);
        put_int_field(3, record.offset as u64, buf);
        key.put(4, buf);
        value.put(5, buf);
        for header in record.headers {
            put_header(header, buf);
        }
        if let Some(t) = record.timestamp_ms {
            encode_key(7, WireType::Varint, buf);
            encode_varint(t as u64, buf);
        }
        self.count += 1;
        true
    }

    #[cfg(test)]
    pub fn freeze(self) -> Bytes {
        self.buf.freeze()
    }

    /// The batch, frozen; what is left of its allocation goes back to `spare` for the next.
    pub fn freeze_into(mut self, spare: &mut BytesMut) -> Bytes {
        let batch = self.buf.split();
        *spare = self.buf;
        batch.freeze()
    }
}

/// A key or value passed through: `Data {}` for a Kafka null, else
/// `Data { structured: { schema: { type, optional: true }, value: { string | bytes } } }`.
enum Primitive<'a> {
    Null,
    Value {
        schema_type: u8,
        value_field: u32,
        bytes: &'a [u8],
    },
}

impl<'a> Primitive<'a> {
    fn of(bytes: Option<&'a [u8]>, how: Passthrough) -> Option<Primitive<'a>> {
        let Some(bytes) = bytes else {
            return Some(Primitive::Null);
        };
        Some(match how {
            Passthrough::Bytes => Primitive::Value {
                schema_type: proto::SchemaType::Bytes as u8,
                value_field: 7,
                bytes,
            },
            Passthrough::Utf8String => {
                // What Kafka's StringConverter would decode unchanged; anything else takes
                // the general path (malformed bytes become U+FFFD there, as in Java).
                simdutf8::basic::from_utf8(bytes).ok()?;
                Primitive::Value {
                    schema_type: proto::SchemaType::String as u8,
                    value_field: 6,
                    bytes,
                }
            }
        })
    }

    /// The schema message: `type` and `optional`, 2 bytes each.
    const SCHEMA_LEN: usize = 4;

    fn value_len(bytes: &[u8]) -> usize {
        1 + encoded_len_varint(bytes.len() as u64) + bytes.len()
    }

    fn structured_len(bytes: &[u8]) -> usize {
        nested_len(Self::SCHEMA_LEN) + nested_len(Self::value_len(bytes))
    }

    /// The `Data` message's length.
    fn len(&self) -> usize {
        match self {
            Primitive::Null => 0,
            Primitive::Value { bytes, .. } => nested_len(Self::structured_len(bytes)),
        }
    }

    /// Writes the `Data` as field `field`.
    fn put(&self, field: u32, buf: &mut BytesMut) {
        encode_key(field, WireType::LengthDelimited, buf);
        encode_varint(self.len() as u64, buf);
        let Primitive::Value {
            schema_type,
            value_field,
            bytes,
        } = self
        else {
            return;
        };
        // Data.structured
        encode_key(2, WireType::LengthDelimited, buf);
        encode_varint(Self::structured_len(bytes) as u64, buf);
        // Structured.schema
        encode_key(1, WireType::LengthDelimited, buf);
        encode_varint(Self::SCHEMA_LEN as u64, buf);
        buf.put_slice(&[0x08, *schema_type, 0x10, 0x01]);
        // Structured.value
        encode_key(2, WireType::LengthDelimited, buf);
        encode_varint(Self::value_len(bytes) as u64, buf);
        encode_key(*value_field, WireType::LengthDelimited, buf);
        encode_varint(bytes.len() as u64, buf);
        buf.put_slice(bytes);
    }
}

/// A length-delimited field of `len` bytes: its key, length and body.
fn nested_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// A proto3 string field: absent when empty.
fn string_field_len(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        nested_len(s.len())
    }
}

fn put_string_field(field: u32, s: &str, buf: &mut BytesMut) {
    if !s.is_empty() {
        encode_key(field, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.put_slice(s.as_bytes());
    }
}

/// A proto3 integer field: absent when zero.
fn int_field_len(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        1 + encoded_len_varint(v)
    }
}

fn put_int_field(field: u32, v: u64, buf: &mut BytesMut) {
    if v != 0 {
        encode_key(field, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

/// `Header { key, value: Data { raw } }`; a null value leaves `value` out.
fn header_body_len((key, value): &(&str, Option<&[u8]>)) -> usize {
    string_field_len(key) + value.map_or(0, |v| nested_len(nested_len(v.len())))
}

fn header_len(header: &(&str, Option<&[u8]>)) -> usize {
    nested_len(header_body_len(header))
}

fn put_header(header: &(&str, Option<&[u8]>), buf: &mut BytesMut) {
    encode_key(6, WireType::LengthDelimited, buf);
    encode_varint(header_body_len(header) as u64, buf);
    put_string_field(1, header.0, buf);
    if let Some(v) = header.1 {
        encode_key(2, WireType::LengthDelimited, buf);
        encode_varint(nested_len(v.len()) as u64, buf);
        encode_key(1, WireType::LengthDelimited, buf);
        encode_varint(v.len() as u64, buf);
        buf.put_slice(v);
    }
}

/// What the worker sends on a sink stream: a message, or a batch whose records are already
/// encoded.
pub enum Outgoing {
    Message(proto::SinkRequest),
    Batch { seq: u64, records: Bytes },
}

impl From<proto::sink_request::Kind> for Outgoing {
    fn from(kind: proto::sink_request::Kind) -> Self {
        Outgoing::Message(proto::SinkRequest { kind: Some(kind) })
    }
}

/// The gRPC frames of one message on the sink call's request body: the 5-byte gRPC prefix
/// (uncompressed, length) and the message. A batch's records go out as the `Bytes` the poll
/// thread wrote, after a small frame holding the prefix and the `SinkRequest`/`SinkBatch`
/// heads: nothing copies them again before the socket (h2 writes large data frames with
/// vectored writes, not through its buffer).
pub fn grpc_frames(item: Outgoing) -> (Bytes, Option<Bytes>) {
    match item {
        Outgoing::Message(message) => {
            let len = message.encoded_len();
            let mut buf = BytesMut::with_capacity(GRPC_PREFIX + len);
            put_grpc_prefix(len, &mut buf);
            // Cannot fail: the buffer holds `len` more bytes.
            let _ = message.encode(&mut buf);
            (buf.freeze(), None)
        }
        Outgoing::Batch { seq, records } => {
            let mut head = BytesMut::with_capacity(GRPC_PREFIX + 24);
            let len = batch_head_len(seq, records.len()) + records.len();
            put_grpc_prefix(len, &mut head);
            put_batch_head(seq, records.len(), &mut head);
            (head.freeze(), Some(records))
        }
    }
}

/// gRPC's message prefix: a compression flag and a big-endian length.
const GRPC_PREFIX: usize = 5;

fn put_grpc_prefix(len: usize, buf: &mut impl BufMut) {
    buf.put_u8(0);
    buf.put_u32(len as u32);
}

fn batch_head_len(seq: u64, records: usize) -> usize {
    let batch = int_field_len(seq) + records;
    1 + encoded_len_varint(batch as u64) + int_field_len(seq)
}

/// The head of `SinkRequest { batch: SinkBatch { seq, records } }` whose records, already
/// encoded, follow it.
fn put_batch_head(seq: u64, records: usize, buf: &mut impl BufMut) {
    encode_key(BATCH_FIELD, WireType::LengthDelimited, buf);
    encode_varint((int_field_len(seq) + records) as u64, buf);
    if seq != 0 {
        encode_key(1, WireType::Varint, buf);
        encode_varint(seq, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sluice_data::converter::{Converter, Side};
    use std::collections::BTreeMap;

    fn converter(class: &str, side: Side) -> Converter {
        Converter::new(class, &BTreeMap::new(), side).unwrap()
    }

    /// The record the general path builds (the sink's `convert`).
    fn general(record: &Consumed<'_>, key: &Converter, value: &Converter) -> proto::SinkRecord {
        crate::task::sink::convert(record, key, value)
            .unwrap_or_else(|(_, _, e)| panic!("{}", e.message))
    }

    fn bytes_or_text() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop_oneof![
            Just(None),
            ".{0,40}".prop_map(|s: String| Some(s.into_bytes())),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Some),
        ]
    }

    proptest! {
        /// Passed-through records are byte for byte what prost writes for the records the
        /// converters build; a string that is not UTF-8 is left to the general path.
        #[test]
        fn passthrough_writes_what_prost_writes(
            topic in "[a-z._-]{0,20}",
            partition in any::<i32>(),
            offset in any::<i64>(),
            key in bytes_or_text(),
            value in bytes_or_text(),
            headers in proptest::collection::vec(("[a-z]{0,6}", bytes_or_text()), 0..3),
            timestamp_ms in proptest::option::of(any::<i64>()),
            classes in (any::<bool>(), any::<bool>()),
        ) {
            let class = |string: bool| if string {
                "org.apache.kafka.connect.storage.StringConverter"
            } else {
                "org.apache.kafka.connect.converters.ByteArrayConverter"
            };
            let key_converter = converter(class(classes.0), Side::Key);
            let value_converter = converter(class(classes.1), Side::Value);
            let headers: Vec<(&str, Option<&[u8]>)> =
                headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            let record = Consumed {
                topic: &topic,
                partition,
                offset,
                key: key.as_deref(),
                value: value.as_deref(),
                headers: &headers,
                timestamp_ms,
            };
            let mut fast = Records::default();
            let passed = fast.push_passthrough(
                &record,
                key_converter.passthrough().unwrap(),
                value_converter.passthrough().unwrap(),
            );
            let utf8 = |b: &Option<Vec<u8>>, string: bool| {
                !string || b.as_deref().is_none_or(|b| std::str::from_utf8(b).is_ok())
            };
            prop_assert_eq!(passed, utf8(&key, classes.0) && utf8(&value, classes.1));
            if passed {
                let mut slow = Records::default();
                slow.push(&general(&record, &key_converter, &value_converter));
                prop_assert_eq!(fast.len(), 1);
                prop_assert_eq!(fast.freeze(), slow.freeze());
            } else {
                prop_assert_eq!(fast.len(), 0);
            }
        }
    }

    /// A batch of encoded records decodes, through the codec, as the `SinkRequest` prost
    /// would have sent.
    #[test]
    fn an_encoded_batch_is_the_sink_request() {
        let mut records = Records::default();
        let record = proto::SinkRecord {
            topic: "t".into(),
            partition: 3,
            offset: 42,
            key: Some(proto::Data { kind: None }),
            value: Some(proto::Data {
                kind: Some(proto::data::Kind::Raw(b"v".to_vec())),
            }),
            headers: Vec::new(),
            timestamp_ms: Some(7),
        };
        records.push(&record);
        records.push(&record);
        let expected = proto::SinkRequest {
            kind: Some(proto::sink_request::Kind::Batch(proto::SinkBatch {
                seq: 9,
                records: vec![record.clone(), record],
            })),
        };
        let (head, records) = grpc_frames(Outgoing::Batch {
            seq: 9,
            records: records.freeze(),
        });
        let mut framed = head.to_vec();
        framed.extend_from_slice(&records.expect("the records follow the head"));
        let message = expected.encode_to_vec();
        assert_eq!(framed[0], 0, "uncompressed");
        assert_eq!(framed[1..5], (message.len() as u32).to_be_bytes());
        assert_eq!(framed[5..], message[..]);
        // Any other message is framed whole.
        let flush = proto::sink_request::Kind::Stop(proto::Stop {});
        let (head, rest) = grpc_frames(flush.clone().into());
        assert!(rest.is_none());
        let message = proto::SinkRequest { kind: Some(flush) }.encode_to_vec();
        assert_eq!(head[1..5], (message.len() as u32).to_be_bytes());
        assert_eq!(head[5..], message[..]);
    }

    /// A batch is written into the allocation of the one before it once that one was sent and
    /// dropped, and into a new one while it is still in flight.
    #[test]
    fn batches_reuse_the_buffer_of_batches_sent_and_dropped() {
        let record = proto::SinkRecord {
            topic: "t".into(),
            value: Some(proto::Data {
                kind: Some(proto::data::Kind::Raw(vec![7; 100])),
            }),
            ..proto::SinkRecord::default()
        };
        let mut spare = BytesMut::new();
        let batch = |spare: &mut BytesMut| {
            let mut records = Records::reusing(spare, 1 << 16);
            records.push(&record);
            records.freeze_into(spare)
        };
        let first = batch(&mut spare);
        let second = batch(&mut spare);
        assert_ne!(
            first.as_ptr(),
            second.as_ptr(),
            "the first is still in flight"
        );
        assert_eq!(first, second);
        let at = second.as_ptr();
        drop((first, second));
        let third = batch(&mut spare);
        assert_eq!(third.as_ptr(), at, "the second's buffer, reclaimed");
        let mut expected = Records::default();
        expected.push(&record);
        assert_eq!(third, expected.freeze());
    }
}
