//! `target/fleet/report.json`: what a fleet run measured, and its headline table.

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Report {
    pub hosts: usize,
    /// `wasm` or `native`.
    pub filter: String,
    /// Requests per second through the front, spread over every host.
    pub load_rps: u32,
    /// Share of users whose target is the same on every host (must be 1.0).
    pub sticky_agreement: f64,
    pub sticky: Sticky,
    pub degrade: Degrade,
    /// From the first host's `..data` swap to the last host routing by the new revision.
    pub schema_propagation_ms: u64,
    pub schema: Schema,
    pub sidecar_kill: SidecarKill,
    /// Every request through the front over the whole run, per host.
    pub table: Vec<Row>,
    pub duration_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Sticky {
    pub users: usize,
    /// Share of users each host sent to the canary (its weight is 20 %).
    pub canary_share: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct Degrade {
    /// The fault, applied on every host at once.
    pub fault: String,
    pub per_host: Vec<HostDegrade>,
}

#[derive(Debug, Serialize)]
pub struct HostDegrade {
    pub host: String,
    /// Canary requests this host routed while the canary was slow, before it stopped.
    pub slow_canary_requests: usize,
    /// From "the canary is slow on every host" to the last request this host sent it
    /// (`null` if it sent none).
    pub degrade_reaction_ms: Option<u64>,
    /// ... to the first request it sent the fallback instead (`reason=degraded`).
    pub first_diverted_ms: Option<u64>,
    /// From "the fault is cleared on every host" to this host's first probe of the canary.
    pub probe_ms: Option<u64>,
    /// ... to its first ordinary (`reason=weight`) canary request again: restored.
    pub restore_ms: Option<u64>,
    /// The filter's own count of the canary's move to degraded by the slow-responses rule.
    pub slow_transitions: u64,
}

#[derive(Debug, Serialize)]
pub struct Schema {
    /// The revision rolled out and the header clients send for it.
    pub revision: String,
    /// Per host, from its own swap to routing by the new revision.
    pub per_host_ms: Vec<u64>,
    /// The new revision's fingerprint as each host's snapshot has it.
    pub fingerprints: Vec<String>,
    pub one_fingerprint: bool,
}

#[derive(Debug, Serialize)]
pub struct SidecarKill {
    pub host: String,
    /// Requests (to any host) sent before the kill and not answered when it happened.
    pub in_flight_at_kill: usize,
    /// Of those, how many failed.
    pub failed_in_flight: usize,
    /// Requests sent after the kill that failed (must be 0: the front retries elsewhere).
    pub failed_requests: usize,
    pub requests_after_kill: usize,
    /// From the kill to the last request the front sent that host (retries included; 0 when
    /// it sent none after the kill).
    pub front_stopped_sending_ms: u64,
    /// From the kill to the front marking the host unhealthy or ejected.
    pub front_ejected_ms: Option<u64>,
    /// The front's health flags for the host at the end.
    pub health_flags: String,
}

/// One host's share of the run through the front.
#[derive(Debug, Serialize)]
pub struct Row {
    pub host: String,
    pub requests: usize,
    pub stable_pct: f64,
    pub canary_pct: f64,
    pub fallback_pct: f64,
    pub failed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub degrade_reaction_ms: Option<u64>,
    pub restore_ms: Option<u64>,
    pub schema_ms: Option<u64>,
}

impl Report {
    /// The headline table, as Markdown.
    pub fn table_markdown(&self) -> String {
        let ms = |v: Option<u64>| v.map_or("–".to_owned(), |v| format!("{v}"));
        let mut out = String::from(
            "| host | requests | stable | canary | fallback | failed | p50 ms | p99 ms | degraded after ms | restored after ms | new revision after ms |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for r in &self.table {
            out.push_str(&format!(
                "| {} | {} | {:.1} % | {:.1} % | {:.1} % | {} | {:.1} | {:.1} | {} | {} | {} |\n",
                r.host,
                r.requests,
                r.stable_pct,
                r.canary_pct,
                r.fallback_pct,
                r.failed,
                r.p50_ms,
                r.p99_ms,
                ms(r.degrade_reaction_ms),
                ms(r.restore_ms),
                ms(r.schema_ms)
            ));
        }
        out
    }

    /// The figures the issue names, one per line.
    pub fn summary(&self) -> String {
        let k = &self.sidecar_kill;
        format!(
            "sticky_agreement = {:.4} ({} users)\n\
             degrade_reaction_ms per host = {:?}\n\
             schema_propagation_ms = {} (one fingerprint everywhere: {})\n\
             sidecar kill on {}: failed_requests = {} (in flight at the kill: {}, of which failed {}), \
             front stopped sending after {} ms, marked it unhealthy after {} ms\n",
            self.sticky_agreement,
            self.sticky.users,
            self.degrade.per_host.iter().map(|h| h.degrade_reaction_ms).collect::<Vec<_>>(),
            self.schema_propagation_ms,
            self.schema.one_fingerprint,
            k.host,
            k.failed_requests,
            k.in_flight_at_kill,
            k.failed_in_flight,
            k.front_stopped_sending_ms,
            k.front_ejected_ms.map_or("–".into(), |v| v.to_string()),
        )
    }
}
