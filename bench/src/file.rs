//! File figures: Kafka Connect's FileStreamSource and FileStreamSink configs end to end,
//! file I/O included, each beside a raw librdkafka client doing the same file work on the
//! same broker in the same run:
//! - file → Kafka: FileStreamSource (`file`, `topic`) → worker (StringConverter) → Kafka,
//!   timed until the position after the last line is committed (Kafka acknowledged it); the
//!   baseline reads the same file line by line and produces each line as a value, timed
//!   until the producer's flush returns.
//! - Kafka → file: Kafka → worker (StringConverter) → FileStreamSink (`file`, `topics`),
//!   timed from the first record the worker delivers until every line is in the file; the
//!   baseline consumes the same topic and appends each value and a newline through a
//!   buffered writer, timed from its first record until the last line is written and
//!   flushed. Both start at the first record: joining the group costs the mock cluster's
//!   fixed initial rebalance delay on either side.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use sluice_connector_datagen::record_value;
use sluice_proto::connector::v1::ConnectorType;
use sluice_worker::runner::{producer_config, ConnectorSpec};
use sluice_worker::task::offsets::OffsetStore;

use crate::{
    raw_consume_each, raw_produce, run_sink_until, run_until_committed, send, spec_with, Figure,
    TIMEOUT,
};

/// Bytes of each line, newline excluded.
pub const LINE: usize = 100;
pub const SOURCE_RAW: &str = "file-source-raw";
pub const SOURCE_PIPELINE: &str = "file-source-pipeline";
pub const SINK_INPUT: &str = "file-sink-input";
/// The topics and their partition counts: the sink's input spread as the null sink figure's
/// (`consume-*`).
pub fn topics(partitions: i32) -> [(String, i32); 3] {
    [
        (SOURCE_RAW.to_string(), partitions),
        (SOURCE_PIPELINE.to_string(), partitions),
        (SINK_INPUT.to_string(), partitions * 4),
    ]
}

/// The executable's flag that serves the file plugin.
pub const FLAG: &str = "--file-connector";

/// Both figures, in a scratch directory of their own.
pub async fn figures(bootstrap: &str, records: u64) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir().context("scratch directory")?;
    Ok(vec![
        source_figure(bootstrap, records, dir.path()).await?,
        sink_figure(bootstrap, records, dir.path()).await?,
    ])
}

async fn source_figure(bootstrap: &str, records: u64, dir: &Path) -> anyhow::Result<Figure> {
    let input = dir.join("input.txt");
    let size = write_lines(&input, records)?;
    let raw = {
        let (bootstrap, input) = (bootstrap.to_string(), input.clone());
        tokio::task::spawn_blocking(move || raw_file_produce(&bootstrap, &input, records)).await??
    };
    let pipeline = pipeline_file_source(bootstrap, &input, size).await?;
    Ok(Figure {
        name: format!("source_file_{LINE}b"),
        records,
        size: LINE,
        secs: pipeline,
        baseline_secs: raw,
    })
}

async fn sink_figure(bootstrap: &str, records: u64, dir: &Path) -> anyhow::Result<Figure> {
    raw_produce(bootstrap, SINK_INPUT, records, LINE).await?;
    let expected = records * (LINE as u64 + 1);
    let raw = {
        let (bootstrap, out) = (bootstrap.to_string(), dir.join("raw-output.txt"));
        tokio::task::spawn_blocking(move || raw_consume_to_file(&bootstrap, &out, records))
            .await??
    };
    let pipeline = pipeline_file_sink(bootstrap, &dir.join("output.txt"), expected).await?;
    Ok(Figure {
        name: format!("sink_file_{LINE}b"),
        records,
        size: LINE,
        secs: pipeline,
        baseline_secs: raw,
    })
}

/// `records` lines of [`LINE`] bytes (datagen's values); returns the file's size.
pub fn write_lines(path: &Path, records: u64) -> anyhow::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for seq in 0..records {
        out.write_all(record_value(0, seq, LINE).as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(std::fs::metadata(path)?.len())
}

/// The source baseline: the file read line by line, each line produced as a value.
fn raw_file_produce(bootstrap: &str, input: &Path, records: u64) -> anyhow::Result<f64> {
    let producer: ThreadedProducer<DefaultProducerContext> =
        producer_config(bootstrap, BTreeMap::new()).create()?;
    let started = Instant::now();
    let mut lines = 0u64;
    for line in std::io::BufReader::new(std::fs::File::open(input)?).lines() {
        let line = line?;
        send(
            &producer,
            BaseRecord::<[u8], [u8]>::to(SOURCE_RAW).payload(line.as_bytes()),
        );
        lines += 1;
    }
    producer.flush(TIMEOUT)?;
    if lines != records {
        bail!("raw file producer: read {lines} lines of {records}");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The sink baseline: each value and a newline appended through a buffered writer.
fn raw_consume_to_file(bootstrap: &str, out: &PathBuf, records: u64) -> anyhow::Result<f64> {
    let file = std::cell::RefCell::new(std::io::BufWriter::new(std::fs::File::create(out)?));
    let each = |value: &[u8]| {
        let mut file = file.borrow_mut();
        file.write_all(value)?;
        Ok(file.write_all(b"\n")?)
    };
    let finish = || Ok(file.borrow_mut().flush()?);
    raw_consume_each(bootstrap, SINK_INPUT, records, each, finish)
}

/// The plugin's connector of `kind` on `file`, with `topic` (`topic`, or `topics` for a sink).
fn file_spec(
    kind: ConnectorType,
    file: &Path,
    topic: (&str, &str),
) -> anyhow::Result<ConnectorSpec> {
    let (name, class) = match kind {
        ConnectorType::Sink => ("bench-file-sink", "FileStreamSinkConnector"),
        _ => ("bench-file-source", "FileStreamSourceConnector"),
    };
    let config = [
        ("file", file.display().to_string()),
        (topic.0, topic.1.to_string()),
    ];
    let class = format!("org.apache.kafka.connect.file.{class}");
    spec_with(name, kind, &class, &config, FLAG)
}

/// FileStreamSource → worker → Kafka, until the position after the last line is committed.
async fn pipeline_file_source(bootstrap: &str, input: &Path, size: u64) -> anyhow::Result<f64> {
    let spec = file_spec(ConnectorType::Source, input, ("topic", SOURCE_PIPELINE))?;
    let offsets = Arc::new(OffsetStore::open(None)?);
    let last = format!("{{\"position\":{size}}}");
    run_until_committed(spec, bootstrap, offsets, &last).await
}

/// Kafka → worker → FileStreamSink, from the first record delivered until the file holds
/// every line.
async fn pipeline_file_sink(bootstrap: &str, out: &Path, expected: u64) -> anyhow::Result<f64> {
    let spec = file_spec(ConnectorType::Sink, out, ("topics", SINK_INPUT))?;
    let written = || std::fs::metadata(out).map_or(0, |m| m.len());
    let secs = run_sink_until(spec, bootstrap, |_| written() >= expected).await?;
    if written() != expected {
        bail!(
            "file sink: {} bytes written, {expected} expected",
            written()
        );
    }
    Ok(secs)
}
