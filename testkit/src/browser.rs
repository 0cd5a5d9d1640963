//! A real headless Chromium, driven through chromedriver's W3C WebDriver API (plain JSON
//! over HTTP, so no WebDriver crate): for tests of the console.
//!
//! Started as this machine needs it: `--headless --no-sandbox --disable-gpu` and, without
//! which it stalls on a closed network, `--disable-background-networking
//! --disable-component-update --disable-sync`, with a fresh profile.

use crate::http;
use crate::process::Process;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Browser {
    driver: SocketAddr,
    session: String,
    _chromedriver: Process,
    _profile: TempDir,
}

/// A directory removed on drop (the browser profile).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn chromium() -> PathBuf {
    let path = std::env::var("SWITCHYARD_CHROMIUM").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("/usr/bin/chromium"));
    assert!(path.exists(), "{} is missing: `cargo xtask setup` installs Debian's chromium and chromium-driver", path.display());
    path
}

impl Browser {
    /// Starts chromedriver and a browser session with a `width`×`height` window.
    pub fn start(width: u32, height: u32) -> Browser {
        let chrome = chromium();
        let driver_bin = std::env::var("SWITCHYARD_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        assert!(Path::new(&driver_bin).exists(), "{driver_bin} is missing: `cargo xtask setup` installs Debian's chromium-driver");
        let port = free_port();
        let chromedriver = Process::spawn(
            "chromedriver",
            Command::new(&driver_bin).arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()),
        )
        .expect("chromedriver starts");
        let driver = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http::request_to(driver, "GET", "/status", "", Duration::from_secs(2)).is_ok_and(|r| r.status == 200) {
            assert!(Instant::now() < deadline, "chromedriver did not answer /status within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = std::env::temp_dir().join(format!("switchyard-chromium-{}-{port}", std::process::id()));
        let _ = std::fs::create_dir_all(&profile);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={width},{height}"),
                ]
            }
        }}});
        let reply = http::request_to(driver, "POST", "/session", &caps.to_string(), Duration::from_secs(60)).expect("new session");
        let v: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        let session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("chromedriver refused a session: {}", reply.body)).to_string();
        Browser { driver, session, _chromedriver: chromedriver, _profile: TempDir(profile) }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let body = if body.is_null() { String::new() } else { body.to_string() };
        let reply = http::request_to(self.driver, method, &path, &body, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let v: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        if reply.status != 200 {
            panic!("WebDriver {method} {path} answered {}: {}", reply.status, reply.body);
        }
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body: `return …`) in the page and returns its value.
    pub fn eval(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", json!({ "script": script, "args": [] }))
    }

    /// Chooses the file at `path` in the page's file input `#id`, as a person picking it would.
    pub fn upload(&self, id: &str, path: &Path) {
        let element = self.call("POST", "/element", json!({ "using": "css selector", "value": format!("#{id}") }));
        let handle = element
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element #{id}: {element}"))
            .to_owned();
        self.call("POST", &format!("/element/{handle}/value"), json!({ "text": path.display().to_string() }));
    }

    /// Waits until `expression` is truthy in the page; panics with `what` after `within`.
    pub fn wait_for(&self, what: &str, expression: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(&format!("try {{ return ({expression}); }} catch (e) {{ return null; }}"));
            if !(v.is_null() || v == Value::Bool(false)) {
                return v;
            }
            if Instant::now() >= deadline {
                let status = self.eval("return document.getElementById('engine-status')?.textContent ?? document.title");
                panic!("timed out after {within:?} waiting for {what} ({expression}); page says {status}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let data = self.call("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD.decode(data.as_str().unwrap_or_default()).expect("a base64 screenshot");
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, png).expect("screenshot written");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = http::request_to(self.driver, "DELETE", &path, "", Duration::from_secs(10));
    }
}
