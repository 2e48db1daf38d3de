//! Helpers for tests of distributed mode: a blocking API client, datagen connector configs,
//! task placement checks and the counting verifier that reads datagen's records back from Kafka.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_proto::api::v1::{
    self as api, cluster_service_client::ClusterServiceClient,
    connector_service_client::ConnectorServiceClient,
};
use sluice_worker::mode::admin::{json_to_struct, struct_to_json};

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A blocking client of the public API.
pub struct Api {
    pub runtime: tokio::runtime::Runtime,
    url: String,
}

impl Api {
    pub fn new(address: &str) -> Api {
        Api {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            url: format!("http://{address}"),
        }
    }

    pub fn connectors(
        &self,
    ) -> Result<ConnectorServiceClient<tonic::transport::Channel>, tonic::Status> {
        self.runtime
            .block_on(ConnectorServiceClient::connect(self.url.clone()))
            .map_err(|e| tonic::Status::unavailable(e.to_string()))
    }

    pub fn status(&self, name: &str) -> Result<api::ConnectorStatus, tonic::Status> {
        let mut client = self.connectors()?;
        let request = api::ConnectorRef { name: name.into() };
        self.runtime
            .block_on(client.get_connector_status(request))
            .map(tonic::Response::into_inner)
    }

    /// The connectors' names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut client = self.connectors().unwrap();
        let listed = self
            .runtime
            .block_on(client.list_connectors(api::ListConnectorsRequest::default()))
            .unwrap()
            .into_inner();
        let mut names: Vec<String> = listed.connectors.into_iter().map(|c| c.name).collect();
        names.sort();
        names
    }

    pub fn create(&self, name: &str, config: &[(&str, &str)], initial: api::TargetState) {
        let mut client = self.connectors().unwrap();
        let request = api::CreateConnectorRequest {
            name: name.into(),
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            initial_state: initial as i32,
        };
        self.runtime
            .block_on(client.create_connector(request))
            .unwrap_or_else(|s| panic!("create {name}: {s:?}"));
    }

    pub fn target(&self, name: &str, method: &str) {
        let mut client = self.connectors().unwrap();
        let request = api::ConnectorRef { name: name.into() };
        let result = match method {
            "stop" => self.runtime.block_on(client.stop_connector(request)),
            "resume" => self.runtime.block_on(client.resume_connector(request)),
            "pause" => self.runtime.block_on(client.pause_connector(request)),
            other => panic!("no method {other}"),
        };
        result.unwrap_or_else(|s| panic!("{method} {name}: {s:?}"));
    }

    /// (partition JSON, offset JSON) pairs, sorted.
    pub fn offsets(&self, name: &str) -> Vec<(String, String)> {
        let mut client = self.connectors().unwrap();
        let request = api::ConnectorRef { name: name.into() };
        let offsets = self
            .runtime
            .block_on(client.get_offsets(request))
            .unwrap_or_else(|s| panic!("offsets of {name}: {s:?}"))
            .into_inner();
        let mut pairs: Vec<(String, String)> = offsets
            .offsets
            .iter()
            .map(|o| (json(o.partition.as_ref()), json(o.offset.as_ref())))
            .collect();
        pairs.sort();
        pairs
    }

    pub fn alter(&self, name: &str, offsets: &[(&str, Option<&str>)]) -> Result<(), tonic::Status> {
        let mut client = self.connectors()?;
        let request = api::AlterOffsetsRequest {
            name: name.into(),
            offsets: offsets
                .iter()
                .map(|(p, o)| api::ConnectorOffset {
                    partition: Some(to_struct(p)),
                    offset: o.map(to_struct),
                })
                .collect(),
        };
        self.runtime
            .block_on(client.alter_offsets(request))
            .map(|_| ())
    }

    pub fn reset(&self, name: &str) -> Result<(), tonic::Status> {
        let mut client = self.connectors()?;
        let request = api::ConnectorRef { name: name.into() };
        self.runtime
            .block_on(client.reset_offsets(request))
            .map(|_| ())
    }

    pub fn topics(&self, name: &str) -> Vec<String> {
        let Ok(mut client) = self.connectors() else {
            return Vec::new();
        };
        let request = api::ConnectorRef { name: name.into() };
        self.runtime
            .block_on(client.get_connector_topics(request))
            .map(|r| r.into_inner().topics)
            .unwrap_or_default()
    }

    pub fn live_workers(&self) -> usize {
        let Ok(mut client) = self
            .runtime
            .block_on(ClusterServiceClient::connect(self.url.clone()))
        else {
            return 0;
        };
        self.runtime
            .block_on(client.list_workers(api::ListWorkersRequest::default()))
            .map(|r| r.into_inner().workers.iter().filter(|w| w.alive).count())
            .unwrap_or(0)
    }
}

/// A protobuf Struct as compact JSON (a Struct's keys come sorted).
pub fn json(s: Option<&prost_types::Struct>) -> String {
    s.map(|s| struct_to_json(s).to_string()).unwrap_or_default()
}

pub fn to_struct(text: &str) -> prost_types::Struct {
    json_to_struct(&serde_json::from_str(text).unwrap()).expect("a JSON object")
}

/// `sluice connectors --controller URL ARGS...`: (exit code, stdout, stderr).
pub fn connectors_cli(dir: &std::path::Path, url: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["connectors", "--controller", url];
    all.extend_from_slice(args);
    super::run_sluice(dir, &all)
}

/// Task id → (state, worker) of a connector, or empty when the API does not answer.
pub fn tasks(api: &Api, name: &str) -> BTreeMap<u32, (api::State, String)> {
    api.status(name)
        .map(|s| {
            s.tasks
                .iter()
                .map(|t| (t.id, (t.state(), t.worker_id.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// True when `n` tasks are in `state` and spread over `workers` with at most `per_worker` each.
pub fn all_in(
    tasks: &BTreeMap<u32, (api::State, String)>,
    n: usize,
    state: api::State,
    workers: &[&str],
) -> bool {
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for (s, w) in tasks.values() {
        if *s != state || !workers.contains(&w.as_str()) {
            return false;
        }
        *per.entry(w).or_default() += 1;
    }
    let fair = n.div_ceil(workers.len());
    tasks.len() == n && per.values().all(|&c| c <= fair)
}

pub fn owners(tasks: &BTreeMap<u32, (api::State, String)>) -> BTreeMap<u32, String> {
    tasks.iter().map(|(t, (_, w))| (*t, w.clone())).collect()
}

pub fn datagen(topic: &str, tasks: &str, rate: &str) -> Vec<(&'static str, String)> {
    vec![
        ("connector.class", "DatagenSource".into()),
        ("topic", topic.into()),
        ("tasks.max", tasks.into()),
        ("rate", rate.into()),
        ("record.size", "64".into()),
        (
            "value.converter",
            "org.apache.kafka.connect.storage.StringConverter".into(),
        ),
        (
            "key.converter",
            "org.apache.kafka.connect.storage.StringConverter".into(),
        ),
    ]
}

/// A FileStreamSink of `topics` into `file`, keys and values as strings.
pub fn file_sink(topics: &str, file: &str) -> Vec<(&'static str, String)> {
    vec![
        ("connector.class", "FileStreamSink".into()),
        ("topics", topics.into()),
        ("file", file.into()),
        (
            "value.converter",
            "org.apache.kafka.connect.storage.StringConverter".into(),
        ),
        (
            "key.converter",
            "org.apache.kafka.connect.storage.StringConverter".into(),
        ),
    ]
}

/// Kafka Connect's error-handling keys for a connector under test: `errors.tolerance`, and a
/// dead-letter topic (replication 1) with the context headers.
pub fn error_policy(tolerance: &str, dlq_topic: &str) -> Vec<(&'static str, String)> {
    vec![
        ("errors.tolerance", tolerance.to_string()),
        ("errors.deadletterqueue.topic.name", dlq_topic.to_string()),
        (
            "errors.deadletterqueue.topic.replication.factor",
            "1".into(),
        ),
        (
            "errors.deadletterqueue.context.headers.enable",
            "true".into(),
        ),
    ]
}

pub fn pairs<'a>(config: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    config.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The end offset of each partition of `topic`, by partition.
pub fn high_watermarks(bootstrap: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let mut ids: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    ids.sort();
    ids.into_iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .unwrap()
                .1
        })
        .collect()
}

/// Records in `topic` (sum of high watermarks).
pub fn total_records(bootstrap: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return 0;
    };
    metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .filter_map(|p| {
            consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(5))
                .ok()
        })
        .map(|(low, high)| high - low)
        .sum()
}

/// What the counting verifier found in a topic written by datagen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: usize,
    /// Sequence numbers missing: below the highest seen per task, or below the task's expected
    /// count when one is given.
    pub lost: usize,
    /// Records whose (task, sequence number) was seen before.
    pub duplicates: usize,
    /// Datagen tasks seen.
    pub tasks: usize,
    /// Distinct (task, sequence number) pairs.
    pub unique: usize,
    /// Duplicated sequence numbers as (task, first, last) ranges, for the failure message.
    pub duplicated_ranges: Vec<(u32, u64, u64)>,
    /// Duplicates by task, where there are any.
    pub duplicates_by_task: std::collections::BTreeMap<u32, usize>,
}

/// Every datagen record of `topic` (committed ones only when `read_committed`), in the order
/// read: (task, sequence number, timestamp in ms).
pub fn read_datagen(bootstrap: &str, topic: &str, read_committed: bool) -> Vec<(u32, u64, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "verifier")
        .set("enable.partition.eof", "true")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let mut pending = BTreeSet::new();
    let mut assignment = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        pending.insert(p.id());
        assignment
            .add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "could not read {topic} to its end"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            // Transient (a broker that just came back): the deadline catches lasting ones.
            Some(Err(e)) => eprintln!("verifier: read {topic}: {e}"),
            Some(Ok(m)) => {
                let value = std::str::from_utf8(m.payload().unwrap_or_default()).unwrap();
                let (task, seq) = sluice_connector_datagen::parse_value(value)
                    .unwrap_or_else(|| panic!("not a datagen value: {value:?}"));
                records.push((task, seq, m.timestamp().to_millis().unwrap_or_default()));
            }
        }
    }
    records
}

/// Reads every record of `topic` (committed ones only when `read_committed`) and counts, per
/// datagen task, lost and duplicated sequence numbers. `expected` holds each task's record
/// count when the stream is finite: then a missing tail counts as lost too.
pub fn verify(
    bootstrap: &str,
    topic: &str,
    read_committed: bool,
    expected: Option<&[u64]>,
) -> Verified {
    verify_records(&read_datagen(bootstrap, topic, read_committed), expected)
}

/// [`verify`] of records already read.
pub fn verify_records(read: &[(u32, u64, i64)], expected: Option<&[u64]>) -> Verified {
    let mut seqs: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (task, seq, _) in read {
        seqs.entry(*task).or_default().push(*seq);
    }
    let records = read.len();
    let mut verified = Verified {
        records,
        tasks: seqs.len(),
        ..Verified::default()
    };
    let tasks = expected
        .map_or(0, <[u64]>::len)
        .max(seqs.keys().next_back().map_or(0, |t| *t as usize + 1));
    for task in 0..tasks as u32 {
        let list = seqs.get(&task).map(Vec::as_slice).unwrap_or_default();
        let unique: BTreeSet<u64> = list.iter().copied().collect();
        let duplicates = list.len() - unique.len();
        verified.duplicates += duplicates;
        if duplicates > 0 {
            verified.duplicates_by_task.insert(task, duplicates);
        }
        let mut sorted = list.to_vec();
        sorted.sort_unstable();
        for pair in sorted.windows(2).filter(|w| w[0] == w[1]) {
            match verified.duplicated_ranges.last_mut() {
                Some((t, _, last)) if *t == task && *last + 1 >= pair[0] => *last = pair[0],
                _ => verified.duplicated_ranges.push((task, pair[0], pair[0])),
            }
        }
        verified.unique += unique.len();
        let end = match expected.and_then(|e| e.get(task as usize)) {
            Some(&count) => count,
            None => unique.last().map_or(0, |m| m + 1),
        };
        verified.lost += (0..end).filter(|s| !unique.contains(s)).count();
    }
    verified
}

/// [`verify`] for an endless stream read uncommitted: (records, lost, duplicates, tasks seen).
pub fn verify_datagen(bootstrap: &str, topic: &str) -> (usize, usize, usize, usize) {
    let v = verify(bootstrap, topic, false, None);
    (v.records, v.lost, v.duplicates, v.tasks)
}

/// How datagen splits `count` records over `tasks` tasks.
pub fn datagen_counts(count: u64, tasks: u64) -> Vec<u64> {
    (0..tasks)
        .map(|i| count / tasks + u64::from(i < count % tasks))
        .collect()
}

/// Every record of `topic` with its headers: (partition, offset, value, headers).
pub type Read = (i32, i64, Option<Vec<u8>>, BTreeMap<String, String>);

pub fn read_all(bootstrap: &str, topic: &str) -> Vec<Read> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::{Headers as _, Message as _};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "dlq-reader")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return Vec::new();
    };
    let mut list = rdkafka::TopicPartitionList::new();
    let mut pending = std::collections::BTreeSet::new();
    for p in metadata.topics()[0].partitions() {
        list.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .unwrap();
        pending.insert(p.id());
    }
    consumer.assign(&list).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while !pending.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                                (h.key.to_string(), v.into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    m.partition(),
                    m.offset(),
                    m.payload().map(<[u8]>::to_vec),
                    headers,
                ));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            _ => {}
        }
    }
    out
}

pub fn produce(bootstrap: &str, topic: &str, values: &[String]) {
    let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    produce_bytes(bootstrap, topic, &values);
}

/// Produces `values` to `topic` with no key.
pub fn produce_bytes(bootstrap: &str, topic: &str, values: &[&[u8]]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for v in values {
        producer
            .send(BaseRecord::<(), [u8]>::to(topic).payload(*v))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}
