//! `RabbitMqSource`: Confluent's `RabbitMQSourceConnector`. Each task opens one connection and
//! one channel and consumes every queue of `rabbitmq.queue` with manual acknowledgements
//! (tasks of one connector are competing consumers: more tasks, more throughput, and a
//! queue's order then holds within each task only). A delivery is acknowledged only once
//! Kafka has its record and the worker committed it: one `basic.ack` with `multiple` up to
//! the committed delivery tag. A task that dies (SIGKILL included) or loses its connection
//! leaves its deliveries unacknowledged; the broker requeues them and delivers them again,
//! marked redelivered. Nothing is lost; what was not acknowledged may arrive twice.
//!
//! Each message becomes a record: key the queue's name (so one queue's messages keep their
//! order in one Kafka partition), value the body (bytes), timestamp the AMQP timestamp when
//! the message has one, and headers as Confluent's connector names them: each AMQP property
//! as `rabbitmq.<property>` (`rabbitmq.content.type`, `rabbitmq.message.id`, …), the delivery
//! as `rabbitmq.exchange`, `rabbitmq.routing.key`, `rabbitmq.delivery.tag`,
//! `rabbitmq.redelivered`, `rabbitmq.queue`, and each application header as
//! `rabbitmq.<name>`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{SelectAll, StreamExt};
use futures::FutureExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use sluice_connector_sdk::proto::{
    ConfigDef, ConfigType, ExactlyOnceSupport, FieldError, Importance,
};
use sluice_connector_sdk::{
    data, CommitSignal, Config, ConfigDefBuilder, Connector, SourceConnector, SourceRecord,
    SourceTask, SourceTaskContext, TaskError,
};

use crate::{amqp_to_data, connection_defs, short, Connection, TASK_INDEX};

const QUEUE: &str = "rabbitmq.queue";
const KAFKA_TOPIC: &str = "kafka.topic";
const PREFETCH_COUNT: &str = "rabbitmq.prefetch.count";
const PREFETCH_GLOBAL: &str = "rabbitmq.prefetch.global";
const BATCH_SIZE: &str = "rabbitmq.poll.max.batch.size";

/// In `kafka.topic`: the queue the message came from, with any character Kafka does not take
/// in a topic name as `_`.
const TOKEN_QUEUE: &str = "${rabbitmq.queue}";

pub struct RabbitMqSource;

impl Connector for RabbitMqSource {
    fn class_name(&self) -> &'static str {
        "RabbitMqSource"
    }

    fn aliases(&self) -> Vec<&'static str> {
        vec![
            "io.confluent.connect.rabbitmq.RabbitMQSourceConnector",
            "RabbitMQSourceConnector",
        ]
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Consumes RabbitMQ queues; a delivery is acknowledged once Kafka has its record"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let mut defs = connection_defs();
        defs.extend([
            ConfigDefBuilder::new(QUEUE, ConfigType::List)
                .importance(Importance::High)
                .doc("The queues to consume (they must exist); every task consumes all of them")
                .build(),
            ConfigDefBuilder::new(KAFKA_TOPIC, ConfigType::String)
                .importance(Importance::High)
                .doc("The Kafka topic to write to; ${rabbitmq.queue} stands for the message's queue")
                .build(),
            ConfigDefBuilder::new(PREFETCH_COUNT, ConfigType::Int)
                .default_value("1000")
                .importance(Importance::Medium)
                .doc("Deliveries the broker may have sent a task and not had acknowledged (basic.qos; 0: no limit). Acknowledgements wait for Kafka, so this bounds what a task holds in memory")
                .build(),
            ConfigDefBuilder::new(PREFETCH_GLOBAL, ConfigType::Boolean)
                .default_value("false")
                .importance(Importance::Low)
                .doc("Whether the prefetch count applies to the channel as a whole rather than to each queue's consumer")
                .build(),
            ConfigDefBuilder::new(BATCH_SIZE, ConfigType::Int)
                .default_value("4096")
                .importance(Importance::Low)
                .doc("Messages handed to the worker at most per poll")
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
        match queues(config.get_or(QUEUE, "")) {
            Ok(q) if q.is_empty() => errors.push(FieldError {
                name: QUEUE.into(),
                message: "must name at least one queue".into(),
            }),
            Err(message) => errors.push(FieldError {
                name: QUEUE.into(),
                message,
            }),
            Ok(_) => {}
        }
        errors
    }

    /// `tasks.max` tasks, each consuming every queue (RabbitMQ shares a queue's messages
    /// among its consumers).
    fn plan(&self, config: &Config, max_tasks: usize) -> Result<Vec<Config>, TaskError> {
        Ok((0..max_tasks.max(1))
            .map(|i| {
                let mut task = config.clone();
                task.set(TASK_INDEX, i.to_string());
                task
            })
            .collect())
    }
}

impl SourceConnector for RabbitMqSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(RabbitMqSourceTask::default())
    }

    /// Deliveries not acknowledged are delivered again: at least once.
    fn exactly_once_support(&self) -> ExactlyOnceSupport {
        ExactlyOnceSupport::Unsupported
    }
}

fn queues(list: &str) -> Result<Vec<String>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(|q| short(q, &format!("queue {q:?}")).map(|_| q.to_string()))
        .collect()
}

/// A consumer's deliveries, each with the index of its queue.
type Deliveries = SelectAll<futures::stream::BoxStream<'static, (usize, lapin::Result<Delivery>)>>;

#[derive(Default)]
struct RabbitMqSourceTask {
    connection: Option<Connection>,
    amqp: Option<lapin::Connection>,
    channel: Option<Channel>,
    deliveries: Option<Deliveries>,
    queues: Vec<String>,
    /// `kafka.topic`, with the queue's name put in per queue.
    topics: Vec<String>,
    batch: usize,
    /// `{"rabbitmq.task": …}`: the task's source partition.
    partition: Option<Arc<str>>,
    /// The highest delivery tag acknowledged on this channel.
    acked: u64,
    commits: CommitSignal,
}

#[async_trait]
impl SourceTask for RabbitMqSourceTask {
    async fn start(&mut self, ctx: SourceTaskContext) -> Result<(), TaskError> {
        let config = &ctx.config;
        let connection = Connection::from_config(config, &ctx.connector_name)?;
        self.commits = ctx.commits.clone();
        self.queues = queues(config.required(QUEUE)?)
            .map_err(|e| TaskError::fatal(format!("{QUEUE}: {e}")))?;
        if self.queues.is_empty() {
            return Err(TaskError::fatal(format!("{QUEUE}: no queue given")));
        }
        let template = config.required(KAFKA_TOPIC)?;
        self.topics = self
            .queues
            .iter()
            .map(|q| kafka_topic(template, q))
            .collect();
        self.batch = config.parse_or(BATCH_SIZE, 4096usize)?.max(1);
        let prefetch: u16 = config.parse_or(PREFETCH_COUNT, 1000u16)?;
        let global = config.parse_or(PREFETCH_GLOBAL, false)?;
        self.partition = Some(
            serde_json::json!({ "rabbitmq.task": connection.name })
                .to_string()
                .into(),
        );
        let amqp = connection.connect().await?;
        let channel = amqp
            .create_channel()
            .await
            .map_err(|e| connection.error("open a channel", &e))?;
        channel
            .basic_qos(prefetch, BasicQosOptions { global })
            .await
            .map_err(|e| connection.error("basic.qos", &e))?;
        let mut deliveries = Deliveries::default();
        for (i, queue) in self.queues.iter().enumerate() {
            let consumer: Consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    format!("{}-{i}", connection.name).as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| connection.error(&format!("consume queue {queue:?}"), &e))?;
            deliveries.push(consumer.map(move |d| (i, d)).boxed());
        }
        tracing::info!(connection = %connection.name, queues = ?self.queues, prefetch, "consuming");
        self.deliveries = Some(deliveries);
        self.channel = Some(channel);
        self.amqp = Some(amqp);
        self.connection = Some(connection);
        Ok(())
    }

    async fn poll(&mut self, max_records: usize) -> Result<Vec<SourceRecord>, TaskError> {
        let max = max_records.min(self.batch).max(1);
        let Some(deliveries) = self.deliveries.as_mut() else {
            return Err(TaskError::fatal("the task was not started"));
        };
        // Wait a little for the first delivery, or until there is something to commit: with
        // the prefetch window full, the broker sends nothing more before the acknowledgements
        // the commit gives. Then take what is there.
        let first = tokio::select! {
            first = tokio::time::timeout(Duration::from_millis(500), deliveries.next()) => match first {
                Err(_) => return Ok(Vec::new()),
                Ok(first) => first,
            },
            () = self.commits.pending() => return Ok(Vec::new()),
        };
        let mut records = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Some((queue, Ok(delivery))) => records.push(self.record(queue, delivery)),
                Some((queue, Err(e))) => return Err(self.failed(queue, &e)),
                None => {
                    return Err(TaskError::retriable(format!(
                        "RabbitMQ at {}: the broker cancelled the consumers",
                        self.server()
                    )))
                }
            }
            if records.len() >= max {
                break;
            }
            let Some(deliveries) = self.deliveries.as_mut() else {
                break;
            };
            next = deliveries.next().now_or_never();
        }
        Ok(records)
    }

    /// Acknowledges every delivery up to the committed one (one `basic.ack`, `multiple`).
    async fn commit(&mut self, positions: &[(Arc<str>, String)]) -> Result<(), TaskError> {
        let (Some(partition), Some(channel)) = (&self.partition, &self.channel) else {
            return Ok(());
        };
        let Some((_, offset)) = positions.iter().find(|(p, _)| p == partition) else {
            return Ok(());
        };
        let tag = serde_json::from_str::<serde_json::Value>(offset)
            .ok()
            .and_then(|o| o.get("tag")?.as_u64())
            .ok_or_else(|| TaskError::fatal(format!("committed offset {offset} has no tag")))?;
        if tag <= self.acked {
            return Ok(());
        }
        // A failed ack leaves the deliveries with the broker, which delivers them again once
        // the channel is gone: the failure shows at the next poll.
        if let Err(e) = channel
            .basic_ack(tag, BasicAckOptions { multiple: true })
            .await
        {
            tracing::warn!(tag, error = %e, "acknowledgement not sent; the broker will deliver again");
            return Ok(());
        }
        self.acked = tag;
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), TaskError> {
        self.deliveries = None;
        if let Some(amqp) = self.amqp.take() {
            let _ = amqp.close(200, "stopped".into()).await;
        }
        Ok(())
    }
}

impl RabbitMqSourceTask {
    fn server(&self) -> String {
        self.connection
            .as_ref()
            .map(Connection::server)
            .unwrap_or_default()
    }

    fn failed(&self, queue: usize, e: &lapin::Error) -> TaskError {
        let what = format!("consume queue {:?}", self.queues[queue]);
        match &self.connection {
            Some(c) => c.error(&what, e),
            None => TaskError::retriable(format!("{what}: {e}")),
        }
    }

    fn record(&self, queue: usize, delivery: Delivery) -> SourceRecord {
        let p = &delivery.properties;
        let mut headers = vec![
            data::header("rabbitmq.queue", data::string(self.queues[queue].as_str())),
            data::header(
                "rabbitmq.exchange",
                data::string(delivery.exchange.as_str()),
            ),
            data::header(
                "rabbitmq.routing.key",
                data::string(delivery.routing_key.as_str()),
            ),
            data::header(
                "rabbitmq.delivery.tag",
                data::int64(delivery.delivery_tag as i64),
            ),
            data::header("rabbitmq.redelivered", data::boolean(delivery.redelivered)),
        ];
        let strings = [
            ("rabbitmq.content.type", p.content_type()),
            ("rabbitmq.content.encoding", p.content_encoding()),
            ("rabbitmq.correlation.id", p.correlation_id()),
            ("rabbitmq.reply.to", p.reply_to()),
            ("rabbitmq.expiration", p.expiration()),
            ("rabbitmq.message.id", p.message_id()),
            ("rabbitmq.type", p.kind()),
            ("rabbitmq.user.id", p.user_id()),
            ("rabbitmq.app.id", p.app_id()),
        ];
        for (name, value) in strings {
            if let Some(value) = value {
                headers.push(data::header(name, data::string(value.as_str())));
            }
        }
        if let Some(mode) = p.delivery_mode() {
            headers.push(data::header(
                "rabbitmq.delivery.mode",
                data::int32(i32::from(*mode)),
            ));
        }
        if let Some(priority) = p.priority() {
            headers.push(data::header(
                "rabbitmq.priority",
                data::int32(i32::from(*priority)),
            ));
        }
        if let Some(timestamp) = p.timestamp() {
            headers.push(data::header(
                "rabbitmq.timestamp",
                data::int64(*timestamp as i64),
            ));
        }
        if let Some(table) = p.headers() {
            for (name, value) in table {
                headers.push(data::header(
                    format!("rabbitmq.{name}"),
                    amqp_to_data(value),
                ));
            }
        }
        SourceRecord {
            source_partition: self.partition.clone(),
            source_offset: Some(format!("{{\"tag\":{}}}", delivery.delivery_tag)),
            topic: self.topics[queue].clone(),
            key: data::string(self.queues[queue].as_str()),
            value: data::bytes(delivery.data),
            headers,
            // AMQP timestamps are in seconds.
            timestamp_ms: (*p.timestamp()).and_then(|s| i64::try_from(s).ok()?.checked_mul(1000)),
            ..SourceRecord::default()
        }
    }
}

/// `template` with `${rabbitmq.queue}` replaced by `queue` as a Kafka topic name.
fn kafka_topic(template: &str, queue: &str) -> String {
    data::topic_from_template(template, TOKEN_QUEUE, queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_become_kafka_topic_names() {
        assert_eq!(kafka_topic("fixed", "q"), "fixed");
        assert_eq!(
            kafka_topic("rmq.${rabbitmq.queue}", "orders/eu 1"),
            "rmq.orders_eu_1"
        );
    }

    #[test]
    fn every_task_consumes_every_queue() {
        let config = Config::from([(QUEUE, "a, b"), (KAFKA_TOPIC, "k")]);
        let tasks = RabbitMqSource.plan(&config, 3).unwrap();
        assert_eq!(tasks.len(), 3);
        assert_eq!(tasks[2].get(TASK_INDEX), Some("2"));
        assert_eq!(queues("a, b,,").unwrap(), vec!["a", "b"]);
        assert!(queues(&"q".repeat(300)).is_err());
    }
}
