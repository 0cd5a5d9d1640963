//! A fleet on real network hosts, on one machine (`cargo xtask fleet`, `tests/tests/fleet.rs`).
//!
//! N hosts, each a network namespace with its own address running the per-host topology (the
//! real sidecar with three model versions and a registry watching a ConfigMap-style volume,
//! Envoy with the filter in front of it); a front Envoy in its own namespace balancing over
//! them with health checks; a load generator in another. The [`scenario`] drives them and
//! measures what only a fleet shows: whether hosts deciding alone agree, how each one reacts
//! to a canary turning bad when the traffic is spread thin, how a schema revision reaches
//! every host, and what a client sees when one host's sidecar dies.

mod front;
mod host;
mod load;
mod net;
mod proxy;
pub mod report;
pub mod scenario;

use crate::envoy::Build;
use anyhow::{bail, Context, Result};
use host::Host;
use load::Load;
use net::Network;
use proxy::Proxy;
use std::time::{Duration, Instant};

/// Everything a fleet runs. Dropped in field order: traffic first, the network last.
pub struct Fleet {
    load: Load,
    front: Proxy,
    hosts: Vec<Host>,
    build: Build,
    _network: Network,
}

impl Fleet {
    /// Builds the network and starts every part; returns once the front sees every host
    /// healthy and every host's filter has its snapshot.
    pub async fn start(hosts: usize, build: Build) -> Result<Fleet> {
        if !(1..=200).contains(&hosts) {
            bail!("--hosts {hosts}: between 1 and 200");
        }
        let mut network = Network::create()?;
        let front_ns = network.node("f", 2)?;
        let load_ns = network.node("ld", 3)?;
        let mut namespaces = Vec::new();
        for i in 0..hosts {
            namespaces.push(network.node(&format!("h{}", i + 1), 11 + i as u8)?);
        }
        // The hosts start together: most of a host's start is its sidecar loading models.
        let started = futures::future::join_all(
            namespaces.into_iter().enumerate().map(|(i, ns)| async move { Host::start(&format!("h{}", i + 1), ns, build).await }),
        )
        .await;
        let hosts = started.into_iter().collect::<Result<Vec<_>>>()?;
        for host in &hosts {
            host.wait_for_snapshot(build).await?;
        }
        let addresses: Vec<_> = hosts.iter().map(|h| h.envoy.listener).collect();
        let front = front::start(&front_ns, &addresses).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while front.stat("cluster.hosts.membership_healthy") != Some(hosts.len() as u64) {
            if Instant::now() > deadline {
                bail!("the front Envoy does not see every host healthy after 30 s: {:?}", front.stat("cluster.hosts.membership_healthy"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let image = crate::sidecar::page(0);
        let load = Load::start(&load_ns, front.listener, hosts.iter().map(|h| h.ns.address).collect(), image)
            .context("start the load generator")?;
        Ok(Fleet { load, front, hosts, build, _network: network })
    }

    /// Where a person finds each part (for `--keep`).
    pub fn describe(&self) -> String {
        let mut out = format!("front   {} (admin http://{}/)\n", self.front.listener, self.front.admin);
        for h in &self.hosts {
            out.push_str(&format!(
                "{:<7} {} (admin http://{}/), namespace {}, schema volume {}\n",
                h.name,
                h.envoy.listener,
                h.envoy.admin,
                h.ns.name,
                h.volume_dir().display()
            ));
        }
        out.push_str("Reach a host's sidecar with `ip netns exec <namespace> …` (its admin port is loopback-only).\n");
        out
    }
}
