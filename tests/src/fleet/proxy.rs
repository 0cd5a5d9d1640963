//! An Envoy in a fleet node: started in the node's namespace from a bootstrap the fleet
//! writes, its admin on the node's address so the harness reads stats over its leg.

use super::net::Namespace;
use crate::process::Process;
use crate::{admin, paths};
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Every Envoy of the fleet listens here, each in its own namespace.
pub const LISTENER_PORT: u16 = 10000;
pub const ADMIN_PORT: u16 = 9901;

/// A running Envoy. Killed on drop.
pub struct Proxy {
    process: Process,
    dir: tempfile::TempDir,
    pub admin: SocketAddr,
    pub listener: SocketAddr,
}

impl Proxy {
    /// Starts Envoy in `ns` with `listeners` and `clusters` (static), and waits until it is
    /// ready and its listener accepts connections.
    pub async fn start(ns: &Namespace, node: &str, listeners: Vec<Value>, clusters: Vec<Value>, concurrency: u32) -> Result<Proxy> {
        let dir = tempfile::tempdir()?;
        let admin = SocketAddr::from((ns.address, ADMIN_PORT));
        let bootstrap = json!({
            "node": {"id": node, "cluster": "switchyard-fleet"},
            "admin": {"address": {"socket_address": {"address": ns.address.to_string(), "port_value": ADMIN_PORT}}},
            "static_resources": {"listeners": listeners, "clusters": clusters},
        });
        let path = dir.path().join("bootstrap.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&bootstrap)?)?;
        let mut cmd = ns.command(&paths::envoy());
        cmd.current_dir(paths::root())
            .arg("-c")
            .arg(&path)
            .args(["--disable-hot-restart", "-l", "info", "--file-flush-interval-msec", "100"])
            .args(["--concurrency", &concurrency.to_string()])
            .arg("--log-path")
            .arg(dir.path().join("envoy.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Process::spawn(node, &mut cmd)?;
        let mut proxy = Proxy { process, dir, admin, listener: SocketAddr::from((ns.address, LISTENER_PORT)) };
        proxy.wait_ready().await?;
        Ok(proxy)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.process.exited() {
                bail!("Envoy {} exited during start-up ({status}); log:\n{}", self.process.name(), self.log());
            }
            let live = self.get("/ready").map(|r| r.status == 200).unwrap_or(false);
            if live && std::net::TcpStream::connect_timeout(&self.listener, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Envoy {} did not become ready in 60 s; log:\n{}", self.process.name(), self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET` on the admin port.
    pub fn get(&self, path: &str) -> std::io::Result<admin::Reply> {
        admin::request_to(self.admin, "GET", path, "", Duration::from_secs(5))
    }

    /// Every counter and gauge, by name.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        crate::envoy::parse_stats(&self.get("/stats").map(|r| r.body).unwrap_or_default())
    }

    pub fn stat(&self, name: &str) -> Option<u64> {
        self.stats().remove(name)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }
}

/// An HTTP listener on every address of the node (`0.0.0.0`): the harness's
/// `http_listener_json` with the node's network in place of loopback.
pub fn listener(name: &str, routes: Value, http_filters: Vec<Value>) -> Value {
    let mut l = crate::envoy::http_listener_json(name, LISTENER_PORT, routes, http_filters, json!([]));
    l["address"]["socket_address"]["address"] = json!("0.0.0.0");
    l
}
