//! RabbitMQ connectors with the keys of Confluent's RabbitMQ connectors
//! (`io.confluent.connect.rabbitmq.RabbitMQSourceConnector`,
//! `io.confluent.connect.rabbitmq.sink.RabbitMQSinkConnector`), speaking AMQP 0-9-1 through
//! lapin: [`RabbitMqSource`] consumes queues with manual acknowledgements and acknowledges a
//! delivery only once Kafka has its record; [`RabbitMqSink`] publishes with publisher
//! confirms and reports a flush only once the broker confirmed every message.

mod sink;
mod source;

use std::time::Duration;

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, ShortString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{ConnectionProperties, ErrorKind};
use sluice_connector_sdk::proto::{ConfigDef, ConfigType, Data, Importance};
use sluice_connector_sdk::{data, Config, ConfigDefBuilder, Plugin, TaskError};

pub use sink::RabbitMqSink;
pub use source::RabbitMqSource;

const HOST: &str = "rabbitmq.host";
const PORT: &str = "rabbitmq.port";
const USERNAME: &str = "rabbitmq.username";
const PASSWORD: &str = "rabbitmq.password";
const VIRTUAL_HOST: &str = "rabbitmq.virtual.host";
const CONNECTION_TIMEOUT: &str = "rabbitmq.connection.timeout.ms";
const HEARTBEAT: &str = "rabbitmq.requested.heartbeat.seconds";
/// Set by `plan` on each task: its index.
const TASK_INDEX: &str = "rabbitmq.task";

/// The `rabbitmq` plugin: RabbitMqSource and RabbitMqSink.
pub fn plugin() -> Plugin {
    Plugin::new("rabbitmq", env!("CARGO_PKG_VERSION"))
        .source(RabbitMqSource)
        .sink(RabbitMqSink)
}

/// The connection keys both connectors share, with Confluent's defaults.
fn connection_defs() -> Vec<ConfigDef> {
    vec![
        ConfigDefBuilder::new(HOST, ConfigType::String)
            .default_value("localhost")
            .importance(Importance::High)
            .doc("The RabbitMQ host to connect to")
            .build(),
        ConfigDefBuilder::new(PORT, ConfigType::Int)
            .default_value("5672")
            .importance(Importance::Medium)
            .doc("The RabbitMQ port to connect to")
            .build(),
        ConfigDefBuilder::new(USERNAME, ConfigType::String)
            .default_value("guest")
            .importance(Importance::High)
            .doc("The username to authenticate with")
            .build(),
        ConfigDefBuilder::new(PASSWORD, ConfigType::Password)
            .default_value("guest")
            .importance(Importance::High)
            .doc("The password to authenticate with")
            .build(),
        ConfigDefBuilder::new(VIRTUAL_HOST, ConfigType::String)
            .default_value("/")
            .importance(Importance::High)
            .doc("The virtual host to use")
            .build(),
        ConfigDefBuilder::new(CONNECTION_TIMEOUT, ConfigType::Int)
            .default_value("60000")
            .importance(Importance::Low)
            .doc("Milliseconds to wait for the connection (TCP and the AMQP handshake)")
            .build(),
        ConfigDefBuilder::new(HEARTBEAT, ConfigType::Int)
            .default_value("60")
            .importance(Importance::Low)
            .doc("The heartbeat timeout asked of the broker, in seconds (0: none); a silent connection fails after it")
            .build(),
    ]
}

/// Where and how to connect, from the connection keys.
#[derive(Clone)]
struct Connection {
    host: String,
    port: u16,
    username: String,
    password: String,
    vhost: String,
    timeout: Duration,
    heartbeat: u16,
    /// Shown in the broker's connection list: `sluice-<connector>-<task>`.
    name: String,
}

impl Connection {
    fn from_config(config: &Config, connector: &str) -> Result<Connection, TaskError> {
        let host = config.get_or(HOST, "localhost").trim().to_string();
        if host.is_empty() {
            return Err(TaskError::fatal(format!("{HOST}: no host given")));
        }
        Ok(Connection {
            host,
            port: config.parse_or(PORT, 5672u16)?,
            username: config.get_or(USERNAME, "guest").to_string(),
            password: config.get_or(PASSWORD, "guest").to_string(),
            vhost: config.get_or(VIRTUAL_HOST, "/").to_string(),
            timeout: Duration::from_millis(config.parse_or(CONNECTION_TIMEOUT, 60_000u64)?.max(1)),
            heartbeat: config.parse_or(HEARTBEAT, 60u16)?,
            name: format!("sluice-{connector}-{}", config.get_or(TASK_INDEX, "0")),
        })
    }

    fn server(&self) -> String {
        format!("{}:{}{}", self.host, self.port, self.vhost_path())
    }

    fn vhost_path(&self) -> String {
        if self.vhost == "/" {
            String::new()
        } else {
            format!(" (virtual host {:?})", self.vhost)
        }
    }

    /// A connection the broker accepted, or the error saying why not: retriable unless the
    /// broker refused the credentials or the virtual host, which trying again cannot fix.
    async fn connect(&self) -> Result<lapin::Connection, TaskError> {
        let uri = AMQPUri {
            scheme: AMQPScheme::AMQP,
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: self.username.clone(),
                    password: self.password.clone(),
                },
                host: self.host.clone(),
                port: self.port,
            },
            vhost: self.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: Some(self.heartbeat),
                connection_timeout: Some(self.timeout.as_millis() as u64),
                ..AMQPQueryString::default()
            },
        };
        let properties =
            ConnectionProperties::default().with_connection_name(self.name.as_str().into());
        tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            lapin::Connection::connect_uri(uri, properties),
        )
        .await
        .map_err(|_| {
            TaskError::retriable(format!(
                "RabbitMQ at {}: no connection within {:?}",
                self.server(),
                self.timeout
            ))
        })?
        .map_err(|e| self.error("connect", &e))
    }

    /// `e`, met doing `what`, as a task error naming the broker. Refusals a retry cannot fix
    /// (credentials, a missing queue, exchange or virtual host, a refused argument) are
    /// fatal; a lost connection or a broker closing it is retriable.
    fn error(&self, what: &str, e: &lapin::Error) -> TaskError {
        let message = format!("RabbitMQ at {} ({what}): {e}", self.server());
        if is_permanent(e) {
            TaskError::fatal(message)
        } else {
            TaskError::retriable(message)
        }
    }
}

/// Whether the broker refused for a reason trying again cannot fix.
fn is_permanent(e: &lapin::Error) -> bool {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(
                AMQPSoftError::ACCESSREFUSED
                    | AMQPSoftError::NOTFOUND
                    | AMQPSoftError::PRECONDITIONFAILED
            ) | AMQPErrorKind::Hard(
                AMQPHardError::NOTALLOWED | AMQPHardError::INVALIDPATH | AMQPHardError::SYNTAXERROR
            )
        ),
        ErrorKind::AuthProviderError(_) | ErrorKind::InvalidProtocolVersion(_) => true,
        _ => false,
    }
}

/// `text` as an AMQP short string, or why it cannot be one (over 255 bytes).
fn short(text: &str, what: &str) -> Result<ShortString, String> {
    ShortString::try_new(text)
        .map_err(|_| format!("{what} is {} bytes; AMQP allows at most 255", text.len()))
}

/// An AMQP field value as record data: numbers as int64 or float64, strings as strings,
/// byte arrays as bytes, tables and arrays as their JSON text.
fn amqp_to_data(value: &AMQPValue) -> Data {
    match value {
        AMQPValue::Boolean(b) => data::boolean(*b),
        AMQPValue::ShortShortInt(v) => data::int64(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => data::int64(i64::from(*v)),
        AMQPValue::ShortInt(v) => data::int64(i64::from(*v)),
        AMQPValue::ShortUInt(v) => data::int64(i64::from(*v)),
        AMQPValue::LongInt(v) => data::int64(i64::from(*v)),
        AMQPValue::LongUInt(v) => data::int64(i64::from(*v)),
        AMQPValue::LongLongInt(v) => data::int64(*v),
        AMQPValue::Timestamp(v) => data::int64(*v as i64),
        AMQPValue::Float(v) => data::float64(f64::from(*v)),
        AMQPValue::Double(v) => data::float64(*v),
        AMQPValue::ShortString(s) => data::string(s.as_str()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => data::string(text),
            Err(_) => data::bytes(s.as_bytes()),
        },
        AMQPValue::ByteArray(b) => data::bytes(b.as_slice()),
        AMQPValue::Void => data::null(),
        other => data::string(amqp_json(other).to_string()),
    }
}

fn amqp_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AMQPValue::Boolean(b) => Value::from(*b),
        AMQPValue::ShortShortInt(v) => Value::from(*v),
        AMQPValue::ShortShortUInt(v) => Value::from(*v),
        AMQPValue::ShortInt(v) => Value::from(*v),
        AMQPValue::ShortUInt(v) => Value::from(*v),
        AMQPValue::LongInt(v) => Value::from(*v),
        AMQPValue::LongUInt(v) => Value::from(*v),
        AMQPValue::LongLongInt(v) => Value::from(*v),
        AMQPValue::Timestamp(v) => Value::from(*v),
        AMQPValue::Float(v) => Value::from(*v),
        AMQPValue::Double(v) => Value::from(*v),
        AMQPValue::DecimalValue(d) => {
            Value::from(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::LongString(s) => Value::from(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ByteArray(b) => Value::from(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_json).collect()),
        AMQPValue::FieldTable(t) => Value::Object(
            t.inner()
                .iter()
                .map(|(k, v)| (k.to_string(), amqp_json(v)))
                .collect(),
        ),
        AMQPValue::Void => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_task_names_its_connection_and_the_password_is_never_in_messages() {
        let config = Config::from([
            (HOST, "127.0.0.1"),
            (PORT, "1"),
            (TASK_INDEX, "2"),
            (PASSWORD, "never-shown"),
        ]);
        let c = Connection::from_config(&config, "r").unwrap();
        assert_eq!(c.name, "sluice-r-2");
        assert_eq!(c.server(), "127.0.0.1:1");
        let e = c.error(
            "connect",
            &lapin::Error::from(ErrorKind::AuthProviderError("refused".into())),
        );
        assert!(
            !e.retriable && !e.message.contains("never-shown"),
            "{}",
            e.message
        );
        let bad = Config::from([(PORT, "70000")]);
        assert!(Connection::from_config(&bad, "r").is_err());
    }

    #[test]
    fn long_names_are_an_error_not_a_panic() {
        assert!(short(&"x".repeat(255), "k").is_ok());
        let e = short(&"x".repeat(256), "the routing key").unwrap_err();
        assert!(e.contains("256 bytes"), "{e}");
    }

    #[test]
    fn field_values_become_record_data() {
        use lapin::types::{FieldArray, FieldTable, LongString};
        assert_eq!(amqp_to_data(&AMQPValue::LongInt(-3)), data::int64(-3));
        assert_eq!(
            amqp_to_data(&AMQPValue::LongString(LongString::from("t"))),
            data::string("t")
        );
        let mut table = FieldTable::default();
        table.insert(
            "a".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(true)])),
        );
        assert_eq!(
            amqp_to_data(&AMQPValue::FieldTable(table)),
            data::string(r#"{"a":[true]}"#)
        );
    }
}
