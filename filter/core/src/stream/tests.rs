//! The stream and worker logic against the in-memory host: what the hosts used to decide
//! (routing-header writes, local replies, body caps, validation answers, delays, the
//! shared health merge, snapshot polling) is tested here, natively.

use super::*;
use crate::health::Mode;
use crate::host::RouteRefresh;
use crate::testing::{board, board_worker, worker, Proxy, TestHost, TestStream};

const AB: &str = r#"{"expose_decision": true, "decision_to_filter_state": true, "tick_ms": 100,
    "access": {"deny": ["/features.v1.FeatureExtractionService/Debug*"]},
    "routes": [{"name": "features", "match": ["/features.v1.FeatureExtractionService/*"],
        "targets": [{"name": "stable", "cluster": "c_stable", "weight": 90},
                    {"name": "canary", "cluster": "c_canary", "weight": 10},
                    {"name": "fallback", "cluster": "c_fallback"}],
        "default_target": "stable", "fallback": "fallback",
        "degrade": {"slow_consecutive": 3, "slow_threshold_ms": 100, "cooldown_ms": 1000},
        "faults": [{"group": "delayed", "percent": 100, "delay_ms": 50}]}]}"#;

const EXTRACT: &str = "/features.v1.FeatureExtractionService/ExtractRealtime";

fn grpc(extra: &[(&'static str, &'static str)]) -> TestStream {
    let mut h = vec![(":path", EXTRACT), ("content-type", "application/grpc")];
    h.extend_from_slice(extra);
    TestStream::request(&h)
}

#[test]
fn routes_by_writing_the_cluster_header_over_a_spoofed_one() {
    let proxy = Rc::new(Proxy::default());
    let w = worker(&proxy, AB, 1);
    let mut s = grpc(&[("x-ab-group", "canary"), ("x-switchyard-cluster", "evil")]);
    let mut stream = Stream::new(w.clone(), 1);
    assert_eq!(s.send_headers(&mut stream, true), Flow::Continue);
    assert_eq!(s.header("x-switchyard-cluster"), Some("c_canary"));
    assert_eq!(s.filter_state, vec![(DECISION_STATE_KEY.to_string(), "target=canary; reason=header".to_string())]);
    assert_eq!(stream.on_response_headers(&mut s, false), Flow::Continue);
    assert_eq!(s.response_headers, vec![("x-switchyard-decision".into(), "target=canary; reason=header".into())]);
    stream.on_complete();
    w.host().advance_ms(100);
    w.tick();
    assert_eq!(w.host().metric("switchyard.route.features.target.canary.requests"), 1);
    assert_eq!(w.host().metric("switchyard.reason.header"), 1);
}

#[test]
fn unrouted_and_non_grpc_requests_lose_a_spoofed_cluster_header() {
    let proxy = Rc::new(Proxy::default());
    let w = worker(&proxy, AB, 1);
    let mut s = TestStream::request(&[(":path", "/other.v1.S/M"), ("content-type", "application/grpc"), ("x-switchyard-cluster", "evil")]);
    assert_eq!(s.send_headers(&mut Stream::new(w.clone(), 1), true), Flow::Continue);
    assert_eq!(s.header("x-switchyard-cluster"), None);
    let mut s = TestStream::request(&[(":path", "/"), ("content-type", "text/html"), ("x-switchyard-cluster", "evil")]);
    assert_eq!(s.send_headers(&mut Stream::new(w, 2), true), Flow::Continue);
    assert_eq!(s.header("x-switchyard-cluster"), None);
}

#[test]
fn envoy_is_asked_to_redo_the_route_or_only_the_cluster_as_configured() {
    let proxy = Rc::new(Proxy::default());
    // Default: the route is matched again (a `cluster_header` route); a request without
    // the header gets it added, not replaced.
    let w = worker(&proxy, AB, 1);
    let mut s = grpc(&[("x-ab-group", "canary")]);
    s.send_headers(&mut Stream::new(w, 1), true);
    assert_eq!(s.request_headers.iter().filter(|(n, _)| n == "x-switchyard-cluster").count(), 1);
    assert_eq!(s.refreshes, vec![RouteRefresh::Route]);

    let refresh_cluster = AB.replacen('{', r#"{"route_refresh": "cluster", "#, 1);
    let w = worker(&proxy, &refresh_cluster, 2);
    let mut s = grpc(&[("x-ab-group", "canary"), ("x-switchyard-cluster", "evil")]);
    s.send_headers(&mut Stream::new(w.clone(), 1), true);
    assert_eq!(s.header("x-switchyard-cluster"), Some("c_canary"));
    assert_eq!(s.refreshes, vec![RouteRefresh::Cluster]);
    // A spoofed header on a request left alone is removed, and the cluster picked again.
    let mut s = TestStream::request(&[(":path", "/other.v1.S/M"), ("content-type", "application/grpc"), ("x-switchyard-cluster", "evil")]);
    s.send_headers(&mut Stream::new(w.clone(), 2), true);
    assert_eq!((s.header("x-switchyard-cluster"), s.refreshes.as_slice()), (None, &[RouteRefresh::Cluster][..]));
    // Nothing to take up when nothing changed.
    let mut s = TestStream::request(&[(":path", "/other.v1.S/M"), ("content-type", "application/grpc")]);
    s.send_headers(&mut Stream::new(w, 3), true);
    assert!(s.refreshes.is_empty());
}

#[test]
fn the_cluster_can_go_to_filter_state_where_the_build_routes_by_it() {
    let proxy = Rc::new(Proxy::default());
    let config = AB.replacen('{', r#"{"route_refresh": "cluster", "cluster_filter_state": "switchyard.cluster", "#, 1);
    let w = board_worker(&proxy, &config, 1, &board(&config), true);
    let mut s = grpc(&[("x-ab-group", "canary"), ("x-switchyard-cluster", "evil")]);
    s.send_headers(&mut Stream::new(w.clone(), 1), true);
    assert_eq!(s.routing_state, Some(("switchyard.cluster".into(), "c_canary".into())));
    assert_eq!(s.refreshes, vec![RouteRefresh::Cluster]);
    assert_eq!(s.header("x-switchyard-cluster"), Some("evil"), "the request is left as it came: the header routes nothing");
    let mut s = TestStream::request(&[(":path", "/other.v1.S/M"), ("content-type", "application/grpc"), ("x-switchyard-cluster", "evil")]);
    s.send_headers(&mut Stream::new(w, 2), true);
    assert!(s.routing_state.is_none() && s.refreshes.is_empty());

    // A build that cannot (the Wasm one) refuses the configuration, naming the field.
    let e = match Worker::configure(TestHost::on(&proxy), config.as_bytes(), 1) {
        Err(crate::worker::ConfigureError::Invalid(e)) => e,
        _ => panic!("accepted"),
    };
    assert_eq!(e.path, "cluster_filter_state");
}

#[test]
fn an_unvalidated_body_costs_no_host_call() {
    let proxy = Rc::new(Proxy::default());
    let w = worker(&proxy, AB, 1);
    let mut s = grpc(&[("x-ab-group", "canary")]);
    let mut stream = Stream::new(w, 1);
    s.send_headers(&mut stream, false);
    assert_eq!(s.send_body(&mut stream, 100, false), Flow::Continue);
    assert_eq!(s.send_body(&mut stream, 200, true), Flow::Continue);
    assert_eq!(s.body_size_reads, 0);
}

#[test]
fn denied_methods_get_a_trailers_only_grpc_reply() {
    let proxy = Rc::new(Proxy::default());
    let w = worker(&proxy, AB, 1);
    let mut s = TestStream::request(&[(":path", "/features.v1.FeatureExtractionService/DebugDump"), ("content-type", "application/grpc")]);
    assert_eq!(s.send_headers(&mut Stream::new(w.clone(), 1), true), Flow::Pause);
    let (http, details, grpc) = s.reply.clone().unwrap();
    assert_eq!((http, details.as_str()), (200, "denied"));
    assert_eq!(grpc.unwrap().0, Code::PermissionDenied as u32);
    assert_eq!(s.filter_state, vec![(DECISION_STATE_KEY.to_string(), "reply=denied".to_string())]);
    let strict = worker(&proxy, r#"{"non_grpc": "reject"}"#, 2);
    let mut s = TestStream::request(&[(":path", "/"), ("content-type", "text/html")]);
    assert_eq!(s.send_headers(&mut Stream::new(strict, 1), true), Flow::Pause);
    assert_eq!(s.reply.unwrap().0, 415);
}

#[test]
fn an_injected_delay_pauses_until_the_tick_resumes_the_stream() {
    let proxy = Rc::new(Proxy::default());
    let w = worker(&proxy, AB, 1);
    let mut s = grpc(&[("x-ab-group", "delayed"), ("grpc-timeout", "1S")]);
    let mut stream = Stream::new(w.clone(), 7);
    assert_eq!(s.send_headers(&mut stream, true), Flow::Pause);
    // The time waited comes off the budget sent upstream.
    assert_eq!(s.header("grpc-timeout"), Some("950000u"));
    assert_eq!(w.host().tick_ms.get(), crate::worker::DELAY_TICK_MS);
    w.host().advance_ms(20);
    w.tick();
    assert!(w.host().resumed.borrow().is_empty());
    w.host().advance_ms(40);
    w.tick();
    assert_eq!(*w.host().resumed.borrow(), vec![7]);
    assert_eq!(w.host().tick_ms.get(), 100, "back to the configured tick");
}

#[test]
fn a_delayed_request_keeps_its_body_until_the_delay_is_over() {
    let proxy = Rc::new(Proxy::default());
    let w = worker(&proxy, AB, 1);
    let mut s = grpc(&[("x-ab-group", "delayed")]);
    let mut stream = Stream::new(w.clone(), 7);
    assert_eq!(s.send_headers(&mut stream, false), Flow::Pause);
    assert_eq!(s.send_body(&mut stream, 5, false), Flow::Pause, "the body would release the headers");
    w.host().advance_ms(60);
    w.tick();
    assert_eq!(*w.host().resumed.borrow(), vec![7]);
    assert_eq!(s.send_body(&mut stream, 10, true), Flow::Continue);

    // A host with its own timer (the native module) reports the delay over to the stream.
    let w = worker(&proxy, AB, 2);
    let mut s = TestStream { timers: Some(Vec::new()), ..grpc(&[("x-ab-group", "delayed")]) };
    let mut stream = Stream::new(w.clone(), 8);
    assert_eq!(s.send_headers(&mut stream, false), Flow::Pause);
    assert_eq!(s.timers, Some(vec![50]));
    assert_ne!(w.host().tick_ms.get(), crate::worker::DELAY_TICK_MS, "no fine ticks for a host timer");
    assert_eq!(s.send_body(&mut stream, 5, false), Flow::Pause);
    stream.on_delay_over(&mut s);
    assert!(s.resumed);
    assert_eq!(s.send_body(&mut stream, 10, true), Flow::Continue);
}

#[test]
fn workers_degrade_a_slow_target_together_through_shared_state() {
    let proxy = Rc::new(Proxy::default());
    let (a, b) = (worker(&proxy, AB, 1), worker(&proxy, AB, 2));
    let mut id = 0;
    let mut slow = |w: &Rc<Worker<crate::testing::TestHost>>| {
        id += 1;
        let mut s = grpc(&[("x-ab-group", "canary")]);
        let mut stream = Stream::new(w.clone(), id);
        s.send_headers(&mut stream, true);
        w.host().advance_ms(150);
        s.response_trailers.push(("grpc-status".into(), "0".into()));
        stream.on_response_headers(&mut s, false);
        stream.on_response_trailers(&mut s);
        stream.on_complete();
    };
    slow(&a);
    slow(&b);
    a.tick();
    b.tick();
    assert_eq!(a.state(0, 1).mode, Mode::Healthy);
    slow(&a);
    a.host().advance_ms(100);
    a.tick();
    b.tick();
    for w in [&a, &b] {
        assert_eq!(w.state(0, 1).mode, Mode::Degraded, "every worker sees it");
    }
    let mut s = grpc(&[("x-ab-group", "canary")]);
    s.send_headers(&mut Stream::new(b.clone(), 99), true);
    assert_eq!(s.header("x-switchyard-cluster"), Some("c_fallback"));
    let logs = a.host().logs.borrow();
    assert!(logs.iter().any(|(_, l)| l.contains("target canary: healthy -> degraded (3 consecutive responses slower than 100 ms")), "{logs:?}");
    // Counted once, by the worker that made the move, under the rule that fired.
    assert_eq!(a.host().metric("switchyard.route.features.target.canary.transitions.slow_responses"), 1);
    assert_eq!(a.host().metric("switchyard.route.features.target.canary.transitions.error_rate"), 0);
}

/// One request of `group` on `w` that takes `ms` to answer OK.
fn answered(w: &Rc<Worker<TestHost>>, id: u64, group: &'static str, ms: u64) {
    let mut s = grpc(&[("x-ab-group", group)]);
    let mut stream = Stream::new(w.clone(), id);
    s.send_headers(&mut stream, true);
    w.host().advance_ms(ms);
    s.response_trailers.push(("grpc-status".into(), "0".into()));
    stream.on_response_headers(&mut s, false);
    stream.on_response_trailers(&mut s);
    stream.on_complete();
}

#[test]
fn on_a_board_the_ticking_worker_degrades_for_workers_that_never_tick() {
    // The native module's shape: two worker threads that only serve streams, and the main
    // thread's worker, which alone ticks.
    let proxy = Rc::new(Proxy::default());
    let b = board(AB);
    let (a, c, main) = (board_worker(&proxy, AB, 1, &b, false), board_worker(&proxy, AB, 2, &b, false), board_worker(&proxy, AB, 3, &b, true));
    answered(&a, 1, "canary", 150);
    answered(&c, 2, "canary", 150);
    answered(&a, 3, "canary", 150);
    a.tick();
    c.tick();
    assert_eq!(a.state(0, 1).mode, Mode::Healthy, "workers that do not tick merge nothing");
    assert_eq!(a.host().metric("switchyard.route.features.target.canary.requests"), 0, "counts wait for the tick");
    main.host().advance_ms(100);
    main.tick();
    // The ticking worker hands on the counts of every worker on the board.
    assert_eq!(main.host().metric("switchyard.route.features.target.canary.requests"), 3);
    for w in [&a, &c, &main] {
        assert_eq!(w.state(0, 1).mode, Mode::Degraded, "one ledger for every worker");
    }
    let mut s = grpc(&[("x-ab-group", "canary")]);
    s.send_headers(&mut Stream::new(c.clone(), 9), true);
    assert_eq!(s.header("x-switchyard-cluster"), Some("c_fallback"));
    assert!(main.host().logs.borrow().iter().any(|(_, l)| l.contains("target canary: healthy -> degraded")));
    assert!(a.host().logs.borrow().iter().all(|(_, l)| !l.contains("->")), "transitions are logged once, by the ticking worker");
}

#[test]
fn on_a_board_a_hung_target_degrades_without_further_traffic() {
    let proxy = Rc::new(Proxy::default());
    let b = board(AB);
    let (a, main) = (board_worker(&proxy, AB, 1, &b, false), board_worker(&proxy, AB, 2, &b, true));
    // Three requests hang on a worker that never sees another stream.
    let hung: Vec<(TestStream, Stream<TestHost>)> = (0..3)
        .map(|id| {
            let mut s = grpc(&[("x-ab-group", "canary")]);
            let mut stream = Stream::new(a.clone(), id);
            s.send_headers(&mut stream, true);
            (s, stream)
        })
        .collect();
    main.host().advance_ms(150);
    main.tick();
    assert_eq!(a.state(0, 1).mode, Mode::Degraded, "requests waiting past the threshold count as slow");
    drop(hung);
}

#[test]
fn on_a_board_the_ticking_worker_polls_and_installs_the_snapshot_for_all() {
    let proxy = Rc::new(Proxy::default());
    let cfg = r#"{"sidecar": {"cluster": "sc", "poll_ms": 1000}, "routes": [{"name": "r", "match": ["*"],
        "targets": [{"name": "s", "cluster": "c", "revision": "features.v1@1"}], "default_target": "s"}]}"#;
    let b = board(cfg);
    let (a, main) = (board_worker(&proxy, cfg, 1, &b, false), board_worker(&proxy, cfg, 2, &b, true));
    main.host().advance_ms(1_000);
    a.tick();
    main.tick();
    assert!(a.host().callouts.borrow().is_empty());
    assert_eq!(main.host().callouts.borrow().len(), 1);
    let body = crate::snapshot::tests_support::snapshot_json();
    assert!(main.on_callout_reply(1, &CalloutReply { status: Some(200), body: body.as_bytes() }));
    assert_eq!(a.snapshot_generation(), Some(3), "installed once, seen by every worker");
    main.host().advance_ms(1_000);
    main.tick();
    assert_eq!(main.host().metric("switchyard.sidecar.snapshots"), 1);
    assert!(proxy.shared.borrow().is_empty(), "no host shared data on a board");
}

const VALIDATED: &str = r#"{"sidecar": {"cluster": "sc"}, "routes": [{"name": "r", "match": ["*"],
    "targets": [{"name": "s", "cluster": "c"}], "default_target": "s",
    "validate": {"mode": "sidecar", "max_body_bytes": 16}}]}"#;

#[test]
fn bodies_over_the_cap_are_refused_without_buffering() {
    let proxy = Rc::new(Proxy::default());
    let w = worker(&proxy, VALIDATED, 1);
    let mut s = TestStream::request(&[(":path", "/a.S/M"), ("content-type", "application/grpc")]);
    let mut stream = Stream::new(w, 1);
    assert_eq!(s.send_headers(&mut stream, false), Flow::Continue);
    assert_eq!(s.send_body(&mut stream, 10, false), Flow::Pause, "held until complete");
    assert_eq!(s.send_body(&mut stream, 22, false), Flow::Pause);
    let (_, details, grpc) = s.reply.unwrap();
    assert_eq!(details, "validation_rejected");
    let (code, message) = grpc.unwrap();
    assert_eq!(code, Code::ResourceExhausted as u32);
    assert!(message.contains("22 bytes exceeds the validation cap of 16 bytes"), "{message}");
}

#[test]
fn the_sidecar_validator_answer_rejects_or_releases_the_body() {
    let proxy = Rc::new(Proxy::default());
    let w = worker(&proxy, VALIDATED, 1);
    let run = |reply: &CalloutReply<'_>| {
        let mut s = TestStream::request(&[(":path", "/a.S/M"), ("content-type", "application/grpc"), ("x-schema-revision", "x@1")]);
        s.body = vec![0, 0, 0, 0, 1, 8];
        let mut stream = Stream::new(w.clone(), 1);
        s.send_headers(&mut stream, false);
        assert_eq!(s.send_body(&mut stream, 6, true), Flow::Pause);
        // The route's policy travels with the body: the sidecar validates as the filter would.
        assert_eq!(
            s.callouts,
            vec!["POST sc /v1/validate?method=/a.S/M&revision=x@1&unknown_fields=warn&wire_type_mismatch=reject".to_string()]
        );
        stream.on_callout_reply(&mut s, 101, reply);
        s
    };
    let s = run(&CalloutReply { status: Some(200), body: br#"{"valid": false, "message": "field 1 is bad"}"# });
    let (code, message) = s.reply.unwrap().2.unwrap();
    assert_eq!((code, message.as_str()), (Code::InvalidArgument as u32, "switchyard: field 1 is bad"));
    let s = run(&CalloutReply { status: Some(200), body: br#"{"valid": true}"# });
    assert!(s.resumed && s.reply.is_none());
    // A validator that cannot answer does not fail the request.
    let s = run(&CalloutReply { status: None, body: b"" });
    assert!(s.resumed && s.reply.is_none());
    let s = run(&CalloutReply { status: Some(500), body: b"oops" });
    assert!(s.resumed && s.reply.is_none());
}

#[test]
fn one_worker_polls_the_snapshot_and_every_worker_installs_it() {
    let proxy = Rc::new(Proxy::default());
    let cfg = r#"{"sidecar": {"cluster": "sc", "poll_ms": 1000}, "routes": [{"name": "r", "match": ["*"],
        "targets": [{"name": "s", "cluster": "c", "revision": "features.v1@1"}], "default_target": "s"}]}"#;
    let (a, b) = (worker(&proxy, cfg, 1), worker(&proxy, cfg, 2));
    a.host().advance_ms(1_000);
    a.tick();
    b.tick();
    let calls = a.host().callouts.borrow().len() + b.host().callouts.borrow().len();
    assert_eq!(calls, 1, "the lease lets one worker poll per period");
    let (poller, token) = if a.host().callouts.borrow().is_empty() { (&b, 1) } else { (&a, 1) };
    let body = crate::snapshot::tests_support::snapshot_json();
    assert!(poller.on_callout_reply(token, &CalloutReply { status: Some(200), body: body.as_bytes() }));
    a.host().advance_ms(200);
    a.tick();
    b.tick();
    for w in [&a, &b] {
        assert_eq!(w.snapshot_generation(), Some(3));
    }
    // A failing sidecar keeps the last snapshot and says so once.
    a.host().advance_ms(1_000);
    a.tick();
    b.tick();
    let poller = if a.host().callouts.borrow().len() == 2 { &a } else { &b };
    assert!(poller.on_callout_reply(2, &CalloutReply { status: None, body: b"" }));
    assert_eq!(poller.snapshot_generation(), Some(3));
    assert!(poller.host().logs.borrow().iter().any(|(_, l)| l.contains("keeping snapshot generation 3")));
}

#[test]
fn a_bad_configuration_is_refused_with_the_field_named() {
    let proxy = Rc::new(Proxy::default());
    let host = crate::testing::TestHost::on(&proxy);
    let err = Worker::configure(host, br#"{"routes": [{"name": "r", "match": ["*"], "targets": [], "default_target": "s"}]}"#, 1);
    match err {
        Err(e) => assert!(e.to_string().contains("routes[0].targets"), "{e}"),
        Ok(_) => panic!("accepted"),
    }
}
