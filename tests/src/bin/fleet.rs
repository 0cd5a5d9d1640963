//! `cargo xtask fleet`: N hosts on real network namespaces, the fleet scenario, and its
//! report (`target/fleet/report.json`). See `testbed::fleet`.

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use testbed::envoy::Build;
use testbed::fleet::{scenario, Fleet};

#[derive(Parser)]
#[command(name = "switchyard-fleet", about = "Run Switchyard on N hosts (network namespaces) behind a front Envoy, measure, report")]
struct Args {
    /// Hosts, each with its own Envoy + filter + sidecar (three model versions).
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// Which build of the filter the hosts' Envoys load.
    #[arg(long, default_value = "wasm", value_parser = ["wasm", "native"])]
    filter: String,
    /// Requests per second through the front, all hosts together.
    #[arg(long, default_value_t = scenario::Options::default().rps)]
    rps: u32,
    /// Where the report goes.
    #[arg(long, default_value = "target/fleet/report.json")]
    out: PathBuf,
    /// Leave the fleet running after the report, until Ctrl-C.
    #[arg(long)]
    keep: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The testbed reads the build from SWITCHYARD_FILTER (set before any thread exists).
    std::env::set_var("SWITCHYARD_FILTER", &args.filter);
    tokio::runtime::Runtime::new()?.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    eprintln!("fleet: starting {} hosts ({} filter), a front Envoy and a load generator", args.hosts, args.filter);
    let mut fleet = Fleet::start(args.hosts, Build::current()).await?;
    eprint!("{}", fleet.describe());
    let options = scenario::Options { rps: args.rps, ..Default::default() };
    let report = scenario::run(&mut fleet, &options).await?;
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?).with_context(|| format!("write {}", args.out.display()))?;
    println!("\n{}", report.table_markdown());
    println!("{}", report.summary());
    println!("report: {}", args.out.display());
    if args.keep {
        println!("\nThe fleet keeps running (Ctrl-C to stop):\n{}", fleet.describe());
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}
