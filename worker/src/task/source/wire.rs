//! The source stream's batches as they arrive, read in place: each record's plain parts (its
//! topic, position, and a key and value that are no data, raw bytes, or a string or bytes with
//! a plain schema) are located in the received frame and reach the producer from there,
//! without a `SourceRecord` decoded per record (five to seven allocations and copies, then as
//! many frees). Any other record (headers, a structured schema or value, an encoding this
//! reader does not take) is decoded by prost as before, and a record needing transforms or a
//! converter that works on the whole `Data` is decoded from its bytes when its turn comes.
//! The protocol is unchanged.

use std::ops::Range;

use crate::host::process::Conn;
use bytes::{Buf as _, Bytes};
use prost::{DecodeError, Message as _};
use sluice_proto::codec::SliceEncoder;
use sluice_proto::connector::v1::{self as proto, source_response};
use sluice_proto::wire::{each_field_once, next_field, utf8, Field, PlainData};
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;

/// Opens a task's source stream on `channel`: `requests` out, [`SourceFrame`]s back.
pub async fn open(
    channel: Conn,
    requests: impl tokio_stream::Stream<Item = proto::SourceRequest> + Send + 'static,
) -> Result<tonic::Response<tonic::Streaming<SourceFrame>>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("connector socket: {e}")))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/sluice.connector.v1.Connector/Source",
    );
    grpc.streaming(tonic::Request::new(requests), path, SourceCodec)
        .await
}

/// The source stream's codec: requests as every message, responses as [`SourceFrame`]s.
struct SourceCodec;

impl Codec for SourceCodec {
    type Encode = proto::SourceRequest;
    type Decode = SourceFrame;
    type Encoder = SliceEncoder<proto::SourceRequest>;
    type Decoder = SourceDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        SliceEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SourceDecoder
    }
}

/// A message of the source stream: a batch read in place, or anything else, decoded.
pub enum SourceFrame {
    Batch(WireBatch),
    Other(Box<proto::SourceResponse>),
}

impl crate::task::FirstAnswer for SourceFrame {
    type Opened = proto::SourceOpened;
    fn opening(self) -> Option<Result<proto::SourceOpened, proto::TaskError>> {
        match self {
            SourceFrame::Batch(_) => None,
            SourceFrame::Other(response) => response.opening(),
        }
    }
}

/// The source stream's decoder: [`SourceFrame`]s from whole frames.
pub struct SourceDecoder;

impl Decoder for SourceDecoder {
    type Item = SourceFrame;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<SourceFrame>, Status> {
        let frame = buf.copy_to_bytes(buf.remaining());
        SourceFrame::read(frame)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl SourceFrame {
    pub fn read(frame: Bytes) -> Result<SourceFrame, DecodeError> {
        if let Some(batch) = WireBatch::read(&frame) {
            return batch.map(SourceFrame::Batch);
        }
        let response: proto::SourceResponse = sluice_proto::codec::decode_slice(&frame)?;
        Ok(match response.kind {
            Some(source_response::Kind::Batch(batch)) => {
                SourceFrame::Batch(WireBatch::decoded(batch))
            }
            kind => SourceFrame::Other(Box::new(proto::SourceResponse { kind })),
        })
    }
}

/// A source batch: its records, each read in place or decoded.
pub struct WireBatch {
    pub seq: u64,
    pub partitions: Vec<String>,
    pub records: Vec<Incoming>,
    /// The `SourceBatch` message's encoded size: what the connector debited.
    pub encoded_len: usize,
    /// The frame the records in place are read from.
    pub frame: Bytes,
}

/// One record of a batch.
pub enum Incoming {
    Plain(PlainRecord),
    Decoded(Box<proto::SourceRecord>),
}

impl Incoming {
    /// The record's source partition (an index into the batch's) and offset.
    pub fn position<'f>(&'f self, frame: &'f [u8]) -> (Option<u32>, &'f str) {
        match self {
            Incoming::Plain(r) => (r.partition, text(frame, &r.offset)),
            Incoming::Decoded(r) => (r.partition, &r.offset),
        }
    }

    /// The transaction boundary the connector set on the record (as prost's getter reads it).
    pub fn transaction(&self) -> proto::TransactionBoundary {
        match self {
            Incoming::Plain(r) => proto::TransactionBoundary::try_from(r.transaction)
                .unwrap_or(proto::TransactionBoundary::Unspecified),
            Incoming::Decoded(r) => r.transaction(),
        }
    }
}

impl WireBatch {
    /// A batch decoded whole by prost (one this reader does not take in place).
    fn decoded(batch: proto::SourceBatch) -> WireBatch {
        WireBatch {
            seq: batch.seq,
            encoded_len: batch.encoded_len(),
            partitions: batch.partitions,
            records: batch
                .records
                .into_iter()
                .map(|r| Incoming::Decoded(Box::new(r)))
                .collect(),
            frame: Bytes::new(),
        }
    }

    /// `frame` read as `SourceResponse { batch }`; `None` when it holds anything else or is laid
    /// out otherwise (prost then decodes it); an error where prost would fail on a record.
    fn read(frame: &Bytes) -> Option<Result<WireBatch, DecodeError>> {
        let mut buf = &frame[..];
        let (2, Field::Bytes(batch)) = next_field(&mut buf)? else {
            return None;
        };
        if !buf.is_empty() {
            return None;
        }
        let mut seq = 0;
        let mut partitions = Vec::new();
        let mut records = Vec::new();
        let mut scan = batch;
        while !scan.is_empty() {
            match next_field(&mut scan)? {
                // As prost reads a scalar given twice: the last one.
                (1, Field::Varint(v)) => seq = v,
                (2, Field::Bytes(p)) => partitions.push(utf8(p)?.to_string()),
                (3, Field::Bytes(r)) => records.push(match PlainRecord::read(frame, r) {
                    Some(plain) => Incoming::Plain(plain),
                    None => match proto::SourceRecord::decode(r) {
                        Ok(decoded) => Incoming::Decoded(Box::new(decoded)),
                        Err(e) => return Some(Err(e)),
                    },
                }),
                _ => return None,
            }
        }
        Some(Ok(WireBatch {
            seq,
            partitions,
            records,
            encoded_len: batch.len(),
            frame: frame.clone(),
        }))
    }
}

/// A record read in place: where its parts lie in the frame.
pub struct PlainRecord {
    /// The whole record, to decode when it needs more than its plain parts.
    record: Range<u32>,
    pub partition: Option<u32>,
    offset: Range<u32>,
    topic: Range<u32>,
    pub kafka_partition: Option<i32>,
    key: PlainSpan,
    value: PlainSpan,
    pub timestamp_ms: Option<i64>,
    transaction: i32,
}

/// [`PlainData`] located in the frame.
#[derive(Clone)]
enum PlainSpan {
    Null,
    Raw(Range<u32>),
    String {
        schema: Option<i32>,
        text: Range<u32>,
    },
    Bytes {
        schema: Option<i32>,
        bytes: Range<u32>,
    },
}

impl PlainRecord {
    /// `record` (a slice of `frame`) read in place, or `None` when it is not a plain record
    /// laid out as prost writes one (each field once, known fields only, no headers).
    fn read(frame: &[u8], record: &[u8]) -> Option<PlainRecord> {
        let mut out = PlainRecord {
            record: span(frame, record),
            partition: None,
            offset: 0..0,
            topic: 0..0,
            kafka_partition: None,
            key: PlainSpan::Null,
            value: PlainSpan::Null,
            timestamp_ms: None,
            transaction: 0,
        };
        // The integer fields are read as prost reads them: the varint, truncated.
        each_field_once(record, |field, value| {
            match (field, value) {
                (1, Field::Varint(v)) => out.partition = Some(v as u32),
                (2, Field::Bytes(b)) => out.offset = utf8_span(frame, b)?,
                (3, Field::Bytes(b)) => out.topic = utf8_span(frame, b)?,
                (4, Field::Varint(v)) => out.kafka_partition = Some(v as i32),
                (5, Field::Bytes(b)) => out.key = PlainSpan::read(frame, b)?,
                (6, Field::Bytes(b)) => out.value = PlainSpan::read(frame, b)?,
                (8, Field::Varint(v)) => out.timestamp_ms = Some(v as i64),
                (9, Field::Varint(v)) => out.transaction = v as i32,
                _ => return None,
            }
            Some(())
        })?;
        Some(out)
    }

    pub fn topic<'f>(&self, frame: &'f [u8]) -> &'f str {
        text(frame, &self.topic)
    }

    pub fn key<'f>(&self, frame: &'f [u8]) -> PlainData<'f> {
        self.key.get(frame)
    }

    pub fn value<'f>(&self, frame: &'f [u8]) -> PlainData<'f> {
        self.value.get(frame)
    }

    /// The whole record, decoded.
    pub fn decode(&self, frame: &[u8]) -> Result<proto::SourceRecord, DecodeError> {
        proto::SourceRecord::decode(bytes(frame, &self.record))
    }
}

impl PlainSpan {
    /// A `Data` message read in place, when it is plain.
    fn read(frame: &[u8], data: &[u8]) -> Option<PlainSpan> {
        Some(match PlainData::read(data)? {
            PlainData::Null => PlainSpan::Null,
            PlainData::Raw(raw) => PlainSpan::Raw(span(frame, raw)),
            PlainData::String { schema, text } => PlainSpan::String {
                schema,
                text: span(frame, text.as_bytes()),
            },
            PlainData::Bytes { schema, bytes } => PlainSpan::Bytes {
                schema,
                bytes: span(frame, bytes),
            },
        })
    }

    fn get<'f>(&self, frame: &'f [u8]) -> PlainData<'f> {
        match self {
            PlainSpan::Null => PlainData::Null,
            PlainSpan::Raw(raw) => PlainData::Raw(bytes(frame, raw)),
            PlainSpan::String { schema, text: t } => PlainData::String {
                schema: *schema,
                text: text(frame, t),
            },
            PlainSpan::Bytes { schema, bytes: b } => PlainData::Bytes {
                schema: *schema,
                bytes: bytes(frame, b),
            },
        }
    }
}

/// Where `part` (a slice of `frame`) lies in `frame`.
fn span(frame: &[u8], part: &[u8]) -> Range<u32> {
    let start = part.as_ptr() as usize - frame.as_ptr() as usize;
    // Frames are at most MAX_MESSAGE_BYTES (256 MiB): offsets fit.
    start as u32..(start + part.len()) as u32
}

fn utf8_span(frame: &[u8], part: &[u8]) -> Option<Range<u32>> {
    utf8(part)?;
    Some(span(frame, part))
}

fn bytes<'f>(frame: &'f [u8], at: &Range<u32>) -> &'f [u8] {
    frame
        .get(at.start as usize..at.end as usize)
        .unwrap_or_default()
}

/// A span checked as UTF-8 when it was read (checked again, without `unsafe`: SIMD makes
/// that a few nanoseconds).
fn text<'f>(frame: &'f [u8], at: &Range<u32>) -> &'f str {
    simdutf8::basic::from_utf8(bytes(frame, at)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{value, SchemaType, SourceBatch};
    use sluice_proto::wire::shapes::{self, schema, structured};

    fn records() -> Vec<proto::SourceRecord> {
        shapes::pairs()
            .into_iter()
            .map(|(n, key, value)| proto::SourceRecord {
                partition: [None, Some(0), Some(1)][n % 3],
                offset: if n.is_multiple_of(4) {
                    String::new()
                } else {
                    format!("{{\"seq\":{n}}}")
                },
                topic: shapes::topic(n),
                kafka_partition: [None, Some(0), Some(-1), Some(7)][n % 4],
                key,
                value,
                headers: shapes::headers(n),
                timestamp_ms: shapes::timestamp(n),
                transaction: (n % 4) as i32,
            })
            .collect()
    }

    fn frame_of(batch: SourceBatch) -> Bytes {
        proto::SourceResponse {
            kind: Some(source_response::Kind::Batch(batch)),
        }
        .encode_to_vec()
        .into()
    }

    fn read_batch(frame: Bytes) -> WireBatch {
        match SourceFrame::read(frame) {
            Ok(SourceFrame::Batch(batch)) => batch,
            Ok(SourceFrame::Other(other)) => panic!("not a batch: {other:?}"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn plain_records_read_in_place_are_what_prost_decodes() {
        let batch = SourceBatch {
            seq: 9,
            partitions: vec!["a".into(), "b".into()],
            records: records(),
        };
        let expected = batch.clone();
        let frame = frame_of(batch);
        let read = read_batch(frame.clone());
        assert_eq!(read.seq, 9);
        assert_eq!(read.partitions, expected.partitions);
        assert_eq!(read.encoded_len, expected.encoded_len());
        assert_eq!(read.records.len(), expected.records.len());
        let mut plain = 0;
        for (incoming, record) in read.records.iter().zip(&expected.records) {
            assert_eq!(
                incoming.position(&read.frame),
                (record.partition, record.offset.as_str())
            );
            assert_eq!(incoming.transaction(), record.transaction());
            match incoming {
                Incoming::Plain(r) => {
                    plain += 1;
                    assert!(record.headers.is_empty());
                    assert_eq!(r.topic(&frame), record.topic);
                    assert_eq!(r.kafka_partition, record.kafka_partition);
                    assert_eq!(r.timestamp_ms, record.timestamp_ms);
                    assert_eq!(Some(r.key(&frame)), PlainData::of(record.key.as_ref()));
                    assert_eq!(Some(r.value(&frame)), PlainData::of(record.value.as_ref()));
                    assert_eq!(&r.decode(&frame).unwrap(), record);
                }
                Incoming::Decoded(decoded) => {
                    assert_eq!(**decoded, *record);
                    // Only what is not plain is decoded.
                    assert!(
                        !record.headers.is_empty()
                            || PlainData::of(record.key.as_ref()).is_none()
                            || PlainData::of(record.value.as_ref()).is_none(),
                        "{record:?}"
                    );
                }
            }
        }
        // 8 plain shapes of 12, squared, less those with headers.
        assert!(plain > 50, "{plain}");
    }

    /// Appends field `field` as a varint.
    fn varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
        prost::encoding::encode_varint(field << 3, out);
        prost::encoding::encode_varint(v, out);
    }

    fn batch_frame(records: &[Vec<u8>]) -> Bytes {
        let mut batch = Vec::new();
        for r in records {
            prost::encoding::encode_varint(3 << 3 | 2, &mut batch);
            prost::encoding::encode_varint(r.len() as u64, &mut batch);
            batch.extend_from_slice(r);
        }
        let mut frame = vec![2 << 3 | 2];
        prost::encoding::encode_varint(batch.len() as u64, &mut frame);
        frame.extend_from_slice(&batch);
        frame.into()
    }

    #[test]
    fn records_laid_out_otherwise_are_left_to_prost() {
        let base = proto::SourceRecord {
            topic: "t".into(),
            value: Some(structured(
                schema(SchemaType::String),
                Some(value::Kind::String("v".into())),
            )),
            ..proto::SourceRecord::default()
        }
        .encode_to_vec();
        // A field given twice (prost keeps the last), an unknown field (prost drops it), a
        // non-minimal varint (prost reads it).
        let mut twice = base.clone();
        varint_field(&mut twice, 1, 3);
        varint_field(&mut twice, 1, 4);
        let mut unknown = base.clone();
        varint_field(&mut unknown, 99, 1);
        let mut long = base.clone();
        long.extend_from_slice(&[8 << 3, 0x85, 0x80, 0x00]);
        let frame = batch_frame(&[twice.clone(), unknown.clone(), long.clone()]);
        let read = read_batch(frame.clone());
        for (incoming, bytes) in read.records.iter().zip([&twice, &unknown, &long]) {
            let prost = proto::SourceRecord::decode(&bytes[..]).unwrap();
            match incoming {
                Incoming::Decoded(d) => assert_eq!(**d, prost),
                Incoming::Plain(p) => {
                    assert_eq!(p.decode(&frame).unwrap(), prost);
                    assert_eq!(p.timestamp_ms, prost.timestamp_ms);
                }
            }
        }
        assert!(matches!(read.records[0], Incoming::Decoded(_)));
        assert!(matches!(read.records[1], Incoming::Decoded(_)));
        // A record prost cannot read fails the batch, as before.
        let mut bad = base.clone();
        bad.extend_from_slice(&[2 << 3 | 2, 5, b'x']);
        assert!(SourceFrame::read(batch_frame(&[base.clone(), bad])).is_err());
        let mut not_utf8 = Vec::new();
        prost::encoding::encode_varint(3 << 3 | 2, &mut not_utf8);
        prost::encoding::encode_varint(1, &mut not_utf8);
        not_utf8.push(0xff);
        assert!(SourceFrame::read(batch_frame(&[not_utf8])).is_err());
    }

    #[test]
    fn anything_but_a_batch_is_decoded() {
        let stopped = proto::SourceResponse {
            kind: Some(source_response::Kind::Stopped(proto::SourceStopped {
                last_batch_seq: 4,
            })),
        };
        match SourceFrame::read(stopped.encode_to_vec().into()) {
            Ok(SourceFrame::Other(other)) => assert_eq!(*other, stopped),
            _ => panic!("decoded"),
        }
        // A batch with a field this reader does not take is decoded whole.
        let mut frame = frame_of(SourceBatch {
            seq: 1,
            partitions: Vec::new(),
            records: records()[..3].to_vec(),
        })
        .to_vec();
        varint_field(&mut frame, 9, 1);
        let read = read_batch(frame.into());
        assert_eq!(read.records.len(), 3);
        assert!(read
            .records
            .iter()
            .all(|r| matches!(r, Incoming::Decoded(_))));
    }
}
