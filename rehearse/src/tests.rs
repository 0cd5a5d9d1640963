//! The engine against small scenarios whose outcome follows from the rules.

use crate::{rehearse_text, Report};

fn config(degrade: &str, extra_route: &str) -> String {
    format!(
        r#"{{"tick_ms": 50, "routes": [{{
            "name": "features", "match": ["/features.v1.FeatureExtractionService/*"],
            "targets": [
                {{"name": "stable", "cluster": "stable", "weight": 90}},
                {{"name": "canary", "cluster": "canary", "weight": 10}},
                {{"name": "fallback", "cluster": "fallback", "weight": 0}}
            ],
            "default_target": "stable", "fallback": "fallback",
            "degrade": {{{degrade}}} {extra_route}
        }}]}}"#
    )
}

const RULES: &str = r#""slow_consecutive": 5, "slow_threshold_ms": 200, "error_rate_pct": 20, "error_window_s": 10,
    "error_min_requests": 20, "cooldown_ms": 2000, "probe_share_pct": 50, "probe_successes": 3"#;

fn run(config: &str, scenario: &str) -> Report {
    rehearse_text(config, scenario, None, None).unwrap_or_else(|e| panic!("{e}"))
}

fn target<'a>(r: &'a Report, name: &str) -> &'a crate::report::TargetSummary {
    r.targets.iter().find(|t| t.name == name).unwrap()
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let scenario = "seed: 9\nduration_s: 20\ntraffic: {rate: [{at_s: 0, rps: 500}], users: 300}\n\
        targets: {canary: {p50_ms: 20, events: [{at_s: 5, p50_ms: 600}]}}\n";
    let a = serde_json::to_string(&run(&config(RULES, ""), scenario)).unwrap();
    let b = serde_json::to_string(&run(&config(RULES, ""), scenario)).unwrap();
    assert_eq!(a, b);
    let c = serde_json::to_string(&run(&config(RULES, ""), &scenario.replace("seed: 9", "seed: 10"))).unwrap();
    assert_ne!(a, c);
}

#[test]
fn weights_split_users_and_raising_the_canary_only_moves_users_into_it() {
    let scenario = "duration_s: 60\ntraffic: {rate: [{at_s: 0, rps: 1000}], users: 50000}\n\
        changes: [{at_s: 20, weights: {stable: 75, canary: 25}}, {at_s: 40, weights: {stable: 50, canary: 50}}]\n\
        expect: [{target: canary, share_pct: 10, tolerance_pct: 1, between_s: [0, 20]},\n\
                 {target: canary, share_pct: 25, tolerance_pct: 1, between_s: [20, 40]},\n\
                 {target: canary, share_pct: 50, tolerance_pct: 1, between_s: [40, 60]}]\n";
    let r = run(&config(RULES, ""), scenario);
    assert!(r.passed, "{}", r.text());
    assert_eq!(r.weight_changes.len(), 2);
    for w in &r.weight_changes {
        assert_eq!(w.left_a_raised_target, 0);
        assert!(w.moved.iter().all(|m| m.from == "stable" && m.to == "canary"), "{:?}", w.moved);
    }
    // 10 % → 25 %: about 15 % of the users move.
    let moved: u32 = r.weight_changes[0].moved.iter().map(|m| m.users).sum();
    assert!((6_800..=8_200).contains(&moved), "{moved}");
}

#[test]
fn a_slow_canary_is_degraded_by_the_slow_rule_in_about_five_responses() {
    let scenario = "duration_s: 30\nfleet: {envoys: 1, workers: 1}\ntraffic: {rate: [{at_s: 0, rps: 2000}], users: 1000}\n\
        targets: {canary: {p50_ms: 20, p99_ms: 40, events: [{at_s: 10, p50_ms: 400, p99_ms: 500}]}}\n\
        expect: [{target: canary, degraded_within_ms: 700}]\n";
    let r = run(&config(RULES, ""), scenario);
    assert!(r.passed, "{}", r.text());
    let first = &r.transitions[0];
    assert_eq!((first.target.as_str(), first.to, first.rule), ("canary", "degraded", "slow_responses"));
    // The rule counts a request slow once it waits past 200 ms: the first five requests
    // after the turn degrade it about 200 ms in (plus their arrival gaps and a tick).
    let after = r.reactions[0].after_ms.unwrap();
    assert!((200.0..400.0).contains(&after), "{after}");
    // Its traffic goes to the fallback meanwhile.
    assert!(target(&r, "fallback").by_reason.get("degraded").copied().unwrap_or(0) > 0);
}

#[test]
fn a_failing_canary_is_degraded_by_the_error_rate_rule() {
    let scenario = "duration_s: 30\ntraffic: {rate: [{at_s: 0, rps: 1000}], users: 1000}\n\
        targets: {canary: {events: [{at_s: 10, error_pct: 60, error_code: UNAVAILABLE}]}}\n";
    let r = run(&config(RULES, ""), scenario);
    let degraded: Vec<_> = r.transitions.iter().filter(|t| t.to == "degraded").collect();
    assert_eq!(degraded[0].rule, "error_rate", "{}", r.text());
    assert!(degraded[0].t_ms > 10_000.0);
    let reaction = r.reactions.iter().find(|x| x.kind == "degraded").unwrap();
    // The 10 s window still holds 10 s of good answers when the canary starts failing:
    // at 60 % errors the rate passes 20 % after about a third of the window.
    let after = reaction.after_ms.unwrap();
    assert!((2_800.0..4_000.0).contains(&after), "{reaction:?}");
    assert!(r.errors_by_code.get("UNAVAILABLE").copied().unwrap_or(0) > 0);
}

#[test]
fn probes_that_fail_double_the_cool_down_and_good_probes_restore() {
    let scenario = "duration_s: 40\nfleet: {envoys: 1, workers: 2}\ntraffic: {rate: [{at_s: 0, rps: 1000}], users: 1000}\n\
        targets: {canary: {events: [{at_s: 2, p50_ms: 500, p99_ms: 600}, {at_s: 20, p50_ms: 20, p99_ms: 40}]}}\n\
        expect: [{target: canary, restored_within_ms: 20000}]\n";
    let r = run(&config(RULES, ""), scenario);
    let canary: Vec<_> = r.transitions.iter().filter(|t| t.target == "canary").collect();
    let rules: Vec<&str> = canary.iter().map(|t| t.rule).collect();
    assert_eq!(&rules[..4], ["slow_responses", "cooldown_over", "probe_failed", "cooldown_over"], "{}", r.text());
    // Cool-down 2 s, then doubled to 4 s after the failed probe (ended by the first tick
    // past it; times are in float ms, hence the slack below).
    let first_cooldown = canary[1].t_ms - canary[0].t_ms;
    let second_cooldown = canary[3].t_ms - canary[2].t_ms;
    assert!((1999.0..2200.0).contains(&first_cooldown), "{first_cooldown}");
    assert!((3999.0..4200.0).contains(&second_cooldown), "{second_cooldown}");
    assert_eq!(canary.last().unwrap().to, "healthy");
    assert_eq!(canary.last().unwrap().rule, "probes_passed");
    assert!(r.passed, "{}", r.text());
    assert!(target(&r, "canary").by_reason.get("probe").copied().unwrap_or(0) > 0);
}

#[test]
fn tight_budgets_go_to_the_fallback_or_fail_fast() {
    let latency = r#", "latency": {"min_samples": 5}"#;
    let scenario = "duration_s: 20\ntraffic: {rate: [{at_s: 0, rps: 1000}], users: 1000, groups: [{value: canary, pct: 70}],\n\
        timeouts_ms: [{value: 100, pct: 30}, {value: 5, pct: 10}]}\n\
        targets: {stable: {p50_ms: 60, p99_ms: 90}, canary: {p50_ms: 120, p99_ms: 180}, fallback: {p50_ms: 10, p99_ms: 20}}\n";
    let r = run(&config(r#""enabled": false"#, latency), scenario);
    // 100 ms is too short for the canary (p90 ~150 ms): the fallback takes those, about
    // 30 % of the canary's 70 % + 10 % of the rest.
    let budget = target(&r, "fallback").by_reason.get("budget").copied().unwrap_or(0);
    assert!((4_000..5_400).contains(&budget), "{}", r.text());
    assert_eq!(target(&r, "stable").by_reason.get("budget"), None, "{}", r.text());
    // 5 ms fits nobody: answered at once with DEADLINE_EXCEEDED.
    let fail_fast = r.replies.get("fail_fast").copied().unwrap_or(0);
    assert!((1_700..2_300).contains(&fail_fast), "{}", r.text());
    assert!(r.errors_by_code.get("DEADLINE_EXCEEDED").copied().unwrap_or(0) >= fail_fast);
}

#[test]
fn traffic_spread_over_more_envoys_takes_longer_to_degrade_in_each() {
    let scenario = |envoys: u32| {
        format!(
            "duration_s: 20\nfleet: {{envoys: {envoys}, workers: 2}}\ntraffic: {{rate: [{{at_s: 0, rps: 400}}], users: 1000}}\n\
             targets: {{canary: {{error_pct: 100}}}}\n"
        )
    };
    let slowest = |r: &Report| {
        r.reactions.iter().filter(|x| x.kind == "degraded").map(|x| x.after_ms.unwrap_or(f64::INFINITY)).fold(0.0, f64::max)
    };
    let one = run(&config(RULES, ""), &scenario(1));
    let eight = run(&config(RULES, ""), &scenario(8));
    assert_eq!(one.reactions.len(), 1);
    assert_eq!(eight.reactions.len(), 8);
    // Each Envoy needs its own 20 requests to the canary before the error-rate rule can
    // fire: eight Envoys see them eight times more slowly.
    assert!(slowest(&eight) > 5.0 * slowest(&one), "1 Envoy {} ms, 8 Envoys {} ms", slowest(&one), slowest(&eight));
    for r in eight.reactions.iter().filter(|x| x.kind == "degraded") {
        assert!(r.requests_until >= 20, "{r:?}");
    }
}

#[test]
fn the_native_build_merges_workers_at_once() {
    let scenario = |build: &str| {
        format!(
            "duration_s: 10\nfleet: {{envoys: 1, workers: 8, build: {build}}}\ntraffic: {{rate: [{{at_s: 0, rps: 2000}}], users: 1000}}\n\
             targets: {{canary: {{events: [{{at_s: 5, error_pct: 100}}]}}}}\n"
        )
    };
    for build in ["wasm", "native"] {
        let r = run(&config(RULES, ""), &scenario(build));
        // Eight workers, one Envoy: one transition from healthy, whichever worker merges it.
        let t = r.transitions.iter().filter(|t| t.target == "canary" && t.from == "healthy").count();
        assert_eq!(t, 1, "{build}: one Envoy degrades once\n{}", r.text());
    }
}

#[test]
fn shedding_and_faults_answer_locally() {
    let faults = r#", "faults": [{"target": "canary", "percent": 50, "abort": "UNAVAILABLE"}]"#;
    let scenario = "duration_s: 10\ntraffic: {rate: [{at_s: 0, rps: 1000}], users: 1000, groups: [{value: canary, pct: 100}]}\n";
    let r = run(&config(r#""enabled": false"#, faults), scenario);
    let aborted = r.replies.get("fault_abort").copied().unwrap_or(0);
    assert!((4_500..5_500).contains(&aborted), "{}", r.text());
    assert_eq!(r.errors_by_code.get("UNAVAILABLE").copied(), Some(aborted));
}

#[test]
fn bad_input_names_its_place() {
    let e = rehearse_text(&config(RULES, "").replace("\"weight\": 10", "\"wieght\": 10"), "duration_s: 1\ntraffic: {rate: [{at_s: 0, rps: 1}]}\n", None, None)
        .unwrap_err();
    assert_eq!(e.input, "config");
    assert!(e.at.contains("routes[0].targets[1]"), "{e}");
    let e = rehearse_text(&config(RULES, ""), "duration_s: 1\ntraffic: {rate: [{at_s: 0, rps: 1}]}\nchanges: [{at_s: 0.5, weights: {nope: 1}}]\n", None, None)
        .unwrap_err();
    assert_eq!((e.input, e.at.as_str()), ("scenario", "changes[0]"), "{e}");
    assert!(e.message.contains("nope"), "{e}");
    let e = rehearse_text(&config(RULES, ""), "duration_s: 1\ntraffic: {rate: [{at_s: 0, rps: 1}]}\n", Some("{nope"), None).unwrap_err();
    assert_eq!(e.input, "snapshot");
}

#[test]
fn unmet_expectations_fail_the_rehearsal() {
    let scenario = "duration_s: 10\ntraffic: {rate: [{at_s: 0, rps: 500}]}\n\
        targets: {canary: {error_pct: 50}}\nexpect: [{client_errors_max_pct: 0.01}, {target: canary, degraded_within_ms: 5000}]\n";
    let r = run(&config(RULES, ""), scenario);
    assert!(!r.passed);
    assert!(!r.expectations[0].met);
    // A canary bad from the start counts as turning bad at 0 s.
    assert!(r.expectations[1].met, "{}", r.text());
}

#[test]
fn an_access_log_replays_its_requests_as_they_came() {
    let mut log = String::new();
    for i in 0..2_000u32 {
        let (ms, user) = (i * 5, format!("u{}", i % 300));
        let group = if i % 10 == 0 { "canary" } else { "-" };
        log.push_str(&format!(
            "[2026-12-01T10:00:{:02}.{:03}Z] \"/features.v1.FeatureExtractionService/ExtractRealtime\" 0 via_upstream upstream=features_stable switchyard=\"target=stable; reason=weight\" 20ms user={user} group={group} revision=- timeout=- priority=-\n",
            ms / 1000,
            ms % 1000
        ));
    }
    let mut scenario = crate::Scenario::parse("duration_s: 60\ntraffic: {replay: access.log}\n").unwrap();
    assert_eq!(crate::rehearse(&config(RULES, ""), &scenario, None).unwrap_err().at, "traffic.replay");
    scenario.attach_replay(crate::replay::Replay::parse(&log).unwrap());
    let r = crate::rehearse(&config(RULES, ""), &scenario, None).unwrap();
    assert_eq!(r.requests, 2_000);
    assert_eq!(target(&r, "canary").by_reason.get("header").copied(), Some(200));
    // Ten seconds of log: the requests all arrive in the first ten seconds.
    assert_eq!(r.series.requests.iter().skip(10).sum::<u64>(), 0);

    // From text, as the console gives it: the same report; a bad line is named.
    let text = "duration_s: 60\ntraffic: {replay: access.log}\n";
    let same = rehearse_text(&config(RULES, ""), text, None, Some(&log)).unwrap();
    assert_eq!(serde_json::to_value(&same).unwrap(), serde_json::to_value(&r).unwrap());
    let bad = format!("{log}[not a time] \"/x\"\n");
    let e = rehearse_text(&config(RULES, ""), text, None, Some(&bad)).unwrap_err();
    assert_eq!((e.input, e.at.as_str()), ("access log", "line 2001"), "{e}");
    assert!(rehearse_text(&config(RULES, ""), text, None, None).unwrap_err().message.contains("choose it"));
}
