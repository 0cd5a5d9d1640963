//! The event hooks Envoy calls. Each one runs its body inside [`guard`]: a panic must not
//! cross the C ABI (it would abort Envoy), so a caught one is logged with the hook's name
//! and the stream is answered per `failure_policy` (open: it goes on unrouted; closed:
//! `UNAVAILABLE`). Envoy refuses a module that lacks any hook it requires, so the hooks this
//! filter has no use for are here too, doing nothing.

use crate::abi::{self, ConfigEnvoyPtr, EnvoyBuffer, EnvoyHeader, FilterEnvoyPtr};
use crate::host::{self, log, worker_for, Module, NativeHost, NativeStream, SendPtr, Wake, EVENT_RESUME, EVENT_TICK};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use switchyard_filter_core::config::{Config, FailMode};
use switchyard_filter_core::host::{Flow, Level, MetricKind};
use switchyard_filter_core::ledger::Board;
use switchyard_filter_core::stats::StatTable;
use switchyard_filter_core::stream::Stream;

/// Runs a hook's body; a panic becomes `fallback` and one log line naming the hook.
fn guard<R>(hook: &'static str, fallback: impl FnOnce() -> R, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => {
            static PANICS: AtomicU64 = AtomicU64::new(0);
            let n = PANICS.fetch_add(1, Ordering::Relaxed) + 1;
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log(Level::Error, &format!("switchyard: panic in hook {hook} ({n} so far): {what}; the stream follows failure_policy"));
            fallback()
        }
    }
}

/// A test hook: with `SWITCHYARD_PANIC_HEADER=<name>` in Envoy's environment, a request
/// carrying that header panics inside the request-headers hook, to show that a panic is
/// contained. Read once at load; unset, it costs one branch per request.
fn panic_header() -> Option<&'static str> {
    static HEADER: OnceLock<Option<String>> = OnceLock::new();
    HEADER.get_or_init(|| std::env::var("SWITCHYARD_PANIC_HEADER").ok().filter(|h| !h.is_empty())).as_deref()
}

#[allow(clippy::panic)]
fn maybe_panic(stream: &mut NativeStream<'_>) {
    let Some(name) = panic_header() else { return };
    let mut present = false;
    stream.with_request_headers(|_, headers| {
        for (k, _) in headers {
            present |= k == name.as_bytes();
        }
    });
    if present {
        panic!("test panic requested by header {name}");
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    guard("program_init", std::ptr::null, || {
        // Panics are reported by `guard`, through Envoy's log; the default hook would also
        // print to Envoy's stderr.
        std::panic::set_hook(Box::new(|_| {}));
        abi::ABI_VERSION.as_ptr()
    })
}

/// What Envoy holds for a filter configuration.
struct ConfigHandle {
    module: Arc<Module>,
}

static NEXT_MODULE: AtomicU64 = AtomicU64::new(1);

fn define(envoy: ConfigEnvoyPtr, kind: MetricKind, name: &str) -> Option<usize> {
    let mut id = 0usize;
    let name = abi::ModuleBuffer::of(name.as_bytes());
    // SAFETY: during config_new, on the main thread, as the ABI requires.
    let result = unsafe {
        match kind {
            MetricKind::Counter => abi::envoy_dynamic_module_callback_http_filter_config_define_counter(envoy, name, std::ptr::null(), 0, &mut id),
            MetricKind::Gauge => abi::envoy_dynamic_module_callback_http_filter_config_define_gauge(envoy, name, std::ptr::null(), 0, &mut id),
            MetricKind::Histogram => abi::envoy_dynamic_module_callback_http_filter_config_define_histogram(envoy, name, std::ptr::null(), 0, &mut id),
        }
    };
    (result == abi::METRICS_SUCCESS).then_some(id)
}

fn bytes<'a>(b: EnvoyBuffer) -> &'a [u8] {
    if b.ptr.is_null() {
        &[]
    } else {
        // SAFETY: Envoy-owned bytes, valid during the hook that passed them.
        unsafe { std::slice::from_raw_parts(b.ptr, b.length) }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(envoy: ConfigEnvoyPtr, _name: EnvoyBuffer, config: EnvoyBuffer) -> *const c_void {
    guard("http_filter_config_new", std::ptr::null, || {
        let json = bytes(config).to_vec();
        // Envoy rejects the configuration when this returns null; the previous one keeps
        // serving. The core logs why (naming the field).
        let parsed = match Config::from_json(&json) {
            Ok(c) => c,
            Err(e) => {
                log(Level::Error, &format!("switchyard: invalid plugin configuration: {e}"));
                return std::ptr::null();
            }
        };
        // Envoy freezes stat creation when this hook returns: define every stat now.
        let table = StatTable::new(&parsed);
        let mut metrics = std::collections::HashMap::new();
        for (kind, names) in [(MetricKind::Counter, table.counters()), (MetricKind::Gauge, table.gauges()), (MetricKind::Histogram, table.histograms())] {
            for name in names {
                let Some(id) = define(envoy, kind, name) else {
                    log(Level::Error, &format!("switchyard: Envoy refused to define stat {name}"));
                    return std::ptr::null();
                };
                metrics.insert(name.clone(), (kind, id));
            }
        }
        // SAFETY: the configuration object is live for this call.
        let scheduler = unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(envoy) };
        let module = Arc::new(Module {
            envoy,
            id: NEXT_MODULE.fetch_add(1, Ordering::Relaxed),
            json,
            board: Board::new(&parsed),
            metrics,
            failure: parsed.failure_policy,
            tick_ms: parsed.tick_ms,
            scheduler: Mutex::new((!scheduler.is_null()).then_some(SendPtr(scheduler))),
            alive: AtomicBool::new(true),
        });
        // The main thread's worker: it polls the sidecar and applies time-driven health
        // transitions even while no stream runs.
        if worker_for(&module, true).is_none() {
            module.close();
            return std::ptr::null();
        }
        module.start_ticks();
        Box::into_raw(Box::new(ConfigHandle { module })) as *const c_void
    })
}

/// The configuration behind a module pointer Envoy hands back.
fn handle<'a>(ptr: *const c_void) -> Option<&'a ConfigHandle> {
    // SAFETY: Envoy passes back the pointer `config_new` returned, until `config_destroy`.
    unsafe { ptr.cast::<ConfigHandle>().as_ref() }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    guard("http_filter_config_destroy", || (), || {
        if config.is_null() {
            return;
        }
        // SAFETY: created by `Box::into_raw` in config_new; Envoy destroys it once.
        let handle = unsafe { Box::from_raw(config as *mut ConfigHandle) };
        handle.module.close();
        host::forget_worker(handle.module.id);
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(_envoy: ConfigEnvoyPtr, config: *const c_void, event: u64) {
    guard("http_filter_config_scheduled", || (), || {
        let Some(h) = handle(config) else { return };
        if event == EVENT_TICK {
            if let Some(w) = worker_for(&h.module, true) {
                w.tick();
            }
        }
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _envoy: ConfigEnvoyPtr,
    config: *const c_void,
    callout: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    chunks: *const EnvoyBuffer,
    chunks_size: usize,
) {
    guard("http_filter_config_http_callout_done", || (), || {
        let Some(h) = handle(config) else { return };
        let Some(w) = worker_for(&h.module, true) else { return };
        host::callout_reply(result, headers, headers_size, chunks, chunks_size, |reply| {
            w.on_callout_reply(callout as u32, reply);
        });
    })
}

/// One stream.
struct Filter {
    core: Stream<NativeHost>,
    envoy: FilterEnvoyPtr,
    wake: Option<Arc<Wake>>,
    failure: FailMode,
}

impl Filter {
    /// Runs `f` with the core's stream and this stream's side of the host.
    fn with<R>(&mut self, f: impl FnOnce(&mut Stream<NativeHost>, &mut NativeStream<'_>) -> R) -> R {
        let mut s = NativeStream { filter: self.envoy, replied: false, wake: &mut self.wake };
        f(&mut self.core, &mut s)
    }
}

fn filter<'a>(ptr: *const c_void) -> Option<&'a mut Filter> {
    // SAFETY: Envoy passes back the pointer `filter_new` returned, on the stream's own
    // worker thread, until `filter_destroy`; hooks of one stream never overlap.
    unsafe { (ptr as *mut Filter).as_mut() }
}

/// What a stream hook does after a caught panic, per `failure_policy`.
fn failed(envoy: FilterEnvoyPtr, module: *const c_void, open: u32) -> u32 {
    let policy = filter(module).map_or(FailMode::Closed, |f| f.failure);
    match policy {
        FailMode::Open => open,
        FailMode::Closed => {
            NativeStream { filter: envoy, replied: false, wake: &mut None }.fail_closed("switchyard: the filter failed on this request");
            abi::HEADERS_STOP_ITERATION
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(config: *const c_void, envoy: FilterEnvoyPtr) -> *const c_void {
    guard("http_filter_new", std::ptr::null, || {
        let Some(h) = handle(config) else { return std::ptr::null() };
        let Some(worker) = worker_for(&h.module, false) else { return std::ptr::null() };
        let f = Filter { core: Stream::new(worker, envoy as u64), envoy, wake: None, failure: h.module.failure };
        Box::into_raw(Box::new(f)) as *const c_void
    })
}

fn headers_status(flow: Flow) -> u32 {
    match flow {
        Flow::Continue => abi::HEADERS_CONTINUE,
        Flow::Pause => abi::HEADERS_STOP_ITERATION,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(envoy: FilterEnvoyPtr, module: *const c_void, end_of_stream: bool) -> u32 {
    guard("http_filter_request_headers", || failed(envoy, module, abi::HEADERS_CONTINUE), || {
        let Some(f) = filter(module) else { return abi::HEADERS_CONTINUE };
        f.with(|core, s| {
            maybe_panic(s);
            headers_status(s.with_request_headers(|s, headers| core.on_request_headers(s, headers, end_of_stream)))
        })
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(envoy: FilterEnvoyPtr, module: *const c_void, end_of_stream: bool) -> u32 {
    guard("http_filter_request_body", || failed(envoy, module, abi::BODY_CONTINUE), || {
        let Some(f) = filter(module) else { return abi::BODY_CONTINUE };
        if !f.core.wants_body() {
            return abi::BODY_CONTINUE;
        }
        request_body(f, end_of_stream)
    })
}

/// The body of a stream that validates it or holds it: out of line, so the per-chunk
/// path of every other stream stays a few instructions.
#[inline(never)]
fn request_body(f: &mut Filter, end_of_stream: bool) -> u32 {
    match f.with(|core, s| core.on_request_body(s, end_of_stream)) {
        Flow::Continue => abi::BODY_CONTINUE,
        Flow::Pause => abi::BODY_STOP_AND_BUFFER,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(_envoy: FilterEnvoyPtr, _module: *const c_void) -> u32 {
    abi::TRAILERS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(envoy: FilterEnvoyPtr, module: *const c_void, end_of_stream: bool) -> u32 {
    guard("http_filter_response_headers", || abi::HEADERS_CONTINUE, || {
        let _ = envoy;
        let Some(f) = filter(module) else { return abi::HEADERS_CONTINUE };
        headers_status(f.with(|core, s| core.on_response_headers(s, end_of_stream)))
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(_envoy: FilterEnvoyPtr, _module: *const c_void, _end_of_stream: bool) -> u32 {
    abi::BODY_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(_envoy: FilterEnvoyPtr, module: *const c_void) -> u32 {
    guard("http_filter_response_trailers", || abi::TRAILERS_CONTINUE, || {
        let Some(f) = filter(module) else { return abi::TRAILERS_CONTINUE };
        f.with(|core, s| core.on_response_trailers(s));
        abi::TRAILERS_CONTINUE
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(_envoy: FilterEnvoyPtr, module: *const c_void) {
    guard("http_filter_stream_complete", || (), || {
        if let Some(f) = filter(module) {
            f.core.on_complete();
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(module: *const c_void) {
    guard("http_filter_destroy", || (), || {
        if module.is_null() {
            return;
        }
        // SAFETY: created by `Box::into_raw` in filter_new; Envoy destroys it once.
        let mut f = unsafe { Box::from_raw(module as *mut Filter) };
        // Idempotent: a stream reset before completing still records its outcome.
        f.core.on_complete();
        if let Some(wake) = &f.wake {
            wake.close();
        }
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _envoy: FilterEnvoyPtr,
    module: *const c_void,
    callout: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    chunks: *const EnvoyBuffer,
    chunks_size: usize,
) {
    guard("http_filter_http_callout_done", || (), || {
        let Some(f) = filter(module) else { return };
        host::callout_reply(result, headers, headers_size, chunks, chunks_size, |reply| {
            f.with(|core, s| core.on_callout_reply(s, callout as u32, reply));
        });
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(envoy: FilterEnvoyPtr, module: *const c_void, event: u64) {
    guard("http_filter_scheduled", || (), || {
        // Envoy drops events for a stream already destroyed.
        let Some(f) = filter(module) else { return };
        if event == EVENT_RESUME {
            let _ = envoy;
            f.with(|core, s| core.on_delay_over(s));
        }
    })
}

// Hooks Envoy requires that this filter has no use for.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _envoy: FilterEnvoyPtr,
    _module: *const c_void,
    _stream: u64,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _envoy: FilterEnvoyPtr,
    _module: *const c_void,
    _stream: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _envoy: FilterEnvoyPtr,
    _module: *const c_void,
    _stream: u64,
    _trailers: *const EnvoyHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(_envoy: FilterEnvoyPtr, _module: *const c_void, _stream: u64) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(_envoy: FilterEnvoyPtr, _module: *const c_void, _stream: u64, _reason: u32) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(_envoy: FilterEnvoyPtr, _module: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(_envoy: FilterEnvoyPtr, _module: *const c_void) {}
