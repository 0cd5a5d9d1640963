//! The proxy-wasm side of the module: the ABI's exported callbacks, the table of contexts
//! they address, and the core's `Host` and `StreamHost` over the host calls in [`host`].
//!
//! No SDK: the proxy-wasm crate's dispatcher panics (traps the VM) on anything unexpected,
//! an unknown callout token among them, and a callout made through a raw host call is
//! unknown to it. Here an unknown context or token is ignored, and a context being used
//! when Envoy calls back into it is left alone rather than borrowed twice.
//!
//! A callout's answer comes to the plugin (root) context, whoever made the call: the table
//! remembers which stream made which call.

use crate::host::{self, Buffer, Map};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use switchyard_filter_core::host::{
    Callout, CalloutReply, CalloutToken, Flow, Host, Level, LocalReply, MetricHandle, MetricKind, ResponseMap, RouteRefresh,
    Shared, StreamHost, Written,
};
use switchyard_filter_core::request::{serialize_pairs, HeaderPairs};
use switchyard_filter_core::stream::Stream;
use switchyard_filter_core::worker::Worker;

/// One VM is one Envoy worker: the host is the VM's ABI, stateless on our side.
struct WasmHost;

fn handle(id: MetricHandle) -> u32 {
    u32::try_from(id.0).unwrap_or(u32::MAX)
}

fn call_headers(call: &Callout<'_>) -> Vec<u8> {
    let mut pairs = vec![(":method", call.method), (":path", call.path), (":authority", call.authority)];
    pairs.extend_from_slice(call.headers);
    serialize_pairs(&pairs)
}

impl Host for WasmHost {
    fn now_ns(&self) -> u64 {
        host::now_ns()
    }
    fn log_enabled(&self, level: Level) -> bool {
        host::log_level() <= level
    }
    fn log(&self, level: Level, message: &str) {
        host::log(level, message);
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<MetricHandle> {
        host::define_metric(kind, name).ok().map(|id| MetricHandle(u64::from(id)))
    }
    fn increment(&self, counter: MetricHandle, by: u64) {
        let _ = host::increment_metric(handle(counter), by);
    }
    fn set_gauge(&self, gauge: MetricHandle, value: u64) {
        let _ = host::record_metric(handle(gauge), value);
    }
    fn record(&self, histogram: MetricHandle, value: u64) {
        let _ = host::record_metric(handle(histogram), value);
    }
    fn shared_get(&self, key: &str) -> Option<Shared> {
        host::shared_data(key).ok().map(|(value, cas)| Shared { value, cas })
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: u32) -> Written {
        host::set_shared_data(key, value, cas)
    }
    fn callout(&self, call: &Callout<'_>) -> Option<CalloutToken> {
        host::http_call(call.cluster, &call_headers(call), call.body.unwrap_or_default(), call.timeout_ms).ok()
    }
    fn set_tick_period_ms(&self, ms: u32) {
        let _ = host::set_tick_period_ms(ms);
    }
    fn resume_stream(&self, stream: u64) {
        // The stream may be gone (client cancelled): nothing to resume then.
        if let Ok(id) = u32::try_from(stream) {
            let _ = host::resume_request(id);
        }
    }
}

/// The stream whose callback is running (proxy-wasm addresses the current stream).
struct WasmStream {
    context_id: u32,
    /// Whether it made a callout (whose token the table may still hold).
    called_out: bool,
    /// The body size the last body callback announced.
    body_size: usize,
}

impl StreamHost for WasmStream {
    fn set_request_header(&mut self, name: &str, value: &str) {
        let _ = host::replace_header(Map::RequestHeaders, name, value);
    }
    fn add_request_header(&mut self, name: &str, value: &str) {
        let _ = host::add_header(Map::RequestHeaders, name, value);
    }
    fn remove_request_header(&mut self, name: &str) {
        let _ = host::remove_header(Map::RequestHeaders, name);
    }
    fn refresh_route(&mut self, _what: RouteRefresh) {
        // proxy-wasm's host matches the route again on any request header change by itself.
    }
    fn request_body_size(&mut self) -> usize {
        self.body_size
    }
    fn add_response_header(&mut self, name: &str, value: &str) {
        let _ = host::add_header(Map::ResponseHeaders, name, value);
    }
    fn response_value(&mut self, map: ResponseMap, name: &str, f: &mut dyn FnMut(&[u8])) {
        let map = match map {
            ResponseMap::Headers => Map::ResponseHeaders,
            ResponseMap::Trailers => Map::ResponseTrailers,
        };
        if let Ok(Some(v)) = host::header(map, name) {
            f(&v);
        }
    }
    fn request_body(&mut self, size: usize, f: &mut dyn FnMut(&[u8])) {
        if let Ok(body) = host::buffer(Buffer::RequestBody, size) {
            f(&body);
        }
    }
    fn send_reply(&mut self, r: &LocalReply<'_>) {
        let (grpc_status, body) = match r.grpc {
            Some((code, message)) => (Some(code), message),
            None => (None, r.body),
        };
        let headers = if r.grpc.is_some() { serialize_pairs(&[("content-type", "application/grpc")]) } else { Vec::new() };
        let _ = host::send_local_response(r.http_status, r.details, body, &headers, grpc_status);
    }
    fn set_filter_state(&mut self, key: &str, value: &[u8]) {
        let _ = host::set_property(key, value);
    }
    fn callout(&mut self, call: &Callout<'_>) -> Option<CalloutToken> {
        let token = WasmHost.callout(call)?;
        self.called_out = true;
        let context_id = self.context_id;
        CONTEXTS.with(|c| c.try_borrow_mut().map(|mut c| c.callouts.insert(token, context_id)).is_ok()).then_some(token)
    }
    fn resume_request(&mut self) {
        let _ = host::resume_request(self.context_id);
    }
}

/// A root context: one plugin configuration on this VM.
struct Root {
    worker: Option<Rc<Worker<WasmHost>>>,
}

/// An HTTP context: one stream.
struct HttpStream {
    core: Stream<WasmHost>,
    host: WasmStream,
}

/// Context ids are small integers Envoy hands out in sequence: no need to hash them.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
}

type ById<T> = HashMap<u32, Rc<RefCell<T>>, BuildHasherDefault<IdHasher>>;

/// Every live context of this VM.
#[derive(Default)]
struct Contexts {
    roots: ById<Root>,
    streams: ById<HttpStream>,
    /// Callouts made by streams: token to stream.
    callouts: HashMap<u32, u32, BuildHasherDefault<IdHasher>>,
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::default();
}

/// The context `id` of a table, if it exists (the table is not borrowed while it is used).
fn lookup<T>(id: u32, table: impl FnOnce(&Contexts) -> &ById<T>) -> Option<Rc<RefCell<T>>> {
    CONTEXTS.with(|c| c.try_borrow().ok().and_then(|c| table(&c).get(&id).cloned()))
}

/// Runs `f` on stream `id`; `None` if it is unknown or already in use.
fn on_stream<R>(id: u32, f: impl FnOnce(&mut HttpStream) -> R) -> Option<R> {
    let stream = lookup(id, |c| &c.streams)?;
    let mut s = stream.try_borrow_mut().ok()?;
    Some(f(&mut s))
}

fn worker_of(root: u32) -> Option<Rc<Worker<WasmHost>>> {
    lookup(root, |c| &c.roots).and_then(|r| r.try_borrow().ok().and_then(|r| r.worker.clone()))
}

/// proxy-wasm's `Action`: `Pause` on a body callback means stop and buffer.
fn action(flow: Flow) -> u32 {
    match flow {
        Flow::Continue => 0,
        Flow::Pause => 1,
    }
}
const CONTINUE: u32 = 0;

/// The callout reply the host announced, read from the host.
fn with_callout_reply(body_size: usize, f: impl FnOnce(&CalloutReply<'_>)) {
    let status = host::header(Map::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok());
    let body = host::buffer(Buffer::HttpCallResponseBody, body_size).unwrap_or_default();
    f(&CalloutReply { status, body: &body });
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[cfg(target_os = "wasi")]
extern "C" {
    fn __wasm_call_ctors();
}

/// The reactor's entry point: runs static constructors once the VM is loaded.
#[no_mangle]
pub extern "C" fn _initialize() {
    #[cfg(target_os = "wasi")]
    // SAFETY: called once by the host, before any other export.
    unsafe {
        __wasm_call_ctors();
    }
}

/// The host allocates the buffers it returns through this (see `host::owned`).
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    host::allocate(size)
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    let context = if root_context_id == 0 {
        Some((true, None))
    } else {
        // A configuration that was refused has no worker: its streams pass untouched.
        worker_of(root_context_id).map(|w| (false, Some(w)))
    };
    CONTEXTS.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else { return };
        match context {
            Some((true, _)) => {
                c.roots.insert(context_id, Rc::new(RefCell::new(Root { worker: None })));
            }
            Some((false, Some(worker))) => {
                let host = WasmStream { context_id, called_out: false, body_size: 0 };
                let stream = HttpStream { core: Stream::new(worker, u64::from(context_id)), host };
                c.streams.insert(context_id, Rc::new(RefCell::new(stream)));
            }
            _ => {}
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _vm_configuration_size: usize) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, size: usize) -> bool {
    let Some(root) = lookup(context_id, |c| &c.roots) else { return false };
    let Ok(mut root) = root.try_borrow_mut() else { return false };
    let json = match host::plugin_configuration(size) {
        Ok(json) => json,
        Err(e) => {
            host::log(Level::Error, &format!("switchyard: cannot read plugin configuration (host status {})", e.0));
            return false;
        }
    };
    let seed = host::now_ns() ^ (u64::from(context_id) << 32) ^ u64::from(context_id);
    // Returning false makes Envoy reject this configuration; the previous one (if any)
    // keeps serving. The core has logged why.
    let Ok(worker) = Worker::configure(WasmHost, &json, seed) else { return false };
    if let Some(old) = &root.worker {
        old.flush_stats();
    }
    root.worker = Some(Rc::new(worker));
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    if let Some(w) = worker_of(context_id) {
        w.tick();
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _headers: usize, end_of_stream: bool) -> u32 {
    on_stream(context_id, |s| {
        // One host call for every header the decision reads.
        let Ok(buf) = host::header_pairs(Map::RequestHeaders) else { return CONTINUE };
        action(s.core.on_request_headers(&mut s.host, HeaderPairs::new(&buf), end_of_stream))
    })
    .unwrap_or(CONTINUE)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(context_id: u32, body_size: usize, end_of_stream: bool) -> u32 {
    on_stream(context_id, |s| {
        s.host.body_size = body_size;
        action(s.core.on_request_body(&mut s.host, end_of_stream))
    })
    .unwrap_or(CONTINUE)
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context_id: u32, _headers: usize, end_of_stream: bool) -> u32 {
    on_stream(context_id, |s| action(s.core.on_response_headers(&mut s.host, end_of_stream))).unwrap_or(CONTINUE)
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(context_id: u32, _trailers: usize) -> u32 {
    on_stream(context_id, |s| action(s.core.on_response_trailers(&mut s.host))).unwrap_or(CONTINUE)
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(root_context_id: u32, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
    let caller = CONTEXTS.with(|c| c.try_borrow_mut().ok().and_then(|mut c| c.callouts.remove(&token)));
    if let Some(context_id) = caller {
        // The stream may be gone by now: its answer is dropped then.
        on_stream(context_id, |s| {
            // Host calls in this callback (continuing the request) address the stream.
            let _ = host::set_effective_context(context_id);
            let HttpStream { core, host } = s;
            with_callout_reply(body_size, |reply| core.on_callout_reply(host, token, reply));
        });
    } else if let Some(w) = worker_of(root_context_id) {
        with_callout_reply(body_size, |reply| {
            w.on_callout_reply(token, reply);
        });
    }
}

// `proxy_on_log` and `proxy_on_done` are not exported: each export Envoy finds is a call
// into the VM per stream, and the stream's end is recorded when its context is deleted.

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    // The stream is over (completed, reset or cancelled): its outcome is recorded once.
    let removed = CONTEXTS.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else { return None };
        c.roots.remove(&context_id);
        c.streams.remove(&context_id)
    });
    if let Some(stream) = removed {
        if let Ok(mut s) = stream.try_borrow_mut() {
            s.core.on_complete();
            if s.host.called_out {
                // Envoy cancels a deleted context's calls: their answers never come.
                CONTEXTS.with(|c| {
                    if let Ok(mut c) = c.try_borrow_mut() {
                        c.callouts.retain(|_, owner| *owner != context_id);
                    }
                });
            }
        }
    }
}
