//! `cargo xtask fuzz [TARGET…] [--minutes N] [--execs N]`: coverage-guided fuzzing with
//! cargo-fuzz on the stable toolchain (`--sanitizer none`), every target by default, as many
//! at once as there are cores (the next target starts as soon as one ends). Writes
//! `target/fuzz/report.json`:
//! `{"targets": {"<name>": {"execs", "crashes", "corpus", "seconds"}}}`, each target's latest
//! run (a run of some targets keeps the others' figures).
//!
//! Each target grows its corpus in `target/fuzz/corpus/<target>` from the committed seeds
//! (`fuzz/seeds/<target>`); crashes land in `target/fuzz/artifacts/<target>`. A crash, once
//! fixed, is copied to `fuzz/regressions/<target>/`, which the test suite replays.

use crate::{paths, run};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Instant, SystemTime};

const CARGO_FUZZ: &str = "0.13.2";

#[derive(clap::Args)]
pub struct Args {
    /// Targets to run, in this order (all by default): `[[bin]]` names in
    /// fuzz/targets/Cargo.toml, such as filter_config or schema_payload.
    targets: Vec<String>,
    /// Minutes per target (10 unless --execs is given; then a cap, none by default).
    #[arg(long)]
    minutes: Option<f64>,
    /// Stop each target after this many executions (libFuzzer's `-runs`), e.g. 10000000.
    #[arg(long)]
    execs: Option<u64>,
}

/// How long one target runs: until `execs` executions or `seconds`, whichever comes first.
#[derive(Clone, Copy)]
struct Budget {
    seconds: Option<u64>,
    execs: Option<u64>,
}

impl Budget {
    fn of(args: &Args) -> Budget {
        let minutes = args.minutes.or(if args.execs.is_some() { None } else { Some(10.0) });
        Budget { seconds: minutes.map(|m| (m * 60.0).round().max(1.0) as u64), execs: args.execs }
    }

    fn flags(self) -> Vec<String> {
        // libFuzzer: 0 s is no time limit; fork mode stops its jobs once `-runs` is reached.
        let mut flags = vec![format!("-max_total_time={}", self.seconds.unwrap_or(0))];
        flags.extend(self.execs.map(|n| format!("-runs={n}")));
        flags
    }

    fn describe(self) -> String {
        match (self.seconds, self.execs) {
            (Some(s), Some(n)) => format!("{n} executions or {s} s"),
            (Some(s), None) => format!("{s} s"),
            (None, Some(n)) => format!("{n} executions"),
            (None, None) => "no limit".into(),
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let known = targets()?;
    if let Some(t) = args.targets.iter().find(|t| !known.contains(t)) {
        bail!("unknown fuzz target `{t}` (known: {})", known.join(", "));
    }
    let targets: Vec<&str> =
        if args.targets.is_empty() { known.iter().map(String::as_str).collect() } else { args.targets.iter().map(String::as_str).collect() };
    cargo_fuzz()?;
    let dir = paths::root().join("fuzz/targets");
    run::status(run::cargo().current_dir(&dir).args(["fuzz", "build", "--fuzz-dir", ".", "--sanitizer", "none"]))?;
    let bin_dir = dir.join("target/x86_64-unknown-linux-gnu/release");
    let out = paths::root().join("target/fuzz");
    let budget = Budget::of(&args);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut waiting = targets.iter();
    let mut running: Vec<(&str, Child, Instant, SystemTime)> = Vec::new();
    loop {
        while running.len() < cores {
            let Some(target) = waiting.next() else { break };
            eprintln!("fuzz: {target} for {}", budget.describe());
            running.push((target, start(&bin_dir, &out, target, budget)?, Instant::now(), SystemTime::now()));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        let mut still = Vec::with_capacity(running.len());
        for (target, mut child, started, since) in running {
            match child.try_wait().with_context(|| format!("wait for {target}"))? {
                Some(_) => {
                    let figures = figures(&out, target, started.elapsed().as_secs_f64(), since)?;
                    eprintln!("fuzz: {target} done: {figures}");
                    // Written as each target ends, so a long run's figures survive an
                    // interruption; merged into the file as it is now, so targets not run this
                    // time (or run at the same time by another run) keep their latest figures.
                    let mut on_disk = previous_report(&out);
                    on_disk.insert(target.to_owned(), figures);
                    write_report(&out, &on_disk)?;
                }
                None => still.push((target, child, started, since)),
            }
        }
        running = still;
    }
    // Every target of this run is in the file by now.
    let report = json!({"targets": previous_report(&out)});
    println!("{}", serde_json::to_string_pretty(&report)?);
    let crashed: Vec<&String> = report["targets"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| targets.contains(&k.as_str()) && v["crashes"] != 0)
        .map(|(k, _)| k)
        .collect();
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

fn previous_report(out: &Path) -> serde_json::Map<String, Value> {
    let text = std::fs::read(out.join("report.json")).unwrap_or_default();
    let report: Value = serde_json::from_slice(&text).unwrap_or_default();
    report["targets"].as_object().cloned().unwrap_or_default()
}

fn write_report(out: &Path, targets: &serde_json::Map<String, Value>) -> Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&json!({"targets": targets}))?)?;
    Ok(())
}

/// Installs cargo-fuzz at the checked version when it is not there.
fn cargo_fuzz() -> Result<()> {
    let installed = Command::new(paths::cargo_home().join("bin/cargo-fuzz")).arg("--version").output().ok();
    if installed.is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ)) {
        return Ok(());
    }
    run::status(run::cargo().args(["install", "cargo-fuzz", "--locked", "--version", &format!("={CARGO_FUZZ}")]))
}

fn start(bin_dir: &Path, out: &Path, target: &str, budget: Budget) -> Result<Child> {
    let (corpus, artifacts) = (out.join("corpus").join(target), out.join("artifacts").join(target));
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let log = std::fs::File::create(out.join(format!("{target}.log")))?;
    let mut cmd = Command::new(bin_dir.join(target));
    // Fork mode writes a file for every input that adds coverage, and deletes it; on ext4 that
    // was a fifth of a slow target's time (profiled). A tmpfs keeps it in memory.
    if Path::new("/dev/shm").is_dir() {
        cmd.env("TMPDIR", "/dev/shm");
    }
    cmd.arg(&corpus)
        .arg(paths::root().join("fuzz/seeds").join(target))
        .args(budget.flags())
        .arg("-print_final_stats=1")
        // Keep going after a crash: every crash is saved, and the run reports them all.
        .args(["-fork=1", "-ignore_crashes=1"])
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("start fuzz target {target}"))
}

/// Executions from libFuzzer's final stats (summed over fork-mode jobs), crashes saved during
/// this run (artifacts of earlier runs stay where they are), corpus size.
fn figures(out: &Path, target: &str, seconds: f64, since: SystemTime) -> Result<Value> {
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
    let count = |dir: PathBuf, prefix: &str, since: SystemTime| {
        let new = |e: &std::fs::DirEntry| e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t >= since);
        std::fs::read_dir(dir)
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(prefix) && new(e)).count())
            .unwrap_or(0)
    };
    Ok(json!({
        "execs": execs.max(fork_execs.unwrap_or(0)),
        "crashes": count(out.join("artifacts").join(target), "crash-", since),
        "corpus": count(out.join("corpus").join(target), "", SystemTime::UNIX_EPOCH),
        "seconds": (seconds * 10.0).round() / 10.0,
    }))
}
