//! The console in a real headless Chromium: the page's rehearsal (the filter core built
//! with wasm-bindgen) against the command line's, errors shown at their place, and the
//! live view following a canary through degradation and back. Screenshots of both views
//! go to `target/console/`.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use testbed::sidecar::{page, CANARY};
use testbed::{SidecarStack, Traffic};
use testkit::browser::Browser;

/// One browser at a time: Chromium beside a whole stack is a lot for this 2-core machine, and
/// the Live view's test waits on the stack's timing.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn screenshots() -> PathBuf {
    testkit::paths::root().join("target/console")
}

fn rehearse_bin() -> PathBuf {
    let path = std::env::var_os("SWITCHYARD_REHEARSE")
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::paths::root().join("target/debug/switchyard-rehearse"));
    assert!(path.exists(), "{} is missing (`cargo build -p switchyard-rehearse`; `cargo xtask test` builds it)", path.display());
    path
}

/// Where two reports differ, comparing numbers as numbers (JavaScript writes `120.0` as
/// `120`).
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => (x.as_f64() != y.as_f64()).then(|| format!("{at}: {x} vs {y}")),
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("{at}: {} vs {} items", x.len(), y.len()));
            }
            x.iter().zip(y).enumerate().find_map(|(i, (x, y))| first_difference(x, y, &format!("{at}[{i}]")))
        }
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return Some(format!("{at}: keys {:?} vs {:?}", x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>()));
            }
            x.iter().find_map(|(k, v)| match y.get(k) {
                Some(w) => first_difference(v, w, &format!("{at}.{k}")),
                None => Some(format!("{at}.{k}: missing")),
            })
        }
        _ => (a != b).then(|| format!("{at}: {a} vs {b}")),
    }
}

fn example(name: &str) -> String {
    std::fs::read_to_string(testkit::paths::root().join("examples/rehearsal").join(name)).unwrap()
}

/// Puts `text` in a textarea as a person typing would (an `input` event follows).
fn type_into(b: &Browser, id: &str, text: &str) {
    b.eval(&format!(
        "const e = document.getElementById({}); e.value = {}; e.dispatchEvent(new Event('input')); return true;",
        json!(id),
        json!(text)
    ));
}

fn open_console(b: &Browser, admin: u16) {
    b.goto(&format!("http://127.0.0.1:{admin}/console/"));
    b.wait_for("the console's engine", "window.switchyard && window.switchyard.ready", Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_rehearses_exactly_as_the_command_line_does() {
    let _one = ONE_BROWSER.lock().await;
    let sidecar = testbed::sidecar::Sidecar::start(None).await;
    let admin = sidecar.admin;
    let (page_report, cli_report) = tokio::task::spawn_blocking(move || {
        let b = Browser::start(1400, 2200);
        open_console(&b, admin);
        type_into(&b, "config", &example("plugin.json"));
        type_into(&b, "scenario", &example("slow-canary.yaml"));
        b.eval("document.getElementById('run').click(); return true;");
        b.wait_for("the rehearsal", "document.body.dataset.rehearsal === 'done'", Duration::from_secs(60));
        let page: Value = serde_json::from_str(b.eval("return JSON.stringify(window.switchyard.report)").as_str().unwrap()).unwrap();
        b.screenshot(&screenshots().join("rehearse.png"));

        // The page answers the filter's polls with the sidecar's live snapshot: so does the
        // command line here.
        let snapshot = testkit::http::get(admin, "/v1/snapshot").unwrap();
        assert_eq!(snapshot.status, 200, "{}", snapshot.body);
        let snapshot_file = std::env::temp_dir().join(format!("switchyard-console-snapshot-{admin}.json"));
        std::fs::write(&snapshot_file, &snapshot.body).unwrap();
        let out = std::process::Command::new(rehearse_bin())
            .current_dir(testkit::paths::root())
            .args(["--config", "examples/rehearsal/plugin.json", "--scenario", "examples/rehearsal/slow-canary.yaml", "--format", "json"])
            .arg("--snapshot")
            .arg(&snapshot_file)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&snapshot_file);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
        (page, cli)
    })
    .await
    .unwrap();
    assert!(page_report["requests"].as_f64().unwrap() > 10_000.0);
    if let Some(at) = first_difference(&page_report, &cli_report, "") {
        panic!("the page and the command line disagree at {at}");
    }
    drop(sidecar);
}

/// An access log in the README's format: 3,000 requests over 15 s from 400 users, one in
/// ten sending the canary's group.
fn access_log() -> String {
    let mut log = String::new();
    for i in 0..3_000u32 {
        let ms = i * 5;
        let group = if i % 10 == 0 { "canary" } else { "-" };
        log.push_str(&format!(
            "[2026-12-01T10:00:{:02}.{:03}Z] \"/features.v1.FeatureExtractionService/ExtractRealtime\" 0 via_upstream upstream=features_stable switchyard=\"target=stable; reason=weight\" 20ms user=u{} group={group} revision=- timeout=- priority=-\n",
            ms / 1000,
            ms % 1000,
            i % 400
        ));
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_replays_an_access_log_as_the_command_line_does() {
    let _one = ONE_BROWSER.lock().await;
    let sidecar = testbed::sidecar::Sidecar::start(None).await;
    let admin = sidecar.admin;
    let dir = tempfile::tempdir().unwrap();
    let (log, scenario) = (dir.path().join("access.log"), dir.path().join("replay.yaml"));
    std::fs::write(&log, access_log()).unwrap();
    let text = "seed: 3\nduration_s: 20\nfleet: {envoys: 2, workers: 2, build: wasm}\ntraffic: {replay: access.log}\n";
    std::fs::write(&scenario, text).unwrap();
    let (page, cli) = tokio::task::spawn_blocking(move || {
        let b = Browser::start(1400, 2200);
        open_console(&b, admin);
        type_into(&b, "config", &example("plugin.json"));
        type_into(&b, "scenario", text);
        // Without the log: refused, saying what to do.
        b.eval("document.getElementById('run').click(); return true;");
        b.wait_for("the refusal", "document.body.dataset.rehearsal === 'error'", Duration::from_secs(10));
        let message = b.eval("return document.getElementById('scenario-error').textContent");
        assert!(message.as_str().unwrap().contains("choose it"), "{message}");

        b.upload("replay-log", &log);
        b.wait_for("the log read", "document.body.dataset.replayLog === 'loaded'", Duration::from_secs(10));
        b.eval("document.getElementById('run').click(); return true;");
        b.wait_for("the replay", "document.body.dataset.rehearsal === 'done'", Duration::from_secs(60));
        let page: Value = serde_json::from_str(b.eval("return JSON.stringify(window.switchyard.report)").as_str().unwrap()).unwrap();

        let snapshot = testkit::http::get(admin, "/v1/snapshot").unwrap();
        let snapshot_file = dir.path().join("snapshot.json");
        std::fs::write(&snapshot_file, &snapshot.body).unwrap();
        let out = std::process::Command::new(rehearse_bin())
            .current_dir(testkit::paths::root())
            .args(["--config", "examples/rehearsal/plugin.json", "--format", "json"])
            .arg("--scenario")
            .arg(&scenario)
            .arg("--snapshot")
            .arg(&snapshot_file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
        (page, cli)
    })
    .await
    .unwrap();
    assert_eq!(page["requests"], 3_000);
    if let Some(at) = first_difference(&page, &cli, "") {
        panic!("the page and the command line disagree at {at}");
    }
    drop(sidecar);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_shown_where_it_is_wrong() {
    let _one = ONE_BROWSER.lock().await;
    let sidecar = testbed::sidecar::Sidecar::start(None).await;
    let admin = sidecar.admin;
    tokio::task::spawn_blocking(move || {
        let b = Browser::start(1400, 1400);
        open_console(&b, admin);
        type_into(&b, "config", &example("plugin.json").replacen("\"weight\"", "\"wieght\"", 1));
        let shown = b.wait_for(
            "the configuration error",
            "!document.getElementById('config-error').hidden && document.getElementById('config-error').textContent",
            Duration::from_secs(10),
        );
        assert!(shown.as_str().unwrap().contains("routes[0].targets[0].wieght"), "{shown}");

        type_into(&b, "config", &example("plugin.json"));
        b.wait_for("the error to clear", "document.getElementById('config-error').hidden", Duration::from_secs(10));
        // Too large for a tab: refused with the limit, at once.
        type_into(&b, "scenario", "duration_s: 86400\nsample_ms: 60000\ntraffic: {rate: [{at_s: 0, rps: 100000}]}\n");
        b.eval("document.getElementById('run').click(); return true;");
        b.wait_for("the refusal", "document.body.dataset.rehearsal === 'error'", Duration::from_secs(10));
        let message = b.eval("return document.getElementById('scenario-error').textContent");
        assert!(message.as_str().unwrap().contains("traffic.rate") && message.as_str().unwrap().contains("20000000"), "{message}");
        b.screenshot(&screenshots().join("rehearse-error.png"));
    })
    .await
    .unwrap();
    drop(sidecar);
}

/// A canary made 1,200 ms slower degrades; the model's own 300–500 ms on a loaded 2-core
/// machine does not.
const DEGRADE: &str = r#", "degrade": {"slow_consecutive": 3, "slow_threshold_ms": 1000,
    "error_rate_pct": 20, "error_window_s": 10, "error_min_requests": 10,
    "cooldown_ms": 1500, "probe_share_pct": 50, "probe_successes": 3}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_shows_a_canary_degrade_and_come_back() {
    let _one = ONE_BROWSER.lock().await;
    let config = SidecarStack::plugin_config(DEGRADE, "");
    let config = [r#", "revision": "features.v1@1""#, r#", "revision": "features.v1@3""#, r#", "revision": "features.v1@2""#]
        .iter()
        .fold(config, |c, r| c.replace(r, ""));
    let stack = SidecarStack::start_with_console(&config).await;
    let traffic = Traffic::start_with_image(&stack.envoy.url(), &[("x-ab-group", "canary")], 4, page(0)).await;
    let admin = stack.sidecar.admin;
    let stats = testkit::http::get(admin, "/console/api/envoy/stats").unwrap();
    assert_eq!(stats.status, 200, "the sidecar reads Envoy's stats: {}", stats.body);
    let browser = tokio::task::spawn_blocking(move || {
        let b = Browser::start(1400, 1600);
        b.goto(&format!("http://127.0.0.1:{admin}/console/#live"));
        b.wait_for("live samples", "window.switchyard.live.samples >= 2", Duration::from_secs(30));
        b.wait_for("the canary in the live view", "window.switchyard.live.states['features/canary'] === 'healthy'", Duration::from_secs(30));
        b
    })
    .await
    .unwrap();

    stack.sidecar.chaos(json!({"target": CANARY, "latency_ms": 1200}));
    let browser = tokio::task::spawn_blocking(move || {
        browser.wait_for("the canary degraded", "window.switchyard.live.states['features/canary'] === 'degraded'", Duration::from_secs(20));
        browser
    })
    .await
    .unwrap();
    stack.sidecar.clear_chaos();
    tokio::task::spawn_blocking(move || {
        // Probes that fail while the canary's queue drains double its cool-down.
        browser.wait_for("the canary back", "window.switchyard.live.states['features/canary'] === 'healthy'", Duration::from_secs(60));
        // Each move with the rule that fired (the filter counts them per target and rule).
        browser.wait_for(
            "the rules named",
            "window.switchyard.live.transitions.filter(t => t.to === 'healthy').every(t => t.rule)",
            Duration::from_secs(10),
        );
        let seen = browser.eval("return window.switchyard.live.transitions.map(t => `${t.from}->${t.to} (${t.rule})`).join(',')");
        let seen = seen.as_str().unwrap_or_default().to_owned();
        assert!(seen.contains("healthy->degraded (slow_responses)"), "{seen}");
        assert!(seen.contains("->healthy (probes_passed)"), "{seen}");
        let text = browser.eval("return document.getElementById('live-transitions').textContent");
        assert!(text.as_str().unwrap_or_default().contains("(slow_responses)"), "{text}");
        browser.screenshot(&screenshots().join("live.png"));
    })
    .await
    .unwrap();
    drop(traffic);
}
