//! A sink task driven through its stream: batches in a window, flushes, offsets.

use std::collections::BTreeMap;

use sluice_proto::connector::v1::{self as proto, sink_request, sink_response};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use sluice_worker::host::process::{Client, CONNECT_TIMEOUT};
use sluice_worker::task::sink::shared::SharedMemory;

use crate::rpc::{answer, heartbeats, status_text};
use crate::{CheckResult, ANSWER, SINK_BATCHES, SINK_BATCH_RECORDS, SINK_WINDOW};

/// The kit's side of a sink stream.
pub(crate) struct SinkStream {
    pub(crate) tx: mpsc::Sender<proto::SinkRequest>,
    pub(crate) rx: Streaming<proto::SinkResponse>,
    pub(crate) topic: String,
    /// The next offset to send on partition 0.
    pub(crate) next_offset: i64,
    pub(crate) record_errors: usize,
    /// Shared batches released (feature `sink.shared_memory`), in the order told.
    pub(crate) released: Vec<u64>,
}

impl SinkStream {
    pub(crate) async fn open(
        client: &Client,
        class: &proto::ConnectorClass,
        task: &BTreeMap<String, String>,
    ) -> Result<SinkStream, String> {
        SinkStream::open_with(client, class, task, None)
            .await
            .map(|(stream, _)| stream)
    }

    /// A sink stream opened with `shared_memory` offered; what `SinkOpened` said of it.
    pub(crate) async fn open_with(
        client: &Client,
        class: &proto::ConnectorClass,
        task: &BTreeMap<String, String>,
        shared_memory: Option<proto::SharedMemory>,
    ) -> Result<(SinkStream, bool), String> {
        let topic = task
            .get("topics")
            .and_then(|t| t.split(',').map(str::trim).find(|t| !t.is_empty()))
            .unwrap_or("conformance")
            .to_string();
        let (tx, requests) = mpsc::channel(64);
        tx.send(proto::SinkRequest {
            kind: Some(sink_request::Kind::Open(proto::SinkOpen {
                connector_class: class.class_name.clone(),
                connector_name: "conformance".into(),
                task_id: 0,
                config: task.clone().into_iter().collect(),
                shared_memory,
            })),
        })
        .await
        .map_err(|_| "request stream closed")?;
        let rx = answer("Sink", client.clone().sink(ReceiverStream::new(requests))).await?;
        let mut stream = SinkStream {
            tx,
            rx,
            topic,
            next_offset: 0,
            record_errors: 0,
            released: Vec::new(),
        };
        match timeout(CONNECT_TIMEOUT, stream.next()).await {
            Ok(Ok(sink_response::Kind::Opened(opened))) => Ok((stream, opened.shared_memory)),
            Ok(Ok(other)) => Err(format!("expected SinkOpened first, got {other:?} (§5)")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "no SinkOpened within {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
        }
    }

    pub(crate) async fn send(&self, kind: sink_request::Kind) -> Result<(), String> {
        self.tx
            .send(proto::SinkRequest { kind: Some(kind) })
            .await
            .map_err(|_| "the sink stream closed".to_string())
    }

    pub(crate) async fn next(&mut self) -> Result<sink_response::Kind, String> {
        loop {
            match self.rx.message().await {
                Ok(Some(proto::SinkResponse { kind: Some(kind) })) => match kind {
                    sink_response::Kind::RecordError(_) => self.record_errors += 1,
                    sink_response::Kind::Released(r) => self.released.extend(r.seqs),
                    sink_response::Kind::Error(e) => {
                        return Err(format!("the task failed: {}", e.message))
                    }
                    other => return Ok(other),
                },
                Ok(Some(_)) => return Err("an empty SinkResponse".into()),
                Ok(None) => return Err("the connector ended the stream".into()),
                Err(status) => return Err(format!("stream failed: {}", status_text(&status))),
            }
        }
    }

    pub(crate) async fn expect(&mut self, what: &str) -> Result<sink_response::Kind, String> {
        match timeout(ANSWER, self.next()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no {what} within {} s", ANSWER.as_secs())),
        }
    }

    pub(crate) async fn assign(&mut self) -> CheckResult {
        let id = 7;
        self.send(sink_request::Kind::Assigned(proto::PartitionsAssigned {
            id,
            partitions: vec![proto::TopicPartition {
                topic: self.topic.clone(),
                partition: 0,
            }],
        }))
        .await?;
        let positions = match self.expect("PartitionPositions").await? {
            sink_response::Kind::Positions(p) => p,
            other => return Err(format!("expected PartitionPositions, got {other:?} (§5)")),
        };
        if positions.id != id {
            return Err(format!(
                "PartitionPositions has id {}, the request had {id} (§5)",
                positions.id
            ));
        }
        for o in &positions.offsets {
            if o.topic != self.topic || o.partition != 0 || o.offset < 0 {
                return Err(format!(
                    "PartitionPositions names {}-{} at {}, which was not assigned or is negative (§5)",
                    o.topic, o.partition, o.offset
                ));
            }
            self.next_offset = o.offset;
        }
        Ok(format!(
            "{}-0 assigned: PartitionPositions{{id: {id}}} with {} offsets (§5)",
            self.topic,
            positions.offsets.len()
        ))
    }

    pub(crate) fn batch(&mut self, seq: u64) -> proto::SinkBatch {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let records = (0..SINK_BATCH_RECORDS)
            .map(|_| {
                let offset = self.next_offset;
                self.next_offset += 1;
                proto::SinkRecord {
                    topic: self.topic.clone(),
                    partition: 0,
                    offset,
                    key: Some(string_data(format!("conformance-{offset}"))),
                    value: Some(string_data(format!("conformance record {offset}"))),
                    headers: vec![proto::Header {
                        key: "conformance".into(),
                        value: Some(proto::Data {
                            kind: Some(proto::data::Kind::Raw(b"kit".to_vec())),
                        }),
                    }],
                    timestamp_ms: Some(now),
                }
            })
            .collect();
        proto::SinkBatch { seq, records }
    }

    /// SINK_BATCHES batches with SINK_WINDOW in flight; acks must come in order, and the kit
    /// calls Heartbeat while the task works.
    pub(crate) async fn batches(&mut self, client: &Client) -> CheckResult {
        self.batches_via(client, None).await
    }

    /// As `batches`, written into `shared` (feature `sink.shared_memory`), all but the second
    /// (a batch may come through the stream all the same), and each batch must be released
    /// by the time the task stopped.
    pub(crate) async fn shared_batches(
        &mut self,
        client: &Client,
        shared: &mut SharedMemory,
    ) -> CheckResult {
        let done = self.batches_via(client, Some(shared)).await?;
        let flushed = self.flush().await?;
        let stopped = self.stop().await?;
        let mut released = self.released.clone();
        released.sort_unstable();
        let shared_seqs: Vec<u64> = (1..=SINK_BATCHES).filter(|s| *s != 2).collect();
        if released != shared_seqs {
            return Err(format!(
                "released shared batches {:?} by SinkStopped, expected {shared_seqs:?}, each once (§5 sink.shared_memory)",
                self.released
            ));
        }
        Ok(format!(
            "{done}; in shared memory, each released once by SinkStopped; {flushed}; {stopped}"
        ))
    }

    async fn batches_via(
        &mut self,
        client: &Client,
        mut shared: Option<&mut SharedMemory>,
    ) -> CheckResult {
        let mut sent = 0u64;
        let mut acked = 0u64;
        let mut beat_every = 0;
        // Releases already applied to `shared`.
        let mut applied = self.released.len();
        while acked < SINK_BATCHES {
            while sent < SINK_BATCHES && sent - acked < SINK_WINDOW {
                sent += 1;
                let batch = self.batch(sent);
                let kind = match shared.as_deref_mut().filter(|_| sent != 2) {
                    Some(memory) => {
                        let mut fields = Vec::new();
                        for record in &batch.records {
                            prost::encoding::message::encode(2, record, &mut fields);
                        }
                        let written = memory.write(sent, &fields).ok_or(
                            "the shared memory is full: batches were not released (§5 sink.shared_memory)",
                        )?;
                        sink_request::Kind::SharedBatch(written)
                    }
                    None => sink_request::Kind::Batch(batch),
                };
                self.send(kind).await?;
            }
            if let Some(memory) = shared.as_deref_mut() {
                self.released[applied..]
                    .iter()
                    .for_each(|seq| memory.release(*seq));
                applied = self.released.len();
            }
            match self.expect("SinkBatchAck").await? {
                sink_response::Kind::Ack(ack) if ack.seq == acked + 1 => acked += 1,
                sink_response::Kind::Ack(ack) => {
                    return Err(format!(
                        "acknowledged batch {} when {} was next: acks come in order (§5)",
                        ack.seq,
                        acked + 1
                    ))
                }
                other => return Err(format!("expected SinkBatchAck, got {other:?} (§5)")),
            }
            beat_every += 1;
            if beat_every % 3 == 0 {
                heartbeats(client, 1)
                    .await
                    .map_err(|e| format!("while batches were in flight: {e}"))?;
            }
        }
        Ok(format!(
            "{SINK_BATCHES} batches of {SINK_BATCH_RECORDS} records, {SINK_WINDOW} in flight, acknowledged in order, {} record errors, heartbeats answered meanwhile (§5)",
            self.record_errors
        ))
    }

    pub(crate) async fn flush(&mut self) -> CheckResult {
        let requested = self.next_offset;
        self.send(sink_request::Kind::Flush(proto::FlushRequest {
            flush_id: 1,
            offsets: vec![proto::TopicPartitionOffset {
                topic: self.topic.clone(),
                partition: 0,
                offset: requested,
            }],
        }))
        .await?;
        let flushed = match self.expect("FlushResponse").await? {
            sink_response::Kind::Flushed(f) => f,
            other => return Err(format!("expected FlushResponse, got {other:?} (§5)")),
        };
        if flushed.flush_id != 1 {
            return Err(format!(
                "FlushResponse has flush_id {}, the request had 1 (§5)",
                flushed.flush_id
            ));
        }
        for o in &flushed.offsets {
            if o.topic != self.topic || o.partition != 0 || o.offset > requested {
                return Err(format!(
                    "FlushResponse offers {}-{} at {}, beyond what was sent ({}-0 at {requested}) (§5)",
                    o.topic, o.partition, o.offset, self.topic
                ));
            }
        }
        Ok(format!(
            "FlushResponse{{flush_id: 1}} with {:?} for {requested} requested (§5)",
            flushed.offsets.iter().map(|o| o.offset).collect::<Vec<_>>()
        ))
    }

    pub(crate) async fn stop(&mut self) -> CheckResult {
        self.send(sink_request::Kind::Stop(proto::Stop {})).await?;
        match self.expect("SinkStopped").await? {
            sink_response::Kind::Stopped(_) => {}
            other => return Err(format!("expected SinkStopped, got {other:?} (§5)")),
        }
        let (tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        match timeout(ANSWER, self.rx.message()).await {
            Ok(Ok(None)) => Ok("SinkStopped after Stop, then the stream ended (§5)".into()),
            Ok(Ok(Some(m))) => Err(format!("after SinkStopped, sent {m:?}")),
            Ok(Err(status)) => Err(format!(
                "the stream ended with an error after SinkStopped: {}",
                status_text(&status)
            )),
            Err(_) => Err(format!(
                "the stream did not end within {} s of SinkStopped (§5)",
                ANSWER.as_secs()
            )),
        }
    }
}

pub(crate) fn string_data(text: String) -> proto::Data {
    proto::Data {
        kind: Some(proto::data::Kind::Structured(proto::Structured {
            schema: Some(proto::Schema {
                r#type: proto::SchemaType::String as i32,
                ..Default::default()
            }),
            value: Some(proto::Value {
                kind: Some(proto::value::Kind::String(text)),
            }),
        })),
    }
}
