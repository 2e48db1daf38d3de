//! The C allocator set for the protocol's batches, on both sides of the connector socket.
//!
//! Batches are hundreds of kilobytes to megabytes: a poll's records, their encoding, the
//! frames read back. glibc's malloc serves such sizes from fresh `mmap`s or trims them from
//! the top of a thread's heap as soon as they are freed, so every batch faulted its pages in
//! again and gave them back (page faults, `madvise`, `munmap`). Keeping them in the heap lets
//! the next batch reuse the same pages: the plugin boundary moved 1.1-1.4M records/s of 100 B
//! instead of 1.0-1.2M.

/// Allocations above this size get their own mapping: a sink batch (4 MiB of records and the
/// fields around them) stays in the heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 8 << 20;
/// Free memory at the top of a heap is returned to the system beyond this much: a few
/// batches' worth. 4 MiB lost most of the gain; 64 MiB bought no more. The price is peak
/// memory: the footprint bench's worker and connector processes summed 98-110 MB (median
/// ~102) instead of 95-100.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 8 << 20;

/// Keeps batch-sized allocations in the heap instead of mapping and unmapping them per batch.
/// Call it first thing in `main`, before threads start; [`crate::main`] does. Does nothing
/// where the C library is not glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; a refused value is left unset.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
