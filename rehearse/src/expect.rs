//! Expectations: what a rehearsal must show for a pipeline to go ahead.

use crate::report::{Checked, Report};
use crate::scenario::Expectation;

/// Default tolerance of a share expectation, in percentage points.
const SHARE_TOLERANCE_PCT: f64 = 2.0;

pub(crate) fn check(e: &Expectation, r: &Report) -> Checked {
    let (met, detail) = if let Some(max) = e.client_errors_max_pct {
        (r.client_error_pct <= max, format!("client-visible errors {:.2}% (at most {max}%)", r.client_error_pct))
    } else if let Some(within) = e.degraded_within_ms {
        reaction(r, e.target.as_deref().unwrap_or_default(), "degraded", within)
    } else if let Some(within) = e.restored_within_ms {
        reaction(r, e.target.as_deref().unwrap_or_default(), "restored", within)
    } else if let Some(want) = e.share_pct {
        share(r, e.target.as_deref().unwrap_or_default(), want, e.tolerance_pct.unwrap_or(SHARE_TOLERANCE_PCT), e.between_s)
    } else {
        (false, "states nothing".to_string())
    };
    Checked { expectation: e.clone(), met, detail }
}

fn reaction(r: &Report, target: &str, kind: &str, within: u64) -> (bool, String) {
    if !r.targets.iter().any(|t| t.name == target) {
        return (false, format!("{target}: no such target in the configuration"));
    }
    let of_target: Vec<_> = r.reactions.iter().filter(|x| x.target == target && x.kind == kind).collect();
    let turn = if kind == "degraded" { "slow, failing or hung" } else { "good again" };
    if of_target.is_empty() {
        return (false, format!("{target} {kind} within {within} ms: nothing in the scenario makes it {turn}"));
    }
    let worst = of_target.iter().try_fold(0.0f64, |m, x| x.after_ms.map(|a| m.max(a)));
    match worst {
        Some(ms) => (
            ms <= within as f64,
            format!("{target} {kind} within {within} ms: slowest Envoy after {ms:.0} ms ({} turn(s) × Envoys)", of_target.len()),
        ),
        None => {
            let missed = of_target.iter().filter(|x| x.after_ms.is_none()).count();
            (false, format!("{target} {kind} within {within} ms: {missed} of {} Envoy reaction(s) never came", of_target.len()))
        }
    }
}

fn share(r: &Report, target: &str, want: f64, tolerance: f64, between: Option<[f64; 2]>) -> (bool, String) {
    let Some(i) = r.targets.iter().position(|t| t.name == target) else {
        return (false, format!("{target}: no such target in the configuration"));
    };
    let [from, to] = between.unwrap_or([0.0, f64::INFINITY]);
    let mut total = 0u64;
    let mut mine = 0u64;
    let step = f64::from(r.sample_ms) / 1000.0;
    for (k, &end) in r.series.t_s.iter().enumerate() {
        // Points wholly inside the window.
        if end - step >= from - 1e-9 && end <= to + 1e-9 {
            total += r.series.requests.get(k).copied().unwrap_or(0);
            mine += r.series.targets.get(i).and_then(|t| t.requests.get(k)).copied().unwrap_or(0);
        }
    }
    let window = match between {
        Some([f, t]) => format!(" over {f}–{t} s"),
        None => String::new(),
    };
    if total == 0 {
        return (false, format!("{target} share {want}% ± {tolerance}{window}: no requests in that window"));
    }
    let got = mine as f64 * 100.0 / total as f64;
    ((got - want).abs() <= tolerance, format!("{target} share {got:.2}%{window} (want {want}% ± {tolerance})"))
}
