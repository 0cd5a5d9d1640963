//! `cargo xtask bench <name>`: benchmarks that report ratios against a baseline measured
//! in the same invocation (machines are shared and noisy; absolute figures are context).

use crate::{paths, run, setup};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[derive(clap::Args)]
pub struct Args {
    /// Which benchmark to run: `sidecar` (model serving), `filter` (the Envoy filter's
    /// cost against native routing) or `rehearse` (simulated requests/s natively and in
    /// the browser).
    name: String,
    /// Rounds of the whole set of measurements, interleaved; figures are per-round medians.
    /// Fewer or shorter rounds let noise on a shared machine move the ratios by ±0.06.
    /// (`sidecar` only; `filter` runs 5 rounds of fixed request counts.)
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds measured per run (after a short warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// `filter` only: measure just these arms (comma-separated: native, wasm_floor,
    /// switchyard, switchyard_native, validate_filter, validate_sidecar); `native` is
    /// always measured, as the baseline.
    #[arg(long, value_delimiter = ',')]
    arms: Vec<String>,
    /// `filter` only: count instructions under callgrind, skip the timed runs.
    #[arg(long)]
    instructions_only: bool,
}

pub fn run(args: Args) -> Result<()> {
    match args.name.as_str() {
        "sidecar" => sidecar(&args),
        "filter" => filter(&args),
        "rehearse" => rehearse(),
        other => bail!("unknown benchmark `{other}` (known: sidecar, filter, rehearse)"),
    }
}

/// The rehearsal engine natively and in headless Chromium on one scenario
/// (`tests/src/bin/bench_rehearse.rs`); writes `target/bench/rehearse.json`.
fn rehearse() -> Result<()> {
    setup::run()?;
    run::status(run::cargo().current_dir(paths::root()).args(["build", "--locked", "--release", "--package", "switchyard-rehearse"]))?;
    run::status(run::cargo().current_dir(paths::root()).args([
        "build", "--locked", "--package", "switchyard-sidecar", "--bin", "switchyard-sidecar",
    ]))?;
    run::status(run::cargo().current_dir(paths::root()).args([
        "build", "--locked", "--package", "switchyard-tests", "--bin", "switchyard-bench-rehearse",
    ]))?;
    run::status(
        Command::new(paths::root().join("target/debug/switchyard-bench-rehearse"))
            .env("SWITCHYARD_REHEARSE", paths::root().join("target/release/switchyard-rehearse"))
            .env("SWITCHYARD_SIDECAR", paths::root().join("target/debug/switchyard-sidecar")),
    )
}

/// The filter against Envoy's native header routing (`tests/src/bin/bench_filter.rs`):
/// installs `h2load` if missing, builds what it runs, and writes `target/bench/filter.json`.
fn filter(args: &Args) -> Result<()> {
    setup::run()?;
    let wasm = setup::build_wasm()?;
    let native = setup::build_native()?;
    if Command::new("h2load").arg("--version").output().is_err() {
        run::status(Command::new("apt-get").args(["install", "-y", "nghttp2-client"]))
            .or_else(|_| {
                run::status(Command::new("apt-get").arg("update"))?;
                run::status(Command::new("apt-get").args(["install", "-y", "nghttp2-client"]))
            })
            .context("h2load is needed (Debian package nghttp2-client)")?;
    }
    run::status(run::cargo().current_dir(paths::root()).args([
        "build", "--locked", "--package", "switchyard-sidecar", "--bin", "switchyard-sidecar",
    ]))?;
    run::status(run::cargo().current_dir(paths::root()).args([
        "build", "--locked", "--package", "switchyard-tests", "--bin", "switchyard-bench-filter",
    ]))?;
    let floor = build_wasm_floor()?;
    let module_floor = build_native_floor()?;
    // The bench and its load generator stay on CPU 0; it pins Envoy to CPU 1.
    run::status(
        Command::new("taskset")
            .args(["-c", "0"])
            .arg(paths::root().join("target/debug/switchyard-bench-filter"))
            .env("SWITCHYARD_WASM", &wasm)
            .env("SWITCHYARD_NATIVE", &native)
            .env("SWITCHYARD_WASM_FLOOR", &floor)
            .env("SWITCHYARD_NATIVE_FLOOR", &module_floor)
            .env("SWITCHYARD_BENCH_ARMS", args.arms.join(","))
            .env("SWITCHYARD_BENCH_INSTRUCTIONS_ONLY", if args.instructions_only { "1" } else { "" })
            .env("SWITCHYARD_ENVOY", paths::envoy())
            .env("SWITCHYARD_SIDECAR", paths::root().join("target/debug/switchyard-sidecar")),
    )
}

/// Builds the do-nothing Wasm filter (`tests/wasm-floor`) the filter benchmark measures
/// as the floor under any Wasm filter; returns its path.
fn build_wasm_floor() -> Result<PathBuf> {
    build_floor("wasm-floor", Some("wasm32-wasip1"), "switchyard_wasm_floor.wasm")
}

/// Builds the do-nothing dynamic module (`tests/native-floor`), the floor under any
/// dynamic-module filter; returns its path.
fn build_native_floor() -> Result<PathBuf> {
    build_floor("native-floor", None, "libswitchyard_native_floor.so")
}

/// Builds `tests/<name>` (a crate outside the workspace) in release into
/// `target/<name>`, for `triple` if given; returns the path of `artifact`.
fn build_floor(name: &str, triple: Option<&str>, artifact: &str) -> Result<PathBuf> {
    let target_dir = paths::root().join("target").join(name);
    let mut cmd = run::cargo();
    cmd.current_dir(paths::root()).args(["build", "--locked", "--release"]);
    if let Some(t) = triple {
        cmd.args(["--target", t]);
    }
    cmd.arg("--manifest-path").arg(paths::root().join("tests").join(name).join("Cargo.toml"));
    cmd.arg("--target-dir").arg(&target_dir);
    run::status(&mut cmd)?;
    let mut out = target_dir;
    if let Some(t) = triple {
        out.push(t);
    }
    Ok(out.join("release").join(artifact))
}

/// A child process killed when dropped.
struct Server {
    child: Child,
    what: &'static str,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` and reads stdout lines until `ready` extracts the gRPC address from one.
fn start_server(mut cmd: Command, what: &'static str, ready: impl Fn(&str) -> Option<String>) -> Result<(Server, String)> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().with_context(|| format!("cannot start the {what}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let server = Server { child, what };
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(addr) = ready(&line) {
            return Ok((server, addr));
        }
    }
    bail!("the {} exited before it was ready", server.what)
}

fn json_line(cmd: &mut Command) -> Result<Value> {
    let out = run::output(cmd)?;
    let line = out.lines().last().context("no output")?;
    serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// One row of the table: medians over rounds.
struct Row {
    name: String,
    images_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn summarise(name: String, runs: &[Value]) -> Row {
    let pick = |k: &str| runs.iter().filter_map(|r| r[k].as_f64()).collect::<Vec<_>>();
    let errors = runs
        .iter()
        .filter_map(|r| r["errors"].as_object())
        .flat_map(|e| e.values().filter_map(Value::as_u64))
        .sum();
    Row {
        name,
        images_per_s: median(&mut pick("images_per_s")),
        p50_ms: median(&mut pick("p50_ms")),
        p99_ms: median(&mut pick("p99_ms")),
        errors,
    }
}

/// In-process pipeline vs the sidecar over gRPC vs the Python baseline, same images, same
/// model, same load generator for both servers.
fn sidecar(args: &Args) -> Result<()> {
    setup::run()?;
    run::status(run::cargo().current_dir(paths::root()).args([
        "build",
        "--release",
        "--locked",
        "--package",
        "switchyard-sidecar",
        "--bins",
    ]))?;
    let release = paths::root().join("target/release");
    let sidecar_bin = release.join("switchyard-sidecar");
    let bench_bin = release.join("switchyard-sidecar-bench");
    let models = paths::var().join("models");
    let model_dir = models.join("orientation");
    let images = paths::var().join("testdata/bench");
    let out_dir = paths::root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;

    // The sidecar tuned for throughput on a small CPU machine, serving only the benchmarked
    // version: two inference threads with one ONNX Runtime thread each (no intra-op
    // synchronisation), batches of up to 8, one decoding thread.
    let config = out_dir.join("sidecar-bench.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
             [runtime]\nintra_op_threads = 1\npreprocess_threads = 1\n\n\
             [batching]\nmax_batch_size = 8\nmax_queue_delay_us = 500\nqueue_capacity = 64\ninstances = 2\n\n\
             [repository]\npath = {:?}\nwatch = false\n\n[models.orientation]\nversions = {{ specific = [1] }}\n",
            models.display().to_string()
        ),
    )?;
    let mut cmd = Command::new(&sidecar_bin);
    cmd.args(["serve", "--config"]).arg(&config).env("RUST_LOG", "warn");
    let (_sidecar, sidecar_addr) = start_server(cmd, "sidecar", |line| {
        let v: Value = serde_json::from_str(line).ok()?;
        (v["event"] == "ready").then(|| v["grpc"].as_str().map(str::to_owned))?
    })?;

    let mut cmd = Command::new(paths::venv_python());
    cmd.arg(paths::root().join("xtask/py/baseline_server.py"))
        .arg("--model")
        .arg(model_dir.join("1/model.onnx"))
        .arg("--proto")
        .arg(paths::root().join("proto"))
        .args(["--port", "0"]);
    let (_python, python_addr) =
        start_server(cmd, "Python baseline", |line| line.strip_prefix("baseline ready on ").map(str::to_owned))?;

    let secs = args.seconds.to_string();
    let inprocess = |threads: &str, intra: &str| -> Result<Value> {
        json_line(
            Command::new(&bench_bin)
                .args(["inprocess", "--model"])
                .arg(&model_dir)
                .arg("--images")
                .arg(&images)
                .args(["--seconds", &secs, "--warmup-seconds", "0.5", "--threads", threads, "--intra-op-threads", intra]),
        )
    };
    let grpc = |addr: &str, concurrency: usize| -> Result<Value> {
        json_line(
            Command::new(&bench_bin)
                .args(["grpc", "--target", &format!("http://{addr}"), "--images"])
                .arg(&images)
                .args(["--concurrency", &concurrency.to_string(), "--seconds", &secs, "--warmup-seconds", "0.5"]),
        )
    };

    // Interleaved rounds: every configuration sees the same background noise.
    let mut runs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for round in 1..=args.rounds {
        eprintln!("bench sidecar: round {round}/{}", args.rounds);
        runs.entry("in-process, 1 loop x 2 ORT threads".into()).or_default().push(inprocess("1", "2")?);
        runs.entry("in-process, 2 loops x 1 ORT thread".into()).or_default().push(inprocess("2", "1")?);
        for c in [1, 8, 32] {
            runs.entry(format!("sidecar gRPC, concurrency {c:>2}")).or_default().push(grpc(&sidecar_addr, c)?);
            runs.entry(format!("Python baseline, concurrency {c:>2}")).or_default().push(grpc(&python_addr, c)?);
        }
    }

    let rows: Vec<Row> = runs.iter().map(|(name, r)| summarise(name.clone(), r)).collect();
    let best = |prefix: &str| {
        rows.iter()
            .filter(|r| r.name.starts_with(prefix))
            .max_by(|a, b| a.images_per_s.total_cmp(&b.images_per_s))
            .map(|r| (r.name.clone(), r.images_per_s))
            .unwrap_or_default()
    };
    let (inprocess_name, inprocess_best) = best("in-process");
    let (served_name, served_best) = best("sidecar");
    let (python_name, python_best) = best("Python");
    let served_over_inprocess = served_best / inprocess_best;
    let served_over_python = served_best / python_best;
    let stage = |k: &str| {
        let mut v: Vec<f64> = runs
            .iter()
            .filter(|(n, _)| n.starts_with("in-process, 1 loop"))
            .flat_map(|(_, r)| r.iter().filter_map(|x| x[k].as_f64()))
            .collect();
        median(&mut v)
    };
    let (decode_ms, inference_ms) = (stage("decode_preprocess_ms"), stage("inference_ms"));

    println!("\n{:<40} {:>10} {:>9} {:>9} {:>7}", "sidecar benchmark (median of rounds)", "images/s", "p50 ms", "p99 ms", "errors");
    for r in &rows {
        println!("{:<40} {:>10.1} {:>9.2} {:>9.2} {:>7}", r.name, r.images_per_s, r.p50_ms, r.p99_ms, r.errors);
    }
    println!("\nsidecar config: {}", config.display());
    println!("in-process per image (1 loop, 2 ORT threads): decode + pre-process {decode_ms:.2} ms, inference {inference_ms:.2} ms");
    println!("served_over_inprocess = {served_over_inprocess:.2}  ({served_name} / {inprocess_name}; target >= 0.90)");
    println!("served_over_python    = {served_over_python:.2}  ({served_name} / {python_name}; target >= 1.5)");

    let report = json!({
        "benchmark": "sidecar",
        "images": images.display().to_string(),
        "model": model_dir.join("1/model.onnx").display().to_string(),
        "rounds": args.rounds,
        "seconds_per_run": args.seconds,
        "rows": rows.iter().map(|r| json!({
            "name": r.name.trim(),
            "images_per_s": r.images_per_s,
            "p50_ms": r.p50_ms,
            "p99_ms": r.p99_ms,
            "errors": r.errors,
        })).collect::<Vec<_>>(),
        "inprocess_images_per_s": inprocess_best,
        "served_images_per_s": served_best,
        "python_images_per_s": python_best,
        "served_over_inprocess": served_over_inprocess,
        "served_over_python": served_over_python,
        "decode_preprocess_ms": decode_ms,
        "inference_ms": inference_ms,
        "runs": runs,
    });
    let path: PathBuf = out_dir.join("sidecar.json");
    write_json(&path, &report)?;
    println!("wrote {}", path.display());
    let failed: u64 = rows.iter().map(|r| r.errors).sum();
    if failed > 0 {
        bail!("{failed} requests failed during the benchmark");
    }
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n").with_context(|| format!("writing {}", path.display()))
}
