//! Per-connector counters of records and bytes moved, read by the progress line and benches.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Counters {
    records: AtomicU64,
    bytes: AtomicU64,
    /// Topics produced to or consumed from (Kafka Connect's active topics).
    topics: Mutex<BTreeSet<String>>,
}

impl Counters {
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records that `topic` was used; cheap when it already was.
    pub fn note_topic(&self, topic: &str) {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if !topics.contains(topic) {
            topics.insert(topic.to_string());
        }
    }

    pub fn topics(&self) -> BTreeSet<String> {
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// (records, bytes) so far.
    pub fn read(&self) -> (u64, u64) {
        (
            self.records.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// Human form of a byte count: 512 B, 1.5 KiB, 20.0 MiB.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[0])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
