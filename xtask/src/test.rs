//! `cargo xtask test`: every check CI runs, in order of cost: set-up, the Wasm build,
//! clippy on the filter (native and Wasm), the workspace tests (which include the
//! end-to-end tests against a real Envoy and the real sidecar), then the demo run once.

use crate::demo::{demo_command, Filter};
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
    let native = setup::build_native()?;
    clippy_filter()?;
    // The end-to-end tests start the real sidecar binary.
    run::status(run::cargo().current_dir(paths::root()).args(["build", "--locked", "--package", "switchyard-sidecar", "--bin", "switchyard-sidecar"]))?;
    // Everything, with the end-to-end tests against the Wasm build; then the end-to-end
    // tests again, the same assertions, against the native module.
    for (filter, scope) in [(Filter::Wasm, &["--workspace"][..]), (Filter::Native, &["--package", "switchyard-tests"][..])] {
        eprintln!("test: end-to-end tests against the {} build", filter.name());
        let mut cmd = run::cargo();
        cmd.current_dir(paths::root())
            .arg("test")
            .args(scope)
            .arg("--locked")
            .env("SWITCHYARD_FILTER", filter.name())
            .env("SWITCHYARD_WASM", &wasm)
            .env("SWITCHYARD_NATIVE", &native)
            .env("SWITCHYARD_ENVOY", paths::envoy())
            .env("SWITCHYARD_SIDECAR", paths::root().join("target/debug/switchyard-sidecar"));
        if !args.rest.is_empty() {
            cmd.arg("--").args(&args.rest);
        }
        run::status(&mut cmd)?;
    }
    if args.rest.is_empty() {
        // The README's other command, end to end, with each build: the demo stack with its
        // samples and canary rehearsal (it fails if a request fails).
        for filter in [Filter::Wasm, Filter::Native] {
            let mut cmd = demo_command(filter, &wasm, &native);
            cmd.args(["--", "--filter", filter.name(), "--exit"]);
            run::status(&mut cmd)?;
        }
    }
    eprintln!("test: all passed");
    Ok(())
}

/// The filter denies `unwrap`, `expect`, `panic` and indexing (see `filter/core/src/lib.rs`);
/// clippy enforces it on the core natively (with its unit tests) and for Wasm, and on each
/// host crate for the target it is built for.
fn clippy_filter() -> Result<()> {
    let runs: [(&str, Option<&str>); 4] = [
        ("switchyard-filter-core", None),
        ("switchyard-filter-core", Some("wasm32-wasip1")),
        ("switchyard-filter-wasm", Some("wasm32-wasip1")),
        ("switchyard-filter-native", None),
    ];
    for (package, target) in runs {
        let mut cmd = run::cargo();
        cmd.current_dir(paths::root()).args(["clippy", "--package", package, "--locked"]);
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
