//! The S3 sink against an S3-compatible server on this machine: `SLUICE_BENCH_S3_URL` when
//! set, else moto's server mode started here from the test tools (`cargo test --workspace`
//! installs it into `target/tmp/test-tools/site`; `SLUICE_BENCH_MOTO_PATH` names another
//! folder). A bucket of the run's own:
//! - `sink_s3`: Kafka (100-byte values, 8 partitions) → worker → S3Sink (ByteArrayFormat,
//!   `flush.size` a tenth of a partition's records), until every object is listed; baseline:
//!   the same objects (the same bytes) uploaded one after another by a plain rust-s3 client,
//!   as the task does.
//!
//! The embedded Kafka keeps 5 MB per partition (librdkafka's mock cluster): older records are
//! gone and the sink would wait for objects that cannot come, so `--records` stays at or below
//! 3,000,000 (300,000 records here).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use s3::creds::Credentials;
use s3::{Bucket, BucketConfiguration, Region};
use sluice_proto::connector::v1::ConnectorType;
use sluice_worker::runner::producer_config;
use sluice_worker::task::offsets::OffsetStore;

use crate::databases::run_sink_until;
use crate::mqtt::byte_array_converter;
use crate::{send, spec_with, worker_context, Figure, TIMEOUT};

/// The sink figure's topic, created before the run.
pub const TOPIC: &str = "bench-sink-s3";
pub const PARTITIONS: i32 = 8;
const PAYLOAD: usize = 100;

/// moto, when this run started it.
struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto() -> anyhow::Result<(Moto, String)> {
    let site = std::env::var("SLUICE_BENCH_MOTO_PATH").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/tmp/test-tools/site").into()
    });
    anyhow::ensure!(
        std::path::Path::new(&site).join("moto").is_dir(),
        "no moto in {site}: run `cargo test --workspace` once (it installs moto there), set \
         SLUICE_BENCH_MOTO_PATH to a folder holding it, or SLUICE_BENCH_S3_URL to an S3 endpoint"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .env("PYTHONPATH", &site)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start python3 -m moto.server")?;
    let moto = Moto(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "moto did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((moto, format!("http://127.0.0.1:{port}")))
}

fn bucket(url: &str, name: &str) -> anyhow::Result<Box<Bucket>> {
    let region = Region::Custom {
        region: "us-west-2".into(),
        endpoint: url.into(),
    };
    let credentials = Credentials::new(Some("bench"), Some("bench"), None, None, None)?;
    Ok(Bucket::new(name, region, credentials)?.with_path_style())
}

async fn create(url: &str, name: &str) -> anyhow::Result<Box<Bucket>> {
    let b = bucket(url, name)?;
    Bucket::create_with_path_style(
        name,
        b.region.clone(),
        b.credentials().await?,
        BucketConfiguration::default(),
    )
    .await
    .with_context(|| format!("create bucket {name}"))?;
    Ok(b)
}

async fn count(bucket: &Bucket, prefix: &str) -> anyhow::Result<u64> {
    let pages = bucket.list(prefix.into(), None).await?;
    Ok(pages.iter().map(|p| p.contents.len() as u64).sum())
}

fn payload(i: u64) -> Vec<u8> {
    let mut v = format!("{i:020}").into_bytes();
    v.resize(PAYLOAD, b'.');
    v
}

pub async fn figures(bootstrap: &str, records: u64) -> anyhow::Result<Vec<Figure>> {
    let (_moto, url) = match std::env::var("SLUICE_BENCH_S3_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let (moto, url) = start_moto()?;
            (Some(moto), url)
        }
    };
    let per_partition = (records / PARTITIONS as u64).max(10);
    let records = per_partition * PARTITIONS as u64;
    let flush_size = per_partition / 10;
    let objects = records / flush_size;
    {
        let bootstrap = bootstrap.to_string();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let producer: ThreadedProducer<DefaultProducerContext> =
                producer_config(&bootstrap, BTreeMap::new()).create()?;
            for i in 0..records {
                let value = payload(i);
                send(
                    &producer,
                    BaseRecord::<(), [u8]>::to(TOPIC)
                        .partition((i % PARTITIONS as u64) as i32)
                        .payload(&value[..]),
                );
            }
            producer.flush(TIMEOUT)?;
            Ok(())
        })
        .await??;
    }
    let run = format!("bench-{}", std::process::id());

    // The baseline: the same objects (flush.size values and their separators each), one
    // PUT after another.
    let raw = create(&url, &format!("{run}-raw")).await?;
    let mut body = Vec::with_capacity(flush_size as usize * (PAYLOAD + 1));
    for i in 0..flush_size {
        body.extend_from_slice(&payload(i));
        body.push(b'\n');
    }
    let started = Instant::now();
    for n in 0..objects {
        raw.put_object_with_content_type(
            format!(
                "raw/{TOPIC}/partition={}/{n:010}.bin",
                n % PARTITIONS as u64
            ),
            &body,
            "application/octet-stream",
        )
        .await?;
    }
    let baseline = started.elapsed().as_secs_f64();
    tracing::info!(baseline, objects, "s3 baseline uploaded");

    let sink_bucket = format!("{run}-sink");
    let out = create(&url, &sink_bucket).await?;
    let mut spec = spec_with(
        "bench-s3-sink",
        ConnectorType::Sink,
        "S3Sink",
        &[
            ("topics", TOPIC.into()),
            ("s3.bucket.name", sink_bucket.clone()),
            ("s3.region", "us-west-2".into()),
            ("store.url", url.clone()),
            ("aws.access.key.id", "bench".into()),
            ("aws.secret.access.key", "bench".into()),
            ("flush.size", flush_size.to_string()),
            (
                "format.class",
                "io.confluent.connect.s3.format.bytearray.ByteArrayFormat".into(),
            ),
        ],
        "--s3-connector",
    )?;
    spec.conversion.value = byte_array_converter();
    let ctx = worker_context(bootstrap, Arc::new(OffsetStore::open(None)?));
    let out = Arc::new(out);
    let (secs, from_first) = run_sink_until(spec, ctx, objects, || {
        let out = out.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            count(&out, "topics/").await
        }
    })
    .await?;
    Ok(vec![
        Figure {
            name: "sink_s3".into(),
            records,
            size: PAYLOAD,
            secs,
            baseline_secs: baseline,
        },
        Figure {
            name: "sink_s3_from_first".into(),
            records,
            size: PAYLOAD,
            secs: from_first,
            baseline_secs: baseline,
        },
    ])
}
