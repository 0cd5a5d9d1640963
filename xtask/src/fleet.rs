//! `cargo xtask fleet`: set up, build, then run N hosts on network namespaces (as root) with
//! the fleet scenario (`tests/src/bin/fleet.rs`), writing `target/fleet/report.json`.

use crate::demo::Filter;
use crate::{paths, run, setup};
use anyhow::Result;
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// Hosts, each a network namespace with its own Envoy + filter + sidecar.
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// Which build of the filter the hosts load.
    #[arg(long, value_enum, default_value_t = Filter::Wasm)]
    filter: Filter,
    /// Requests per second through the front Envoy, all hosts together (default 30).
    #[arg(long)]
    rps: Option<u32>,
    /// Leave the fleet running after the report, for a person to explore, until Ctrl-C.
    #[arg(long)]
    keep: bool,
}

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    let wasm = setup::build_wasm()?;
    let native = setup::build_native()?;
    for (package, bin) in [("switchyard-sidecar", "switchyard-sidecar"), ("switchyard-tests", "switchyard-fleet")] {
        run::status(run::cargo().current_dir(paths::root()).args(["build", "--locked", "--package", package, "--bin", bin]))?;
    }
    let mut cmd = Command::new(paths::root().join("target/debug/switchyard-fleet"));
    cmd.current_dir(paths::root())
        .env("SWITCHYARD_WASM", &wasm)
        .env("SWITCHYARD_NATIVE", &native)
        .env("SWITCHYARD_ENVOY", paths::envoy())
        .env("SWITCHYARD_SIDECAR", paths::root().join("target/debug/switchyard-sidecar"))
        .args(["--hosts", &args.hosts.to_string(), "--filter", args.filter.name()])
        .args(["--out", "target/fleet/report.json"]);
    if let Some(rps) = args.rps {
        cmd.args(["--rps", &rps.to_string()]);
    }
    if args.keep {
        cmd.arg("--keep");
    }
    run::status(&mut cmd)
}
