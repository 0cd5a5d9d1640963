//! Where the parts the tests run are, inside the checkout.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().map_or_else(|| here.to_path_buf(), Path::to_path_buf)
}

/// `var/`: what `cargo xtask setup` prepares (model repository, test data).
pub fn var() -> PathBuf {
    root().join("var")
}

/// `$var` if set, else `default`; panics naming `what` when neither exists.
pub fn required(var: &str, default: PathBuf, what: &str) -> PathBuf {
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
