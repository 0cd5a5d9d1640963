//! What the core needs from the proxy it runs in, as two traits the host crates implement.
//!
//! * [`Host`]: one worker's view of the proxy: clock, logs, stats, state shared by every
//!   worker, callouts to a cluster, the tick, and resuming a paused stream;
//! * [`StreamHost`]: one HTTP stream: its headers, body, local reply and filter state.
//!
//! The proxy-wasm build implements them over the proxy-wasm ABI, the native build over
//! Envoy's dynamic-modules ABI, and the unit tests over plain memory ([`crate::testing`]).
//! Every method is infallible from the core's point of view: a host call that fails is
//! reported as absence (`None`, `false`), never as a panic.

pub use crate::config::RouteRefresh;

/// Log levels, numbered as Envoy numbers them (both ABIs use these numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// A host's handle of a defined metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricHandle(pub u64);

/// Outcome of a compare-and-swap write to shared state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Yes,
    /// Another worker wrote first: read again and retry.
    Conflict,
    /// The host refused the write.
    Failed,
}

/// A value in shared state and its version, for [`Host::shared_set`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shared {
    pub value: Option<Vec<u8>>,
    /// 0 when absent.
    pub cas: u32,
}

/// An HTTP call to a cluster.
#[derive(Clone, Copy, Debug)]
pub struct Callout<'a> {
    pub cluster: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    /// Further headers.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
    pub timeout_ms: u32,
}

/// The answer to a [`Callout`]: `status` is `None` when the cluster did not answer
/// (unreachable, reset, timed out).
#[derive(Clone, Copy, Debug)]
pub struct CalloutReply<'a> {
    pub status: Option<u32>,
    pub body: &'a [u8],
}

/// Identifies a callout in flight, as the host numbers them.
pub type CalloutToken = u32;

/// One worker's view of its proxy.
pub trait Host {
    /// Wall-clock time in nanoseconds since the Unix epoch (the same clock on every worker).
    fn now_ns(&self) -> u64;
    /// Whether a line at `level` would be logged, so dropped lines are never formatted.
    fn log_enabled(&self, level: Level) -> bool;
    fn log(&self, level: Level, message: &str);

    /// Defines a metric at configuration time; `None` if the host refused.
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<MetricHandle>;
    fn increment(&self, counter: MetricHandle, by: u64);
    fn set_gauge(&self, gauge: MetricHandle, value: u64);
    fn record(&self, histogram: MetricHandle, value: u64);

    /// State shared by every worker running this configuration.
    fn shared_get(&self, key: &str) -> Option<Shared>;
    /// Writes `value` if `key` still has version `cas` (0: unconditionally).
    fn shared_set(&self, key: &str, value: &[u8], cas: u32) -> Written;

    /// Starts an HTTP call whose reply comes back through the worker's callout hook.
    fn callout(&self, call: &Callout<'_>) -> Option<CalloutToken>;
    /// Asks for the worker's tick every `ms` milliseconds.
    fn set_tick_period_ms(&self, ms: u32);
    /// Resumes a stream this worker paused (after an injected delay). Quietly nothing if
    /// the stream is gone.
    fn resume_stream(&self, stream: u64);
    /// A target's health changed (already logged as a warning). For hosts that keep a
    /// record, such as the rehearsal's timeline; Envoy's hosts have the log line.
    fn health_changed(&self, _change: &HealthChange<'_>) {}
    /// Whether streams can carry the chosen cluster in filter state
    /// (`cluster_filter_state`); a configuration asking for it is refused otherwise.
    fn routes_by_filter_state(&self) -> bool {
        false
    }
}

/// A target's health state changed, reported once per merge that changed it.
#[derive(Clone, Copy, Debug)]
pub struct HealthChange<'a> {
    /// Index of the route in the configuration.
    pub route: usize,
    /// Index of the target in its route.
    pub target: usize,
    /// `healthy`, `degraded` or `probing`.
    pub from: &'static str,
    pub to: &'static str,
    /// The rule that fired: `slow_responses`, `error_rate`, `sidecar_unhealthy`,
    /// `probe_failed` (to degraded), `cooldown_over` (to probing), `probes_passed` (to
    /// healthy).
    pub rule: &'static str,
    /// The same, as the log line says it.
    pub why: &'a str,
}

/// Response header maps a stream reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseMap {
    Headers,
    Trailers,
}

/// A local reply: no upstream sees the request.
#[derive(Clone, Copy, Debug)]
pub struct LocalReply<'a> {
    pub http_status: u32,
    /// `%RESPONSE_CODE_DETAILS%` in access logs; no spaces.
    pub details: &'a str,
    /// `Some((grpc-status, grpc-message))` for a trailers-only gRPC answer.
    pub grpc: Option<(u32, &'a str)>,
    /// Body of a non-gRPC reply.
    pub body: &'a str,
}

/// One HTTP stream, as the host exposes it during a callback.
pub trait StreamHost {
    /// Sets a request header, replacing any value the client sent.
    fn set_request_header(&mut self, name: &str, value: &str);
    /// Adds a request header the request does not carry yet (cheaper than a replace).
    fn add_request_header(&mut self, name: &str, value: &str) {
        self.set_request_header(name, value);
    }
    fn remove_request_header(&mut self, name: &str);
    /// Has Envoy take up a changed routing header: match the route again, or only pick the
    /// matched route's cluster again. (proxy-wasm does the former by itself on any request
    /// header change.)
    fn refresh_route(&mut self, what: RouteRefresh);
    /// The size of the request body buffered so far, asked only when the body is read.
    fn request_body_size(&mut self) -> usize;
    fn add_response_header(&mut self, name: &str, value: &str);
    /// Hands `f` the first value of a response header or trailer, if present.
    fn response_value(&mut self, map: ResponseMap, name: &str, f: &mut dyn FnMut(&[u8]));
    /// The request body buffered so far (`size` bytes, as `request_body_size` said).
    fn request_body(&mut self, size: usize, f: &mut dyn FnMut(&[u8]));
    fn send_reply(&mut self, reply: &LocalReply<'_>);
    /// Filter state for access logs (`%FILTER_STATE(<host prefix>.<key>:PLAIN)%`).
    fn set_filter_state(&mut self, key: &str, value: &[u8]);
    /// Puts the chosen cluster into Envoy filter state under `key`, exactly (for a
    /// matcher route's `FilterStateInput`). Only asked of hosts that route by filter state.
    fn set_routing_state(&mut self, _key: &str, _cluster: &str) {}
    /// Starts an HTTP call whose reply comes back to this stream.
    fn callout(&mut self, call: &Callout<'_>) -> Option<CalloutToken>;
    /// Lets a request paused in one of this stream's own callbacks go on.
    fn resume_request(&mut self);
    /// Arranges for the host's own timer to report this stream's injected delay over
    /// after `ms` (through `Stream::on_delay_over`); `false` leaves the resume to the
    /// worker's ticks (finer ticks while something waits).
    fn resume_after(&mut self, _ms: u32) -> bool {
        false
    }
}

/// What a stream callback tells the host to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Hold the stream (a local reply was sent, or the core resumes it later).
    Pause,
}
