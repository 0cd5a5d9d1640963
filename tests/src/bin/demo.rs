//! `cargo xtask demo`: Envoy with the Switchyard filter (envoy/envoy.yaml) in front of
//! three real gRPC upstreams, a handful of sample requests with the decision each got,
//! then the stack keeps running until Ctrl-C (or exits with `--exit`).

use anyhow::{Context, Result};
use testbed::client::{call_path, connect, extract};
use testbed::envoy::Envoy;
use testbed::upstream::Upstream;

const LISTENER: u16 = 10000;
const ADMIN: u16 = 9901;

#[tokio::main]
async fn main() -> Result<()> {
    let exit = std::env::args().any(|a| a == "--exit");
    let mut upstreams = Vec::new();
    for (name, port) in [("stable", 50051), ("canary", 50052), ("fallback", 50053)] {
        let u = Upstream::start_on(name, port)
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{port} for the {name} upstream (in use?)"))?;
        upstreams.push(u);
    }
    for port in [LISTENER, ADMIN] {
        std::net::TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("port {port} is in use; the demo's Envoy needs it"))?;
    }
    let config = testbed::paths::root().join("envoy/envoy.yaml");
    let envoy = Envoy::start_file(&config, ADMIN, LISTENER, 2).await;
    println!("Switchyard demo");
    println!("  Envoy      127.0.0.1:{LISTENER} (admin 127.0.0.1:{ADMIN}), config envoy/envoy.yaml");
    println!("  filter     {}", testbed::paths::wasm().display());
    println!("  upstreams  stable 127.0.0.1:50051, canary 127.0.0.1:50052, fallback 127.0.0.1:50053");
    println!();
    println!("Sample requests through Envoy (features.v1.FeatureExtractionService/ExtractRealtime):");
    println!("  {:<58} {:<10} decision", "request metadata", "served by");
    let mut client = connect(&envoy.url()).await;
    let samples: &[&[(&str, &str)]] = &[
        &[("x-ab-group", "canary")],
        &[("x-ab-group", "fallback")],
        &[("x-ab-group", "nightly")],
        &[("x-user-id", "alice")],
        &[("x-user-id", "bob")],
        &[],
        &[("x-ab-group", "stable"), ("x-switchyard-cluster", "features_canary")],
    ];
    for headers in samples {
        let shown = if headers.is_empty() {
            "(none)".to_string()
        } else {
            headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
        };
        match extract(&mut client, headers).await {
            Ok(a) => println!("  {shown:<44} {:<10} {}", a.served_by, a.decision().unwrap_or_default()),
            Err(s) => println!("  {shown:<44} {:<10} {:?}: {}", "-", s.code(), s.message()),
        }
    }
    let denied = "/features.v1.FeatureExtractionService/DebugDump";
    match call_path(&envoy.url(), denied).await {
        Ok(()) => println!("  {denied:<44} allowed?!"),
        Err(s) => println!("  {:<58} {:<10} {:?}: {}", "(method DebugDump)", "-", s.code(), s.message()),
    }

    let mut split = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..1000 {
        let key = format!("user-{i}");
        if let Ok(a) = extract(&mut client, &[("x-user-id", &key)]).await {
            *split.entry(a.served_by).or_default() += 1;
        }
    }
    println!();
    println!("1,000 distinct x-user-id values (weights stable 90 / canary 10): {split:?}");
    println!();
    println!("Filter stats:   curl -s 127.0.0.1:{ADMIN}/stats | grep switchyard");
    if exit {
        return Ok(());
    }
    println!("Running; Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    drop(envoy);
    drop(upstreams);
    Ok(())
}
