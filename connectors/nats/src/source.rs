//! `NatsSource`. With `nats.stream` (JetStream): every task pulls from one durable consumer
//! of the stream (`nats.durable`, created if missing, filtered by `nats.subject`), with
//! explicit acknowledgements: a message is acknowledged only once Kafka has its record and the
//! worker committed it. A task that dies (SIGKILL included) leaves its messages
//! unacknowledged; the stream delivers them again once `nats.ack.wait.ms` has passed — to
//! whichever task pulls next — marked by a `nats.delivered` count above 1. Nothing is lost;
//! what was not acknowledged may arrive twice. With tasks.max > 1 the tasks share the
//! consumer: a subject's order then holds within each task only.
//!
//! Without `nats.stream`: a core NATS subscription to `nats.subject` (wildcards allowed; with
//! `nats.queue.group` the tasks share it): at most once — NATS keeps nothing for a subscriber
//! that is not there.
//!
//! Each message becomes a record: key its subject, value its payload (bytes), each NATS header
//! a header of its name (one per value), and `nats.subject`, plus for JetStream
//! `nats.stream.sequence` and `nats.delivered`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::Subject;
use async_trait::async_trait;
use futures::{FutureExt as _, StreamExt as _};
use sluice_connector_sdk::proto::{
    ConfigDef, ConfigType, ExactlyOnceSupport, FieldError, Importance,
};
use sluice_connector_sdk::{
    data, CommitSignal, Config, ConfigDefBuilder, Connector, SourceConnector, SourceRecord,
    SourceTask, SourceTaskContext, TaskError,
};

use crate::{connection_defs, Connection, TASK_INDEX};

const STREAM: &str = "nats.stream";
const SUBJECT: &str = "nats.subject";
const DURABLE: &str = "nats.durable";
const DELIVER_POLICY: &str = "nats.deliver.policy";
const ACK_WAIT: &str = "nats.ack.wait.ms";
const MAX_ACK_PENDING: &str = "nats.max.ack.pending";
const QUEUE_GROUP: &str = "nats.queue.group";
const KAFKA_TOPIC: &str = "kafka.topic";
const BATCH_SIZE: &str = "nats.poll.max.batch.size";

/// In `kafka.topic`: the message's subject (any character Kafka does not take as `_`).
const TOKEN_SUBJECT: &str = "${subject}";

pub struct NatsSource;

impl Connector for NatsSource {
    fn class_name(&self) -> &'static str {
        "NatsSource"
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn documentation(&self) -> &'static str {
        "Reads a JetStream stream through a durable consumer, acknowledging once Kafka has the records (or core NATS subjects, at most once)"
    }

    fn config_defs(&self) -> Vec<ConfigDef> {
        let mut defs = connection_defs();
        defs.extend([
            ConfigDefBuilder::new(STREAM, ConfigType::String)
                .default_value("")
                .importance(Importance::High)
                .doc("The JetStream stream to read (it must exist); empty: core NATS, at most once")
                .build(),
            ConfigDefBuilder::new(SUBJECT, ConfigType::String)
                .default_value("")
                .importance(Importance::High)
                .doc("JetStream: the consumer's filter subject (empty: the whole stream); core NATS: the subject to subscribe to (wildcards allowed)")
                .build(),
            ConfigDefBuilder::new(DURABLE, ConfigType::String)
                .default_value("")
                .importance(Importance::Medium)
                .doc("The durable consumer's name; empty: sluice-<connector name>. Its position lives on the server: keep it stable")
                .build(),
            ConfigDefBuilder::new(DELIVER_POLICY, ConfigType::String)
                .default_value("all")
                .valid_values(&["all", "new", "last"])
                .importance(Importance::Medium)
                .doc("Where a consumer created now starts: all (the stream's first message), new, last")
                .build(),
            ConfigDefBuilder::new(ACK_WAIT, ConfigType::Int)
                .default_value("60000")
                .importance(Importance::Medium)
                .doc("Milliseconds the stream waits for an acknowledgement before it delivers a message again (a created consumer's ack wait)")
                .build(),
            ConfigDefBuilder::new(MAX_ACK_PENDING, ConfigType::Int)
                .default_value("1000")
                .importance(Importance::Medium)
                .doc("Messages delivered and not yet acknowledged at most (a created consumer's max ack pending); bounds what the tasks hold")
                .build(),
            ConfigDefBuilder::new(QUEUE_GROUP, ConfigType::String)
                .default_value("")
                .importance(Importance::Low)
                .doc("Core NATS: a queue group the tasks subscribe in, sharing the messages")
                .build(),
            ConfigDefBuilder::new(KAFKA_TOPIC, ConfigType::String)
                .importance(Importance::High)
                .doc("The Kafka topic to write to; ${subject} stands for the message's subject")
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
                name: crate::SERVERS.into(),
                message: e.message,
            });
        }
        if config.get_or(STREAM, "").is_empty() && config.get_or(SUBJECT, "").is_empty() {
            errors.push(FieldError {
                name: SUBJECT.into(),
                message: "core NATS (no nats.stream) needs a subject to subscribe to".into(),
            });
        }
        errors
    }

    fn plan(&self, config: &Config, max_tasks: usize) -> Result<Vec<Config>, TaskError> {
        // Core NATS without a queue group: every task would get every message.
        let tasks =
            if config.get_or(STREAM, "").is_empty() && config.get_or(QUEUE_GROUP, "").is_empty() {
                1
            } else {
                max_tasks.max(1)
            };
        Ok((0..tasks)
            .map(|i| {
                let mut task = config.clone();
                task.set(TASK_INDEX, i.to_string());
                task
            })
            .collect())
    }
}

impl SourceConnector for NatsSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(NatsSourceTask::default())
    }

    fn exactly_once_support(&self) -> ExactlyOnceSupport {
        ExactlyOnceSupport::Unsupported
    }
}

enum Feed {
    JetStream(Box<pull::Stream>),
    Core(async_nats::Subscriber),
}

/// A message as the task reads it, either kind.
struct Incoming {
    message: async_nats::Message,
    /// JetStream: (consumer sequence, stream sequence, deliveries so far).
    info: Option<(u64, u64, i64)>,
}

#[derive(Default)]
struct NatsSourceTask {
    connection: Option<Connection>,
    client: Option<async_nats::Client>,
    feed: Option<Feed>,
    kafka_topic: String,
    batch: usize,
    /// `{"nats.consumer": …, "nats.task": …}`: the task's source partition (JetStream).
    partition: Option<Arc<str>>,
    /// Messages delivered and not yet acknowledged, in order: consumer sequence and the
    /// subject to acknowledge on.
    unacked: VecDeque<(u64, Subject)>,
    commits: CommitSignal,
}

#[async_trait]
impl SourceTask for NatsSourceTask {
    async fn start(&mut self, ctx: SourceTaskContext) -> Result<(), TaskError> {
        let config = &ctx.config;
        let connection = Connection::from_config(config, &ctx.connector_name)?;
        self.commits = ctx.commits.clone();
        self.kafka_topic = config.required(KAFKA_TOPIC)?.to_string();
        self.batch = config.parse_or(BATCH_SIZE, 4096usize)?.max(1);
        let stream_name = config.get_or(STREAM, "").to_string();
        let subject = config.get_or(SUBJECT, "").to_string();
        let client = connection.connect().await?;
        let feed = if stream_name.is_empty() {
            if subject.is_empty() {
                return Err(TaskError::fatal(format!(
                    "{SUBJECT}: core NATS (no {STREAM}) needs a subject"
                )));
            }
            let group = config.get_or(QUEUE_GROUP, "");
            let subscriber = if group.is_empty() {
                client.subscribe(subject.clone()).await
            } else {
                client
                    .queue_subscribe(subject.clone(), group.to_string())
                    .await
            }
            .map_err(|e| TaskError::retriable(format!("NATS subscribe to {subject:?}: {e}")))?;
            tracing::info!(client = %connection.name, subject, "subscribed (core NATS, at most once)");
            Feed::Core(subscriber)
        } else {
            let durable = match config.get_or(DURABLE, "").trim() {
                "" => format!("sluice-{}", ctx.connector_name),
                name => name.to_string(),
            };
            let deliver_policy = match config.get_or(DELIVER_POLICY, "all") {
                "all" => DeliverPolicy::All,
                "new" => DeliverPolicy::New,
                "last" => DeliverPolicy::Last,
                other => {
                    return Err(TaskError::fatal(format!(
                        "{DELIVER_POLICY}: {other:?} is not all, new or last"
                    )))
                }
            };
            let jetstream = async_nats::jetstream::new(client.clone());
            let stream = jetstream.get_stream(&stream_name).await.map_err(|e| {
                let message = format!("NATS JetStream stream {stream_name:?}: {e}");
                use async_nats::jetstream::context::GetStreamErrorKind;
                if matches!(
                    e.kind(),
                    GetStreamErrorKind::JetStream(_)
                        | GetStreamErrorKind::InvalidStreamName
                        | GetStreamErrorKind::EmptyName
                ) {
                    TaskError::fatal(message)
                } else {
                    TaskError::retriable(message)
                }
            })?;
            let consumer: PullConsumer = stream
                .get_or_create_consumer(
                    &durable,
                    pull::Config {
                        durable_name: Some(durable.clone()),
                        filter_subject: subject.clone(),
                        ack_policy: AckPolicy::Explicit,
                        deliver_policy,
                        ack_wait: Duration::from_millis(config.parse_or(ACK_WAIT, 60_000u64)?),
                        max_ack_pending: config.parse_or(MAX_ACK_PENDING, 1000i64)?,
                        ..pull::Config::default()
                    },
                )
                .await
                .map_err(|e| {
                    TaskError::fatal(format!(
                        "NATS JetStream consumer {durable:?} on stream {stream_name:?}: {e}"
                    ))
                })?;
            // An existing consumer is used as it is; one that does not wait for explicit
            // acknowledgements would make this source at most once without a word.
            let ack_policy = consumer.cached_info().config.ack_policy;
            if ack_policy != AckPolicy::Explicit {
                return Err(TaskError::fatal(format!(
                    "NATS JetStream consumer {durable:?} on stream {stream_name:?} has ack policy {ack_policy:?}; this source needs explicit acknowledgements (delete the consumer, or name another in {DURABLE})"
                )));
            }
            let messages = consumer.messages().await.map_err(|e| {
                TaskError::retriable(format!("NATS JetStream consumer {durable:?}: {e}"))
            })?;
            self.partition = Some(
                serde_json::json!({ "nats.consumer": durable, "nats.task": connection.name })
                    .to_string()
                    .into(),
            );
            tracing::info!(client = %connection.name, stream = stream_name, consumer = durable, "consuming");
            Feed::JetStream(Box::new(messages))
        };
        self.feed = Some(feed);
        self.client = Some(client);
        self.connection = Some(connection);
        Ok(())
    }

    async fn poll(&mut self, max_records: usize) -> Result<Vec<SourceRecord>, TaskError> {
        let max = max_records.min(self.batch).max(1);
        // Wait a little for the first message, or until there is something to commit (the
        // consumer's max ack pending may be what holds the stream back); then take what is
        // there.
        let commits = self.commits.clone();
        let first = tokio::select! {
            first = tokio::time::timeout(Duration::from_millis(500), self.next()) => match first {
                Err(_) => return Ok(Vec::new()),
                Ok(first) => first?,
            },
            () = commits.pending() => return Ok(Vec::new()),
        };
        let mut records = vec![self.record(first)];
        while records.len() < max {
            match self.next().now_or_never() {
                Some(incoming) => records.push(self.record(incoming?)),
                None => break,
            }
        }
        Ok(records)
    }

    /// Acknowledges every message up to the committed one.
    async fn commit(&mut self, positions: &[(Arc<str>, String)]) -> Result<(), TaskError> {
        let (Some(partition), Some(client)) = (&self.partition, &self.client) else {
            return Ok(());
        };
        let Some((_, offset)) = positions.iter().find(|(p, _)| p == partition) else {
            return Ok(());
        };
        let committed = serde_json::from_str::<serde_json::Value>(offset)
            .ok()
            .and_then(|o| o.get("seq")?.as_u64())
            .ok_or_else(|| TaskError::fatal(format!("committed offset {offset} has no seq")))?;
        let mut sent = 0;
        while let Some((seq, _)) = self.unacked.front() {
            if *seq > committed {
                break;
            }
            let Some((_, reply)) = self.unacked.pop_front() else {
                break;
            };
            // A lost acknowledgement only means the message comes again after the ack wait.
            if client.publish(reply, "+ACK".into()).await.is_err() {
                break;
            }
            sent += 1;
        }
        if sent > 0 {
            let _ = client.flush().await;
        }
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), TaskError> {
        self.feed = None;
        if let Some(client) = self.client.take() {
            let _ = client.flush().await;
            let _ = client.drain().await;
        }
        Ok(())
    }
}

impl NatsSourceTask {
    fn server(&self) -> String {
        self.connection
            .as_ref()
            .map(Connection::server)
            .unwrap_or_default()
    }

    /// The next message, or why none will come.
    async fn next(&mut self) -> Result<Incoming, TaskError> {
        let server = self.server();
        match self.feed.as_mut() {
            None => Err(TaskError::fatal("the task was not started")),
            Some(Feed::Core(subscriber)) => match subscriber.next().await {
                Some(message) => Ok(Incoming {
                    message,
                    info: None,
                }),
                None => Err(TaskError::retriable(format!(
                    "NATS at {server}: the subscription ended"
                ))),
            },
            Some(Feed::JetStream(messages)) => match messages.next().await {
                Some(Ok(message)) => {
                    let info = message
                        .info()
                        .map(|i| (i.consumer_sequence, i.stream_sequence, i.delivered))
                        .map_err(|e| {
                            TaskError::retriable(format!(
                                "NATS JetStream message without delivery info: {e}"
                            ))
                        })?;
                    Ok(Incoming {
                        message: message.message,
                        info: Some(info),
                    })
                }
                Some(Err(e)) => Err(TaskError::retriable(format!(
                    "NATS JetStream at {server}: {e}"
                ))),
                None => Err(TaskError::retriable(format!(
                    "NATS JetStream at {server}: the consumer's messages ended"
                ))),
            },
        }
    }

    fn record(&mut self, incoming: Incoming) -> SourceRecord {
        let message = incoming.message;
        let subject = message.subject.as_str().to_string();
        let mut headers = vec![data::header("nats.subject", data::string(subject.as_str()))];
        let mut offset = None;
        if let Some((consumer_seq, stream_seq, delivered)) = incoming.info {
            headers.push(data::header(
                "nats.stream.sequence",
                data::int64(stream_seq as i64),
            ));
            headers.push(data::header("nats.delivered", data::int64(delivered)));
            if let Some(reply) = message.reply.clone() {
                self.unacked.push_back((consumer_seq, reply));
            }
            offset = Some(format!("{{\"seq\":{consumer_seq}}}"));
        }
        if let Some(map) = &message.headers {
            for (name, values) in map.iter() {
                for value in values {
                    headers.push(data::header(name.to_string(), data::string(value.as_str())));
                }
            }
        }
        SourceRecord {
            source_partition: offset.as_ref().and(self.partition.clone()),
            source_offset: offset,
            topic: kafka_topic(&self.kafka_topic, &subject),
            key: data::string(subject),
            value: data::bytes(message.payload.to_vec()),
            headers,
            ..SourceRecord::default()
        }
    }
}

/// `template` with `${subject}` replaced by `subject` as a Kafka topic name.
fn kafka_topic(template: &str, subject: &str) -> String {
    data::topic_from_template(template, TOKEN_SUBJECT, subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_become_kafka_topic_names() {
        assert_eq!(kafka_topic("fixed", "a.b"), "fixed");
        assert_eq!(
            kafka_topic("nats.${subject}", "orders.eu/1"),
            "nats.orders.eu_1"
        );
    }

    #[test]
    fn core_nats_without_a_queue_group_runs_one_task() {
        let core = Config::from([(SUBJECT, "a.>"), (KAFKA_TOPIC, "k")]);
        assert_eq!(NatsSource.plan(&core, 4).unwrap().len(), 1);
        let shared = Config::from([(SUBJECT, "a.>"), (QUEUE_GROUP, "g"), (KAFKA_TOPIC, "k")]);
        assert_eq!(NatsSource.plan(&shared, 4).unwrap().len(), 4);
        let js = Config::from([(STREAM, "S"), (KAFKA_TOPIC, "k")]);
        assert_eq!(
            NatsSource.plan(&js, 2).unwrap()[1].get(TASK_INDEX),
            Some("1")
        );
    }
}
