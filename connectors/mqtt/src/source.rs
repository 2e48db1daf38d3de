//! `MqttSource`: Confluent's `MqttSourceConnector`. Each task subscribes to its share of
//! `mqtt.topics` (wildcards allowed) as client `<mqtt.client.id>-<task>` with a persistent
//! session (`mqtt.clean.session.enabled=false`, the default here) and manual acknowledgements:
//! a QoS 1 or 2 message is acknowledged (PUBACK, PUBREC) only once Kafka has its record and
//! the worker committed it, in the order the messages came. A task that dies (SIGKILL
//! included) or loses its connection leaves its messages unacknowledged; the broker keeps them
//! in the session and delivers them again when the task comes back. Nothing is lost; what was
//! not acknowledged may arrive twice (`mqtt.duplicate` says the broker sent it before).
//! QoS 0 messages are never acknowledged: at most once.
//!
//! Each message becomes a record as Confluent's connector writes it: key the MQTT topic
//! (a string), value the payload (bytes), headers `mqtt.message.id`, `mqtt.qos`,
//! `mqtt.retained` and `mqtt.duplicate`, and each MQTT 5 user property as a header of its
//! name (`mqtt.content.type` for the content type).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::AsyncClient;
use sluice_connector_sdk::proto::{
    ConfigDef, ConfigType, ExactlyOnceSupport, FieldError, Importance,
};
use sluice_connector_sdk::{
    data, CommitSignal, Config, ConfigDefBuilder, Connector, SourceConnector, SourceRecord,
    SourceTask, SourceTaskContext, TaskError,
};
use tokio::sync::mpsc;

use crate::{connection_defs, drive, Connection, Report, TASK_INDEX};

const TOPICS: &str = "mqtt.topics";
const KAFKA_TOPIC: &str = "kafka.topic";
const BATCH_SIZE: &str = "records.buffer.max.batch.size";
const RECEIVE_MAXIMUM: &str = "mqtt.receive.maximum";
/// Set by `plan`: the task's topic filters.
const TASK_TOPICS: &str = "mqtt.task.topics";

/// In `kafka.topic`: the MQTT topic, `/` turned into `.` and any character Kafka does not take
/// in a topic name into `_`.
const TOKEN_MQTT_TOPIC: &str = "${mqtt.topic}";

pub struct MqttSource;

impl Connector for MqttSource {
    fn class_name(&self) -> &'static str {
        "MqttSource"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "io.confluent.connect.mqtt.MqttSourceConnector",
            "MqttSourceConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Subscribes to MQTT topics with a persistent session; messages are acknowledged once Kafka has them"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let mut defs = connection_defs(false, 1);
        defs.extend([
            ConfigDefBuilder::new(TOPICS, ConfigType::List)
                .importance(Importance::High)
                .doc("The MQTT topic filters to subscribe to (+ and # wildcards); split across tasks")
                .build(),
            ConfigDefBuilder::new(KAFKA_TOPIC, ConfigType::String)
                .importance(Importance::High)
                .doc("The Kafka topic to write to; ${mqtt.topic} stands for the message's MQTT topic with / as . (other characters Kafka refuses as _)")
                .build(),
            ConfigDefBuilder::new(BATCH_SIZE, ConfigType::Int)
                .default_value("4096")
                .importance(Importance::Low)
                .doc("Messages handed to the worker at most per poll")
                .build(),
            ConfigDefBuilder::new(RECEIVE_MAXIMUM, ConfigType::Int)
                .default_value("1000")
                .importance(Importance::Low)
                .doc("QoS 1 and 2 messages the broker may have sent and not had acknowledged (MQTT 5 receive maximum; the broker may allow fewer)")
                .build(),
        ]);
        defs
    }

    fn validate(&self, config: &Config) -> Vec<FieldError> {
        let mut errors = config.validate_against(&self.config_defs());
        if let Err(e) = Connection::from_config(config, "validate", false, 1) {
            errors.push(FieldError {
                name: crate::SERVER_URI.into(),
                message: e.message,
            });
        }
        if config.get(TOPICS).is_some_and(|t| filters(t).is_empty()) {
            errors.push(FieldError {
                name: TOPICS.into(),
                message: "must name at least one topic filter".into(),
            });
        }
        errors
    }

    /// The topic filters dealt round-robin to at most `tasks.max` tasks, as Confluent's
    /// connector does. Keep the task count and the filters stable: each task's session is
    /// under its own client ID.
    fn plan(&self, config: &Config, max_tasks: usize) -> Result<Vec<Config>, TaskError> {
        let all = filters(config.required(TOPICS)?);
        if all.is_empty() {
            return Err(TaskError::fatal(format!("{TOPICS}: no topic filter given")));
        }
        let tasks = max_tasks.clamp(1, all.len());
        Ok((0..tasks)
            .map(|i| {
                let mine: Vec<&str> = all
                    .iter()
                    .skip(i)
                    .step_by(tasks)
                    .map(String::as_str)
                    .collect();
                let mut task = config.clone();
                task.set(TASK_INDEX, i.to_string());
                task.set(TASK_TOPICS, mine.join(","));
                task
            })
            .collect())
    }
}

impl SourceConnector for MqttSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(MqttSourceTask::default())
    }

    /// Messages not acknowledged are delivered again: at least once.
    fn exactly_once_support(&self) -> ExactlyOnceSupport {
        ExactlyOnceSupport::Unsupported
    }
}

fn filters(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Default)]
struct MqttSourceTask {
    connection: Option<Connection>,
    client: Option<AsyncClient>,
    reports: Option<mpsc::UnboundedReceiver<Report>>,
    kafka_topic: String,
    batch: usize,
    /// `{"mqtt.client.id": …}`: the task's source partition.
    partition: Option<Arc<str>>,
    /// Numbers the messages this task delivered; a record's offset is its number.
    next_seq: u64,
    /// Messages delivered and not yet acknowledged (QoS 1 and 2), in the order they came:
    /// their number, QoS and packet ID.
    unacked: VecDeque<(u64, QoS, u16)>,
    /// Acknowledgements due (the worker committed their records), not yet handed to the
    /// client, in order.
    acks: VecDeque<(QoS, u16)>,
    /// Reports that came before the SUBACK (a resumed session's messages), polled first.
    early: VecDeque<Report>,
    commits: CommitSignal,
}

#[async_trait]
impl SourceTask for MqttSourceTask {
    async fn start(&mut self, ctx: SourceTaskContext) -> Result<(), TaskError> {
        let config = &ctx.config;
        let connection = Connection::from_config(config, &ctx.connector_name, false, 1)?;
        self.commits = ctx.commits.clone();
        let topics = filters(
            config
                .get(TASK_TOPICS)
                .unwrap_or_else(|| config.get_or(TOPICS, "")),
        );
        if topics.is_empty() {
            return Err(TaskError::fatal(format!("{TOPICS}: no topic filter given")));
        }
        self.kafka_topic = config.required(KAFKA_TOPIC)?.to_string();
        self.batch = config.parse_or(BATCH_SIZE, 4096usize)?.max(1);
        let receive_maximum: u16 = config.parse_or(RECEIVE_MAXIMUM, 1000u16)?;
        self.partition = Some(
            serde_json::json!({ "mqtt.client.id": connection.client_id })
                .to_string()
                .into(),
        );
        let (client, eventloop, resumed) = connection.connect(true, receive_maximum).await?;
        let mut reports = drive(connection.clone(), eventloop);
        client
            .subscribe_many(
                topics
                    .iter()
                    .map(|t| Filter::new(t.as_str(), connection.qos)),
            )
            .await
            .map_err(|e| TaskError::retriable(format!("MQTT subscribe: {e}")))?;
        // Messages the broker resends from the session may come before the SUBACK: keep them.
        let mut early = Vec::new();
        loop {
            match reports.recv().await {
                Some(Report::Packet(Packet::SubAck(ack))) => {
                    for (topic, code) in topics.iter().zip(&ack.return_codes) {
                        if !matches!(code, SubscribeReasonCode::Success(_)) {
                            return Err(TaskError::fatal(format!(
                                "MQTT broker at {} refused the subscription to {topic:?}: {code:?}",
                                connection.server()
                            )));
                        }
                    }
                    break;
                }
                Some(Report::Failed(e)) => return Err(e),
                Some(other) => early.push(other),
                None => return Err(TaskError::retriable("the MQTT event loop ended")),
            }
        }
        tracing::info!(
            client = %connection.client_id,
            topics = ?topics,
            session_resumed = resumed,
            "subscribed"
        );
        // Taken before anything from the channel, so order is kept.
        self.early = early.into();
        self.reports = Some(reports);
        self.client = Some(client);
        self.connection = Some(connection);
        Ok(())
    }

    async fn poll(&mut self, max_records: usize) -> Result<Vec<SourceRecord>, TaskError> {
        let max = max_records.min(self.batch).max(1);
        self.send_acks();
        let Some(reports) = self.reports.as_mut() else {
            return Err(TaskError::fatal("the task was not started"));
        };
        // Wait a little for the first message, or until there is something to commit: with
        // the receive window full, the broker sends nothing more before the acknowledgements
        // the commit gives. Then take what is there.
        let first = match self.early.pop_front() {
            Some(report) => report,
            None => tokio::select! {
                report = tokio::time::timeout(Duration::from_millis(500), reports.recv()) => match report {
                    Err(_) => return Ok(Vec::new()),
                    Ok(None) => return Err(TaskError::retriable("the MQTT event loop ended")),
                    Ok(Some(report)) => report,
                },
                () = self.commits.pending() => return Ok(Vec::new()),
            },
        };
        let mut publishes = Vec::new();
        let mut next = Some(first);
        while let Some(report) = next.take() {
            match report {
                Report::Packet(Packet::Publish(publish)) => publishes.push(publish),
                Report::Failed(e) => return Err(e),
                _ => {}
            }
            if publishes.len() >= max {
                break;
            }
            next = self.early.pop_front().or_else(|| reports.try_recv().ok());
        }
        Ok(publishes.into_iter().map(|p| self.record(p)).collect())
    }

    /// Acknowledges every message up to the committed one, in the order they came.
    async fn commit(&mut self, positions: &[(Arc<str>, String)]) -> Result<(), TaskError> {
        let Some(partition) = &self.partition else {
            return Ok(());
        };
        let Some((_, offset)) = positions.iter().find(|(p, _)| p == partition) else {
            return Ok(());
        };
        let committed = serde_json::from_str::<serde_json::Value>(offset)
            .ok()
            .and_then(|o| o.get("seq")?.as_u64())
            .ok_or_else(|| TaskError::fatal(format!("committed offset {offset} has no seq")))?;
        while let Some(&(seq, qos, pkid)) = self.unacked.front() {
            if seq > committed {
                break;
            }
            self.unacked.pop_front();
            self.acks.push_back((qos, pkid));
        }
        self.send_acks();
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), TaskError> {
        if let Some(client) = self.client.take() {
            let _ = client.disconnect().await;
        }
        Ok(())
    }
}

impl MqttSourceTask {
    /// Hands the due acknowledgements to the client without waiting: while its queue is full
    /// the rest stay due until the next poll or commit. Waiting could deadlock: the event
    /// loop that empties the queue may itself be waiting for this task to take a message.
    fn send_acks(&mut self) {
        let Some(client) = &self.client else {
            return;
        };
        while let Some(&(qos, pkid)) = self.acks.front() {
            let mut publish = Publish::new("", qos, Vec::new(), None);
            publish.pkid = pkid;
            match client.try_ack(&publish) {
                Ok(()) => {
                    self.acks.pop_front();
                }
                // Full, or the loop ended with the connection: then the broker delivers the
                // message again to the next session, and the failure shows at the next poll.
                Err(_) => return,
            }
        }
    }

    fn record(&mut self, publish: Publish) -> SourceRecord {
        let seq = self.next_seq;
        self.next_seq += 1;
        if publish.qos != QoS::AtMostOnce {
            self.unacked.push_back((seq, publish.qos, publish.pkid));
        }
        let mqtt_topic = String::from_utf8_lossy(&publish.topic).into_owned();
        let mut headers = vec![
            data::header("mqtt.message.id", data::int32(i32::from(publish.pkid))),
            data::header("mqtt.qos", data::int32(publish.qos as i32)),
            data::header("mqtt.retained", data::boolean(publish.retain)),
            data::header("mqtt.duplicate", data::boolean(publish.dup)),
        ];
        if let Some(properties) = publish.properties {
            if let Some(content_type) = properties.content_type {
                headers.push(data::header(
                    "mqtt.content.type",
                    data::string(content_type),
                ));
            }
            for (name, value) in properties.user_properties {
                headers.push(data::header(name, data::string(value)));
            }
        }
        SourceRecord {
            source_partition: self.partition.clone(),
            source_offset: Some(format!("{{\"seq\":{seq}}}")),
            topic: kafka_topic(&self.kafka_topic, &mqtt_topic),
            key: data::string(mqtt_topic),
            value: data::bytes(publish.payload.to_vec()),
            headers,
            ..SourceRecord::default()
        }
    }
}

/// `template` with `${mqtt.topic}` replaced by `mqtt_topic` as a Kafka topic name.
fn kafka_topic(template: &str, mqtt_topic: &str) -> String {
    data::topic_from_template(template, TOKEN_MQTT_TOPIC, &mqtt_topic.replace('/', "."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_topics_become_kafka_topic_names() {
        assert_eq!(kafka_topic("fixed", "a/b"), "fixed");
        assert_eq!(
            kafka_topic("mqtt.${mqtt.topic}", "sensors/room 1/t°"),
            "mqtt.sensors.room_1.t_"
        );
    }

    #[test]
    fn plan_deals_the_filters_round_robin() {
        let config = Config::from([(TOPICS, "a/#, b/+ ,c"), (KAFKA_TOPIC, "k")]);
        let tasks = MqttSource.plan(&config, 2).unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].get(TASK_TOPICS), Some("a/#,c"));
        assert_eq!(tasks[1].get(TASK_TOPICS), Some("b/+"));
        assert_eq!(tasks[1].get(TASK_INDEX), Some("1"));
        assert_eq!(MqttSource.plan(&config, 9).unwrap().len(), 3);
    }
}
