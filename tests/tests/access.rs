//! Method-level access control and non-gRPC handling, through a real Envoy.

use testbed::client::{call_path, extract, EXTRACT};
use testbed::{admin, ab_config, AbStack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_method_gets_permission_denied_and_never_reaches_upstream() {
    let stack = AbStack::start(&ab_config(10)).await;
    let denied = "/features.v1.FeatureExtractionService/DebugDump";
    let err = call_path(&stack.envoy.url(), denied).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains(denied), "message should name the method: {:?}", err.message());
    for u in [&stack.stable, &stack.canary, &stack.fallback] {
        assert_eq!(u.requests(), 0, "{} saw a denied request", u.name);
    }
    // An allowed method passes.
    let mut c = stack.client().await;
    assert_eq!(extract(&mut c, &[]).await.unwrap().served_by, "stable");
    assert_eq!(stack.stable.requests_to(EXTRACT), 1);
    stack.envoy.wait_filter_stat("switchyard.denied", |n| n == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_admits_only_listed_methods() {
    let config = serde_json::json!({
        "access": {"allow": ["/features.v1.FeatureExtractionService/ExtractRealtime"]},
        "routes": [{"name": "all", "match": ["*"], "default_target": "stable",
                    "targets": [{"name": "stable", "cluster": "stable", "weight": 1}]}]
    })
    .to_string();
    let stack = AbStack::start(&config).await;
    let err = call_path(&stack.envoy.url(), "/features.v1.FeatureExtractionService/ExtractBatch")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(stack.stable.requests(), 0);
    let mut c = stack.client().await;
    extract(&mut c, &[]).await.unwrap();
    assert_eq!(stack.stable.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_grpc_passes_untouched_by_default_and_can_be_rejected() {
    let stack = AbStack::start(&ab_config(10)).await;
    // A plain HTTP/1.1 request reaches Envoy's default route (the stable cluster), even
    // when it carries the internal header naming the canary.
    let reply = raw_http(stack.envoy.listener_port, "/healthz", "x-switchyard-cluster: canary\r\n");
    assert_ne!(reply.status, 415);
    assert_eq!(stack.stable.requests_to("/healthz"), 1);
    assert_eq!(stack.canary.requests(), 0);
    stack.envoy.wait_filter_stat("switchyard.passthrough", |n| n == 1).await;

    let strict = serde_json::json!({"non_grpc": "reject"}).to_string();
    let stack = AbStack::start(&strict).await;
    let reply = raw_http(stack.envoy.listener_port, "/healthz", "");
    assert_eq!(reply.status, 415);
    assert!(reply.body.contains("only gRPC"), "{}", reply.body);
    assert_eq!(stack.stable.requests(), 0);
}

fn raw_http(port: u16, path: &str, extra_headers: &str) -> admin::Reply {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra_headers}\r\n").unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    admin::Reply { status, body }
}
