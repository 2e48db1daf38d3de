//! Kafka Connect's logical type names and the null test: the data model's vocabulary, below
//! the records, the JSON form and the converters that all use it.

use sluice_proto::connector::v1::{value, Value};

pub const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";
pub const DATE: &str = "org.apache.kafka.connect.data.Date";
pub const TIME: &str = "org.apache.kafka.connect.data.Time";
pub const TIMESTAMP: &str = "org.apache.kafka.connect.data.Timestamp";

pub fn is_null(v: &Value) -> bool {
    matches!(v.kind, None | Some(value::Kind::Null(_)))
}
