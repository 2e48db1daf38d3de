//! `RabbitMqSink`: Confluent's `RabbitMQSinkConnector`. Each record is published to
//! `rabbitmq.exchange` with the routing key `rabbitmq.routing.key` names (`${topic}`: the
//! record's Kafka topic; `${key}`: its key as text), persistent by default
//! (`rabbitmq.delivery.mode`), in order over one channel in confirm mode. The body is the
//! value's bytes (ByteArrayConverter or StringConverter; a number or boolean as its text; a
//! null value an empty body). With `rabbitmq.forward.kafka.key` the key (as text) is the
//! message's correlation ID; with `rabbitmq.forward.kafka.metadata` the headers `KAFKA_TOPIC`,
//! `KAFKA_PARTITION` and `KAFKA_OFFSET` say where the record came from; with
//! `rabbitmq.forward.kafka.headers` each Kafka header becomes an AMQP header (its value as
//! text).
//!
//! A put returns only once the broker confirmed every publish (publisher confirms), so a
//! flush only reports what the broker has. Messages are published `mandatory`: one no queue
//! takes (no binding matches) comes back from the broker and is reported for
//! `errors.tolerance` and the dead-letter queue rather than dropped — as is a record that
//! cannot be a body (a struct: use a converter that writes bytes) or a routing key over 255
//! bytes. A lost connection, a broker refusing to store (`basic.nack`) or not confirming
//! within `rabbitmq.publish.ack.timeout` fails the put as retriable: the worker restarts the
//! task with backoff, and it publishes again from the last committed offset (at least once).

use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind, PublisherConfirm};
use sluice_connector_sdk::proto::{ConfigDef, ConfigType, FieldError, Importance, SinkRecord};
use sluice_connector_sdk::{
    Config, ConfigDefBuilder, Connector, ErrantRecordReporter, SinkBatch, SinkConnector,
    SinkRecordRef, SinkTask, SinkTaskContext, TaskError,
};

use crate::{connection_defs, short, Connection};

const EXCHANGE: &str = "rabbitmq.exchange";
const ROUTING_KEY: &str = "rabbitmq.routing.key";
const DELIVERY_MODE: &str = "rabbitmq.delivery.mode";
const FORWARD_KEY: &str = "rabbitmq.forward.kafka.key";
const FORWARD_METADATA: &str = "rabbitmq.forward.kafka.metadata";
const FORWARD_HEADERS: &str = "rabbitmq.forward.kafka.headers";
const ACK_TIMEOUT: &str = "rabbitmq.publish.ack.timeout";
const MANDATORY: &str = "rabbitmq.publish.mandatory";

const TOKEN_TOPIC: &str = "${topic}";
const TOKEN_KEY: &str = "${key}";

pub struct RabbitMqSink;

impl Connector for RabbitMqSink {
    fn class_name(&self) -> &'static str {
        "RabbitMqSink"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "io.confluent.connect.rabbitmq.sink.RabbitMQSinkConnector",
            "RabbitMQSinkConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Publishes records to a RabbitMQ exchange; a flush succeeds once the broker confirmed every message"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let mut defs = connection_defs();
        defs.extend([
            ConfigDefBuilder::new(EXCHANGE, ConfigType::String)
                .default_value("")
                .importance(Importance::High)
                .doc("The exchange to publish to (it must exist); empty (the default): the default exchange, where the routing key names the queue")
                .build(),
            ConfigDefBuilder::new(ROUTING_KEY, ConfigType::String)
                .importance(Importance::High)
                .doc("The routing key; ${topic} stands for the record's Kafka topic, ${key} for its key as text")
                .build(),
            ConfigDefBuilder::new(DELIVERY_MODE, ConfigType::String)
                .default_value("PERSISTENT")
                .valid_values(&["PERSISTENT", "TRANSIENT"])
                .importance(Importance::Medium)
                .doc("PERSISTENT: durable queues keep the message across a broker restart; TRANSIENT: they may not")
                .build(),
            ConfigDefBuilder::new(FORWARD_KEY, ConfigType::Boolean)
                .default_value("false")
                .importance(Importance::Low)
                .doc("Whether the record's key (as text) becomes the message's correlation ID")
                .build(),
            ConfigDefBuilder::new(FORWARD_METADATA, ConfigType::Boolean)
                .default_value("false")
                .importance(Importance::Low)
                .doc("Whether the headers KAFKA_TOPIC, KAFKA_PARTITION and KAFKA_OFFSET say where the record came from")
                .build(),
            ConfigDefBuilder::new(FORWARD_HEADERS, ConfigType::Boolean)
                .default_value("false")
                .importance(Importance::Low)
                .doc("Whether each Kafka header becomes an AMQP header (its value as text)")
                .build(),
            ConfigDefBuilder::new(ACK_TIMEOUT, ConfigType::Int)
                .default_value("10000")
                .importance(Importance::Low)
                .doc("Milliseconds to wait for the broker to confirm a batch's messages before the put fails (retriable)")
                .build(),
            ConfigDefBuilder::new(MANDATORY, ConfigType::Boolean)
                .default_value("true")
                .importance(Importance::Low)
                .doc("Whether a message no queue takes comes back and goes to errors.* (true) or the broker drops it (false)")
                .build(),
        ]);
        defs
    }

    fn validate(&self, config: &Config) -> Vec<FieldError> {
        let mut errors = config.validate_against(&self.config_defs());
        if let Err(e) = Connection::from_config(config, "validate") {
            errors.push(FieldError {
                name: crate::HOST.into(),
                message: e.message,
            });
        }
        if let Err(message) = short(config.get_or(EXCHANGE, ""), "the exchange name") {
            errors.push(FieldError {
                name: EXCHANGE.into(),
                message,
            });
        }
        errors
    }
}

impl SinkConnector for RabbitMqSink {
    fn task(&self) -> Box<dyn SinkTask> {
        Box::new(RabbitMqSinkTask::default())
    }
}

/// A connection and its channel in confirm mode.
struct Live {
    amqp: lapin::Connection,
    channel: Channel,
}

#[derive(Default)]
struct RabbitMqSinkTask {
    connection: Option<Connection>,
    live: Option<Live>,
    exchange: String,
    routing_key: String,
    persistent: bool,
    forward_key: bool,
    forward_metadata: bool,
    forward_headers: bool,
    mandatory: bool,
    ack_timeout: Duration,
    errors: Option<ErrantRecordReporter>,
}

#[async_trait]
impl SinkTask for RabbitMqSinkTask {
    async fn start(&mut self, ctx: SinkTaskContext) -> Result<(), TaskError> {
        let config = &ctx.config;
        let connection = Connection::from_config(config, &ctx.connector_name)?;
        self.exchange = config.get_or(EXCHANGE, "").to_string();
        short(&self.exchange, "the exchange name")
            .map_err(|e| TaskError::fatal(format!("{EXCHANGE}: {e}")))?;
        self.routing_key = config.required(ROUTING_KEY)?.to_string();
        self.persistent = match config.get_or(DELIVERY_MODE, "PERSISTENT") {
            "PERSISTENT" => true,
            "TRANSIENT" => false,
            other => {
                return Err(TaskError::fatal(format!(
                    "{DELIVERY_MODE}: {other:?} is not PERSISTENT or TRANSIENT"
                )))
            }
        };
        self.forward_key = config.parse_or(FORWARD_KEY, false)?;
        self.forward_metadata = config.parse_or(FORWARD_METADATA, false)?;
        self.forward_headers = config.parse_or(FORWARD_HEADERS, false)?;
        self.mandatory = config.parse_or(MANDATORY, true)?;
        self.ack_timeout = Duration::from_millis(config.parse_or(ACK_TIMEOUT, 10_000u64)?.max(1));
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
        let live = match self.live.take() {
            Some(live) => live,
            None => self.connect().await?,
        };
        let result = self.publish_all(&live.channel, &records).await;
        // A connection that failed is given up; the next put (after the worker's backoff)
        // connects again.
        if result.is_ok() {
            self.live = Some(live);
        } else {
            let _ = live.amqp.close(200, "put failed".into()).await;
        }
        result
    }

    async fn stop(&mut self) -> Result<(), TaskError> {
        if let Some(live) = self.live.take() {
            let _ = live.amqp.close(200, "stopped".into()).await;
        }
        Ok(())
    }
}

impl RabbitMqSinkTask {
    fn connection(&self) -> Result<&Connection, TaskError> {
        self.connection
            .as_ref()
            .ok_or_else(|| TaskError::fatal("the task was not started"))
    }

    /// A connection with a channel in confirm mode; the exchange checked to exist, so a
    /// misnamed one fails the task at once with its name.
    async fn connect(&self) -> Result<Live, TaskError> {
        let connection = self.connection()?;
        let amqp = connection.connect().await?;
        let channel = amqp
            .create_channel()
            .await
            .map_err(|e| connection.error("open a channel", &e))?;
        if !self.exchange.is_empty() {
            channel
                .exchange_declare(
                    self.exchange.as_str().into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions {
                        passive: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| connection.error(&format!("exchange {:?}", self.exchange), &e))?;
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| connection.error("confirm.select", &e))?;
        Ok(Live { amqp, channel })
    }

    fn report(&self, record: &SinkRecordRef<'_>, message: String) {
        if let Some(errors) = &self.errors {
            errors.sink_record_ref(record, message);
        }
    }

    /// The routing key, properties and body of `record`, or why it cannot be published.
    fn message(
        &self,
        record: &SinkRecordRef<'_>,
    ) -> Result<(ShortString, BasicProperties, Vec<u8>), String> {
        let mut routing_key = self.routing_key.replace(TOKEN_TOPIC, &record.topic);
        let key_text = || {
            record.key.text().map(|k| k.into_owned()).ok_or_else(|| {
                "the record has no key for ${key} in rabbitmq.routing.key".to_string()
            })
        };
        if routing_key.contains(TOKEN_KEY) {
            routing_key = routing_key.replace(TOKEN_KEY, &key_text()?);
        }
        let routing_key = short(&routing_key, "the routing key")?;
        let body = if record.value.is_null() {
            Vec::new()
        } else {
            record
                .value
                .scalar_bytes()
                .ok_or(
                    "the value must be bytes, a string or a number to be a message body (ByteArrayConverter or StringConverter)",
                )?
                .into_owned()
        };
        let mut properties =
            BasicProperties::default().with_delivery_mode(if self.persistent { 2 } else { 1 });
        if self.forward_key && !record.key.is_null() {
            if let Some(key) = record.key.text() {
                properties =
                    properties.with_correlation_id(short(&key, "the key as correlation ID")?);
            }
        }
        let mut headers = FieldTable::default();
        if self.forward_metadata {
            headers.insert(
                "KAFKA_TOPIC".into(),
                AMQPValue::LongString(LongString::from(record.topic.as_bytes())),
            );
            headers.insert(
                "KAFKA_PARTITION".into(),
                AMQPValue::LongInt(record.partition),
            );
            headers.insert("KAFKA_OFFSET".into(), AMQPValue::LongLongInt(record.offset));
        }
        if self.forward_headers {
            for h in record.headers.iter() {
                let name = short(&h.key, &format!("header {:?}", h.key))?;
                let value = match h.value.as_ref() {
                    None => AMQPValue::Void,
                    Some(v) => match sluice_connector_sdk::data::to_text(v) {
                        Some(text) => AMQPValue::LongString(LongString::from(text.as_bytes())),
                        None => AMQPValue::Void,
                    },
                };
                headers.insert(name, value);
            }
        }
        if self.forward_metadata || self.forward_headers {
            properties = properties.with_headers(headers);
        }
        Ok((routing_key, properties, body))
    }

    /// Publishes every record of the batch and waits for the broker's confirmations.
    async fn publish_all(
        &self,
        channel: &Channel,
        records: &[SinkRecordRef<'_>],
    ) -> Result<(), TaskError> {
        let connection = self.connection()?;
        let options = BasicPublishOptions {
            mandatory: self.mandatory,
            immediate: false,
        };
        let exchange: ShortString = self.exchange.as_str().into();
        let mut messages = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            match self.message(record) {
                Ok(message) => messages.push((i, message)),
                Err(message) => self.report(record, message),
            }
        }
        // Each publish's first poll hands its frames to the connection's writer, so polling
        // them once each, in record order, keeps that order on the wire while the writes
        // overlap; awaiting each in turn instead would wait for a write per message.
        let mut publishes = Vec::with_capacity(messages.len());
        for (i, (routing_key, properties, body)) in &messages {
            let mut publish = Box::pin(channel.basic_publish(
                exchange.clone(),
                routing_key.clone(),
                options,
                body,
                properties.clone(),
            ));
            // A future that completed must not be polled again: keep its result.
            let state = match futures::poll!(publish.as_mut()) {
                std::task::Poll::Ready(result) => futures::future::Either::Left(result),
                std::task::Poll::Pending => futures::future::Either::Right(publish),
            };
            publishes.push((*i, state));
        }
        let mut confirms: Vec<(usize, PublisherConfirm)> = Vec::with_capacity(publishes.len());
        for (i, state) in publishes {
            let result = match state {
                futures::future::Either::Left(result) => result,
                futures::future::Either::Right(publish) => publish.await,
            };
            let confirm = result.map_err(|e| connection.error("basic.publish", &e))?;
            confirms.push((i, confirm));
        }
        let deadline = tokio::time::Instant::now() + self.ack_timeout;
        let waiting = confirms.len();
        for (n, (i, confirm)) in confirms.into_iter().enumerate() {
            let confirmation = tokio::time::timeout_at(deadline, confirm)
                .await
                .map_err(|_| {
                    TaskError::retriable(format!(
                        "RabbitMQ at {}: {} of {waiting} messages not confirmed within {:?}",
                        connection.server(),
                        waiting - n,
                        self.ack_timeout
                    ))
                })?
                .map_err(|e| connection.error("publisher confirm", &e))?;
            match confirmation {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(returned)) => self.report(
                    &records[i],
                    format!(
                        "RabbitMQ returned the message: {} {} (exchange {:?}, routing key {:?}; no queue is bound for it)",
                        returned.reply_code,
                        returned.reply_text,
                        self.exchange,
                        returned.delivery.routing_key.as_str()
                    ),
                ),
                Confirmation::Nack(_) => {
                    return Err(TaskError::retriable(format!(
                        "RabbitMQ at {} refused to take a message (basic.nack)",
                        connection.server()
                    )))
                }
            }
        }
        Ok(())
    }
}
