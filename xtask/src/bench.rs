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
    /// `sidecar` only: measure just the priority arm (online p99 alone and under a bulk
    /// flood, one queue against priority levels); its figures replace those in
    /// `target/bench/sidecar.json`, the other arms' stay.
    #[arg(long)]
    priority_only: bool,
    /// `sidecar` only: measure just the bulk-extraction arm (`switchyard-sidecar extract`
    /// against ExtractBatch alone); its figures replace those in `target/bench/sidecar.json`.
    #[arg(long)]
    extract_only: bool,
    /// `sidecar` only: measure just the feature cache arm (hit ÷ miss latency, in-process and
    /// through a redis-server the bench starts); its figures replace those in
    /// `target/bench/sidecar.json`.
    #[arg(long)]
    cache_only: bool,
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

impl Server {
    /// CPU time (user + system) it has used so far, in seconds, from `/proc/<pid>/stat`.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // After the parenthesised command name, utime and stime are the 12th and 13th fields.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
        ticks as f64 / 100.0 // USER_HZ
    }

    /// Stops it with SIGTERM (a graceful shutdown) and waits for it to exit.
    fn terminate(mut self) -> Result<()> {
        run::output(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        self.child.wait().with_context(|| format!("waiting for the {} to exit", self.what))?;
        Ok(())
    }
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

/// The bench binary's OTLP sink: counts the spans it is sent and discards them; prints its
/// counts when its stdin closes.
struct Sink {
    server: Server,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
    addr: String,
}

impl Sink {
    fn start(bench_bin: &Path) -> Result<Sink> {
        let mut child = Command::new(bench_bin)
            .arg("otlp-sink")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the OTLP sink")?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let server = Server { child, what: "OTLP sink" };
        let line = stdout.next().context("the OTLP sink exited before it was ready")??;
        let ready: Value = serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
        let addr = ready["otlp"].as_str().context("no address in the sink's ready line")?.to_owned();
        Ok(Sink { server, stdin, stdout, addr })
    }

    /// Closes its stdin and returns what it received: `{"spans": N, "exports": M}`.
    fn finish(mut self) -> Result<Value> {
        drop(self.stdin.take());
        let line = self.stdout.next().context("the OTLP sink printed no counts")??;
        serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))
    }
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
    /// The server's CPU time per request, where measured (the sidecars).
    server_cpu_ms: Option<f64>,
}

fn summarise(name: String, runs: &[Value]) -> Row {
    let pick = |k: &str| runs.iter().filter_map(|r| r[k].as_f64()).collect::<Vec<_>>();
    let errors = runs
        .iter()
        .filter_map(|r| r["errors"].as_object())
        .flat_map(|e| e.values().filter_map(Value::as_u64))
        .sum();
    let mut cpu = pick("server_cpu_ms_per_request");
    Row {
        name,
        images_per_s: median(&mut pick("images_per_s")),
        p50_ms: median(&mut pick("p50_ms")),
        p99_ms: median(&mut pick("p99_ms")),
        errors,
        server_cpu_ms: (!cpu.is_empty()).then(|| median(&mut cpu)),
    }
}

/// In-process pipeline vs the sidecar over gRPC vs the Python baseline, same images, same
/// model, same load generator for both servers; and the sidecar again with tracing on
/// (exporting every request's spans over OTLP to a sink that discards them).
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
    let sidecar_toml = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [runtime]\nintra_op_threads = 1\npreprocess_threads = 1\n\n\
         [batching]\nmax_batch_size = 8\nmax_queue_delay_us = 500\nqueue_capacity = 64\ninstances = 2\n\n\
         [repository]\npath = {:?}\nwatch = false\n\n[models.orientation]\nversions = {{ specific = [1] }}\n",
        models.display().to_string()
    );
    std::fs::write(&config, &sidecar_toml)?;
    let start_sidecar = |config: &Path, what: &'static str| {
        let mut cmd = Command::new(&sidecar_bin);
        cmd.args(["serve", "--config"]).arg(config).env("RUST_LOG", "warn");
        start_server(cmd, what, |line| {
            let v: Value = serde_json::from_str(line).ok()?;
            (v["event"] == "ready").then(|| v["grpc"].as_str().map(str::to_owned))?
        })
    };
    if args.priority_only {
        let report = priority(args, &start_sidecar, &bench_bin, &images, &out_dir, &sidecar_toml)?;
        let path = out_dir.join("sidecar.json");
        let mut merged: Value = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_else(|| json!({"benchmark": "sidecar"}));
        merged["online_p99_ratio"] = report["online_p99_ratio"].clone();
        merged["priority"] = report;
        write_json(&path, &merged)?;
        println!("wrote {}", path.display());
        return Ok(());
    }
    if args.cache_only {
        let report = cache(args, &start_sidecar, &bench_bin, &images, &out_dir, &sidecar_toml)?;
        let path = out_dir.join("sidecar.json");
        let mut merged: Value = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_else(|| json!({"benchmark": "sidecar"}));
        merged["cache_hit_over_miss_memory"] = report["cache_hit_over_miss_memory"].clone();
        merged["cache_hit_over_miss_redis"] = report["cache_hit_over_miss_redis"].clone();
        merged["cache"] = report;
        write_json(&path, &merged)?;
        println!("wrote {}", path.display());
        return Ok(());
    }
    if args.extract_only {
        let (server, addr) = start_sidecar(&config, "sidecar")?;
        let report = bulk_extract(args, &sidecar_bin, &bench_bin, &addr, &images, &out_dir)?;
        drop(server);
        let path = out_dir.join("sidecar.json");
        let mut merged: Value = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_else(|| json!({"benchmark": "sidecar"}));
        merged["extract_over_batch"] = report["extract_over_batch"].clone();
        merged["extract"] = report;
        write_json(&path, &merged)?;
        println!("wrote {}", path.display());
        return Ok(());
    }
    let (sidecar_server, sidecar_addr) = start_sidecar(&config, "sidecar")?;

    // The same sidecar with tracing on, every request sampled (the load generator sends a
    // sampled `traceparent`, as Envoy would), exporting to a sink that discards.
    let sink = Sink::start(&bench_bin)?;
    let traced_config = out_dir.join("sidecar-bench-traced.toml");
    std::fs::write(&traced_config, format!("{sidecar_toml}\n[tracing]\notlp_endpoint = \"http://{}\"\n", sink.addr))?;
    let (traced_server, traced_addr) = start_sidecar(&traced_config, "traced sidecar")?;

    let mut cmd = Command::new(paths::venv_python());
    cmd.arg(paths::root().join("xtask/py/baseline_server.py"))
        .arg("--model")
        .arg(model_dir.join("1/model.onnx"))
        .arg("--proto")
        .arg(paths::root().join("proto"))
        .args(["--port", "0"]);
    let (python, python_addr) =
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
    let grpc = |addr: &str, concurrency: usize, traceparent: bool| -> Result<Value> {
        let mut cmd = Command::new(&bench_bin);
        cmd.args(["grpc", "--target", &format!("http://{addr}"), "--images"])
            .arg(&images)
            .args(["--concurrency", &concurrency.to_string(), "--seconds", &secs, "--warmup-seconds", "0.5"]);
        if traceparent {
            cmd.arg("--traceparent");
        }
        json_line(&mut cmd)
    };
    // A sidecar run, with the server's CPU time per request.
    let served = |server: &Server, addr: &str, concurrency: usize| -> Result<Value> {
        let before = server.cpu_seconds();
        let mut run = grpc(addr, concurrency, true)?;
        let cpu = server.cpu_seconds() - before;
        let sent = run["sent"].as_f64().unwrap_or(0.0).max(1.0);
        run["server_cpu_ms_per_request"] = json!(cpu * 1e3 / sent);
        Ok(run)
    };

    // Interleaved rounds: every configuration sees the same background noise.
    let mut runs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for round in 1..=args.rounds {
        eprintln!("bench sidecar: round {round}/{}", args.rounds);
        runs.entry("in-process, 1 loop x 2 ORT threads".into()).or_default().push(inprocess("1", "2")?);
        runs.entry("in-process, 2 loops x 1 ORT thread".into()).or_default().push(inprocess("2", "1")?);
        for c in [1, 8, 32] {
            // Tracing off and on back to back (which first alternates by round).
            let arms = [("sidecar gRPC", &sidecar_server, &sidecar_addr), ("sidecar gRPC + tracing", &traced_server, &traced_addr)];
            for (name, server, addr) in if round % 2 == 1 { [arms[0], arms[1]] } else { [arms[1], arms[0]] } {
                runs.entry(format!("{name}, concurrency {c:>2}")).or_default().push(served(server, addr, c)?);
            }
            runs.entry(format!("Python baseline, concurrency {c:>2}")).or_default().push(grpc(&python_addr, c, false)?);
        }
    }
    // The traced sidecar flushes its spans at shutdown.
    traced_server.terminate()?;
    let sink_cpu_s = sink.server.cpu_seconds();
    // What the spans cost apart from the model: the same calls in a loop, exported to the sink.
    const SPAN_COST_REQUESTS: usize = 50_000;
    let mut span_cost_runs = Vec::new();
    for _ in 0..3 {
        span_cost_runs.push(json_line(Command::new(&bench_bin).args([
            "span-cost",
            "--otlp-endpoint",
            &format!("http://{}", sink.addr),
            "--requests",
            &SPAN_COST_REQUESTS.to_string(),
        ]))?);
    }
    let span_cpu_us = median(&mut span_cost_runs.iter().filter_map(|r| r["cpu_us_per_request"].as_f64()).collect::<Vec<_>>());
    let received = sink.finish()?;
    let traced_sent: f64 = runs
        .iter()
        .filter(|(name, _)| name.starts_with("sidecar gRPC + tracing,"))
        .flat_map(|(_, r)| r.iter().filter_map(|x| x["sent"].as_f64()))
        .sum();
    // Five spans per traced request, from the served runs and the span-cost runs.
    let spans_expected = 5.0 * (traced_sent + (span_cost_runs.len() * SPAN_COST_REQUESTS) as f64);
    let spans_received = received["spans"].as_f64().unwrap_or(0.0);

    let rows: Vec<Row> = runs.iter().map(|(name, r)| summarise(name.clone(), r)).collect();
    let best = |prefix: &str| {
        rows.iter()
            .filter(|r| r.name.starts_with(prefix))
            .max_by(|a, b| a.images_per_s.total_cmp(&b.images_per_s))
            .map(|r| (r.name.clone(), r.images_per_s))
            .unwrap_or_default()
    };
    let (inprocess_name, inprocess_best) = best("in-process");
    let (served_name, served_best) = best("sidecar gRPC,");
    let (traced_name, traced_best) = best("sidecar gRPC + tracing,");
    let (python_name, python_best) = best("Python");
    // Tracing on ÷ off, run by run: each pair ran back to back in one round, so it saw the
    // same background load. Medians of the pairs (per concurrency, and over all of them) are
    // steadier on a shared machine than a ratio of per-arm medians.
    let pairs = |c: usize, key: &str| -> Vec<f64> {
        let arm = |name: &str| runs.get(&format!("{name}, concurrency {c:>2}")).cloned().unwrap_or_default();
        let (on, off) = (arm("sidecar gRPC + tracing"), arm("sidecar gRPC"));
        on.iter().zip(&off).filter_map(|(a, b)| Some(a[key].as_f64()? / b[key].as_f64()?)).collect()
    };
    let by_concurrency: Vec<(usize, f64, f64)> = [1, 8, 32]
        .iter()
        .map(|&c| (c, median(&mut pairs(c, "images_per_s")), median(&mut pairs(c, "server_cpu_ms_per_request"))))
        .collect();
    let all = |key: &str| median(&mut [1, 8, 32].iter().flat_map(|&c| pairs(c, key)).collect::<Vec<_>>());
    let tracing_on_over_off = all("images_per_s");
    let tracing_cpu_on_over_off = all("server_cpu_ms_per_request");
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

    println!(
        "\n{:<42} {:>10} {:>9} {:>9} {:>7} {:>12}",
        "sidecar benchmark (median of rounds)", "images/s", "p50 ms", "p99 ms", "errors", "CPU ms/req"
    );
    for r in &rows {
        let cpu = r.server_cpu_ms.map_or(String::new(), |c| format!("{c:.2}"));
        println!("{:<42} {:>10.1} {:>9.2} {:>9.2} {:>7} {:>12}", r.name, r.images_per_s, r.p50_ms, r.p99_ms, r.errors, cpu);
    }
    println!("\nsidecar config: {}", config.display());
    println!("in-process per image (1 loop, 2 ORT threads): decode + pre-process {decode_ms:.2} ms, inference {inference_ms:.2} ms");
    println!("served_over_inprocess = {served_over_inprocess:.2}  ({served_name} / {inprocess_name}; target >= 0.90)");
    println!("served_over_python    = {served_over_python:.2}  ({served_name} / {python_name}; target >= 1.5)");
    println!(
        "tracing_on_over_off   = {tracing_on_over_off:.3}  (throughput with tracing ÷ without, median of the paired runs; target >= 0.97)"
    );
    println!("  sidecar CPU per request on/off {tracing_cpu_on_over_off:.3}; best arm on/off {:.3} ({traced_name} / {served_name})", traced_best / served_best);
    for (c, throughput, cpu) in &by_concurrency {
        println!("  concurrency {c:>2}: throughput on/off {throughput:.3}, sidecar CPU per request on/off {cpu:.3}");
    }
    let off_cpu_ms = median(&mut rows.iter().filter(|r| r.name.starts_with("sidecar gRPC,")).filter_map(|r| r.server_cpu_ms).collect::<Vec<_>>());
    println!(
        "  the spans alone: {span_cpu_us:.1} µs of CPU per request, made and exported ({:.2} % of the sidecar's {off_cpu_ms:.2} ms per request without tracing)",
        span_cpu_us / (off_cpu_ms * 10.0)
    );
    println!(
        "  spans received by the sink: {spans_received} of {spans_expected} ({} exports; the sink used {sink_cpu_s:.1} s of CPU)",
        received["exports"]
    );

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
            "server_cpu_ms_per_request": r.server_cpu_ms,
        })).collect::<Vec<_>>(),
        "inprocess_images_per_s": inprocess_best,
        "served_images_per_s": served_best,
        "python_images_per_s": python_best,
        "served_over_inprocess": served_over_inprocess,
        "served_over_python": served_over_python,
        "tracing": {
            "on_over_off": tracing_on_over_off,
            "cpu_per_request_on_over_off": tracing_cpu_on_over_off,
            "best_on_over_best_off": traced_best / served_best,
            "by_concurrency": by_concurrency.iter().map(|(c, throughput, cpu)| json!({
                "concurrency": c,
                "throughput_on_over_off": throughput,
                "cpu_per_request_on_over_off": cpu,
            })).collect::<Vec<_>>(),
            "span_cpu_us_per_request": span_cpu_us,
            "span_cost_runs": span_cost_runs,
            "untraced_cpu_ms_per_request": off_cpu_ms,
            "spans_received": spans_received,
            "spans_expected": spans_expected,
            "exports_received": received["exports"],
            "traced_requests_sent": traced_sent,
            "sink_cpu_seconds": sink_cpu_s,
            "config": traced_config.display().to_string(),
        },
        "decode_preprocess_ms": decode_ms,
        "inference_ms": inference_ms,
        "runs": runs,
    });
    // Last, on its own sidecars (the others are stopped: it saturates the machine).
    drop((sidecar_server, python));
    let priority = priority(args, &start_sidecar, &bench_bin, &images, &out_dir, &sidecar_toml)?;
    let mut report = report;
    report["online_p99_ratio"] = priority["online_p99_ratio"].clone();
    report["priority"] = priority;
    let (server, addr) = start_sidecar(&config, "sidecar")?;
    let extract = bulk_extract(args, &sidecar_bin, &bench_bin, &addr, &images, &out_dir)?;
    drop(server);
    report["extract_over_batch"] = extract["extract_over_batch"].clone();
    report["extract"] = extract;
    let cached = cache(args, &start_sidecar, &bench_bin, &images, &out_dir, &sidecar_toml)?;
    report["cache_hit_over_miss_memory"] = cached["cache_hit_over_miss_memory"].clone();
    report["cache_hit_over_miss_redis"] = cached["cache_hit_over_miss_redis"].clone();
    report["cache"] = cached;
    let path: PathBuf = out_dir.join("sidecar.json");
    write_json(&path, &report)?;
    println!("wrote {}", path.display());
    let failed: u64 = rows.iter().map(|r| r.errors).sum();
    if failed > 0 {
        bail!("{failed} requests failed during the benchmark");
    }
    Ok(())
}

/// Starts a sidecar with a config file; its process and gRPC address.
type StartSidecar<'a> = dyn Fn(&Path, &'static str) -> Result<(Server, String)> + 'a;

/// Online requests per second in the priority arm: a light online load, well under what the
/// sidecar serves, so its p99 alone is the model's latency rather than queueing.
const ONLINE_RATE: f64 = 25.0;

/// Online p99 at a fixed open-loop rate alone and while a bulk extraction (`ExtractBatch`
/// calls at `x-priority: low`) saturates the sidecar, for one queue (`levels = 1`, the
/// sidecar before priorities: the baseline), the default two levels, and two levels with the
/// low one in the background (`bulk_nice = 19`), interleaved by round. `online_p99_ratio` =
/// loaded ÷ alone with `bulk_nice` (target ≤ 1.3), the median of the rounds' ratios.
fn priority(
    args: &Args,
    start_sidecar: &StartSidecar<'_>,
    bench_bin: &Path,
    images: &Path,
    out_dir: &Path,
    base_toml: &str,
) -> Result<Value> {
    let one_queue = out_dir.join("sidecar-bench-one-queue.toml");
    std::fs::write(&one_queue, format!("{base_toml}\n[batching.priority]\nlevels = 1\n"))?;
    let levels = out_dir.join("sidecar-bench-priority.toml");
    std::fs::write(&levels, format!("{base_toml}\n[batching.priority]\nlevels = 2\n"))?;
    // The low level in the background: one instance for the online level and one bulk
    // instance at nice 19 (as many sessions as the other arms' two instances), bulk images
    // pre-processed at nice 19.
    let background = out_dir.join("sidecar-bench-priority-background.toml");
    let one_instance = base_toml.replace("instances = 2", "instances = 1");
    std::fs::write(&background, format!("{one_instance}\n[batching.priority]\nlevels = 2\nbulk_nice = 19\n"))?;
    let arms = [
        ("one queue", start_sidecar(&one_queue, "one-queue sidecar")?),
        ("priority levels", start_sidecar(&levels, "priority sidecar")?),
        ("levels, bulk at nice 19", start_sidecar(&background, "bulk-nice sidecar")?),
    ];
    let secs = args.seconds;
    let online = |addr: &str| -> Result<Value> {
        json_line(
            Command::new(bench_bin)
                .args(["grpc", "--target", &format!("http://{addr}"), "--images"])
                .arg(images)
                .args(["--rate", &ONLINE_RATE.to_string(), "--seconds", &secs.to_string(), "--warmup-seconds", "0.5"]),
        )
    };
    let flooded = |addr: &str| -> Result<(Value, Value)> {
        // The flood starts first and outlasts the online run.
        let bulk = Command::new(bench_bin)
            .args(["bulk", "--target", &format!("http://{addr}"), "--images"])
            .arg(images)
            .args(["--calls", "2", "--images-per-call", "64", "--priority", "low", "--seconds", &(secs + 2.5).to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the bulk client")?;
        std::thread::sleep(std::time::Duration::from_secs(1));
        let online = online(addr);
        let out = bulk.wait_with_output().context("waiting for the bulk client")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let bulk: Value = serde_json::from_str(text.lines().last().unwrap_or("")).with_context(|| format!("bulk client: not JSON: {text}"))?;
        Ok((online?, bulk))
    };
    let mut runs: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for round in 1..=args.rounds {
        eprintln!("bench sidecar, priority arm: round {round}/{}", args.rounds);
        let order = if round % 2 == 1 { [0, 1, 2] } else { [2, 1, 0] };
        for i in order {
            let (name, (_, addr)) = &arms[i];
            let alone = online(addr)?;
            let (loaded, bulk) = flooded(addr)?;
            let ratio = loaded["p99_ms"].as_f64().unwrap_or(f64::NAN) / alone["p99_ms"].as_f64().unwrap_or(f64::NAN);
            runs.entry(name).or_default().push(json!({"alone": alone, "loaded": loaded, "bulk": bulk, "p99_ratio": ratio}));
        }
    }
    let med = |name: &str, f: &dyn Fn(&Value) -> Option<f64>| median(&mut runs.get(name).map_or(Vec::new(), |r| r.iter().filter_map(f).collect()));
    let refused = |r: &Value| {
        let errors: u64 = r["loaded"]["errors"].as_object().map_or(0, |e| e.values().filter_map(Value::as_u64).sum());
        Some(errors as f64 / r["loaded"]["sent"].as_f64()?.max(1.0))
    };
    println!(
        "\n{:<34} {:>11} {:>12} {:>9} {:>15} {:>12}",
        format!("online at {ONLINE_RATE}/s (median of rounds)"),
        "p99 alone",
        "p99 flooded",
        "ratio",
        "online failed",
        "bulk img/s"
    );
    let mut summary = serde_json::Map::new();
    for (name, _) in &arms {
        let alone = med(name, &|r| r["alone"]["p99_ms"].as_f64());
        let loaded = med(name, &|r| r["loaded"]["p99_ms"].as_f64());
        let ratio = med(name, &|r| r["p99_ratio"].as_f64());
        let failed = med(name, &refused);
        let bulk = med(name, &|r| r["bulk"]["images_per_s"].as_f64());
        println!("{name:<34} {alone:>8.2} ms {loaded:>9.2} ms {ratio:>9.2} {:>14.1}% {bulk:>12.1}", failed * 100.0);
        summary.insert(
            arm_key(name),
            json!({"p99_alone_ms": alone, "p99_flooded_ms": loaded, "p99_ratio": ratio, "online_failed_share": failed, "bulk_images_per_s": bulk}),
        );
    }
    let ratio = summary[&arm_key(arms[2].0)]["p99_ratio"].clone();
    let levels_only = summary["priority_levels"]["p99_ratio"].clone();
    let baseline = summary["one_queue"]["p99_ratio"].clone();
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!(
        "online_p99_ratio = {:.2}  (levels, bulk at nice 19; target <= 1.3); levels alone: {:.2}; one queue: {:.2} (over the online requests it served)",
        f(&ratio),
        f(&levels_only),
        f(&baseline)
    );
    Ok(json!({
        "online_rate": ONLINE_RATE,
        "online_p99_ratio": ratio,
        "levels_online_p99_ratio": levels_only,
        "one_queue_online_p99_ratio": baseline,
        "arms": summary,
        "configs": {
            "one_queue": one_queue.display().to_string(),
            "priority_levels": levels.display().to_string(),
            arm_key(arms[2].0): background.display().to_string(),
        },
        "runs": runs,
    }))
}

/// An arm's name as a JSON key: `levels, bulk at nice 19` → `levels_bulk_at_nice_19`.
fn arm_key(name: &str) -> String {
    name.replace(',', "").replace(' ', "_")
}

/// A `redis-server` of the bench's own on a free loopback port, nothing saved to disk.
fn start_redis() -> Result<(Server, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(std::env::temp_dir())
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start redis-server (Debian package redis-server; `cargo xtask setup` installs it)")?;
    let server = Server { child, what: "redis-server" };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let pong = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
            s.write_all(b"PING\r\n")?;
            let mut reply = [0u8; 7];
            s.read_exact(&mut reply)?;
            Ok(reply == *b"+PONG\r\n")
        });
        if pong.unwrap_or(false) {
            return Ok((server, port));
        }
        if std::time::Instant::now() > until {
            bail!("redis-server on port {port} did not answer PING within 10 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Hit and miss latency of the feature cache at concurrency 1 (closed loop, the bench
/// images), for the in-process tier and for Redis alone (`max_bytes = 0`: every lookup and
/// fill goes to a redis-server started here). Misses: every image made unique (`grpc
/// --unique`), so each is looked up, computed and stored; hits: the bench images, all cached
/// by a first pass. Rounds interleave the arms; `cache_hit_over_miss_<tier>` = the median of
/// the rounds' hit p50 ÷ miss p50 (target <= 0.1). Every answer's `x-switchyard-cache` is
/// checked to be what the run measures.
fn cache(args: &Args, start_sidecar: &StartSidecar<'_>, bench_bin: &Path, images: &Path, out_dir: &Path, base_toml: &str) -> Result<Value> {
    let (_redis, port) = start_redis()?;
    let memory = out_dir.join("sidecar-bench-cache-memory.toml");
    std::fs::write(&memory, format!("{base_toml}\n[cache]\nenabled = true\n"))?;
    let redis = out_dir.join("sidecar-bench-cache-redis.toml");
    std::fs::write(&redis, format!("{base_toml}\n[cache]\nenabled = true\nmax_bytes = 0\nredis = \"redis://127.0.0.1:{port}/0\"\n"))?;
    let arms = [("memory", "hit-memory", start_sidecar(&memory, "caching sidecar")?), ("redis", "hit-redis", start_sidecar(&redis, "sidecar caching in Redis")?)];
    let run = |addr: &str, seconds: f64, warmup: f64, unique: bool| -> Result<Value> {
        let mut cmd = Command::new(bench_bin);
        cmd.args(["grpc", "--target", &format!("http://{addr}"), "--images"]).arg(images).args([
            "--concurrency",
            "1",
            "--seconds",
            &seconds.to_string(),
            "--warmup-seconds",
            &warmup.to_string(),
        ]);
        if unique {
            cmd.arg("--unique");
        }
        json_line(&mut cmd)
    };
    // Every bench image once (and more) into each cache.
    for (_, _, (_, addr)) in &arms {
        run(addr, 1.0, 0.0, false)?;
    }
    let mut runs: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for round in 1..=args.rounds {
        eprintln!("bench sidecar, cache arm: round {round}/{}", args.rounds);
        let order = if round % 2 == 1 { [0, 1, 2] } else { [2, 1, 0] };
        for i in order {
            let (tier, hit, (_, addr)) = &arms[i];
            let kinds = if round % 2 == 1 { [false, true] } else { [true, false] };
            let mut pair = json!({});
            for is_hit in kinds {
                let result = run(addr, args.seconds, 0.5, !is_hit)?;
                let expected = if is_hit { *hit } else { "miss" };
                let count = result["count"].as_u64().unwrap_or(0);
                if count == 0 || result["cache"][expected].as_u64() != Some(count) {
                    bail!("the {tier} cache's {expected} run was answered otherwise: {result}");
                }
                pair[if is_hit { "hit" } else { "miss" }] = result;
            }
            pair["ratio"] = json!(pair["hit"]["p50_ms"].as_f64().unwrap_or(f64::NAN) / pair["miss"]["p50_ms"].as_f64().unwrap_or(f64::NAN));
            runs.entry(tier).or_default().push(pair);
        }
    }
    let med = |tier: &str, f: &dyn Fn(&Value) -> Option<f64>| median(&mut runs.get(tier).map_or(Vec::new(), |r| r.iter().filter_map(f).collect()));
    println!("\n{:<36} {:>11} {:>11} {:>11} {:>11} {:>10}", "feature cache, concurrency 1", "hit p50", "miss p50", "hit p99", "miss p99", "hit/miss");
    let mut summary = serde_json::Map::new();
    for (tier, _, _) in &arms {
        let figure = |kind: &'static str, key: &'static str| med(tier, &move |r| r[kind][key].as_f64());
        let (hit_p50, miss_p50, hit_p99, miss_p99) = (figure("hit", "p50_ms"), figure("miss", "p50_ms"), figure("hit", "p99_ms"), figure("miss", "p99_ms"));
        let ratio = med(tier, &|r| r["ratio"].as_f64());
        println!("{tier:<36} {hit_p50:>8.2} ms {miss_p50:>8.2} ms {hit_p99:>8.2} ms {miss_p99:>8.2} ms {ratio:>10.3}");
        summary.insert(
            (*tier).to_owned(),
            json!({"hit_p50_ms": hit_p50, "miss_p50_ms": miss_p50, "hit_p99_ms": hit_p99, "miss_p99_ms": miss_p99, "hit_over_miss": ratio,
                   "hit_images_per_s": figure("hit", "images_per_s"), "miss_images_per_s": figure("miss", "images_per_s")}),
        );
    }
    let ratio = |tier: &str| summary[tier]["hit_over_miss"].clone();
    println!(
        "cache_hit_over_miss_memory = {:.3}, cache_hit_over_miss_redis = {:.3}  (hit p50 ÷ miss p50; target <= 0.1)",
        ratio("memory").as_f64().unwrap_or(f64::NAN),
        ratio("redis").as_f64().unwrap_or(f64::NAN)
    );
    Ok(json!({
        "cache_hit_over_miss_memory": ratio("memory"),
        "cache_hit_over_miss_redis": ratio("redis"),
        "concurrency": 1,
        "tiers": summary,
        "configs": {"memory": memory.display().to_string(), "redis": redis.display().to_string()},
        "runs": runs,
    }))
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Bulk extraction against the sidecar's own bulk throughput, round by round on one sidecar:
/// `ExtractBatch` calls alone (the bench's `bulk`: images already in memory, nothing written)
/// and `switchyard-sidecar extract` over a directory of as many images as that rate serves in
/// `--seconds` (reading, hashing, writing Parquet, start-up included), both with 32 images a
/// call, 2 calls in flight, at `x-priority: low`. `extract_over_batch` = the median of the
/// rounds' ratios (target >= 0.9).
fn bulk_extract(args: &Args, sidecar_bin: &Path, bench_bin: &Path, addr: &str, images: &Path, out_dir: &Path) -> Result<Value> {
    const PER_CALL: usize = 32;
    const CALLS: usize = 2;
    let target = format!("http://{addr}");
    let alone = || -> Result<Value> {
        json_line(Command::new(bench_bin).args(["bulk", "--target", &target, "--images"]).arg(images).args([
            "--calls",
            &CALLS.to_string(),
            "--images-per-call",
            &PER_CALL.to_string(),
            "--seconds",
            &args.seconds.to_string(),
            "--priority",
            "low",
        ]))
    };
    // Sized from a first measurement, so both arms run about as long.
    let rate = alone()?["images_per_s"].as_f64().context("no images_per_s from bench bulk")?;
    let count = ((rate * args.seconds) as usize).max(4 * PER_CALL);
    let dir = out_dir.join("extract-images");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let sources: Vec<PathBuf> = std::fs::read_dir(images)?.map(|e| e.map(|e| e.path())).collect::<std::io::Result<_>>()?;
    for i in 0..count {
        let source = &sources[i % sources.len()];
        let name = format!("{i:06}-{}", source.file_name().and_then(|n| n.to_str()).unwrap_or("image"));
        std::fs::copy(source, dir.join(name))?;
    }
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        eprintln!("bench sidecar: extract round {round}/{} ({count} images)", args.rounds);
        let batch = alone()?;
        let output = out_dir.join("extract-out");
        let _ = std::fs::remove_dir_all(&output);
        let extract = json_line(
            Command::new(sidecar_bin)
                .args(["extract", "--target", &target, "--dir"])
                .arg(&dir)
                .arg("--output")
                .arg(&output)
                .args(["--batch-size", &PER_CALL.to_string(), "--concurrency", &CALLS.to_string(), "--no-progress"]),
        )?;
        if extract["failed"].as_u64() != Some(0) || extract["rows_written"].as_u64() != Some(count as u64) {
            bail!("extract did not write every image: {extract}");
        }
        let ratio = extract["images_per_s"].as_f64().unwrap_or(0.0) / batch["images_per_s"].as_f64().unwrap_or(f64::NAN);
        runs.push(json!({"batch_alone": batch, "extract": extract, "ratio": ratio}));
    }
    let ratio = median(&mut runs.iter().filter_map(|r| r["ratio"].as_f64()).collect::<Vec<_>>());
    let pick = |arm: &str| median(&mut runs.iter().filter_map(|r| r[arm]["images_per_s"].as_f64()).collect::<Vec<_>>());
    let (alone_rate, extract_rate) = (pick("batch_alone"), pick("extract"));
    println!("extract_over_batch = {ratio:.2}  (switchyard-sidecar extract {extract_rate:.1} images/s ÷ ExtractBatch alone {alone_rate:.1}; target >= 0.90)");
    Ok(json!({
        "extract_over_batch": ratio,
        "extract_images_per_s": extract_rate,
        "batch_alone_images_per_s": alone_rate,
        "images": count,
        "images_per_call": PER_CALL,
        "calls_in_flight": CALLS,
        "runs": runs,
    }))
}
