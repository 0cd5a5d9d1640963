//! Builds the console's rehearsal engine for the browser and embeds it: the `console`
//! crate for wasm32-unknown-unknown (its own target directory, `target/console`), bound
//! by `wasm-bindgen --target web`. The page's assets come from `console/assets`.
//!
//! Needs the wasm32-unknown-unknown target and `wasm-bindgen-cli` at the `wasm-bindgen`
//! crate's exact version; `cargo xtask setup` installs both.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("workspace root").to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("console");
    for dir in ["console/src", "console/assets", "console/Cargo.toml", "rehearse/src", "filter/core/src", "api/src", "schema/src", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=SWITCHYARD_WASM_BINDGEN");

    let target_dir = root.join("target/console");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&root)
        .args(["build", "--locked", "--release", "--package", "switchyard-console", "--target", "wasm32-unknown-unknown", "--target-dir"])
        .arg(&target_dir);
    // The outer build's settings are for the host, not for this wasm build.
    for var in ["CARGO_TARGET_DIR", "CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET", "RUSTC_WORKSPACE_WRAPPER", "CARGO_PRIMARY_PACKAGE"] {
        build.env_remove(var);
    }
    run(&mut build, "building the console's engine for wasm32-unknown-unknown (`rustup target add wasm32-unknown-unknown`, or `cargo xtask setup`)");

    let wasm = target_dir.join("wasm32-unknown-unknown/release/switchyard_console.wasm");
    std::fs::create_dir_all(&out).expect("OUT_DIR/console");
    let bindgen = std::env::var("SWITCHYARD_WASM_BINDGEN").map(PathBuf::from).unwrap_or_else(|_| wasm_bindgen());
    let mut bind = Command::new(&bindgen);
    bind.args(["--target", "web", "--no-typescript", "--out-dir"]).arg(&out).arg(&wasm);
    run(&mut bind, "running wasm-bindgen 0.2.130 (`cargo install wasm-bindgen-cli --version =0.2.130`, or `cargo xtask setup`)");
}

/// `wasm-bindgen` from PATH, else where `cargo install` puts it.
fn wasm_bindgen() -> PathBuf {
    let home = std::env::var("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|_| {
        Path::new(&std::env::var("HOME").unwrap_or_default()).join(".cargo")
    });
    let installed = home.join("bin/wasm-bindgen");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("wasm-bindgen")
    }
}

fn run(cmd: &mut Command, what: &str) {
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{what}: {cmd:?} failed ({s})"),
        Err(e) => panic!("{what}: cannot run {cmd:?}: {e}"),
    }
}
