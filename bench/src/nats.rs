//! The NATS connectors against the NATS server of this machine (`SLUICE_BENCH_NATS`, default
//! nats://127.0.0.1:4222, JetStream enabled), each figure beside a plain async-nats client
//! doing the same work in the same run, on a stream of the run's own (deleted at the end):
//! - `source_nats_jetstream`: a backlog of 100-byte messages in the stream → NatsSource
//!   (durable pull consumer, explicit acks after the worker's commit) → worker → Kafka, until
//!   the last message's offset is committed; baseline: a durable pull consumer of the same
//!   configuration taking the same backlog, acknowledging each message as it arrives;
//! - `sink_nats_jetstream`: Kafka (100-byte values) → worker → NatsSink (JetStream publish
//!   acks), until the stream holds every message; baseline: the same messages published to
//!   JetStream by one client, acks awaited in windows of 2,048.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt as _;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use sluice_data::converter::Side;
use sluice_proto::connector::v1::ConnectorType;
use sluice_worker::runner::producer_config;
use sluice_worker::task::offsets::OffsetStore;

use crate::databases::run_sink_until;
use crate::mqtt::byte_array_converter;
use crate::{
    run_until_committed, send, spec_with, string_converter, worker_context, Figure, TIMEOUT,
};

/// The sink figure's topic, created before the run.
pub const TOPIC: &str = "bench-sink-nats";
const PAYLOAD: usize = 100;
const MAX_ACK_PENDING: i64 = 1000;

fn url() -> String {
    std::env::var("SLUICE_BENCH_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Message `i`: its number, padded to PAYLOAD bytes.
fn payload(i: u64) -> Vec<u8> {
    format!("{i:0>PAYLOAD$}").into_bytes()
}

/// Publishes `count` messages to `subject` on JetStream, acks awaited in windows.
async fn publish(js: &jetstream::Context, subject: &str, count: u64) -> anyhow::Result<()> {
    let mut waiting = VecDeque::new();
    for i in 0..count {
        if waiting.len() >= 2048 {
            if let Some(ack) = waiting.pop_front() {
                ack.await?;
            }
        }
        waiting.push_back(js.publish(subject.to_string(), payload(i).into()).await?);
    }
    for ack in waiting {
        ack.await?;
    }
    Ok(())
}

async fn stored(js: &jetstream::Context, stream: &str) -> anyhow::Result<u64> {
    let mut stream = js.get_stream(stream).await?;
    Ok(stream.info().await?.state.messages)
}

pub async fn figures(bootstrap: &str, messages: u64) -> anyhow::Result<Vec<Figure>> {
    let url = url();
    let client = async_nats::connect(&url)
        .await
        .with_context(|| format!("connect to NATS at {url}"))?;
    let js = jetstream::new(client);
    let run = format!("bench-nats-{}", std::process::id());
    let streams = [
        format!("BENCH_NATS_IN_{}", std::process::id()),
        format!("BENCH_NATS_OUT_{}", std::process::id()),
    ];
    for (name, subject) in streams.iter().zip(["in", "out"]) {
        js.create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{run}.{subject}.>")],
            max_age: Duration::from_secs(600),
            ..Default::default()
        })
        .await?;
    }
    let figures = async {
        let mut figures = vec![source(&js, &run, &streams[0], bootstrap, messages).await?];
        figures.extend(sink(&js, &run, &streams[1], bootstrap, messages).await?);
        Ok::<_, anyhow::Error>(figures)
    }
    .await;
    for name in &streams {
        let _ = js.delete_stream(name).await;
    }
    figures
}

fn consumer_config(durable: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(durable.to_string()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        max_ack_pending: MAX_ACK_PENDING,
        ..pull::Config::default()
    }
}

async fn source(
    js: &jetstream::Context,
    run: &str,
    stream_name: &str,
    bootstrap: &str,
    messages: u64,
) -> anyhow::Result<Figure> {
    publish(js, &format!("{run}.in.t"), messages).await?;
    let stream = js.get_stream(stream_name).await?;
    // The connector's consumer exists before it starts, configured as the baseline's.
    stream
        .get_or_create_consumer("bench-source", consumer_config("bench-source"))
        .await?;

    // The baseline: its own durable consumer over the same backlog, acknowledging each.
    let started = Instant::now();
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer("bench-baseline", consumer_config("bench-baseline"))
        .await?;
    let mut incoming = consumer.messages().await?;
    let mut received = 0;
    while received < messages {
        let Some(message) = incoming.next().await else {
            bail!("the baseline's consumer ended after {received} messages");
        };
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        std::hint::black_box(&message.payload);
        received += 1;
        message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let baseline = started.elapsed().as_secs_f64();
    tracing::info!(baseline, "source baseline took the backlog");
    drop(incoming);

    let name = "bench-nats-source";
    let mut spec = spec_with(
        name,
        ConnectorType::Source,
        "NatsSource",
        &[
            ("nats.servers", url()),
            ("nats.stream", stream_name.into()),
            ("nats.durable", "bench-source".into()),
            ("kafka.topic", "bench-nats-source".into()),
        ],
        "--nats-connector",
    )?;
    spec.conversion.key = string_converter(Side::Key);
    spec.conversion.value = byte_array_converter();
    let offsets = Arc::new(OffsetStore::open(None)?);
    // Consumer sequences count from 1.
    let done = format!("{{\"seq\":{messages}}}");
    let secs = run_until_committed(spec, bootstrap, offsets, &done).await?;
    Ok(Figure {
        name: "source_nats_jetstream".into(),
        records: messages,
        size: PAYLOAD,
        secs,
        baseline_secs: baseline,
    })
}

async fn sink(
    js: &jetstream::Context,
    run: &str,
    stream_name: &str,
    bootstrap: &str,
    messages: u64,
) -> anyhow::Result<Vec<Figure>> {
    {
        let bootstrap = bootstrap.to_string();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let producer: ThreadedProducer<DefaultProducerContext> =
                producer_config(&bootstrap, BTreeMap::new()).create()?;
            for i in 0..messages {
                let value = payload(i);
                send(
                    &producer,
                    BaseRecord::<(), [u8]>::to(TOPIC).payload(&value[..]),
                );
            }
            producer.flush(TIMEOUT)?;
            Ok(())
        })
        .await??;
    }

    // The baseline: the same messages published by one client.
    let started = Instant::now();
    publish(js, &format!("{run}.out.base"), messages).await?;
    let baseline = started.elapsed().as_secs_f64();
    tracing::info!(baseline, "sink baseline published");

    let mut spec = spec_with(
        "bench-nats-sink",
        ConnectorType::Sink,
        "NatsSink",
        &[
            ("nats.servers", url()),
            ("topics", TOPIC.into()),
            ("nats.subject", format!("{run}.out.sink")),
        ],
        "--nats-connector",
    )?;
    spec.conversion.value = byte_array_converter();
    let ctx = worker_context(bootstrap, Arc::new(OffsetStore::open(None)?));
    let js2 = js.clone();
    let stream = stream_name.to_string();
    let (secs, from_first) = run_sink_until(spec, ctx, messages, move || {
        let js = js2.clone();
        let stream = stream.clone();
        async move { Ok(stored(&js, &stream).await?.saturating_sub(messages)) }
    })
    .await?;
    Ok(vec![
        Figure {
            name: "sink_nats_jetstream".into(),
            records: messages,
            size: PAYLOAD,
            secs,
            baseline_secs: baseline,
        },
        Figure {
            name: "sink_nats_jetstream_from_first".into(),
            records: messages,
            size: PAYLOAD,
            secs: from_first,
            baseline_secs: baseline,
        },
    ])
}
