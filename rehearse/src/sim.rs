//! The simulated proxy: the core's [`Host`] and [`StreamHost`] over a virtual clock and
//! plain memory. What the Wasm and native hosts do with Envoy, this does with cells and
//! vectors, cheaply enough for millions of requests.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use switchyard_filter_core::host::{
    Callout, CalloutToken, HealthChange, Host, Level, LocalReply, MetricHandle, MetricKind, ResponseMap, RouteRefresh, Shared, StreamHost,
    Written,
};
use switchyard_filter_core::{Reason, ReplyKind};

/// What every simulated host shares: the clock, and what the hosts hand to the engine.
#[derive(Default)]
pub(crate) struct World {
    pub(crate) now_ns: Cell<u64>,
    pub(crate) inbox: RefCell<Inbox>,
}

/// Things the core asked of its hosts that the engine acts on after each call.
#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) health: Vec<Change>,
    /// Streams a worker resumed from its tick: `(envoy, stream id)`.
    pub(crate) resumed: Vec<(u16, u64)>,
    /// Callouts started: `(envoy, worker, token)`.
    pub(crate) callouts: Vec<(u16, u16, CalloutToken)>,
    /// Warnings and errors the core logged, with their time.
    pub(crate) logs: Vec<(u64, u16, String)>,
}

impl Inbox {
    pub(crate) fn is_empty(&self) -> bool {
        self.health.is_empty() && self.resumed.is_empty() && self.callouts.is_empty() && self.logs.is_empty()
    }
}

/// A health change as the engine keeps it.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub(crate) at_ns: u64,
    pub(crate) envoy: u16,
    pub(crate) route: usize,
    pub(crate) target: usize,
    pub(crate) from: &'static str,
    pub(crate) to: &'static str,
    pub(crate) rule: &'static str,
    pub(crate) why: String,
}

/// One worker of one simulated Envoy.
pub(crate) struct SimHost {
    pub(crate) world: Rc<World>,
    /// Envoy's shared data, common to the workers of one Envoy.
    pub(crate) shared: Rc<RefCell<HashMap<String, Shared>>>,
    pub(crate) envoy: u16,
    pub(crate) worker: u16,
    next_token: Cell<CalloutToken>,
    pub(crate) tick_ms: Cell<u32>,
}

impl SimHost {
    pub(crate) fn new(world: &Rc<World>, shared: &Rc<RefCell<HashMap<String, Shared>>>, envoy: u16, worker: u16) -> Self {
        SimHost { world: world.clone(), shared: shared.clone(), envoy, worker, next_token: Cell::new(1), tick_ms: Cell::new(0) }
    }
}

impl Host for SimHost {
    fn now_ns(&self) -> u64 {
        self.world.now_ns.get()
    }
    fn log_enabled(&self, level: Level) -> bool {
        level >= Level::Warn
    }
    fn log(&self, level: Level, message: &str) {
        if level >= Level::Warn {
            self.world.inbox.borrow_mut().logs.push((self.now_ns(), self.envoy, message.to_owned()));
        }
    }
    // Stats are Envoy's business; the rehearsal counts what it needs itself.
    fn define_metric(&self, _: MetricKind, _: &str) -> Option<MetricHandle> {
        Some(MetricHandle(0))
    }
    fn increment(&self, _: MetricHandle, _: u64) {}
    fn set_gauge(&self, _: MetricHandle, _: u64) {}
    fn record(&self, _: MetricHandle, _: u64) {}
    fn shared_get(&self, key: &str) -> Option<Shared> {
        Some(self.shared.borrow().get(key).cloned().unwrap_or_default())
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: u32) -> Written {
        let mut shared = self.shared.borrow_mut();
        let slot = shared.entry(key.to_owned()).or_default();
        if cas != 0 && cas != slot.cas {
            return Written::Conflict;
        }
        slot.value = Some(value.to_vec());
        slot.cas = slot.cas.wrapping_add(1).max(1);
        Written::Yes
    }
    fn callout(&self, _: &Callout<'_>) -> Option<CalloutToken> {
        let token = self.next_token.get();
        self.next_token.set(token.wrapping_add(1).max(1));
        self.world.inbox.borrow_mut().callouts.push((self.envoy, self.worker, token));
        Some(token)
    }
    fn set_tick_period_ms(&self, ms: u32) {
        self.tick_ms.set(ms);
    }
    fn resume_stream(&self, stream: u64) {
        self.world.inbox.borrow_mut().resumed.push((self.envoy, stream));
    }
    fn health_changed(&self, c: &HealthChange<'_>) {
        self.world.inbox.borrow_mut().health.push(Change {
            at_ns: self.now_ns(),
            envoy: self.envoy,
            route: c.route,
            target: c.target,
            from: c.from,
            to: c.to,
            rule: c.rule,
            why: c.why.to_owned(),
        });
    }
}

/// A cluster name and the `(route, target)` it belongs to.
pub(crate) struct ClusterEntry {
    pub(crate) cluster: String,
    pub(crate) route: u8,
    pub(crate) target: u8,
}

/// One stream during one callback: records what the core did to it.
pub(crate) struct SimStream<'a> {
    clusters: &'a [ClusterEntry],
    cluster_header: &'a str,
    /// The core's own timers for injected delays (the native module has them).
    host_timers: bool,
    /// `grpc-status` the upstream answered, for the core to read.
    pub(crate) status: Option<u32>,
    pub(crate) routed: Option<(u8, u8)>,
    pub(crate) reason: Option<Reason>,
    pub(crate) reply: Option<(ReplyKind, u32)>,
    pub(crate) resumed: bool,
    pub(crate) timer_ms: Option<u32>,
}

impl<'a> SimStream<'a> {
    pub(crate) fn new(clusters: &'a [ClusterEntry], cluster_header: &'a str, host_timers: bool) -> Self {
        SimStream { clusters, cluster_header, host_timers, status: None, routed: None, reason: None, reply: None, resumed: false, timer_ms: None }
    }
}

impl StreamHost for SimStream<'_> {
    fn set_request_header(&mut self, name: &str, value: &str) {
        if name == self.cluster_header {
            self.routed = self.clusters.iter().find(|c| c.cluster == value).map(|c| (c.route, c.target));
        }
    }
    fn remove_request_header(&mut self, _: &str) {}
    fn refresh_route(&mut self, _: RouteRefresh) {}
    fn request_body_size(&mut self) -> usize {
        0
    }
    fn add_response_header(&mut self, _: &str, _: &str) {}
    fn response_value(&mut self, map: ResponseMap, name: &str, f: &mut dyn FnMut(&[u8])) {
        if name != "grpc-status" {
            return;
        }
        if let (Some(status), ResponseMap::Headers | ResponseMap::Trailers) = (self.status, map) {
            f(Digits::of(status).as_bytes());
        }
    }
    fn request_body(&mut self, _: usize, _: &mut dyn FnMut(&[u8])) {}
    fn send_reply(&mut self, reply: &LocalReply<'_>) {
        let kind = ReplyKind::ALL.iter().copied().find(|k| k.as_str() == reply.details);
        if let Some(kind) = kind {
            self.reply = Some((kind, reply.grpc.map_or(2, |(code, _)| code)));
        }
    }
    fn set_filter_state(&mut self, _: &str, value: &[u8]) {
        // `target=<name>; reason=<reason>`: the decision's reason, for the report. The
        // reason is last, after the last `=`.
        let why = value.rsplit(|&b| b == b'=').next().unwrap_or_default();
        self.reason = Reason::ALL.iter().copied().find(|r| r.as_str().as_bytes() == why);
    }
    fn callout(&mut self, _: &Callout<'_>) -> Option<CalloutToken> {
        // Payload validation needs payloads; the rehearsal has none (see the README).
        None
    }
    fn resume_request(&mut self) {
        self.resumed = true;
    }
    fn resume_after(&mut self, ms: u32) -> bool {
        if self.host_timers {
            self.timer_ms = Some(ms);
        }
        self.host_timers
    }
}

/// A number as decimal digits without allocating (a status, a user's number).
pub(crate) struct Digits {
    buf: [u8; 10],
    start: usize,
}

impl Digits {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    pub(crate) fn of(mut n: u32) -> Digits {
        let mut buf = [0u8; 10];
        let mut i = buf.len();
        loop {
            i -= 1;
            if let Some(b) = buf.get_mut(i) {
                *b = b'0' + (n % 10) as u8;
            }
            n /= 10;
            if n == 0 || i == 0 {
                break;
            }
        }
        Digits { buf, start: i }
    }
}
