//! `cargo xtask demo`: set up, build, then run the demo stack (`tests/src/bin/demo.rs`):
//! the sidecar with three model versions and a schema registry, Envoy with the filter,
//! sample requests and a canary rehearsal; then it keeps running until Ctrl-C.

use crate::{paths, run, setup};
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Print the sample requests, then stop the stack and exit (used by CI).
    #[arg(long)]
    exit: bool,
}

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    let wasm = setup::build_wasm()?;
    run::status(run::cargo().current_dir(paths::root()).args(["build", "--locked", "--package", "switchyard-sidecar", "--bin", "switchyard-sidecar"]))?;
    let mut cmd = run::cargo();
    cmd.current_dir(paths::root())
        .args(["run", "--quiet", "--package", "switchyard-tests", "--bin", "switchyard-demo", "--"])
        .env("SWITCHYARD_WASM", &wasm)
        .env("SWITCHYARD_ENVOY", paths::envoy())
        .env("SWITCHYARD_SIDECAR", paths::root().join("target/debug/switchyard-sidecar"));
    if args.exit {
        cmd.arg("--exit");
    }
    run::status(&mut cmd)
}
