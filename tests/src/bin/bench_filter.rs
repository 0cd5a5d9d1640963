//! `cargo xtask bench filter`: the cost of the Switchyard filter against Envoy's native
//! header routing, on the same upstream, in one invocation, interleaving runs.
//!
//! Envoy configurations (one worker each, pinned to CPU 1; the load generator and the
//! upstream share CPU 0, so Envoy's CPU time is its own):
//!
//! * `native`: Envoy routes on a header with a route match, no filter;
//! * `wasm_floor`: the same native routing behind a proxy-wasm filter that does nothing
//!   (`tests/wasm-floor`, the proxy-wasm SDK, same build profile): what any Wasm filter
//!   costs here;
//! * `switchyard`: the Wasm build doing A/B bucketing, the budget check and the
//!   degradation bookkeeping on the same traffic;
//! * `switchyard_native`: the same decision core as an Envoy dynamic module
//!   (`libswitchyard.so`), same configuration, same traffic; it puts its choice in filter
//!   state (`cluster_filter_state`), read by the route's matcher cluster specifier, and has
//!   Envoy pick only the cluster again (`route_refresh: cluster`);
//! * `native_module_floor`: native routing behind a dynamic module that does nothing
//!   (`tests/native-floor`): what any dynamic-module filter costs here;
//! * `validate_filter` / `validate_sidecar`: the same plus payload validation, in the
//!   filter or by a call to the sidecar's validator (the comparison that picks the mode).
//!
//! Workloads: `image`, the API's real traffic (`ExtractRealtime` with an 88 KB JPEG), and
//! `tiny`, a 12-byte message (the worst case for a per-request overhead).
//!
//! Two measurements: CPU time per request from `/proc/<pid>/stat` over interleaved
//! `h2load` runs (medians), and instructions per request counted by `valgrind
//! --tool=callgrind` (deterministic, unlike time on a shared machine; periodic work is spaced
//! as far apart as callgrind slows Envoy, see [`VALGRIND_SLOWDOWN`]). Results go to
//! `target/bench/filter.json`; the headline ratios (`switchyard` ÷ `native`) are for the
//! `image` workload, and each workload also reports the floor's ratio and Switchyard's
//! ratio over the floor.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use testbed::envoy::{
    cluster_json, http1_cluster_json, http_listener_json, native_filter_json, router_filter_json, switchyard_routes, wasm_filter_json, dynamic_module_filter_json, Routing,
    Cluster, Envoy,
};
use testbed::upstream::Upstream;
use testbed::{admin, free_port, paths};

const ROUNDS: usize = 5;
/// How many times slower Envoy runs under callgrind than in the timed runs (image: ≈ 70
/// against ≈ 3,500 requests/s; tiny: ≈ 180 against ≈ 8,000; the bench prints the
/// ratio it sees). Work done per unit of time (the filter's tick and sidecar poll,
/// Envoy's stats flush) is spread over that many times fewer requests under callgrind,
/// so the valgrind runs space it out as much: instructions per request then count
/// periodic work at the share it has at full speed.
const VALGRIND_SLOWDOWN: u64 = 50;
/// The Switchyard arms' tick and sidecar poll, and Envoy's stats flush, in the timed runs.
const TICK_MS: u64 = 100;
const POLL_MS: u64 = 1000;
const STATS_FLUSH_S: u64 = 5;
/// The filter-state key the native module writes its choice to.
const ROUTING_STATE: &str = "switchyard.cluster";
const PATH: &str = "/features.v1.FeatureExtractionService/ExtractRealtime";

/// Host calls the filter makes on a routed request (see `filter/core/src/stream.rs`): read
/// the request headers (the one call that makes the host allocate in the VM), set the
/// routing header, read the clock; on the response read the clock, and for one complete
/// response in eight read its `grpc-status` trailer.
const HOST_CALLS_PER_REQUEST: f64 = 4.125;

/// One Envoy configuration under test.
enum Arm {
    /// Native header routing.
    Native,
    /// Native header routing behind the do-nothing Wasm filter at this path.
    Floor(PathBuf),
    /// The Switchyard filter's Wasm build with this plugin configuration.
    Switchyard(String),
    /// The Switchyard filter's native build (dynamic module) with this plugin configuration.
    SwitchyardNative(String),
    /// Native header routing behind the do-nothing dynamic module at this path.
    ModuleFloor(PathBuf),
}

struct Workload {
    name: &'static str,
    body: PathBuf,
    requests: usize,
    instruction_requests: usize,
}

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
    let workloads = workloads(dir.path())?;

    // The sidecar: schema registry (one revision of features.v1) for the validation runs.
    let schema_dir = dir.path().join("schemas");
    std::fs::create_dir_all(&schema_dir)?;
    testbed::sidecar::revisions::write(&schema_dir, "001-features", &testbed::sidecar::revisions::current());
    let sidecar = testbed::sidecar::Sidecar::start(Some(&schema_dir)).await;

    // SWITCHYARD_BENCH_PLUGIN_EXTRA='{"tick_ms": 1000}' overrides top-level fields of the
    // Switchyard arms' plugin configuration (for profiling).
    let extra: Value = match std::env::var("SWITCHYARD_BENCH_PLUGIN_EXTRA") {
        Ok(s) if !s.is_empty() => serde_json::from_str(&s).context("SWITCHYARD_BENCH_PLUGIN_EXTRA: not JSON")?,
        _ => json!({}),
    };
    let ab = |validate: &str, route_refresh: &str| -> Value {
        let mut config = json!({
            "route_refresh": route_refresh,
            "tick_ms": TICK_MS,
            "sidecar": {"cluster": "sidecar_admin", "poll_ms": POLL_MS},
            "routes": [{
                "name": "features",
                "match": ["/features.v1.FeatureExtractionService/*"],
                "targets": [
                    {"name": "stable", "cluster": "stable", "weight": 90},
                    {"name": "canary", "cluster": "canary", "weight": 10}
                ],
                "default_target": "stable",
                "fallback": "stable",
                "validate": {"mode": validate, "max_body_bytes": 1_000_000}
            }]
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            config[k] = v.clone();
        }
        config
    };
    // The native module routes through filter state: nothing added to the request.
    let mut native_ab = ab("off", "cluster");
    native_ab["cluster_filter_state"] = json!(ROUTING_STATE);
    let floor = built_file("SWITCHYARD_WASM_FLOOR", "the do-nothing filter's .wasm")?;
    let module_floor = built_file("SWITCHYARD_NATIVE_FLOOR", "the do-nothing dynamic module")?;
    // Indices into `configs` used below.
    const NATIVE: usize = 0;
    const FLOOR: usize = 1;
    const SWITCHYARD: usize = 2;
    const SWITCHYARD_NATIVE: usize = 3;
    const MODULE_FLOOR: usize = 4;
    let configs: Vec<(&str, Arm)> = vec![
        ("native", Arm::Native),
        ("wasm_floor", Arm::Floor(floor)),
        ("switchyard", Arm::Switchyard(ab("off", "route").to_string())),
        ("switchyard_native", Arm::SwitchyardNative(native_ab.to_string())),
        ("native_module_floor", Arm::ModuleFloor(module_floor)),
        ("validate_filter", Arm::Switchyard(ab("filter", "route").to_string())),
        ("validate_sidecar", Arm::Switchyard(ab("sidecar", "route").to_string())),
    ];
    // `cargo xtask bench filter --arms a,b` measures a subset (the baseline always);
    // `--instructions-only` skips the timed runs.
    let chosen: Vec<String> = std::env::var("SWITCHYARD_BENCH_ARMS")
        .unwrap_or_default()
        .split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    for a in &chosen {
        if !configs.iter().any(|(name, _)| name == a) {
            bail!("unknown arm {a:?} (arms: {})", configs.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "));
        }
    }
    let selected = |i: usize| i == NATIVE || chosen.is_empty() || chosen.iter().any(|a| a == configs[i].0);
    let timed = std::env::var("SWITCHYARD_BENCH_INSTRUCTIONS_ONLY").map_or(true, |v| v.is_empty());
    let mut envoys = Vec::new();
    for (i, (name, arm)) in configs.iter().enumerate() {
        if !(timed && selected(i)) {
            envoys.push(None);
            continue;
        }
        let config = bootstrap(&dir.path().join(format!("{name}.json")), &upstream, sidecar.admin, arm, STATS_FLUSH_S)?;
        envoys.push(Some(Envoy::start_file_on(&config.0, config.1, config.2, 1, Some(1)).await));
    }
    // Every filter has its snapshot (the validation runs need the descriptors).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut report = json!({
        "benchmark": "filter",
        "rounds": ROUNDS,
        "envoy_workers": 1,
        "host_calls_per_request": HOST_CALLS_PER_REQUEST,
        "workloads": {},
    });
    for w in workloads.iter().filter(|_| timed) {
        // Validation is compared on the real traffic only.
        let active: Vec<usize> = (0..configs.len())
            .filter(|&i| selected(i) && (w.name == "image" || [NATIVE, FLOOR, SWITCHYARD, SWITCHYARD_NATIVE, MODULE_FLOOR].contains(&i)))
            .collect();
        let envoy = |i: usize| envoys.get(i).and_then(Option::as_ref).context("arm not started");
        println!("workload {} ({} requests per run), warming up…", w.name, w.requests);
        for &i in &active {
            run(&h2load, envoy(i)?, &w.body, w.requests / 10, dir.path())?;
        }
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); configs.len()];
        for round in 0..ROUNDS {
            for &i in &active {
                let before = upstream.requests();
                let r = run(&h2load, envoy(i)?, &w.body, w.requests, dir.path())?;
                let served = upstream.requests() - before;
                if served < w.requests as u64 {
                    bail!("{}: only {served} of {} requests reached the upstream", configs[i].0, w.requests);
                }
                println!(
                    "  round {} {:<17} {:>8.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  Envoy CPU {:>6.1} µs/req",
                    round + 1,
                    configs[i].0,
                    r.rps,
                    r.p50_ms,
                    r.p99_ms,
                    r.cpu_us_per_request
                );
                runs[i].push(r);
            }
        }
        let mut figures = serde_json::Map::new();
        println!();
        println!("  {:<17} {:>9} {:>8} {:>8} {:>16}", format!("{} (median)", w.name), "req/s", "p50 ms", "p99 ms", "Envoy CPU µs/req");
        for &i in &active {
            let m = median(&runs[i]);
            println!("  {:<17} {:>9.0} {:>8.3} {:>8.3} {:>16.1}", configs[i].0, m.rps, m.p50_ms, m.p99_ms, m.cpu_us_per_request);
            figures.insert(configs[i].0.to_string(), json!({
                "requests_per_second": m.rps, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
                "cpu_us_per_request": m.cpu_us_per_request,
                "runs": runs[i].iter().map(|r| json!([r.rps, r.p50_ms, r.p99_ms, r.cpu_us_per_request])).collect::<Vec<_>>(),
            }));
        }
        let ratios = [
            ("", SWITCHYARD, NATIVE, "switchyard ÷ native"),
            ("floor_", FLOOR, NATIVE, "wasm_floor ÷ native"),
            ("over_floor_", SWITCHYARD, FLOOR, "switchyard ÷ wasm_floor"),
            ("native_module_", SWITCHYARD_NATIVE, NATIVE, "switchyard_native ÷ native"),
            ("native_module_floor_", MODULE_FLOOR, NATIVE, "module floor ÷ native"),
            ("native_module_over_floor_", SWITCHYARD_NATIVE, MODULE_FLOOR, "switchyard_native ÷ floor"),
        ];
        for (prefix, x, base, what) in ratios {
            if runs[x].is_empty() || runs[base].is_empty() {
                continue;
            }
            let (x, base) = (median(&runs[x]), median(&runs[base]));
            let (cpu, throughput) = (x.cpu_us_per_request / base.cpu_us_per_request, x.rps / base.rps);
            figures.insert(format!("{prefix}cpu_per_request_ratio"), json!(cpu));
            figures.insert(format!("{prefix}throughput_ratio"), json!(throughput));
            println!("  {what:<24} cpu_per_request_ratio {cpu:.3}, throughput_ratio {throughput:.3}");
        }
        println!();
        report["workloads"][w.name] = Value::Object(figures);
    }
    drop(envoys);

    // Instructions per request under callgrind: the same comparison, without the noise.
    if which("valgrind").is_some() {
        println!("counting instructions under callgrind (slow: Envoy starts in about a minute)…");
        let mut counts = serde_json::Map::new();
        for (i, (name, arm)) in configs.iter().enumerate().take(MODULE_FLOOR + 1) {
            if !selected(i) {
                continue;
            }
            let config = bootstrap(
                &dir.path().join(format!("{name}-vg.json")),
                &upstream,
                sidecar.admin,
                &arm.under_valgrind()?,
                STATS_FLUSH_S * VALGRIND_SLOWDOWN,
            )?;
            // SWITCHYARD_BENCH_CALLGRIND_DIR=<dir> keeps callgrind's dumps (one per arm and
            // workload) for `callgrind_annotate`.
            let dumps = match std::env::var_os("SWITCHYARD_BENCH_CALLGRIND_DIR") {
                Some(d) => PathBuf::from(d).join(name),
                None => dir.path().join(name),
            };
            std::fs::create_dir_all(&dumps)?;
            let per_workload = instructions(&h2load, &config, &workloads, &upstream, &dumps)
                .await
                .with_context(|| format!("{name} under valgrind"))?;
            counts.insert(name.to_string(), per_workload);
        }
        for w in &workloads {
            let count = |name: &str| counts.get(name).and_then(|c| c[w.name]["instructions"].as_f64()).unwrap_or(f64::NAN);
            let (a, f, b, n) = (count("native"), count("wasm_floor"), count("switchyard"), count("switchyard_native"));
            let m = count("native_module_floor");
            println!(
                "  {:<6} native {a:>8.0}  wasm_floor {f:>8.0}  switchyard {b:>8.0}  native_module_floor {m:>8.0}  switchyard_native {n:>8.0} instructions/request",
                w.name
            );
            println!(
                "         switchyard ÷ native {:.3} (floor {:.3}, over floor {:.3}); switchyard_native ÷ native {:.3} (floor {:.3}, over floor {:.3})",
                b / a,
                f / a,
                b / f,
                n / a,
                m / a,
                n / m
            );
            report["workloads"][w.name]["instructions_per_request"] = json!({
                "native": a, "wasm_floor": f, "switchyard": b, "switchyard_native": n, "native_module_floor": m,
                "ratio": b / a, "floor_ratio": f / a, "over_floor_ratio": b / f, "native_module_ratio": n / a,
                "native_module_floor_ratio": m / a, "native_module_over_floor_ratio": n / m,
                "periodic_work_spaced_by": VALGRIND_SLOWDOWN,
            });
            // How much slower callgrind really ran, against the timed runs of this invocation.
            let timed_rps = report["workloads"][w.name]["native"]["requests_per_second"].as_f64();
            let valgrind_rps = counts.get("native").and_then(|c| c[w.name]["requests_per_second"].as_f64());
            if let (Some(t), Some(v)) = (timed_rps, valgrind_rps) {
                println!("         native routing ran {:.0}× slower under callgrind (periodic work spaced {VALGRIND_SLOWDOWN}× apart)", t / v);
                report["workloads"][w.name]["instructions_per_request"]["valgrind_slowdown"] = json!(t / v);
            }
        }
    } else {
        println!("valgrind not found: instruction counts skipped");
    }

    report["cpu_per_request_ratio"] = report["workloads"]["image"]["cpu_per_request_ratio"].clone();
    report["throughput_ratio"] = report["workloads"]["image"]["throughput_ratio"].clone();
    let image = &report["workloads"]["image"];
    report["native_module"] = json!({
        "instructions_ratio": image["instructions_per_request"]["native_module_ratio"].clone(),
        "cpu_per_request_ratio": image["native_module_cpu_per_request_ratio"].clone(),
        "throughput_ratio": image["native_module_throughput_ratio"].clone(),
    });
    println!(
        "\nimage workload: cpu_per_request_ratio {:.3} (target ≤ 1.15), throughput_ratio {:.3} (target ≥ 0.90)",
        report["cpu_per_request_ratio"].as_f64().unwrap_or(0.0),
        report["throughput_ratio"].as_f64().unwrap_or(0.0)
    );
    let image = &report["workloads"]["image"];
    println!(
        "  of which the do-nothing Wasm filter costs cpu ratio {:.3}, throughput ratio {:.3}; Switchyard over it: {:.3}, {:.3}",
        image["floor_cpu_per_request_ratio"].as_f64().unwrap_or(0.0),
        image["floor_throughput_ratio"].as_f64().unwrap_or(0.0),
        image["over_floor_cpu_per_request_ratio"].as_f64().unwrap_or(0.0),
        image["over_floor_throughput_ratio"].as_f64().unwrap_or(0.0)
    );
    let native = &report["native_module"];
    println!(
        "  native module (switchyard_native ÷ native): instructions {:.3} (target ≤ 1.03), cpu_per_request_ratio {:.3} (≤ 1.05), throughput_ratio {:.3} (≥ 0.95)",
        native["instructions_ratio"].as_f64().unwrap_or(0.0),
        native["cpu_per_request_ratio"].as_f64().unwrap_or(0.0),
        native["throughput_ratio"].as_f64().unwrap_or(0.0)
    );
    println!("host calls per routed request: {HOST_CALLS_PER_REQUEST}");
    let out = paths::root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("filter.json"), serde_json::to_vec_pretty(&report)?)?;
    println!("wrote {}", out.join("filter.json").display());
    Ok(())
}

fn workloads(dir: &Path) -> Result<Vec<Workload>> {
    use prost::Message;
    let image = std::fs::read(paths::root().join("var/testdata/bench/bench-00.jpg"))
        .context("var/testdata/bench/bench-00.jpg (run `cargo xtask setup`)")?;
    let request = |image_data: Vec<u8>, format: i32| {
        switchyard_proto::features::v1::ExtractRealtimeRequest { request_id: "bench".into(), image_data, image_format: format }
            .encode_to_vec()
    };
    let write = |name: &str, message: Vec<u8>| -> Result<PathBuf> {
        let path = dir.join(name);
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        std::fs::write(&path, frame)?;
        Ok(path)
    };
    Ok(vec![
        Workload { name: "image", body: write("image.bin", request(image, 1))?, requests: 4_000, instruction_requests: 1_000 },
        Workload { name: "tiny", body: write("tiny.bin", request(Vec::new(), 0))?, requests: 20_000, instruction_requests: 2_000 },
    ])
}

/// Writes an Envoy bootstrap for `arm` in front of `upstream`, flushing stats every
/// `stats_flush_s`. Returns (path, admin, listener).
fn bootstrap(path: &Path, upstream: &Upstream, sidecar_admin: u16, arm: &Arm, stats_flush_s: u64) -> Result<(PathBuf, u16, u16)> {
    let admin = free_port();
    let listener = free_port();
    let mut clusters: Vec<Value> = ["stable", "canary"].iter().map(|n| cluster_json(&Cluster::new(n, upstream.port))).collect();
    clusters.push(http1_cluster_json(&Cluster::new("sidecar_admin", sidecar_admin)));
    let routes = match arm {
        Arm::Switchyard(_) => switchyard_routes(Routing::ClusterHeader, "x-switchyard-cluster", &["stable", "canary"], "stable"),
        // The native module can have Envoy pick the cluster again without matching the route.
        Arm::SwitchyardNative(_) => switchyard_routes(Routing::FilterState(ROUTING_STATE), "x-switchyard-cluster", &["stable", "canary"], "stable"),
        Arm::Native | Arm::Floor(_) | Arm::ModuleFloor(_) => json!([
            {"match": {"prefix": "/", "headers": [{"name": "x-ab-group", "string_match": {"exact": "canary"}}]},
             "route": {"cluster": "canary", "timeout": "0s"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "stable", "timeout": "0s"}}
        ]),
    };
    let mut filters = Vec::new();
    match arm {
        Arm::Native => {}
        Arm::Floor(wasm) => filters.push(wasm_filter_json(wasm, "")),
        Arm::ModuleFloor(so) => filters.push(dynamic_module_filter_json(so, "")),
        Arm::Switchyard(plugin) => filters.push(wasm_filter_json(&paths::wasm(), plugin)),
        Arm::SwitchyardNative(plugin) => filters.push(native_filter_json(plugin)),
    }
    filters.push(router_filter_json());
    let config = json!({
        "stats_flush_interval": format!("{stats_flush_s}s"),
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "clusters": clusters,
            "listeners": [http_listener_json("bench", listener, routes, filters, json!([]))]
        }
    });
    std::fs::write(path, serde_json::to_vec(&config)?)?;
    Ok((path.to_owned(), admin, listener))
}

impl Arm {
    /// The arm as measured under valgrind, where every response takes long: a slow
    /// threshold that far off keeps the canary healthy (the client's `grpc-timeout` is
    /// as far off, see [`h2load_cmd`]), so every request is routed as in the timed runs;
    /// the tick and the sidecar poll are [`VALGRIND_SLOWDOWN`] times further apart.
    fn under_valgrind(&self) -> Result<Arm> {
        let relax = |plugin: &str| -> Result<String> {
            let mut v: Value = serde_json::from_str(plugin)?;
            for route in v["routes"].as_array_mut().into_iter().flatten() {
                route["degrade"] = json!({"slow_threshold_ms": 600_000});
            }
            // The plugin's largest tick (10 s) is as far as it goes.
            v["tick_ms"] = json!((TICK_MS * VALGRIND_SLOWDOWN).min(10_000));
            v["sidecar"]["poll_ms"] = json!(POLL_MS * VALGRIND_SLOWDOWN);
            Ok(v.to_string())
        };
        Ok(match self {
            Arm::Native => Arm::Native,
            Arm::Floor(p) => Arm::Floor(p.clone()),
            Arm::ModuleFloor(p) => Arm::ModuleFloor(p.clone()),
            Arm::Switchyard(plugin) => Arm::Switchyard(relax(plugin)?),
            Arm::SwitchyardNative(plugin) => Arm::SwitchyardNative(relax(plugin)?),
        })
    }
}

/// The client's deadline: 5 s in timed runs, far off under valgrind.
const TIMEOUT: &str = "5S";
const TIMEOUT_UNDER_VALGRIND: &str = "600S";

fn h2load_cmd(h2load: &Path, listener: u16, body: &Path, requests: usize, timeout: &str) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"])
        .arg(h2load)
        .args(["-n", &requests.to_string(), "-c", "8", "-m", "8", "-t", "1"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["-H", "x-user-id: bench-user-7", "-H", &format!("grpc-timeout: {timeout}")])
        .arg("-d")
        .arg(body)
        .arg(format!("http://127.0.0.1:{listener}{PATH}"));
    cmd
}

fn run(h2load: &Path, envoy: &Envoy, body: &Path, requests: usize, dir: &Path) -> Result<Run> {
    let log = dir.join("h2load.tsv");
    let cpu_before = envoy.cpu_time();
    let out = h2load_cmd(h2load, envoy.listener_port, body, requests, TIMEOUT)
        .arg(format!("--log-file={}", log.display()))
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
    let pct = |p: f64| {
        latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or(0) as f64
            / 1000.0
    };
    Ok(Run { rps, p50_ms: pct(0.50), p99_ms: pct(0.99), cpu_us_per_request: cpu.as_micros() as f64 / requests as f64 })
}

/// Instructions per request for each workload, counted by callgrind in an Envoy started
/// under valgrind (after a warm-up, so the Wasm code is compiled by then).
async fn instructions(h2load: &Path, config: &(PathBuf, u16, u16), workloads: &[Workload], upstream: &Upstream, dir: &Path) -> Result<Value> {
    let (path, admin_port, listener) = config;
    let out_file = dir.join(format!("callgrind.{admin_port}.out"));
    let mut child = testbed::process::Process::spawn(
        "valgrind",
        Command::new("taskset")
            .args(["-c", "1", "valgrind", "--tool=callgrind", "--smc-check=all-non-file"])
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg(paths::envoy())
            .arg("-c")
            .arg(path)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l", "warn"])
            .current_dir(paths::root())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let pid = child.pid();
    testbed::eventually("Envoy under valgrind to start", Duration::from_secs(300), async || {
        admin::get(*admin_port, "/ready").ok().filter(|r| r.status == 200)
    })
    .await;
    let mut out = serde_json::Map::new();
    for w in workloads {
        let warm = h2load_cmd(h2load, *listener, &w.body, w.instruction_requests / 2, TIMEOUT_UNDER_VALGRIND).output()?;
        if !warm.status.success() {
            bail!("h2load warm-up failed under valgrind");
        }
        let total_before = callgrind_total(pid, &out_file)?;
        let reached_before = upstream.requests();
        let started = std::time::Instant::now();
        let measured = h2load_cmd(h2load, *listener, &w.body, w.instruction_requests, TIMEOUT_UNDER_VALGRIND).output()?;
        if !String::from_utf8_lossy(&measured.stdout).contains(&format!("{} succeeded", w.instruction_requests)) {
            bail!("h2load under valgrind did not complete");
        }
        // Every request must have been routed upstream, as in the timed runs (a local reply
        // would be counted as a cheap request).
        let reached = upstream.requests() - reached_before;
        if reached != w.instruction_requests as u64 {
            bail!("{}: {reached} of {} requests reached the upstream", w.name, w.instruction_requests);
        }
        let total_after = callgrind_total(pid, &out_file)?;
        out.insert(
            w.name.to_string(),
            json!({
                "instructions": (total_after - total_before) as f64 / w.instruction_requests as f64,
                "requests_per_second": w.instruction_requests as f64 / started.elapsed().as_secs_f64(),
            }),
        );
    }
    child.kill();
    Ok(Value::Object(out))
}

/// Dumps callgrind's counters for `pid` and returns the total instructions so far.
fn callgrind_total(pid: u32, out_file: &Path) -> Result<u64> {
    let status = Command::new("callgrind_control").args(["-d", &pid.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    if !status.success() {
        bail!("callgrind_control -d failed");
    }
    std::thread::sleep(Duration::from_millis(500));
    // Each dump covers the events since the previous one: sum every dump's totals.
    let dir = out_file.parent().context("dir")?;
    let stem = out_file.file_name().and_then(|s| s.to_str()).context("name")?;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().and_then(|s| s.to_str()).is_some_and(|n| n.starts_with(stem)) {
            let text = std::fs::read_to_string(&path)?;
            total += text
                .lines()
                .find_map(|l| l.strip_prefix("summary: "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// The file the environment variable `var` names, which `cargo xtask bench filter` builds.
fn built_file(var: &str, what: &str) -> Result<PathBuf> {
    let path = PathBuf::from(std::env::var_os(var).with_context(|| format!("{var}: {what} (`cargo xtask bench filter` builds it)"))?);
    if !path.is_file() {
        bail!("{var}: {} does not exist", path.display());
    }
    Ok(path)
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

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}
