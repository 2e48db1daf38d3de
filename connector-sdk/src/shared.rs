//! Feature `sink.shared_memory`: a sink task's batches read from memory the worker shares,
//! instead of from the socket. A [`SinkBatch`] made from it borrows its range of the mapping;
//! when the batch and every record or `Bytes` taken from it are dropped, the worker is told it
//! may write there again (`SharedReleased`).

use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use memmap2::Mmap;
use tokio::sync::mpsc::UnboundedSender;

use crate::proto::{self, MAX_MESSAGE_BYTES};
use crate::{SinkBatch, TaskError};

pub(crate) struct SharedMemory {
    map: Arc<Mmap>,
    released: UnboundedSender<u64>,
}

impl SharedMemory {
    /// Maps the worker's memory; released batches' numbers go to `released`.
    pub fn map(
        memory: &proto::SharedMemory,
        released: UnboundedSender<u64>,
    ) -> anyhow::Result<SharedMemory> {
        let file = File::open(&memory.path).with_context(|| format!("open {}", memory.path))?;
        // SAFETY: the worker's memfd is sealed against shrinking, so the mapping never loses
        // its pages, and the worker writes a range only while no batch of this task holds it.
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("map {}", memory.path))?;
        anyhow::ensure!(
            map.len() as u64 == memory.size,
            "{} holds {} bytes, not the {} the worker announced",
            memory.path,
            map.len(),
            memory.size
        );
        Ok(SharedMemory {
            map: Arc::new(map),
            released,
        })
    }

    /// The batch `shared` names, borrowing its range of the mapping.
    pub fn batch(&self, shared: &proto::SharedBatch) -> Result<SinkBatch, TaskError> {
        let outside = || {
            TaskError::fatal(format!(
                "shared sink batch {}: bytes {}+{} are outside the {} shared bytes",
                shared.seq,
                shared.offset,
                shared.length,
                self.map.len()
            ))
        };
        let start = usize::try_from(shared.offset).map_err(|_| outside())?;
        let len = usize::try_from(shared.length).map_err(|_| outside())?;
        let end = start.checked_add(len).ok_or_else(outside)?;
        if end > self.map.len() || len > MAX_MESSAGE_BYTES {
            return Err(outside());
        }
        let frame = Bytes::from_owner(Region {
            map: self.map.clone(),
            range: start..end,
            seq: shared.seq,
            released: self.released.clone(),
        });
        SinkBatch::shared(shared.seq, &frame).ok_or_else(|| {
            TaskError::fatal(format!(
                "shared sink batch {}: its bytes are not SinkBatch.records entries",
                shared.seq
            ))
        })
    }
}

/// One batch's range of the mapping, released when the last `Bytes` of it goes.
struct Region {
    map: Arc<Mmap>,
    range: Range<usize>,
    seq: u64,
    released: UnboundedSender<u64>,
}

impl AsRef<[u8]> for Region {
    fn as_ref(&self) -> &[u8] {
        // In range: checked when the region was made.
        self.map.get(self.range.clone()).unwrap_or_default()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // A stream already gone has nothing left to release.
        let _ = self.released.send(self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::SinkRecord;
    use std::io::Write as _;
    use tokio::sync::mpsc;

    fn record(n: i64) -> SinkRecord {
        SinkRecord {
            topic: "orders".into(),
            partition: 3,
            offset: n,
            value: Some(crate::data::string(format!("line {n}"))),
            ..Default::default()
        }
    }

    /// 64 bytes of something else, then batch 7's records: its `SharedBatch`.
    fn memory_with_batch(records: &[SinkRecord]) -> (tempfile::NamedTempFile, proto::SharedBatch) {
        let mut fields = Vec::new();
        for record in records {
            prost::encoding::message::encode(2, record, &mut fields);
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&[0xff; 64]).unwrap();
        file.write_all(&fields).unwrap();
        file.write_all(&[0xff; 64]).unwrap();
        let batch = proto::SharedBatch {
            seq: 7,
            offset: 64,
            length: fields.len() as u64,
        };
        (file, batch)
    }

    fn map(file: &tempfile::NamedTempFile) -> (SharedMemory, mpsc::UnboundedReceiver<u64>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let memory = proto::SharedMemory {
            path: file.path().to_string_lossy().into_owned(),
            size: file.as_file().metadata().unwrap().len(),
        };
        (SharedMemory::map(&memory, tx).unwrap(), rx)
    }

    #[test]
    fn a_shared_batch_is_read_in_place_and_released_when_its_last_bytes_go() {
        let records: Vec<_> = (0..3).map(record).collect();
        let (file, shared) = memory_with_batch(&records);
        let (memory, mut released) = map(&file);
        let batch = memory.batch(&shared).unwrap();
        assert_eq!((batch.seq(), batch.len()), (7, 3));
        let texts: Vec<String> = batch
            .records()
            .unwrap()
            .iter()
            .map(|r| r.value.text().unwrap().into_owned())
            .collect();
        assert_eq!(texts, ["line 0", "line 1", "line 2"]);
        // A task may keep a clone past put: the range is released when both are gone.
        let kept = batch.clone();
        drop(batch);
        assert!(released.try_recv().is_err());
        assert_eq!(kept.into_records().unwrap(), records);
        assert_eq!(released.try_recv().ok(), Some(7));
    }

    #[test]
    fn a_batch_outside_the_memory_or_not_records_fails_naming_it() {
        let (file, shared) = memory_with_batch(&[record(0)]);
        let (memory, _released) = map(&file);
        let size = file.as_file().metadata().unwrap().len();
        for (offset, length) in [(size, 1), (0, size + 1), (u64::MAX, 2), (60, u64::MAX)] {
            let bad = proto::SharedBatch {
                seq: 9,
                offset,
                length,
            };
            let e = memory.batch(&bad).unwrap_err().to_string();
            assert!(
                e.contains("shared sink batch 9") && e.contains("outside"),
                "{e}"
            );
        }
        // The 0xff bytes before the records are no SinkBatch field.
        let garbage = proto::SharedBatch {
            offset: 0,
            ..shared
        };
        let e = memory.batch(&garbage).unwrap_err().to_string();
        assert!(e.contains("not SinkBatch.records entries"), "{e}");
    }
}
