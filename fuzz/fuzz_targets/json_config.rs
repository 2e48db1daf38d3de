//! A connector file in Kafka Connect's JSON shape (or flat), read and checked as a connector
//! config: located errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_model::{ConfigFile, ConnectorConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = ConfigFile::parse_json(std::path::Path::new("fuzz.json"), data) {
        let _ = ConnectorConfig::from_file(&file);
    }
});
