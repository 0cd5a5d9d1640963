//! glibc's malloc, tuned for a process that builds and frees model-sized sessions: a cap on
//! its arenas, giving freed memory back to the OS, and its statistics for `/metrics`.

/// Caps glibc's malloc at `arenas` arenas (`M_ARENA_MAX`); call at startup, before any thread
/// starts. `MALLOC_ARENA_MAX` in the environment, when set, wins.
///
/// glibc gives threads up to 8 arenas per CPU, and a hot swap spreads a version's memory
/// over several of them: the reload's blocking thread reads the file, builds and warms up
/// the session, the new inference thread and ONNX Runtime's intra-op thread allocate its
/// buffers, pre-processing threads decode pages beside them. Each arena then keeps its own
/// free space and its own fragmentation, and `malloc_trim` (see [`release_freed_memory`])
/// gives back only whole free pages. Measured with `tests/churn.rs` (40 swaps, open load,
/// a refused corrupt file between swaps, 2 CPUs): with glibc's 16 arenas, malloc_info showed
/// 16 arenas holding 170-230 MiB of free space and the RSS after a swap moved between 168
/// and 211 MiB (195, 201, 183 MiB after swaps 5, 20, 40; 198-251 MiB in another run); with
/// one arena per CPU it stayed between 167 and 182 MiB (168, 168, 171 MiB), with the same
/// latencies.
pub fn limit_malloc_arenas(arenas: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        extern "C" {
            // glibc's, declared here as `malloc_trim` is below.
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        const M_ARENA_MAX: std::ffi::c_int = -8;
        // SAFETY: mallopt only sets a malloc parameter; M_ARENA_MAX is read when a thread
        // first needs an arena.
        unsafe {
            mallopt(M_ARENA_MAX, arenas.clamp(1, 64) as std::ffi::c_int);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Gives the memory of freed sessions back to the OS; called when a reload has built
/// sessions and when a swapped-out version's last inference thread has dropped its own.
///
/// A session's weights, ONNX Runtime's CPU arena and the graph-optimisation temporaries of
/// building it come from glibc's malloc, spread over the arenas of the threads involved
/// (the reload's, the inference thread's). Freeing the session gives that memory back to
/// malloc, not to the kernel: an arena shrinks only from its top, and once the first large
/// buffer has been freed glibc raises its mmap threshold, so later model-sized buffers no
/// longer get mappings of their own that `free` would unmap. Without this, every hot swap
/// of a 6.8 MB model left 7-18 MB resident for good. `malloc_trim(0)` returns the free
/// pages of every arena, wherever they are. It takes each arena's lock in turn for a few
/// milliseconds (4-14 ms measured with three sessions loaded): once per reload or unload,
/// never per request.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            // glibc's, declared here rather than through the libc crate for one function.
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim only walks and trims malloc's own arenas; any thread may call it.
        let released = unsafe { malloc_trim(0) } == 1;
        tracing::debug!(released, us = started.elapsed().as_micros() as u64, "freed memory returned to the OS (malloc_trim)");
    }
}

/// What malloc holds: bytes handed out and bytes free inside its arenas (kept from the OS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    pub in_use: u64,
    pub free: u64,
}

/// malloc's own count (`mallinfo2`, glibc 2.33+), over every arena and its mmapped chunks.
/// It locks each arena in turn while it counts: call it per scrape, not per request.
pub fn heap_stats() -> Option<HeapStats> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[repr(C)]
        struct Mallinfo2 {
            arena: usize,
            ordblks: usize,
            smblks: usize,
            hblks: usize,
            hblkhd: usize,
            usmblks: usize,
            fsmblks: usize,
            uordblks: usize,
            fordblks: usize,
            keepcost: usize,
        }
        extern "C" {
            fn mallinfo2() -> Mallinfo2;
        }
        // SAFETY: mallinfo2 only reads malloc's bookkeeping and returns it by value.
        let info = unsafe { mallinfo2() };
        Some(HeapStats { in_use: (info.uordblks + info.hblkhd) as u64, free: info.fordblks as u64 })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// Starts (once per process) a thread that gives malloc's free pages back to the OS every
/// `interval`, as jemalloc's decay does and glibc does not.
///
/// Serving leaves freed memory in the arenas: queued requests' images and pre-processing
/// buffers after a burst, a swapped-out version's session, ONNX Runtime's buffers of a batch
/// larger than usual. glibc returns only the top of an arena on its own. Memory a container is
/// billed for should be memory in use. A trim takes each arena's lock for a few milliseconds.
/// It runs whatever malloc's statistics say: its free bytes count pages already given back,
/// so they cannot tell whether there is anything left to give.
pub fn start_trimming(interval: std::time::Duration) {
    static STARTED: std::sync::Once = std::sync::Once::new();
    if interval.is_zero() || heap_stats().is_none() {
        return;
    }
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new().name("heap trim".into()).spawn(move || loop {
            std::thread::sleep(interval);
            release_freed_memory();
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the heap trim thread; freed memory stays with malloc until the next reload");
        }
    });
}
