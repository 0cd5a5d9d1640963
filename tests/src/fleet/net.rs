//! Hosts on one machine: Linux network namespaces joined by veth pairs on one bridge.
//!
//! Every node (host, front, load generator) is a namespace with its own loopback and one
//! interface, `eth0`, on a private /24; the other end of its veth pair is a port of a bridge
//! that lives in a namespace of its own, so nothing of the machine's own networking is
//! touched but one leg for the harness (`syf<pid>`, `.1`), which reads admin ports and stats
//! over it. Processes start in a namespace with `ip netns exec`; the harness's own sockets
//! enter one from a thread that called `setns` ([`Namespace::run`]). Everything is deleted on
//! drop, and namespaces left by a run that died are deleted by the next one.

use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;

/// The bridge and the harness's leg on it.
pub struct Network {
    prefix: String,
    subnet: [u8; 3],
    lan: String,
    namespaces: Vec<String>,
}

/// One node: a namespace with its address on the bridge.
#[derive(Clone, Debug)]
pub struct Namespace {
    pub name: String,
    pub address: Ipv4Addr,
}

impl Network {
    /// A new bridge on `10.213.<k>.0/24`, `k` chosen from this process's id.
    pub fn create() -> Result<Network> {
        require_root()?;
        remove_stale();
        let pid = std::process::id();
        let prefix = format!("syf{pid}");
        let k = (pid % 250 + 1) as u8;
        let mut net = Network { prefix: prefix.clone(), subnet: [10, 213, k], lan: format!("{prefix}-lan"), namespaces: Vec::new() };
        ip(&["netns", "add", &net.lan])?;
        net.namespaces.push(net.lan.clone());
        ip(&["-n", &net.lan, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.lan, "link", "set", "br0", "up"])?;
        // The harness's leg stays in this namespace.
        let (leg, port) = (prefix.clone(), format!("{prefix}b"));
        ip(&["link", "add", &leg, "type", "veth", "peer", "name", &port])?;
        net.attach(&port)?;
        ip(&["addr", "add", &format!("{}/24", net.address(1)), "dev", &leg])?;
        ip(&["link", "set", &leg, "up"])?;
        Ok(net)
    }

    /// `10.213.<k>.<host>`.
    pub fn address(&self, host: u8) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, host)
    }

    /// A new node `name` (a few letters) at `.host`, up, with its loopback up.
    pub fn node(&mut self, name: &str, host: u8) -> Result<Namespace> {
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        let (inside, port) = (format!("{}{name}", self.prefix), format!("{}{name}b", self.prefix));
        ip(&["link", "add", &inside, "type", "veth", "peer", "name", &port])?;
        self.attach(&port)?;
        ip(&["link", "set", &inside, "netns", &ns])?;
        ip(&["-n", &ns, "link", "set", &inside, "name", "eth0"])?;
        let address = self.address(host);
        ip(&["-n", &ns, "addr", "add", &format!("{address}/24"), "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(Namespace { name: ns, address })
    }

    fn attach(&self, port: &str) -> Result<()> {
        ip(&["link", "set", port, "netns", &self.lan])?;
        ip(&["-n", &self.lan, "link", "set", port, "master", "br0"])?;
        ip(&["-n", &self.lan, "link", "set", port, "up"])
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and with them their peers.
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = Command::new("ip").args(["link", "del", &self.prefix]).stderr(std::process::Stdio::null()).status();
    }
}

impl Namespace {
    /// `ip netns exec <ns> <program>`: the program runs in this namespace (`ip` execs it, so
    /// the child's pid is the program's).
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `f` on a thread inside this namespace: sockets it opens are this node's (its
    /// loopback, its address).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter()?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("a thread in {} panicked", self.name))?
        })
    }

    /// Moves the calling thread into this namespace (threads it starts later inherit it).
    pub fn enter(&self) -> Result<()> {
        let path = format!("/var/run/netns/{}", self.name);
        let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        // SAFETY: setns on a valid namespace fd changes only this thread's network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({path}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the fleet builds network namespaces and veth pairs: it must run as root (CI and `cargo xtask test` do)");
    }
    let found = Command::new("ip").arg("-V").output().map(|o| o.status.success()).unwrap_or(false);
    if !found {
        bail!("`ip` (Debian's iproute2) is missing: `cargo xtask setup` installs it");
    }
    Ok(())
}

/// Deletes the namespaces of fleets whose process is gone.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(pid) = name.strip_prefix("syf").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
            let _ = Command::new("ip").args(["link", "del", &format!("syf{pid}")]).stderr(std::process::Stdio::null()).status();
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip (Debian's iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
