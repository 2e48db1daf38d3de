//! A .properties file (worker or connector), read and then checked as a connector config and
//! as worker settings: located errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_model::{ConfigFile, ConnectorConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = ConfigFile::parse_properties(std::path::Path::new("fuzz.properties"), data) {
        let _ = ConnectorConfig::from_file(&file);
        let _ = sluice_worker::settings::WorkerSettings::from_file(&file);
    }
});
