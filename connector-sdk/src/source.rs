//! A source task's records written in their wire form as the task hands them over: the batch
//! a poll fills is the bytes the worker reads, with no `SourceBatch` message built, measured and
//! walked again by prost. A task that keeps its own buffers ([`SourceTask::poll_into`] with
//! [`SourceRecordRef`]) allocates nothing per record.
//!
//! [`SourceTask::poll_into`]: crate::SourceTask::poll_into

use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use sluice_proto::encode::{
    nested_len, plain_len, put_len, put_plain, put_string, string_len, uint64_len, varint_len,
    DataLen,
};
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::Status;

use crate::proto::{self, Data, Header};
use crate::{PlainData, SourceRecord, TaskError};

/// `SourceResponse.batch`: the field a batch frame starts with.
const BATCH_FIELD: u32 = 2;
/// Room kept in front of the records for that field's key and length (a varint of at most 5
/// bytes: a frame is below 4 GiB).
const HEAD: usize = 6;

/// A source record lent to [`SourceBatchWriter::push_ref`]: its key and value plain (absent,
/// raw bytes, or a string or bytes with no schema or a primitive one), no headers. Anything
/// else goes through [`SourceBatchWriter::push`].
#[derive(Debug, Clone)]
pub struct SourceRecordRef<'a> {
    /// The source partition (a JSON object as text); share one `Arc` across records.
    pub source_partition: Option<&'a Arc<str>>,
    /// The source offset (a JSON object as text) reached once this record is committed.
    pub source_offset: Option<&'a str>,
    pub topic: &'a str,
    pub kafka_partition: Option<i32>,
    pub key: PlainData<'a>,
    pub value: PlainData<'a>,
    pub timestamp_ms: Option<i64>,
    pub transaction: proto::TransactionBoundary,
}

impl Default for SourceRecordRef<'_> {
    fn default() -> Self {
        SourceRecordRef {
            source_partition: None,
            source_offset: None,
            topic: "",
            kafka_partition: None,
            key: PlainData::Null,
            value: PlainData::Null,
            timestamp_ms: None,
            transaction: proto::TransactionBoundary::Unspecified,
        }
    }
}

/// A key or value as the writer takes it.
enum Part<'a> {
    Plain(PlainData<'a>),
    Data(&'a Data, DataLen),
}

impl Part<'_> {
    fn len(&self) -> usize {
        match self {
            Part::Plain(p) => plain_len(p),
            Part::Data(_, len) => len.data_len(),
        }
    }

    fn write(&self, field: u32, len: usize, buf: &mut BytesMut) {
        put_len(field, len, buf);
        match self {
            Part::Plain(p) => put_plain(p, buf),
            Part::Data(d, l) => l.write(d, buf),
        }
    }
}

/// The records of one poll, in the wire form of the `SourceResponse` that carries them.
pub struct SourceBatchWriter {
    buf: BytesMut,
    records: usize,
    /// Source partitions by index, as the records reference them.
    partitions: Vec<Arc<str>>,
    /// Per partition, where in `buf` the offset of its last record with one lies.
    last: Vec<Option<Range<usize>>>,
}

/// A written batch: its frame, the last offset per source partition, what it debits.
pub(crate) struct WrittenBatch {
    pub frame: Bytes,
    pub positions: Vec<(Arc<str>, String)>,
    pub records: usize,
    /// The `SourceBatch` message's length: the bytes of credit it takes.
    pub bytes: usize,
}

impl Default for SourceBatchWriter {
    fn default() -> Self {
        SourceBatchWriter::new(0)
    }
}

impl SourceBatchWriter {
    pub(crate) fn new(capacity: usize) -> SourceBatchWriter {
        let mut buf = BytesMut::with_capacity(HEAD + capacity);
        buf.put_bytes(0, HEAD);
        SourceBatchWriter {
            buf,
            records: 0,
            partitions: Vec::new(),
            last: Vec::new(),
        }
    }

    /// The batch as the worker will read it, decoded: for tests of a task's
    /// [`poll_into`](crate::SourceTask::poll_into).
    pub fn into_batch(mut self) -> Result<proto::SourceBatch, TaskError> {
        use prost::Message as _;
        let frame = self.finish(1).frame;
        match proto::SourceResponse::decode(frame.as_ref()) {
            Ok(proto::SourceResponse {
                kind: Some(proto::source_response::Kind::Batch(batch)),
            }) => Ok(batch),
            Ok(_) => Err(TaskError::fatal(
                "a written batch reads back as another message",
            )),
            Err(e) => Err(TaskError::fatal(format!(
                "a written batch does not decode: {e}"
            ))),
        }
    }

    /// Records written so far.
    pub fn len(&self) -> usize {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Writes `record`, of any shape.
    pub fn push(&mut self, record: &SourceRecord) {
        fn part(d: &Data) -> Part<'_> {
            match PlainData::of(Some(d)) {
                // A plain schema is written as its type alone: an optional one goes as prost
                // writes it.
                Some(plain) if !optional(d) => Part::Plain(plain),
                _ => Part::Data(d, DataLen::of(d)),
            }
        }
        self.write(
            record.source_partition.as_ref(),
            record.source_offset.as_deref(),
            &record.topic,
            record.kafka_partition,
            part(&record.key),
            part(&record.value),
            &record.headers,
            record.timestamp_ms,
            record.transaction,
        );
    }

    /// Writes `record`, copying only its bytes into the batch.
    pub fn push_ref(&mut self, record: &SourceRecordRef<'_>) {
        self.write(
            record.source_partition,
            record.source_offset,
            record.topic,
            record.kafka_partition,
            Part::Plain(record.key),
            Part::Plain(record.value),
            &[],
            record.timestamp_ms,
            record.transaction,
        );
    }

    /// `SourceRecord` field 3 of the batch, written as prost writes it.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        partition: Option<&Arc<str>>,
        offset: Option<&str>,
        topic: &str,
        kafka_partition: Option<i32>,
        key: Part<'_>,
        value: Part<'_>,
        headers: &[Header],
        timestamp_ms: Option<i64>,
        transaction: proto::TransactionBoundary,
    ) {
        let index = partition.map(|p| self.intern(p));
        let has_offset = offset.is_some();
        let offset = offset.unwrap_or_default();
        let (key_len, value_len) = (key.len(), value.len());
        let transaction = transaction as i32;
        let len = index.map_or(0, |i| varint_len(1, u64::from(i)))
            + string_len(2, offset)
            + string_len(3, topic)
            + kafka_partition.map_or(0, |p| varint_len(4, p as i64 as u64))
            + nested_len(5, key_len)
            + nested_len(6, value_len)
            + headers
                .iter()
                .map(|h| prost::encoding::message::encoded_len(7, h))
                .sum::<usize>()
            + timestamp_ms.map_or(0, |t| varint_len(8, t as u64))
            + uint64_len(9, transaction as i64 as u64);
        let buf = &mut self.buf;
        buf.reserve(nested_len(3, len));
        put_len(3, len, buf);
        if let Some(i) = index {
            encode_key(1, WireType::Varint, buf);
            encode_varint(u64::from(i), buf);
        }
        put_string(2, offset, buf);
        if let (Some(i), true) = (index, has_offset) {
            let end = buf.len();
            self.last[i as usize] = Some(end - offset.len()..end);
        }
        let buf = &mut self.buf;
        put_string(3, topic, buf);
        if let Some(p) = kafka_partition {
            encode_key(4, WireType::Varint, buf);
            encode_varint(p as i64 as u64, buf);
        }
        key.write(5, key_len, buf);
        value.write(6, value_len, buf);
        for h in headers {
            prost::encoding::message::encode(7, h, buf);
        }
        if let Some(t) = timestamp_ms {
            encode_key(8, WireType::Varint, buf);
            encode_varint(t as u64, buf);
        }
        if transaction != 0 {
            encode_key(9, WireType::Varint, buf);
            encode_varint(transaction as i64 as u64, buf);
        }
        self.records += 1;
    }

    /// The index of source partition `p` in this batch.
    fn intern(&mut self, p: &Arc<str>) -> u32 {
        let found = self
            .partitions
            .iter()
            .rposition(|q| Arc::ptr_eq(q, p) || **q == **p);
        let index = found.unwrap_or_else(|| {
            self.partitions.push(p.clone());
            self.last.push(None);
            self.partitions.len() - 1
        });
        index as u32
    }

    /// The batch so far as `SourceResponse { batch: { seq, partitions, records } }` (the
    /// records first: fields may come in any order), leaving the writer empty.
    pub(crate) fn finish(&mut self, seq: u64) -> WrittenBatch {
        let positions = self
            .partitions
            .iter()
            .zip(&self.last)
            .filter_map(|(p, at)| {
                let offset = std::str::from_utf8(&self.buf[at.clone()?]).ok()?;
                Some((p.clone(), offset.to_string()))
            })
            .collect();
        let buf = &mut self.buf;
        if seq != 0 {
            encode_key(1, WireType::Varint, buf);
            encode_varint(seq, buf);
        }
        for p in &self.partitions {
            put_len(2, p.len(), buf);
            buf.put_slice(p.as_bytes());
        }
        let bytes = buf.len() - HEAD;
        let head = key_len_delimited(BATCH_FIELD) + encoded_len_varint(bytes as u64);
        let mut at = &mut buf[HEAD - head..HEAD];
        put_len(BATCH_FIELD, bytes, &mut at);
        let (records, size) = (self.records, buf.len());
        let mut frame = std::mem::replace(self, SourceBatchWriter::new(size)).buf;
        frame.advance(HEAD - head);
        WrittenBatch {
            frame: frame.freeze(),
            positions,
            records,
            bytes,
        }
    }
}

fn key_len_delimited(field: u32) -> usize {
    prost::encoding::key_len(field)
}

/// Whether `d`'s schema says optional (a plain record is written with a bare type).
fn optional(d: &Data) -> bool {
    matches!(
        &d.kind,
        Some(proto::data::Kind::Structured(proto::Structured {
            schema: Some(s),
            ..
        })) if s.optional
    )
}

/// What the source stream sends: a message, or a batch already in its wire form.
pub(crate) enum SourceOut {
    Message(Box<proto::SourceResponse>),
    Batch(Bytes),
}

/// The source stream's codec: requests as prost reads them, batches written as they are.
#[derive(Default)]
pub(crate) struct SourceCodec;

impl Codec for SourceCodec {
    type Encode = SourceOut;
    type Decode = proto::SourceRequest;
    type Encoder = SourceEncoder;
    type Decoder = sluice_proto::codec::SliceDecoder<proto::SourceRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        SourceEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        Default::default()
    }
}

pub(crate) struct SourceEncoder;

impl Encoder for SourceEncoder {
    type Item = SourceOut;
    type Error = Status;

    fn encode(&mut self, item: SourceOut, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use prost::Message as _;
        match item {
            SourceOut::Message(m) => {
                dst.reserve(m.encoded_len());
                m.encode_raw(dst);
            }
            SourceOut::Batch(frame) => {
                dst.reserve(frame.len());
                dst.put_slice(&frame);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data;
    use prost::Message as _;
    use sluice_proto::wire::shapes;

    /// Records of every shape, with partitions shared, repeated and missing.
    fn records() -> Vec<SourceRecord> {
        let a: Arc<str> = Arc::from(r#"{"p":"a"}"#);
        let b: Arc<str> = Arc::from(r#"{"p":"b"}"#);
        shapes::pairs()
            .into_iter()
            .map(|(n, key, value)| SourceRecord {
                source_partition: [
                    None,
                    Some(a.clone()),
                    Some(b.clone()),
                    Some(Arc::from(r#"{"p":"a"}"#)),
                ][n % 4]
                    .clone(),
                source_offset: (!n.is_multiple_of(3)).then(|| format!(r#"{{"seq":{n}}}"#)),
                topic: shapes::topic(n),
                kafka_partition: [None, Some(0), Some(-1), Some(5)][(n / 4) % 4],
                key: key.unwrap_or_default(),
                value: value.unwrap_or_default(),
                headers: shapes::headers(n),
                timestamp_ms: shapes::timestamp(n),
                transaction: [
                    proto::TransactionBoundary::Unspecified,
                    proto::TransactionBoundary::Commit,
                    proto::TransactionBoundary::Abort,
                ][n % 3],
            })
            .collect()
    }

    /// What prost writes for `records`, with partitions interned as the writer does.
    fn prost_batch(seq: u64, records: &[SourceRecord]) -> proto::SourceBatch {
        let mut partitions: Vec<String> = Vec::new();
        let records = records
            .iter()
            .map(|r| proto::SourceRecord {
                partition: r.source_partition.as_ref().map(|p| {
                    let at = partitions.iter().position(|q| **q == **p);
                    at.unwrap_or_else(|| {
                        partitions.push(p.to_string());
                        partitions.len() - 1
                    }) as u32
                }),
                offset: r.source_offset.clone().unwrap_or_default(),
                topic: r.topic.clone(),
                kafka_partition: r.kafka_partition,
                key: Some(r.key.clone()),
                value: Some(r.value.clone()),
                headers: r.headers.clone(),
                timestamp_ms: r.timestamp_ms,
                transaction: r.transaction as i32,
            })
            .collect();
        proto::SourceBatch {
            seq,
            partitions,
            records,
        }
    }

    fn response(frame: &Bytes) -> proto::SourceBatch {
        match proto::SourceResponse::decode(frame.as_ref()) {
            Ok(proto::SourceResponse {
                kind: Some(proto::source_response::Kind::Batch(batch)),
            }) => batch,
            other => panic!("not a batch: {other:?}"),
        }
    }

    #[test]
    fn a_written_batch_reads_back_as_the_records_prost_would_send() {
        let records = records();
        let mut writer = SourceBatchWriter::new(0);
        for r in &records {
            writer.push(r);
        }
        assert_eq!(writer.len(), records.len());
        let written = writer.finish(7);
        let expected = prost_batch(7, &records);
        assert_eq!(response(&written.frame), expected);
        assert_eq!(written.bytes, expected.encoded_len());
        assert_eq!(written.records, records.len());
        // The last offset per partition, as the task will be told once committed.
        let mut positions = written.positions;
        positions.sort();
        let last = |p: &str| {
            records
                .iter()
                .rev()
                .find(|r| r.source_partition.as_deref() == Some(p) && r.source_offset.is_some())
                .and_then(|r| r.source_offset.clone())
        };
        let want: Vec<(Arc<str>, String)> = [r#"{"p":"a"}"#, r#"{"p":"b"}"#]
            .into_iter()
            .filter_map(|p| Some((Arc::from(p), last(p)?)))
            .collect();
        assert_eq!(positions, want);
        // The writer starts over empty.
        assert!(writer.is_empty());
        let again = writer.finish(8);
        assert_eq!(response(&again.frame), prost_batch(8, &[]));
    }

    #[test]
    fn a_lent_record_is_written_as_the_owned_one() {
        let partition: Arc<str> = Arc::from(r#"{"datagen.task":0}"#);
        let owned = SourceRecord {
            source_partition: Some(partition.clone()),
            source_offset: Some(r#"{"seq":41}"#.into()),
            topic: "t".into(),
            kafka_partition: Some(2),
            key: data::raw(b"k".to_vec()),
            value: data::string("ü".repeat(300)),
            timestamp_ms: Some(1_700_000_000_000),
            transaction: proto::TransactionBoundary::Commit,
            ..SourceRecord::default()
        };
        let text = "ü".repeat(300);
        let lent = SourceRecordRef {
            source_partition: Some(&partition),
            source_offset: Some(r#"{"seq":41}"#),
            topic: "t",
            kafka_partition: Some(2),
            key: PlainData::Raw(b"k"),
            value: PlainData::String {
                schema: Some(proto::SchemaType::String as i32),
                text: &text,
            },
            timestamp_ms: Some(1_700_000_000_000),
            transaction: proto::TransactionBoundary::Commit,
        };
        let (mut a, mut b) = (SourceBatchWriter::new(0), SourceBatchWriter::new(0));
        a.push(&owned);
        b.push_ref(&lent);
        b.push_ref(&SourceRecordRef::default());
        a.push(&SourceRecord::default());
        let (a, b) = (a.finish(1), b.finish(1));
        assert_eq!(a.frame, b.frame);
        assert_eq!(
            response(&b.frame),
            prost_batch(1, &[owned, SourceRecord::default()])
        );
    }

    /// Partitions are interned in the order they first appear (equal text, distinct `Arc`s,
    /// is one partition), and each one's position is the offset of its last record that has
    /// one.
    #[test]
    fn a_batch_interns_partitions_and_keeps_each_ones_last_offset() {
        let a: Arc<str> = Arc::from(r#"{"file":"a"}"#);
        let b: Arc<str> = Arc::from(r#"{"file":"b"}"#);
        let a_again: Arc<str> = Arc::from(r#"{"file":"a"}"#);
        let record = |partition: Option<&Arc<str>>, offset: Option<&str>| SourceRecord {
            source_partition: partition.cloned(),
            source_offset: offset.map(str::to_string),
            topic: "t".into(),
            ..SourceRecord::default()
        };
        let mut writer = SourceBatchWriter::new(0);
        for r in [
            record(Some(&a), Some("1")),
            record(Some(&b), Some("10")),
            record(None, None),
            record(Some(&a_again), Some("2")),
            record(Some(&b), None),
        ] {
            writer.push(&r);
        }
        let written = writer.finish(7);
        let batch = response(&written.frame);
        assert_eq!(batch.seq, 7);
        assert_eq!(batch.partitions, vec![a.to_string(), b.to_string()]);
        let index: Vec<_> = batch.records.iter().map(|r| r.partition).collect();
        assert_eq!(index, vec![Some(0), Some(1), None, Some(0), Some(1)]);
        assert_eq!(
            written.positions,
            vec![(a.clone(), "2".to_string()), (b.clone(), "10".to_string())]
        );
        assert_eq!(written.bytes, batch.encoded_len());
    }
}
