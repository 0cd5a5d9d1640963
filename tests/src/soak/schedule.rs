//! What changes under the stack, and when. The 20-minute schedule, scaled to the run's
//! length with floors (a fault must last long enough for the filter to see it):
//!
//! | every (20 min) | event |
//! |---|---|
//! | 30 s | the canary model version hot-swapped (new file, new `SHA256SUMS` line); between swaps, in turn, a corrupt file or a checksum mismatch (both refused) |
//! | 60 s | a compatible schema revision; half-way between, a breaking one (refused, then removed) |
//! | 45 s | a changed plugin configuration through LDS (the canary's weight); half-way between, a broken one (refused) |
//! | 120 s | chaos on the canary: added latency for a while, then a share of errors |
//! | once | the sidecar: SIGTERM (drain), then started again |
//! | once | Envoy: hot restart (`--restart-epoch`) |

use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new canary model file (a real model, its bytes changed by `n`) and its manifest line.
    ModelSwap(u64),
    /// A file that is no model, with a matching manifest line.
    ModelCorrupt,
    /// A real model whose manifest line does not match.
    ModelChecksumMismatch,
    /// A compatible revision `features.v1@n`.
    SchemaCompatible(u64),
    /// A revision that breaks the latest one.
    SchemaBreaking,
    /// The plugin configuration with the canary at this weight.
    ConfigChanged(u32),
    /// A plugin configuration Envoy must refuse.
    ConfigBroken,
    ChaosLatency,
    ChaosErrors,
    ChaosOff,
    SidecarRestart,
    EnvoyHotRestart,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::ModelSwap(_) => "model_swap",
            Event::ModelCorrupt => "model_corrupt",
            Event::ModelChecksumMismatch => "model_checksum_mismatch",
            Event::SchemaCompatible(_) => "schema_compatible",
            Event::SchemaBreaking => "schema_breaking",
            Event::ConfigChanged(_) => "config_changed",
            Event::ConfigBroken => "config_broken",
            Event::ChaosLatency => "chaos_latency",
            Event::ChaosErrors => "chaos_errors",
            Event::ChaosOff => "chaos_off",
            Event::SidecarRestart => "sidecar_restart",
            Event::EnvoyHotRestart => "envoy_hot_restart",
        }
    }

    /// Whether the event replaces or refuses a model file (the "during swaps" windows).
    pub fn is_model_file(&self) -> bool {
        matches!(self, Event::ModelSwap(_) | Event::ModelCorrupt | Event::ModelChecksumMismatch)
    }
}

/// The warm-up before the first event: traffic only.
pub fn warm_up(total: Duration) -> Duration {
    scaled(total, 120, 20)
}

/// Every event of a run of `total`, in time order (offsets from the start of the traffic).
pub fn plan(total: Duration) -> Vec<(Duration, Event)> {
    let end = total.saturating_sub(scaled(total, 60, 10));
    let start = warm_up(total);
    let mut plan = Vec::new();
    let every = |period: Duration, offset: Duration| {
        (0u32..).map(move |k| start + offset + period * k).take_while(move |t| *t < end)
    };

    let swap = scaled(total, 30, 8);
    for (k, at) in every(swap, Duration::ZERO).enumerate() {
        plan.push((at, Event::ModelSwap(k as u64 + 1)));
        match k % 4 {
            1 => plan.push((at + swap / 2, Event::ModelCorrupt)),
            3 => plan.push((at + swap / 2, Event::ModelChecksumMismatch)),
            _ => {}
        }
    }
    let schema = scaled(total, 60, 16);
    for (k, at) in every(schema, schema / 4).enumerate() {
        plan.push((at, Event::SchemaCompatible(k as u64 + 3)));
        plan.push((at + schema / 2, Event::SchemaBreaking));
    }
    let config = scaled(total, 45, 12);
    for (k, at) in every(config, config / 3).enumerate() {
        plan.push((at, Event::ConfigChanged(if k % 2 == 0 { 20 } else { 10 })));
        plan.push((at + config / 2, Event::ConfigBroken));
    }
    let chaos = scaled(total, 120, 40);
    let fault = scaled(total, 20, 12);
    for at in every(chaos, chaos / 6).filter(|at| *at + chaos / 2 + fault < end) {
        plan.push((at, Event::ChaosLatency));
        plan.push((at + fault, Event::ChaosOff));
        plan.push((at + chaos / 2, Event::ChaosErrors));
        plan.push((at + chaos / 2 + fault, Event::ChaosOff));
    }
    plan.push((total * 7 / 20, Event::SidecarRestart));
    plan.push((total * 7 / 10, Event::EnvoyHotRestart));
    plan.retain(|(at, _)| *at < end);
    plan.sort_by_key(|(at, _)| *at);
    plan
}

/// `seconds` of the 20-minute schedule scaled to `total`, at least `floor` seconds.
fn scaled(total: Duration, seconds: u64, floor: u64) -> Duration {
    let factor = total.as_secs_f64() / 1200.0;
    Duration::from_secs_f64((seconds as f64 * factor).max(floor as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_schedule_swaps_every_30_s_and_restarts_once() {
        let plan = plan(Duration::from_secs(1200));
        let swaps: Vec<Duration> = plan.iter().filter(|(_, e)| matches!(e, Event::ModelSwap(_))).map(|(t, _)| *t).collect();
        assert!(swaps.windows(2).all(|w| w[1] - w[0] == Duration::from_secs(30)), "{swaps:?}");
        assert!(swaps.len() >= 30, "{}", swaps.len());
        assert_eq!(plan.iter().filter(|(_, e)| *e == Event::SidecarRestart).count(), 1);
        assert_eq!(plan.iter().filter(|(_, e)| *e == Event::EnvoyHotRestart).count(), 1);
        assert!(plan.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn a_two_minute_schedule_still_has_every_kind_of_event() {
        let plan = plan(Duration::from_secs(120));
        for name in [
            "model_swap", "model_corrupt", "model_checksum_mismatch", "schema_compatible", "schema_breaking", "config_changed",
            "config_broken", "chaos_latency", "chaos_errors", "chaos_off", "sidecar_restart", "envoy_hot_restart",
        ] {
            assert!(plan.iter().any(|(_, e)| e.name() == name), "no {name} in {plan:?}");
        }
    }
}
