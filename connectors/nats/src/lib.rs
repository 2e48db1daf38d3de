//! NATS connectors on async-nats: [`NatsSource`] reads a JetStream stream through a durable
//! pull consumer and acknowledges each message only once Kafka has its record (or, without a
//! stream, subscribes to core NATS subjects: at most once); [`NatsSink`] publishes each record
//! and, to JetStream, reports a flush only once every publish was acknowledged by the stream.
//! No Kafka Connect connector for NATS has become the common one (Apache Camel's kamelets take
//! `servers` and `topic` only); the keys here are `nats.*`, named after the NATS concepts.

mod sink;
mod source;

use std::time::Duration;

use sluice_connector_sdk::proto::{ConfigDef, ConfigType, Importance};
use sluice_connector_sdk::{Config, ConfigDefBuilder, Plugin, TaskError};

pub use sink::NatsSink;
pub use source::NatsSource;

const SERVERS: &str = "nats.servers";
const USERNAME: &str = "nats.username";
const PASSWORD: &str = "nats.password";
const TOKEN: &str = "nats.token";
const CONNECTION_TIMEOUT: &str = "nats.connection.timeout.ms";
/// Set by `plan` on each task: its index.
const TASK_INDEX: &str = "nats.task";

/// The `nats` plugin: NatsSource and NatsSink.
pub fn plugin() -> Plugin {
    Plugin::new("nats", env!("CARGO_PKG_VERSION"))
        .source(NatsSource)
        .sink(NatsSink)
}

fn connection_defs() -> Vec<ConfigDef> {
    vec![
        ConfigDefBuilder::new(SERVERS, ConfigType::List)
            .default_value("nats://localhost:4222")
            .importance(Importance::High)
            .doc("The NATS servers, nats://host:port (or host:port), comma-separated")
            .build(),
        ConfigDefBuilder::new(USERNAME, ConfigType::String)
            .default_value("")
            .importance(Importance::High)
            .doc("Username to connect with, or blank")
            .build(),
        ConfigDefBuilder::new(PASSWORD, ConfigType::Password)
            .default_value("")
            .importance(Importance::High)
            .doc("Password to connect with, or blank")
            .build(),
        ConfigDefBuilder::new(TOKEN, ConfigType::Password)
            .default_value("")
            .importance(Importance::High)
            .doc("Token to connect with, or blank")
            .build(),
        ConfigDefBuilder::new(CONNECTION_TIMEOUT, ConfigType::Int)
            .default_value("10000")
            .importance(Importance::Low)
            .doc("Milliseconds to wait for a server to accept the connection")
            .build(),
    ]
}

/// Where and how to connect.
#[derive(Clone)]
struct Connection {
    servers: Vec<String>,
    username: String,
    password: String,
    token: String,
    timeout: Duration,
    /// The client's name on the server: `sluice-<connector>-<task>`.
    name: String,
}

impl Connection {
    fn from_config(config: &Config, connector: &str) -> Result<Connection, TaskError> {
        let servers: Vec<String> = config
            .get_or(SERVERS, "nats://localhost:4222")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if servers.is_empty() {
            return Err(TaskError::fatal(format!("{SERVERS}: no server given")));
        }
        for server in &servers {
            if let Some((scheme, _)) = server.split_once("://") {
                if scheme != "nats" {
                    return Err(TaskError::fatal(format!(
                        "{SERVERS}: {server:?}: scheme {scheme} is not supported (nats://; TLS is not supported yet)"
                    )));
                }
            }
        }
        Ok(Connection {
            servers,
            username: config.get_or(USERNAME, "").to_string(),
            password: config.get_or(PASSWORD, "").to_string(),
            token: config.get_or(TOKEN, "").to_string(),
            timeout: Duration::from_millis(config.parse_or(CONNECTION_TIMEOUT, 10_000u64)?.max(1)),
            name: format!("sluice-{connector}-{}", config.get_or(TASK_INDEX, "0")),
        })
    }

    fn server(&self) -> String {
        self.servers.join(",")
    }

    /// A connected client. It does not reconnect by itself: a task whose connection broke
    /// fails, and the worker restarts it (a source's unacknowledged messages are delivered
    /// again to the restarted task's consumer).
    async fn connect(&self) -> Result<async_nats::Client, TaskError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(&self.name)
            .connection_timeout(self.timeout)
            .max_reconnects(1);
        if !self.token.is_empty() {
            options = options.token(self.token.clone());
        } else if !self.username.is_empty() {
            options = options.user_and_password(self.username.clone(), self.password.clone());
        }
        let servers: Vec<async_nats::ServerAddr> = self
            .servers
            .iter()
            .map(|s| {
                s.parse().map_err(|e| {
                    TaskError::fatal(format!("{SERVERS}: {s:?} is not a server address: {e}"))
                })
            })
            .collect::<Result<_, _>>()?;
        tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            options.connect(servers),
        )
        .await
        .map_err(|_| {
            TaskError::retriable(format!(
                "NATS at {}: no connection within {:?}",
                self.server(),
                self.timeout
            ))
        })?
        .map_err(|e| {
            let message = format!("NATS at {}: {e}", self.server());
            match e.kind() {
                async_nats::ConnectErrorKind::AuthorizationViolation
                | async_nats::ConnectErrorKind::Authentication => TaskError::fatal(message),
                _ => TaskError::retriable(message),
            }
        })
    }
}

/// Whether `subject` can be published to: tokens of printable characters without spaces,
/// none empty, no wildcards.
fn publishable(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && token.chars().all(|c| !c.is_whitespace() && !c.is_control())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_read_and_tls_refused() {
        let c = Connection::from_config(
            &Config::from([(SERVERS, "nats://a:1, b:2"), (TASK_INDEX, "3")]),
            "n",
        )
        .unwrap();
        assert_eq!(c.servers, vec!["nats://a:1", "b:2"]);
        assert_eq!(c.name, "sluice-n-3");
        let e = Connection::from_config(&Config::from([(SERVERS, "tls://a:1")]), "n")
            .err()
            .unwrap();
        assert!(e.message.contains("TLS"), "{}", e.message);
    }

    #[test]
    fn subjects_to_publish_to_have_no_wildcards_or_spaces() {
        assert!(publishable("orders.eu.1"));
        assert!(!publishable("orders.*"));
        assert!(!publishable("orders..x"));
        assert!(!publishable("a b"));
        assert!(!publishable(""));
    }
}
