//! `cargo xtask demo`: the whole stack on this machine, narrated.
//!
//! * the sidecar (`sidecar/demo.toml`) serving three real model versions — stable
//!   `orientation/1`, canary `orientation/2`, fallback `orientation-lite/1` — and a schema
//!   registry with three revisions of `features.v1`;
//! * Envoy with the Switchyard filter in front of it: `envoy/envoy.yaml` (the Wasm build,
//!   the default) or `envoy/envoy-native.yaml` (`--filter native`, the dynamic module).
//!
//! It sends sample requests (real images) and prints who answered and why, then makes the
//! canary slow through the sidecar's chaos endpoint and shows the filter moving its
//! traffic to the fallback and, once the fault is gone, probing it back. Then the stack
//! keeps running until Ctrl-C (or exits with `--exit`).

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use testbed::client::{call_path, connect, extract_image, Answer};
use testbed::envoy::{Build, Envoy};
use testbed::sidecar::{page, revisions, Sidecar, CANARY};
use testbed::{admin, paths, Traffic};

const LISTENER: u16 = 10000;
const ADMIN: u16 = 9901;
const SIDECAR_ADMIN: u16 = 9464;

fn main() -> Result<()> {
    // `--filter wasm|native` picks the build; the testbed reads it from SWITCHYARD_FILTER
    // (set here, before any thread exists).
    let args: Vec<String> = std::env::args().collect();
    if let Some(filter) = args.iter().position(|a| a == "--filter").and_then(|i| args.get(i + 1)) {
        if filter != "wasm" && filter != "native" {
            bail!("--filter {filter}: expected wasm or native");
        }
        std::env::set_var("SWITCHYARD_FILTER", filter);
    }
    tokio::runtime::Runtime::new()?.block_on(run(args.iter().any(|a| a == "--exit")))
}

async fn run(exit: bool) -> Result<()> {
    for port in [LISTENER, ADMIN, SIDECAR_ADMIN, 50051, 50052, 50053] {
        std::net::TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("port {port} is in use; the demo needs it (is another demo running?)"))?;
    }

    // Schema revisions of features.v1, derived from proto/: 1 = as is, 2 = a new field
    // (compatible), 3 = a breaking change, accepted only because its name says `+force`.
    let demo = paths::root().join("var/demo");
    let _ = std::fs::remove_dir_all(&demo);
    let schemas = demo.join("schemas");
    std::fs::create_dir_all(&schemas)?;
    revisions::write(&schemas, "001-features", &revisions::current());
    revisions::write(&schemas, "002-features", &revisions::with_new_field());
    revisions::write(&schemas, "003-features+force", &revisions::breaking());

    println!("Starting the sidecar (sidecar/demo.toml): loading three model versions…");
    let sidecar = Sidecar::start_config(&paths::root().join("sidecar/demo.toml"), tempfile::tempdir()?).await;
    let (config, filter) = match Build::current() {
        Build::Wasm => ("envoy/envoy.yaml", paths::wasm()),
        Build::Native => ("envoy/envoy-native.yaml", paths::native()),
    };
    let envoy = Envoy::start_file(&paths::root().join(config), ADMIN, LISTENER, 2).await;
    testbed::eventually("the filter's first snapshot", Duration::from_secs(10), async || {
        (envoy.filter_stat("switchyard.sidecar.snapshots") > 0).then_some(())
    })
    .await;

    println!();
    println!("Switchyard demo");
    println!("  Envoy    127.0.0.1:{LISTENER} (admin 127.0.0.1:{ADMIN}), config {config}, filter {}", filter.display());
    println!("  sidecar  stable 127.0.0.1:50051 (orientation/1), canary :50052 (orientation/2), fallback :50053 (orientation-lite/1)");
    println!("           admin 127.0.0.1:{SIDECAR_ADMIN} (/metrics, /v1/models, /v1/snapshot, /v1/chaos)");
    println!("  console  http://127.0.0.1:{SIDECAR_ADMIN}/console/  (open the Live view now to watch the canary below)");
    print_registry(&sidecar.snapshot());

    println!();
    println!("Sample requests through Envoy (ExtractRealtime with a rendered text page):");
    println!("  {:<52} {:<20} {:<38} model says", "request metadata", "served by", "decision");
    let url = envoy.url();
    let mut client = connect(&url).await;
    const V1: (&str, &str) = ("x-schema-revision", "features.v1@1");
    let samples: &[(&[(&str, &str)], u32)] = &[
        (&[("x-ab-group", "canary"), ("x-schema-revision", "features.v1@2")], 90),
        (&[("x-ab-group", "fallback"), V1], 180),
        (&[("x-ab-group", "nightly"), V1], 0),
        (&[("x-user-id", "alice"), V1], 270),
        (&[V1], 0),
        (&[], 0),
        (&[("x-schema-revision", "features.v1@3")], 0),
        (&[("x-ab-group", "stable"), ("x-switchyard-cluster", "features_canary"), V1], 0),
    ];
    show(&mut client, samples).await;
    if let Err(s) = call_path(&url, "/features.v1.FeatureExtractionService/DebugDump").await {
        println!("  {:<52} {:<20} {:?}: {}", "(method DebugDump)", "-", s.code(), s.message());
    }

    budgets(&sidecar, &mut client).await?;

    let mut split = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..300 {
        let key = format!("user-{i}");
        if let Ok(a) = extract_image(&mut client, &[("x-user-id", &key), ("x-schema-revision", "features.v1@2")], page(0)).await {
            *split.entry(a.served_by).or_default() += 1;
        }
    }
    println!();
    println!("300 distinct x-user-id values (weights stable 90 / canary 10): {split:?}");

    // Most existing clients declare no revision. They are taken to speak what the default
    // target serves (features.v1@1) and bucketed among the targets that can serve it: the
    // canary (features.v1@2, a compatible evolution) gets its share of them too.
    let mut undeclared = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..300 {
        let key = format!("user-{i}");
        if let Ok(a) = extract_image(&mut client, &[("x-user-id", &key)], page(0)).await {
            *undeclared.entry(a.served_by).or_default() += 1;
        }
    }
    println!("the same 300 users declaring no revision (schema.undeclared: assume_default_target): {undeclared:?}");
    if !undeclared.contains_key("orientation/2") {
        bail!("no undeclared client reached the canary: {undeclared:?}");
    }

    degrade_and_restore(&envoy, &sidecar, &url).await?;

    println!();
    println!("Console:         http://127.0.0.1:{SIDECAR_ADMIN}/console/  (Rehearse: this configuration in your browser; Live: the canary)");
    println!("Filter stats:    curl -s 127.0.0.1:{ADMIN}/stats | grep switchyard");
    println!("Sidecar:         curl -s 127.0.0.1:{SIDECAR_ADMIN}/v1/models   (and /metrics, /v1/snapshot)");
    println!("Try it:          grpcurl -plaintext -H 'x-ab-group: canary' -H 'x-schema-revision: features.v1@2' \\");
    println!("                   -d \"{{\\\"image_data\\\": \\\"$(base64 -w0 var/testdata/pages/page-90.jpg)\\\"}}\" \\");
    println!("                   -import-path proto -proto features/v1/features.proto \\");
    println!("                   127.0.0.1:{LISTENER} features.v1.FeatureExtractionService/ExtractRealtime");
    println!("Rehearse:        curl -X POST 127.0.0.1:{SIDECAR_ADMIN}/v1/chaos -d '{{\"target\": \"{CANARY}\", \"latency_ms\": 1200}}'");
    if exit {
        return Ok(());
    }
    println!("Running; Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    drop(envoy);
    drop(sidecar);
    Ok(())
}

/// Sends each sample (metadata, page rotation) and prints who answered and why.
async fn show(client: &mut testbed::client::Client, samples: &[(&[(&str, &str)], u32)]) {
    for (headers, degrees) in samples {
        let shown = if headers.is_empty() {
            "(none)".to_string()
        } else {
            headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
        };
        match extract_image(client, headers, page(*degrees)).await {
            Ok(a) => println!("  {shown:<52} {:<20} {:<38} {}", a.served_by, a.decision().unwrap_or_default(), orientation(&a, *degrees)),
            Err(s) => println!("  {shown:<52} {:<20} {:?}: {}", "-", s.code(), s.message()),
        }
    }
}

/// Latency budgets on real latencies: stable and canary are slowed by chaos, so only the
/// fallback meets a 60 ms deadline; then the fallback too, and the filter answers at once.
async fn budgets(sidecar: &Sidecar, client: &mut testbed::client::Client) -> Result<()> {
    println!();
    println!("Latency budgets (grpc-timeout), with stable and canary slowed by chaos (+150 ms):");
    let v2 = ("x-schema-revision", "features.v1@2");
    // Answers for the filter to learn from: `n` at once per group (a slowed target only
    // sleeps, so they do not compete for the CPU).
    let learn = async |client: &mut testbed::client::Client, groups: &[&str], n: usize| {
        let mut calls = Vec::new();
        for group in groups {
            for _ in 0..n {
                let mut c = client.clone();
                let group = group.to_string();
                calls.push(tokio::spawn(async move {
                    let _ = extract_image(&mut c, &[("x-ab-group", &group), v2], page(0)).await;
                }));
            }
        }
        for call in calls {
            let _ = call.await;
        }
        // Estimates are shared on the filter's next tick.
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    sidecar.chaos(json!({"target": "orientation/stable", "latency_ms": 150}));
    sidecar.chaos(json!({"target": CANARY, "latency_ms": 150}));
    learn(client, &["stable", "canary"], 12).await;
    for _ in 0..6 {
        learn(client, &["fallback"], 1).await;
    }
    show(client, &[(&[("x-ab-group", "canary"), v2, ("grpc-timeout", "60m")], 0)]).await;
    println!("Now the fallback too:");
    sidecar.chaos(json!({"target": "orientation-lite/fallback", "latency_ms": 150}));
    learn(client, &["fallback"], 12).await;
    let started = Instant::now();
    show(client, &[(&[("x-ab-group", "canary"), v2, ("grpc-timeout", "60m")], 0)]).await;
    println!("  (answered by the filter in {:.1} ms, without touching an upstream)", started.elapsed().as_secs_f64() * 1000.0);
    sidecar.clear_chaos();
    Ok(())
}

/// Makes the canary slow through the sidecar's chaos endpoint and narrates what the filter
/// does about it: degrade (traffic to the fallback), then, once the fault is gone, probe
/// and restore.
async fn degrade_and_restore(envoy: &Envoy, sidecar: &Sidecar, url: &str) -> Result<()> {
    println!();
    println!("Canary rehearsal: steady traffic for the canary, then the canary turns slow.");
    let traffic = Traffic::start_with_image(url, &[("x-ab-group", "canary"), ("x-schema-revision", "features.v1@2")], 4, page(0)).await;
    traffic.wait_for("the canary serving", |a| a == "orientation/2").await;
    let start = Instant::now();
    let at = |t: Instant| format!("{:>5.1} s", t.duration_since(start).as_secs_f64());
    println!("  {}  canary answering (orientation/2)", at(Instant::now()));

    sidecar.chaos(json!({"target": CANARY, "latency_ms": 1200}));
    let slowed = Instant::now();
    println!("  {}  chaos: canary +1200 ms per request (the filter's rule: 5 responses slower than 800 ms)", at(slowed));
    let moved = traffic.wait_for("canary traffic on the fallback", |a| a == "orientation-lite/1").await;
    println!(
        "  {}  filter degraded the canary: its traffic now goes to the fallback (orientation-lite/1), {:.2} s after it turned slow",
        at(moved),
        moved.duration_since(slowed).as_secs_f64()
    );
    let state = envoy.filter_stat("switchyard.route.features.target.canary.state");
    println!("          state gauge switchyard.route.features.target.canary.state = {state} (1 = degraded)");

    tokio::time::sleep(Duration::from_secs(1)).await;
    sidecar.clear_chaos();
    let fixed = Instant::now();
    println!("  {}  chaos cleared; the filter waits out its 5 s cool-down, then probes with 20% of the canary's traffic", at(fixed));
    let probing = traffic
        .wait_for_answer("a probe", |a| a.decision.as_deref() == Some("target=canary; reason=probe"))
        .await;
    println!("  {}  first probe answered by the canary", at(probing));
    traffic.wait_all_recent("the canary restored", |a| a == "orientation/2", 10).await;
    let restored = Instant::now();
    println!(
        "  {}  canary restored after 5 good probes ({:.1} s after the fault was removed)",
        at(restored),
        restored.duration_since(fixed).as_secs_f64()
    );
    let log = envoy.log();
    for line in log.lines().filter(|l| l.contains("switchyard: route features target canary:")) {
        if let Some((_, msg)) = line.split_once("switchyard: route") {
            println!("          Envoy log: route{msg}");
        }
    }
    let answers = traffic.answers();
    let mut codes = std::collections::BTreeMap::<&str, usize>::new();
    for a in answers.iter().filter(|a| a.served_by.starts_with("error")) {
        *codes.entry(a.served_by.as_str()).or_default() += 1;
    }
    let errors: usize = codes.values().sum();
    println!("          {} requests during the rehearsal, {errors} failed", answers.len());
    if errors > 0 {
        bail!("requests failed during the rehearsal: {codes:?}");
    }
    Ok(())
}

fn print_registry(snapshot: &Value) {
    println!();
    println!("Schema registry (sidecar): ");
    for (subject, s) in snapshot["schema"]["subjects"].as_object().into_iter().flatten() {
        let revisions: Vec<String> = s["revisions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let fp = r["fingerprint"].as_str().unwrap_or("");
                format!("{}@{} ({}…)", subject, r["revision"], &fp[..fp.len().min(19)])
            })
            .collect();
        println!("  {subject}: mode {}, {} revisions: {}", s["mode"].as_str().unwrap_or("?"), revisions.len(), revisions.join(", "));
        for p in s["pairs"].as_array().into_iter().flatten() {
            let ok = |b: &Value| if b.as_bool() == Some(true) { "yes" } else { "NO" };
            println!(
                "    client @{} on server @{}: server reads its requests {:<3}  client reads the responses {}",
                p["client"], p["server"], ok(&p["requests"]), ok(&p["responses"])
            );
        }
    }
    println!("  targets serve: stable features.v1@1, canary features.v1@2, fallback features.v1@1");
    let _ = admin::get(SIDECAR_ADMIN, "/healthz");
}

/// The model's orientation verdict for a page rotated by `expected` degrees.
fn orientation(a: &Answer, expected: u32) -> String {
    match a.top_class() {
        Some((label, p)) => format!("page rotated {expected}° → {label}° ({p:.2})"),
        None => String::new(),
    }
}
