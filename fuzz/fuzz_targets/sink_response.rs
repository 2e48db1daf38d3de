//! A sink stream message from a connector, decoded as the worker decodes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_proto::connector::v1::SinkResponse;

fuzz_target!(|data: &[u8]| {
    let _ = sluice_proto::codec::decode_slice::<SinkResponse>(data);
});
