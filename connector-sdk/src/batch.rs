//! Sink batches as the worker sends them. A batch keeps the bytes it arrived in; a sink task
//! that overrides [`crate::SinkTask::put_batch`] reads its records in place
//! ([`SinkBatch::records`]: a topic, key and value that are no data, raw bytes, or a string or
//! bytes with a plain schema are borrowed from those bytes, with no allocation or copy per
//! record), and every other task gets the decoded records it always got
//! ([`SinkBatch::into_records`]).

use std::borrow::Cow;
use std::ops::Range;

use bytes::{Buf as _, Bytes};
use prost::{DecodeError, Message as _};
use sluice_proto::codec::decode_slice;
use sluice_proto::wire::{each_field_once, next_field, utf8, Field, PlainData};
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;

use crate::proto::{self, sink_request, Data, Header};
use crate::TaskError;

/// A batch of sink records as received.
#[derive(Debug, Clone)]
pub struct SinkBatch {
    seq: u64,
    frame: Bytes,
    /// Each record's encoded `SinkRecord` in `frame`.
    records: Vec<Range<u32>>,
}

impl SinkBatch {
    /// A batch of `records`, encoded as the worker sends them: for a task driven outside a
    /// worker (tests), and for a batch prost had to decode whole.
    pub fn from_records(seq: u64, records: &[proto::SinkRecord]) -> SinkBatch {
        let len = records
            .iter()
            .map(|r| prost::encoding::message::encoded_len(2, r))
            .sum();
        let mut buf = Vec::with_capacity(len);
        let mut spans = Vec::with_capacity(records.len());
        for record in records {
            let start =
                buf.len() + prost::encoding::encoded_len_varint(record.encoded_len() as u64);
            // Encoding into a Vec that has room cannot fail.
            let _ = record.encode_length_delimited(&mut buf);
            spans.push(start as u32..buf.len() as u32);
        }
        SinkBatch {
            seq,
            frame: buf.into(),
            records: spans,
        }
    }

    /// The batch's sequence number, as the worker numbered it.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records, read in place: a plain record's topic, key and value borrow the received
    /// bytes; any other record is decoded. Fails, naming the record, on one that is not a
    /// `SinkRecord` (where prost would fail).
    pub fn records(&self) -> Result<Vec<SinkRecordRef<'_>>, TaskError> {
        self.records
            .iter()
            .enumerate()
            .map(|(i, span)| {
                SinkRecordRef::read(self.record(span)).map_err(|e| self.unreadable(i, e))
            })
            .collect()
    }

    /// The records, decoded (what [`crate::SinkTask::put`] takes).
    pub fn into_records(self) -> Result<Vec<proto::SinkRecord>, TaskError> {
        self.records
            .iter()
            .enumerate()
            .map(|(i, span)| {
                proto::SinkRecord::decode(self.record(span)).map_err(|e| self.unreadable(i, e))
            })
            .collect()
    }

    fn record(&self, span: &Range<u32>) -> &[u8] {
        self.frame
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default()
    }

    fn unreadable(&self, index: usize, e: DecodeError) -> TaskError {
        TaskError::fatal(format!(
            "sink batch {}: record {index} is not a SinkRecord: {e}",
            self.seq
        ))
    }

    /// `frame` read as `SinkRequest { batch }` laid out as prost writes one (a `seq`, then
    /// records): the records located, not decoded. `None` for anything else.
    fn read(frame: &Bytes) -> Option<SinkBatch> {
        let mut buf = &frame[..];
        let (2, Field::Bytes(batch)) = next_field(&mut buf)? else {
            return None;
        };
        if !buf.is_empty() {
            return None;
        }
        SinkBatch::locate(frame, batch, 0)
    }

    /// Feature `sink.shared_memory`: batch `seq`'s records, `frame` holding nothing but their
    /// `SinkBatch.records` entries. `None` for anything else.
    pub(crate) fn shared(seq: u64, frame: &Bytes) -> Option<SinkBatch> {
        SinkBatch::locate(frame, frame, seq).filter(|batch| batch.seq == seq)
    }

    /// `fields`, a part of `frame`, read as a `SinkBatch`'s fields: a `seq` (as prost reads a
    /// scalar given twice, the last one; `seq` when there is none) and records, located, not
    /// decoded.
    fn locate(frame: &Bytes, mut fields: &[u8], mut seq: u64) -> Option<SinkBatch> {
        let mut records = Vec::new();
        while !fields.is_empty() {
            match next_field(&mut fields)? {
                (1, Field::Varint(v)) => seq = v,
                (2, Field::Bytes(record)) => {
                    let start = record.as_ptr() as usize - frame.as_ptr() as usize;
                    // Frames are at most MAX_MESSAGE_BYTES (256 MiB): offsets fit.
                    records.push(start as u32..(start + record.len()) as u32);
                }
                _ => return None,
            }
        }
        Some(SinkBatch {
            seq,
            frame: frame.clone(),
            records,
        })
    }
}

/// A sink record, read in place where it is plain.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkRecordRef<'a> {
    pub topic: Cow<'a, str>,
    pub partition: i32,
    pub offset: i64,
    pub key: DataRef<'a>,
    pub value: DataRef<'a>,
    pub headers: Vec<Header>,
    pub timestamp_ms: Option<i64>,
}

/// A key or value: plain and borrowed, or decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum DataRef<'a> {
    Plain(PlainData<'a>),
    /// A schema or value beyond a plain string or bytes (or a record with headers).
    Data(Box<Data>),
}

impl<'a> SinkRecordRef<'a> {
    fn read(record: &'a [u8]) -> Result<SinkRecordRef<'a>, DecodeError> {
        if let Some(plain) = SinkRecordRef::plain(record) {
            return Ok(plain);
        }
        let r = proto::SinkRecord::decode(record)?;
        Ok(SinkRecordRef {
            topic: Cow::Owned(r.topic),
            partition: r.partition,
            offset: r.offset,
            key: DataRef::Data(Box::new(r.key.unwrap_or_default())),
            value: DataRef::Data(Box::new(r.value.unwrap_or_default())),
            headers: r.headers,
            timestamp_ms: r.timestamp_ms,
        })
    }

    /// `record` read in place, or `None` when it is not plain or not laid out as prost writes
    /// one (each field once, known fields only, no headers).
    fn plain(record: &'a [u8]) -> Option<SinkRecordRef<'a>> {
        let mut out = SinkRecordRef {
            topic: Cow::Borrowed(""),
            partition: 0,
            offset: 0,
            key: DataRef::Plain(PlainData::Null),
            value: DataRef::Plain(PlainData::Null),
            headers: Vec::new(),
            timestamp_ms: None,
        };
        // The integer fields are read as prost reads them: the varint, truncated.
        each_field_once(record, |field, value| {
            match (field, value) {
                (1, Field::Bytes(b)) => out.topic = Cow::Borrowed(utf8(b)?),
                (2, Field::Varint(v)) => out.partition = v as i32,
                (3, Field::Varint(v)) => out.offset = v as i64,
                (4, Field::Bytes(b)) => out.key = DataRef::Plain(PlainData::read(b)?),
                (5, Field::Bytes(b)) => out.value = DataRef::Plain(PlainData::read(b)?),
                (7, Field::Varint(v)) => out.timestamp_ms = Some(v as i64),
                _ => return None,
            }
            Some(())
        })?;
        Some(out)
    }
}

impl DataRef<'_> {
    /// A null key or a tombstone value.
    pub fn is_null(&self) -> bool {
        match self {
            DataRef::Plain(data) => *data == PlainData::Null,
            DataRef::Data(data) => data.kind.is_none(),
        }
    }

    /// The data, owned (for a converter or anything else that takes `Data`).
    pub fn to_data(&self) -> crate::proto::Data {
        match self {
            DataRef::Plain(plain) => plain.to_data(),
            DataRef::Data(data) => (**data).clone(),
        }
    }

    /// The text form, as [`crate::data::to_text`] gives it.
    pub fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            DataRef::Plain(PlainData::Null) => None,
            DataRef::Plain(PlainData::String { text, .. }) => Some(Cow::Borrowed(text)),
            DataRef::Plain(PlainData::Raw(b) | PlainData::Bytes { bytes: b, .. }) => {
                Some(String::from_utf8_lossy(b))
            }
            DataRef::Data(data) => crate::data::to_text(data),
        }
    }

    /// A string, bytes or primitive key or value as bytes (see
    /// [`crate::data::primitive_bytes`]); `None` for null, structs, maps and arrays.
    pub fn scalar_bytes(&self) -> Option<Cow<'_, [u8]>> {
        use crate::proto::data;
        match self {
            DataRef::Plain(PlainData::Null) => None,
            DataRef::Plain(PlainData::String { text, .. }) => Some(Cow::Borrowed(text.as_bytes())),
            DataRef::Plain(PlainData::Raw(b) | PlainData::Bytes { bytes: b, .. }) => {
                Some(Cow::Borrowed(b))
            }
            DataRef::Data(d) => match d.kind.as_ref()? {
                data::Kind::Raw(b) => Some(Cow::Borrowed(b)),
                data::Kind::Structured(s) => {
                    crate::data::primitive_bytes(s.value.as_ref()?.kind.as_ref()?)
                }
            },
        }
    }

    /// The bytes of raw data or of a bytes value; `None` for anything else.
    pub fn bytes(&self) -> Option<&[u8]> {
        use crate::proto::{data, value};
        match self {
            DataRef::Plain(PlainData::Raw(b) | PlainData::Bytes { bytes: b, .. }) => Some(b),
            DataRef::Plain(_) => None,
            DataRef::Data(d) => match d.kind.as_ref()? {
                data::Kind::Raw(b) => Some(b),
                data::Kind::Structured(s) => match s.value.as_ref()?.kind.as_ref()? {
                    value::Kind::Bytes(b) => Some(b),
                    _ => None,
                },
            },
        }
    }
}

/// A message of the sink stream: a batch, or anything else, decoded.
pub(crate) enum SinkFrame {
    Batch(SinkBatch),
    Other(proto::SinkRequest),
}

impl SinkFrame {
    fn read(frame: Bytes) -> Result<SinkFrame, DecodeError> {
        if let Some(batch) = SinkBatch::read(&frame) {
            return Ok(SinkFrame::Batch(batch));
        }
        let request: proto::SinkRequest = decode_slice(&frame)?;
        Ok(match request.kind {
            Some(sink_request::Kind::Batch(batch)) => {
                SinkFrame::Batch(SinkBatch::from_records(batch.seq, &batch.records))
            }
            kind => SinkFrame::Other(proto::SinkRequest { kind }),
        })
    }
}

/// The sink stream's codec: responses as every message, requests as [`SinkFrame`]s.
#[derive(Default)]
pub(crate) struct SinkCodec;

impl Codec for SinkCodec {
    type Encode = proto::SinkResponse;
    type Decode = SinkFrame;
    type Encoder = sluice_proto::codec::SliceEncoder<proto::SinkResponse>;
    type Decoder = SinkDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        Default::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SinkDecoder
    }
}

pub(crate) struct SinkDecoder;

impl Decoder for SinkDecoder {
    type Item = SinkFrame;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<SinkFrame>, Status> {
        // The whole frame, split off tonic's buffer without a copy.
        let frame = buf.copy_to_bytes(buf.remaining());
        SinkFrame::read(frame)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::SinkRequest;
    use sluice_proto::wire::shapes;

    fn records() -> Vec<proto::SinkRecord> {
        shapes::pairs()
            .into_iter()
            .map(|(n, key, value)| proto::SinkRecord {
                topic: shapes::topic(n),
                partition: [0, 1, -1, i32::MAX][n % 4],
                offset: [0, 7, -1, i64::MAX][n % 4],
                key,
                value,
                headers: shapes::headers(n),
                timestamp_ms: shapes::timestamp(n),
            })
            .collect()
    }

    fn frame_of(request: SinkRequest) -> Bytes {
        request.encode_to_vec().into()
    }

    fn batch_request(seq: u64, records: Vec<proto::SinkRecord>) -> SinkRequest {
        SinkRequest {
            kind: Some(sink_request::Kind::Batch(proto::SinkBatch { seq, records })),
        }
    }

    fn read_batch(frame: Bytes) -> SinkBatch {
        match SinkFrame::read(frame) {
            Ok(SinkFrame::Batch(batch)) => batch,
            Ok(SinkFrame::Other(other)) => panic!("not a batch: {other:?}"),
            Err(e) => panic!("{e}"),
        }
    }

    /// `read` is what prost decodes; plain when the record has no headers and a plain key and
    /// value.
    fn same(read: &SinkRecordRef<'_>, decoded: &proto::SinkRecord) {
        assert_eq!(read.topic, decoded.topic);
        assert_eq!(read.partition, decoded.partition);
        assert_eq!(read.offset, decoded.offset);
        assert_eq!(read.timestamp_ms, decoded.timestamp_ms);
        assert_eq!(read.headers, decoded.headers);
        let plain = decoded.headers.is_empty()
            && PlainData::of(decoded.key.as_ref()).is_some()
            && PlainData::of(decoded.value.as_ref()).is_some();
        for (data, expected) in [(&read.key, &decoded.key), (&read.value, &decoded.value)] {
            match data {
                DataRef::Plain(p) => {
                    assert!(plain, "{decoded:?} read in place");
                    assert_eq!(Some(*p), PlainData::of(expected.as_ref()));
                }
                DataRef::Data(d) => {
                    assert!(!plain, "{decoded:?} decoded");
                    assert_eq!(**d, expected.clone().unwrap_or_default());
                }
            }
            let as_text = expected.as_ref().and_then(crate::data::to_text);
            assert_eq!(data.text(), as_text);
            assert_eq!(
                data.is_null(),
                expected.as_ref().is_none_or(|d| d.kind.is_none())
            );
        }
    }

    #[test]
    fn records_read_in_place_are_what_prost_decodes() {
        let records = records();
        let batch = read_batch(frame_of(batch_request(9, records.clone())));
        assert_eq!((batch.seq(), batch.len()), (9, records.len()));
        let read = batch.records().unwrap();
        for (read, decoded) in read.iter().zip(&records) {
            same(read, decoded);
        }
        let in_place = read
            .iter()
            .filter(|r| matches!(r.value, DataRef::Plain(_)))
            .count();
        assert!(in_place > records.len() / 3, "{in_place} read in place");
        assert_eq!(batch.clone().into_records().unwrap(), records);
        // A batch built from records reads back the same.
        let built = SinkBatch::from_records(3, &records);
        assert_eq!(built.seq(), 3);
        assert_eq!(built.into_records().unwrap(), records);
    }

    #[test]
    fn other_layouts_are_decoded_by_prost_and_bad_records_are_named() {
        let records = records();
        // A batch given twice (prost merges them) and a batch with an unknown field.
        let mut twice = frame_of(batch_request(1, records[..3].to_vec())).to_vec();
        twice.extend(frame_of(batch_request(2, records[3..5].to_vec())));
        let batch = read_batch(twice.into());
        assert_eq!(batch.seq(), 2);
        assert_eq!(batch.into_records().unwrap(), records[..5].to_vec());
        let mut inner = proto::SinkBatch {
            seq: 5,
            records: records[..2].to_vec(),
        }
        .encode_to_vec();
        inner.extend([0x48, 0x01]); // field 9, varint 1
        let mut unknown = vec![0x12];
        prost::encoding::encode_varint(inner.len() as u64, &mut unknown);
        unknown.extend(&inner);
        let batch = read_batch(unknown.into());
        assert_eq!(batch.seq(), 5);
        assert_eq!(batch.into_records().unwrap(), records[..2].to_vec());
        // Anything else is handed over decoded.
        let flush = SinkRequest {
            kind: Some(sink_request::Kind::Flush(proto::FlushRequest::default())),
        };
        assert!(matches!(
            SinkFrame::read(frame_of(flush.clone())),
            Ok(SinkFrame::Other(r)) if r == flush
        ));
        // A cut frame fails as prost fails.
        let frame = frame_of(batch_request(3, records[..20].to_vec()));
        for cut in [1, 2, 10, frame.len() / 2, frame.len() - 1] {
            let cut = frame.slice(..cut);
            assert!(SinkRequest::decode(cut.clone()).is_err());
            assert!(SinkFrame::read(cut).is_err(), "cut at {}", frame.len());
        }
        // A record whose topic is not UTF-8 fails the batch, naming the record.
        let mut bad = frame_of(batch_request(4, records[..3].to_vec())).to_vec();
        let topic = "topic-\u{e9}".as_bytes();
        let at = bad.windows(topic.len()).position(|w| w == topic).unwrap();
        bad[at] = 0xff;
        let batch = read_batch(bad.into());
        let e = batch.records().unwrap_err();
        assert!(
            e.message.contains("sink batch 4: record 2"),
            "{}",
            e.message
        );
        assert!(batch.into_records().is_err());
    }
}
