//! Record data as the worker handles it between a connector and Kafka: converters that turn
//! the protocol's keys, values and headers into Kafka bytes and back, and the single message
//! transforms and predicates that rewrite records on the way. Kafka Connect's class names and
//! configuration keys throughout, so existing connector configs work unchanged.
//!
//! This crate links no Kafka client: the controller uses it to validate transform settings and
//! to serve dry runs, the worker to move records.

pub mod converter;
mod error;
mod json;
mod logical;
pub mod record;
pub mod transforms;

/// A value's text as Kafka Connect prints it (Java's `toString` for scalars, JSON otherwise).
pub fn json_text(v: &sluice_proto::connector::v1::Value) -> String {
    json::display(v)
}
