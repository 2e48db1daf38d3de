//! Kafka beside the data path: [`log`], a compacted topic read and written as a key-value log
//! (configs, offsets, statuses), and [`embedded`], the broker the CLI and tests start in
//! process.

pub mod embedded;
pub mod log;
