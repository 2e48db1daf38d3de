//! The Redis connectors against the Redis of this machine (`SLUICE_TEST_REDIS_URL`, the tests'
//! default otherwise), each figure beside a plain client of the same library doing the same
//! Redis work in the same run:
//! - `source_redis_stream`: RedisStreamSource (XREADGROUP, 1,000 entries a read) → worker →
//!   JsonConverter → Kafka, until the last entry's offset is committed (and so acknowledged);
//!   baseline: a loop of the same XREADGROUP reads, every entry's fields taken, each read's
//!   IDs acknowledged with one XACK;
//! - `sink_redis_xadd`: Kafka (JSON objects) → worker → RedisSink (XADD, one pipeline per
//!   batch), until the stream holds every record; baseline: the same entries added with
//!   XADD pipelines of 1,000.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use redis::aio::MultiplexedConnection;
use sluice_data::converter::{Converter, Side};
use sluice_proto::connector::v1::ConnectorType;
use sluice_worker::runner::producer_config;
use sluice_worker::task::offsets::OffsetStore;

use crate::databases::{json_converter, run_until};
use crate::{send, spec_with, worker_context, Figure, TIMEOUT};

/// The sink figure's topic, created before the run.
pub const TOPIC: &str = "bench-sink-redis";
const READ: usize = 1_000;

fn url() -> String {
    std::env::var("SLUICE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn connect() -> anyhow::Result<MultiplexedConnection> {
    let url = url();
    redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connect to Redis at {url}"))
}

/// Entry `i`'s fields: its number and 80 bytes of text.
fn fields(i: u64) -> [(&'static str, String); 2] {
    [("seq", i.to_string()), ("text", format!("{i:0>80}"))]
}

pub async fn figures(bootstrap: &str, entries: u64) -> anyhow::Result<Vec<Figure>> {
    let key = format!("sluice-bench:{}", std::process::id());
    let result = async {
        Ok::<_, anyhow::Error>(vec![
            source(bootstrap, &key, entries).await?,
            sink(bootstrap, &key, entries).await?,
        ])
    }
    .await;
    // Leave nothing behind, whatever happened: the keys and the sink's offsets.
    if let Ok(mut con) = connect().await {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{key}*"))
            .query_async(&mut con)
            .await
            .unwrap_or_default();
        let offsets: Vec<String> = redis::cmd("KEYS")
            .arg(format!(
                "sluice:sink-offset:bench-redis-sink-{}:*",
                std::process::id()
            ))
            .query_async(&mut con)
            .await
            .unwrap_or_default();
        keys.extend(offsets);
        if !keys.is_empty() {
            let _: redis::RedisResult<()> =
                redis::cmd("DEL").arg(&keys).query_async(&mut con).await;
        }
    }
    result
}

async fn source(bootstrap: &str, key: &str, entries: u64) -> anyhow::Result<Figure> {
    let mut con = connect().await?;
    let stream = format!("{key}:in");
    let mut last = String::new();
    for chunk in (0..entries).collect::<Vec<_>>().chunks(READ) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.cmd("XADD").arg(&stream).arg("*").arg(&fields(i));
        }
        let ids: Vec<String> = pipe.query_async(&mut con).await?;
        last = ids.last().cloned().unwrap_or_default();
    }

    // The baseline: the same reads through a group of its own, acknowledged per read.
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("baseline")
        .arg("0-0")
        .query_async(&mut con)
        .await?;
    let started = Instant::now();
    let mut read = 0u64;
    while read < entries {
        let reply: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("baseline")
            .arg("c")
            .arg("COUNT")
            .arg(READ)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut con)
            .await?;
        let ids = entry_ids(&reply)?;
        if ids.is_empty() {
            bail!("the baseline read {read} of {entries} entries");
        }
        read += ids.len() as u64;
        let _: i64 = redis::cmd("XACK")
            .arg(&stream)
            .arg("baseline")
            .arg(&ids)
            .query_async(&mut con)
            .await?;
    }
    let baseline = started.elapsed().as_secs_f64();

    let name = "bench-redis-source";
    let mut spec = spec_with(
        name,
        ConnectorType::Source,
        "RedisStreamSource",
        &[
            ("redis.uri", url()),
            ("redis.stream.name", stream.clone()),
            ("topic", "bench-redis-source".into()),
            ("batch.size", READ.to_string()),
        ],
        "--redis-connector",
    )?;
    spec.conversion.key = json_converter(Side::Key);
    spec.conversion.value = json_converter(Side::Value);
    let offsets = Arc::new(OffsetStore::open(None)?);
    let ctx = worker_context(bootstrap, offsets.clone());
    let done = serde_json::json!({ "offset": last }).to_string();
    let secs = run_until(spec, ctx, || {
        let finished = offsets
            .local_positions(name)
            .iter()
            .any(|p| p.offset == done);
        async move { Ok(finished) }
    })
    .await?;
    Ok(Figure {
        name: "source_redis_stream".into(),
        records: entries,
        size: 0,
        secs,
        baseline_secs: baseline,
    })
}

/// Every entry's fields read out of an XREADGROUP reply, and its ID returned.
fn entry_ids(reply: &redis::Value) -> anyhow::Result<Vec<String>> {
    use redis::Value;
    let mut ids = Vec::new();
    let Value::Array(streams) = reply else {
        return Ok(ids);
    };
    for stream in streams {
        let Value::Array(parts) = stream else {
            bail!("a malformed stream in {reply:?}");
        };
        let Some(Value::Array(entries)) = parts.get(1) else {
            continue;
        };
        for entry in entries {
            let Value::Array(entry) = entry else {
                bail!("a malformed entry");
            };
            let (Some(Value::BulkString(id)), Some(Value::Array(fields))) =
                (entry.first(), entry.get(1))
            else {
                bail!("a malformed entry");
            };
            let mut taken = 0;
            for field in fields {
                if let Value::BulkString(b) = field {
                    taken += std::hint::black_box(b).len();
                }
            }
            std::hint::black_box(taken);
            ids.push(String::from_utf8(id.clone())?);
        }
    }
    Ok(ids)
}

async fn sink(bootstrap: &str, key: &str, entries: u64) -> anyhow::Result<Figure> {
    let mut con = connect().await?;
    {
        let bootstrap = bootstrap.to_string();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let producer: ThreadedProducer<DefaultProducerContext> =
                producer_config(&bootstrap, BTreeMap::new()).create()?;
            for i in 0..entries {
                let [(_, seq), (_, text)] = fields(i);
                let value = format!(r#"{{"seq":"{seq}","text":"{text}"}}"#);
                send(
                    &producer,
                    BaseRecord::<(), str>::to(TOPIC).payload(value.as_str()),
                );
            }
            producer.flush(TIMEOUT)?;
            Ok(())
        })
        .await??;
    }

    // The baseline: the same entries, XADD pipelines of READ.
    let base = format!("{key}:base");
    let started = Instant::now();
    for chunk in (0..entries).collect::<Vec<_>>().chunks(READ) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.cmd("XADD")
                .arg(&base)
                .arg("*")
                .arg(&fields(i))
                .ignore();
        }
        let () = pipe.query_async(&mut con).await?;
    }
    let baseline = started.elapsed().as_secs_f64();

    let out = format!("{key}:out");
    // The sink keeps its offsets in Redis by connector name: a name of this run's own, so
    // that no earlier run's offsets (against another broker) are taken for this one's.
    let name = format!("bench-redis-sink-{}", std::process::id());
    let name = name.as_str();
    let mut spec = spec_with(
        name,
        ConnectorType::Sink,
        "RedisSink",
        &[
            ("redis.uri", url()),
            ("topics", TOPIC.into()),
            ("redis.command", "XADD".into()),
            ("redis.key", out.clone()),
        ],
        "--redis-connector",
    )?;
    spec.conversion.value = schemaless_json();
    let ctx = worker_context(bootstrap, Arc::new(OffsetStore::open(None)?));
    let counter = Arc::new(tokio::sync::Mutex::new(connect().await?));
    let secs = run_until(spec, ctx, || {
        let (counter, out) = (counter.clone(), out.clone());
        async move {
            let len: u64 = redis::cmd("XLEN")
                .arg(&out)
                .query_async(&mut *counter.lock().await)
                .await?;
            Ok(len >= entries)
        }
    })
    .await?;
    Ok(Figure {
        name: "sink_redis_xadd".into(),
        records: entries,
        size: 0,
        secs,
        baseline_secs: baseline,
    })
}

fn schemaless_json() -> Converter {
    Converter::new(
        "org.apache.kafka.connect.json.JsonConverter",
        &BTreeMap::from([("schemas.enable".to_string(), "false".to_string())]),
        Side::Value,
    )
    .expect("JsonConverter is built in")
}
