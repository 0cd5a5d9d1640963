//! The core's `Host` and `StreamHost` over Envoy's dynamic-modules ABI.
//!
//! Envoy creates one filter configuration (on the main thread) that every worker thread's
//! streams share. The core's `Worker` is single-threaded, so each thread gets its own for
//! each configuration ([`worker_for`]), as proxy-wasm gives each worker its own VM. They
//! share one ledger, the configuration's `Board`, in process memory; the main thread's
//! worker is the one that ticks (merges health, polls the sidecar), on the timer thread's
//! cue, so no worker thread needs traffic to keep health current.

use crate::abi::{self, ConfigEnvoyPtr, ConfigSchedulerPtr, EnvoyBuffer, EnvoyHeader, FilterEnvoyPtr, ModuleBuffer, ModuleHeader, SchedulerPtr};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_filter_core::config::FailMode;
use switchyard_filter_core::host::{
    Callout, CalloutReply, CalloutToken, Host, Level, LocalReply, MetricHandle, MetricKind, ResponseMap, RouteRefresh, Shared,
    StreamHost, Written,
};
use switchyard_filter_core::ledger::{Board, Sharing};
use switchyard_filter_core::worker::Worker;

/// Filter-state key of the decision (`%FILTER_STATE(switchyard.decision:PLAIN)%`).
pub(crate) const DECISION_STATE_KEY: &str = "switchyard.decision";

/// Events posted to a stream's worker thread.
pub(crate) const EVENT_RESUME: u64 = 1;
/// Events posted to the main thread.
pub(crate) const EVENT_TICK: u64 = 1;

/// One filter configuration, as every thread sees it.
pub(crate) struct Module {
    pub(crate) envoy: ConfigEnvoyPtr,
    /// Distinguishes configurations in the per-thread worker tables.
    pub(crate) id: u64,
    pub(crate) json: Vec<u8>,
    /// What every thread's worker of this configuration reads and records.
    pub(crate) board: Arc<Board>,
    /// Stats defined while the configuration was created (Envoy freezes them after).
    pub(crate) metrics: HashMap<String, (MetricKind, usize)>,
    pub(crate) failure: FailMode,
    pub(crate) tick_ms: u32,
    /// The main thread's scheduler (its tick); `None` once the configuration is gone.
    pub(crate) scheduler: Mutex<Option<SendPtr>>,
    pub(crate) alive: AtomicBool,
}

/// A pointer Envoy allows to be used from any thread (its docs say which callbacks).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut std::ffi::c_void);
// SAFETY: only passed to callbacks Envoy documents as callable from any thread (scheduler
// commits, configuration-level stats), and only while the object is alive (see `Module`).
unsafe impl Send for SendPtr {}

// SAFETY: `envoy` is Envoy's configuration object, which outlives this `Module` (Envoy
// destroys it after `on_http_filter_config_destroy`); the callbacks made through it from
// worker threads are the thread-safe stats ones. Everything else is behind locks or atomics.
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

impl Module {
    /// Posts the main thread's tick every `tick_ms` while the configuration lives.
    pub(crate) fn start_ticks(self: &Arc<Self>) {
        let module = Arc::downgrade(self);
        let period = Duration::from_millis(u64::from(self.tick_ms));
        fn again(module: std::sync::Weak<Module>, period: Duration) {
            crate::ticker::at(Instant::now() + period, move || {
                let Some(m) = module.upgrade() else { return };
                if !m.alive.load(Ordering::Acquire) {
                    return;
                }
                if let Ok(s) = m.scheduler.lock() {
                    if let Some(s) = *s {
                        // SAFETY: the scheduler is deleted under this lock, never while held.
                        unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(s.0 as ConfigSchedulerPtr, EVENT_TICK) };
                    }
                }
                again(Arc::downgrade(&m), period);
            });
        }
        again(module, period);
    }

    /// The configuration is being destroyed: no more ticks.
    pub(crate) fn close(&self) {
        self.alive.store(false, Ordering::Release);
        if let Ok(mut s) = self.scheduler.lock() {
            if let Some(s) = s.take() {
                // SAFETY: created by `config_scheduler_new`, deleted once.
                unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(s.0) };
            }
        }
    }
}


pub(crate) fn log(level: Level, message: &str) {
    // SAFETY: the message is read during the call only.
    unsafe { abi::envoy_dynamic_module_callback_log(level as abi::LogLevel, ModuleBuffer::of(message.as_bytes())) };
}

/// Wakes a stream on its own worker thread after a delay. Shared with the timer thread;
/// the scheduler is deleted under the lock when the stream goes, so a late wake-up is a
/// no-op rather than a use after free.
#[derive(Default)]
pub(crate) struct Wake {
    scheduler: Mutex<Option<SendPtr>>,
}

impl Wake {
    fn arm(&self, filter: FilterEnvoyPtr) -> bool {
        let Ok(mut s) = self.scheduler.lock() else { return false };
        if s.is_none() {
            // SAFETY: `filter` is the live stream whose hook is running.
            let created = unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(filter) };
            if created.is_null() {
                return false;
            }
            *s = Some(SendPtr(created));
        }
        true
    }

    fn commit(&self, event: u64) {
        if let Ok(s) = self.scheduler.lock() {
            if let Some(s) = *s {
                // SAFETY: deleted only under this lock (see `close`).
                unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(s.0 as SchedulerPtr, event) };
            }
        }
    }

    pub(crate) fn close(&self) {
        if let Ok(mut s) = self.scheduler.lock() {
            if let Some(s) = s.take() {
                // SAFETY: created by `scheduler_new`, deleted once.
                unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(s.0) };
            }
        }
    }
}

/// One thread's view of a configuration.
pub(crate) struct NativeHost {
    module: Arc<Module>,
    /// The main thread's worker polls the sidecar; worker threads only read the result.
    main: bool,
}

impl NativeHost {
    pub(crate) fn new(module: Arc<Module>, main: bool) -> Self {
        Self { module, main }
    }
}

/// Wall-clock nanoseconds, read twice per request: straight from the vDSO, without the
/// checked arithmetic of `SystemTime::duration_since`.
fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_REALTIME always exists.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// Headers for a callout: the pseudo-headers Envoy requires, then the caller's.
fn callout_headers<'a>(call: &Callout<'a>) -> Vec<ModuleHeader<'a>> {
    let mut headers = vec![
        header(":method", call.method),
        header(":path", call.path),
        header("host", call.authority),
    ];
    headers.extend(call.headers.iter().map(|(k, v)| header(k, v)));
    headers
}

fn header<'a>(key: &'a str, value: &'a str) -> ModuleHeader<'a> {
    ModuleHeader { key: ModuleBuffer::of(key.as_bytes()), value: ModuleBuffer::of(value.as_bytes()) }
}

impl Host for NativeHost {
    fn now_ns(&self) -> u64 {
        now_ns()
    }
    fn routes_by_filter_state(&self) -> bool {
        true
    }
    fn log_enabled(&self, level: Level) -> bool {
        // SAFETY: a plain query.
        unsafe { abi::envoy_dynamic_module_callback_log_enabled(level as abi::LogLevel) }
    }
    fn log(&self, level: Level, message: &str) {
        log(level, message);
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<MetricHandle> {
        let (defined, id) = self.module.metrics.get(name)?;
        (*defined == kind).then_some(MetricHandle(*id as u64))
    }
    fn increment(&self, counter: MetricHandle, by: u64) {
        // SAFETY: configuration-level stats are callable from any thread while it lives.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(self.module.envoy, counter.0 as usize, std::ptr::null(), 0, by)
        };
    }
    fn set_gauge(&self, gauge: MetricHandle, value: u64) {
        // SAFETY: as above.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_config_set_gauge(self.module.envoy, gauge.0 as usize, std::ptr::null(), 0, value) };
    }
    fn record(&self, histogram: MetricHandle, value: u64) {
        // SAFETY: as above.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
                self.module.envoy,
                histogram.0 as usize,
                std::ptr::null(),
                0,
                value,
            )
        };
    }
    // Workers share the configuration's board in memory, never encoded state.
    fn shared_get(&self, _key: &str) -> Option<Shared> {
        None
    }
    fn shared_set(&self, _key: &str, _value: &[u8], _cas: u32) -> Written {
        Written::Failed
    }
    fn callout(&self, call: &Callout<'_>) -> Option<CalloutToken> {
        if !self.main {
            return None;
        }
        let headers = callout_headers(call);
        let mut id = 0u64;
        // SAFETY: on the main thread with the live configuration; inputs are read during the call.
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.module.envoy,
                &mut id,
                ModuleBuffer::of(call.cluster.as_bytes()),
                headers.as_ptr(),
                headers.len(),
                call.body.map_or(ModuleBuffer::NULL, ModuleBuffer::of),
                u64::from(call.timeout_ms),
            )
        };
        (result == abi::CALLOUT_INIT_SUCCESS).then_some(id as CalloutToken)
    }
    fn set_tick_period_ms(&self, _ms: u32) {
        // Worker threads tick as their streams run; the main thread at the configured period.
    }
    fn resume_stream(&self, _stream: u64) {
        // Delays are resumed by each stream's own timer (`resume_after`), never by a tick.
    }
}

thread_local! {
    /// This thread's worker for each live configuration.
    static WORKERS: RefCell<Vec<(u64, Rc<Worker<NativeHost>>)>> = const { RefCell::new(Vec::new()) };
}

/// This thread's worker for `module`, built on first use.
pub(crate) fn worker_for(module: &Arc<Module>, main: bool) -> Option<Rc<Worker<NativeHost>>> {
    WORKERS.with(|w| {
        let mut workers = w.try_borrow_mut().ok()?;
        if let Some((_, worker)) = workers.iter().find(|(id, _)| *id == module.id) {
            return Some(worker.clone());
        }
        // Forget workers of configurations that are gone.
        workers.retain(|(_, w)| w.host().module.alive.load(Ordering::Acquire));
        let seed = now_ns() ^ module.id.rotate_left(17) ^ (workers.len() as u64) << 48 ^ thread_seed();
        let sharing = Sharing::Board { board: module.board.clone(), ticks: main };
        let worker = Rc::new(Worker::configure_with(NativeHost::new(module.clone(), main), &module.json, seed, sharing).ok()?);
        workers.push((module.id, worker.clone()));
        Some(worker)
    })
}

/// Drops this thread's worker for a configuration (the main thread, on destroy).
pub(crate) fn forget_worker(module_id: u64) {
    WORKERS.with(|w| {
        if let Ok(mut workers) = w.try_borrow_mut() {
            workers.retain(|(id, _)| *id != module_id);
        }
    });
}

fn thread_seed() -> u64 {
    thread_local!(static SEED: Cell<u64> = const { Cell::new(0) });
    SEED.with(|s| {
        if s.get() == 0 {
            let addr = s as *const Cell<u64> as u64;
            s.set(addr.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        }
        s.get()
    })
}

/// The request headers as `(name, value)` pairs: pointers into Envoy's header map, valid
/// for the hook that read them. A concrete type, so the core's scan over them is inlined.
pub(crate) struct RequestHeaders<'h> {
    slots: std::slice::Iter<'h, EnvoyHeader>,
}

impl<'h> Iterator for RequestHeaders<'h> {
    type Item = (&'h [u8], &'h [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let h = self.slots.by_ref().find(|h| !h.key_ptr.is_null())?;
        // SAFETY: pointers into Envoy's header map, valid for this hook; nothing sets a
        // header until the scan over them has finished (the core decides first).
        unsafe {
            Some((
                std::slice::from_raw_parts(h.key_ptr, h.key_length),
                if h.value_ptr.is_null() { &[][..] } else { std::slice::from_raw_parts(h.value_ptr, h.value_length) },
            ))
        }
    }
}

/// One stream during one of its hooks.
pub(crate) struct NativeStream<'a> {
    pub(crate) filter: FilterEnvoyPtr,
    /// Set once a local reply went out (the hook then stops iteration).
    pub(crate) replied: bool,
    /// The stream's wake-up for injected delays, made on first use (most streams never
    /// need one).
    pub(crate) wake: &'a mut Option<Arc<Wake>>,
}

fn module(bytes: &[u8]) -> ModuleBuffer<'_> {
    ModuleBuffer::of(bytes)
}

impl NativeStream<'_> {
    fn header_value(&mut self, map: abi::HeaderType, name: &str, f: &mut dyn FnMut(&[u8])) {
        let mut out = EnvoyBuffer { ptr: std::ptr::null(), length: 0 };
        // SAFETY: live stream; the value is Envoy's until the hook ends or a setter runs,
        // and is only read inside `f` right here.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(self.filter, map, module(name.as_bytes()), &mut out, 0, std::ptr::null_mut())
        };
        if found && !out.ptr.is_null() {
            // SAFETY: as above.
            f(unsafe { std::slice::from_raw_parts(out.ptr, out.length) });
        }
    }

    /// Where the request body is, in order: the final chunk is not in the buffered body
    /// yet, unless an earlier filter buffered the whole body and handed it on as this chunk.
    fn request_body_parts(&self) -> &'static [abi::BodyType] {
        // SAFETY: live stream, request-body phase.
        if unsafe { abi::envoy_dynamic_module_callback_http_received_buffered_request_body(self.filter) } {
            &[abi::RECEIVED_REQUEST_BODY]
        } else {
            &[abi::BUFFERED_REQUEST_BODY, abi::RECEIVED_REQUEST_BODY]
        }
    }

    /// Every request header, without copying a byte: Envoy fills an array of pointers into
    /// its header map, kept per thread so the request path does not allocate.
    pub(crate) fn with_request_headers<R>(&mut self, f: impl for<'h> FnOnce(&mut Self, RequestHeaders<'h>) -> R) -> R {
        thread_local!(static SLOTS: RefCell<Vec<EnvoyHeader>> = const { RefCell::new(Vec::new()) });
        SLOTS.with(|slots| {
            let Ok(mut slots) = slots.try_borrow_mut() else {
                return f(self, RequestHeaders { slots: [].iter() });
            };
            // SAFETY: live stream, request-header phase.
            let n = unsafe { abi::envoy_dynamic_module_callback_http_get_headers_size(self.filter, abi::REQUEST_HEADER) };
            slots.clear();
            slots.resize(n, EnvoyHeader::EMPTY);
            // SAFETY: `slots` holds `n` entries, as Envoy requires.
            let ok = n > 0 && unsafe { abi::envoy_dynamic_module_callback_http_get_headers(self.filter, abi::REQUEST_HEADER, slots.as_mut_ptr()) };
            f(self, RequestHeaders { slots: if ok { slots.iter() } else { [].iter() } })
        })
    }

    /// Sends a gRPC `UNAVAILABLE` answer (a failure with `failure_policy: fail_closed`).
    pub(crate) fn fail_closed(&mut self, why: &str) {
        self.send_reply(&LocalReply {
            http_status: 200,
            details: "switchyard_failed",
            grpc: Some((14, why)),
            body: "",
        });
    }
}

impl StreamHost for NativeStream<'_> {
    fn set_request_header(&mut self, name: &str, value: &str) {
        // SAFETY: live stream, request phase.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(self.filter, abi::REQUEST_HEADER, module(name.as_bytes()), module(value.as_bytes()));
        }
    }
    fn add_request_header(&mut self, name: &str, value: &str) {
        // SAFETY: live stream, request phase.
        unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(self.filter, abi::REQUEST_HEADER, module(name.as_bytes()), module(value.as_bytes()));
        }
    }
    fn remove_request_header(&mut self, name: &str) {
        // SAFETY: a null value removes the header.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(self.filter, abi::REQUEST_HEADER, module(name.as_bytes()), ModuleBuffer::NULL);
        }
    }
    fn refresh_route(&mut self, what: RouteRefresh) {
        // SAFETY: live stream, request phase.
        unsafe {
            match what {
                RouteRefresh::Route => abi::envoy_dynamic_module_callback_http_clear_route_cache(self.filter),
                RouteRefresh::Cluster => abi::envoy_dynamic_module_callback_http_clear_route_cluster_cache(self.filter),
            }
        }
    }
    fn set_routing_state(&mut self, key: &str, cluster: &str) {
        // SAFETY: live stream, request phase.
        unsafe { abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(self.filter, module(key.as_bytes()), module(cluster.as_bytes())) };
    }
    fn request_body_size(&mut self) -> usize {
        self.request_body_parts()
            .iter()
            // SAFETY: live stream, request-body phase.
            .map(|&kind| unsafe { abi::envoy_dynamic_module_callback_http_get_body_size(self.filter, kind) })
            .sum()
    }
    fn add_response_header(&mut self, name: &str, value: &str) {
        // SAFETY: live stream, response phase.
        unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(self.filter, abi::RESPONSE_HEADER, module(name.as_bytes()), module(value.as_bytes()))
        };
    }
    fn response_value(&mut self, map: ResponseMap, name: &str, f: &mut dyn FnMut(&[u8])) {
        let map = match map {
            ResponseMap::Headers => abi::RESPONSE_HEADER,
            ResponseMap::Trailers => abi::RESPONSE_TRAILER,
        };
        self.header_value(map, name, f);
    }
    fn request_body(&mut self, _size: usize, f: &mut dyn FnMut(&[u8])) {
        let mut body = Vec::new();
        for &kind in self.request_body_parts() {
            // SAFETY: `chunks` has the size Envoy reported; slices are read before the hook ends.
            unsafe {
                let n = abi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.filter, kind);
                let mut chunks = vec![EnvoyBuffer { ptr: std::ptr::null(), length: 0 }; n];
                if n > 0 && abi::envoy_dynamic_module_callback_http_get_body_chunks(self.filter, kind, chunks.as_mut_ptr()) {
                    for c in chunks.iter().filter(|c| !c.ptr.is_null()) {
                        body.extend_from_slice(std::slice::from_raw_parts(c.ptr, c.length));
                    }
                }
            }
        }
        f(&body);
    }
    fn send_reply(&mut self, r: &LocalReply<'_>) {
        // The header values must outlive the call: Envoy reads them through raw pointers.
        let (status, message);
        let headers: Vec<ModuleHeader<'_>> = match r.grpc {
            Some((code, text)) => {
                status = code.to_string();
                message = grpc_message(text);
                vec![header("content-type", "application/grpc"), header("grpc-status", &status), header("grpc-message", &message)]
            }
            None => vec![header("content-type", "text/plain")],
        };
        let body = if r.grpc.is_some() { ModuleBuffer::NULL } else { module(r.body.as_bytes()) };
        // SAFETY: live stream; headers and body are read during the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(self.filter, r.http_status, headers.as_ptr(), headers.len(), body, module(r.details.as_bytes()))
        };
        self.replied = true;
    }
    fn set_filter_state(&mut self, _key: &str, value: &[u8]) {
        // SAFETY: live stream.
        unsafe { abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(self.filter, module(DECISION_STATE_KEY.as_bytes()), module(value)) };
    }
    fn callout(&mut self, call: &Callout<'_>) -> Option<CalloutToken> {
        let headers = callout_headers(call);
        let mut id = 0u64;
        // SAFETY: live stream; inputs are read during the call.
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_http_callout(
                self.filter,
                &mut id,
                module(call.cluster.as_bytes()),
                headers.as_ptr(),
                headers.len(),
                call.body.map_or(ModuleBuffer::NULL, module),
                u64::from(call.timeout_ms),
            )
        };
        (result == abi::CALLOUT_INIT_SUCCESS).then_some(id as CalloutToken)
    }
    fn resume_request(&mut self) {
        // SAFETY: live stream.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_decoding(self.filter) };
    }
    fn resume_after(&mut self, ms: u32) -> bool {
        let wake = self.wake.get_or_insert_with(Arc::default);
        if !wake.arm(self.filter) {
            return false;
        }
        let wake = wake.clone();
        crate::ticker::at(Instant::now() + Duration::from_millis(u64::from(ms)), move || wake.commit(EVENT_RESUME))
    }
}

/// `grpc-message` is percent-encoded on the wire (gRPC's spec): printable ASCII except `%`
/// passes, everything else is `%XX`. (Proxy-wasm's `grpc_status` reply does this for us.)
fn grpc_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a callout's answer: `:status` and the body, joined.
pub(crate) fn callout_reply(result: u32, headers: *const EnvoyHeader, headers_size: usize, chunks: *const EnvoyBuffer, chunks_size: usize, f: impl FnOnce(&CalloutReply<'_>)) {
    let mut status = None;
    let mut body = Vec::new();
    if result == abi::CALLOUT_SUCCESS {
        // SAFETY: Envoy-owned arrays of the given sizes, valid during the hook.
        unsafe {
            if !headers.is_null() {
                for h in std::slice::from_raw_parts(headers, headers_size) {
                    if !h.key_ptr.is_null() && std::slice::from_raw_parts(h.key_ptr, h.key_length) == b":status" && !h.value_ptr.is_null() {
                        status = std::str::from_utf8(std::slice::from_raw_parts(h.value_ptr, h.value_length)).ok().and_then(|v| v.parse().ok());
                    }
                }
            }
            if !chunks.is_null() {
                for c in std::slice::from_raw_parts(chunks, chunks_size) {
                    if !c.ptr.is_null() {
                        body.extend_from_slice(std::slice::from_raw_parts(c.ptr, c.length));
                    }
                }
            }
        }
    }
    f(&CalloutReply { status, body: &body });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_message("deadline 2.0ms is 50% short"), "deadline 2.0ms is 50%25 short");
        assert_eq!(grpc_message("é\n"), "%C3%A9%0A");
    }
}
