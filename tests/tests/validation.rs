//! Request payload validation in the data path, both in the filter (with the descriptor
//! sets from the sidecar's snapshot) and by a call to the sidecar's validator: an invalid
//! payload gets INVALID_ARGUMENT naming the field, and no upstream ever receives it.
//!
//! A Wasm filter cannot hold headers while it reads the body (pausing on headers pauses
//! the body too), so Envoy opens the upstream stream with the headers; the filter holds
//! the body back until the message is validated and resets that stream if it is invalid.
//! The upstream's own request counter proves no invalid message was ever served.

use prost::Message;
use switchyard_proto::features::v1::ExtractRealtimeRequest;
use testbed::client::{call_raw, EXTRACT};
use testbed::sidecar::page;
use testbed::SidecarStack;

fn valid() -> Vec<u8> {
    ExtractRealtimeRequest { request_id: "ok".into(), image_data: page(0), image_format: 1 }.encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_payloads_are_refused_before_any_upstream_in_both_modes() {
    let mut stack = SidecarStack::start(r#", "validate": {"mode": "filter", "max_body_bytes": 2000000}"#, "").await;
    for mode in ["filter", "sidecar"] {
        let config = SidecarStack::plugin_config(&format!(r#", "validate": {{"mode": "{mode}", "max_body_bytes": 2000000}}"#), "");
        assert!(stack.envoy.push_listener(&config).await);
        stack.wait_for_snapshot().await;
        let url = stack.envoy.url();
        let v1 = [("x-ab-group", "stable"), ("x-schema-revision", "features.v1@1")];

        // A valid payload passes and is served.
        let served_before = stack.sidecar.requests_answered();
        let answer = call_raw(&url, EXTRACT, &v1, valid()).await.unwrap_or_else(|e| panic!("{mode}: {e:?}"));
        assert!(!answer.is_empty());
        assert_eq!(stack.sidecar.requests_answered(), served_before + 1);

        let cases: [(&str, Vec<u8>, &str); 4] = [
            ("invalid UTF-8 in a string", vec![0x0a, 0x02, 0xff, 0xfe], "request_id"),
            // Field 3 (an enum, varint) sent length-delimited: how revision 3 would send it.
            ("wrong wire type", vec![0x1a, 0x04, b'J', b'P', b'E', b'G'], "image_format"),
            ("truncated bytes field", vec![0x12, 0x10, 0x01, 0x02], "image_data"),
            ("bad varint", vec![0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], "image_format"),
        ];
        for (what, payload, field) in cases {
            let err = call_raw(&url, EXTRACT, &v1, payload).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{mode}, {what}: {err:?}");
            assert!(err.message().contains(field), "{mode}, {what}: {}", err.message());
            println!("{mode}, {what}: {}", err.message());
            assert!(err.message().contains("features.v1@1"), "{mode}, {what}: {}", err.message());
        }
        // What is invalid for revision 1 is how revision 3 speaks: validated against the
        // client's own revision, it passes (and is routed to the canary, which reads it).
        let v3 = [("x-ab-group", "canary"), ("x-schema-revision", "features.v1@3")];
        let as_v3 = vec![0x0a, 0x02, b'o', b'k', 0x1a, 0x04, b'J', b'P', b'E', b'G'];
        let err = call_raw(&url, EXTRACT, &v3, as_v3).await.unwrap_err();
        // (This demo sidecar speaks revision 1, so its own decoder refuses it: not us.)
        assert!(!err.message().starts_with("switchyard:"), "{mode}: revision-3 payload refused: {err:?}");

        assert_eq!(
            stack.sidecar.requests_answered(),
            served_before + 1,
            "{mode}: an invalid message reached the model server"
        );

        // `wire_type_mismatch: warn` lets the same mismatch through, as the reference
        // runtimes would take it (this model server's decoder, prost, then refuses it
        // itself), wherever the route validates.
        let warn = SidecarStack::plugin_config(
            &format!(r#", "validate": {{"mode": "{mode}", "max_body_bytes": 2000000, "wire_type_mismatch": "warn"}}"#),
            "",
        );
        assert!(stack.envoy.push_listener(&warn).await);
        stack.wait_for_snapshot().await;
        let mismatch = vec![0x1a, 0x04, b'J', b'P', b'E', b'G'];
        let err = call_raw(&stack.envoy.url(), EXTRACT, &v1, mismatch).await.unwrap_err();
        assert!(!err.message().starts_with("switchyard:"), "{mode}: refused under warn: {err:?}");
    }
    stack.envoy.wait_filter_stat("switchyard.validation_rejected", |n| n == 8).await;
    assert_eq!(stack.envoy.filter_failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_without_buffering_them_whole() {
    let stack = SidecarStack::start(r#", "validate": {"mode": "filter", "max_body_bytes": 1000}"#, "").await;
    let url = stack.envoy.url();
    let headers = [("x-ab-group", "stable"), ("x-schema-revision", "features.v1@1")];
    let big = ExtractRealtimeRequest { image_data: vec![7; 200_000], ..Default::default() }.encode_to_vec();
    let err = call_raw(&url, EXTRACT, &headers, big).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("validation cap of 1000 bytes"), "{}", err.message());
    assert_eq!(stack.sidecar.requests_answered(), 0);
    assert_eq!(stack.envoy.filter_failures(), 0);
}
