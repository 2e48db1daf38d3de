//! `NatsSink`: each record is published to the subject `nats.subject` names (`${topic}`: the
//! record's Kafka topic, the default; `${key}`: its key as text), in order over one
//! connection, with each Kafka header as a NATS header (its value as text). The payload is the
//! value's bytes (ByteArrayConverter or StringConverter; numbers and booleans as text; a
//! tombstone an empty payload).
//!
//! With `nats.jetstream.enabled` (the default) a put returns only once the stream acknowledged
//! every publish (within `nats.publish.ack.timeout.ms`), so a flush only reports what the
//! stream stored; a publish to a subject no stream takes fails the task (no responders), a
//! refused one (the stream full, say) is that record's error for `errors.*`. Without
//! JetStream the put returns once the server has the messages (a flush round trip): core
//! NATS delivers them to whoever subscribes at that moment, at most once.

use std::collections::VecDeque;
use std::str::FromStr as _;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::{HeaderMap, HeaderName};
use async_trait::async_trait;
use bytes::Bytes;
use sluice_connector_sdk::proto::{ConfigDef, ConfigType, FieldError, Importance, SinkRecord};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, ErrantRecordReporter, SinkBatch, SinkConnector,
    SinkRecordRef, SinkTask, SinkTaskContext, TaskError,
};

use crate::{connection_defs, publishable, Connection};

const SUBJECT: &str = "nats.subject";
const JETSTREAM: &str = "nats.jetstream.enabled";
const ACK_TIMEOUT: &str = "nats.publish.ack.timeout.ms";

const TOKEN_TOPIC: &str = "${topic}";
const TOKEN_KEY: &str = "${key}";

/// Publishes awaiting their acknowledgement at most: the client allows 5,000.
const WINDOW: usize = 2048;

pub struct NatsSink;

impl Connector for NatsSink {
    fn class_name(&self) -> &'static str {
        "NatsSink"
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Publishes records to NATS subjects; with JetStream a flush succeeds once the stream acknowledged every message"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let mut defs = connection_defs();
        defs.extend([
            ConfigDefBuilder::new(SUBJECT, ConfigType::String)
                .default_value(TOKEN_TOPIC)
                .importance(Importance::High)
                .doc("The subject to publish to; ${topic} stands for the record's Kafka topic, ${key} for its key as text")
                .build(),
            ConfigDefBuilder::new(JETSTREAM, ConfigType::Boolean)
                .default_value("true")
                .importance(Importance::High)
                .doc("Whether to publish to JetStream and wait for the stream's acknowledgements (false: core NATS, at most once)")
                .build(),
            ConfigDefBuilder::new(ACK_TIMEOUT, ConfigType::Int)
                .default_value("10000")
                .importance(Importance::Low)
                .doc("Milliseconds to wait for each JetStream acknowledgement before the put fails (retriable)")
                .build(),
        ]);
        defs
    }

    fn validate(&self, config: &Config) -> Vec<FieldError> {
        let mut errors = config.validate_against(&self.config_defs());
        if let Err(e) = Connection::from_config(config, "validate") {
            errors.push(FieldError {
                name: crate::SERVERS.into(),
                message: e.message,
            });
        }
        let subject = config.get_or(SUBJECT, TOKEN_TOPIC);
        let sample = subject.replace(TOKEN_TOPIC, "t").replace(TOKEN_KEY, "k");
        if !publishable(&sample) {
            errors.push(FieldError {
                name: SUBJECT.into(),
                message: format!("{subject:?} is not a subject to publish to"),
            });
        }
        errors
    }
}

impl SinkConnector for NatsSink {
    fn task(&self) -> Box<dyn SinkTask> {
        Box::new(NatsSinkTask::default())
    }
}

#[derive(Default)]
struct NatsSinkTask {
    connection: Option<Connection>,
    client: Option<async_nats::Client>,
    jetstream: Option<async_nats::jetstream::Context>,
    subject: String,
    errors: Option<ErrantRecordReporter>,
}

#[async_trait]
impl SinkTask for NatsSinkTask {
    async fn start(&mut self, ctx: SinkTaskContext) -> Result<(), TaskError> {
        let config = &ctx.config;
        let connection = Connection::from_config(config, &ctx.connector_name)?;
        self.subject = config.get_or(SUBJECT, TOKEN_TOPIC).to_string();
        let client = connection.connect().await?;
        if config.parse_or(JETSTREAM, true)? {
            let timeout = Duration::from_millis(config.parse_or(ACK_TIMEOUT, 10_000u64)?.max(1));
            let mut jetstream = async_nats::jetstream::new(client.clone());
            jetstream.set_timeout(timeout);
            self.jetstream = Some(jetstream);
        }
        self.errors = Some(ctx.errors.clone());
        self.client = Some(client);
        self.connection = Some(connection);
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
        let server = self
            .connection
            .as_ref()
            .map(Connection::server)
            .unwrap_or_default();
        let Some(client) = self.client.clone() else {
            return Err(TaskError::fatal("the task was not started"));
        };
        // Publishes waiting for the stream's acknowledgement, in order, with their record.
        let mut waiting: VecDeque<(usize, PublishAckFuture)> = VecDeque::new();
        for (i, record) in records.iter().enumerate() {
            let (subject, headers, payload) = match self.message(record) {
                Ok(message) => message,
                Err(message) => {
                    self.report(record, message);
                    continue;
                }
            };
            match &self.jetstream {
                Some(jetstream) => {
                    if waiting.len() >= WINDOW {
                        if let Some((j, ack)) = waiting.pop_front() {
                            self.acknowledged(&records[j], ack, &server).await?;
                        }
                    }
                    let ack = jetstream
                        .publish_with_headers(subject, headers, payload)
                        .await
                        .map_err(|e| {
                            TaskError::retriable(format!("NATS JetStream publish at {server}: {e}"))
                        })?;
                    waiting.push_back((i, ack));
                }
                None => client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| TaskError::retriable(format!("NATS publish at {server}: {e}")))?,
            }
        }
        while let Some((j, ack)) = waiting.pop_front() {
            self.acknowledged(&records[j], ack, &server).await?;
        }
        if self.jetstream.is_none() {
            client
                .flush()
                .await
                .map_err(|e| TaskError::retriable(format!("NATS flush at {server}: {e}")))?;
        }
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), TaskError> {
        if let Some(client) = self.client.take() {
            let _ = client.flush().await;
        }
        Ok(())
    }
}

impl NatsSinkTask {
    fn report(&self, record: &SinkRecordRef<'_>, message: String) {
        if let Some(errors) = &self.errors {
            errors.sink_record_ref(record, message);
        }
    }

    /// Waits for the stream's acknowledgement of `record`'s publish: a refusal is the
    /// record's error; a timeout, a lost connection or no stream for the subject fail the put.
    async fn acknowledged(
        &self,
        record: &SinkRecordRef<'_>,
        ack: PublishAckFuture,
        server: &str,
    ) -> Result<(), TaskError> {
        match ack.await {
            Ok(_) => Ok(()),
            Err(e) => match e.kind() {
                PublishErrorKind::StreamNotFound => Err(TaskError::fatal(format!(
                    "NATS JetStream at {server}: no stream takes subject {:?} (no responders)",
                    self.subject_of(record)
                ))),
                PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => Err(
                    TaskError::retriable(format!("NATS JetStream at {server}: {e}")),
                ),
                _ => {
                    self.report(record, format!("NATS JetStream refused the message: {e}"));
                    Ok(())
                }
            },
        }
    }

    fn subject_of(&self, record: &SinkRecordRef<'_>) -> String {
        self.subject.replace(TOKEN_TOPIC, &record.topic)
    }

    /// The subject, headers and payload of `record`, or why it cannot be published.
    fn message(&self, record: &SinkRecordRef<'_>) -> Result<(String, HeaderMap, Bytes), String> {
        let mut subject = self.subject_of(record);
        if subject.contains(TOKEN_KEY) {
            let key = record
                .key
                .text()
                .ok_or("the record has no key for ${key} in nats.subject")?;
            subject = subject.replace(TOKEN_KEY, &key);
        }
        if !publishable(&subject) {
            return Err(format!("{subject:?} is not a subject to publish to"));
        }
        let payload = if record.value.is_null() {
            Bytes::new()
        } else {
            Bytes::from(
                record
                    .value
                    .scalar_bytes()
                    .ok_or(
                        "the value must be bytes, a string or a number to be a NATS payload (ByteArrayConverter or StringConverter)",
                    )?
                    .into_owned(),
            )
        };
        let mut headers = HeaderMap::new();
        for h in record.headers.iter() {
            let name = HeaderName::from_str(&h.key)
                .map_err(|_| format!("header {:?} cannot be a NATS header name", h.key))?;
            let value = h
                .value
                .as_ref()
                .and_then(sluice_connector_sdk::data::to_text)
                .map(|t| t.into_owned())
                .unwrap_or_default();
            headers.append(name, value);
        }
        Ok((subject, headers, payload))
    }
}
