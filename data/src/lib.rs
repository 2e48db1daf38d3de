//! Record data as the worker handles it between a connector and Kafka: converters that turn
//! the protocol's keys, values and headers into Kafka bytes and back, and the single message
//! transforms and predicates that rewrite records on the way. Kafka Connect's class names and
//! configuration keys throughout, so existing connector configs work unchanged.
//!
//! This crate links no Kafka client: the controller uses it to validate transform settings and
//! to serve dry runs, the worker to move records.

pub mod converter;
mod json;
