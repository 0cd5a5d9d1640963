//! `cargo xtask fuzz [TARGET] [--minutes N]`: coverage-guided fuzzing with cargo-fuzz on the
//! stable toolchain (`--sanitizer none`), every target by default, as many at once as there
//! are cores. Writes `target/fuzz/report.json`:
//! `{"targets": {"<name>": {"execs", "crashes", "corpus", "seconds"}}}`.
//!
//! Each target grows its corpus in `target/fuzz/corpus/<target>` from the committed seeds
//! (`fuzz/seeds/<target>`); crashes land in `target/fuzz/artifacts/<target>`. A crash, once
//! fixed, is copied to `fuzz/regressions/<target>/`, which the test suite replays.

use crate::{paths, run};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const CARGO_FUZZ: &str = "0.13.2";

#[derive(clap::Args)]
pub struct Args {
    /// One target (all by default): a `[[bin]]` name in fuzz/targets/Cargo.toml, such as
    /// filter_config or schema_payload.
    target: Option<String>,
    /// Minutes per target.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
}

pub fn run(args: Args) -> Result<()> {
    let known = targets()?;
    let targets: Vec<&str> = match &args.target {
        Some(t) if known.contains(t) => vec![t.as_str()],
        Some(t) => bail!("unknown fuzz target `{t}` (known: {})", known.join(", ")),
        None => known.iter().map(String::as_str).collect(),
    };
    cargo_fuzz()?;
    let dir = paths::root().join("fuzz/targets");
    run::status(run::cargo().current_dir(&dir).args(["fuzz", "build", "--fuzz-dir", ".", "--sanitizer", "none"]))?;
    let bin_dir = dir.join("target/x86_64-unknown-linux-gnu/release");
    let out = paths::root().join("target/fuzz");
    let seconds = (args.minutes * 60.0).round().max(1.0) as u64;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut report = serde_json::Map::new();
    for batch in targets.chunks(cores) {
        let started = Instant::now();
        let running: Vec<(&str, Child)> =
            batch.iter().map(|t| Ok((*t, start(&bin_dir, &out, t, seconds)?))).collect::<Result<_>>()?;
        eprintln!("fuzz: {} for {seconds} s each", batch.join(", "));
        for (target, mut child) in running {
            child.wait().with_context(|| format!("wait for {target}"))?;
            report.insert(target.to_owned(), figures(&out, target, started.elapsed().as_secs_f64())?);
        }
    }
    let report = json!({"targets": report});
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    let crashed: Vec<&String> = report["targets"].as_object().into_iter().flatten().filter(|(_, v)| v["crashes"] != 0).map(|(k, _)| k).collect();
    if !crashed.is_empty() {
        bail!("crashes in {crashed:?}: see target/fuzz/artifacts/<target>/ (reproduce with `fuzz/targets/target/x86_64-unknown-linux-gnu/release/<target> <file>`)");
    }
    Ok(())
}

/// The targets: the `[[bin]]` names of cargo-fuzz's crate, `fuzz/targets/Cargo.toml`, the one
/// list (the test suite checks `fuzz/src/lib.rs`'s `TARGETS` and the seed directories
/// against it). Read by a line scan: xtask has no TOML parser, and cargo-fuzz writes these
/// sections one key per line.
fn targets() -> Result<Vec<String>> {
    let path = paths::root().join("fuzz/targets/Cargo.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(value) = line.strip_prefix("name").map(str::trim_start).and_then(|rest| rest.strip_prefix('=')) {
            if in_bin {
                names.push(value.trim().trim_matches('"').to_owned());
            }
        }
    }
    if names.is_empty() {
        bail!("no [[bin]] targets in {}", path.display());
    }
    Ok(names)
}

/// Installs cargo-fuzz at the checked version when it is not there.
fn cargo_fuzz() -> Result<()> {
    let installed = Command::new(paths::cargo_home().join("bin/cargo-fuzz")).arg("--version").output().ok();
    if installed.is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ)) {
        return Ok(());
    }
    run::status(run::cargo().args(["install", "cargo-fuzz", "--locked", "--version", &format!("={CARGO_FUZZ}")]))
}

fn start(bin_dir: &Path, out: &Path, target: &str, seconds: u64) -> Result<Child> {
    let (corpus, artifacts) = (out.join("corpus").join(target), out.join("artifacts").join(target));
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let log = std::fs::File::create(out.join(format!("{target}.log")))?;
    Command::new(bin_dir.join(target))
        .arg(&corpus)
        .arg(paths::root().join("fuzz/seeds").join(target))
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        // Keep going after a crash: every crash is saved, and the run reports them all.
        .args(["-fork=1", "-ignore_crashes=1"])
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("start fuzz target {target}"))
}

/// Executions from libFuzzer's final stats (summed over fork-mode jobs), crashes saved, corpus size.
fn figures(out: &Path, target: &str, seconds: f64) -> Result<Value> {
    let log = std::fs::read_to_string(out.join(format!("{target}.log"))).unwrap_or_default();
    let execs: u64 = log
        .lines()
        .filter_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum();
    let fork_execs = log.lines().rev().find_map(|l| {
        // Fork mode's status lines: `#<execs>: cov: … exec/s: …`.
        let n = l.strip_prefix('#')?.split(':').next()?;
        n.trim().parse::<u64>().ok()
    });
    let count = |dir: PathBuf, prefix: &str| {
        std::fs::read_dir(dir).map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(prefix)).count()).unwrap_or(0)
    };
    Ok(json!({
        "execs": execs.max(fork_execs.unwrap_or(0)),
        "crashes": count(out.join("artifacts").join(target), "crash-"),
        "corpus": count(out.join("corpus").join(target), ""),
        "seconds": (seconds * 10.0).round() / 10.0,
    }))
}
