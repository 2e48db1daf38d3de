//! Redis connectors with the keys of the Redis Kafka Connector
//! (`com.redis.kafka.connect.RedisStreamSourceConnector`, `com.redis.kafka.connect.RedisSinkConnector`):
//! [`RedisStreamSource`] reads a stream through a consumer group and acknowledges each entry
//! (XACK) only once Kafka has its record; [`RedisSink`] writes records as strings, hashes,
//! stream entries, list or set members, confirmed by Redis's replies before a flush succeeds.

mod sink;
mod source;

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo as _};
use sluice_connector_sdk::proto::{ConfigDef, ConfigType, Importance};
use sluice_connector_sdk::{Config, ConfigDefBuilder, Plugin, TaskError};

pub use sink::RedisSink;
pub use source::RedisStreamSource;

const URI: &str = "redis.uri";
const HOST: &str = "redis.host";
const PORT: &str = "redis.port";
const USERNAME: &str = "redis.username";
const PASSWORD: &str = "redis.password";
const TIMEOUT: &str = "redis.timeout";
const TLS: &str = "redis.tls";

/// The `redis` plugin: RedisStreamSource and RedisSink.
pub fn plugin() -> Plugin {
    Plugin::new("redis", env!("CARGO_PKG_VERSION"))
        .source(RedisStreamSource)
        .sink(RedisSink)
}

/// The connection keys both connectors share.
fn connection_defs() -> Vec<ConfigDef> {
    vec![
        ConfigDefBuilder::new(URI, ConfigType::String)
            .default_value("")
            .importance(Importance::Medium)
            .doc("URI of the Redis database, e.g. redis://127.0.0.1:6379/0; when empty, redis.host and redis.port")
            .build(),
        ConfigDefBuilder::new(HOST, ConfigType::String)
            .default_value("localhost")
            .importance(Importance::High)
            .doc("The Redis host to connect to")
            .build(),
        ConfigDefBuilder::new(PORT, ConfigType::Int)
            .default_value("6379")
            .importance(Importance::High)
            .doc("The Redis port to connect to")
            .build(),
        ConfigDefBuilder::new(USERNAME, ConfigType::String)
            .default_value("")
            .importance(Importance::Medium)
            .doc("Username to connect with (Redis ACLs)")
            .build(),
        ConfigDefBuilder::new(PASSWORD, ConfigType::Password)
            .default_value("")
            .importance(Importance::Medium)
            .doc("Password to connect with")
            .build(),
        ConfigDefBuilder::new(TLS, ConfigType::Boolean)
            .default_value("false")
            .importance(Importance::Medium)
            .doc("TLS to Redis: not supported yet; true is refused")
            .build(),
        ConfigDefBuilder::new(TIMEOUT, ConfigType::Long)
            .default_value("60")
            .importance(Importance::Medium)
            .doc("Seconds to wait for a connection or a command's reply")
            .build(),
    ]
}

/// Where and how to connect, from the connection keys.
#[derive(Clone)]
struct Connection {
    client: redis::Client,
    timeout: Duration,
    /// The server, for messages (never the password).
    server: String,
}

impl Connection {
    fn from_config(config: &Config) -> Result<Connection, TaskError> {
        // Refused, not ignored: a user asking for TLS must not get a plain connection.
        if config
            .get_or(TLS, "false")
            .trim()
            .eq_ignore_ascii_case("true")
        {
            return Err(TaskError::fatal(format!(
                "{TLS}=true: TLS connections to Redis are not supported yet"
            )));
        }
        let uri = config.get_or(URI, "").trim();
        let uri = if uri.is_empty() {
            let port: u16 = config.parse_or(PORT, 6379)?;
            format!("redis://{}:{port}", config.get_or(HOST, "localhost").trim())
        } else {
            uri.to_string()
        };
        let info = uri
            .as_str()
            .into_connection_info()
            .map_err(|e| TaskError::fatal(format!("{URI}: not a Redis URI ({e})")))?;
        let server = info.addr().to_string();
        let mut settings = info.redis_settings().clone();
        let username = config.get_or(USERNAME, "");
        if !username.is_empty() {
            settings = settings.set_username(username);
        }
        let password = config.get_or(PASSWORD, "");
        if !password.is_empty() {
            settings = settings.set_password(password);
        }
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| TaskError::fatal(format!("Redis at {server}: {e}")))?;
        let timeout = Duration::from_secs(config.parse_or(TIMEOUT, 60u64)?.max(1));
        Ok(Connection {
            client,
            timeout,
            server,
        })
    }

    /// A connection whose commands time out after `redis.timeout`. Failing to connect is
    /// retriable: the worker restarts the task with backoff.
    async fn connect(&self) -> Result<MultiplexedConnection, TaskError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error(e))
    }

    /// `e` as a task error naming the server: retriable unless Redis refused the command
    /// itself (a wrong type, a syntax error), which trying again cannot fix.
    fn error(&self, e: redis::RedisError) -> TaskError {
        let message = format!("Redis at {}: {e}", self.server);
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            TaskError::retriable(message)
        } else {
            TaskError::fatal(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_refused_and_a_bad_uri_is_named() {
        let tls = Config::from([(TLS, "true")]);
        let e = Connection::from_config(&tls).err().unwrap();
        assert!(e.message.contains("redis.tls"), "{}", e.message);
        let bad = Config::from([(URI, "http://nowhere")]);
        let e = Connection::from_config(&bad).err().unwrap();
        assert!(e.message.contains("redis.uri"), "{}", e.message);
        let secret = Config::from([(URI, "redis://127.0.0.1:1"), (PASSWORD, "never-shown")]);
        let connection = Connection::from_config(&secret).unwrap();
        assert_eq!(connection.server, "127.0.0.1:1");
    }
}
