//! `cargo xtask soak [--minutes N] [--filter wasm|native]`: set up, build, then run the churn
//! soak (`tests/src/bin/soak.rs`), writing `target/soak/report.json` and `target/soak/soak.svg`.

use crate::demo::Filter;
use crate::{paths, run, setup};
use anyhow::Result;
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// Minutes of load.
    #[arg(long, default_value_t = 20.0)]
    minutes: f64,
    /// Which build of the filter Envoy loads.
    #[arg(long, value_enum, default_value_t = Filter::Wasm)]
    filter: Filter,
}

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    let wasm = setup::build_wasm()?;
    let native = setup::build_native()?;
    for (package, bin) in [("switchyard-sidecar", "switchyard-sidecar"), ("switchyard-tests", "switchyard-soak")] {
        run::status(run::cargo().current_dir(paths::root()).args(["build", "--locked", "--package", package, "--bin", bin]))?;
    }
    let mut cmd = Command::new(paths::root().join("target/debug/switchyard-soak"));
    cmd.current_dir(paths::root())
        .env("SWITCHYARD_WASM", &wasm)
        .env("SWITCHYARD_NATIVE", &native)
        .env("SWITCHYARD_ENVOY", paths::envoy())
        .env("SWITCHYARD_SIDECAR", paths::root().join("target/debug/switchyard-sidecar"))
        .args(["--minutes", &args.minutes.to_string(), "--filter", args.filter.name()])
        .args(["--out", "target/soak"]);
    run::status(&mut cmd)
}
