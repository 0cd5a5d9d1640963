//! `cargo xtask bench filter`: the cost of the Switchyard filter against Envoy's native
//! header routing, on the same upstream, in one invocation, interleaving runs.
//!
//! (a) `native`: Envoy routes on a header with a route match, no Wasm;
//! (b) `switchyard`: Envoy runs the filter doing A/B bucketing, the budget check and the
//!     degradation bookkeeping on the same traffic.
//!
//! Load comes from `h2load` over loopback. For each run: requests/s, p50/p99 latency (from
//! h2load's per-request log) and Envoy's CPU time per request (from `/proc/<pid>/stat`).
//! The medians of the interleaved runs give `cpu_per_request_ratio` and
//! `throughput_ratio` (b ÷ a), written with the raw figures to `target/bench/filter.json`.

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use testbed::envoy::{cluster_json, wasm_filter_json, Cluster, Envoy};
use testbed::upstream::Upstream;
use testbed::{free_port, paths};

const ROUNDS: usize = 5;
const REQUESTS: usize = 20_000;
const PATH: &str = "/features.v1.FeatureExtractionService/ExtractRealtime";

/// Host calls the filter makes on a routed request (see `filter/src/glue/stream.rs`):
/// read request headers, read the clock, set the routing header, set filter state; on the
/// response read the clock and `grpc-status`.
const HOST_CALLS_PER_REQUEST: u32 = 6;

#[derive(Clone, Debug, Default)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_request: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let h2load = which("h2load").context("h2load not found (Debian package nghttp2-client; `cargo xtask bench filter` installs it)")?;
    let upstream = Upstream::start("upstream").await;
    let dir = tempfile::tempdir()?;
    let body = dir.path().join("request.bin");
    std::fs::write(&body, grpc_frame(b"\x0a\x05bench"))?;

    let native = start(&dir.path().join("native.json"), &upstream, None).await?;
    let plugin = json!({
        "routes": [{
            "name": "features",
            "match": ["/features.v1.FeatureExtractionService/*"],
            "targets": [
                {"name": "stable", "cluster": "stable", "weight": 90},
                {"name": "canary", "cluster": "canary", "weight": 10}
            ],
            "default_target": "stable",
            "fallback": "stable"
        }]
    })
    .to_string();
    // For experiments: another plugin configuration for run (b).
    let plugin = std::env::var("SWITCHYARD_BENCH_PLUGIN").unwrap_or(plugin);
    let switchyard = start(&dir.path().join("switchyard.json"), &upstream, Some(&plugin)).await?;

    println!("warming up…");
    for envoy in [&native, &switchyard] {
        run(&h2load, envoy, &body, 2_000, dir.path())?;
    }
    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for (i, envoy) in [&native, &switchyard].into_iter().enumerate() {
            let before = upstream.requests();
            let r = run(&h2load, envoy, &body, REQUESTS, dir.path())?;
            let served = upstream.requests() - before;
            if served < REQUESTS as u64 {
                bail!("only {served} of {REQUESTS} requests reached the upstream");
            }
            println!(
                "round {} {:<10} {:>8.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  Envoy CPU {:>6.1} µs/req",
                round + 1,
                ["native", "switchyard"][i],
                r.rps,
                r.p50_ms,
                r.p99_ms,
                r.cpu_us_per_request
            );
            runs[i].push(r);
        }
    }
    let [a, b] = [median(&runs[0]), median(&runs[1])];
    let cpu_ratio = b.cpu_us_per_request / a.cpu_us_per_request;
    let throughput_ratio = b.rps / a.rps;
    println!();
    println!("{:<12} {:>10} {:>10} {:>10} {:>16}", "median of 5", "req/s", "p50 ms", "p99 ms", "Envoy CPU µs/req");
    for (name, r) in [("native", &a), ("switchyard", &b)] {
        println!("{name:<12} {:>10.0} {:>10.3} {:>10.3} {:>16.1}", r.rps, r.p50_ms, r.p99_ms, r.cpu_us_per_request);
    }
    println!();
    println!("cpu_per_request_ratio {cpu_ratio:.3} (target ≤ 1.15), throughput_ratio {throughput_ratio:.3} (target ≥ 0.90)");
    println!("host calls per routed request: {HOST_CALLS_PER_REQUEST}");

    let out = paths::root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let report = json!({
        "benchmark": "filter",
        "rounds": ROUNDS,
        "requests_per_run": REQUESTS,
        "envoy_workers": 1,
        "native": figures(&a),
        "switchyard": figures(&b),
        "runs": {"native": runs[0].iter().map(figures).collect::<Vec<_>>(), "switchyard": runs[1].iter().map(figures).collect::<Vec<_>>()},
        "cpu_per_request_ratio": cpu_ratio,
        "throughput_ratio": throughput_ratio,
        "host_calls_per_request": HOST_CALLS_PER_REQUEST,
    });
    std::fs::write(out.join("filter.json"), serde_json::to_vec_pretty(&report)?)?;
    println!("wrote {}", out.join("filter.json").display());
    Ok(())
}

fn figures(r: &Run) -> serde_json::Value {
    json!({"requests_per_second": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "cpu_us_per_request": r.cpu_us_per_request})
}

/// Starts an Envoy with one worker in front of `upstream`, with the filter if a plugin
/// configuration is given, else with a native header route.
async fn start(bootstrap: &Path, upstream: &Upstream, plugin: Option<&str>) -> Result<Envoy> {
    let admin = free_port();
    let listener = free_port();
    let clusters = ["stable", "canary"].map(|n| cluster_json(&Cluster::new(n, upstream.port)));
    let routes = match plugin {
        Some(_) => json!([
            {"match": {"prefix": "/", "headers": [{"name": "x-switchyard-cluster", "present_match": true}]},
             "route": {"cluster_header": "x-switchyard-cluster", "timeout": "0s"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "stable", "timeout": "0s"}}
        ]),
        None => json!([
            {"match": {"prefix": "/", "headers": [{"name": "x-ab-group", "string_match": {"exact": "canary"}}]},
             "route": {"cluster": "canary", "timeout": "0s"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "stable", "timeout": "0s"}}
        ]),
    };
    let mut filters = Vec::new();
    if let Some(p) = plugin {
        filters.push(wasm_filter_json(&paths::wasm(), p));
    }
    filters.push(json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}));
    let config = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "clusters": clusters,
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "codec_type": "AUTO",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
                        "http_filters": filters
                    }
                }]}]
            }]
        }
    });
    std::fs::write(bootstrap, serde_json::to_vec(&config)?)?;
    Ok(Envoy::start_file(bootstrap, admin, listener, 1).await)
}

fn run(h2load: &Path, envoy: &Envoy, body: &Path, requests: usize, dir: &Path) -> Result<Run> {
    let log = dir.join("h2load.tsv");
    let cpu_before = envoy.cpu_time();
    let out = Command::new(h2load)
        .args(["-n", &requests.to_string(), "-c", "8", "-m", "8", "-t", "1"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["-H", "x-user-id: bench-user-7", "-H", "grpc-timeout: 5S"])
        .arg("-d")
        .arg(body)
        .arg(format!("--log-file={}", log.display()))
        .arg(format!("http://127.0.0.1:{}{PATH}", envoy.listener_port))
        .output()
        .context("running h2load")?;
    let cpu = envoy.cpu_time().saturating_sub(cpu_before);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains(&format!("{requests} succeeded")) {
        bail!("h2load did not complete every request:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in ")?.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok())
        .context("no req/s in h2load's output")?;
    let mut latencies: Vec<u64> = std::fs::read_to_string(&log)?
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    latencies.sort_unstable();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or(0) as f64 / 1000.0;
    Ok(Run {
        rps,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        cpu_us_per_request: cpu.as_micros() as f64 / requests as f64,
    })
}

fn median(runs: &[Run]) -> Run {
    let pick = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    Run {
        rps: pick(|r| r.rps),
        p50_ms: pick(|r| r.p50_ms),
        p99_ms: pick(|r| r.p99_ms),
        cpu_us_per_request: pick(|r| r.cpu_us_per_request),
    }
}

/// A gRPC length-prefixed message.
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8];
    f.extend_from_slice(&(message.len() as u32).to_be_bytes());
    f.extend_from_slice(message);
    f
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}
