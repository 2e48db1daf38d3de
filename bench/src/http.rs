//! The HTTP connectors against an HTTP server in this process (axum on 127.0.0.1), each figure
//! beside a plain reqwest client doing the same HTTP work in the same run:
//! - `source_http`: HttpSource paging through the server's items (1,000 a page, the cursor in
//!   the query) into Kafka, until the last item's cursor is committed; baseline: a reqwest
//!   loop fetching the same pages and reading each item's cursor.
//! - `sink_http`: Kafka (100-byte JSON values) → worker → HttpSink (JSON arrays of 500), until
//!   the server counted every record; baseline: the same arrays POSTed one after another.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use sluice_proto::connector::v1::ConnectorType;
use sluice_worker::runner::producer_config;
use sluice_worker::task::offsets::OffsetStore;

use crate::databases::run_sink_until;
use crate::mqtt::byte_array_converter;
use crate::{
    run_until_committed, send, spec_with, string_converter, worker_context, Figure, TIMEOUT,
};

/// The sink figure's topic, created before the run.
pub const TOPIC: &str = "bench-sink-http";
/// Partitions of the sink figure's topic: the mock cluster keeps about 5 MB a partition.
pub const PARTITIONS: i32 = 32;
const BATCH: usize = 500;
const PAGE: usize = 1000;

fn value(i: u64) -> Vec<u8> {
    let mut v = format!(r#"{{"seq":{i},"pad":""#).into_bytes();
    v.resize(98, b'x');
    v.extend_from_slice(br#""}"#);
    v
}

struct ServerState {
    /// Items of the source figure, each its JSON text, by id.
    items: Vec<String>,
    /// Records the sink figure's requests carried.
    received: AtomicU64,
}

async fn serve(state: Arc<ServerState>) -> anyhow::Result<u16> {
    use axum::extract::{RawQuery, State};
    use axum::routing::{get, post};
    async fn items(State(state): State<Arc<ServerState>>, RawQuery(q): RawQuery) -> String {
        let after: i64 = q
            .unwrap_or_default()
            .split('&')
            .find_map(|p| p.strip_prefix("after="))
            .and_then(|a| a.parse().ok())
            .unwrap_or(-1);
        let start = (after + 1).max(0) as usize;
        let end = (start + PAGE).min(state.items.len());
        let page = state.items.get(start..end).unwrap_or_default();
        format!(r#"{{"items":[{}]}}"#, page.join(","))
    }
    async fn ingest(
        State(state): State<Arc<ServerState>>,
        body: axum::body::Bytes,
    ) -> &'static str {
        // Records are the array's top-level objects.
        let n = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.as_array().map(|a| a.len() as u64))
            .unwrap_or(0);
        state.received.fetch_add(n, Ordering::Relaxed);
        ""
    }
    let app = axum::Router::new()
        .route("/items", get(items))
        .route("/ingest", post(ingest))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}

pub async fn figures(bootstrap: &str, records: u64) -> anyhow::Result<Vec<Figure>> {
    // Items of about 100 bytes: `{"id":N,"pad":"xx…"}`.
    let items = (0..records)
        .map(|i| format!(r#"{{"id":{i},"pad":"{}"}}"#, "x".repeat(80)))
        .collect();
    let state = Arc::new(ServerState {
        items,
        received: AtomicU64::new(0),
    });
    let port = serve(state.clone()).await?;
    let mut figures = vec![source(bootstrap, port, records).await?];
    figures.extend(sink(bootstrap, port, &state, records).await?);
    Ok(figures)
}

async fn source(bootstrap: &str, port: u16, records: u64) -> anyhow::Result<Figure> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut cursor = -1i64;
    let mut taken = 0u64;
    while taken < records {
        let bytes = client
            .get(format!(
                "http://127.0.0.1:{port}/items?after={cursor}&limit={PAGE}"
            ))
            .send()
            .await?
            .bytes()
            .await?;
        let doc: serde_json::Value = serde_json::from_slice(&bytes)?;
        for item in doc["items"].as_array().into_iter().flatten() {
            cursor = item["id"].as_i64().unwrap_or(cursor);
            taken += 1;
        }
    }
    let baseline = started.elapsed().as_secs_f64();
    tracing::info!(baseline, "http source baseline paged");

    let mut spec = spec_with(
        "bench-http-source",
        ConnectorType::Source,
        "HttpSource",
        &[
            ("http.request.url", format!("http://127.0.0.1:{port}/items")),
            (
                "http.request.params",
                format!("after=${{offset}}&limit={PAGE}"),
            ),
            ("http.response.list.pointer", "/items".into()),
            ("http.response.record.offset.pointer", "/id".into()),
            ("http.offset.initial", "-1".into()),
            ("kafka.topic", "bench-http-source".into()),
        ],
        "--http-connector",
    )?;
    spec.conversion.value = string_converter(sluice_data::converter::Side::Value);
    let offsets = Arc::new(OffsetStore::open(None)?);
    let last = serde_json::json!({ "cursor": (records - 1).to_string() }).to_string();
    let secs = run_until_committed(spec, bootstrap, offsets, &last).await?;
    Ok(Figure {
        name: "source_http".into(),
        records,
        size: 100,
        secs,
        baseline_secs: baseline,
    })
}

async fn sink(
    bootstrap: &str,
    port: u16,
    state: &Arc<ServerState>,
    records: u64,
) -> anyhow::Result<Vec<Figure>> {
    {
        let bootstrap = bootstrap.to_string();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let producer: ThreadedProducer<DefaultProducerContext> =
                producer_config(&bootstrap, BTreeMap::new()).create()?;
            for i in 0..records {
                let v = value(i);
                send(
                    &producer,
                    BaseRecord::<(), [u8]>::to(TOPIC)
                        .partition((i % PARTITIONS as u64) as i32)
                        .payload(&v[..]),
                );
            }
            producer.flush(TIMEOUT)?;
            Ok(())
        })
        .await??;
    }
    // The baseline: the same arrays, one POST after another.
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/ingest");
    let started = Instant::now();
    let mut i = 0u64;
    while i < records {
        let end = (i + BATCH as u64).min(records);
        let mut body = b"[".to_vec();
        for n in i..end {
            if n > i {
                body.push(b',');
            }
            body.extend_from_slice(&value(n));
        }
        body.push(b']');
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "baseline POST: {}",
            response.status()
        );
        i = end;
    }
    let baseline = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        state.received.load(Ordering::Relaxed) == records,
        "baseline lost records"
    );
    state.received.store(0, Ordering::Relaxed);
    tracing::info!(baseline, "http sink baseline posted");

    let mut spec = spec_with(
        "bench-http-sink",
        ConnectorType::Sink,
        "HttpSink",
        &[
            ("topics", TOPIC.into()),
            ("http.api.url", url.clone()),
            ("batch.max.size", BATCH.to_string()),
            ("batch.json.as.array", "true".into()),
        ],
        "--http-connector",
    )?;
    spec.conversion.value = byte_array_converter();
    let ctx = worker_context(bootstrap, Arc::new(OffsetStore::open(None)?));
    let state = state.clone();
    let (secs, from_first) = run_sink_until(spec, ctx, records, || {
        let got = state.received.load(Ordering::Relaxed);
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(got)
        }
    })
    .await?;
    Ok(vec![
        Figure {
            name: "sink_http".into(),
            records,
            size: 100,
            secs,
            baseline_secs: baseline,
        },
        Figure {
            name: "sink_http_from_first".into(),
            records,
            size: 100,
            secs: from_first,
            baseline_secs: baseline,
        },
    ])
}
