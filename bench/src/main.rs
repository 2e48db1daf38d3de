//! Data-path throughput, each figure beside a raw librdkafka baseline measured in the same run
//! on the same embedded broker:
//! - produce: raw producer vs datagen → worker → Kafka (connector out of process, 1 task);
//! - consume: raw consumer vs Kafka → worker → null sink (connector out of process, 1 task);
//! - exactly-once produce: raw (non-transactional) producer vs datagen → worker → Kafka with a
//!   transaction per poll, records and source offsets committed together (100 B);
//! - file: Kafka Connect's FileStreamSource/FileStreamSink configs end to end (file I/O
//!   included) vs a raw producer reading the same file and a raw consumer writing one
//!   (`file.rs`);
//! - transforms: a chain of three transforms and the JSON converter vs the JSON converter alone,
//!   in process (no Kafka), on database-like struct rows;
//! - boundary: one source task's records across the connector protocol (Rust SDK and Python
//!   SDK, no Kafka) vs the same records built with no protocol (in process for Rust; for
//!   Python, a plain Python loop polling the same task).
//!
//! - databases: JdbcSource and JdbcSink on PostgreSQL and MariaDB vs a plain client doing the
//!   same database work (`databases.rs`), on a tenth of `--records` rows.
//! - cdc: PostgresCdcSource streaming inserts from its slot into Kafka vs the raw replication
//!   stream of a second slot on the same WAL (`cdc.rs`), on a tenth of `--records` rows.
//! - mysql-cdc: MySqlCdcSource reading inserts from MariaDB's binlog into Kafka vs the raw
//!   binlog stream read by the same library (`mysql_cdc.rs`), on a tenth of `--records` rows.
//! - redis: RedisStreamSource and RedisSink on the machine's Redis vs a plain client of the
//!   same library doing the same reads and acknowledgements, or writes (`redis.rs`), on a
//!   tenth of `--records` entries.
//! - mqtt: MqttSource and MqttSink on a Mosquitto of the benchmark's own vs a plain rumqttc
//!   client taking the same backlog, or publishing the same messages (`mqtt.rs`), on a tenth
//!   of `--records` messages.
//! - rabbitmq: RabbitMqSource and RabbitMqSink on the machine's RabbitMQ vs a plain lapin
//!   client consuming the same backlog, or publishing the same messages with confirms
//!   (`rabbitmq.rs`), on a tenth of `--records` messages.
//! - nats: NatsSource (JetStream durable consumer) and NatsSink (JetStream publish acks) on
//!   the machine's NATS vs a plain async-nats client consuming the same backlog with acks, or
//!   publishing the same messages (`nats.rs`), on a tenth of `--records` messages.
//! - s3: S3Sink on an S3-compatible server (moto from the test tools, or
//!   `SLUICE_BENCH_S3_URL`) vs a plain rust-s3 client uploading the same objects (`s3.rs`),
//!   on a tenth of `--records` records.
//! - http: HttpSource paging through an in-process HTTP server and HttpSink posting JSON
//!   arrays to it vs a plain reqwest client fetching the same pages or posting the same arrays
//!   (`http.rs`).
//!
//! `cargo run --release -p sluice-bench -- [--records N] [--only source|sink|eos|file|transforms|boundary|databases|cdc|mysql-cdc|redis|mqtt|rabbitmq|nats|s3|http] [--rounds N] [--json]`

mod boundary;
mod cdc;
mod databases;
mod file;
mod footprint;
mod http;
mod mqtt;
mod mysql_cdc;
mod nats;
mod rabbitmq;
mod redis;
mod s3;
mod transforms;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use sluice_connector_datagen::record_value;
use sluice_data::converter::{Converter, Side};
use sluice_model::TransactionBoundary;
use sluice_proto::connector::v1::ConnectorType;
use sluice_worker::host::process::PluginCommand;
use sluice_worker::kafka::embedded::EmbeddedKafka;
use sluice_worker::lease::Lease;
use sluice_worker::runner::{
    consumer_config, producer_config, run_process, ConnectorSpec, WorkerContext,
};
use sluice_worker::settings::DEFAULT_OFFSET_FLUSH_INTERVAL;
use sluice_worker::task::metrics::Counters;
use sluice_worker::task::offsets::OffsetStore;
use sluice_worker::task::{Conversion, Transactions};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Records per 100-byte run; 1 KB runs use a fifth of it.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Run only the source (produce) or only the sink (consume) figures.
    #[arg(long, value_parser = ["source", "sink", "eos", "file", "footprint", "transforms", "boundary", "databases", "cdc", "mysql-cdc", "redis", "mqtt", "rabbitmq", "nats", "s3", "http"])]
    only: Option<String>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Runs every figure this many times, one round after the other (each figure beside its
    /// baseline in every round), then prints each figure's median over the rounds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Internal: the footprint figures' raw baseline process (BOOTSTRAP INPUT OUTPUT RECORDS).
    #[arg(long, hide = true, num_args = 4)]
    raw_pipe: Option<Vec<String>>,
    /// Internal: serve the datagen plugin (the benchmark launches itself as the connector).
    #[arg(long, hide = true)]
    connector: bool,
    /// Internal: serve the file plugin.
    #[arg(long, hide = true)]
    file_connector: bool,
    /// Internal: serve the jdbc plugin.
    #[arg(long, hide = true)]
    jdbc_connector: bool,
    /// Internal: serve the postgres-cdc plugin.
    #[arg(long, hide = true)]
    postgres_cdc_connector: bool,
    /// Internal: serve the mysql-cdc plugin.
    #[arg(long, hide = true)]
    mysql_cdc_connector: bool,
    /// Internal: serve the redis plugin.
    #[arg(long, hide = true)]
    redis_connector: bool,
    /// Internal: serve the mqtt plugin.
    #[arg(long, hide = true)]
    mqtt_connector: bool,
    /// Internal: serve the rabbitmq plugin.
    #[arg(long, hide = true)]
    rabbitmq_connector: bool,
    /// Internal: serve the nats plugin.
    #[arg(long, hide = true)]
    nats_connector: bool,
    /// Internal: serve the s3 plugin.
    #[arg(long, hide = true)]
    s3_connector: bool,
    /// Internal: serve the http plugin.
    #[arg(long, hide = true)]
    http_connector: bool,
}

const PARTITIONS: i32 = 16;
const TIMEOUT: Duration = Duration::from_secs(300);

struct Figure {
    name: String,
    records: u64,
    /// Bytes of each record's value, for MB/s; 0 where it means nothing.
    size: usize,
    secs: f64,
    baseline_secs: f64,
}

fn main() -> anyhow::Result<()> {
    // As the `sluice` binary does, for the worker in this process and its raw baselines alike.
    sluice_connector_sdk::tune_allocator();
    let args = Args::parse();
    if let Some(raw) = &args.raw_pipe {
        return footprint::raw_pipe(raw);
    }
    if args.connector {
        sluice_connector_sdk::main(sluice_connector_datagen::plugin());
    }
    if args.file_connector {
        sluice_connector_sdk::main(sluice_connector_file::plugin());
    }
    if args.jdbc_connector {
        sluice_connector_sdk::main(sluice_connector_jdbc::plugin());
    }
    if args.redis_connector {
        sluice_connector_sdk::main(sluice_connector_redis::plugin());
    }
    if args.mqtt_connector {
        sluice_connector_sdk::main(sluice_connector_mqtt::plugin());
    }
    if args.rabbitmq_connector {
        sluice_connector_sdk::main(sluice_connector_rabbitmq::plugin());
    }
    if args.nats_connector {
        sluice_connector_sdk::main(sluice_connector_nats::plugin());
    }
    if args.s3_connector {
        sluice_connector_sdk::main(sluice_connector_s3::plugin());
    }
    if args.http_connector {
        sluice_connector_sdk::main(sluice_connector_http::plugin());
    }
    if args.postgres_cdc_connector {
        sluice_connector_sdk::main(sluice_connector_postgres_cdc::plugin());
    }
    if args.mysql_cdc_connector {
        sluice_connector_sdk::main(sluice_connector_mysql_cdc::plugin());
    }
    if std::env::var_os("RUST_LOG").is_some() {
        // The worker's and connectors' logs, for a run that needs looking into.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let mut measures = Vec::new();
        let figures = runtime.block_on(run(&args, &mut measures))?;
        let rows = Rows::of(&figures, &measures);
        if args.rounds > 1 {
            rows.print(args.json, &format!("round {round}"));
        }
        rounds.push(rows);
    }
    match rounds.as_slice() {
        [one] => one.print(args.json, ""),
        all => Rows::median(all).print(args.json, &format!("median of {} rounds", all.len())),
    }
    Ok(())
}

/// What is printed of one figure: its rate, its baseline's, their ratio.
#[derive(Clone)]
struct Row {
    name: String,
    records: u64,
    size: usize,
    rate: f64,
    baseline: f64,
    ratio: f64,
}

/// One round's figures and footprint measures, or their medians over rounds.
struct Rows {
    figures: Vec<Row>,
    measures: Vec<footprint::Measure>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n % 2 {
        1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

impl Rows {
    fn of(figures: &[Figure], measures: &[footprint::Measure]) -> Rows {
        let figures = figures
            .iter()
            .map(|f| {
                let rate = f.records as f64 / f.secs;
                let baseline = f.records as f64 / f.baseline_secs;
                Row {
                    name: f.name.clone(),
                    records: f.records,
                    size: f.size,
                    rate,
                    baseline,
                    ratio: rate / baseline,
                }
            })
            .collect();
        Rows {
            figures,
            measures: measures.to_vec(),
        }
    }

    /// Each column's median over the rounds, figure by figure; a figure's ratio is the median of
    /// the rounds' own ratios (each measured beside its baseline), a measure's is of its medians.
    fn median(rounds: &[Rows]) -> Rows {
        let figures = rounds[0]
            .figures
            .iter()
            .map(|first| {
                let same: Vec<&Row> = rounds
                    .iter()
                    .filter_map(|r| r.figures.iter().find(|f| f.name == first.name))
                    .collect();
                let of = |column: fn(&Row) -> f64| median(same.iter().map(|r| column(r)).collect());
                Row {
                    rate: of(|r| r.rate),
                    baseline: of(|r| r.baseline),
                    ratio: of(|r| r.ratio),
                    ..first.clone()
                }
            })
            .collect();
        let measures = rounds[0]
            .measures
            .iter()
            .map(|first| {
                let same: Vec<&footprint::Measure> = rounds
                    .iter()
                    .filter_map(|r| r.measures.iter().find(|m| m.name == first.name))
                    .collect();
                footprint::Measure {
                    value: median(same.iter().map(|m| m.value).collect()),
                    baseline: median(same.iter().map(|m| m.baseline).collect()),
                    ..first.clone()
                }
            })
            .collect();
        Rows { figures, measures }
    }

    fn print(&self, json: bool, label: &str) {
        if !json && !label.is_empty() {
            println!("# {label}");
        }
        print(&self.figures, json, label);
        print_measures(&self.measures, json, label);
    }
}

async fn run(args: &Args, measures: &mut Vec<footprint::Measure>) -> anyhow::Result<Vec<Figure>> {
    if args.only.as_deref() == Some("transforms") {
        return Ok(vec![transforms::figure(args.records)?]);
    }
    if args.only.as_deref() == Some("boundary") {
        return boundary::figures(args.records).await;
    }
    let sizes = [(100usize, args.records), (1024, (args.records / 5).max(1))];
    let mut topics = Vec::new();
    for (size, _) in sizes {
        for kind in ["raw", "pipeline", "eos"] {
            topics.push((format!("produce-{kind}-{size}"), PARTITIONS));
        }
        topics.push((format!("consume-{size}"), PARTITIONS * 4));
    }
    topics.extend(file::topics(PARTITIONS));
    for topic in footprint::TOPICS {
        topics.push((topic.to_string(), footprint::PARTITIONS));
    }
    let kafka = EmbeddedKafka::start(
        1,
        &topics,
        sluice_worker::kafka::embedded::DEFAULT_PARTITIONS,
    )?;
    let bootstrap = kafka.bootstrap_servers().to_string();
    let mut figures = Vec::new();
    let only = |what: &str| args.only.as_deref().is_none_or(|o| o == what);
    for (size, records) in sizes {
        if only("source") {
            figures.push(produce_figure(&bootstrap, size, records).await?);
        }
        if only("sink") {
            figures.push(consume_figure(&bootstrap, size, records).await?);
        }
        if only("eos") && size == 100 {
            let raw =
                raw_produce(&bootstrap, &format!("produce-raw-{size}"), records, size).await?;
            let eos = pipeline_produce(
                &bootstrap,
                &format!("produce-eos-{size}"),
                records,
                size,
                true,
            )
            .await?;
            figures.push(Figure {
                name: format!("source_datagen_eos_{size}b"),
                records,
                size,
                secs: eos,
                baseline_secs: raw,
            });
        }
    }
    if only("file") {
        figures.extend(file::figures(&bootstrap, args.records).await?);
    }
    if args.only.as_deref() == Some("footprint")
        || (args.only.is_none() && footprint::sluice_executable().is_some())
    {
        let (bootstrap, records) = (bootstrap.clone(), args.records);
        measures.extend(
            tokio::task::spawn_blocking(move || footprint::figures(&bootstrap, records)).await??,
        );
    } else if args.only.is_none() {
        eprintln!("footprint figures left out: build the sluice executable beside this one (cargo build --release -p sluice-cli)");
    }
    drop(kafka);
    if only("transforms") {
        figures.push(transforms::figure(args.records)?);
    }
    if only("boundary") {
        figures.extend(boundary::figures(args.records).await?);
    }
    if only("databases") {
        let kafka = EmbeddedKafka::start(
            1,
            &databases::TOPICS.map(|t| (t.to_string(), databases::PARTITIONS)),
            sluice_worker::kafka::embedded::DEFAULT_PARTITIONS,
        )?;
        let rows = (args.records / 10).max(1);
        figures.extend(databases::figures(kafka.bootstrap_servers(), rows).await?);
    }
    if only("cdc") {
        let kafka = EmbeddedKafka::start(
            1,
            &[(cdc::TOPIC.to_string(), databases::PARTITIONS)],
            sluice_worker::kafka::embedded::DEFAULT_PARTITIONS,
        )?;
        let rows = (args.records / 10).max(1);
        figures.push(cdc::figure(kafka.bootstrap_servers(), rows).await?);
    }
    if only("mysql-cdc") {
        let kafka = EmbeddedKafka::start(
            1,
            &[(mysql_cdc::TOPIC.to_string(), databases::PARTITIONS)],
            sluice_worker::kafka::embedded::DEFAULT_PARTITIONS,
        )?;
        let rows = (args.records / 10).max(1);
        figures.push(mysql_cdc::figure(kafka.bootstrap_servers(), rows).await?);
    }
    if only("redis") {
        let kafka = EmbeddedKafka::start(
            1,
            &[(redis::TOPIC.to_string(), databases::PARTITIONS)],
            sluice_worker::kafka::embedded::DEFAULT_PARTITIONS,
        )?;
        let entries = (args.records / 10).max(1);
        figures.extend(redis::figures(kafka.bootstrap_servers(), entries).await?);
    }
    if only("mqtt") {
        let kafka = EmbeddedKafka::start(
            1,
            &[(mqtt::TOPIC.to_string(), databases::PARTITIONS)],
            sluice_worker::kafka::embedded::DEFAULT_PARTITIONS,
        )?;
        let messages = (args.records / 10).max(1);
        figures.extend(mqtt::figures(kafka.bootstrap_servers(), messages).await?);
    }
    if only("rabbitmq") {
        let kafka = EmbeddedKafka::start(
            1,
            &[(rabbitmq::TOPIC.to_string(), databases::PARTITIONS)],
            sluice_worker::kafka::embedded::DEFAULT_PARTITIONS,
        )?;
        let messages = (args.records / 10).max(1);
        figures.extend(rabbitmq::figures(kafka.bootstrap_servers(), messages).await?);
    }
    if only("nats") {
        let kafka = EmbeddedKafka::start(
            1,
            &[(nats::TOPIC.to_string(), databases::PARTITIONS)],
            sluice_worker::kafka::embedded::DEFAULT_PARTITIONS,
        )?;
        let messages = (args.records / 10).max(1);
        figures.extend(nats::figures(kafka.bootstrap_servers(), messages).await?);
    }
    if only("s3") {
        let kafka = EmbeddedKafka::start(
            1,
            &[(s3::TOPIC.to_string(), s3::PARTITIONS)],
            sluice_worker::kafka::embedded::DEFAULT_PARTITIONS,
        )?;
        let records = (args.records / 10).max(1);
        figures.extend(s3::figures(kafka.bootstrap_servers(), records).await?);
    }
    if only("http") {
        let kafka = EmbeddedKafka::start(
            1,
            &[(http::TOPIC.to_string(), http::PARTITIONS)],
            sluice_worker::kafka::embedded::DEFAULT_PARTITIONS,
        )?;
        figures.extend(http::figures(kafka.bootstrap_servers(), args.records).await?);
    }
    Ok(figures)
}

async fn produce_figure(bootstrap: &str, size: usize, records: u64) -> anyhow::Result<Figure> {
    let raw = raw_produce(bootstrap, &format!("produce-raw-{size}"), records, size).await?;
    let pipeline = pipeline_produce(
        bootstrap,
        &format!("produce-pipeline-{size}"),
        records,
        size,
        false,
    )
    .await?;
    Ok(Figure {
        name: format!("source_datagen_{size}b"),
        records,
        size,
        secs: pipeline,
        baseline_secs: raw,
    })
}

async fn consume_figure(bootstrap: &str, size: usize, records: u64) -> anyhow::Result<Figure> {
    let topic = format!("consume-{size}");
    raw_produce(bootstrap, &topic, records, size).await?;
    let raw = raw_consume(bootstrap, &topic, records).await?;
    let pipeline = pipeline_consume(bootstrap, &topic, records).await?;
    Ok(Figure {
        name: format!("sink_null_{size}b"),
        records,
        size,
        secs: pipeline,
        baseline_secs: raw,
    })
}

/// The baseline: the same producer settings as the worker, the same keys and values.
async fn raw_produce(
    bootstrap: &str,
    topic: &str,
    records: u64,
    size: usize,
) -> anyhow::Result<f64> {
    let bootstrap = bootstrap.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let producer: ThreadedProducer<DefaultProducerContext> =
            producer_config(&bootstrap, BTreeMap::new()).create()?;
        let started = Instant::now();
        for seq in 0..records {
            let key = format!("key-{}", seq % 1000);
            let value = record_value(0, seq, size);
            send(
                &producer,
                BaseRecord::to(&topic)
                    .key(key.as_bytes())
                    .payload(value.as_bytes()),
            );
        }
        producer.flush(TIMEOUT)?;
        Ok(started.elapsed().as_secs_f64())
    })
    .await?
}

/// Sends a record, waiting while the producer's queue is full.
fn send<K, P>(producer: &ThreadedProducer<DefaultProducerContext>, mut record: BaseRecord<'_, K, P>)
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

pub(crate) fn string_converter(side: Side) -> Converter {
    Converter::new(
        "org.apache.kafka.connect.storage.StringConverter",
        &BTreeMap::new(),
        side,
    )
    .expect("StringConverter is built in")
}

fn spec(
    name: &str,
    kind: ConnectorType,
    class: &str,
    config: &[(&str, String)],
) -> anyhow::Result<ConnectorSpec> {
    spec_with(name, kind, class, config, "--connector")
}

/// What a connector run by the benchmark gets from its "worker": the worker's client
/// settings on `bootstrap`, its defaults otherwise.
fn worker_context(bootstrap: &str, offsets: Arc<OffsetStore>) -> WorkerContext {
    WorkerContext {
        producer_config: producer_config(bootstrap, BTreeMap::new()),
        consumer_config: consumer_config(bootstrap, BTreeMap::new()),
        offsets,
        flush_interval: DEFAULT_OFFSET_FLUSH_INTERVAL,
        task_shutdown_timeout: sluice_worker::settings::DEFAULT_TASK_SHUTDOWN_TIMEOUT,
        stop_failures: Default::default(),
    }
}

/// A connector of the plugin this executable serves when launched with `flag`.
fn spec_with(
    name: &str,
    kind: ConnectorType,
    class: &str,
    config: &[(&str, String)],
    flag: &str,
) -> anyhow::Result<ConnectorSpec> {
    let exe = std::env::current_exe().context("locate the benchmark executable")?;
    let mut values: BTreeMap<String, String> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    values.insert("name".into(), name.into());
    values.insert("connector.class".into(), class.into());
    Ok(ConnectorSpec {
        name: sluice_model::ConnectorName::from_trusted(name),
        class: class.into(),
        kind,
        command: PluginCommand {
            program: exe,
            args: vec![flag.into()],
        },
        tasks_max: 1,
        topics: values
            .get("topics")
            .map(|t| vec![t.clone()])
            .unwrap_or_default(),
        topics_regex: None,
        restart: Default::default(),
        transactions: None,
        errors: Default::default(),
        config: values,
        conversion: Conversion {
            key: string_converter(Side::Key),
            value: string_converter(Side::Value),
            transforms: Default::default(),
        },
    })
}

/// One connector run whole, its tasks planned in and run by one process: the pipeline the
/// figures measure, without the unit supervision around it. A failure ends the run (and
/// the figure times out, naming it).
pub async fn run_connector(
    spec: ConnectorSpec,
    ctx: WorkerContext,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    if let Err(e) = run_process(
        &spec,
        &ctx,
        &counters,
        &stop,
        None,
        |_| {},
        tracing::Span::none(),
    )
    .await
    {
        eprintln!("{}: {e:#}", spec.name);
    }
}

/// datagen → worker → Kafka; timed until the last record's position is committed, which
/// happens only after Kafka acknowledged it.
async fn pipeline_produce(
    bootstrap: &str,
    topic: &str,
    records: u64,
    size: usize,
    exactly_once: bool,
) -> anyhow::Result<f64> {
    let name = format!("bench-{topic}");
    let mut spec = spec(
        &name,
        ConnectorType::Source,
        "DatagenSource",
        &[
            ("topic", topic.to_string()),
            ("count", records.to_string()),
            ("record.size", size.to_string()),
        ],
    )?;
    let offsets = Arc::new(if exactly_once {
        // Transactions write the offsets to Kafka with the records; the lease always holds
        // (no controller here).
        let lease = Arc::new(Lease::default());
        let join = lease.joined();
        lease.applied(join);
        lease.renew(tokio::time::Instant::now(), Duration::from_secs(86_400));
        spec.transactions = Some(Transactions {
            id_prefix: format!("bench-{topic}"),
            boundary: TransactionBoundary::Poll,
            interval: DEFAULT_OFFSET_FLUSH_INTERVAL,
            lease,
        });
        OffsetStore::kafka(
            "bench-offsets",
            &producer_config(bootstrap, BTreeMap::new()),
            &consumer_config(bootstrap, BTreeMap::new()),
        )?
    } else {
        OffsetStore::open(None)?
    });
    let last = format!("{{\"seq\":{}}}", records - 1);
    run_until_committed(spec, bootstrap, offsets, &last).await
}

/// Runs a source connector until its position `last` is committed in `offsets` (after Kafka
/// acknowledged the record it follows); the seconds it took.
pub(crate) async fn run_until_committed(
    spec: ConnectorSpec,
    bootstrap: &str,
    offsets: Arc<OffsetStore>,
    last: &str,
) -> anyhow::Result<f64> {
    let name = spec.name.to_string();
    let ctx = worker_context(bootstrap, offsets.clone());
    databases::run_until(spec, ctx, || {
        let done = offsets
            .local_positions(&name)
            .iter()
            .any(|p| p.offset == last);
        async move { Ok(done) }
    })
    .await
}

/// The baseline: a plain consumer with the worker's settings, timed from its first record.
async fn raw_consume(bootstrap: &str, topic: &str, records: u64) -> anyhow::Result<f64> {
    let bootstrap = bootstrap.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let mut bytes = 0usize;
        let each = |value: &[u8]| {
            bytes += value.len();
            Ok(())
        };
        let secs = raw_consume_each(&bootstrap, &topic, records, each, || Ok(()));
        std::hint::black_box(bytes);
        secs
    })
    .await?
}

/// A plain consumer with the worker's settings (group `raw-<topic>`) handing each value to
/// `each`, then calling `finish`; timed from its first record until `finish` returns.
fn raw_consume_each(
    bootstrap: &str,
    topic: &str,
    records: u64,
    mut each: impl FnMut(&[u8]) -> anyhow::Result<()>,
    finish: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut config = consumer_config(bootstrap, BTreeMap::new());
    config.set("group.id", format!("raw-{topic}"));
    let consumer: BaseConsumer = config.create()?;
    consumer.subscribe(&[topic])?;
    let started = Instant::now();
    let mut first = None;
    let mut seen = 0u64;
    while seen < records {
        if started.elapsed() > TIMEOUT {
            bail!("raw consumer: {seen} of {records} records within {TIMEOUT:?}");
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message?;
            first.get_or_insert_with(Instant::now);
            each(message.payload().unwrap_or_default())?;
            seen += 1;
        }
    }
    finish()?;
    Ok(first.unwrap_or(started).elapsed().as_secs_f64())
}

/// Kafka → worker → null sink; timed from the first record to the connector having been sent
/// every record. Both consume figures start at the first record: joining the consumer group
/// costs the mock cluster's fixed ~3 s initial rebalance delay on either side.
async fn pipeline_consume(bootstrap: &str, topic: &str, records: u64) -> anyhow::Result<f64> {
    let name = format!("bench-sink-{topic}");
    let spec = spec(
        &name,
        ConnectorType::Sink,
        "NullSink",
        &[("topics", topic.to_string())],
    )?;
    run_sink_until(spec, bootstrap, |delivered| delivered >= records).await
}

/// Runs a sink connector until `done`, given the records delivered to it so far, says so;
/// the seconds from the first record delivered.
async fn run_sink_until(
    spec: ConnectorSpec,
    bootstrap: &str,
    mut done: impl FnMut(u64) -> bool,
) -> anyhow::Result<f64> {
    let name = spec.name.to_string();
    let ctx = worker_context(bootstrap, Arc::new(OffsetStore::open(None)?));
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let runner = tokio::spawn(run_connector(spec, ctx, counters.clone(), stop.clone()));
    let mut first: Option<Instant> = None;
    loop {
        let delivered = counters.read().0;
        if done(delivered) {
            break;
        }
        if first.is_none() && delivered > 0 {
            first = Some(Instant::now());
        }
        if started.elapsed() > TIMEOUT {
            bail!("{name}: not done within {TIMEOUT:?}, {delivered} records delivered");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = first.unwrap_or(started).elapsed().as_secs_f64();
    stop.cancel();
    runner.await?;
    Ok(secs)
}

fn print(figures: &[Row], json: bool, label: &str) {
    if !json {
        println!(
            "{:<24} {:>10} {:>13} {:>9} {:>15} {:>9} {:>7}",
            "benchmark", "records", "records/s", "MB/s", "baseline rec/s", "base MB/s", "ratio"
        );
    }
    let mb = |rate: f64, size: usize| rate * size as f64 / 1e6;
    for f in figures {
        if json {
            let mut line = serde_json::json!({
                "name": f.name,
                "records": f.records,
                "records_per_sec": f.rate.round(),
                "mb_per_sec": (mb(f.rate, f.size) * 10.0).round() / 10.0,
                "baseline_records_per_sec": f.baseline.round(),
                "baseline_mb_per_sec": (mb(f.baseline, f.size) * 10.0).round() / 10.0,
                "ratio": (f.ratio * 1000.0).round() / 1000.0,
            });
            if !label.is_empty() {
                line["round"] = label.into();
            }
            println!("{line}");
        } else {
            println!(
                "{:<24} {:>10} {:>13.0} {:>9.1} {:>15.0} {:>9.1} {:>7.3}",
                f.name,
                f.records,
                f.rate,
                mb(f.rate, f.size),
                f.baseline,
                mb(f.baseline, f.size),
                f.ratio
            );
        }
    }
}

/// The footprint figures, after the throughput ones: each value beside its baseline and
/// their ratio (value / baseline).
fn print_measures(measures: &[footprint::Measure], json: bool, label: &str) {
    for m in measures {
        let ratio = m.value / m.baseline;
        if json {
            let mut line = serde_json::json!({
                "name": m.name,
                "value": (m.value * 1000.0).round() / 1000.0,
                "unit": m.unit,
                "baseline": (m.baseline * 1000.0).round() / 1000.0,
                "baseline_name": m.baseline_name,
                "ratio": (ratio * 1000.0).round() / 1000.0,
            });
            if !label.is_empty() {
                line["round"] = label.into();
            }
            println!("{line}");
        } else {
            println!(
                "{:<36} {:>9.3} {:<2} baseline {:>9.3} {:<2} ({}), ratio {:.3}",
                m.name, m.value, m.unit, m.baseline, m.unit, m.baseline_name, ratio
            );
        }
    }
}
