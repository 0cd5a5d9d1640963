//! Switchyard's decision core: everything the Envoy filter decides, in plain Rust.
//!
//! Two host crates run it inside Envoy: `filter/wasm` (proxy-wasm, what Istio's
//! `WasmPlugin` loads) and `filter/native` (an Envoy dynamic module). They implement
//! [`host::Host`] and [`host::StreamHost`] and forward Envoy's callbacks to a
//! [`worker::Worker`] and its [`stream::Stream`]s; nothing that decides lives in them.
//!
//! The layers, from the request inwards:
//!
//! * [`stream`]: one HTTP stream: reads the request once, applies the verdict, observes
//!   the response and validates the body when asked;
//! * [`worker`]: one configuration on one worker and its tick: health merged with the
//!   other workers, stats handed to the host, the sidecar's snapshot ([`poller`]);
//! * [`ledger`]: what the workers of a configuration agree on, per worker (proxy-wasm) or
//!   once per process (the native module);
//! * [`route`]: the decision, step by step (access, route, A/B, schema, health, budget,
//!   concurrency, faults), pure;
//! * [`config`] (the plugin configuration, validated once at load), [`pattern`] (method
//!   patterns), [`bucket`] (sticky weighted bucketing), [`request`] (the request metadata),
//!   [`budget`] (`grpc-timeout`), [`snapshot`] (compatibility lookups), [`latency`],
//!   [`health`] (the degradation state machine), [`inflight`], [`stats`], [`grpc`].
//!
//! The filter must never panic: in Wasm a panic traps the VM and fails the listener's
//! traffic, in the native module it would take down Envoy. Clippy denies the usual
//! sources of panics outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub(crate) mod bucket;
pub(crate) mod budget;
pub mod config;
pub(crate) mod grpc;
pub(crate) mod health;
pub mod host;
pub(crate) mod inflight;
pub(crate) mod latency;
pub mod ledger;
pub(crate) mod pattern;
pub(crate) mod poller;
pub mod request;
pub(crate) mod rng;
pub(crate) mod route;
pub(crate) mod snapshot;
pub mod stats;
pub mod stream;
pub mod worker;

pub use route::{Reason, ReplyKind};

/// A host in plain memory: the unit tests' and the fuzz targets' (feature `testing`).
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
#[allow(clippy::indexing_slicing, clippy::panic, clippy::unwrap_used, clippy::expect_used)]
pub mod testing;
