//! A host in plain memory, for testing the worker and stream logic natively: what the
//! proxy-wasm and native hosts do with Envoy, this does with maps and vectors.

use crate::host::*;
use crate::request::serialize_pairs;
use crate::request::HeaderPairs;
use crate::stream::Stream;
use crate::worker::Worker;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

/// Shared state of every [`TestHost`] cloned from one: the "workers" of one proxy.
#[derive(Default)]
pub struct Proxy {
    pub shared: RefCell<BTreeMap<String, Shared>>,
    pub clock_ns: Cell<u64>,
}

#[derive(Default)]
pub struct TestHost {
    pub proxy: Rc<Proxy>,
    pub logs: RefCell<Vec<(Level, String)>>,
    pub metrics: RefCell<Vec<(MetricKind, String, u64)>>,
    pub callouts: RefCell<Vec<String>>,
    pub resumed: RefCell<Vec<u64>>,
    pub tick_ms: Cell<u32>,
    /// Whether streams can route by filter state (as the native module's can).
    pub filter_state_routing: bool,
}

impl TestHost {
    pub fn on(proxy: &Rc<Proxy>) -> Self {
        Self { proxy: proxy.clone(), ..Self::default() }
    }

    pub fn advance_ms(&self, ms: u64) {
        self.proxy.clock_ns.set(self.proxy.clock_ns.get() + ms * 1_000_000);
    }

    pub fn metric(&self, name: &str) -> u64 {
        self.metrics.borrow().iter().find(|(_, n, _)| n == name).map_or(0, |m| m.2)
    }
}

impl Host for TestHost {
    fn now_ns(&self) -> u64 {
        self.proxy.clock_ns.get()
    }
    fn log_enabled(&self, _: Level) -> bool {
        true
    }
    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<MetricHandle> {
        let mut m = self.metrics.borrow_mut();
        m.push((kind, name.to_owned(), 0));
        Some(MetricHandle(m.len() as u64 - 1))
    }
    fn increment(&self, counter: MetricHandle, by: u64) {
        self.metrics.borrow_mut()[counter.0 as usize].2 += by;
    }
    fn set_gauge(&self, gauge: MetricHandle, value: u64) {
        self.metrics.borrow_mut()[gauge.0 as usize].2 = value;
    }
    fn record(&self, histogram: MetricHandle, value: u64) {
        self.metrics.borrow_mut()[histogram.0 as usize].2 = value;
    }
    fn shared_get(&self, key: &str) -> Option<Shared> {
        Some(self.proxy.shared.borrow().get(key).cloned().unwrap_or_default())
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: u32) -> Written {
        let mut shared = self.proxy.shared.borrow_mut();
        let slot = shared.entry(key.to_owned()).or_default();
        if cas != 0 && cas != slot.cas {
            return Written::Conflict;
        }
        slot.value = Some(value.to_vec());
        slot.cas += 1;
        Written::Yes
    }
    fn callout(&self, call: &Callout<'_>) -> Option<CalloutToken> {
        let mut c = self.callouts.borrow_mut();
        c.push(format!("{} {} {}", call.method, call.cluster, call.path));
        Some(c.len() as u32)
    }
    fn set_tick_period_ms(&self, ms: u32) {
        self.tick_ms.set(ms);
    }
    fn resume_stream(&self, stream: u64) {
        self.resumed.borrow_mut().push(stream);
    }
    fn routes_by_filter_state(&self) -> bool {
        self.filter_state_routing
    }
}

/// A local reply as sent: HTTP status, details, and `(grpc-status, grpc-message)`.
pub type SentReply = (u32, String, Option<(u32, String)>);

/// One stream's side of the host: what the core did to it.
#[derive(Default)]
pub struct TestStream {
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub response_trailers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub reply: Option<SentReply>,
    pub filter_state: Vec<(String, String)>,
    pub callouts: Vec<String>,
    pub resumed: bool,
    /// Delays this stream's host times itself (as the native module does), if it does.
    pub timers: Option<Vec<u32>>,
    /// Route refreshes asked for, in order.
    pub refreshes: Vec<RouteRefresh>,
    /// The cluster put into filter state, by key.
    pub routing_state: Option<(String, String)>,
    /// The body size the host announces, and how often the core asked for it.
    pub body_size: usize,
    pub body_size_reads: usize,
}

impl TestStream {
    pub fn request(headers: &[(&str, &str)]) -> Self {
        Self { request_headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(), ..Self::default() }
    }

    /// Runs the request-body callback with `size` bytes buffered.
    pub fn send_body(&mut self, stream: &mut Stream<TestHost>, size: usize, end_of_stream: bool) -> Flow {
        self.body_size = size;
        stream.on_request_body(self, end_of_stream)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.request_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Runs the request-headers callback the way both hosts do: one read of all headers.
    pub fn send_headers(&mut self, stream: &mut Stream<TestHost>, end_of_stream: bool) -> Flow {
        let pairs: Vec<(&str, &str)> = self.request_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let buf = serialize_pairs(&pairs);
        stream.on_request_headers(self, HeaderPairs::new(&buf), end_of_stream)
    }
}

impl TestStream {
    /// Runs the request-headers callback on a header map exactly as given (the fuzz
    /// targets pass the host's serialised bytes through unchanged).
    pub fn send_headers_raw(&mut self, stream: &mut Stream<TestHost>, pairs: HeaderPairs<'_>) -> Flow {
        stream.on_request_headers(self, pairs, true)
    }
}

impl StreamHost for TestStream {
    fn set_request_header(&mut self, name: &str, value: &str) {
        self.request_headers.retain(|(n, _)| n != name);
        self.request_headers.push((name.into(), value.into()));
    }
    fn add_request_header(&mut self, name: &str, value: &str) {
        self.request_headers.push((name.into(), value.into()));
    }
    fn remove_request_header(&mut self, name: &str) {
        self.request_headers.retain(|(n, _)| n != name);
    }
    fn refresh_route(&mut self, what: RouteRefresh) {
        self.refreshes.push(what);
    }
    fn set_routing_state(&mut self, key: &str, cluster: &str) {
        self.routing_state = Some((key.into(), cluster.into()));
    }
    fn request_body_size(&mut self) -> usize {
        self.body_size_reads += 1;
        self.body_size
    }
    fn add_response_header(&mut self, name: &str, value: &str) {
        self.response_headers.push((name.into(), value.into()));
    }
    fn response_value(&mut self, map: ResponseMap, name: &str, f: &mut dyn FnMut(&[u8])) {
        let m = match map {
            ResponseMap::Headers => &self.response_headers,
            ResponseMap::Trailers => &self.response_trailers,
        };
        if let Some((_, v)) = m.iter().find(|(n, _)| n == name) {
            f(v.as_bytes());
        }
    }
    fn request_body(&mut self, size: usize, f: &mut dyn FnMut(&[u8])) {
        f(&self.body[..size.min(self.body.len())]);
    }
    fn send_reply(&mut self, r: &LocalReply<'_>) {
        self.reply = Some((r.http_status, r.details.to_owned(), r.grpc.map(|(c, m)| (c, m.to_owned()))));
    }
    fn set_filter_state(&mut self, key: &str, value: &[u8]) {
        self.filter_state.push((key.into(), String::from_utf8_lossy(value).into_owned()));
    }
    fn callout(&mut self, call: &Callout<'_>) -> Option<CalloutToken> {
        self.callouts.push(format!("{} {} {}", call.method, call.cluster, call.path));
        Some(100 + self.callouts.len() as u32)
    }
    fn resume_request(&mut self) {
        self.resumed = true;
    }
    fn resume_after(&mut self, ms: u32) -> bool {
        self.timers.as_mut().map(|t| t.push(ms)).is_some()
    }
}

/// A worker on `proxy` with configuration `json`, sharing its ledger through `board` (the
/// native module's way); `ticks` makes it the one that merges and polls.
pub fn board_worker(proxy: &Rc<Proxy>, json: &str, seed: u64, board: &std::sync::Arc<crate::ledger::Board>, ticks: bool) -> Rc<Worker<TestHost>> {
    let sharing = crate::ledger::Sharing::Board { board: board.clone(), ticks };
    // Like the native module, whose workers share a board.
    let host = TestHost { filter_state_routing: true, ..TestHost::on(proxy) };
    match Worker::configure_with(host, json.as_bytes(), seed, sharing) {
        Ok(w) => Rc::new(w),
        Err(e) => panic!("{e}"),
    }
}

/// The board for configuration `json`.
pub fn board(json: &str) -> std::sync::Arc<crate::ledger::Board> {
    match crate::config::Config::from_json(json.as_bytes()) {
        Ok(c) => crate::ledger::Board::new(&c),
        Err(e) => panic!("{e}"),
    }
}

/// A worker on `proxy` with configuration `json`.
pub fn worker(proxy: &Rc<Proxy>, json: &str, seed: u64) -> Rc<Worker<TestHost>> {
    match Worker::configure(TestHost::on(proxy), json.as_bytes(), seed) {
        Ok(w) => Rc::new(w),
        Err(e) => panic!("{e}"),
    }
}
