//! `filter_frames`: a request body as Envoy hands it to the filter, in chunks, on a route
//! that validates in the filter (`"validate": {"mode": "filter"}`) against the descriptor
//! sets of the sidecar's snapshot.
//!
//! The filter has no frame splitter of its own: it buffers the body (refusing it past the
//! route's cap), then runs the schema crate's `validate_grpc_frames` on the whole of it. So
//! the property is that the chunked, buffered path decides exactly what that function
//! decides on the complete body (`schema_frames` checks the function itself).

use crate::schema::schemas;
use prost_reflect::MessageDescriptor;
use std::rc::Rc;
use switchyard_filter_core::config::Config;
use switchyard_filter_core::host::{CalloutReply, Flow};
use switchyard_filter_core::ledger::Sharing;
use switchyard_filter_core::stream::Stream;
use switchyard_filter_core::testing::{Proxy, TestHost, TestStream};
use switchyard_filter_core::worker::Worker;
use switchyard_schema::validate::{validate_grpc_frames, Policy, UnknownFields, WireTypeMismatch};

/// Bodies past this are refused before validation.
const MAX_BODY_BYTES: usize = 512;

/// Two features.v1 revisions, validated in the filter with unknown fields refused.
const CONFIG: &str = r#"{
    "tick_ms": 100,
    "sidecar": {"cluster": "sidecar_admin", "poll_ms": 500},
    "routes": [{
        "name": "features", "match": ["/features.v1.FeatureExtractionService/*"],
        "targets": [
            {"name": "stable", "cluster": "c_stable", "weight": 50, "revision": "features.v1@1"},
            {"name": "canary", "cluster": "c_canary", "weight": 50, "revision": "features.v1@2"}
        ],
        "default_target": "stable",
        "validate": {"mode": "filter", "max_body_bytes": 512, "unknown_fields": "reject"}
    }]
}"#;

const METHOD: &str = "/features.v1.FeatureExtractionService/ExtractRealtime";
const REQUEST: &str = "features.v1.ExtractRealtimeRequest";

/// The sidecar's snapshot with both revisions' descriptor sets (`?descriptors=1`), from a
/// registry that accepted them as the sidecar's would.
fn snapshot() -> &'static [u8] {
    static SNAPSHOT: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        let registry = switchyard_schema::registry::Registry::open(Default::default()).unwrap_or_else(|e| panic!("{e}"));
        for (name, text) in &schemas::SOURCES[..2] {
            if let Err(e) = registry.register_document("features.v1", text, &[], name) {
                panic!("{name}: {e}");
            }
        }
        let schema = registry.state().snapshot(true);
        serde_json::to_vec(&serde_json::json!({"generation": 1, "schema": schema, "models": {}})).unwrap_or_else(|e| panic!("{e}"))
    });
    &SNAPSHOT
}

/// The request type of each revision, as the registry compiled it.
fn request_type(revision: u32) -> MessageDescriptor {
    let (_, schema) = &schemas::schemas()[revision as usize - 1];
    schema.pool().get_message_by_name(REQUEST).unwrap_or_else(|| panic!("features.v1@{revision} has no {REQUEST}"))
}

/// A worker that has installed [`snapshot`]. One per thread, kept: decoding the
/// configuration, the snapshot and its descriptor sets is most of an input's cost, and no
/// body changes what the worker holds (each input is its own stream, completed).
fn worker() -> Rc<Worker<TestHost>> {
    thread_local! {
        static WORKER: Rc<Worker<TestHost>> = {
            let config = Config::from_json(CONFIG.as_bytes()).unwrap_or_else(|e| panic!("the filter_frames configuration: {e}"));
            let proxy = Rc::new(Proxy::default());
            let w = match Worker::new(TestHost::on(&proxy), config, 7, Sharing::HostData) {
                Ok(w) => Rc::new(w),
                Err(e) => panic!("{e}"),
            };
            w.host().advance_ms(600);
            w.tick();
            let token = w.host().callouts.borrow().len() as u32;
            assert!(w.on_callout_reply(token, &CalloutReply { status: Some(200), body: snapshot() }), "the poll's answer was not the poller's");
            // The answer goes to shared data; workers parse it on their next tick.
            w.host().advance_ms(100);
            w.tick();
            w.flush_stats();
            let logs = w.host().logs.borrow().iter().map(|(_, l)| l.clone()).collect::<Vec<_>>();
            assert_eq!(w.host().metric("switchyard.sidecar.generation"), 1, "the snapshot was not installed: {logs:?}");
            w
        };
    }
    WORKER.with(Rc::clone)
}

/// Byte 0 picks the declared revision (bit 0: `@1` or `@2`), byte 1 the chunk size (0: the
/// whole body at once); the rest is the body.
pub fn frames(data: &[u8]) {
    let [selector, chunk, body @ ..] = data else { return };
    let revision = u32::from(selector & 1) + 1;
    let w = worker();
    let mut stream = Stream::new(w.clone(), 1);
    let mut s = TestStream::request(&[
        (":path", METHOD),
        ("content-type", "application/grpc"),
        ("x-schema-revision", if revision == 1 { "features.v1@1" } else { "features.v1@2" }),
    ]);
    assert_eq!(s.send_headers(&mut stream, false), Flow::Continue, "headers of a request with a body");
    assert!(s.reply.is_none(), "answered before its body: {:?}", s.reply);
    s.body = body.to_vec();
    let step = if *chunk == 0 { body.len().max(1) } else { usize::from(*chunk) };
    let cap = MAX_BODY_BYTES + 5;
    let mut size = 0;
    let flow = loop {
        size = (size + step).min(body.len());
        let end = size == body.len();
        let flow = s.send_body(&mut stream, size, end);
        if size > cap {
            let code = s.reply.as_ref().and_then(|r| r.2.as_ref()).map(|g| g.0);
            assert_eq!(code, Some(8), "{size} bytes buffered past the {cap}-byte cap: {:?}", s.reply);
            stream.on_complete();
            return;
        }
        if end {
            break flow;
        }
        assert_eq!(flow, Flow::Pause, "a partial body ({size} of {}) let through", body.len());
        assert!(s.reply.is_none(), "a partial body ({size} of {}) answered: {:?}", body.len(), s.reply);
    };
    let policy = Policy {
        unknown_fields: UnknownFields::Reject,
        wire_type_mismatch: WireTypeMismatch::Reject,
        max_bytes: MAX_BODY_BYTES,
        ..Policy::default()
    };
    let expected = validate_grpc_frames(&request_type(revision), body, &policy);
    match (&s.reply, expected.violations.first()) {
        (None, None) => assert_eq!(flow, Flow::Continue, "a valid body held back"),
        (Some((_, _, Some((code, message)))), Some(first)) => {
            assert_eq!(*code, 3, "an invalid body refused with grpc-status {code}");
            assert!(message.contains(&first.to_string()), "the refusal {message:?} does not name {first}");
        }
        (reply, first) => panic!("features.v1@{revision}: the filter answered {reply:?}; the validator's first violation is {first:?}"),
    }
    stream.on_complete();
}
