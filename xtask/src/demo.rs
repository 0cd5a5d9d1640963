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
    /// Which build of the filter Envoy loads: `wasm` (what Istio's WasmPlugin loads) or
    /// `native` (the dynamic module, `envoy/envoy-native.yaml`).
    #[arg(long, value_enum, default_value_t = Filter::Wasm)]
    filter: Filter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Filter {
    Wasm,
    Native,
}

impl Filter {
    pub fn name(self) -> &'static str {
        match self {
            Filter::Wasm => "wasm",
            Filter::Native => "native",
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    let wasm = setup::build_wasm()?;
    let native = setup::build_native()?;
    run::status(run::cargo().current_dir(paths::root()).args(["build", "--locked", "--package", "switchyard-sidecar", "--bin", "switchyard-sidecar"]))?;
    let mut cmd = demo_command(args.filter, &wasm, &native);
    cmd.arg("--").arg("--filter").arg(args.filter.name());
    if args.exit {
        cmd.arg("--exit");
    }
    run::status(&mut cmd)
}

/// `cargo run` of the demo binary with the parts it needs found by path.
fn demo_command(filter: Filter, wasm: &std::path::Path, native: &std::path::Path) -> std::process::Command {
    let mut cmd = run::cargo();
    cmd.current_dir(paths::root())
        .args(["run", "--quiet", "--locked", "--package", "switchyard-tests", "--bin", "switchyard-demo"])
        .env("SWITCHYARD_FILTER", filter.name())
        .env("SWITCHYARD_WASM", wasm)
        .env("SWITCHYARD_NATIVE", native)
        .env("SWITCHYARD_ENVOY", paths::envoy())
        .env("SWITCHYARD_SIDECAR", paths::root().join("target/debug/switchyard-sidecar"));
    cmd
}
