//! The codec of every Sluice service: prost's encoding, and decoding from one contiguous
//! slice. tonic hands a decoder its frame as a buffer whose every `advance` is checked; a
//! batch of thousands of records makes that the larger part of decoding. The frame is taken
//! whole (without a copy: the buffer is split off) and decoded from a plain slice.
//!
//! Encoding reserves each message's length before writing it (tonic's buffer would otherwise
//! grow by doubling through a megabyte batch, copying it each time), and a source batch is
//! written by [`crate::encode`], which works out each nested length once.
//!
//! The two messages that carry batches (`SinkRequest` to a connector, `SourceResponse` to the
//! worker) are decoded with their records vector sized once: prost would grow it by doubling,
//! moving every record decoded so far (hundreds of bytes each) a dozen times per batch.

use std::any::Any;
use std::marker::PhantomData;

use bytes::Buf as _;
use prost::encoding::decode_varint;
use prost::{DecodeError, Message};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

pub struct SliceCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for SliceCodec<T, U> {
    fn default() -> Self {
        SliceCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for SliceCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SliceEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SliceEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder::default()
    }
}

/// The encoding half: prost's bytes, into a buffer reserved for them.
pub struct SliceEncoder<T> {
    _pd: PhantomData<T>,
}

impl<T> Default for SliceEncoder<T> {
    fn default() -> Self {
        SliceEncoder { _pd: PhantomData }
    }
}

impl<T: Message + 'static> Encoder for SliceEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use crate::connector::v1::{source_response, SourceResponse};
        if let Some(SourceResponse {
            kind: Some(source_response::Kind::Batch(batch)),
        }) = (&item as &dyn Any).downcast_ref::<SourceResponse>()
        {
            let len = crate::encode::SourceBatchLen::of(batch);
            dst.reserve(len.response());
            len.write(batch, dst);
        } else {
            dst.reserve(item.encoded_len());
            item.encode_raw(dst);
        }
        Ok(())
    }
}

/// The decoding half, for a codec that encodes its own way (the worker's sink stream).
pub struct SliceDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U> Default for SliceDecoder<U> {
    fn default() -> Self {
        SliceDecoder { _pd: PhantomData }
    }
}

impl<U: Message + Default + 'static> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let frame = buf.copy_to_bytes(buf.remaining());
        decode_slice::<U>(frame.as_ref())
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// `U` decoded from `frame`, as prost decodes it; a batch-carrying message through
/// [`batch_message`].
pub fn decode_slice<U: Message + Default + 'static>(frame: &[u8]) -> Result<U, DecodeError> {
    use crate::connector::v1::{
        sink_request, source_response, SinkBatch, SinkRecord, SinkRequest, SourceBatch,
        SourceRecord, SourceResponse,
    };
    let mut out: Option<U> = None;
    let slot = &mut out as &mut dyn Any;
    if let Some(slot) = slot.downcast_mut::<Option<SinkRequest>>() {
        if let Some(batch) = batch_message::<SinkRecord>(frame, 2, None) {
            let Batch { seq, records, .. } = batch?;
            *slot = Some(SinkRequest {
                kind: Some(sink_request::Kind::Batch(SinkBatch { seq, records })),
            });
        }
    } else if let Some(slot) = slot.downcast_mut::<Option<SourceResponse>>() {
        if let Some(batch) = batch_message::<SourceRecord>(frame, 3, Some(2)) {
            let Batch {
                seq,
                strings: partitions,
                records,
            } = batch?;
            *slot = Some(SourceResponse {
                kind: Some(source_response::Kind::Batch(SourceBatch {
                    seq,
                    partitions,
                    records,
                })),
            });
        }
    }
    match out {
        Some(message) => Ok(message),
        None => U::decode(frame),
    }
}

/// What [`batch_message`] reads: `{ uint64 seq = 1; repeated string ..; repeated R ..; }`.
struct Batch<R> {
    seq: u64,
    strings: Vec<String>,
    records: Vec<R>,
}

/// A message whose only field is a batch (field 2) of `{ uint64 seq = 1; repeated string
/// <strings_field>; repeated R <records_field>; }`, the records counted before any is
/// decoded. `None` when the frame holds anything else (another field, a field twice, a
/// malformed length), left to prost.
fn batch_message<R: Message + Default>(
    frame: &[u8],
    records_field: u64,
    strings_field: Option<u64>,
) -> Option<Result<Batch<R>, DecodeError>> {
    const LENGTH_DELIMITED: u64 = 2;
    let mut buf = frame;
    if decode_varint(&mut buf).ok()? != (2 << 3 | LENGTH_DELIMITED) {
        return None;
    }
    let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
    if len != buf.len() {
        return None;
    }
    let batch = buf;
    let records_key = records_field << 3 | LENGTH_DELIMITED;
    let strings_key = strings_field.map(|f| f << 3 | LENGTH_DELIMITED);
    // One pass to check the layout and count the records and strings.
    let (mut count, mut strings) = (0usize, 0usize);
    let mut scan = batch;
    while !scan.is_empty() {
        let key = decode_varint(&mut scan).ok()?;
        if key == 1 << 3 {
            decode_varint(&mut scan).ok()?;
            continue;
        }
        if key == records_key {
            count += 1;
        } else if Some(key) == strings_key {
            strings += 1;
        } else {
            return None;
        }
        let len = usize::try_from(decode_varint(&mut scan).ok()?).ok()?;
        scan = scan.get(len..)?;
    }
    let mut seq = 0;
    let mut out_strings = Vec::with_capacity(strings);
    let mut records = Vec::with_capacity(count);
    let mut scan = batch;
    while !scan.is_empty() {
        // The layout was checked above: these reads cannot fail.
        let key = decode_varint(&mut scan).ok()?;
        let value = decode_varint(&mut scan).ok()?;
        if key == 1 << 3 {
            // As prost reads a scalar field given twice: the last one.
            seq = value;
            continue;
        }
        let (field, rest) = scan.split_at(value as usize);
        scan = rest;
        if key == records_key {
            match R::decode(field) {
                Ok(r) => records.push(r),
                Err(e) => return Some(Err(e)),
            }
        } else {
            // Not UTF-8: prost says so in its words.
            out_strings.push(std::str::from_utf8(field).ok()?.to_string());
        }
    }
    Some(Ok(Batch {
        seq,
        strings: out_strings,
        records,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::v1::{
        data, sink_request, source_response, Data, FlushRequest, Header, SinkBatch, SinkRecord,
        SinkRequest, SourceBatch, SourceRecord, SourceResponse,
    };

    fn sink_record(i: i64) -> SinkRecord {
        SinkRecord {
            topic: format!("topic-{}", i % 3),
            partition: (i % 4) as i32,
            offset: i,
            key: (i % 2 == 0).then(|| Data {
                kind: Some(data::Kind::Raw(i.to_be_bytes().to_vec())),
            }),
            value: Some(Data {
                kind: Some(data::Kind::Raw(vec![b'v'; (i % 50) as usize])),
            }),
            headers: vec![Header {
                key: "h".into(),
                value: Some(Data {
                    kind: Some(data::Kind::Raw(vec![1, 2])),
                }),
            }],
            timestamp_ms: (i % 5 != 0).then_some(i * 10),
        }
    }

    fn sink_batch(seq: u64, n: i64) -> SinkRequest {
        SinkRequest {
            kind: Some(sink_request::Kind::Batch(SinkBatch {
                seq,
                records: (0..n).map(sink_record).collect(),
            })),
        }
    }

    fn source_batch(seq: u64, n: i64) -> SourceResponse {
        SourceResponse {
            kind: Some(source_response::Kind::Batch(SourceBatch {
                seq,
                partitions: vec![r#"{"file":"a"}"#.into(), r#"{"file":"b"}"#.into()],
                records: (0..n)
                    .map(|i| SourceRecord {
                        partition: (i % 3 != 0).then_some((i % 2) as u32),
                        offset: format!(r#"{{"position":{i}}}"#),
                        topic: "t".into(),
                        value: sink_record(i).value,
                        ..SourceRecord::default()
                    })
                    .collect(),
            })),
        }
    }

    /// Decoded as prost decodes it, or failing where prost fails.
    fn same<U: Message + Default + PartialEq + std::fmt::Debug + 'static>(frame: &[u8]) {
        match (decode_slice::<U>(frame), U::decode(frame)) {
            (Ok(ours), Ok(prost)) => assert_eq!(ours, prost),
            (Err(_), Err(_)) => {}
            (ours, prost) => panic!("ours {ours:?}, prost {prost:?}"),
        }
    }

    #[test]
    fn batches_decode_as_prost_decodes_them_with_their_records_sized_once() {
        for (seq, n) in [(0, 0), (1, 1), (7, 1000), (u64::MAX, 3)] {
            let frame = sink_batch(seq, n).encode_to_vec();
            same::<SinkRequest>(&frame);
            let Some(sink_request::Kind::Batch(b)) =
                decode_slice::<SinkRequest>(&frame).unwrap().kind
            else {
                panic!("a batch")
            };
            assert_eq!(b.records.capacity(), b.records.len(), "counted first");
            let frame = source_batch(seq, n).encode_to_vec();
            same::<SourceResponse>(&frame);
            let Some(source_response::Kind::Batch(b)) =
                decode_slice::<SourceResponse>(&frame).unwrap().kind
            else {
                panic!("a batch")
            };
            assert_eq!(b.records.capacity(), b.records.len(), "counted first");
        }
    }

    #[test]
    fn anything_but_a_plain_batch_is_left_to_prost() {
        // Another kind of message.
        let flush = SinkRequest {
            kind: Some(sink_request::Kind::Flush(FlushRequest::default())),
        };
        same::<SinkRequest>(&flush.encode_to_vec());
        // A batch given twice (prost merges them), a field after it, an unknown field in it.
        let mut twice = sink_batch(1, 3).encode_to_vec();
        twice.extend(sink_batch(2, 4).encode_to_vec());
        same::<SinkRequest>(&twice);
        let mut after = sink_batch(1, 3).encode_to_vec();
        after.extend(flush.encode_to_vec());
        same::<SinkRequest>(&after);
        let mut inner = SinkBatch {
            seq: 5,
            records: vec![sink_record(1)],
        }
        .encode_to_vec();
        inner.extend([0x48, 0x01]); // field 9, varint 1
        let mut unknown = vec![0x12, inner.len() as u8];
        unknown.extend(&inner);
        same::<SinkRequest>(&unknown);
        // Truncated frames, a record cut short, a partition that is not UTF-8.
        let frame = sink_batch(3, 20).encode_to_vec();
        for cut in [1, 2, 3, 10, frame.len() / 2, frame.len() - 1] {
            same::<SinkRequest>(&frame[..cut]);
        }
        let mut bad = source_batch(1, 2).encode_to_vec();
        let at = bad.windows(4).position(|w| w == b"file").unwrap();
        bad[at] = 0xff;
        same::<SourceResponse>(&bad);
        assert!(decode_slice::<SourceResponse>(&bad).is_err());
    }
}
