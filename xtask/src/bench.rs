//! `cargo xtask bench <name>`: benchmarks that report ratios against a baseline measured
//! in the same invocation (machines are shared and noisy; absolute figures are context).

use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Which benchmark to run.
    name: String,
}

pub fn run(args: Args) -> Result<()> {
    bail!("unknown benchmark `{}`", args.name)
}
