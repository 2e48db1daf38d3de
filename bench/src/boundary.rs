//! Plugin-boundary throughput: one source task's records pulled across the connector protocol
//! as fast as the worker's credit scheme lets them come, with no Kafka behind — the Rust SDK's
//! DatagenSource and the Python SDK's PyDatagenSource — against the same records built with
//! no protocol, measured in the same run: in this process for Rust, by a plain Python loop
//! calling the same task's `poll` for Python.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _};
use sluice_connector_datagen::record_value;
use sluice_proto::connector::v1::{self as proto, source_request, source_response};
use sluice_worker::host::process::{ConnectorProcess, PluginCommand};
use sluice_worker::task::source::wire::{self, SourceFrame};
// What the worker grants when a stream opens, and returns per batch.
use sluice_worker::task::source::{CREDIT_BYTES, CREDIT_RECORDS};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::Figure;

/// Records per poll, as the SDKs ask at most.
const POLL: u64 = 4096;

/// Figures at 100 B and 1 KB for both SDKs; the Python runs pull a quarter of the records.
pub async fn figures(records: u64) -> anyhow::Result<Vec<Figure>> {
    let python = python_datagen()?;
    let mut figures = Vec::new();
    for (size, count) in [(100usize, records), (1024, (records / 5).max(1))] {
        let baseline = in_process(count, size);
        let rust = pull(
            &rust_datagen()?,
            "DatagenSource",
            &[
                ("topic", "bench".into()),
                ("record.size", size.to_string()),
                ("key.cardinality", "0".into()),
                ("count", count.to_string()),
            ],
            count,
        )
        .await?;
        figures.push(Figure {
            name: format!("boundary_rust_{size}b"),
            records: count,
            size,
            secs: rust,
            baseline_secs: baseline,
        });
        let py_count = (count / 4).max(1);
        let py_baseline = python_loop(&python, py_count, size).await?;
        let py = pull(
            &python,
            "PyDatagenSource",
            &[
                ("topic", "bench".into()),
                ("record.bytes", size.to_string()),
                ("count", py_count.to_string()),
            ],
            py_count,
        )
        .await
        .context(
            "the Python SDK's figure needs grpcio and protobuf: run the test suite once (it \
             provisions them under target/tmp/test-tools) or pip install ./connector-sdk/python",
        )?;
        figures.push(Figure {
            name: format!("boundary_python_{size}b"),
            records: py_count,
            size,
            secs: py,
            baseline_secs: py_baseline,
        });
    }
    Ok(figures)
}

/// This benchmark's own executable serves the Rust datagen plugin (`--connector`).
fn rust_datagen() -> anyhow::Result<PluginCommand> {
    Ok(PluginCommand {
        program: std::env::current_exe().context("locate the benchmark executable")?,
        args: vec!["--connector".into()],
    })
}

/// connectors/python/datagen, run with the SDK's source tree on PYTHONPATH, then the packages
/// the test suite provisions (`target/tmp/test-tools/site`, see tests/harness/tools.rs) when
/// they are there; otherwise grpcio and protobuf must be installed
/// (`pip install ./connector-sdk/python`).
fn python_datagen() -> anyhow::Result<PluginCommand> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the bench crate sits in the workspace")?
        .to_path_buf();
    let mut path = repo.join("connector-sdk/python/src").display().to_string();
    let provisioned = repo.join("target/tmp/test-tools/site");
    if provisioned.is_dir() {
        path.push_str(&format!(":{}", provisioned.display()));
    }
    let script = repo.join("connectors/python/datagen");
    Ok(PluginCommand {
        program: "env".into(),
        args: vec![
            format!("PYTHONPATH={path}"),
            "python3".into(),
            script.display().to_string(),
        ],
    })
}

/// The Python baseline: PyDatagenSource's task polled in a plain Python loop for `records`
/// records of `size` bytes (4,096 per poll, as the SDK asks), with no SDK transport; seconds
/// as the loop measured them.
async fn python_loop(command: &PluginCommand, records: u64, size: usize) -> anyhow::Result<f64> {
    const LOOP: &str = r#"
import importlib.machinery, importlib.util, sys, time
from sluice_connector.config import Config
from sluice_connector.task import SourceTaskContext
script, records, size = sys.argv[1], int(sys.argv[2]), sys.argv[3]
loader = importlib.machinery.SourceFileLoader("datagen", script)
spec = importlib.util.spec_from_loader("datagen", loader)
datagen = importlib.util.module_from_spec(spec)
loader.exec_module(datagen)
task = datagen.DatagenTask()
config = Config({"topic": "bench", "record.bytes": size, "count": str(records)})
task.start(SourceTaskContext("bench", 0, config, {}, None))
started, got = time.perf_counter(), 0
while got < records:
    got += len(task.poll(4096))
print(time.perf_counter() - started)
"#;
    let mut args = command.args.clone();
    let script = args
        .pop()
        .context("the Python plugin command names its script")?;
    args.extend([
        "-c".into(),
        LOOP.into(),
        script,
        records.to_string(),
        size.to_string(),
    ]);
    let out = tokio::process::Command::new(&command.program)
        .args(&args)
        .output()
        .await
        .context("run the Python baseline loop")?;
    if !out.status.success() {
        bail!(
            "the Python baseline loop failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("the Python baseline loop printed no time")
}

/// Seconds to receive `records` records from the connector's source stream, from the first
/// credit to the last record, read and credited per batch as the worker does.
async fn pull(
    command: &PluginCommand,
    class: &str,
    config: &[(&str, String)],
    records: u64,
) -> anyhow::Result<f64> {
    let process = ConnectorProcess::launch(command, "bench-boundary").await?;
    let config: BTreeMap<String, String> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let (tx, rx) = mpsc::channel(256);
    let send = |kind| proto::SourceRequest { kind: Some(kind) };
    tx.send(send(source_request::Kind::Open(proto::SourceOpen {
        connector_class: class.into(),
        connector_name: "bench".into(),
        task_id: 0,
        config: config.into_iter().collect(),
        positions: Vec::new(),
    })))
    .await?;
    // Read as the worker reads a source stream.
    let mut stream = wire::open(process.channel.clone(), ReceiverStream::new(rx))
        .await?
        .into_inner();
    match stream.message().await? {
        Some(SourceFrame::Other(m)) if matches!(m.kind, Some(source_response::Kind::Opened(_))) => {
        }
        _ => bail!("{class}: expected SourceOpened"),
    }
    let started = Instant::now();
    tx.send(send(source_request::Kind::Credit(proto::Credit {
        records: CREDIT_RECORDS,
        bytes: CREDIT_BYTES,
    })))
    .await?;
    let mut received = 0u64;
    while received < records {
        let other = match stream.message().await? {
            Some(SourceFrame::Batch(batch)) => {
                let n = batch.records.len() as u64;
                received += n;
                tx.send(send(source_request::Kind::Credit(proto::Credit {
                    records: n,
                    bytes: batch.encoded_len as u64,
                })))
                .await?;
                tx.send(send(source_request::Kind::Ack(proto::SourceAck {
                    batch_seq: batch.seq,
                })))
                .await?;
                continue;
            }
            Some(SourceFrame::Other(m)) => m.kind,
            None => bail!("{class}: the stream ended after {received} records"),
        };
        if let Some(source_response::Kind::Error(e)) = other {
            bail!("{class}: {}", e.message);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    tx.send(send(source_request::Kind::Stop(proto::Stop {})))
        .await?;
    while let Ok(Some(m)) = stream.message().await {
        if let SourceFrame::Other(m) = m {
            if matches!(m.kind, Some(source_response::Kind::Stopped(_))) {
                break;
            }
        }
    }
    drop(tx);
    process.shutdown().await;
    Ok(secs)
}

/// The baseline: the same records (null key, a `size`-byte string value, a source partition
/// and a `{"seq":n}` offset) built in this process in batches of a poll's size, with no
/// encoding and no transport.
fn in_process(records: u64, size: usize) -> f64 {
    let started = Instant::now();
    let partition = r#"{"datagen.task":0}"#.to_string();
    let mut built = 0u64;
    let mut seq = 0u64;
    while seq < records {
        let n = POLL.min(records - seq);
        let batch = proto::SourceBatch {
            seq: 1,
            partitions: vec![partition.clone()],
            records: (seq..seq + n)
                .map(|s| proto::SourceRecord {
                    partition: Some(0),
                    offset: format!("{{\"seq\":{s}}}"),
                    topic: "bench".into(),
                    value: Some(proto::Data {
                        kind: Some(proto::data::Kind::Raw(
                            record_value(0, s, size).into_bytes(),
                        )),
                    }),
                    ..Default::default()
                })
                .collect(),
        };
        built += std::hint::black_box(batch).records.len() as u64;
        seq += n;
    }
    assert_eq!(built, records);
    started.elapsed().as_secs_f64()
}
