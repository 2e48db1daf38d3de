//! A source task driven through its stream: credits, batches, acknowledgements, commits.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_proto::connector::v1::{self as proto, source_request, source_response};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use sluice_worker::host::process::{Client, CONNECT_TIMEOUT};

use crate::rpc::{answer, heartbeats, status_text};
use crate::{CheckResult, ANSWER, QUIET, SMALL_CREDIT};

/// The kit's side of a source stream.
pub(crate) struct SourceStream {
    pub(crate) tx: mpsc::Sender<proto::SourceRequest>,
    pub(crate) rx: Streaming<proto::SourceResponse>,
    pub(crate) batches: Vec<proto::SourceBatch>,
    pub(crate) record_errors: usize,
}

impl SourceStream {
    pub(crate) async fn open(
        client: &Client,
        class: &proto::ConnectorClass,
        task: &BTreeMap<String, String>,
        positions: Vec<proto::SourcePosition>,
    ) -> Result<SourceStream, String> {
        let (tx, requests) = mpsc::channel(64);
        let open = proto::SourceRequest {
            kind: Some(source_request::Kind::Open(proto::SourceOpen {
                connector_class: class.class_name.clone(),
                connector_name: "conformance".into(),
                task_id: 0,
                config: task.clone().into_iter().collect(),
                positions,
            })),
        };
        tx.send(open).await.map_err(|_| "request stream closed")?;
        let rx = answer(
            "Source",
            client.clone().source(ReceiverStream::new(requests)),
        )
        .await?;
        let mut stream = SourceStream {
            tx,
            rx,
            batches: Vec::new(),
            record_errors: 0,
        };
        match timeout(CONNECT_TIMEOUT, stream.rx.message()).await {
            Ok(Ok(Some(proto::SourceResponse {
                kind: Some(source_response::Kind::Opened(_)),
            }))) => Ok(stream),
            Ok(Ok(Some(proto::SourceResponse {
                kind: Some(source_response::Kind::Error(e)),
            }))) => Err(format!("the task did not start: {}", e.message)),
            Ok(Ok(other)) => Err(format!("expected SourceOpened first, got {other:?} (§4)")),
            Ok(Err(status)) => Err(format!("stream failed: {}", status_text(&status))),
            Err(_) => Err(format!(
                "no SourceOpened within {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
        }
    }

    pub(crate) async fn credit(&self, records: u64, bytes: u64) -> Result<(), String> {
        self.tx
            .send(proto::SourceRequest {
                kind: Some(source_request::Kind::Credit(proto::Credit {
                    records,
                    bytes,
                })),
            })
            .await
            .map_err(|_| "the source stream closed".to_string())
    }

    pub(crate) async fn send(&mut self, kind: source_request::Kind) -> Result<(), String> {
        if self
            .tx
            .send(proto::SourceRequest { kind: Some(kind) })
            .await
            .is_ok()
        {
            return Ok(());
        }
        // The call is over; its response stream tells why.
        Err(match timeout(QUIET, self.next()).await {
            Ok(Err(e)) => e,
            Ok(Ok(m)) => format!("the source stream closed after {m:?}"),
            Err(_) => "the source stream closed".into(),
        })
    }

    /// The next message; record errors are counted and skipped, batches kept.
    pub(crate) async fn next(&mut self) -> Result<source_response::Kind, String> {
        loop {
            match self.rx.message().await {
                Ok(Some(proto::SourceResponse { kind: Some(kind) })) => match kind {
                    source_response::Kind::RecordError(_) => self.record_errors += 1,
                    source_response::Kind::Batch(batch) => {
                        self.batches.push(batch.clone());
                        return Ok(source_response::Kind::Batch(batch));
                    }
                    source_response::Kind::Error(e) => {
                        return Err(format!("the task failed: {}", e.message))
                    }
                    other => return Ok(other),
                },
                Ok(Some(_)) => return Err("an empty SourceResponse".into()),
                Ok(None) => return Err("the connector ended the stream".into()),
                Err(status) => return Err(format!("stream failed: {}", status_text(&status))),
            }
        }
    }

    pub(crate) async fn expect_quiet(&mut self, window: Duration) -> Result<(), String> {
        match timeout(window, self.next()).await {
            Err(_) => Ok(()),
            Ok(Ok(source_response::Kind::Batch(b))) => Err(format!(
                "sent a batch of {} records (seq {}) while it held no credit (§4 credits)",
                b.records.len(),
                b.seq
            )),
            Ok(Ok(other)) => Err(format!("sent {other:?} unasked")),
            Ok(Err(e)) => Err(e),
        }
    }

    pub(crate) fn sent_records(&self) -> u64 {
        self.batches.iter().map(|b| b.records.len() as u64).sum()
    }

    /// Credit of SMALL_CREDIT records and a single byte: exactly one batch may come.
    pub(crate) async fn byte_credit(&mut self) -> CheckResult {
        self.credit(SMALL_CREDIT, 1).await?;
        let first = match timeout(ANSWER, self.next()).await {
            Ok(Ok(source_response::Kind::Batch(b))) => b,
            Ok(Ok(other)) => return Err(format!("expected a batch, got {other:?}")),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(format!(
                    "no batch within {} s of a credit of {SMALL_CREDIT} records: does the configuration give the source data to read?",
                    ANSWER.as_secs()
                ))
            }
        };
        if first.records.len() as u64 > SMALL_CREDIT {
            return Err(format!(
                "a batch of {} records with a credit of {SMALL_CREDIT} (§4 credits)",
                first.records.len()
            ));
        }
        match timeout(QUIET, self.next()).await {
            Err(_) => Ok(format!(
                "one batch of {} records with 1 byte of credit, then nothing (§4 credits)",
                first.records.len()
            )),
            Ok(Ok(source_response::Kind::Batch(b))) => Err(format!(
                "sent batch {} after its byte credit was spent: a batch may be sent only while byte credit is positive (§4 credits)",
                b.seq
            )),
            Ok(Ok(other)) => Err(format!("sent {other:?} unasked")),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Byte credit restored, record credit as left: the records sent never pass SMALL_CREDIT.
    pub(crate) async fn record_credit(&mut self) -> CheckResult {
        self.credit(0, 64 << 20).await?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(next) = tokio::time::timeout_at(deadline, self.next()).await {
            next?;
            if self.sent_records() > SMALL_CREDIT {
                return Err(format!(
                    "sent {} records in all on a credit of {SMALL_CREDIT} (§4 credits)",
                    self.sent_records()
                ));
            }
        }
        Ok(format!(
            "{} records in {} batches on a credit of {SMALL_CREDIT} records (§4 credits)",
            self.sent_records(),
            self.batches.len()
        ))
    }

    /// Generous credit: the task streams while the kit calls Heartbeat.
    pub(crate) async fn heartbeat_while_busy(&mut self, client: &Client) -> CheckResult {
        self.credit(100_000, 64 << 20).await?;
        let before = self.batches.len();
        let beats = heartbeats(client, 3);
        tokio::pin!(beats);
        let deadline = tokio::time::sleep(Duration::from_secs(8));
        tokio::pin!(deadline);
        let result = loop {
            tokio::select! {
                result = &mut beats => break result,
                next = self.next() => { next?; }
                _ = &mut deadline => break Err("heartbeats not answered in time".into()),
            }
        };
        let result = result?;
        Ok(format!(
            "{result} while {} batches streamed",
            self.batches.len() - before
        ))
    }

    /// Sequence numbers from 1 by 1; partition indexes in range; partitions and offsets JSON
    /// objects.
    pub(crate) fn check_batches(&self) -> CheckResult {
        let mut records = 0;
        for (i, batch) in self.batches.iter().enumerate() {
            let expected = i as u64 + 1;
            if batch.seq != expected {
                return Err(format!(
                    "batch {} has seq {}, expected {expected}: seq starts at 1 and grows by 1 (§4 batches)",
                    i + 1,
                    batch.seq
                ));
            }
            for p in &batch.partitions {
                if !is_json_object(p) {
                    return Err(format!(
                        "batch {} names source partition {p:?}, not a JSON object (§4 positions)",
                        batch.seq
                    ));
                }
            }
            for r in &batch.records {
                if r.partition.is_none() && !r.offset.is_empty() {
                    return Err(format!(
                        "batch {} has a record with offset {:?} but no partition index: a position needs both, and index 0 must be sent explicitly (SourceRecord.partition is a proto3 `optional` field; a protobuf library without field presence drops 0 and the worker never commits the offset) (§4 positions)",
                        batch.seq, r.offset
                    ));
                }
                if let Some(index) = r.partition {
                    if index as usize >= batch.partitions.len() {
                        return Err(format!(
                            "batch {} has a record with partition index {index} of {} partitions (§4 positions)",
                            batch.seq,
                            batch.partitions.len()
                        ));
                    }
                }
                if !r.offset.is_empty() && !is_json_object(&r.offset) {
                    return Err(format!(
                        "batch {} has a record with offset {:?}, not a JSON object (§4 positions)",
                        batch.seq, r.offset
                    ));
                }
                if r.topic.is_empty() {
                    return Err(format!(
                        "batch {} has a record with no topic (§4 batches)",
                        batch.seq
                    ));
                }
            }
            records += batch.records.len();
        }
        Ok(format!(
            "{} batches, {records} records, {} record errors: seq 1..{}, positions JSON objects (§4)",
            self.batches.len(),
            self.record_errors,
            self.batches.len()
        ))
    }

    /// Acks what came, asks to stop, and expects SourceStopped naming the last batch sent, then
    /// the end of the stream once the final ack is in.
    pub(crate) async fn stop(&mut self) -> CheckResult {
        if let Some(last) = self.batches.last() {
            self.send(source_request::Kind::Ack(proto::SourceAck {
                batch_seq: last.seq,
            }))
            .await?;
        }
        self.send(source_request::Kind::Stop(proto::Stop {}))
            .await?;
        let stopped = loop {
            match timeout(ANSWER, self.next()).await {
                Ok(Ok(source_response::Kind::Stopped(s))) => break s,
                Ok(Ok(source_response::Kind::Batch(_))) => {}
                Ok(Ok(other)) => return Err(format!("expected SourceStopped, got {other:?}")),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(format!(
                        "no SourceStopped within {} s of Stop (§4 stopping)",
                        ANSWER.as_secs()
                    ))
                }
            }
        };
        let last = self.batches.last().map_or(0, |b| b.seq);
        if stopped.last_batch_seq != last {
            return Err(format!(
                "SourceStopped names batch {} as the last, but the last batch sent was {last} (§4 stopping)",
                stopped.last_batch_seq
            ));
        }
        // The final ack; a connector that already holds acks for everything may have ended
        // the stream already, so the send may find the call over.
        let _ = self
            .tx
            .send(proto::SourceRequest {
                kind: Some(source_request::Kind::Ack(proto::SourceAck {
                    batch_seq: last,
                })),
            })
            .await;
        // The worker closes its side after the final ack.
        let (tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        match timeout(ANSWER, self.rx.message()).await {
            Ok(Ok(None)) => Ok(format!(
                "SourceStopped{{last_batch_seq: {last}}} after Stop, then the stream ended (§4 stopping)"
            )),
            Ok(Ok(Some(m))) => Err(format!("after SourceStopped and the final ack, sent {m:?}")),
            Ok(Err(status)) => Err(format!(
                "the stream ended with an error after SourceStopped: {}",
                status_text(&status)
            )),
            Err(_) => Err(format!(
                "the stream did not end within {} s of the final ack (§4 stopping)",
                ANSWER.as_secs()
            )),
        }
    }
}

pub(crate) fn is_json_object(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.is_object())
}
