//! Feature `sink.shared_memory`: a sink task's batches written into memory its connector maps,
//! instead of through the connector's socket. A batch then crosses with one copy (into the
//! mapping) where the socket costs four: into the kernel, out of it, into the HTTP/2 reader's
//! buffer and into gRPC's.
//!
//! The memory is a sealed memfd (it cannot shrink under the connector's mapping, and it goes
//! when both processes have let go of it, a killed worker included): the connector opens it as
//! `/proc/<worker pid>/fd/<fd>`. A batch's range stays unchanged from the moment it is written
//! until the connector releases the batch; ranges are taken lowest first, so a connector that
//! keeps up touches only the first few batches' pages.

use std::fs::File;
use std::os::fd::AsRawFd as _;

use memmap2::MmapMut;
use rustix::fs::{MemfdFlags, SealFlags};
use sluice_proto::connector::v1 as proto;

/// Where a batch starts: a cache line, so two batches never share one.
const ALIGN: usize = 64;

pub struct SharedMemory {
    /// Open for the runner's life: `/proc/<pid>/fd/<fd>` names it.
    file: File,
    map: MmapMut,
    /// Batches written and not released, by offset.
    live: Vec<Live>,
}

struct Live {
    seq: u64,
    start: usize,
    end: usize,
}

impl SharedMemory {
    pub fn create(size: usize) -> std::io::Result<SharedMemory> {
        let fd = rustix::fs::memfd_create(
            "sluice-sink-batches",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        let file = File::from(fd);
        file.set_len(size as u64)?;
        rustix::fs::fcntl_add_seals(&file, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        // SAFETY: the memfd is this process's own and sealed against shrinking, so the mapping
        // cannot lose its pages; the connector only reads it.
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok(SharedMemory {
            file,
            map,
            live: Vec::new(),
        })
    }

    /// `SinkOpen.shared_memory`.
    pub fn describe(&self) -> proto::SharedMemory {
        proto::SharedMemory {
            path: format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd()),
            size: self.map.len() as u64,
        }
    }

    /// Batch `seq`'s records written into the lowest free range that holds them; `None` (and
    /// nothing written) when no range does: the batch goes through the socket.
    pub fn write(&mut self, seq: u64, records: &[u8]) -> Option<proto::SharedBatch> {
        let start = self.free_range(records.len())?;
        let end = start + records.len();
        self.map.get_mut(start..end)?.copy_from_slice(records);
        let at = self.live.partition_point(|l| l.start < start);
        self.live.insert(at, Live { seq, start, end });
        Some(proto::SharedBatch {
            seq,
            offset: start as u64,
            length: records.len() as u64,
        })
    }

    /// The connector no longer reads batch `seq`: its range is free again.
    pub fn release(&mut self, seq: u64) {
        self.live.retain(|l| l.seq != seq);
    }

    fn free_range(&self, len: usize) -> Option<usize> {
        let mut candidate = 0;
        for live in &self.live {
            if live.start.saturating_sub(candidate) >= len {
                return Some(candidate);
            }
            candidate = live.end.next_multiple_of(ALIGN);
        }
        (self.map.len().saturating_sub(candidate) >= len).then_some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &str, batch: &proto::SharedBatch) -> Vec<u8> {
        let bytes = std::fs::read(path).unwrap();
        bytes[batch.offset as usize..(batch.offset + batch.length) as usize].to_vec()
    }

    #[test]
    fn batches_take_the_lowest_free_range_and_stay_until_released() {
        let mut shared = SharedMemory::create(4096).unwrap();
        let path = shared.describe().path;
        let a = shared.write(1, &[1; 1000]).unwrap();
        let b = shared.write(2, &[2; 1000]).unwrap();
        let c = shared.write(3, &[3; 1000]).unwrap();
        assert_eq!((a.offset, b.offset, c.offset), (0, 1024, 2048));
        // 1024 bytes left after the alignment.
        assert!(shared.write(4, &[4; 1025]).is_none());
        shared.release(2);
        let d = shared.write(4, &[4; 900]).unwrap();
        assert_eq!(d.offset, 1024);
        // A later write never touches a live batch.
        assert_eq!(read(&path, &a), vec![1; 1000]);
        assert_eq!(read(&path, &c), vec![3; 1000]);
        assert_eq!(read(&path, &d), vec![4; 900]);
        shared.release(1);
        shared.release(3);
        shared.release(4);
        assert_eq!(shared.write(5, &[5; 4096]).unwrap().offset, 0);
    }

    #[test]
    fn the_memory_cannot_shrink_under_a_mapping() {
        let shared = SharedMemory::create(4096).unwrap();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(shared.describe().path)
            .unwrap();
        assert!(file.set_len(0).is_err());
    }
}
