//! MQTT connectors with the keys of Confluent's MQTT connectors
//! (`io.confluent.connect.mqtt.MqttSourceConnector`, `io.confluent.connect.mqtt.MqttSinkConnector`),
//! speaking MQTT 5 through rumqttc: [`MqttSource`] subscribes with a persistent session and
//! acknowledges each QoS 1/2 message (PUBACK, PUBREC) only once Kafka has its record;
//! [`MqttSink`] publishes each record and reports a flush only once the broker confirmed every
//! publish (PUBACK, PUBCOMP).

mod sink;
mod source;

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use sluice_connector_sdk::proto::{ConfigDef, ConfigType, Importance};
use sluice_connector_sdk::{Config, ConfigDefBuilder, Plugin, TaskError};
use tokio::sync::mpsc;

pub use sink::MqttSink;
pub use source::MqttSource;

const SERVER_URI: &str = "mqtt.server.uri";
const USERNAME: &str = "mqtt.username";
const PASSWORD: &str = "mqtt.password";
const CLIENT_ID: &str = "mqtt.client.id";
const CONNECT_TIMEOUT: &str = "mqtt.connect.timeout.seconds";
const KEEPALIVE: &str = "mqtt.keepalive.interval.seconds";
const CLEAN_SESSION: &str = "mqtt.clean.session.enabled";
const SESSION_EXPIRY: &str = "mqtt.session.expiry.interval.seconds";
const QOS: &str = "mqtt.qos";
/// Set by `plan` on each task: its index.
const TASK_INDEX: &str = "mqtt.task";

/// The `mqtt` plugin: MqttSource and MqttSink.
pub fn plugin() -> Plugin {
    Plugin::new("mqtt", env!("CARGO_PKG_VERSION"))
        .source(MqttSource)
        .sink(MqttSink)
}

/// The connection keys both connectors share; `clean` is the default of
/// `mqtt.clean.session.enabled`, `qos` of `mqtt.qos`.
fn connection_defs(clean: bool, qos: u8) -> Vec<ConfigDef> {
    vec![
        ConfigDefBuilder::new(SERVER_URI, ConfigType::List)
            .importance(Importance::High)
            .doc("The MQTT broker, tcp://host:port (mqtt://, or host:port); of a list, the first")
            .build(),
        ConfigDefBuilder::new(USERNAME, ConfigType::String)
            .default_value("")
            .importance(Importance::High)
            .doc("Username to connect with, or blank to connect without a username")
            .build(),
        ConfigDefBuilder::new(PASSWORD, ConfigType::Password)
            .default_value("")
            .importance(Importance::High)
            .doc("Password to connect with, or blank to connect without a password")
            .build(),
        ConfigDefBuilder::new(CLIENT_ID, ConfigType::String)
            .default_value("")
            .importance(Importance::Medium)
            .doc("The client ID; each task adds -<task index>. Empty: sluice-<connector name>. A persistent session lives under it: keep it stable")
            .build(),
        ConfigDefBuilder::new(CONNECT_TIMEOUT, ConfigType::Int)
            .default_value("30")
            .importance(Importance::Low)
            .doc("Seconds to wait for the broker to accept the connection")
            .build(),
        ConfigDefBuilder::new(KEEPALIVE, ConfigType::Int)
            .default_value("60")
            .importance(Importance::Low)
            .doc("Seconds between keep-alive pings")
            .build(),
        ConfigDefBuilder::new(CLEAN_SESSION, ConfigType::Boolean)
            .default_value(if clean { "true" } else { "false" })
            .importance(Importance::Low)
            .doc("Whether the broker forgets the session (subscriptions, unacknowledged messages) when the client disconnects")
            .build(),
        ConfigDefBuilder::new(SESSION_EXPIRY, ConfigType::Long)
            .default_value("604800")
            .importance(Importance::Low)
            .doc("Seconds the broker keeps a persistent session of a disconnected client (MQTT 5 session expiry)")
            .build(),
        ConfigDefBuilder::new(QOS, ConfigType::Int)
            .default_value(&qos.to_string())
            .valid_values(&["0", "1", "2"])
            .importance(Importance::Medium)
            .doc("The quality of service: 0 at most once, 1 at least once, 2 exactly once between client and broker")
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
    client_id: String,
    connect_timeout: u64,
    keepalive: Duration,
    clean: bool,
    session_expiry: u32,
    qos: QoS,
}

impl Connection {
    /// `clean` and `qos`: the connector's defaults. The client ID gets `-<task index>`.
    fn from_config(
        config: &Config,
        connector: &str,
        clean: bool,
        qos: u8,
    ) -> Result<Connection, TaskError> {
        let uris = config.required(SERVER_URI)?;
        let uri = uris.split(',').map(str::trim).find(|u| !u.is_empty());
        let Some(uri) = uri else {
            return Err(TaskError::fatal(format!("{SERVER_URI}: no broker given")));
        };
        let (host, port) = parse_uri(uri)?;
        let qos = match config.parse_or(QOS, qos)? {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            other => return Err(TaskError::fatal(format!("{QOS}: {other} is not 0, 1 or 2"))),
        };
        let base = config.get_or(CLIENT_ID, "").trim();
        let base = if base.is_empty() {
            format!("sluice-{connector}")
        } else {
            base.to_string()
        };
        let client_id = format!("{base}-{}", config.get_or(TASK_INDEX, "0"));
        Ok(Connection {
            host,
            port,
            username: config.get_or(USERNAME, "").to_string(),
            password: config.get_or(PASSWORD, "").to_string(),
            client_id,
            connect_timeout: config.parse_or(CONNECT_TIMEOUT, 30u64)?.max(1),
            keepalive: Duration::from_secs(config.parse_or(KEEPALIVE, 60u64)?.max(5)),
            clean: config.parse_or(CLEAN_SESSION, clean)?,
            session_expiry: config
                .parse_or(SESSION_EXPIRY, 604_800u64)?
                .min(u64::from(u32::MAX)) as u32,
            qos,
        })
    }

    fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A client and its event loop, connected: the broker accepted the session (CONNACK),
    /// or the error says why not (retriable unless the broker refused the credentials or
    /// the client ID, which trying again cannot fix). `manual_acks`: the caller acknowledges
    /// incoming messages itself. Returns whether the broker had a session for the client.
    async fn connect(
        &self,
        manual_acks: bool,
        receive_maximum: u16,
    ) -> Result<(AsyncClient, EventLoop, bool), TaskError> {
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        options
            .set_keep_alive(self.keepalive)
            .set_clean_start(self.clean)
            .set_connection_timeout(self.connect_timeout)
            .set_manual_acks(manual_acks)
            .set_receive_maximum(Some(receive_maximum.max(1)))
            .set_max_packet_size(Some(256 * 1024 * 1024))
            .set_request_channel_capacity(1024);
        if !self.clean {
            options.set_session_expiry_interval(Some(self.session_expiry));
        }
        if !self.username.is_empty() || !self.password.is_empty() {
            options.set_credentials(&self.username, &self.password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let deadline = Duration::from_secs(self.connect_timeout + 1);
        let connected = tokio::time::timeout(deadline, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack.session_present),
                    Ok(_) => {}
                    Err(e) => return Err(self.error(e)),
                }
            }
        })
        .await
        .map_err(|_| {
            TaskError::retriable(format!(
                "MQTT broker at {}: no answer to CONNECT within {deadline:?}",
                self.server()
            ))
        })??;
        Ok((client, eventloop, connected))
    }

    /// `e` as a task error naming the broker.
    fn error(&self, e: ConnectionError) -> TaskError {
        let message = format!(
            "MQTT broker at {} (client {}): {e}",
            self.server(),
            self.client_id
        );
        match e {
            ConnectionError::ConnectionRefused(
                ConnectReturnCode::BadUserNamePassword
                | ConnectReturnCode::NotAuthorized
                | ConnectReturnCode::Banned
                | ConnectReturnCode::BadAuthenticationMethod
                | ConnectReturnCode::ClientIdentifierNotValid
                | ConnectReturnCode::BadClientId
                | ConnectReturnCode::UnsupportedProtocolVersion
                | ConnectReturnCode::RefusedProtocolVersion,
            ) => TaskError::fatal(message),
            _ => TaskError::retriable(message),
        }
    }
}

/// `tcp://host:port`, `mqtt://host:port` or `host:port` (port 1883 when left out). TLS
/// (`ssl://`, `mqtts://`) is refused, not ignored: a user asking for it must not get a plain
/// connection.
fn parse_uri(uri: &str) -> Result<(String, u16), TaskError> {
    let rest = match uri.split_once("://") {
        Some(("tcp" | "mqtt", rest)) => rest,
        Some((scheme, _)) => {
            return Err(TaskError::fatal(format!(
                "{SERVER_URI}: {uri:?}: scheme {scheme} is not supported (tcp:// or mqtt://; TLS is not supported yet)"
            )))
        }
        None => uri,
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>().map_err(|_| {
                TaskError::fatal(format!("{SERVER_URI}: {uri:?}: {port:?} is not a port"))
            })?,
        ),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(TaskError::fatal(format!(
            "{SERVER_URI}: {uri:?} names no host"
        )));
    }
    Ok((host.to_string(), port))
}

/// What the event loop reports to a task. Packets travel as the event loop hands them over:
/// boxing them would allocate once more per message.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Report {
    Packet(Packet),
    /// A publish was written (its packet ID; 0 for QoS 0), in the order publishes were asked.
    Sent(u16),
    /// The connection failed: the loop has ended.
    Failed(TaskError),
}

/// Drives `eventloop` until its connection fails or the receiver closes, sending what a task
/// needs to know. The loop never waits for the task: it must go on writing the task's
/// acknowledgements and publishes whatever the task is doing (a bounded channel here stalled
/// a source for good once a resumed session's backlog filled it). What the task has not
/// taken yet is held in memory: at most the broker's in-flight window of QoS 1/2 messages
/// (`mqtt.receive.maximum`) — Mosquitto was seen to send a whole queued backlog at once on
/// reconnection, though.
fn drive(connection: Connection, mut eventloop: EventLoop) -> mpsc::UnboundedReceiver<Report> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let report = match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => match packet {
                    Packet::Publish(_)
                    | Packet::PubAck(_)
                    | Packet::PubRec(_)
                    | Packet::PubComp(_)
                    | Packet::SubAck(_) => Report::Packet(packet),
                    Packet::Disconnect(d) => Report::Failed(TaskError::retriable(format!(
                        "MQTT broker at {} disconnected client {}: {:?}",
                        connection.server(),
                        connection.client_id,
                        d.reason_code
                    ))),
                    _ => continue,
                },
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => Report::Sent(pkid),
                Ok(Event::Outgoing(_)) => continue,
                Err(e) => Report::Failed(connection.error(e)),
            };
            let failed = matches!(report, Report::Failed(_));
            if tx.send(report).is_err() || failed {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_read_and_tls_refused() {
        assert_eq!(
            parse_uri("tcp://127.0.0.1:1884").unwrap(),
            ("127.0.0.1".into(), 1884)
        );
        assert_eq!(parse_uri("broker").unwrap(), ("broker".into(), 1883));
        assert_eq!(parse_uri("mqtt://h:1/").unwrap(), ("h".into(), 1));
        let e = parse_uri("ssl://h:8883").unwrap_err();
        assert!(e.message.contains("TLS"), "{}", e.message);
        let e = parse_uri("tcp://h:port").unwrap_err();
        assert!(e.message.contains("not a port"), "{}", e.message);
    }

    #[test]
    fn each_task_has_its_own_client_id_and_the_password_is_never_in_messages() {
        let config = Config::from([
            (SERVER_URI, "tcp://127.0.0.1:1"),
            (TASK_INDEX, "2"),
            (PASSWORD, "never-shown"),
        ]);
        let c = Connection::from_config(&config, "m", false, 1).unwrap();
        assert_eq!(c.client_id, "sluice-m-2");
        assert_eq!(c.qos, QoS::AtLeastOnce);
        assert!(!c.clean);
        let e = c.error(ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized,
        ));
        assert!(!e.retriable && !e.message.contains("never-shown"));
        let bad = Config::from([(SERVER_URI, "tcp://h:1"), (QOS, "3")]);
        assert!(Connection::from_config(&bad, "m", false, 1).is_err());
    }
}
