//! The RabbitMQ connectors against the RabbitMQ of this machine (`SLUICE_BENCH_RABBITMQ`,
//! default 127.0.0.1:5672, guest/guest), each figure beside a plain lapin client doing the
//! same AMQP work in the same run, on queues of the run's own (deleted at the end):
//! - `source_rabbitmq`: a backlog of persistent 100-byte messages in a durable queue →
//!   RabbitMqSource → worker → Kafka, until the last message's offset is committed (and so
//!   acknowledged); baseline: a lapin consumer with the same prefetch taking the same
//!   backlog from a twin queue, acknowledging every half prefetch window (`multiple`);
//! - `sink_rabbitmq`: Kafka (100-byte values) → worker → RabbitMqSink (publisher confirms,
//!   persistent), until a consumer of the queue has every message; baseline: the same
//!   messages published by one lapin channel in confirm mode, every confirm awaited, until
//!   the consumer has every one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
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
pub const TOPIC: &str = "bench-sink-rabbitmq";
const PAYLOAD: usize = 100;
const PREFETCH: u16 = 1000;

fn address() -> (String, u16) {
    let address =
        std::env::var("SLUICE_BENCH_RABBITMQ").unwrap_or_else(|_| "127.0.0.1:5672".into());
    match address.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(5672)),
        None => (address, 5672),
    }
}

async fn connect() -> anyhow::Result<(lapin::Connection, Channel)> {
    let (host, port) = address();
    let uri = format!("amqp://guest:guest@{host}:{port}/%2f");
    let connection = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
        .await
        .with_context(|| format!("connect to RabbitMQ at {uri}"))?;
    let channel = connection.create_channel().await?;
    Ok((connection, channel))
}

/// Message `i`: its number, padded to PAYLOAD bytes.
fn payload(i: u64) -> Vec<u8> {
    format!("{i:0>PAYLOAD$}").into_bytes()
}

/// Declares the durable queue `name` (gone ten minutes after its last use, should the run
/// stop before deleting it).
async fn queue(channel: &Channel, name: &str) -> anyhow::Result<()> {
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), AMQPValue::LongInt(600_000));
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    Ok(())
}

/// Publishes `count` persistent messages to `exchange` with `routing_key` on a channel in
/// confirm mode and waits for every confirm.
async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    count: u64,
) -> anyhow::Result<()> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut confirms = Vec::with_capacity(count as usize);
    for i in 0..count {
        confirms.push(
            channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    &payload(i),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?,
        );
    }
    for confirm in confirms {
        if !confirm.await?.is_ack() {
            bail!("RabbitMQ refused a message");
        }
    }
    Ok(())
}

pub async fn figures(bootstrap: &str, messages: u64) -> anyhow::Result<Vec<Figure>> {
    let (connection, channel) = connect().await?;
    let run = format!("bench-rabbitmq-{}", std::process::id());
    let queues = [
        format!("{run}-baseline"),
        format!("{run}-source"),
        format!("{run}-out"),
    ];
    for q in &queues {
        queue(&channel, q).await?;
    }
    let figures = async {
        let mut figures = vec![
            source(
                &connection,
                &run,
                &queues[0],
                &queues[1],
                bootstrap,
                messages,
            )
            .await?,
        ];
        figures.extend(sink(&connection, &queues[2], bootstrap, messages).await?);
        Ok::<_, anyhow::Error>(figures)
    }
    .await;
    for q in &queues {
        let _ = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "done".into()).await;
    figures
}

async fn source(
    connection: &lapin::Connection,
    run: &str,
    baseline_queue: &str,
    source_queue: &str,
    bootstrap: &str,
    messages: u64,
) -> anyhow::Result<Figure> {
    // One publish fills both queues with the same backlog.
    let channel = connection.create_channel().await?;
    let fanout = format!("{run}-fanout");
    channel
        .exchange_declare(
            fanout.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    for q in [baseline_queue, source_queue] {
        channel
            .queue_bind(
                q.into(),
                fanout.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    publish(&channel, &fanout, "", messages).await?;

    // The baseline: consume the backlog with the same prefetch, acknowledging in steps.
    let started = Instant::now();
    let consumer_channel = connection.create_channel().await?;
    consumer_channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            baseline_queue.into(),
            "bench-baseline".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut received = 0;
    while received < messages {
        let Some(delivery) = consumer.next().await else {
            bail!("the baseline's consumer ended after {received} messages");
        };
        let delivery = delivery?;
        std::hint::black_box(&delivery.data);
        received += 1;
        // One acknowledgement for every half prefetch window, as a tuned consumer does.
        if received % u64::from(PREFETCH / 2) == 0 || received == messages {
            delivery
                .acker
                .ack(BasicAckOptions { multiple: true })
                .await?;
        }
    }
    let baseline = started.elapsed().as_secs_f64();
    tracing::info!(baseline, "source baseline took the backlog");
    let _ = consumer_channel.close(200, "done".into()).await;

    let (host, port) = address();
    let name = "bench-rabbitmq-source";
    let mut spec = spec_with(
        name,
        ConnectorType::Source,
        "RabbitMqSource",
        &[
            ("rabbitmq.host", host),
            ("rabbitmq.port", port.to_string()),
            ("rabbitmq.queue", source_queue.into()),
            ("rabbitmq.prefetch.count", PREFETCH.to_string()),
            ("kafka.topic", "bench-rabbitmq-source".into()),
        ],
        "--rabbitmq-connector",
    )?;
    spec.conversion.key = string_converter(Side::Key);
    spec.conversion.value = byte_array_converter();
    let offsets = Arc::new(OffsetStore::open(None)?);
    // Delivery tags count from 1 on the task's channel.
    let done = format!("{{\"tag\":{messages}}}");
    let secs = run_until_committed(spec, bootstrap, offsets, &done).await?;
    Ok(Figure {
        name: "source_rabbitmq".into(),
        records: messages,
        size: PAYLOAD,
        secs,
        baseline_secs: baseline,
    })
}

async fn sink(
    connection: &lapin::Connection,
    out: &str,
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
    // A consumer counting what reaches the queue (acknowledged by the broker on delivery).
    let count = Arc::new(AtomicU64::new(0));
    let counter_channel = connection.create_channel().await?;
    let mut consumer = counter_channel
        .basic_consume(
            out.into(),
            "bench-counter".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let counted = count.clone();
    let counting = tokio::spawn(async move {
        while let Some(Ok(_)) = consumer.next().await {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });

    // The baseline: the same messages published by one channel with confirms.
    let started = Instant::now();
    let channel = connection.create_channel().await?;
    publish(&channel, "", out, messages).await?;
    while count.load(Ordering::Relaxed) < messages {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let baseline = started.elapsed().as_secs_f64();
    tracing::info!(baseline, "sink baseline published");
    count.store(0, Ordering::Relaxed);

    let (host, port) = address();
    let mut spec = spec_with(
        "bench-rabbitmq-sink",
        ConnectorType::Sink,
        "RabbitMqSink",
        &[
            ("rabbitmq.host", host),
            ("rabbitmq.port", port.to_string()),
            ("topics", TOPIC.into()),
            ("rabbitmq.exchange", String::new()),
            ("rabbitmq.routing.key", out.into()),
        ],
        "--rabbitmq-connector",
    )?;
    spec.conversion.value = byte_array_converter();
    let ctx = worker_context(bootstrap, Arc::new(OffsetStore::open(None)?));
    let (secs, from_first) = run_sink_until(spec, ctx, messages, || {
        let got = count.load(Ordering::Relaxed);
        async move { Ok(got) }
    })
    .await?;
    counting.abort();
    let _ = counter_channel.close(200, "done".into()).await;
    Ok(vec![
        Figure {
            name: "sink_rabbitmq".into(),
            records: messages,
            size: PAYLOAD,
            secs,
            baseline_secs: baseline,
        },
        Figure {
            name: "sink_rabbitmq_from_first".into(),
            records: messages,
            size: PAYLOAD,
            secs: from_first,
            baseline_secs: baseline,
        },
    ])
}
