//! The database connectors against the PostgreSQL and MariaDB servers of this machine
//! (`SLUICE_TEST_POSTGRES_URL`, `SLUICE_TEST_MARIADB_URL`, the tests' defaults otherwise), each
//! figure beside a plain client doing the same database work in the same run:
//! - `source_jdbc_postgres`: JdbcSource (incrementing, `batch.max.rows=10000`) → worker →
//!   JsonConverter → Kafka, until the last row's offset is committed; baseline: a loop of the
//!   same keyset `SELECT … WHERE id > $1 ORDER BY id LIMIT 10000` decoding every column;
//! - `sink_jdbc_postgres` / `sink_jdbc_mariadb`: Kafka (JSON with schemas) → worker →
//!   JdbcSink (`insert`, `batch.size=3000`), until the table holds every row; baseline: the
//!   same rows inserted by a plain client with one prepared INSERT, 3,000 rows a transaction
//!   (pipelined on PostgreSQL, batched on MariaDB).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use mysql_async::prelude::Queryable;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use sluice_connector_jdbc::{Dialect, JdbcUrl};
use sluice_data::converter::{Converter, Side};
use sluice_proto::connector::v1::ConnectorType;
use sluice_worker::runner::{consumer_config, producer_config, WorkerContext};
use sluice_worker::task::metrics::Counters;
use sluice_worker::task::offsets::OffsetStore;
use tokio_util::sync::CancellationToken;

use crate::{run_connector, send, spec_with, worker_context, Figure, TIMEOUT};

const BATCH: i64 = 10_000;
/// The sink figures' topics, created before the run (records produced to a topic the broker
/// creates on first use can be lost while it does).
pub const TOPICS: [&str; 2] = ["bench-sink-postgres", "bench-sink-mariadb"];
/// The embedded broker keeps a few MB per partition: spread the records so it keeps them all.
pub const PARTITIONS: i32 = 32;
const SINK_BATCH: usize = 3_000;

fn url(env: &str, default: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| default.to_string())
}

fn postgres_url() -> String {
    url(
        "SLUICE_TEST_POSTGRES_URL",
        "jdbc:postgresql://127.0.0.1:5432/test?user=postgres",
    )
}

fn mariadb_url() -> String {
    url(
        "SLUICE_TEST_MARIADB_URL",
        "jdbc:mariadb://127.0.0.1:3306/test?user=root",
    )
}

async fn postgres(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let u = JdbcUrl::parse(url).map_err(anyhow::Error::msg)?;
    let mut config = tokio_postgres::Config::new();
    config
        .host(&u.host)
        .port(u.port)
        .dbname(&u.database)
        .user(u.user.as_deref().unwrap_or("postgres"));
    if let Some(p) = &u.password {
        config.password(p);
    }
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect to {u}"))?;
    tokio::spawn(connection);
    Ok(client)
}

async fn mariadb(url: &str) -> anyhow::Result<mysql_async::Conn> {
    let u = JdbcUrl::parse(url).map_err(anyhow::Error::msg)?;
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(u.host.clone())
        .tcp_port(u.port)
        .db_name(Some(u.database.clone()))
        .user(u.user.clone())
        .pass(u.password.clone())
        .prefer_socket(false);
    mysql_async::Conn::new(opts)
        .await
        .with_context(|| format!("connect to {u}"))
}

pub(crate) fn json_converter(side: Side) -> Converter {
    Converter::new(
        "org.apache.kafka.connect.json.JsonConverter",
        &BTreeMap::new(),
        side,
    )
    .expect("JsonConverter is built in")
}

pub async fn figures(bootstrap: &str, rows: u64) -> anyhow::Result<Vec<Figure>> {
    let table = format!("bench_{}", std::process::id());
    let result = async {
        Ok::<_, anyhow::Error>(vec![
            source_postgres(bootstrap, &table, rows).await?,
            sink(bootstrap, &table, rows, Dialect::Postgres).await?,
            sink(bootstrap, &table, rows, Dialect::MySql).await?,
        ])
    }
    .await;
    // Leave nothing behind, whatever happened.
    if let Ok(pg) = postgres(&postgres_url()).await {
        let _ = pg
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {table}_sink; DROP TABLE IF EXISTS {table}_base"
            ))
            .await;
    }
    if let Ok(mut my) = mariadb(&mariadb_url()).await {
        let _ = my
            .query_drop(format!("DROP TABLE IF EXISTS {table}_sink, {table}_base"))
            .await;
    }
    result
}

async fn source_postgres(bootstrap: &str, table: &str, rows: u64) -> anyhow::Result<Figure> {
    let pg = postgres(&postgres_url()).await?;
    pg.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(12,2),
           flag BOOLEAN, updated TIMESTAMP(3) NOT NULL DEFAULT now());
         INSERT INTO {table} (name, amount, flag)
           SELECT 'customer ' || g, g * 1.25, g % 2 = 0 FROM generate_series(1, {rows}) g;
         ANALYZE {table};"
    ))
    .await?;
    // The baseline: the same keyset pages, every column decoded.
    let started = Instant::now();
    let statement = pg
        .prepare(&format!(
            "SELECT id, name, amount::text, flag, (extract(epoch FROM updated) * 1000)::int8 FROM {table} WHERE id > $1 ORDER BY id LIMIT {BATCH}"
        ))
        .await?;
    let (mut last, mut read) = (0i64, 0u64);
    loop {
        let page = pg.query(&statement, &[&last]).await?;
        if page.is_empty() {
            break;
        }
        for row in &page {
            let id: i64 = row.try_get(0)?;
            let _: (&str, Option<&str>, Option<bool>) =
                (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
            let _: i64 = row.try_get(4)?;
            last = id;
            read += 1;
        }
    }
    let baseline = started.elapsed().as_secs_f64();
    if read != rows {
        bail!("the baseline read {read} of {rows} rows");
    }

    let name = "bench-jdbc-source";
    let mut spec = spec_with(
        name,
        ConnectorType::Source,
        "JdbcSource",
        &[
            ("connection.url", postgres_url()),
            ("mode", "incrementing".into()),
            ("incrementing.column.name", "id".into()),
            ("table.whitelist", table.into()),
            ("topic.prefix", "bench-".into()),
            ("batch.max.rows", BATCH.to_string()),
            ("poll.interval.ms", "1".into()),
        ],
        "--jdbc-connector",
    )?;
    spec.conversion.key = json_converter(Side::Key);
    spec.conversion.value = json_converter(Side::Value);
    let offsets = Arc::new(OffsetStore::open(None)?);
    let ctx = worker_context(bootstrap, offsets.clone());
    let done = format!("{{\"incrementing\":{rows}}}");
    let secs = run_until(spec, ctx, || {
        let finished = offsets
            .local_positions(name)
            .iter()
            .any(|p| p.offset == done);
        async move { Ok(finished) }
    })
    .await?;
    Ok(Figure {
        name: "source_jdbc_postgres".into(),
        records: rows,
        size: 0,
        secs,
        baseline_secs: baseline,
    })
}

/// Row `i` of the sink figures: id, name, amount, flag.
fn row(i: u64) -> (i64, String, f64, bool) {
    (
        i as i64,
        format!("customer {i}"),
        i as f64 * 1.25,
        i.is_multiple_of(2),
    )
}

/// A JsonConverter envelope of [`row`]: the Kafka form of what the sink writes.
fn row_json(i: u64) -> String {
    let (id, name, amount, flag) = row(i);
    format!(
        r#"{{"schema":{{"type":"struct","fields":[{{"type":"int64","optional":false,"field":"id"}},{{"type":"string","optional":false,"field":"name"}},{{"type":"double","optional":true,"field":"amount"}},{{"type":"boolean","optional":true,"field":"flag"}}],"optional":false}},"payload":{{"id":{id},"name":"{name}","amount":{amount},"flag":{flag}}}}}"#
    )
}

async fn sink(bootstrap: &str, table: &str, rows: u64, dialect: Dialect) -> anyhow::Result<Figure> {
    let (url, label) = match dialect {
        Dialect::Postgres => (postgres_url(), "postgres"),
        Dialect::MySql => (mariadb_url(), "mariadb"),
    };
    let target = format!("{table}_sink");
    let base = format!("{table}_base");
    let topic = format!("bench-sink-{label}");
    {
        let bootstrap = bootstrap.to_string();
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let producer: ThreadedProducer<DefaultProducerContext> =
                producer_config(&bootstrap, BTreeMap::new()).create()?;
            for i in 0..rows {
                let (key, value) = (i.to_string(), row_json(i));
                send(
                    &producer,
                    BaseRecord::to(&topic)
                        .key(key.as_str())
                        .payload(value.as_str()),
                );
            }
            producer.flush(TIMEOUT)?;
            let consumer: rdkafka::consumer::BaseConsumer =
                consumer_config(&bootstrap, BTreeMap::new()).create()?;
            let mut held = 0;
            for partition in 0..PARTITIONS {
                let (low, high) = rdkafka::consumer::Consumer::fetch_watermarks(
                    &consumer, &topic, partition, TIMEOUT,
                )?;
                held += high - low;
            }
            if held as u64 != rows {
                bail!("{topic} holds {held} records, not {rows}");
            }
            Ok(())
        })
        .await??;
    }

    // The baseline: one prepared INSERT, SINK_BATCH rows a transaction.
    let create = |name: &str| {
        match dialect {
        Dialect::Postgres => format!(
            "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id BIGINT NOT NULL, name TEXT NOT NULL, amount DOUBLE PRECISION, flag BOOLEAN)"
        ),
        Dialect::MySql => format!(
            "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id BIGINT NOT NULL, name TEXT NOT NULL, amount DOUBLE, flag TINYINT)"
        ),
    }
    };
    let baseline = match dialect {
        Dialect::Postgres => {
            let mut pg = postgres(&url).await?;
            pg.batch_execute(&create(&base)).await?;
            let insert = pg
                .prepare(&format!(
                    "INSERT INTO {base} (id, name, amount, flag) VALUES ($1, $2, $3, $4)"
                ))
                .await?;
            let started = Instant::now();
            for chunk in (0..rows).collect::<Vec<_>>().chunks(SINK_BATCH) {
                let tx = pg.transaction().await?;
                let values: Vec<(i64, String, f64, bool)> = chunk.iter().map(|&i| row(i)).collect();
                let results =
                    futures::future::join_all(values.iter().map(|(id, name, amount, flag)| {
                        let (tx, insert) = (&tx, &insert);
                        async move { tx.execute(insert, &[id, name, amount, flag]).await }
                    }))
                    .await;
                for r in results {
                    r?;
                }
                tx.commit().await?;
            }
            started.elapsed().as_secs_f64()
        }
        Dialect::MySql => {
            let mut my = mariadb(&url).await?;
            for statement in create(&base).split("; ") {
                my.query_drop(statement).await?;
            }
            let started = Instant::now();
            for chunk in (0..rows).collect::<Vec<_>>().chunks(SINK_BATCH) {
                let mut tx = my.start_transaction(Default::default()).await?;
                tx.exec_batch(
                    format!("INSERT INTO {base} (id, name, amount, flag) VALUES (?, ?, ?, ?)"),
                    chunk.iter().map(|&i| row(i)).collect::<Vec<_>>(),
                )
                .await?;
                tx.commit().await?;
            }
            started.elapsed().as_secs_f64()
        }
    };

    // One connection counts the rows while the connector writes (not one per look).
    let counter = Arc::new(tokio::sync::Mutex::new(Counter::open(&url, dialect).await?));
    counter.lock().await.execute(&create(&target)).await?;
    let count_sql = format!("SELECT count(*) FROM {target}");
    let name = format!("bench-jdbc-sink-{label}");
    let mut spec = spec_with(
        &name,
        ConnectorType::Sink,
        "JdbcSink",
        &[
            ("connection.url", url.clone()),
            ("topics", topic.clone()),
            ("table.name.format", target.clone()),
            ("batch.size", SINK_BATCH.to_string()),
        ],
        "--jdbc-connector",
    )?;
    spec.conversion.value = json_converter(Side::Value);
    let ctx = worker_context(bootstrap, Arc::new(OffsetStore::open(None)?));
    let secs = run_until(spec, ctx, || {
        let (counter, sql) = (counter.clone(), count_sql.clone());
        async move { Ok(counter.lock().await.count(&sql).await >= rows) }
    })
    .await?;
    Ok(Figure {
        name: format!("sink_jdbc_{label}"),
        records: rows,
        size: 0,
        secs,
        baseline_secs: baseline,
    })
}

/// Runs a connector until `done` says so; the seconds it took.
pub(crate) async fn run_until<F, Fut>(
    spec: sluice_worker::runner::ConnectorSpec,
    ctx: WorkerContext,
    mut done: F,
) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let name = spec.name.clone();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let runner = tokio::spawn(run_connector(
        spec,
        ctx,
        Arc::new(Counters::default()),
        stop.clone(),
    ));
    while !done().await? {
        if started.elapsed() > TIMEOUT {
            bail!("{name}: not done within {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    runner.await?;
    Ok(secs)
}

/// Runs a sink until `delivered` reports `total` records at the destination; the seconds
/// from start to that, and from the first record delivered to that (the worker's start-up
/// and consumer-group join left out, as the raw consumers are timed from their first record).
pub(crate) async fn run_sink_until<F, Fut>(
    spec: sluice_worker::runner::ConnectorSpec,
    ctx: WorkerContext,
    total: u64,
    mut delivered: F,
) -> anyhow::Result<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let started = Instant::now();
    let first_cell: std::cell::Cell<Option<Instant>> = std::cell::Cell::new(None);
    let done_cell: std::cell::Cell<Option<Instant>> = std::cell::Cell::new(None);
    let (first, done_at) = (&first_cell, &done_cell);
    run_until(spec, ctx, move || {
        let progress = delivered();
        async move {
            let n = progress.await?;
            if n > 0 && first.get().is_none() {
                first.set(Some(Instant::now()));
            }
            let done = n >= total;
            if done {
                done_at.set(Some(Instant::now()));
            }
            Ok(done)
        }
    })
    .await?;
    let end = done_cell.get().unwrap_or_else(Instant::now);
    let from_first = first_cell
        .get()
        .map_or(0.0, |f| end.duration_since(f).as_secs_f64());
    Ok((end.duration_since(started).as_secs_f64(), from_first))
}

/// A connection of either database for the benchmark's own statements.
enum Counter {
    Postgres(tokio_postgres::Client),
    MySql(mysql_async::Conn),
}

impl Counter {
    async fn open(url: &str, dialect: Dialect) -> anyhow::Result<Counter> {
        Ok(match dialect {
            Dialect::Postgres => Counter::Postgres(postgres(url).await?),
            Dialect::MySql => Counter::MySql(mariadb(url).await?),
        })
    }

    /// Statements separated by `; `.
    async fn execute(&mut self, sql: &str) -> anyhow::Result<()> {
        match self {
            Counter::Postgres(pg) => pg.batch_execute(sql).await?,
            Counter::MySql(my) => {
                for statement in sql.split("; ") {
                    my.query_drop(statement).await?;
                }
            }
        }
        Ok(())
    }

    /// The number a `SELECT count(*)` gives; 0 while the table is not there.
    async fn count(&mut self, sql: &str) -> u64 {
        match self {
            Counter::Postgres(pg) => pg
                .query_one(sql, &[])
                .await
                .map(|r| r.get::<_, i64>(0) as u64)
                .unwrap_or(0),
            Counter::MySql(my) => my
                .query_first::<u64, _>(sql)
                .await
                .ok()
                .flatten()
                .unwrap_or(0),
        }
    }
}
