//! Switchyard as a proxy-wasm module: what Istio's `WasmPlugin` (or Envoy's
//! `envoy.filters.http.wasm`) loads. Sandboxed, portable across Envoy versions, and
//! costlier than the native module (`filter/native`): see the README for when to pick which.
//!
//! Deliberately thin, and without the proxy-wasm SDK (its dispatcher panics on anything
//! unexpected, and a panic traps the VM): [`host`] declares the host calls the filter makes
//! against the ABI (proxy-wasm 0.2.1), each returning a `Result`; `shell` exports the
//! ABI's callbacks, keeps the table of contexts, implements the core's `Host` and
//! `StreamHost` over the host calls and forwards each callback to the core's `Worker` and
//! `Stream`. Every decision lives in `switchyard-filter-core`, tested natively. Natively
//! this crate is empty.
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

#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod shell;
