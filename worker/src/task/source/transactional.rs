//! Exactly-once delivery (KIP-618): a transactional producer whose `transactional.id` is the
//! task's, so starting fences every earlier instance (and aborts its open transaction) before
//! the offsets are read. Records and their source offsets are committed in one transaction,
//! at the configured boundary; the connector hears of a batch (ack) only once its transaction
//! committed. Every begin and commit needs the worker's lease on the task.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use sluice_proto::connector::v1::{self as proto, source_request};

use super::delivery::{send_with_backpressure, DeliveryContext, DeliveryTracker, Producer};
use super::wire::WireBatch;
use super::{last_positions, send, Sender, SourceTaskRunner};
use crate::lease::Lapsed;
use crate::restart::Fatal;
use crate::task::Transactions;
use sluice_model::TransactionBoundary;

/// How long an exactly-once task waits for the transaction coordinator (init, commit, abort).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The open transaction of an exactly-once task.
#[derive(Default)]
struct Transaction {
    open: bool,
    /// Latest offset per source partition of the records in the transaction.
    positions: BTreeMap<String, String>,
    /// The last batch whose records are all in this or an earlier transaction.
    through: Option<u64>,
    /// Last acknowledged batch.
    acked: Option<u64>,
    records: u64,
    bytes: u64,
}

/// A transactional call failed: fatal (fenced: another instance of this task started, so this
/// one must stop for good) or not (the task restarts from its committed offsets).
fn transaction_error(what: &str, e: KafkaError) -> anyhow::Error {
    let fatal = match &e {
        KafkaError::Transaction(t) => t.is_fatal(),
        _ => false,
    };
    if fatal {
        anyhow::Error::new(Fatal(format!(
            "{what}: {e} (this task was fenced: another instance of it started, so this one stops for good)"
        )))
    } else {
        anyhow!("{what}: {e}")
    }
}

/// Waits until every record handed to the producer has its delivery report. The producer's
/// own flush (which `commit_transaction` calls) sleeps in steps of 100 ms while the polling
/// thread serves the reports: each commit would take at least that long.
async fn wait_delivered(producer: &Producer) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + TRANSACTION_TIMEOUT;
    while producer.in_flight_count() > 0 {
        if tokio::time::Instant::now() > deadline {
            bail!("records not acknowledged by Kafka within {TRANSACTION_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Runs a blocking transactional call off the runtime.
async fn blocking(
    producer: &Producer,
    what: &str,
    call: impl FnOnce(&ThreadedProducer<DeliveryContext>) -> rdkafka::error::KafkaResult<()>
        + Send
        + 'static,
) -> anyhow::Result<()> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || call(&producer))
        .await
        .with_context(|| format!("{what}: worker thread"))?
        .map_err(|e| transaction_error(what, e))
}

/// The exactly-once strategy of the source pipeline.
pub(super) struct Transactional<'a> {
    transactions: &'a Transactions,
    producer: Producer,
    /// The lease's lapse count when the task started.
    epoch: u64,
    txn: Transaction,
}

impl<'a> Transactional<'a> {
    /// Creates the task's transactional producer and fences earlier instances, once the lease
    /// says the task is this worker's (a heartbeat the controller acknowledged after it was
    /// assigned).
    pub(super) async fn start(
        runner: &SourceTaskRunner,
        transactions: &'a Transactions,
    ) -> anyhow::Result<Transactional<'a>> {
        let transactional_id = format!("{}-{}", transactions.id_prefix, runner.task.task_id);
        let mut config = runner.producer_config.clone();
        config.set("transactional.id", &transactional_id);
        let producer = runner.producer(config, &Arc::new(DeliveryTracker::default()))?;
        let epoch = transactions.lease.epoch();
        transactions.lease.check(epoch, TRANSACTION_TIMEOUT).await?;
        blocking(&producer, "initialize transactions", |p| {
            p.init_transactions(TRANSACTION_TIMEOUT)
        })
        .await?;
        tracing::debug!(connector = %runner.task.connector, task = runner.task.task_id, %transactional_id, "transactions initialized");
        Ok(Transactional {
            transactions,
            producer,
            epoch,
            txn: Transaction::default(),
        })
    }

    /// The interval of `transaction.boundary=interval`.
    pub(super) fn interval(&self) -> Option<Duration> {
        (self.transactions.boundary == TransactionBoundary::Interval)
            .then_some(self.transactions.interval)
    }

    /// Adds a batch's records to the open transaction (beginning one when none is). The
    /// transaction ends after the batch (`transaction.boundary=poll`) or at each record the
    /// connector marks (`connector`): the batch is handed over in segments ending there, each
    /// with the positions it reaches.
    pub(super) async fn produce(
        &mut self,
        runner: &SourceTaskRunner,
        tx: &Sender,
        batch: WireBatch,
    ) -> anyhow::Result<()> {
        let by_connector = self.transactions.boundary == TransactionBoundary::Connector;
        let WireBatch {
            seq,
            partitions,
            records,
            frame,
            ..
        } = batch;
        let frame = &frame[..];
        let mut segment = Vec::new();
        let mut last_topic: Option<String> = None;
        let mut records = records.into_iter().peekable();
        while let Some(record) = records.next() {
            let marker = if by_connector {
                record.transaction()
            } else {
                proto::TransactionBoundary::Unspecified
            };
            segment.push(record);
            let ends =
                records.peek().is_none() || marker != proto::TransactionBoundary::Unspecified;
            if !ends {
                continue;
            }
            for (partition, offset) in
                last_positions(&partitions, segment.iter().map(|r| r.position(frame)))?
            {
                self.txn.positions.insert(partition, offset);
            }
            runner
                .task
                .metrics
                .source_record_poll
                .inc_by(segment.len() as u64);
            for record in segment.drain(..) {
                self.begin().await?;
                if let Some(bytes) = runner
                    .send_record(&self.producer, record, frame, seq, &mut last_topic)
                    .await?
                {
                    self.txn.bytes += bytes;
                    self.txn.records += 1;
                }
            }
            if records.peek().is_none() {
                self.txn.through = Some(seq);
            }
            match marker {
                proto::TransactionBoundary::Commit => self.end(runner, tx, true).await?,
                proto::TransactionBoundary::Abort => self.end(runner, tx, false).await?,
                proto::TransactionBoundary::Unspecified => {}
            }
        }
        self.txn.through = Some(seq);
        if self.transactions.boundary == TransactionBoundary::Poll {
            self.end(runner, tx, true).await?;
        }
        Ok(())
    }

    /// Begins a transaction unless one is open. Nothing reaches Kafka unless the task is
    /// still ours: a lapse found only at commit time would leave records of an aborted
    /// transaction behind.
    async fn begin(&mut self) -> anyhow::Result<()> {
        if !self.txn.open {
            self.transactions
                .lease
                .check(self.epoch, TRANSACTION_TIMEOUT)
                .await?;
            self.producer
                .begin_transaction()
                .map_err(|e| transaction_error("begin transaction", e))?;
            self.txn.open = true;
        }
        Ok(())
    }

    /// Commits (with the source offsets of its records, written to the offsets topic in the
    /// same transaction) or aborts the open transaction, then acknowledges the batches it
    /// completed.
    pub(super) async fn end(
        &mut self,
        runner: &SourceTaskRunner,
        tx: &Sender,
        commit: bool,
    ) -> anyhow::Result<()> {
        let (producer, txn, lease) = (&self.producer, &mut self.txn, &self.transactions.lease);
        if txn.open {
            if commit {
                // Still this task's: no other worker can have started it meanwhile. Checked
                // before waiting for delivery: records still queued here are purged by an
                // abort and never reach the broker.
                lease.check(self.epoch, TRANSACTION_TIMEOUT).await?;
                let (topic, offsets) = runner
                    .offsets
                    .transactional_records(&runner.task.connector, &txn.positions)?;
                for (key, offset) in &offsets {
                    let record: BaseRecord<'_, [u8], [u8], usize> =
                        BaseRecord::with_opaque_to(topic, usize::MAX)
                            .key(key.as_bytes())
                            .payload(offset.as_bytes());
                    send_with_backpressure(producer, record, topic).await?;
                }
                let started = std::time::Instant::now();
                wait_delivered(producer).await?;
                // Again, as late as can be: the worker may have been frozen meanwhile.
                if !lease.holds(self.epoch) {
                    return Err(Lapsed.into());
                }
                blocking(producer, "commit transaction", |p| {
                    p.commit_transaction(TRANSACTION_TIMEOUT)
                })
                .await?;
                if !lease.holds(self.epoch) {
                    // Frozen in the commit itself. Kafka fenced it if the task moved
                    // meanwhile; a broker that does not fence took it, and may now hold
                    // these records twice.
                    tracing::warn!(connector = %runner.task.connector, task = runner.task.task_id, records = txn.records, "committed a transaction while this worker's lease ran out");
                }
                tracing::trace!(connector = %runner.task.connector, task = runner.task.task_id, records = txn.records, elapsed = ?started.elapsed(), "transaction committed");
                runner.offsets.committed_durably(
                    &runner.task.connector,
                    txn.positions.iter().map(|(p, o)| (p.as_str(), o.as_str())),
                );
                runner.task.counters.add(txn.records, txn.bytes);
                runner.task.metrics.source_record_write.inc_by(txn.records);
                runner.task.metrics.offset_commit_completion.inc();
            } else {
                blocking(producer, "abort transaction", |p| {
                    p.abort_transaction(TRANSACTION_TIMEOUT)
                })
                .await?;
                tracing::debug!(connector = %runner.task.connector, task = runner.task.task_id, records = txn.records, "the connector aborted a transaction");
            }
            txn.open = false;
            txn.positions.clear();
            txn.records = 0;
            txn.bytes = 0;
        }
        if txn.through > txn.acked {
            if let Some(seq) = txn.through {
                send(
                    tx,
                    source_request::Kind::Ack(proto::SourceAck { batch_seq: seq }),
                )
                .await;
            }
            txn.acked = txn.through;
        }
        Ok(())
    }

    /// After a failure: aborts the open transaction (best effort: the next instance's
    /// initialization aborts it anyway).
    pub(super) async fn abandon(&self, runner: &SourceTaskRunner) {
        if self.txn.open {
            tracing::warn!(connector = %runner.task.connector, task = runner.task.task_id, records = self.txn.records, "aborting the open transaction");
            let _ = blocking(&self.producer, "abort transaction", |p| {
                p.abort_transaction(TRANSACTION_TIMEOUT)
            })
            .await;
        }
    }
}
