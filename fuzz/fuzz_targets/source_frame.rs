//! A source stream frame from a connector, as the worker reads it: a batch read in place
//! (each record's position, topic, key and value located in the frame, then decoded whole) or
//! any other response. Whatever the bytes, an error and never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_worker::task::source::wire::{Incoming, SourceFrame};

fuzz_target!(|data: &[u8]| {
    let frame = bytes::Bytes::copy_from_slice(data);
    if let Ok(SourceFrame::Batch(batch)) = SourceFrame::read(frame) {
        for record in &batch.records {
            let _ = record.position(&batch.frame);
            let _ = record.transaction();
            if let Incoming::Plain(plain) = record {
                let _ = plain.topic(&batch.frame);
                let _ = plain.key(&batch.frame);
                let _ = plain.value(&batch.frame);
                let _ = plain.decode(&batch.frame);
            }
        }
    }
});
