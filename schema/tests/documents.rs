//! Schemas registered as one document plus references (the Confluent API's model): compile
//! errors with positions, dangling references, schema ids, run-time modes, persistence,
//! and validating Confluent-framed records.

use base64::Engine;
use prost::Message;
use std::sync::Arc;
use switchyard_schema::compat::Mode;
use switchyard_schema::registry::{Outcome, Reference, Registry, RegistryConfig, RejectReason, ROOT_FILE};
use switchyard_schema::validate::{Policy, ViolationKind};

const MONEY: &str = r#"syntax = "proto3";
package common;
message Money {
  string currency = 1;
  int64 units = 2;
}
"#;

const ORDER: &str = r#"syntax = "proto3";
package shop;
import "common/money.proto";
import "google/protobuf/timestamp.proto";
message Order {
  string id = 1;
  common.Money total = 2;
  google.protobuf.Timestamp placed_at = 3;
  message Line {
    string sku = 1;
    uint32 quantity = 2;
  }
  repeated Line lines = 4;
}
"#;

fn money_ref() -> Vec<Reference> {
    vec![Reference { name: "common/money.proto".into(), subject: "money".into(), version: 1 }]
}

fn open(state: Option<&std::path::Path>) -> Arc<Registry> {
    Registry::open(RegistryConfig { state_dir: state.map(|p| p.to_path_buf()), ..RegistryConfig::default() })
        .expect("open registry")
}

fn accepted(outcome: Result<Outcome, switchyard_schema::registry::Rejection>) -> Arc<switchyard_schema::registry::Revision> {
    match outcome {
        Ok(Outcome::Accepted(r)) => r,
        other => panic!("expected a new revision, got {other:?}"),
    }
}

#[test]
fn documents_with_references_get_content_ids_that_survive_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let registry = open(Some(state.path()));
    let money = accepted(registry.register_document("money", MONEY, &[], "test"));
    assert_eq!((money.id, money.number), (1, 1));
    let order = accepted(registry.register_document("orders-value", ORDER, &money_ref(), "test"));
    assert_eq!((order.id, order.number), (2, 1));
    assert_eq!(order.document.as_ref().unwrap().file, ROOT_FILE);

    // Same content again, under the same subject: no new version, the same id.
    match registry.register_document("orders-value", ORDER, &money_ref(), "test") {
        Ok(Outcome::Unchanged(r)) => assert_eq!((r.id, r.number), (2, 1)),
        other => panic!("{other:?}"),
    }
    // Same content under another subject, and with other comments: the same id.
    let commented = format!("// the shared money type\n{MONEY}");
    let again = accepted(registry.register_document("common/money.proto", &commented, &[], "test"));
    assert_eq!(again.id, 1);
    // The serialized descriptor of the same file (what confluent-kafka's serializer
    // sends), whatever name it carries: the same id.
    let descriptor = money.schema.pool().get_file_by_name(ROOT_FILE).unwrap().file_descriptor_proto().clone();
    let renamed = prost_types::FileDescriptorProto { name: Some("common/money.proto".into()), ..descriptor };
    let b64 = base64::engine::general_purpose::STANDARD.encode(renamed.encode_to_vec());
    let serialized = accepted(registry.register_document("money-serialized", &b64, &[], "test"));
    assert_eq!(serialized.id, 1, "a serialized descriptor of the same file shares its id");

    // New content: the next id.
    let v2 = ORDER.replace("  repeated Line lines = 4;\n", "  repeated Line lines = 4;\n  string note = 5;\n");
    let order2 = accepted(registry.register_document("orders-value", &v2, &money_ref(), "test"));
    assert_eq!((order2.id, order2.number), (3, 2));
    registry.set_mode(Some("orders-value"), Some(Mode::FullTransitive)).unwrap();
    registry.set_mode(None, Some(Mode::Forward)).unwrap();
    drop(registry);

    let registry = open(Some(state.path()));
    let st = registry.state();
    let r = st.revision_by_id(2).expect("id 2 after restart");
    assert_eq!((r.subject.as_str(), r.number), ("orders-value", 1));
    assert_eq!(r.document.as_ref().unwrap().schema, ORDER, "the document is served back as sent");
    assert_eq!(r.document.as_ref().unwrap().references, money_ref());
    assert_eq!(st.ids.uses(1).len(), 3, "money, common/money.proto, money-serialized");
    assert_eq!(registry.mode(Some("orders-value")), Mode::FullTransitive);
    assert_eq!(registry.mode(None), Mode::Forward);
    assert_eq!(registry.mode(Some("money")), Mode::Forward, "subjects without their own mode follow the global one");
    assert_eq!(st.subject("orders-value").unwrap().mode, Mode::FullTransitive, "the snapshot carries the mode");
    // New content after the restart continues the ids.
    let v3 = v2.replace("  string note = 5;\n", "  string note = 5;\n  string channel = 6;\n");
    assert_eq!(accepted(registry.register_document("orders-value", &v3, &money_ref(), "test")).id, 4);
}

#[test]
fn bad_documents_are_refused_with_positions_and_the_last_revision_keeps_serving() {
    let registry = open(None);
    accepted(registry.register_document("money", MONEY, &[], "test"));

    let broken = MONEY.replace("int64 units = 2;", "int64 units = ;");
    let rejection = registry.register_document("money", &broken, &[], "test").unwrap_err();
    let RejectReason::Load { error } = &rejection.reason else { panic!("{rejection}") };
    assert_eq!((error.file.as_deref(), error.line, error.column), (Some(ROOT_FILE), Some(5), Some(17)), "{error}");

    // An import without a reference, and a reference to a version that does not exist.
    let rejection = registry.register_document("orders-value", ORDER, &[], "test").unwrap_err();
    assert!(rejection.to_string().contains("common/money.proto"), "{rejection}");
    let dangling = vec![Reference { name: "common/money.proto".into(), subject: "money".into(), version: 7 }];
    let rejection = registry.register_document("orders-value", ORDER, &dangling, "test").unwrap_err();
    assert!(rejection.to_string().contains("subject 'money' has no version 7"), "{rejection}");
    let dangling = vec![Reference { name: "common/money.proto".into(), subject: "nope".into(), version: 1 }];
    let rejection = registry.register_document("orders-value", ORDER, &dangling, "test").unwrap_err();
    assert!(rejection.to_string().contains("subject 'nope' not found"), "{rejection}");

    // Breaking under BACKWARD: refused, version 1 still current.
    let breaking = MONEY.replace("int64 units = 2;", "string units = 2;");
    let rejection = registry.register_document("money", &breaking, &[], "test").unwrap_err();
    let RejectReason::Incompatible { against, .. } = &rejection.reason else { panic!("{rejection}") };
    let finding = &against[0].findings[0];
    assert_eq!(finding.rule.to_string(), "FIELD_WIRE_COMPATIBLE_TYPE");
    let at = finding.location.as_ref().expect("location");
    assert_eq!((at.file.as_str(), at.line), (ROOT_FILE, 5));
    assert_eq!(registry.state().subject("money").unwrap().current().number, 1);

    // Checking against one version, and under NONE.
    let (candidate, _) = registry.compile_document(&breaking, &[]).unwrap();
    assert!(!registry.check_against(&candidate, "money", 1).unwrap().compatible);
    registry.set_mode(Some("money"), Some(Mode::None)).unwrap();
    assert!(registry.check_against(&candidate, "money", 1).unwrap().compatible);
    assert!(registry.check_against(&candidate, "money", 2).is_err());
    assert_eq!(registry.set_mode(Some("money"), None).unwrap(), Some(Mode::None));
    assert_eq!(registry.mode(Some("money")), Mode::Backward);
}

/// Confluent's framing, as its serializers write it: `0`, the id, the message indexes.
fn framed(id: u32, indexes: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    out.extend(indexes);
    out.extend(payload);
    out
}

#[test]
fn framed_records_are_validated_against_the_type_their_indexes_name() {
    let registry = open(None);
    accepted(registry.register_document("money", MONEY, &[], "test"));
    let order = accepted(registry.register_document("orders-value", ORDER, &money_ref(), "test"));
    let policy = Policy::default();

    // Order { id: "a" }, as [0].
    let v = registry.validate_framed(&framed(order.id, &[0], &[0x0a, 0x01, b'a']), &policy);
    assert!(v.validation.is_valid(), "{v:?}");
    assert_eq!(v.message_type.as_deref(), Some("shop.Order"));
    // Order.Line { quantity: 3 }, as [0, 0] (count 2 → zigzag 4).
    let v = registry.validate_framed(&framed(order.id, &[4, 0, 0], &[0x10, 0x03]), &policy);
    assert!(v.validation.is_valid(), "{v:?}");
    assert_eq!(v.message_type.as_deref(), Some("shop.Order.Line"));
    // The same bytes read as an Order: field 2 is a message, a varint is the wrong wire type.
    let v = registry.validate_framed(&framed(order.id, &[0], &[0x10, 0x03]), &policy);
    assert_eq!(v.validation.violations[0].kind, ViolationKind::WrongWireType, "{v:?}");
    // Truncated payload.
    let v = registry.validate_framed(&framed(order.id, &[0], &[0x0a, 0x05, b'a']), &policy);
    assert_eq!(v.validation.violations[0].kind, ViolationKind::Truncated, "{v:?}");
    // Unknown id, indexes past the file, no magic byte: bad frames.
    for (record, says) in [
        (framed(99, &[0], &[]), "schema id 99 is not registered"),
        (framed(order.id, &[2, 6], &[]), "message indexes [3]"),
        (vec![1, 0, 0, 0, 1, 0], "magic byte"),
    ] {
        let v = registry.validate_framed(&record, &policy);
        let first = &v.validation.violations[0];
        assert_eq!(first.kind, ViolationKind::BadFrame);
        assert!(first.message.contains(says), "{}", first.message);
    }
}

/// `MONEY` and `ORDER` in edition 2023, with the same wire behaviour.
fn editions(text: &str) -> String {
    text.replace("syntax = \"proto3\";\n", "edition = \"2023\";\n")
        .replacen(";\n", ";\noption features.field_presence = IMPLICIT;\n", 1)
}

#[test]
fn editions_documents_register_with_editions_references_and_as_descriptors() {
    let registry = open(None);
    let money = accepted(registry.register_document("money", MONEY, &[], "test"));
    // proto3 → editions with the same features: compatible, a new version.
    let money2 = accepted(registry.register_document("money", &editions(MONEY), &[], "test"));
    assert_eq!(money2.number, 2);
    assert_eq!(money2.schema.edition(ROOT_FILE), Some(switchyard_schema::editions::Edition::E2023));
    assert_ne!(money.schema.fingerprint(), money2.schema.fingerprint());
    // An editions document importing the editions reference.
    let refs = vec![Reference { name: "common/money.proto".into(), subject: "money".into(), version: 2 }];
    let order = accepted(registry.register_document("orders-value", &editions(ORDER), &refs, "test"));
    let imported = order.schema.pool().get_message_by_name("common.Money").unwrap();
    let units = imported.get_field_by_name("units").unwrap();
    assert!(!switchyard_schema::editions::has_presence(&units), "the import keeps its implicit presence");
    assert_eq!(order.schema.edition("common/money.proto"), Some(switchyard_schema::editions::Edition::E2023));

    // The same schema as the serializer sends it: the base64 of its (editions) descriptor,
    // features and all. Same content, same id.
    let set = prost_types::FileDescriptorSet::decode(order.schema.encode().as_slice()).unwrap();
    let raw = {
        // Re-encode the root file from the served set at the wire level, keeping features.
        let served = order.schema.encode();
        let mut pos = 0;
        let mut found = None;
        while pos < served.len() {
            let key = prost::encoding::decode_varint(&mut &served[pos..]).unwrap();
            pos += prost::encoding::encoded_len_varint(key);
            let len = prost::encoding::decode_varint(&mut &served[pos..]).unwrap() as usize;
            pos += prost::encoding::encoded_len_varint(len as u64);
            let file = &served[pos..pos + len];
            if prost_types::FileDescriptorProto::decode(file).unwrap().name() == ROOT_FILE {
                found = Some(file.to_vec());
            }
            pos += len;
        }
        found.unwrap()
    };
    assert!(set.file.iter().any(|f| f.name() == ROOT_FILE && f.syntax() == "editions"));
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    match registry.register_document("orders-value", &b64, &refs, "test") {
        Ok(Outcome::Unchanged(same)) => assert_eq!(same.id, order.id),
        other => panic!("expected the same revision, got {other:?}"),
    }

    // Bad editions text: refused at its position, the last version keeps serving.
    let bad = editions(ORDER).replace("  string id = 1;", "  optional string id = 1;");
    match registry.register_document("orders-value", &bad, &refs, "test") {
        Err(rejection) => match &rejection.reason {
            RejectReason::Load { error } => {
                assert_eq!((error.file.as_deref(), error.line, error.column), (Some(ROOT_FILE), Some(7), Some(3)), "{error}");
            }
            other => panic!("expected a load error, got {other:?}"),
        },
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(registry.state().subject("orders-value").unwrap().current().number, order.number);
}
