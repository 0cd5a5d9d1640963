//! `cargo xtask bench rehearse`: simulated requests per second of the rehearsal engine,
//! natively (the release `switchyard-rehearse`, one core) and in headless Chromium (the
//! console's wasm-bindgen build), on the same scenario (`examples/rehearsal/bench.yaml`),
//! interleaved over rounds; writes `target/bench/rehearse.json`.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::browser::Browser;

const ROUNDS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> Result<()> {
    let root = testkit::paths::root();
    let cli = std::env::var_os("SWITCHYARD_REHEARSE").map(PathBuf::from).context("SWITCHYARD_REHEARSE (a release switchyard-rehearse)")?;
    let config = root.join("examples/rehearsal/plugin.json");
    let scenario_path = root.join("examples/rehearsal/bench.yaml");
    let scenario = std::fs::read_to_string(&scenario_path)?;
    let sidecar = testbed::sidecar::Sidecar::start(None).await;
    let admin = sidecar.admin;

    let (native, browser, page_total, requests) = tokio::task::spawn_blocking(move || -> Result<_> {
        let b = Browser::start(1400, 1400);
        b.goto(&format!("http://127.0.0.1:{admin}/console/"));
        b.wait_for("the console's engine", "window.switchyard && window.switchyard.ready", Duration::from_secs(30));
        let config_text = std::fs::read_to_string(&config)?;
        let set = |id: &str, text: &str| {
            b.eval(&format!(
                "const e = document.getElementById({}); e.value = {}; e.dispatchEvent(new Event('input')); return true;",
                json!(id),
                json!(text)
            ))
        };
        set("config", &config_text);
        set("scenario", &scenario);
        let (mut native, mut browser, mut page_total) = (Vec::new(), Vec::new(), Vec::new());
        let mut requests = 0.0;
        for round in 0..ROUNDS {
            // Natively, pinned to one core.
            let started = Instant::now();
            let out = Command::new("taskset")
                .args(["-c", "0"])
                .arg(&cli)
                .arg("--config")
                .arg(&config)
                .arg("--scenario")
                .arg(&scenario_path)
                .args(["--format", "json"])
                .output()?;
            let took = started.elapsed().as_secs_f64();
            if out.status.code() != Some(0) && out.status.code() != Some(1) {
                bail!("switchyard-rehearse failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let report: Value = serde_json::from_slice(&out.stdout)?;
            requests = report["requests"].as_f64().unwrap_or(0.0);
            native.push(requests / took);
            // In the page: simulation, then simulation and drawing.
            b.eval("document.body.dataset.rehearsal = ''; document.getElementById('run').click(); return true;");
            b.wait_for("the rehearsal in the page", "document.body.dataset.rehearsal === 'done'", Duration::from_secs(120));
            let timing = b.eval("return window.switchyard.timing");
            let simulate_ms = timing["simulate_ms"].as_f64().unwrap_or(f64::NAN);
            let total_ms = timing["total_ms"].as_f64().unwrap_or(f64::NAN);
            let page_requests = b.eval("return window.switchyard.report.requests").as_f64().unwrap_or(0.0);
            if page_requests != requests {
                bail!("the page simulated {page_requests} requests, the command line {requests}");
            }
            browser.push(requests / (simulate_ms / 1000.0));
            page_total.push(total_ms);
            println!(
                "round {}: native {:.0} req/s ({took:.2} s), browser {:.0} req/s (simulated in {simulate_ms:.0} ms, shown after {total_ms:.0} ms)",
                round + 1,
                requests / took,
                requests / (simulate_ms / 1000.0)
            );
            if round == 0 {
                b.screenshot(&root.join("target/console/bench.png"));
            }
        }
        Ok((median(native), median(browser), median(page_total), requests))
    })
    .await??;
    drop(sidecar);
    let out = json!({
        "benchmark": "rehearse",
        "scenario": "examples/rehearsal/bench.yaml",
        "requests": requests,
        "rounds": ROUNDS,
        "native_requests_per_s": native.round(),
        "browser_requests_per_s": browser.round(),
        "browser_slowdown": (native / browser * 100.0).round() / 100.0,
        "page_run_and_render_ms": page_total.round(),
        "targets": {"native_requests_per_s": ">= 1000000", "browser_slowdown": "<= 3", "page_run_and_render_ms": "< 3000 for 1M requests"},
    });
    let path = testkit::paths::root().join("target/bench/rehearse.json");
    std::fs::create_dir_all(path.parent().context("dir")?)?;
    std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    println!(
        "rehearse: {requests:.0} requests; native {native:.0} req/s, browser {browser:.0} req/s ({:.2}x slower), page run+render {page_total:.0} ms",
        native / browser
    );
    println!("wrote {}", path.display());
    Ok(())
}
