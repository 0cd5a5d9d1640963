//! The few proxy-wasm host calls the filter makes, declared directly against the ABI.
//!
//! The SDK's `hostcalls` panic on any unexpected host status (`dispatch_http_call` too);
//! a panic traps the VM. Here every call returns a `Result`, so the filter never panics
//! because Envoy answered something odd.

use std::ptr::{null, null_mut};
use switchyard_filter_core::host::Written;

/// A proxy-wasm status other than `Ok`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub u32);

type HostResult<T> = Result<T, HostError>;

fn check(status: u32) -> HostResult<()> {
    if status == 0 {
        Ok(())
    } else {
        Err(HostError(status))
    }
}

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Map {
    RequestHeaders = 0,
    ResponseHeaders = 2,
    ResponseTrailers = 3,
    HttpCallResponseHeaders = 6,
}

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Buffer {
    RequestBody = 0,
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

use switchyard_filter_core::host::MetricKind;

const NOT_FOUND: u32 = 1;
const CAS_MISMATCH: u32 = 8;

pub use switchyard_filter_core::host::Level;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_log_level(level: *mut u32) -> u32;
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(key: *const u8, key_size: usize, value: *const u8, value_size: usize, cas: u32) -> u32;
    fn proxy_set_property(path: *const u8, path_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
        upstream: *const u8,
        upstream_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        trailers: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32;
}

/// Where the host writes the request headers. Every buffer a host call returns is
/// memory the host first asks the VM for (`proxy_on_memory_allocate`); the request
/// headers are read once per request, so they reuse this one buffer instead of an
/// allocation and a free in the VM each time. A larger map gets a heap buffer.
const SCRATCH_BYTES: usize = 8 * 1024;

struct Scratch {
    bytes: std::cell::UnsafeCell<[std::mem::MaybeUninit<u8>; SCRATCH_BYTES]>,
    /// The next allocation may take the buffer (set around the one host call that uses it).
    offered: std::cell::Cell<bool>,
    /// A [`HostBytes::Scratch`] holds it.
    lent: std::cell::Cell<bool>,
}

// SAFETY: a proxy-wasm VM runs one thread; nothing here is shared across threads.
unsafe impl Sync for Scratch {}

static SCRATCH: Scratch = Scratch {
    bytes: std::cell::UnsafeCell::new([std::mem::MaybeUninit::uninit(); SCRATCH_BYTES]),
    offered: std::cell::Cell::new(false),
    lent: std::cell::Cell::new(false),
};

impl Scratch {
    fn ptr(&self) -> *mut u8 {
        self.bytes.get().cast::<u8>()
    }

    fn take(&self, size: usize) -> Option<*mut u8> {
        if !self.offered.get() || self.lent.get() || size > SCRATCH_BYTES {
            return None;
        }
        self.lent.set(true);
        Some(self.ptr())
    }
}

/// Bytes the host returned: in the scratch buffer (given back when dropped) or owned.
pub enum HostBytes {
    Scratch(usize),
    Heap(Vec<u8>),
}

impl std::ops::Deref for HostBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            // SAFETY: the host wrote `len` bytes there; the buffer is ours while lent.
            HostBytes::Scratch(len) => unsafe { std::slice::from_raw_parts(SCRATCH.ptr(), *len) },
            HostBytes::Heap(v) => v,
        }
    }
}

impl Drop for HostBytes {
    fn drop(&mut self) {
        if let HostBytes::Scratch(_) = self {
            SCRATCH.lent.set(false);
        }
    }
}

/// Memory for the host to return a buffer in (`proxy_on_memory_allocate`): the scratch
/// buffer when offered and free, else a boxed slice of exactly `size` bytes, which
/// [`owned`] takes back.
pub fn allocate(size: usize) -> *mut u8 {
    if let Some(ptr) = SCRATCH.take(size) {
        return ptr;
    }
    let mut bytes: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: `MaybeUninit` needs no initialisation; the host writes the bytes.
    unsafe { bytes.set_len(size) };
    Box::into_raw(bytes.into_boxed_slice()).cast::<u8>()
}

/// Takes ownership of a host-returned buffer of `size` bytes, allocated by [`allocate`].
unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Box::from_raw(std::ptr::slice_from_raw_parts_mut(data, size)).into_vec()
    }
}

pub fn log(level: Level, message: &str) {
    // Nothing useful can be done if logging itself fails.
    let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// Envoy's current log level for Wasm, so we can skip formatting dropped lines.
pub fn log_level() -> Level {
    let mut raw = 0u32;
    match unsafe { proxy_get_log_level(&mut raw) } {
        0 => match raw {
            0 => Level::Trace,
            1 => Level::Debug,
            2 => Level::Info,
            3 => Level::Warn,
            _ => Level::Error,
        },
        _ => Level::Info,
    }
}

/// The whole header map in serialised form (see `request::HeaderPairs`): one host call.
pub fn header_pairs(map: Map) -> HostResult<HostBytes> {
    let (status, bytes) = into_scratch(|data, size| unsafe { proxy_get_header_map_pairs(map as u32, data, size) });
    check(status)?;
    Ok(bytes)
}

/// Makes a host call that returns a buffer, offering it the scratch buffer.
fn into_scratch(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> (u32, HostBytes) {
    let mut data = null_mut();
    let mut size = 0;
    SCRATCH.offered.set(true);
    let status = call(&mut data, &mut size);
    SCRATCH.offered.set(false);
    // Built whatever the status, so a lent scratch buffer is always given back.
    let bytes = if data == SCRATCH.ptr() { HostBytes::Scratch(size.min(SCRATCH_BYTES)) } else { HostBytes::Heap(unsafe { owned(data, size) }) };
    (status, bytes)
}

/// Sets a header, replacing any value the client sent.
pub fn replace_header(map: Map, name: &str, value: &str) -> HostResult<()> {
    check(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn add_header(map: Map, name: &str, value: &str) -> HostResult<()> {
    check(unsafe {
        proxy_add_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

pub fn remove_header(map: Map, name: &str) -> HostResult<()> {
    check(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

/// A local reply. With `grpc_status`, Envoy answers a gRPC request trailers-only with
/// that `grpc-status` and `body` as `grpc-message`. `details` shows in access logs as
/// `%RESPONSE_CODE_DETAILS%` and must not contain spaces.
pub fn send_local_response(
    http_status: u32,
    details: &str,
    body: &str,
    headers: &[u8],
    grpc_status: Option<u32>,
) -> HostResult<()> {
    check(unsafe {
        proxy_send_local_response(
            http_status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            if headers.is_empty() { null() } else { headers.as_ptr() },
            headers.len(),
            grpc_status.map_or(-1, |s| s as i32),
        )
    })
}

pub fn plugin_configuration(size: usize) -> HostResult<Vec<u8>> {
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut data = null_mut();
    let mut len = 0;
    let status = unsafe {
        proxy_get_buffer_bytes(Buffer::PluginConfiguration as u32, 0, size, &mut data, &mut len)
    };
    match status {
        0 => Ok(unsafe { owned(data, len) }),
        // No configuration at all: treated as `{}`.
        1 => Ok(Vec::new()),
        s => Err(HostError(s)),
    }
}

pub fn define_metric(kind: MetricKind, name: &str) -> HostResult<u32> {
    let kind = match kind {
        MetricKind::Counter => 0,
        MetricKind::Gauge => 1,
        MetricKind::Histogram => 2,
    };
    let mut id = 0;
    check(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Sets a gauge or records a histogram sample.
pub fn record_metric(id: u32, value: u64) -> HostResult<()> {
    check(unsafe { proxy_record_metric(id, value) })
}

/// Wall-clock time in nanoseconds since the Unix epoch (the same clock on every worker).
pub fn now_ns() -> u64 {
    let mut t = 0u64;
    match unsafe { proxy_get_current_time_nanoseconds(&mut t) } {
        0 => t,
        _ => 0,
    }
}


/// One header's value, if present.
pub fn header(map: Map, name: &str) -> HostResult<Option<HostBytes>> {
    let (status, bytes) = into_scratch(|data, size| unsafe { proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), data, size) });
    match status {
        0 => Ok(Some(bytes)),
        NOT_FOUND => Ok(None),
        s => Err(HostError(s)),
    }
}

/// Bytes `[0, size)` of a buffer (request body, HTTP call response body).
pub fn buffer(kind: Buffer, size: usize) -> HostResult<Vec<u8>> {
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut data = null_mut();
    let mut len = 0;
    match unsafe { proxy_get_buffer_bytes(kind as u32, 0, size, &mut data, &mut len) } {
        0 => Ok(unsafe { owned(data, len) }),
        NOT_FOUND => Ok(Vec::new()),
        s => Err(HostError(s)),
    }
}

/// A shared-data value (shared by every worker of this VM id) and its CAS token.
pub fn shared_data(key: &str) -> HostResult<(Option<Vec<u8>>, u32)> {
    let mut data = null_mut();
    let mut size = 0;
    let mut cas = 0;
    match unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) } {
        0 => Ok((Some(unsafe { owned(data, size) }), cas)),
        NOT_FOUND => Ok((None, 0)),
        s => Err(HostError(s)),
    }
}

/// Writes shared data if it still has CAS token `cas` (0: unconditionally).
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Written {
    match unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) } {
        0 => Written::Yes,
        CAS_MISMATCH => Written::Conflict,
        _ => Written::Failed,
    }
}

/// Starts an HTTP call to `cluster`; `headers` in the serialised pairs form.
pub fn http_call(cluster: &str, headers: &[u8], body: &[u8], timeout_ms: u32) -> HostResult<u32> {
    let mut token = 0;
    check(unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            if body.is_empty() { null() } else { body.as_ptr() },
            body.len(),
            null(),
            0,
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

/// Sets a stream property; a single-segment path becomes filter state `wasm.<path>`.
pub fn set_property(path: &str, value: &[u8]) -> HostResult<()> {
    check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// Makes the host calls that follow address this context (in a callback of another one).
pub fn set_effective_context(context_id: u32) -> HostResult<()> {
    check(unsafe { proxy_set_effective_context(context_id) })
}

/// Resumes a paused request from outside its own callbacks (e.g. after an injected delay).
/// Fails quietly if the stream is already gone.
pub fn resume_request(context_id: u32) -> HostResult<()> {
    set_effective_context(context_id)?;
    check(unsafe { proxy_continue_stream(0) })
}

pub fn increment_metric(id: u32, by: u64) -> HostResult<()> {
    check(unsafe { proxy_increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX)) })
}

pub fn set_tick_period_ms(ms: u32) -> HostResult<()> {
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
}
