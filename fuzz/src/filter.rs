//! The filter's inputs, driven through its public worker and stream API on the in-memory
//! host: what Envoy would call, with the bytes Envoy would pass.

mod frames;

pub use frames::frames;

use std::rc::Rc;
use switchyard_filter_core::host::CalloutReply;
use switchyard_filter_core::request::HeaderPairs;
use switchyard_filter_core::stream::Stream;
use switchyard_filter_core::config::Config;
use switchyard_filter_core::ledger::Sharing;
use switchyard_filter_core::testing::{Proxy, TestHost, TestStream};
use switchyard_filter_core::worker::Worker;

/// A configuration that reaches every step: access, A/B, schema revisions from the
/// sidecar, health, budgets, priorities and shedding, faults.
pub const CONFIG: &str = r#"{
    "expose_decision": true, "decision_to_filter_state": true, "tick_ms": 100,
    "access": {"deny": ["/features.v1.FeatureExtractionService/Debug*"]},
    "sidecar": {"cluster": "sidecar_admin", "poll_ms": 500},
    "routes": [{
        "name": "features", "match": ["/features.v1.FeatureExtractionService/*"],
        "targets": [
            {"name": "stable", "cluster": "c_stable", "weight": 80, "model_version": "orientation/stable", "revision": "features.v1@1", "max_concurrency": 4, "latency_prior_ms": 20},
            {"name": "canary", "cluster": "c_canary", "weight": 20, "model_version": "orientation/canary", "revision": "features.v1@2"},
            {"name": "fallback", "cluster": "c_fallback", "revision": "features.v1@1"}
        ],
        "default_target": "stable", "fallback": "fallback",
        "degrade": {"slow_consecutive": 2, "slow_threshold_ms": 100, "cooldown_ms": 1000},
        "faults": [{"group": "chaos", "percent": 50, "abort": "UNAVAILABLE"}]
    }]
}"#;

const CLUSTERS: [&str; 3] = ["c_stable", "c_canary", "c_fallback"];

/// A snapshot the sidecar could send: two revisions, compatible both ways, healthy versions.
pub const SNAPSHOT: &str = r#"{"generation": 3,
    "schema": {"generation": 2, "subjects": {"features.v1": {"current": 2, "mode": "BACKWARD", "category": "WIRE",
        "revisions": [{"revision": 1, "fingerprint": "sha256:1111111111111111111111111111111111111111111111111111111111111111"},
                      {"revision": 2, "fingerprint": "sha256:2222222222222222222222222222222222222222222222222222222222222222"}],
        "pairs": [{"client": 1, "server": 2, "requests": true, "responses": true},
                  {"client": 2, "server": 1, "requests": true, "responses": true}]}}},
    "models": {"orientation/stable": {"healthy": true}, "orientation/canary": {"healthy": true}}}"#;

/// A worker with [`CONFIG`] on a fresh in-memory proxy. The configuration is parsed once
/// per thread (it is the same every time); everything else is new for each input, so an
/// input's outcome never depends on the ones before it.
fn configured(proxy: &Rc<Proxy>) -> Rc<Worker<TestHost>> {
    thread_local! {
        static PARSED: Config = match Config::from_json(CONFIG.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("the fuzz configuration: {e}"),
        };
    }
    let config = PARSED.with(Config::clone);
    match Worker::new(TestHost::on(proxy), config, 7, Sharing::HostData) {
        Ok(w) => Rc::new(w),
        Err(e) => panic!("{e}"),
    }
}

/// The plugin configuration, as a control plane could push it: accepted, or refused with
/// a message that says where.
pub fn config(data: &[u8]) {
    let proxy = Rc::new(Proxy::default());
    let host = TestHost::on(&proxy);
    match Worker::configure(host, data, 1) {
        Ok(w) => {
            // An accepted configuration serves a request.
            let mut s = TestStream::request(&[(":path", "/a.B/C"), ("content-type", "application/grpc")]);
            s.send_headers(&mut Stream::new(Rc::new(w), 1), true);
        }
        Err(switchyard_filter_core::worker::ConfigureError::Invalid(e)) => {
            assert!(!e.message.is_empty(), "an empty message for a refused configuration");
            let located = (!e.path.is_empty() && e.path != ".") || e.message.contains("line ") || e.message.contains("column");
            assert!(located, "a refused configuration must say where: path {:?}, message {:?}", e.path, e.message);
        }
        Err(other) => panic!("the in-memory host refuses nothing, yet: {other}"),
    }
}

/// A request's header map in proxy-wasm's serialised form, exactly as the host hands it
/// over (a malformed map included), then a response: the request is routed to a
/// configured cluster or answered locally with a real gRPC status.
pub fn request(data: &[u8]) {
    let proxy = Rc::new(Proxy::default());
    let w = configured(&proxy);
    let mut stream = Stream::new(w.clone(), 1);
    let mut s = TestStream::default();
    s.send_headers_raw(&mut stream, HeaderPairs::new(data));
    if let Some((http, _, grpc)) = &s.reply {
        assert!((200..600).contains(http), "HTTP status {http}");
        if let Some((code, message)) = grpc {
            assert!((1..=16).contains(code), "a local reply's grpc-status {code}");
            assert!(!message.is_empty(), "a local reply says why");
        }
    } else if let Some(cluster) = s.header("x-switchyard-cluster") {
        assert!(CLUSTERS.contains(&cluster), "routed to {cluster:?}");
    }
    // The response: a status taken from the input's last byte.
    let code = data.last().copied().unwrap_or(0) % 18;
    s.response_headers = vec![(":status".into(), "200".into())];
    s.response_trailers = vec![("grpc-status".into(), code.to_string())];
    stream.on_response_headers(&mut s, false);
    stream.on_response_trailers(&mut s);
    stream.on_complete();
    w.host().advance_ms(100);
    w.tick();
}

/// The sidecar's snapshot document as the poll returns it: whatever it holds, the worker
/// keeps deciding, and requests are still routed to configured clusters.
pub fn snapshot(data: &[u8]) {
    snapshot_generation(data);
}

/// [`snapshot`], returning the snapshot generation the worker installed (0: none).
pub fn snapshot_generation(data: &[u8]) -> u64 {
    let proxy = Rc::new(Proxy::default());
    let w = configured(&proxy);
    for status in [200, 500] {
        // The poll is due: the worker sends it on this tick, and the body is its answer.
        w.host().advance_ms(600);
        w.tick();
        let token = w.host().callouts.borrow().len() as u32;
        assert!(w.on_callout_reply(token, &CalloutReply { status: Some(status), body: data }), "the poll's answer was not the poller's");
    }
    for (i, revision) in ["features.v1@1", "features.v1@2", "features.v1@9", ""].iter().enumerate() {
        let mut s = TestStream::request(&[
            (":path", "/features.v1.FeatureExtractionService/ExtractRealtime"),
            ("content-type", "application/grpc"),
            ("x-user-id", "u"),
            ("x-schema-revision", revision),
        ]);
        s.send_headers(&mut Stream::new(w.clone(), i as u64 + 1), true);
        if s.reply.is_none() {
            let cluster = s.header("x-switchyard-cluster").unwrap_or("");
            assert!(CLUSTERS.contains(&cluster), "routed to {cluster:?}");
        }
    }
    w.flush_stats();
    w.host().metric("switchyard.sidecar.generation")
}

/// The routes' shared health record as another worker (or a corrupted store) could leave
/// it: read without panicking, and what the worker writes back reads back the same.
pub fn shared_health(data: &[u8]) {
    shared_health_records(data);
}

/// [`shared_health`], returning how many records the input replaced.
pub fn shared_health_records(data: &[u8]) -> usize {
    let proxy = Rc::new(Proxy::default());
    let w = configured(&proxy);
    w.host().advance_ms(100);
    w.tick();
    let keys: Vec<String> = proxy.shared.borrow().keys().cloned().collect();
    for key in &keys {
        if let Some(slot) = proxy.shared.borrow_mut().get_mut(key) {
            slot.value = Some(data.to_vec());
        }
    }
    w.host().advance_ms(100);
    w.tick();
    let written: Vec<Option<Vec<u8>>> = keys.iter().map(|k| proxy.shared.borrow().get(k).and_then(|s| s.value.clone())).collect();
    // Nothing happened since: merging the record it wrote changes nothing.
    w.tick();
    let again: Vec<Option<Vec<u8>>> = keys.iter().map(|k| proxy.shared.borrow().get(k).and_then(|s| s.value.clone())).collect();
    assert_eq!(written, again, "the health record does not read back as written");
    let mut s = TestStream::request(&[(":path", "/features.v1.FeatureExtractionService/ExtractRealtime"), ("content-type", "application/grpc")]);
    s.send_headers(&mut Stream::new(w, 1), true);
    keys.len()
}
