//! `MqttSink`: Confluent's `MqttSinkConnector`. Each record is published to the MQTT topic
//! `mqtt.topic` names (`${topic}`: the record's Kafka topic, the default as in Confluent's
//! connector; `${key}`: its key as text) with `mqtt.qos` and `mqtt.retained.enabled`, in
//! order over one connection. The payload is the value's bytes (ByteArrayConverter or
//! StringConverter; a number or boolean as its text; a null value an empty payload, which
//! clears a retained message); each Kafka header becomes an MQTT 5 user property.
//!
//! A put returns only once the broker confirmed every publish (PUBACK at QoS 1, PUBCOMP at
//! QoS 2; at QoS 0 once written to the socket), so a flush only reports what the broker has.
//! A publish the broker refuses for good (not authorized, an invalid topic or payload) or a
//! record that cannot be a payload (a struct: use a converter that writes bytes) is reported
//! for `errors.tolerance` and the dead-letter queue; a lost connection, a broker over its
//! quota or not answering fails the put as retriable: the worker restarts the task with
//! backoff, and it publishes again from the last committed offset (at least once).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PubRecReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::AsyncClient;
use sluice_connector_sdk::proto::{ConfigDef, ConfigType, FieldError, Importance, SinkRecord};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, ErrantRecordReporter, SinkBatch, SinkConnector,
    SinkRecordRef, SinkTask, SinkTaskContext, TaskError,
};
use tokio::sync::mpsc;

use crate::{connection_defs, drive, Connection, Report};

const TOPIC: &str = "mqtt.topic";
const RETAINED: &str = "mqtt.retained.enabled";
/// Seconds a put waits for the broker's confirmations before it gives the connection up.
const CONFIRM_TIMEOUT: &str = "mqtt.confirm.timeout.seconds";

const TOKEN_TOPIC: &str = "${topic}";
const TOKEN_KEY: &str = "${key}";

pub struct MqttSink;

impl Connector for MqttSink {
    fn class_name(&self) -> &'static str {
        "MqttSink"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "io.confluent.connect.mqtt.MqttSinkConnector",
            "MqttSinkConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Publishes records to MQTT topics; a flush succeeds once the broker confirmed every publish"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let mut defs = connection_defs(true, 1);
        defs.extend([
            ConfigDefBuilder::new(TOPIC, ConfigType::String)
                .default_value(TOKEN_TOPIC)
                .importance(Importance::High)
                .doc("The MQTT topic to publish to; ${topic} stands for the record's Kafka topic, ${key} for its key as text")
                .build(),
            ConfigDefBuilder::new(RETAINED, ConfigType::Boolean)
                .default_value("false")
                .importance(Importance::Medium)
                .doc("Whether the broker retains the last message of each topic for new subscribers")
                .build(),
            ConfigDefBuilder::new(CONFIRM_TIMEOUT, ConfigType::Int)
                .default_value("30")
                .importance(Importance::Low)
                .doc("Seconds to wait for the broker to confirm a batch's publishes before the put fails (retriable)")
                .build(),
        ]);
        defs
    }

    fn validate(&self, config: &Config) -> Vec<FieldError> {
        let mut errors = config.validate_against(&self.config_defs());
        if let Err(e) = Connection::from_config(config, "validate", true, 1) {
            errors.push(FieldError {
                name: crate::SERVER_URI.into(),
                message: e.message,
            });
        }
        let topic = config.get_or(TOPIC, TOKEN_TOPIC);
        if topic.is_empty() || topic.contains(['+', '#']) {
            errors.push(FieldError {
                name: TOPIC.into(),
                message: format!(
                    "{topic:?}: a topic to publish to is not empty and has no wildcards"
                ),
            });
        }
        errors
    }
}

impl SinkConnector for MqttSink {
    fn task(&self) -> Box<dyn SinkTask> {
        Box::new(MqttSinkTask::default())
    }
}

/// A connected client and what its event loop reports.
struct Live {
    client: AsyncClient,
    reports: mpsc::UnboundedReceiver<Report>,
}

#[derive(Default)]
struct MqttSinkTask {
    connection: Option<Connection>,
    live: Option<Live>,
    topic: String,
    retain: bool,
    confirm_timeout: Duration,
    errors: Option<ErrantRecordReporter>,
}

#[async_trait]
impl SinkTask for MqttSinkTask {
    async fn start(&mut self, ctx: SinkTaskContext) -> Result<(), TaskError> {
        let config = &ctx.config;
        let connection = Connection::from_config(config, &ctx.connector_name, true, 1)?;
        self.topic = config.get_or(TOPIC, TOKEN_TOPIC).to_string();
        self.retain = config.parse_or(RETAINED, false)?;
        self.confirm_timeout = Duration::from_secs(config.parse_or(CONFIRM_TIMEOUT, 30u64)?.max(1));
        self.errors = Some(ctx.errors.clone());
        self.connection = Some(connection);
        self.live = Some(self.connect().await?);
        Ok(())
    }

    async fn put(&mut self, records: Vec<SinkRecord>) -> Result<(), TaskError> {
        self.put_batch(SinkBatch::from_records(0, &records)).await
    }

    async fn put_batch(&mut self, batch: SinkBatch) -> Result<(), TaskError> {
        let records = batch.records()?;
        if records.is_empty() {
            return Ok(());
        }
        let mut live = match self.live.take() {
            Some(live) => live,
            None => self.connect().await?,
        };
        let qos = self.qos();
        let result = self.publish_all(&mut live, &records, qos).await;
        // A connection that failed is given up; the next put (after the worker's backoff)
        // connects again.
        if result.is_ok() {
            self.live = Some(live);
        }
        result
    }

    async fn stop(&mut self) -> Result<(), TaskError> {
        if let Some(live) = self.live.take() {
            let _ = live.client.disconnect().await;
        }
        Ok(())
    }
}

/// Why the broker refused a publish, and whether trying again may help.
fn refused(reason: &str, retriable: bool) -> Option<(String, bool)> {
    Some((
        format!("the MQTT broker refused the publish: {reason}"),
        retriable,
    ))
}

fn puback_failure(reason: &PubAckReason) -> Option<(String, bool)> {
    match reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
        PubAckReason::QuotaExceeded | PubAckReason::PacketIdentifierInUse => {
            refused(&format!("{reason:?}"), true)
        }
        other => refused(&format!("{other:?}"), false),
    }
}

fn pubrec_failure(reason: &PubRecReason) -> Option<(String, bool)> {
    match reason {
        PubRecReason::Success | PubRecReason::NoMatchingSubscribers => None,
        PubRecReason::QuotaExceeded | PubRecReason::PacketIdentifierInUse => {
            refused(&format!("{reason:?}"), true)
        }
        other => refused(&format!("{other:?}"), false),
    }
}

impl MqttSinkTask {
    fn qos(&self) -> QoS {
        self.connection.as_ref().map_or(QoS::AtLeastOnce, |c| c.qos)
    }

    async fn connect(&self) -> Result<Live, TaskError> {
        let connection = self
            .connection
            .as_ref()
            .ok_or_else(|| TaskError::fatal("the task was not started"))?;
        let (client, eventloop, _) = connection.connect(false, u16::MAX).await?;
        let reports = drive(connection.clone(), eventloop);
        Ok(Live { client, reports })
    }

    fn report(&self, record: &SinkRecordRef<'_>, message: String) {
        if let Some(errors) = &self.errors {
            errors.sink_record_ref(record, message);
        }
    }

    /// The MQTT topic and message of `record`, or why it cannot be published.
    fn message(
        &self,
        record: &SinkRecordRef<'_>,
    ) -> Result<(String, Vec<u8>, PublishProperties), String> {
        let mut topic = self.topic.replace(TOKEN_TOPIC, &record.topic);
        if topic.contains(TOKEN_KEY) {
            let key = record
                .key
                .text()
                .ok_or("the record has no key for ${key} in mqtt.topic")?;
            topic = topic.replace(TOKEN_KEY, &key);
        }
        if topic.is_empty() || topic.contains(['+', '#', '\0']) {
            return Err(format!(
                "{topic:?} is not a topic to publish to (empty, or a wildcard)"
            ));
        }
        let payload = if record.value.is_null() {
            Vec::new()
        } else {
            record
                .value
                .scalar_bytes()
                .ok_or(
                    "the value must be bytes, a string or a number to be an MQTT payload (ByteArrayConverter or StringConverter)",
                )?
                .into_owned()
        };
        let properties = PublishProperties {
            user_properties: record
                .headers
                .iter()
                .map(|h| {
                    let value = h
                        .value
                        .as_ref()
                        .and_then(sluice_connector_sdk::data::to_text)
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    (h.key.clone(), value)
                })
                .collect(),
            ..PublishProperties::default()
        };
        Ok((topic, payload, properties))
    }

    /// Publishes every record of the batch and waits for the broker's confirmations.
    async fn publish_all(
        &self,
        live: &mut Live,
        records: &[SinkRecordRef<'_>],
        qos: QoS,
    ) -> Result<(), TaskError> {
        // Records published, in order, waiting for their packet IDs.
        let mut unsent: VecDeque<usize> = VecDeque::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let (topic, payload, properties) = match self.message(record) {
                Ok(message) => message,
                Err(message) => {
                    self.report(record, message);
                    continue;
                }
            };
            match live
                .client
                .publish_with_properties(topic, qos, self.retain, payload, properties)
                .await
            {
                Ok(()) => unsent.push_back(i),
                // The topic was checked above: the event loop has ended with its connection.
                Err(e) => {
                    return Err(TaskError::retriable(format!(
                        "the MQTT connection is gone: {e}"
                    )))
                }
            }
        }
        self.confirm(live, records, unsent, qos).await
    }

    /// Waits until the broker confirmed each publish of `unsent` (record indices, in the
    /// order published), reporting the ones it refused for good.
    async fn confirm(
        &self,
        live: &mut Live,
        records: &[SinkRecordRef<'_>],
        mut unsent: VecDeque<usize>,
        qos: QoS,
    ) -> Result<(), TaskError> {
        // Packet ID → record index, sent and not yet confirmed.
        let mut inflight: HashMap<u16, usize> = HashMap::new();
        while !unsent.is_empty() || !inflight.is_empty() {
            let report = tokio::time::timeout(self.confirm_timeout, live.reports.recv())
                .await
                .map_err(|_| {
                    TaskError::retriable(format!(
                        "the MQTT broker confirmed no publish within {:?} ({} waiting)",
                        self.confirm_timeout,
                        unsent.len() + inflight.len()
                    ))
                })?;
            let failure = match report {
                None => return Err(TaskError::retriable("the MQTT event loop ended")),
                Some(Report::Failed(e)) => return Err(e),
                Some(Report::Sent(pkid)) => {
                    let Some(i) = unsent.pop_front() else {
                        continue;
                    };
                    if qos != QoS::AtMostOnce {
                        inflight.insert(pkid, i);
                    }
                    continue;
                }
                Some(Report::Packet(Packet::PubAck(ack))) => inflight
                    .remove(&ack.pkid)
                    .map(|i| (i, puback_failure(&ack.reason))),
                Some(Report::Packet(Packet::PubRec(rec))) => match pubrec_failure(&rec.reason) {
                    // Confirmed at PUBCOMP.
                    None => continue,
                    failure => inflight.remove(&rec.pkid).map(|i| (i, failure)),
                },
                Some(Report::Packet(Packet::PubComp(comp))) => {
                    inflight.remove(&comp.pkid).map(|i| (i, None))
                }
                Some(Report::Packet(_)) => continue,
            };
            match failure {
                Some((i, Some((message, false)))) => self.report(&records[i], message),
                Some((_, Some((message, true)))) => return Err(TaskError::retriable(message)),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_that_may_pass_later_are_retriable() {
        assert!(puback_failure(&PubAckReason::Success).is_none());
        assert!(puback_failure(&PubAckReason::NoMatchingSubscribers).is_none());
        assert!(puback_failure(&PubAckReason::QuotaExceeded).unwrap().1);
        let (message, retriable) = puback_failure(&PubAckReason::NotAuthorized).unwrap();
        assert!(!retriable && message.contains("NotAuthorized"), "{message}");
        assert!(!pubrec_failure(&PubRecReason::TopicNameInvalid).unwrap().1);
    }
}
