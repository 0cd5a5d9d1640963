//! `cargo xtask test`: every check CI runs, in order of cost: set-up, both builds of the
//! filter, clippy on the filter crates, the workspace tests (which include the end-to-end
//! tests against a real Envoy and the real sidecar, with the Wasm build), the end-to-end
//! tests again with the native build, then the demo once with each build.
//!
//! The second pass and the demos run the executables the workspace build made: a `cargo`
//! command on one package would resolve features differently and rebuild much of the tree
//! (measured: 7.5 minutes on two cores).

use crate::demo::Filter;
use crate::{paths, run, setup};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// Arguments passed on to the test binaries (for example a test-name filter).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

/// What the workspace's test build made that the later steps run.
struct Built {
    /// The end-to-end test executables (`tests/tests/*.rs`).
    end_to_end: Vec<PathBuf>,
    demo: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    let wasm = setup::build_wasm()?;
    let native = setup::build_native()?;
    clippy_filter()?;
    let env = |cmd: &mut Command, filter: Filter| {
        cmd.current_dir(paths::root())
            .env("SWITCHYARD_FILTER", filter.name())
            .env("SWITCHYARD_WASM", &wasm)
            .env("SWITCHYARD_NATIVE", &native)
            .env("SWITCHYARD_ENVOY", paths::envoy())
            // Built by the workspace's test build (the sidecar's own tests need it).
            .env("SWITCHYARD_SIDECAR", paths::root().join("target/debug/switchyard-sidecar"));
    };

    // Everything, with the end-to-end tests against the Wasm build.
    eprintln!("test: the workspace, end-to-end tests against the wasm build");
    let mut cmd = run::cargo();
    cmd.args(["test", "--workspace", "--locked"]);
    env(&mut cmd, Filter::Wasm);
    if !args.rest.is_empty() {
        cmd.arg("--").args(&args.rest);
    }
    run::status(&mut cmd)?;

    // The end-to-end tests again, the same assertions, against the native module.
    eprintln!("test: end-to-end tests against the native build");
    let built = built()?;
    for test in &built.end_to_end {
        let mut cmd = Command::new(test);
        env(&mut cmd, Filter::Native);
        cmd.args(&args.rest);
        run::status(&mut cmd)?;
    }

    if args.rest.is_empty() {
        // The README's other command, end to end, with each build: the demo stack with its
        // samples and canary rehearsal (it fails if a request fails).
        for filter in [Filter::Wasm, Filter::Native] {
            let mut cmd = Command::new(&built.demo);
            env(&mut cmd, filter);
            cmd.args(["--filter", filter.name(), "--exit"]);
            run::status(&mut cmd)?;
        }
    }
    eprintln!("test: all passed");
    Ok(())
}

/// Asks cargo (nothing is rebuilt) where the workspace's test build put the end-to-end test
/// executables and the demo.
fn built() -> Result<Built> {
    let out = run::output(run::cargo().current_dir(paths::root()).args([
        "test",
        "--workspace",
        "--locked",
        "--no-run",
        "--message-format=json",
    ]))?;
    let mut end_to_end = Vec::new();
    let mut demo = None;
    for line in out.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(package), Some(executable)) = (msg["package_id"].as_str(), msg["executable"].as_str()) else { continue };
        if msg["reason"] != "compiler-artifact" || !package.contains("#switchyard-tests@") {
            continue;
        }
        let kinds = msg["target"]["kind"].as_array().cloned().unwrap_or_default();
        if kinds.iter().any(|k| k == "test") && msg["profile"]["test"] == true {
            end_to_end.push(PathBuf::from(executable));
        } else if kinds.iter().any(|k| k == "bin") && msg["target"]["name"] == "switchyard-demo" && msg["profile"]["test"] == false {
            demo = Some(PathBuf::from(executable));
        }
    }
    end_to_end.sort();
    if end_to_end.is_empty() {
        bail!("cargo listed no end-to-end test executables of switchyard-tests");
    }
    let demo = demo.context("cargo listed no switchyard-demo executable")?;
    ensure_exists(&demo)?;
    Ok(Built { end_to_end, demo })
}

fn ensure_exists(path: &Path) -> Result<()> {
    if !path.is_file() {
        bail!("{} is missing after the test build", path.display());
    }
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
