//! Requests the controller hands to a worker because they need Kafka: reading, altering and
//! resetting a connector's offsets. Offsets have Kafka Connect's shapes: a source connector's
//! own partition and offset maps; for a sink, `{"kafka_topic", "kafka_partition"}` and
//! `{"kafka_offset"}` of its consumer group `connect-<name>`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use sluice_proto::api::v1 as api;
use sluice_proto::cluster::v1::{self as wire, worker_request, worker_response};
pub use sluice_proto::structs::{json_to_struct, struct_to_json};

use crate::kafka::log::KafkaLog;
use crate::task::offsets::OffsetStore;
use sluice_model::{ConfigFile, ConnectorConfig};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);
const GROUP_JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed: the request was wrong, or carrying it out failed.
pub enum Failure {
    Invalid(String),
    Error(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Error(e)
    }
}

/// Carries out one request and builds the answer.
pub async fn handle(
    worker_id: &str,
    request: wire::WorkerRequest,
    offsets: &OffsetStore,
    consumer_config: &ClientConfig,
) -> wire::WorkerResponse {
    let result = match carry_out(request.clone(), offsets, consumer_config).await {
        Ok(offsets) => worker_response::Result::Offsets(api::ConnectorOffsets { offsets }),
        Err(Failure::Invalid(m)) => worker_response::Result::Invalid(m),
        Err(Failure::Error(e)) => worker_response::Result::Error(format!("{e:#}")),
    };
    wire::WorkerResponse {
        worker_id: worker_id.to_string(),
        id: request.id,
        result: Some(result),
    }
}

async fn carry_out(
    request: wire::WorkerRequest,
    offsets: &OffsetStore,
    consumer_config: &ClientConfig,
) -> Result<Vec<api::ConnectorOffset>, Failure> {
    let connector = request
        .connector
        .ok_or_else(|| Failure::Invalid("the request names no connector".into()))?;
    let sink = request.r#type == api::ConnectorType::Sink as i32;
    let config: BTreeMap<String, String> = connector.config.into_iter().collect();
    let name = connector.name;
    match request.kind {
        None => Err(Failure::Invalid("empty request".into())),
        Some(worker_request::Kind::SetLogLevel(_)) => Err(Failure::Invalid(
            "logger levels are not an offsets request".into(),
        )),
        Some(worker_request::Kind::ReadOffsets(_)) if sink => {
            let group = group_config(consumer_config, &name);
            let topics = sink_topics(&name, &config);
            Ok(run_blocking(move || read_group(&group, topics?)).await?)
        }
        Some(worker_request::Kind::ReadOffsets(_)) => source_offsets(offsets, &name).await,
        Some(worker_request::Kind::AlterOffsets(alter)) if sink => {
            let group = group_config(consumer_config, &name);
            let changes = if alter.reset_all {
                None
            } else {
                Some(
                    alter
                        .offsets
                        .iter()
                        .map(sink_change)
                        .collect::<Result<Vec<_>, _>>()?,
                )
            };
            let topics = sink_topics(&name, &config);
            run_blocking(move || alter_group(&group, topics?, changes)).await?;
            Ok(Vec::new())
        }
        Some(worker_request::Kind::AlterOffsets(alter)) => {
            // Read first, so partitions are matched against what was committed.
            let current = offsets.positions(&name).await?;
            if alter.reset_all {
                offsets.reset(&name, None);
            } else {
                for change in &alter.offsets {
                    let partition = change.partition.as_ref().ok_or_else(|| {
                        Failure::Invalid("an offset without its partition".into())
                    })?;
                    let wanted = struct_to_json(partition);
                    // The connector's own text for this partition, if it committed one.
                    let text = current
                        .iter()
                        .find(|p| {
                            serde_json::from_str::<serde_json::Value>(&p.partition).ok()
                                == Some(wanted.clone())
                        })
                        .map(|p| p.partition.clone())
                        .unwrap_or_else(|| wanted.to_string());
                    match &change.offset {
                        Some(offset) => {
                            let offset = struct_to_json(offset).to_string();
                            offsets.commit(&name, [(text.as_str(), offset.as_str())]);
                        }
                        None => offsets.reset(&name, Some(vec![text])),
                    }
                }
            }
            offsets.flush().await?;
            Ok(Vec::new())
        }
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::Error(anyhow!("offsets worker: {e}")))?
}

async fn source_offsets(
    offsets: &OffsetStore,
    name: &str,
) -> Result<Vec<api::ConnectorOffset>, Failure> {
    let positions = offsets.positions(name).await?;
    positions
        .into_iter()
        .map(|p| {
            let parse = |text: &str, what: &str| {
                serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| json_to_struct(&v))
                    .ok_or_else(|| {
                        Failure::Error(anyhow!(
                            "the committed {what} {text} of connector {name} is not a JSON object"
                        ))
                    })
            };
            Ok(api::ConnectorOffset {
                partition: Some(parse(&p.partition, "partition")?),
                offset: Some(parse(&p.offset, "offset")?),
            })
        })
        .collect()
}

fn group_config(consumer_config: &ClientConfig, connector: &str) -> ClientConfig {
    let mut config = consumer_config.clone();
    config.set("group.id", format!("connect-{connector}"));
    config.set("enable.auto.commit", "false");
    config
}

/// The sink's subscription, from its `topics` (a list) or `topics.regex`, read as the worker
/// reads them when it runs the sink.
fn sink_topics(name: &str, config: &BTreeMap<String, String>) -> Result<Subscription, Failure> {
    let file = ConfigFile::from_values(format!("connector {name}"), config.clone());
    let settings =
        ConnectorConfig::from_file(&file).map_err(|e| Failure::Invalid(e.to_string()))?;
    match settings.topics_regex {
        Some(regex) => regex::Regex::new(&format!("^(?:{regex})$"))
            .map(Subscription::Regex)
            .map_err(|e| Failure::Invalid(format!("topics.regex: {e}"))),
        None => Ok(Subscription::Topics(settings.topics)),
    }
}

enum Subscription {
    Topics(Vec<String>),
    Regex(regex::Regex),
}

/// Every partition of the subscribed topics.
fn partitions(
    consumer: &BaseConsumer<KafkaLog>,
    subscription: &Subscription,
) -> anyhow::Result<Vec<(String, i32)>> {
    let metadata = consumer
        .fetch_metadata(None, KAFKA_TIMEOUT)
        .context("read topic metadata")?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| match subscription {
            Subscription::Topics(list) => list.iter().any(|n| n == t.name()),
            Subscription::Regex(r) => r.is_match(t.name()),
        })
        .flat_map(|t| {
            t.partitions()
                .iter()
                .map(|p| (t.name().to_string(), p.id()))
        })
        .collect())
}

fn read_group(
    config: &ClientConfig,
    subscription: Subscription,
) -> Result<Vec<api::ConnectorOffset>, Failure> {
    let consumer: BaseConsumer<KafkaLog> = config
        .create_with_context(KafkaLog::new("offsets admin consumer"))
        .context("create a consumer")?;
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions(&consumer, &subscription)? {
        list.add_partition(&topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, KAFKA_TIMEOUT)
        .context("read the consumer group's committed offsets")?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(n) => Some(sink_offset(e.topic(), e.partition(), n)),
            _ => None,
        })
        .collect())
}

fn sink_offset(topic: &str, partition: i32, offset: i64) -> api::ConnectorOffset {
    let partition = serde_json::json!({"kafka_topic": topic, "kafka_partition": partition});
    let offset = serde_json::json!({ "kafka_offset": offset });
    api::ConnectorOffset {
        partition: json_to_struct(&partition),
        offset: json_to_struct(&offset),
    }
}

/// (topic, partition, new offset or `None` to reset) from a sink offset.
fn sink_change(o: &api::ConnectorOffset) -> Result<(String, i32, Option<i64>), Failure> {
    let partition = o.partition.as_ref().map(struct_to_json).unwrap_or_default();
    let topic = partition["kafka_topic"]
        .as_str()
        .ok_or_else(|| Failure::Invalid("partition.kafka_topic must be a string".into()))?;
    let number = partition["kafka_partition"]
        .as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| Failure::Invalid("partition.kafka_partition must be an integer".into()))?;
    let offset = match &o.offset {
        None => None,
        Some(offset) => Some(
            struct_to_json(offset)["kafka_offset"]
                .as_i64()
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    Failure::Invalid("offset.kafka_offset must be a non-negative integer".into())
                })?,
        ),
    };
    Ok((topic.to_string(), number, offset))
}

/// Commits new offsets for the group; a reset commits the partition's earliest offset (the
/// same place `auto.offset.reset=earliest` starts from).
fn alter_group(
    config: &ClientConfig,
    subscription: Subscription,
    changes: Option<Vec<(String, i32, Option<i64>)>>,
) -> Result<(), Failure> {
    let consumer: BaseConsumer<KafkaLog> = config
        .create_with_context(KafkaLog::new("offsets admin consumer"))
        .context("create a consumer")?;
    let changes = match changes {
        Some(c) => c,
        None => partitions(&consumer, &subscription)?
            .into_iter()
            .map(|(t, p)| (t, p, None))
            .collect(),
    };
    let mut list = TopicPartitionList::new();
    for (topic, partition, offset) in changes {
        let offset = match offset {
            Some(n) => n,
            None => {
                consumer
                    .fetch_watermarks(&topic, partition, KAFKA_TIMEOUT)
                    .with_context(|| format!("read the start of {topic}[{partition}]"))?
                    .0
            }
        };
        list.add_partition_offset(&topic, partition, Offset::Offset(offset))
            .context("offset list")?;
    }
    if list.count() == 0 {
        return Ok(());
    }
    // Brokers (the mock cluster among them) refuse commits from outside a group that has
    // ever had members; so join it, as the only member since the connector is stopped, and
    // commit as a member.
    let topics: Vec<String> = list
        .elements()
        .iter()
        .map(|e| e.topic().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&names)
        .context("join the connector's consumer group")?;
    let deadline = std::time::Instant::now() + GROUP_JOIN_TIMEOUT;
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        if std::time::Instant::now() > deadline {
            return Err(Failure::Error(anyhow!(
                "could not join consumer group {} within {GROUP_JOIN_TIMEOUT:?}; is a task of the connector still running?",
                config.get("group.id").unwrap_or_default()
            )));
        }
        // Records fetched here are dropped; only the commit below counts.
        let _ = consumer.poll(Duration::from_millis(100));
    }
    consumer
        .commit(&list, CommitMode::Sync)
        .context("commit the consumer group's offsets")?;
    consumer.unsubscribe();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_through_struct_with_integers_kept() {
        let json =
            serde_json::json!({"file": "/a", "position": 42, "ratio": 0.5, "l": [1, null, true]});
        let back = struct_to_json(&json_to_struct(&json).unwrap());
        assert_eq!(back, json);
        assert!(json_to_struct(&serde_json::json!(3)).is_none());
    }

    #[test]
    fn sink_offsets_are_checked_field_by_field() {
        let good = sink_offset("t", 2, 7);
        assert_eq!(sink_change(&good).ok(), Some(("t".into(), 2, Some(7))));
        let bad = api::ConnectorOffset {
            partition: json_to_struct(&serde_json::json!({"kafka_topic": "t"})),
            offset: None,
        };
        match sink_change(&bad) {
            Err(Failure::Invalid(m)) => assert!(m.contains("kafka_partition"), "{m}"),
            _ => panic!("accepted a partition without kafka_partition"),
        }
    }
}
