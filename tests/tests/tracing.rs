//! One trace per request across the hops: Envoy's OpenTelemetry tracer and the real sidecar
//! both export OTLP to a receiver double (`testbed::otlp`), and the trace shows Envoy's span
//! with the filter's decision as a tag, the sidecar's server span as its child, and the
//! sidecar's pre-processing, queue, batch and inference spans under that.

use std::collections::BTreeMap;
use std::time::Duration;
use testbed::client::{call_path, connect, extract_image};
use testbed::envoy::{Cluster, Envoy, EnvoyConfig, Tracing, DECISION_TAG, TRACING_SERVICE};
use testbed::otlp::{ReceivedSpan, Receiver};
use testbed::sidecar::{page, Sidecar};

const SIDECAR_SERVICE: &str = "switchyard-sidecar";
/// OTLP span kinds.
const SERVER: i32 = 2;

/// The tests' A/B configuration (everyone on stable) with the decision in filter state,
/// where the tracer's tag reads it.
fn plugin_config() -> String {
    let mut config: serde_json::Value = serde_json::from_str(&testbed::ab_config(0)).expect("ab_config is JSON");
    config["decision_to_filter_state"] = true.into();
    config.to_string()
}

/// The spans of one trace, by name (each name once, or the test fails).
struct Trace {
    spans: Vec<ReceivedSpan>,
}

impl Trace {
    fn one(&self, service: &str, name: &str) -> &ReceivedSpan {
        let found: Vec<&ReceivedSpan> = self.spans.iter().filter(|s| s.service == service && s.name == name).collect();
        assert_eq!(found.len(), 1, "expected one {service} span {name:?} in the trace, found {}: {:#?}", found.len(), self.spans);
        found[0]
    }

    fn envoy(&self) -> &ReceivedSpan {
        let found: Vec<&ReceivedSpan> = self.spans.iter().filter(|s| s.service == TRACING_SERVICE).collect();
        assert_eq!(found.len(), 1, "expected one Envoy span in the trace: {:#?}", self.spans);
        found[0]
    }

    fn sidecar_spans(&self) -> usize {
        self.spans.iter().filter(|s| s.service == SIDECAR_SERVICE).count()
    }
}

/// Checks the sidecar's part of a trace under `parent` (Envoy's span id, or empty for a
/// root) and returns its server span.
fn check_sidecar_part<'a>(trace: &'a Trace, parent: &str, version: &str) -> &'a ReceivedSpan {
    let server = trace.one(SIDECAR_SERVICE, "features.v1.FeatureExtractionService/ExtractRealtime");
    assert_eq!(server.parent_span_id, parent, "the sidecar's span hangs off the caller's: {server:#?}");
    assert_eq!(server.kind, SERVER);
    assert_eq!(server.attribute("rpc.system"), Some("grpc"));
    assert_eq!(server.attribute("rpc.service"), Some("features.v1.FeatureExtractionService"));
    assert_eq!(server.attribute("rpc.method"), Some("ExtractRealtime"));
    assert_eq!(server.attribute("rpc.grpc.status_code"), Some("0"));
    assert_eq!(server.attribute("switchyard.model_version"), Some(version));
    let preprocess = trace.one(SIDECAR_SERVICE, "preprocess");
    let queue = trace.one(SIDECAR_SERVICE, "queue");
    let batch = trace.one(SIDECAR_SERVICE, "batch");
    let inference = trace.one(SIDECAR_SERVICE, "inference");
    for child in [preprocess, queue, batch] {
        assert_eq!(child.parent_span_id, server.span_id, "{} is a child of the request: {child:#?}", child.name);
    }
    assert_eq!(inference.parent_span_id, batch.span_id, "inference runs inside its batch");
    let size: u64 = batch.attribute("switchyard.batch.size").and_then(|s| s.parse().ok()).expect("batch size attribute");
    assert!((1..=4).contains(&size), "batch size {size} (max_batch_size is 4)");
    assert!(batch.attribute("switchyard.batch.id").is_some(), "{batch:#?}");
    // In order: pre-processing, the queue until the batch starts, inference inside the
    // batch, all inside the request.
    assert!(preprocess.end_unix_nano <= queue.start_unix_nano, "{preprocess:#?} {queue:#?}");
    assert_eq!(queue.end_unix_nano, batch.start_unix_nano);
    assert!(batch.start_unix_nano <= inference.start_unix_nano && inference.end_unix_nano <= batch.end_unix_nano);
    assert!(server.start_unix_nano <= preprocess.start_unix_nano && batch.end_unix_nano <= server.end_unix_nano);
    for span in &trace.spans {
        assert_ne!(span.status_code, 2, "no span of a served request is an error: {span:#?}");
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_request_from_envoy_through_the_sidecar() {
    let receiver = Receiver::start().await;
    let tracing = format!("[tracing]\notlp_endpoint = \"{}\"\nexport_delay_ms = 100\n", receiver.endpoint());
    let sidecar = Sidecar::start_with(None, &tracing).await;
    let clusters = ["stable", "canary", "fallback"].iter().map(|t| Cluster::new(t, sidecar.ports[*t])).collect();
    let mut config = EnvoyConfig::new(clusters, plugin_config());
    config.tracing = Some(Tracing { collector_port: receiver.port });
    let envoy = Envoy::start(config).await;

    // Three requests pinned to the canary by their group, three bucketed by user (weight:
    // all to stable). Envoy starts each trace: the client sends no `traceparent`.
    let mut client = connect(&envoy.url()).await;
    let mut expected: Vec<(&str, &str)> = Vec::new();
    for i in 0..6 {
        let (headers, decision, version) = if i % 2 == 0 {
            (vec![("x-ab-group", "canary".to_string())], "target=canary; reason=header", "orientation/2")
        } else {
            (vec![("x-user-id", format!("user-{i}"))], "target=stable; reason=weight", "orientation/1")
        };
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = extract_image(&mut client, &headers, page(0)).await.expect("served through Envoy");
        assert_eq!(answer.served_by, version);
        assert_eq!(answer.decision().as_deref(), Some(decision));
        expected.push((decision, version));
    }
    // A local reply: the filter denies the method; Envoy's span still carries the decision.
    let denied = call_path(&envoy.url(), "/features.v1.FeatureExtractionService/DebugDump").await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    // Wait for every span: 7 Envoy spans, 5 sidecar spans for each of the 6 served requests.
    receiver
        .wait_for("7 Envoy spans and 30 sidecar spans", Duration::from_secs(20), |spans| {
            spans.iter().filter(|s| s.service == TRACING_SERVICE).count() >= 7
                && spans.iter().filter(|s| s.service == SIDECAR_SERVICE).count() >= 30
        })
        .await;
    let traces: Vec<Trace> = receiver.traces().into_values().map(|spans| Trace { spans }).collect();
    assert_eq!(traces.len(), 7, "one trace per request");

    let mut served: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut replies = 0;
    for trace in &traces {
        let envoy_span = trace.envoy();
        assert_eq!(envoy_span.parent_span_id, "", "Envoy starts the trace: {envoy_span:#?}");
        assert_eq!(envoy_span.kind, SERVER);
        let decision = envoy_span.attribute(DECISION_TAG).unwrap_or_else(|| panic!("no {DECISION_TAG} tag: {envoy_span:#?}"));
        if decision == "reply=denied" {
            // Answered by the filter: nothing reached the sidecar.
            assert_eq!(trace.sidecar_spans(), 0, "{:#?}", trace.spans);
            replies += 1;
            continue;
        }
        assert_eq!(trace.spans.len(), 6, "Envoy's span and the sidecar's five: {:#?}", trace.spans);
        let version = if decision.starts_with("target=canary") { "orientation/2" } else { "orientation/1" };
        check_sidecar_part(trace, &envoy_span.span_id, version);
        *served.entry((decision.to_string(), version.to_string())).or_default() += 1;
    }
    assert_eq!(replies, 1, "the denied request's trace");
    let mut want: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (decision, version) in expected {
        *want.entry((decision.to_string(), version.to_string())).or_default() += 1;
    }
    assert_eq!(served, want, "each trace's decision tag matches the version that served it");

    // Straight to the sidecar: a caller that said "not sampled" is served and not traced;
    // a caller with no `traceparent` is served and starts its own trace.
    let mut direct = connect(&format!("http://127.0.0.1:{}", sidecar.grpc)).await;
    let unsampled = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{unsampled}-00f067aa0ba902b7-00");
    let answer = extract_image(&mut direct, &[("traceparent", &traceparent)], page(90)).await.expect("served unsampled");
    assert_eq!(answer.served_by, "orientation/1");
    let answer = extract_image(&mut direct, &[], page(180)).await.expect("served without traceparent");
    assert_eq!(answer.served_by, "orientation/1");
    let spans = receiver
        .wait_for("the untraced caller's sidecar trace", Duration::from_secs(20), |spans| {
            spans.iter().filter(|s| s.service == SIDECAR_SERVICE).count() >= 35
        })
        .await;
    let roots: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.service == SIDECAR_SERVICE && s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one sidecar root span: {roots:#?}");
    let own = Trace { spans: spans.iter().filter(|s| s.trace_id == roots[0].trace_id).cloned().collect() };
    assert_eq!(own.spans.len(), 5, "{:#?}", own.spans);
    check_sidecar_part(&own, "", "orientation/1");
    assert!(spans.iter().all(|s| s.trace_id != unsampled), "the unsampled caller's request was recorded");
    assert_eq!(spans.len(), 7 + 35, "nothing else was recorded");
}
