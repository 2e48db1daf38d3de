//! The journal: durable writes taken out of the state lock. A change to the controller's state
//! hands its store writes to the journal while it still holds the lock, so writes reach sled
//! in the order the state changed; one thread applies and flushes them, many at a time (a
//! group commit), and the caller awaits its [`Ticket`] only after releasing the lock. Nobody
//! waits for the disk while holding the state, and nobody is answered before its change is
//! durable.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Store, StoreError, Write};

type Batch = (Vec<Write>, oneshot::Sender<Result<(), String>>);

/// Where writes are submitted.
pub struct Journal {
    /// Unbounded: every batch belongs to a caller awaiting its ticket, so the queue holds at
    /// most one batch per call in flight, and submitting must not wait under the state lock.
    tx: mpsc::UnboundedSender<Batch>,
}

/// Resolves once a submitted batch is durable.
#[must_use = "a change is durable only once its ticket resolves"]
pub struct Ticket(oneshot::Receiver<Result<(), String>>);

impl Ticket {
    pub async fn durable(self) -> Result<(), StoreError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Journal(e)),
            Err(_) => Err(StoreError::Journal("the journal stopped".into())),
        }
    }
}

impl Journal {
    /// Starts the writer thread; it ends when the journal is dropped, after the last batch.
    pub fn start(store: Arc<Store>) -> std::io::Result<Journal> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Batch>();
        std::thread::Builder::new()
            .name("controller-journal".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut group = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        group.push(more);
                    }
                    let started = std::time::Instant::now();
                    let applied = group.iter().try_for_each(|(writes, _)| store.apply(writes));
                    let apply_time = started.elapsed();
                    let written = applied.and_then(|()| store.flush_blocking());
                    tracing::debug!(
                        batches = group.len(),
                        writes = group.iter().map(|(w, _)| w.len()).sum::<usize>(),
                        ?apply_time,
                        flush_time = ?started.elapsed() - apply_time,
                        "group commit"
                    );
                    if let Err(e) = &written {
                        tracing::error!("write the controller store: {e}");
                    }
                    for (_, done) in group {
                        let _ = done.send(written.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                    }
                }
            })?;
        Ok(Journal { tx })
    }

    /// Queues `writes` after everything submitted before. Call it while holding the state
    /// lock that produced them; await the ticket after releasing it.
    pub fn submit(&self, writes: Vec<Write>) -> Ticket {
        let (done, ticket) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, done))) = self.tx.send((writes, done)) {
            let _ = done.send(Err("the journal stopped".into()));
        }
        Ticket(ticket)
    }
}
