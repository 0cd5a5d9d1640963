//! Switchyard's Envoy filter.
//!
//! The crate is split the way a reader of a proxy expects:
//!
//! * plain-Rust decision logic that builds and tests natively, with no proxy-wasm types:
//!   [`config`] (the plugin configuration, validated once at load), [`pattern`] (gRPC
//!   method patterns), [`bucket`] (sticky weighted bucketing), [`request`] (the request
//!   metadata the filter reads), [`route`] (the routing decision), [`grpc`] (status codes
//!   and wire details) and [`stats`] (counters, batched per worker);
//! * `glue`, only in the Wasm build: the thin proxy-wasm host layer that feeds Envoy's
//!   callbacks into that logic and applies its verdicts.
//!
//! The filter must never panic: a panic traps the Wasm VM and fails every request on
//! the listener. Clippy denies the usual sources of panics outside tests.
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

pub mod bucket;
pub mod budget;
pub mod config;
pub mod grpc;
pub mod health;
pub mod inflight;
pub mod latency;
pub mod pattern;
pub mod request;
pub mod rng;
pub mod route;
pub mod snapshot;
pub mod stats;

#[cfg(target_arch = "wasm32")]
mod glue;
