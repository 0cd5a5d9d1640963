//! The fleet's scenario, in the order it runs: sticky agreement, steady traffic, a slow
//! canary on every host and its recovery, a schema revision rolled out as a ConfigMap
//! update, and one host's sidecar killed mid-traffic. Every figure comes from what clients
//! saw (the decision header, the answering host, the status) or from the front's own view.

use super::front;
use super::host::next_revisions;
use super::load::{Decision, Sample};
use super::report::{Degrade, HostDegrade, Report, Row, Schema, SidecarKill, Sticky};
use super::Fleet;
use crate::sidecar::CANARY;
use anyhow::{bail, Result};
use std::time::{Duration, Instant};

/// How the scenario is run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Requests per second through the front (all hosts together).
    pub rps: u32,
    /// Users whose sticky target every host is asked for.
    pub users: usize,
    /// The canary's added latency while it is "slow" (the filter's rule: 5 × 800 ms).
    pub slow_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { rps: 30, users: 1000, slow_ms: 1200 }
    }
}

/// The revision the roll-out adds, as clients declare it.
const NEW_REVISION: &str = "features.v1@3";

pub async fn run(fleet: &mut Fleet, options: &Options) -> Result<Report> {
    let began = Instant::now();
    let hosts = fleet.hosts.len();

    eprintln!("fleet: sticky agreement over {} users on {hosts} hosts", options.users);
    let sticky = sticky(fleet, options.users).await?;

    eprintln!("fleet: steady traffic, {} requests/s through the front", options.rps);
    fleet.load.set_rate(options.rps);
    tokio::time::sleep(Duration::from_secs(4)).await;

    eprintln!("fleet: the canary turns slow (+{} ms) on every host", options.slow_ms);
    let degrade = degrade(fleet, options).await?;

    eprintln!("fleet: rolling out {NEW_REVISION} as a ConfigMap update (..data swap) on every host");
    let (schema_propagation_ms, schema) = schema(fleet).await?;

    eprintln!("fleet: killing one host's sidecar mid-traffic");
    let kill = kill(fleet).await?;

    let samples = fleet.load.samples();
    let mut table: Vec<Row> = (0..hosts)
        .map(|i| {
            let mut row = row(&format!("h{}", i + 1), samples.iter().filter(|s| s.host == Some(i)));
            row.degrade_reaction_ms = degrade.per_host.get(i).and_then(|d| d.degrade_reaction_ms);
            row.restore_ms = degrade.per_host.get(i).and_then(|d| d.restore_ms);
            row.schema_ms = schema.per_host_ms.get(i).copied();
            row
        })
        .collect();
    table.push(row("all", samples.iter()));
    let agreement = sticky.0;
    Ok(Report {
        hosts,
        filter: match fleet.build {
            crate::envoy::Build::Wasm => "wasm".into(),
            crate::envoy::Build::Native => "native".into(),
        },
        load_rps: options.rps,
        sticky_agreement: agreement,
        sticky: sticky.1,
        degrade,
        schema_propagation_ms,
        schema,
        sidecar_kill: kill,
        table,
        duration_s: began.elapsed().as_secs_f64(),
    })
}

/// Asks every host where each of `users` goes; the share on which all agree.
async fn sticky(fleet: &Fleet, users: usize) -> Result<(f64, Sticky)> {
    let requests = (0..users).map(|u| vec![("x-user-id".to_owned(), format!("sticky-{u}"))]).collect();
    let decisions = fleet.load.decide_on_every_host(requests).await?;
    let first = decisions.first().cloned().unwrap_or_default();
    let agreed = (0..users)
        .filter(|&u| {
            let target = first.get(u).and_then(|d| d.target.clone());
            target.is_some() && decisions.iter().all(|host| host.get(u).and_then(|d| d.target.clone()) == target)
        })
        .count();
    let canary_share = decisions
        .iter()
        .map(|host| host.iter().filter(|d| d.is("canary")).count() as f64 / users.max(1) as f64)
        .collect();
    Ok((agreed as f64 / users.max(1) as f64, Sticky { users, canary_share }))
}

async fn degrade(fleet: &Fleet, options: &Options) -> Result<Degrade> {
    let hosts = fleet.hosts.len();
    for host in &fleet.hosts {
        host.chaos(CANARY, options.slow_ms)?;
    }
    let slowed = Instant::now();
    wait_every_host(fleet, "every host to divert the slow canary's traffic (reason=degraded)", Duration::from_secs(45), |s| {
        s.sent > slowed && s.decision.because("degraded")
    })
    .await?;
    for host in &fleet.hosts {
        host.clear_chaos()?;
    }
    let cleared = Instant::now();
    wait_every_host(fleet, "every host to send the canary its ordinary traffic again", Duration::from_secs(60), |s| {
        s.sent > cleared && s.decision.is("canary") && s.decision.because("weight")
    })
    .await?;

    let samples = fleet.load.samples();
    let ms = |from: Instant, at: Option<Instant>| at.map(|t| t.saturating_duration_since(from).as_millis() as u64);
    let per_host = (0..hosts)
        .map(|i| {
            let mine = || samples.iter().filter(move |s| s.host == Some(i));
            let slow: Vec<&Sample> = mine()
                .filter(|s| s.sent > slowed && s.sent < cleared && s.decision.is("canary") && s.decision.because("weight"))
                .collect();
            HostDegrade {
                host: format!("h{}", i + 1),
                slow_canary_requests: slow.len(),
                degrade_reaction_ms: ms(slowed, slow.iter().map(|s| s.sent).max()),
                first_diverted_ms: ms(slowed, mine().filter(|s| s.sent > slowed && s.decision.because("degraded")).map(|s| s.sent).min()),
                probe_ms: ms(cleared, mine().filter(|s| s.sent > cleared && s.decision.because("probe")).map(|s| s.sent).min()),
                restore_ms: ms(
                    cleared,
                    mine().filter(|s| s.sent > cleared && s.decision.is("canary") && s.decision.because("weight")).map(|s| s.sent).min(),
                ),
                slow_transitions: fleet.hosts[i]
                    .filter_stat(fleet.build, "switchyard.route.features.target.canary.transitions.slow_responses"),
            }
        })
        .collect();
    Ok(Degrade { fault: format!("{CANARY} +{} ms on every host", options.slow_ms), per_host })
}

/// Waits until, for every host, some answer from it satisfies `pred`.
async fn wait_every_host(fleet: &Fleet, what: &str, within: Duration, pred: impl Fn(&Sample) -> bool) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let samples = fleet.load.samples();
        let missing: Vec<usize> = (0..fleet.hosts.len()).filter(|&i| !samples.iter().any(|s| s.host == Some(i) && pred(s))).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}; still waiting for hosts {:?}", missing.iter().map(|i| i + 1).collect::<Vec<_>>());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rolls the new revision out; the time from the first swap to the last host routing by it.
async fn schema(fleet: &mut Fleet) -> Result<(u64, Schema)> {
    let header = || vec![("x-schema-revision".to_owned(), NEW_REVISION.to_owned())];
    for i in 0..fleet.hosts.len() {
        let d = fleet.load.decide(i, header()).await?;
        if !d.because("unknown_revision") {
            bail!("before the roll-out, h{} routed {NEW_REVISION} as {d:?}, not as an unknown revision", i + 1);
        }
    }
    let revisions = next_revisions();
    let mut swapped = Vec::new();
    for host in &mut fleet.hosts {
        host.roll_out(&revisions)?;
        swapped.push(Instant::now());
    }
    let first_swap = swapped.first().copied().unwrap_or_else(Instant::now);
    let load = &fleet.load;
    let hosts = &fleet.hosts;
    let routed = futures::future::join_all((0..fleet.hosts.len()).map(|i| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let d: Decision = load.decide(i, header()).await?;
            if d.target.is_some() && !d.because("unknown_revision") {
                return Ok::<Instant, anyhow::Error>(Instant::now());
            }
            if Instant::now() > deadline {
                let host = &hosts[i];
                let revisions = host.snapshot().map(|s| s["schema"]["subjects"]["features.v1"]["revisions"].clone());
                bail!(
                    "h{} still treats {NEW_REVISION} as unknown 20 s after the swap ({d:?}); its registry has {revisions:?}; its volume has {:?}; the sidecar's log ends:\n{}",
                    i + 1,
                    std::fs::read_dir(host.volume_dir()).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
                    crate::envoy::tail(&host.sidecar_log(), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    let per_host_ms = routed.iter().zip(&swapped).map(|(r, s)| r.saturating_duration_since(*s).as_millis() as u64).collect();
    let last = routed.iter().copied().max().unwrap_or(first_swap);
    let fingerprints = fleet
        .hosts
        .iter()
        .map(|h| {
            let snapshot = h.snapshot()?;
            let revisions = &snapshot["schema"]["subjects"]["features.v1"]["revisions"];
            let fingerprint = revisions
                .as_array()
                .and_then(|r| r.iter().find(|r| r["revision"] == 3))
                .and_then(|r| r["fingerprint"].as_str())
                .unwrap_or("")
                .to_owned();
            Ok(fingerprint)
        })
        .collect::<Result<Vec<String>>>()?;
    let one_fingerprint = fingerprints.first().is_some_and(|f| !f.is_empty() && fingerprints.iter().all(|g| g == f));
    let propagation = last.saturating_duration_since(first_swap).as_millis() as u64;
    Ok((propagation, Schema { revision: NEW_REVISION.into(), per_host_ms, fingerprints, one_fingerprint }))
}

async fn kill(fleet: &mut Fleet) -> Result<SidecarKill> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = fleet.hosts.len() - 1;
    let address = fleet.hosts[victim].envoy.listener;
    let mut last = front::view(&fleet.front, address);
    let killed = Instant::now();
    fleet.hosts[victim].kill_sidecar();
    let (mut stopped, mut ejected) = (None, None);
    while killed.elapsed() < Duration::from_secs(5) {
        let now = front::view(&fleet.front, address);
        if let Some(v) = &now {
            if last.as_ref().is_some_and(|l| v.rq_total > l.rq_total) {
                stopped = Some(Instant::now());
            }
            if ejected.is_none() && !v.health_flags.is_empty() {
                ejected = Some(Instant::now());
            }
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let what is in flight finish, then stop the traffic.
    fleet.load.set_rate(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let samples = fleet.load.samples();
    let in_flight: Vec<&Sample> = samples.iter().filter(|s| s.sent < killed && s.done > killed).collect();
    let after: Vec<&Sample> = samples.iter().filter(|s| s.sent >= killed).collect();
    let ms = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(killed).as_millis() as u64);
    Ok(SidecarKill {
        host: format!("h{}", victim + 1),
        in_flight_at_kill: in_flight.len(),
        failed_in_flight: in_flight.iter().filter(|s| s.code != tonic::Code::Ok).count(),
        failed_requests: after.iter().filter(|s| s.code != tonic::Code::Ok).count(),
        requests_after_kill: after.len(),
        front_stopped_sending_ms: ms(stopped).unwrap_or(0),
        front_ejected_ms: ms(ejected),
        health_flags: last.map(|v| v.health_flags).unwrap_or_default(),
    })
}

/// One row of the headline table from the answers of one host (or all).
fn row<'a>(host: &str, samples: impl Iterator<Item = &'a Sample>) -> Row {
    let samples: Vec<&Sample> = samples.collect();
    let n = samples.len().max(1) as f64;
    let share = |t: &str| 100.0 * samples.iter().filter(|s| s.decision.is(t)).count() as f64 / n;
    let mut latencies: Vec<f64> =
        samples.iter().filter(|s| s.code == tonic::Code::Ok).map(|s| (s.done - s.sent).as_secs_f64() * 1000.0).collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or(0.0);
    Row {
        host: host.to_owned(),
        requests: samples.len(),
        stable_pct: share("stable"),
        canary_pct: share("canary"),
        fallback_pct: share("fallback"),
        failed: samples.iter().filter(|s| s.code != tonic::Code::Ok).count(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        degrade_reaction_ms: None,
        restore_ms: None,
        schema_ms: None,
    }
}
