//! `cargo xtask demo`: set up, build, then run the demo stack (`tests/src/bin/demo.rs`)
//! until Ctrl-C.

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
    let mut cmd = run::cargo();
    cmd.current_dir(paths::root())
        .args(["run", "--quiet", "--package", "switchyard-tests", "--bin", "switchyard-demo", "--"])
        .env("SWITCHYARD_WASM", &wasm)
        .env("SWITCHYARD_ENVOY", paths::envoy());
    if args.exit {
        cmd.arg("--exit");
    }
    run::status(&mut cmd)
}
