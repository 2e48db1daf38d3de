//! The codec of every Sluice service: prost's encoding, and decoding from one contiguous
//! slice. tonic hands a decoder its frame as a buffer whose every `advance` is checked; a
//! batch of thousands of records makes that the larger part of decoding. The frame is taken
//! whole (without a copy: the buffer is split off) and decoded from a plain slice.

use std::marker::PhantomData;

use bytes::Buf as _;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder};
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
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder::default()
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

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let frame = buf.copy_to_bytes(buf.remaining());
        U::decode(frame.as_ref())
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}
