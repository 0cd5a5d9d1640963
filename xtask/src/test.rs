//! `cargo xtask test`: every check CI runs, in order of cost: set-up, the Wasm build,
//! clippy on the filter (native and Wasm), the workspace tests (which include the
//! end-to-end tests against a real Envoy and the real sidecar), then the demo run once.

use crate::{paths, run, setup};
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Arguments passed on to `cargo test` after `--` (for example a test-name filter).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    let wasm = setup::build_wasm()?;
    clippy_filter()?;
    // The end-to-end tests start the real sidecar binary.
    run::status(run::cargo().current_dir(paths::root()).args(["build", "--locked", "--package", "switchyard-sidecar", "--bin", "switchyard-sidecar"]))?;
    let mut cmd = run::cargo();
    cmd.current_dir(paths::root())
        .args(["test", "--workspace", "--locked"])
        .env("SWITCHYARD_WASM", &wasm)
        .env("SWITCHYARD_ENVOY", paths::envoy())
        .env("SWITCHYARD_SIDECAR", paths::root().join("target/debug/switchyard-sidecar"));
    if !args.rest.is_empty() {
        cmd.arg("--").args(&args.rest);
    }
    run::status(&mut cmd)?;
    if args.rest.is_empty() {
        // The README's other command, end to end: the demo stack with its samples and
        // canary rehearsal (it fails if a request fails).
        run::status(
            run::cargo()
                .current_dir(paths::root())
                .args(["run", "--quiet", "--locked", "--package", "switchyard-tests", "--bin", "switchyard-demo", "--", "--exit"])
                .env("SWITCHYARD_WASM", &wasm)
                .env("SWITCHYARD_ENVOY", paths::envoy())
                .env("SWITCHYARD_SIDECAR", paths::root().join("target/debug/switchyard-sidecar")),
        )?;
    }
    eprintln!("test: all passed");
    Ok(())
}

/// The filter denies `unwrap`, `expect`, `panic` and indexing (see `filter/src/lib.rs`);
/// clippy enforces it on both the native build (unit tests) and the Wasm build.
fn clippy_filter() -> Result<()> {
    for target in [None, Some("wasm32-wasip1")] {
        let mut cmd = run::cargo();
        cmd.current_dir(paths::root())
            .args(["clippy", "--package", "switchyard-filter", "--locked"]);
        if let Some(t) = target {
            cmd.args(["--target", t]);
        } else {
            cmd.arg("--all-targets");
        }
        cmd.args(["--", "-D", "warnings"]);
        run::status(&mut cmd)?;
    }
    Ok(())
}
