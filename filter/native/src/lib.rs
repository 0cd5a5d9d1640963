//! Switchyard as a native Envoy dynamic module: `libswitchyard.so`, loaded by
//! `envoy.filters.http.dynamic_modules` (Envoy 1.40, ABI v0.2.0) at close to built-in cost.
//!
//! The decision core is the same crate the proxy-wasm build runs; this crate only
//! translates:
//!
//! * [`abi`]: the C declarations of the callbacks this module calls, by hand;
//! * `hooks`: the exported event hooks, each inside `catch_unwind`: a panic here would
//!   take down Envoy, so a caught one is logged with the hook's name and the stream is
//!   answered per the configuration's `failure_policy`;
//! * `host`: the core's `Host` and `StreamHost` over the ABI. One core `Worker` per Envoy
//!   worker thread (as proxy-wasm has one VM per worker), plus one on the main thread that
//!   polls the sidecar; workers share health and the snapshot in process memory;
//! * `ticker`: one timer thread for injected delays and the main thread's tick.
//!
//! The `.so` is built for one Envoy minor version: the ABI has no hash check, so a
//! mismatched Envoy is undefined behaviour, not an error.
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

pub mod abi;
mod hooks;
mod host;
mod ticker;
