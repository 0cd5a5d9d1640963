//! Payload validation: every violation kind with its field path; v1 and v2 clients' valid
//! payloads pass against their revisions.

mod common;

use prost::Message;
use prost_reflect::{DynamicMessage, MapKey, Value};
use switchyard_schema::compile::compile_dir;
use switchyard_schema::validate::{
    validate, validate_grpc_frames, validate_message, Policy, UnknownFields, Validation, ViolationKind, WireTypeMismatch,
};
use switchyard_schema::Schema;

const REQUEST: &str = "features.v1.ExtractRealtimeRequest";
const RESPONSE: &str = "features.v1.ExtractRealtimeResponse";

/// features.v1 as the corpus keeps it (revision 1) and a v2 that adds a crop to the
/// request and a WEBP image format.
fn features(v2: bool) -> Schema {
    let side = if v2 { "new" } else { "old" };
    let path = common::corpus_dir().join(format!("features_v1__ok_add_fields/{side}/features/v1/features.proto"));
    compile(&[("features/v1/features.proto", &std::fs::read_to_string(path).unwrap())])
}

fn compile(files: &[(&str, &str)]) -> Schema {
    let tmp = tempfile::tempdir().unwrap();
    common::write_tree(tmp.path(), files);
    compile_dir(tmp.path()).unwrap()
}

fn kinds_and_paths(v: &Validation) -> Vec<(ViolationKind, String)> {
    v.violations.iter().map(|v| (v.kind, v.path.clone())).collect()
}

fn one(v: &Validation, kind: ViolationKind, path: &str) {
    assert_eq!(kinds_and_paths(v), [(kind, path.to_owned())], "{v:#?}");
}

fn v1_request(schema: &Schema) -> Vec<u8> {
    let desc = schema.pool().get_message_by_name(REQUEST).unwrap();
    let mut m = DynamicMessage::new(desc);
    m.set_field_by_name("request_id", Value::String("r-1".into()));
    m.set_field_by_name("image_data", Value::Bytes(vec![0xff, 0xd8, 0xff].into()));
    m.set_field_by_name("image_format", Value::EnumNumber(1));
    m.encode_to_vec()
}

fn v2_request(schema: &Schema) -> Vec<u8> {
    let desc = schema.pool().get_message_by_name(REQUEST).unwrap();
    let crop_desc = schema.pool().get_message_by_name("features.v1.Crop").unwrap();
    let mut crop = DynamicMessage::new(crop_desc);
    crop.set_field_by_name("width", Value::U32(64));
    crop.set_field_by_name("height", Value::U32(48));
    let mut m = DynamicMessage::decode(desc, v1_request(schema).as_slice()).unwrap();
    m.set_field_by_name("crop", Value::Message(crop));
    m.set_field_by_name("image_format", Value::EnumNumber(3)); // WEBP, new in v2
    m.encode_to_vec()
}

fn response(schema: &Schema) -> Vec<u8> {
    let desc = schema.pool().get_message_by_name(RESPONSE).unwrap();
    let mut m = DynamicMessage::new(desc);
    m.set_field_by_name("request_id", Value::String("r-1".into()));
    m.set_field_by_name("feature_vector", Value::List(vec![Value::F32(0.5), Value::F32(-1.0)]));
    m.set_field_by_name(
        "quality_scores",
        Value::Map([(MapKey::String("blur".into()), Value::F32(0.1))].into()),
    );
    m.encode_to_vec()
}

#[test]
fn valid_payloads_of_v1_and_v2_clients_pass() {
    let (v1, v2) = (features(false), features(true));
    let policy = Policy::default();
    for (schema, payload) in [(&v1, v1_request(&v1)), (&v2, v1_request(&v2)), (&v2, v2_request(&v2))] {
        let result = validate(schema.pool(), REQUEST, &payload, &policy).unwrap();
        assert!(result.is_valid() && result.warnings.is_empty(), "{result:#?}");
    }
    let result = validate(v1.pool(), RESPONSE, &response(&v1), &policy).unwrap();
    assert!(result.is_valid(), "{result:#?}");
    // A v1 client's request is also valid for the v2 server (crop absent).
    assert!(validate(v2.pool(), REQUEST, &v1_request(&v1), &policy).unwrap().is_valid());
}

#[test]
fn unknown_fields_follow_the_policy_with_paths() {
    let (v1, v2) = (features(false), features(true));
    let payload = v2_request(&v2);
    let mut policy = Policy::default();

    // A v2 request read with v1: the crop (field 4) is unknown.
    let warned = validate(v1.pool(), REQUEST, &payload, &policy).unwrap();
    assert!(warned.is_valid());
    assert_eq!(warned.warnings.len(), 1);
    assert_eq!((warned.warnings[0].kind, warned.warnings[0].path.as_str()), (ViolationKind::UnknownField, "#4"));

    policy.unknown_fields = UnknownFields::Reject;
    one(&validate(v1.pool(), REQUEST, &payload, &policy).unwrap(), ViolationKind::UnknownField, "#4");

    policy.unknown_fields = UnknownFields::Allow;
    let allowed = validate(v1.pool(), REQUEST, &payload, &policy).unwrap();
    assert!(allowed.is_valid() && allowed.warnings.is_empty());

    // Nested: an unknown field 9 inside the crop.
    let mut nested = payload.clone();
    let crop_at = nested.iter().position(|&b| b == (4 << 3 | 2)).unwrap();
    nested[crop_at + 1] += 2; // the crop grows by two bytes…
    nested.splice(crop_at + 2..crop_at + 2, [9 << 3, 1]); // …holding field 9 = 1
    policy.unknown_fields = UnknownFields::Reject;
    one(&validate(v2.pool(), REQUEST, &nested, &policy).unwrap(), ViolationKind::UnknownField, "crop.#9");
}

#[test]
fn structural_violations_carry_field_paths() {
    let v1 = features(false);
    let policy = Policy::default();
    let check = |bytes: &[u8]| validate(v1.pool(), REQUEST, bytes, &policy).unwrap();

    // image_data (2, bytes) sent as a varint.
    one(&check(&[2 << 3, 1]), ViolationKind::WrongWireType, "image_data");
    // Wire type 7 is no wire type: a broken key.
    one(&check(&[2 << 3 | 7, 1]), ViolationKind::InvalidTag, "");
    // image_data announces 10 bytes, 2 follow.
    one(&check(&[2 << 3 | 2, 10, 1, 2]), ViolationKind::Truncated, "image_data");
    // image_format (3, enum) with an 11-byte varint.
    let mut bad = vec![3 << 3];
    bad.extend([0xff; 10]);
    bad.push(0x01);
    one(&check(&bad), ViolationKind::BadVarint, "image_format");
    // Field number 0.
    one(&check(&[0, 1]), ViolationKind::InvalidTag, "");
    // request_id (1, proto3 string) not UTF-8.
    one(&check(&[1 << 3 | 2, 2, 0xc3, 0x28]), ViolationKind::InvalidUtf8, "request_id");
    // An end-group marker nobody opened.
    one(&check(&[5 << 3 | 4]), ViolationKind::GroupMismatch, "");
    // ... and one for a declared field is reported at that field (found by fuzzing).
    one(&check(&[2 << 3 | 4]), ViolationKind::GroupMismatch, "image_data");
    // Too large for the policy.
    let small = Policy {
        max_bytes: 4,
        ..Policy::default()
    };
    let result = validate(v1.pool(), REQUEST, &v1_request(&v1), &small).unwrap();
    one(&result, ViolationKind::TooLarge, "");

    // Nested paths in the response: the timestamp's seconds as fixed64, and a map value
    // as a varint inside the second map entry.
    let check = |bytes: &[u8]| validate(v1.pool(), RESPONSE, bytes, &policy).unwrap();
    let ts = [4 << 3 | 2, 9, 1 << 3 | 1, 0, 0, 0, 0, 0, 0, 0, 0];
    one(&check(&ts), ViolationKind::WrongWireType, "processed_at.seconds");
    let good_entry = [5 << 3 | 2, 8, 1 << 3 | 2, 1, b'a', 2 << 3 | 5, 0, 0, 0, 0];
    let bad_entry = [5 << 3 | 2, 5, 1 << 3 | 2, 1, b'b', 2 << 3, 1];
    let both: Vec<u8> = good_entry.iter().chain(bad_entry.iter()).copied().collect();
    one(&check(&both), ViolationKind::WrongWireType, "quality_scores[1].value");
    // A packed float list whose length is not a multiple of 4.
    one(&check(&[3 << 3 | 2, 3, 0, 0, 0]), ViolationKind::Truncated, "feature_vector[0]");
}

#[test]
fn missing_required_fields_are_found_recursively() {
    let schema = compile(&[(
        "legacy/v1/order.proto",
        r#"syntax = "proto2";
package legacy.v1;
message Item { required string sku = 1; optional int32 qty = 2; }
message Order {
  required string id = 1;
  optional Item first = 2;
  repeated Item items = 3;
  optional group Note = 4 { required string text = 5; }
}
"#,
    )]);
    let desc = schema.pool().get_message_by_name("legacy.v1.Order").unwrap();
    let policy = Policy::default();
    // No id; `first` without sku; items[1] without sku; a group without its text.
    let payload = [
        2 << 3 | 2, 2, 2 << 3, 1, // first { qty: 1 }
        3 << 3 | 2, 3, 1 << 3 | 2, 1, b'x', // items[0] { sku: "x" }
        3 << 3 | 2, 0, // items[1] {}
        4 << 3 | 3, 4 << 3 | 4, // Note {}
    ];
    let result = validate_message(&desc, &payload, &policy);
    let mut found = kinds_and_paths(&result);
    found.sort();
    let expected: Vec<(ViolationKind, String)> = ["first.sku", "id", "items[1].sku", "note.text"]
        .iter()
        .map(|p| (ViolationKind::MissingRequired, p.to_string()))
        .collect();
    assert_eq!(found, expected, "{result:#?}");
    // Proto2 strings are not checked for UTF-8 (the spec leaves them unchecked).
    let ok = [1 << 3 | 2, 1, 0xff];
    assert!(validate_message(&desc, &ok, &policy).is_valid());
}

#[test]
fn nesting_depth_is_capped() {
    let schema = compile(&[("t/v1/t.proto", "syntax = \"proto3\";\npackage t.v1;\nmessage Node { Node child = 1; }\n")]);
    let desc = schema.pool().get_message_by_name("t.v1.Node").unwrap();
    let mut payload: Vec<u8> = Vec::new();
    for _ in 0..5 {
        let mut outer = vec![1 << 3 | 2, payload.len() as u8];
        outer.extend(payload);
        payload = outer;
    }
    let policy = Policy {
        max_depth: 3,
        ..Policy::default()
    };
    one(&validate_message(&desc, &payload, &policy), ViolationKind::TooDeep, "child.child.child.child");
    assert!(validate_message(&desc, &payload, &Policy::default()).is_valid());
}

fn frame(flag: u8, message: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend((message.len() as u32).to_be_bytes());
    out.extend(message);
    out
}

#[test]
fn grpc_frames_are_checked() {
    let v1 = features(false);
    let desc = v1.pool().get_message_by_name(REQUEST).unwrap();
    let policy = Policy::default();
    let request = v1_request(&v1);

    assert!(validate_grpc_frames(&desc, &frame(0, &request), &policy).is_valid());
    // Client streaming: two frames, the second with a bad field.
    let mut two = frame(0, &request);
    two.extend(frame(0, &[2 << 3, 1]));
    let result = validate_grpc_frames(&desc, &two, &policy);
    one(&result, ViolationKind::WrongWireType, "image_data");
    assert_eq!(result.violations[0].frame, Some(1));
    assert_eq!(result.violations[0].offset, frame(0, &request).len() + 5);

    let compressed = validate_grpc_frames(&desc, &frame(1, &request), &policy);
    one(&compressed, ViolationKind::CompressedFrame, "");
    assert!(compressed.violations[0].message.contains("grpc-encoding"), "{compressed:#?}");

    let mut short = frame(0, &request);
    short.truncate(short.len() - 1);
    let result = validate_grpc_frames(&desc, &short, &policy);
    one(&result, ViolationKind::BadFrame, "");
    assert!(result.violations[0].message.contains("announces"), "{result:#?}");

    one(&validate_grpc_frames(&desc, &[0, 0, 0], &policy), ViolationKind::BadFrame, "");
    one(&validate_grpc_frames(&desc, &frame(7, &request), &policy), ViolationKind::BadFrame, "");
    let small = Policy {
        max_bytes: 8,
        ..Policy::default()
    };
    one(&validate_grpc_frames(&desc, &frame(0, &request), &small), ViolationKind::TooLarge, "");
}

#[test]
fn the_registry_counts_validations_by_kind() {
    use switchyard_schema::registry::{Registry, RegistryConfig};
    let v1 = features(false);
    let registry = Registry::open(RegistryConfig::default()).unwrap();
    let payload = v1_request(&v1);
    registry.register(v1, "v1", None, false).unwrap();
    let policy = Policy::default();
    assert!(registry.validate("features.v1", None, REQUEST, &payload, false, &policy).unwrap().is_valid());
    let bad = registry.validate("features.v1", Some(1), REQUEST, &[2 << 3, 1], false, &policy).unwrap();
    assert!(!bad.is_valid());
    assert!(registry.validate("features.v1", Some(9), REQUEST, &payload, false, &policy).is_err());
    assert!(registry.validate("features.v1", None, "features.v1.Nope", &payload, false, &policy).is_err());
    let metrics = registry.metrics();
    assert_eq!(metrics.validations(), 2);
    assert_eq!(metrics.violations(ViolationKind::WrongWireType), 1);
    let text = metrics.render_prometheus("switchyard_");
    assert!(text.contains("switchyard_schema_violations_total{kind=\"wrong_wire_type\"} 1"), "{text}");
    assert!(text.contains("switchyard_schema_revisions_loaded_total{subject=\"features.v1\"} 1"), "{text}");
}

/// The Envoy filter runs this validator inside its Wasm VM, where a panic would take the
/// listener's traffic down: arbitrary bytes must give violations, never a panic. A seeded
/// xorshift drives random payloads, random mutations of a valid one, and random frames.
#[test]
fn arbitrary_bytes_never_panic() {
    let schema = features(true);
    let desc = schema.pool().get_message_by_name(REQUEST).unwrap();
    let valid = v1_request(&features(false));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let policy = Policy { unknown_fields: UnknownFields::Reject, ..Policy::default() };
    for round in 0..20_000 {
        let payload: Vec<u8> = match round % 3 {
            0 => (0..next() % 64).map(|_| next() as u8).collect(),
            1 => {
                let mut p = valid.clone();
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % p.len();
                    p[i] = next() as u8;
                }
                p.truncate((next() as usize) % (p.len() + 1));
                p
            }
            _ => {
                let mut f = vec![(next() % 3) as u8];
                f.extend_from_slice(&((next() % 80) as u32).to_be_bytes());
                f.extend((0..next() % 80).map(|_| next() as u8));
                f
            }
        };
        let _ = validate_message(&desc, &payload, &policy);
        let _ = validate_grpc_frames(&desc, &payload, &policy);
    }
}

/// A client on one schema, a service on another: field 1 is an `int64` for the client and a
/// `string` for the service; field 3 is an `int64` both sides.
const CLIENT: &str = "syntax = \"proto3\";\npackage skew.v1;\nmessage Order { int64 id = 1; string note = 2; int64 total = 3; }\n";
const SERVICE: &str = "syntax = \"proto3\";\npackage skew.v1;\nmessage Order { string id = 1; string note = 2; int64 total = 3; }\n";

/// Runs `script` in the venv's Python with `client.binpb` and `service.binpb` (descriptor
/// sets) and `payload.bin` beside it; returns what it prints as JSON.
fn python_runtime(script: &str, payload: &[u8]) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("client.binpb"), compile(&[("skew/v1/order.proto", CLIENT)]).encode()).unwrap();
    std::fs::write(tmp.path().join("service.binpb"), compile(&[("skew/v1/order.proto", SERVICE)]).encode()).unwrap();
    std::fs::write(tmp.path().join("payload.bin"), payload).unwrap();
    let prelude = r#"
import json, sys
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, unknown_fields
def order(name):
    fds = descriptor_pb2.FileDescriptorSet.FromString(open(name, "rb").read())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("skew.v1.Order"))
Client, Service = order("client.binpb"), order("service.binpb")
payload = open("payload.bin", "rb").read()
"#;
    let out = std::process::Command::new(common::python())
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn a_field_with_another_wire_type_is_a_mismatch_the_receiver_would_lose() {
    // The real runtime serialises the client's order and parses it as the service does:
    // it accepts the bytes, `id` reads as unset, and the value sits among unknown fields.
    let seen = python_runtime(
        r#"
sent = Client(id=42, note="gift", total=7).SerializeToString()
got = Service.FromString(sent)
print(json.dumps({"payload": sent.hex(), "id": got.id, "note": got.note, "unknown": len(unknown_fields.UnknownFieldSet(got))}))
"#,
        &[],
    );
    assert_eq!((seen["id"].as_str(), seen["note"].as_str(), seen["unknown"].as_u64()), (Some(""), Some("gift"), Some(1)), "{seen}");
    let payload: Vec<u8> = (0..seen["payload"].as_str().unwrap().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&seen["payload"].as_str().unwrap()[i..i + 2], 16).unwrap())
        .collect();

    let service = compile(&[("skew/v1/order.proto", SERVICE)]);
    // Rejected by default, saying what the service would do with it.
    let v = validate(service.pool(), "skew.v1.Order", &payload, &Policy::default()).unwrap();
    one(&v, ViolationKind::WrongWireType, "id");
    let message = &v.violations[0].message;
    assert!(message.contains("arrived as varint") && message.contains("length-delimited"), "{message}");
    assert!(message.contains("keeps it as an unknown field"), "{message}");
    assert_eq!(v.violations[0].offset, 0);
    // Under `warn`, forwarded as the runtimes would, and reported.
    let warn = Policy { wire_type_mismatch: WireTypeMismatch::Warn, ..Policy::default() };
    let v = validate(service.pool(), "skew.v1.Order", &payload, &warn).unwrap();
    assert!(v.is_valid(), "{v:#?}");
    assert_eq!(v.warnings.iter().map(|w| (w.kind, w.path.as_str())).collect::<Vec<_>>(), [(ViolationKind::WrongWireType, "id")]);
    // The client's own schema finds nothing wrong.
    let client = compile(&[("skew/v1/order.proto", CLIENT)]);
    assert!(validate(client.pool(), "skew.v1.Order", &payload, &Policy::default()).unwrap().violations.is_empty());
    // The policy is also a registry setting and a CLI flag: both spell it the same.
    assert_eq!("warn".parse::<WireTypeMismatch>(), Ok(WireTypeMismatch::Warn));
    assert!("allow".parse::<WireTypeMismatch>().unwrap_err().contains("expected warn or reject"));
}

#[test]
fn ten_byte_varints_keep_their_low_64_bits_as_the_runtimes_do() {
    // total (3, int64) = ten bytes whose last carries bits beyond 64: 0xff x 9, then 0x7f.
    let mut payload = vec![3 << 3];
    payload.extend([0xff; 9]);
    payload.push(0x7f);
    let seen = python_runtime(r#"print(json.dumps({"total": Service.FromString(payload).total}))"#, &payload);
    assert_eq!(seen["total"].as_i64(), Some(-1), "upb keeps the low 64 bits: {seen}");
    let service = compile(&[("skew/v1/order.proto", SERVICE)]);
    let v = validate(service.pool(), "skew.v1.Order", &payload, &Policy::default()).unwrap();
    assert!(v.is_valid() && v.warnings.is_empty(), "{v:#?}");
    // Eleven bytes are malformed for every runtime, and here.
    payload.pop();
    payload.extend([0xff, 0x01]);
    let rejected = python_runtime(
        r#"
try:
    Service.FromString(payload)
    print(json.dumps({"parsed": True}))
except Exception as e:
    print(json.dumps({"parsed": False}))
"#,
        &payload,
    );
    assert_eq!(rejected["parsed"].as_bool(), Some(false));
    one(&validate(service.pool(), "skew.v1.Order", &payload, &Policy::default()).unwrap(), ViolationKind::BadVarint, "total");
}
