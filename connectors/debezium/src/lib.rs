//! What Sluice's Debezium-compatible change data capture connectors share: Connect schema and
//! value builders, Debezium's envelope (version 2, its field order), the `source.snapshot`
//! enum, the transaction block, heartbeat records, include/exclude filters and snapshot
//! modes. Each connector keeps what is its own: its source block, its types, its positions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub mod keys;

use regex::Regex;
use sluice_connector_sdk::proto::{
    data as proto_data, value, Data, Field, Schema, SchemaType, StructValue, Structured, Value,
};
use sluice_connector_sdk::{Config, SourceRecord, TaskError};

/// The `snapshot` values Debezium 2.7 declares for `source.snapshot`.
const SNAPSHOT_ALLOWED: &str =
    "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental";

pub fn field(name: &str, schema: Schema) -> Field {
    Field {
        name: name.to_string(),
        schema: Some(Box::new(schema)),
    }
}

pub fn plain(kind: SchemaType, optional: bool) -> Schema {
    Schema {
        r#type: kind as i32,
        optional,
        ..Schema::default()
    }
}

/// A schema with a logical (semantic) name.
pub fn named(kind: SchemaType, name: &str, optional: bool) -> Schema {
    Schema {
        name: Some(name.to_string()),
        ..plain(kind, optional)
    }
}

/// A schema of `kind` with an optional logical name and its parameters: Debezium's own
/// logical types are version 1, Kafka's (Decimal) have no version.
pub fn logical(
    kind: SchemaType,
    name: Option<&str>,
    parameters: HashMap<String, String>,
    optional: bool,
) -> Schema {
    Schema {
        r#type: kind as i32,
        optional,
        name: name.map(str::to_string),
        version: name.filter(|n| n.starts_with("io.debezium")).map(|_| 1),
        parameters,
        ..Schema::default()
    }
}

/// Kafka's Decimal with Debezium's precision parameter.
pub fn decimal_schema(precision: u32, scale: i32, optional: bool) -> Schema {
    logical(
        SchemaType::Bytes,
        Some("org.apache.kafka.connect.data.Decimal"),
        HashMap::from([
            ("scale".to_string(), scale.to_string()),
            (
                "connect.decimal.precision".to_string(),
                precision.to_string(),
            ),
        ]),
        optional,
    )
}

/// Java's `ISO_OFFSET_DATE_TIME` fraction: as many digits as needed, none when zero.
pub fn fraction(nanos: u32) -> String {
    if nanos == 0 {
        return String::new();
    }
    let digits = format!("{nanos:09}");
    format!(".{}", digits.trim_end_matches('0'))
}

/// Microseconds since the epoch as Debezium's ZonedTimestamp: ISO 8601 in UTC
/// (`2024-02-29T11:45:01.5Z`).
pub fn zoned_timestamp(micros: i64) -> Option<String> {
    let days = micros.div_euclid(86_400_000_000);
    let in_day = micros.rem_euclid(86_400_000_000);
    let (year, month, day) = civil_from_days(days);
    let seconds = in_day / 1_000_000;
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        fraction(u32::try_from(in_day % 1_000_000 * 1000).ok()?)
    ))
}

/// The civil date of days since 1970-01-01 (proleptic Gregorian; Howard Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub fn kind(kind: value::Kind) -> Value {
    Value { kind: Some(kind) }
}

pub fn null() -> Value {
    kind(value::Kind::Null(true))
}

pub fn int(i: i64) -> Value {
    kind(value::Kind::Int(i))
}

pub fn boolean(b: bool) -> Value {
    kind(value::Kind::Boolean(b))
}

pub fn string(s: &str) -> Value {
    kind(value::Kind::String(s.to_string()))
}

pub fn structure(fields: Vec<Value>) -> Value {
    kind(value::Kind::Struct(StructValue {
        fields,
        names: Vec::new(),
    }))
}

/// A key or value with its schema.
pub fn structured(schema: Schema, value: Value) -> Data {
    Data {
        kind: Some(proto_data::Kind::Structured(Structured {
            schema: Some(schema),
            value: Some(value),
        })),
    }
}

pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// `source.snapshot`: Debezium's enum of snapshot markers.
pub fn snapshot_schema() -> Schema {
    Schema {
        r#type: SchemaType::String as i32,
        optional: true,
        name: Some("io.debezium.data.Enum".into()),
        version: Some(1),
        parameters: HashMap::from([("allowed".to_string(), SNAPSHOT_ALLOWED.to_string())]),
        default_value: Some(string("false")),
        ..Schema::default()
    }
}

/// The envelope's `transaction` block (null unless transaction metadata is asked for).
pub fn transaction_schema() -> Schema {
    Schema {
        r#type: SchemaType::Struct as i32,
        optional: true,
        name: Some("event.block".into()),
        version: Some(1),
        fields: vec![
            field("id", plain(SchemaType::String, false)),
            field("total_order", plain(SchemaType::Int64, false)),
            field("data_collection_order", plain(SchemaType::Int64, false)),
        ],
        ..Schema::default()
    }
}

/// A row's schema: `<base>.Value` (or `<base>.Key`), a struct of the columns.
pub fn row_schema(base: &str, suffix: &str, fields: Vec<Field>, optional: bool) -> Schema {
    Schema {
        r#type: SchemaType::Struct as i32,
        optional,
        name: Some(format!("{base}.{suffix}")),
        fields,
        ..Schema::default()
    }
}

/// `<base>.Envelope`, version 2, in Debezium's field order.
pub fn envelope_schema(base: &str, row: Schema, source: Schema) -> Schema {
    Schema {
        r#type: SchemaType::Struct as i32,
        optional: false,
        name: Some(format!("{base}.Envelope")),
        version: Some(2),
        fields: vec![
            field("before", row.clone()),
            field("after", row),
            field("source", source),
            field("transaction", transaction_schema()),
            field("op", plain(SchemaType::String, false)),
            field("ts_ms", plain(SchemaType::Int64, true)),
            field("ts_us", plain(SchemaType::Int64, true)),
            field("ts_ns", plain(SchemaType::Int64, true)),
        ],
        ..Schema::default()
    }
}

/// An envelope's value: `op` is c, u, d, r or t; `ts_*` say when the connector saw it.
pub fn envelope(
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
    source: Value,
    op: &str,
) -> Value {
    let now = now_micros();
    structure(vec![
        before.map_or_else(null, structure),
        after.map_or_else(null, structure),
        source,
        null(),
        string(op),
        int(now / 1000),
        int(now),
        int(now.saturating_mul(1000)),
    ])
}

/// A heartbeat record (Debezium's `ServerNameKey` and `Heartbeat`) carrying `offset`.
pub fn heartbeat(
    partition: Option<Arc<str>>,
    offset: String,
    topic: &str,
    prefix: &str,
) -> SourceRecord {
    let key_schema = Schema {
        r#type: SchemaType::Struct as i32,
        name: Some("io.debezium.connector.common.ServerNameKey".into()),
        fields: vec![field("serverName", plain(SchemaType::String, false))],
        ..Schema::default()
    };
    let value_schema = Schema {
        r#type: SchemaType::Struct as i32,
        name: Some("io.debezium.connector.common.Heartbeat".into()),
        fields: vec![field("ts_ms", plain(SchemaType::Int64, false))],
        ..Schema::default()
    };
    SourceRecord {
        source_partition: partition,
        source_offset: Some(offset),
        topic: topic.to_string(),
        kafka_partition: None,
        key: structured(key_schema, structure(vec![string(prefix)])),
        value: structured(value_schema, structure(vec![int(now_micros() / 1000)])),
        headers: Vec::new(),
        timestamp_ms: None,
        transaction: Default::default(),
    }
}

/// Debezium's `source` block: the fields every connector's block starts with (its
/// `CommonSourceInfo`), then the connector's own `fields`.
pub fn source_schema(name: &str, fields: Vec<Field>) -> Schema {
    let common = vec![
        field("version", plain(SchemaType::String, false)),
        field("connector", plain(SchemaType::String, false)),
        field("name", plain(SchemaType::String, false)),
        field("ts_ms", plain(SchemaType::Int64, false)),
        field("snapshot", snapshot_schema()),
        field("db", plain(SchemaType::String, false)),
        field("sequence", plain(SchemaType::String, true)),
        field("ts_us", plain(SchemaType::Int64, true)),
        field("ts_ns", plain(SchemaType::Int64, true)),
    ];
    Schema {
        r#type: SchemaType::Struct as i32,
        optional: false,
        name: Some(name.into()),
        fields: [common, fields].concat(),
        ..Schema::default()
    }
}

/// The values of [`source_schema`]'s common fields.
pub struct SourceInfo<'a> {
    /// `mysql`, `postgresql`.
    pub connector: &'a str,
    /// The logical server name (`topic.prefix`).
    pub server: &'a str,
    /// Commit (or snapshot) time, epoch microseconds.
    pub ts_us: i64,
    pub snapshot: &'a str,
    pub db: &'a str,
    pub sequence: Option<&'a str>,
}

impl SourceInfo<'_> {
    /// The block's value: the common fields, then the connector's own `values`.
    pub fn value(&self, values: Vec<Value>) -> Value {
        let common = vec![
            string(env!("CARGO_PKG_VERSION")),
            string(self.connector),
            string(self.server),
            int(self.ts_us.div_euclid(1000)),
            string(self.snapshot),
            string(self.db),
            self.sequence.map_or_else(null, string),
            int(self.ts_us),
            int(self.ts_us.saturating_mul(1000)),
        ];
        structure([common, values].concat())
    }
}

/// A change event in Debezium's envelope on `topic`, keyed by `key`.
pub struct Change<'a> {
    pub topic: String,
    pub key: Data,
    pub envelope: Schema,
    pub before: Option<Vec<Value>>,
    pub after: Option<Vec<Value>>,
    pub source: Value,
    pub op: &'a str,
}

impl Change<'_> {
    /// The record, at `offset` of `partition`.
    pub fn record(self, partition: Arc<str>, offset: String) -> SourceRecord {
        SourceRecord {
            source_partition: Some(partition),
            source_offset: Some(offset),
            topic: self.topic,
            kafka_partition: None,
            key: self.key,
            value: structured(
                self.envelope,
                envelope(self.before, self.after, self.source, self.op),
            ),
            headers: Vec::new(),
            timestamp_ms: None,
            transaction: Default::default(),
        }
    }
}

/// Regular expressions from a list key, anchored at both ends as Debezium matches them.
pub fn patterns(config: &Config, key: &str) -> Result<Vec<Regex>, TaskError> {
    sluice_connector_jdbc::list(config.get_or(key, ""))
        .into_iter()
        .map(|p| {
            Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                TaskError::fatal(format!("{key}: invalid regular expression {p:?}: {e}"))
            })
        })
        .collect()
}

/// The keys of a connector's include/exclude lists: for its containers (PostgreSQL's
/// schemas, MySQL's databases) and for its tables (`container.table`).
#[derive(Clone, Copy)]
pub struct FilterKeys {
    pub container_include: &'static str,
    pub container_exclude: &'static str,
    pub table_include: &'static str,
    pub table_exclude: &'static str,
}

impl FilterKeys {
    pub fn all(&self) -> [&'static str; 4] {
        [
            self.container_include,
            self.container_exclude,
            self.table_include,
            self.table_exclude,
        ]
    }
}

/// Which tables are captured: Debezium's include/exclude lists, regular expressions matched
/// against the whole container name and `container.table`.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    tables_in: Vec<Regex>,
    tables_out: Vec<Regex>,
    containers_in: Vec<Regex>,
    containers_out: Vec<Regex>,
}

impl Filter {
    pub fn from_config(config: &Config, keys: FilterKeys) -> Result<Filter, TaskError> {
        Ok(Filter {
            tables_in: patterns(config, keys.table_include)?,
            tables_out: patterns(config, keys.table_exclude)?,
            containers_in: patterns(config, keys.container_include)?,
            containers_out: patterns(config, keys.container_exclude)?,
        })
    }

    pub fn keeps(&self, container: &str, table: &str) -> bool {
        let qualified = format!("{container}.{table}");
        let any = |set: &[Regex], text: &str| set.iter().any(|r| r.is_match(text));
        (self.containers_in.is_empty() || any(&self.containers_in, container))
            && !any(&self.containers_out, container)
            && (self.tables_in.is_empty() || any(&self.tables_in, &qualified))
            && !any(&self.tables_out, &qualified)
    }
}

/// `snapshot.mode`, the values both connectors share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Snapshot when no offset says a snapshot completed, then stream.
    Initial,
    /// Snapshot on every start, then stream.
    Always,
    /// Stream only.
    Never,
    /// Snapshot (when none completed) and stop.
    InitialOnly,
    /// Snapshot when none completed or the stored position is no longer on the server.
    WhenNeeded,
}

impl SnapshotMode {
    pub fn parse(text: &str) -> Option<SnapshotMode> {
        Some(match text.trim() {
            "initial" => SnapshotMode::Initial,
            "always" => SnapshotMode::Always,
            "never" | "no_data" | "schema_only" => SnapshotMode::Never,
            "initial_only" => SnapshotMode::InitialOnly,
            "when_needed" => SnapshotMode::WhenNeeded,
            _ => return None,
        })
    }
}

/// Whether a stored offset says a snapshot completed: it is a stream position, or the last
/// snapshot record's.
pub fn snapshot_completed(offset: Option<&serde_json::Value>) -> bool {
    offset.is_some_and(|o| {
        o.get("snapshot").and_then(|s| s.as_bool()) != Some(true)
            || o.get("last_snapshot_record").and_then(|s| s.as_bool()) == Some(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: FilterKeys = FilterKeys {
        container_include: "schema.include.list",
        container_exclude: "schema.exclude.list",
        table_include: "table.include.list",
        table_exclude: "table.exclude.list",
    };

    #[test]
    fn filter_matches_whole_names_as_debezium() {
        let mut config = Config::new();
        config.set("table.include.list", "public\\.orders.*, inventory\\.items");
        config.set("schema.exclude.list", "secret");
        let filter = Filter::from_config(&config, KEYS).unwrap();
        assert!(filter.keeps("public", "orders"));
        assert!(filter.keeps("public", "orders_2024"));
        assert!(filter.keeps("inventory", "items"));
        assert!(!filter.keeps("inventory", "items_old"));
        assert!(!filter.keeps("public", "xorders"));
        let mut bad = Config::new();
        bad.set("table.include.list", "(");
        assert!(Filter::from_config(&bad, KEYS)
            .unwrap_err()
            .message
            .contains("table.include.list"));
    }

    #[test]
    fn envelope_fields_are_in_debeziums_order() {
        let row = row_schema("srv.public.t", "Value", vec![], true);
        let envelope = envelope_schema("srv.public.t", row, plain(SchemaType::Struct, false));
        let names: Vec<&str> = envelope.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "before",
                "after",
                "source",
                "transaction",
                "op",
                "ts_ms",
                "ts_us",
                "ts_ns"
            ]
        );
        assert_eq!(envelope.name.as_deref(), Some("srv.public.t.Envelope"));
    }

    #[test]
    fn zoned_timestamps_are_iso_in_utc() {
        assert_eq!(zoned_timestamp(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(
            zoned_timestamp(1_709_207_101_500_000).unwrap(),
            "2024-02-29T11:45:01.5Z"
        );
        assert_eq!(zoned_timestamp(-1).unwrap(), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            zoned_timestamp(951_782_400_000_000).unwrap(),
            "2000-02-29T00:00:00Z"
        );
    }
}
