//! The sidecar's malloc is jemalloc, linked in and exported as `malloc`/`free` so that ONNX
//! Runtime's C++ allocations (a library loaded at run time) come from it too; this module
//! returns freed pages after a reload and reads its statistics for `/metrics`.
//!
//! Why not glibc's malloc: a process that builds and frees model-sized sessions while it
//! serves keeps pages resident in glibc's arenas that long-lived allocations (a new version's
//! weights, a registry revision) share with free space. Neither `malloc_trim(0)` every 2 s
//! nor one arena per CPU (`M_ARENA_MAX`) stopped it: in four 20-minute churn soaks
//! (`cargo xtask soak`) the restarted sidecar's RSS rose by 6.6-17.6 MB over its eleven
//! minutes while malloc's bytes in use moved by under 2 MiB. jemalloc keeps size classes in
//! page runs of their own and gives unused runs back after a decay time (10 s).
//!
//! Its background threads are on (the `background_threads` build feature): they run that
//! decay while no request comes, and without them jemalloc purges every allocation of
//! 8 MiB or more the moment it is freed (its "oversize" arena). ONNX Runtime's activations
//! for a batch of 8 are that large, so each batch faulted its pages in again: measured with
//! the bench configuration at concurrency 32, 230-239 images/s against glibc's 270-286, and
//! 289-296 with background threads (sidecar/README.md, "Memory: jemalloc").
//!
//! `MALLOC_CONF` in the environment tunes it as jemalloc documents (for example
//! `MALLOC_CONF=dirty_decay_ms:2000`).

use std::ffi::{c_char, c_void, CStr};

// Makes rustc pass jemalloc to the linker with its malloc symbols referenced
// (`override_allocator_on_supported_platforms`), so every binary linking this crate
// (the sidecar, its bench, the tests) has jemalloc as its malloc, not only the ones whose
// own code happens to name it.
use tikv_jemalloc_sys as _;

/// Gives the pages of freed sessions back to the OS at once; called when a reload has built
/// sessions and when a swapped-out version's last inference thread has dropped its own.
///
/// A swap frees tens of megabytes in one go (the file bytes, the old session's weights,
/// ONNX Runtime's graph-optimisation temporaries). jemalloc would return them within its
/// decay time (10 s) anyway; purging now makes the RSS after a swap say what the new
/// version holds. Once per reload or unload, never per request: it also drops the pages
/// serving would reuse, which then fault in again.
pub fn release_freed_memory() {
    // 4096 is `MALLCTL_ARENAS_ALL`: every arena at once.
    const PURGE_ALL_ARENAS: &CStr = c"arena.4096.purge";
    let started = std::time::Instant::now();
    // SAFETY: a NUL-terminated control name; a control without input or output takes null
    // pointers and zero lengths.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL_ARENAS.as_ptr() as *const c_char,
            std::ptr::null_mut::<c_void>(),
            std::ptr::null_mut(),
            std::ptr::null_mut::<c_void>(),
            0,
        )
    };
    let purged = rc == 0;
    tracing::debug!(purged, us = started.elapsed().as_micros() as u64, "freed pages returned to the OS (jemalloc purge)");
}

/// What malloc holds: bytes handed out, and resident bytes beyond those (pages freed but not
/// yet given back, fragmentation inside page runs, jemalloc's own metadata).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    pub in_use: u64,
    pub free: u64,
}

/// jemalloc's own count (`stats.allocated`, `stats.resident`), refreshed first (`epoch`).
/// Cheap, but it merges every thread's counters: call it per scrape, not per request.
pub fn heap_stats() -> Option<HeapStats> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    let allocated = tikv_jemalloc_ctl::stats::allocated::read().ok()? as u64;
    let resident = tikv_jemalloc_ctl::stats::resident::read().ok()? as u64;
    Some(HeapStats { in_use: allocated, free: resident.saturating_sub(allocated) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process's malloc is jemalloc's: what `malloc` hands out shows in jemalloc's count.
    #[test]
    fn malloc_is_jemalloc() {
        const SIZE: usize = 64 << 20;
        let before = heap_stats().expect("jemalloc statistics");
        // SAFETY: a plain malloc/free pair through the C symbol, as a C++ library calls it.
        // black_box: LLVM removes a malloc/free pair whose block is never used.
        let block = std::hint::black_box(unsafe { libc::malloc(SIZE) });
        assert!(!block.is_null());
        let during = heap_stats().expect("jemalloc statistics");
        // SAFETY: `block` came from malloc above and is freed once.
        unsafe { libc::free(block) };
        assert!(during.in_use >= before.in_use + SIZE as u64 - (1 << 20), "{before:?} -> {during:?}");
        release_freed_memory();
        let after = heap_stats().expect("jemalloc statistics");
        assert!(after.in_use + (SIZE as u64) / 2 < during.in_use, "{during:?} -> {after:?}");
    }

    /// Built with its background threads on: without them, every freed allocation of 8 MiB
    /// or more is purged at once and ONNX Runtime's batch buffers fault in on every batch.
    #[test]
    fn background_purging_is_on() {
        assert_eq!(tikv_jemalloc_ctl::opt::background_thread::read().ok(), Some(true));
    }
}
