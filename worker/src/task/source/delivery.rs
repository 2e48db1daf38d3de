//! At-least-once delivery: an idempotent producer (`acks=all`) whose delivery reports are
//! counted per batch; batches complete strictly in order and only then are their positions
//! committed and acknowledged to the connector.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use sluice_proto::connector::v1::{self as proto, source_request};
use tokio::sync::Notify;

use super::wire::WireBatch;
use super::{send, Sender, SourceTaskRunner};

/// A batch handed to the producer and not yet fully acknowledged.
pub(super) struct InFlight {
    seq: u64,
    remaining: usize,
    positions: Vec<(String, String)>,
    /// When the batch came from the connector.
    received: std::time::Instant,
}

/// Counts delivery reports per batch; completes batches strictly in order.
#[derive(Default)]
pub(super) struct DeliveryTracker {
    state: Mutex<TrackerState>,
    pub(super) progress: Notify,
}

#[derive(Default)]
struct TrackerState {
    in_flight: VecDeque<InFlight>,
    completed: Vec<InFlight>,
    failure: Option<String>,
}

impl DeliveryTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn register(&self, seq: u64, records: usize, positions: Vec<(String, String)>) {
        let mut state = self.lock();
        state.in_flight.push_back(InFlight {
            seq,
            remaining: records,
            positions,
            received: std::time::Instant::now(),
        });
        if Self::complete_front(&mut state) {
            self.progress.notify_one();
        }
    }

    pub(super) fn delivered(&self, seq: u64, error: Option<String>) {
        let mut state = self.lock();
        if let Some(e) = error {
            // Positions stop advancing at the first failed record: nothing after it commits.
            state.failure.get_or_insert(e);
            self.progress.notify_one();
            return;
        }
        let Some(front) = state.in_flight.front().map(|b| b.seq) else {
            return;
        };
        let index = seq.wrapping_sub(front) as usize;
        if let Some(batch) = state.in_flight.get_mut(index) {
            batch.remaining = batch.remaining.saturating_sub(1);
        }
        if Self::complete_front(&mut state) {
            self.progress.notify_one();
        }
    }

    fn complete_front(state: &mut TrackerState) -> bool {
        let mut any = false;
        while state.failure.is_none() && state.in_flight.front().is_some_and(|b| b.remaining == 0) {
            if let Some(batch) = state.in_flight.pop_front() {
                state.completed.push(batch);
                any = true;
            }
        }
        any
    }

    pub(super) fn take(&self) -> (Vec<InFlight>, Option<String>) {
        let mut state = self.lock();
        (std::mem::take(&mut state.completed), state.failure.clone())
    }
}

pub(super) struct DeliveryContext {
    pub(super) tracker: Arc<DeliveryTracker>,
    pub(super) log: crate::kafka::log::KafkaLog,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let error = result.as_ref().err().map(|(e, _)| e.to_string());
        if error.is_none() {
            self.log.reachable();
        }
        self.tracker.delivered(seq as u64, error);
    }
}

/// Hands a record to the producer, waiting while its queue is full.
pub(super) async fn send_with_backpressure<'a>(
    producer: &ThreadedProducer<DeliveryContext>,
    mut record: BaseRecord<'a, [u8], [u8], usize>,
    topic: &str,
) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((e, _)) => bail!("produce to {topic}: {e}"),
        }
    }
}

pub(super) type Producer = Arc<ThreadedProducer<DeliveryContext>>;

/// The at-least-once strategy of the source pipeline.
pub(super) struct AtLeastOnce {
    pub(super) producer: Producer,
    pub(super) tracker: Arc<DeliveryTracker>,
}

impl AtLeastOnce {
    /// Registers the batch with the positions it ends at, then hands its records over.
    pub(super) async fn produce(
        &self,
        runner: &SourceTaskRunner,
        batch: WireBatch,
    ) -> anyhow::Result<()> {
        let frame = &batch.frame[..];
        let positions = super::last_positions(
            &batch.partitions,
            batch.records.iter().map(|r| r.position(frame)),
        )?;
        self.tracker
            .register(batch.seq, batch.records.len(), positions);
        let (mut bytes, mut sent) = (0u64, 0u64);
        let mut last_topic: Option<String> = None;
        runner
            .task
            .metrics
            .source_record_poll
            .inc_by(batch.records.len() as u64);
        for record in batch.records {
            match runner
                .send_record(&self.producer, record, frame, batch.seq, &mut last_topic)
                .await?
            {
                Some(n) => {
                    bytes += n;
                    sent += 1;
                }
                // Skipped by the error policy or a transform: nothing to wait for.
                None => self.tracker.delivered(batch.seq, None),
            }
        }
        runner.task.counters.add(sent, bytes);
        runner.task.metrics.source_record_write.inc_by(sent);
        Ok(())
    }

    /// Commits the positions of completed batches and acknowledges them to the connector.
    pub(super) async fn commit_completed(
        &self,
        runner: &SourceTaskRunner,
        tx: &Sender,
    ) -> anyhow::Result<()> {
        let (completed, failure) = self.tracker.take();
        if let Some(last) = completed.last().map(|b| b.seq) {
            runner.offsets.commit(
                &runner.task.connector,
                completed
                    .iter()
                    .flat_map(|b| b.positions.iter().map(|(p, o)| (p.as_str(), o.as_str()))),
            );
            runner.task.metrics.offset_commit_completion.inc();
            for batch in &completed {
                runner
                    .task
                    .metrics
                    .source_batch_time
                    .observe(batch.received.elapsed().as_secs_f64());
            }
            send(
                tx,
                source_request::Kind::Ack(proto::SourceAck { batch_seq: last }),
            )
            .await;
        }
        match failure {
            Some(e) => bail!("Kafka did not accept a record: {e}"),
            None => Ok(()),
        }
    }

    /// After the stream ended (cleanly or not): waits for what the producer holds, commits
    /// what completed and makes the positions durable, so whoever runs the task next (here
    /// or on another worker) starts from there.
    pub(super) async fn finish(
        &self,
        runner: &SourceTaskRunner,
        tx: &Sender,
        result: anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let flusher = self.producer.clone();
        let timeout = runner.drain_timeout;
        let drained = tokio::task::spawn_blocking(move || {
            rdkafka::producer::Producer::flush(&*flusher, timeout)
        })
        .await;
        let committed = self.commit_completed(runner, tx).await;
        let flushed = runner.offsets.flush().await;
        result?;
        match drained {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!(
                "records not acknowledged by Kafka within {timeout:?} (task.shutdown.graceful.timeout.ms): {e}"
            ),
            Err(e) => bail!("producer flush: {e}"),
        }
        committed?;
        anyhow::Context::context(flushed, "flush source offsets")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_complete_in_order_and_stop_at_a_failure() {
        let t = DeliveryTracker::default();
        t.register(1, 2, vec![("p".into(), "1".into())]);
        t.register(2, 1, vec![("p".into(), "2".into())]);
        t.delivered(2, None);
        assert!(t.take().0.is_empty(), "batch 2 must wait for batch 1");
        t.delivered(1, None);
        t.delivered(1, None);
        let (done, failure) = t.take();
        assert_eq!(done.iter().map(|b| b.seq).collect::<Vec<_>>(), [1, 2]);
        assert!(failure.is_none());

        t.register(3, 2, vec![]);
        t.register(4, 0, vec![]);
        t.delivered(3, Some("boom".into()));
        t.delivered(3, None);
        let (done, failure) = t.take();
        assert!(done.is_empty());
        assert_eq!(failure.as_deref(), Some("boom"));
    }
}
