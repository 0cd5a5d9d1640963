//! Editions (`edition = "2023"`): sources and buf images load as the same schema, Google's
//! feature files load, payloads a real runtime serialises validate, and bad editions input
//! is refused with file:line:column. Breaking rules on editions are checked against buf by
//! the editions corpus (`corpus.rs`, `differential.rs`).

mod common;

use std::process::Command;
use switchyard_schema::compile::{compile_dir, LoadError};
use switchyard_schema::editions::{Edition, Features};
use switchyard_schema::validate::{validate_message, Policy, ViolationKind};
use switchyard_schema::Schema;

const ORDER: &str = r#"edition = "2023";
package shop.v1;
option features.utf8_validation = VERIFY;

enum Status {
  option features.enum_type = CLOSED;
  STATUS_NEW = 1;
  STATUS_PAID = 2;
}

message Line {
  string sku = 1;
  int32 qty = 2 [default = 1];
}

message Order {
  reserved 9;
  reserved legacy_note;
  string id = 1 [features.field_presence = LEGACY_REQUIRED];
  int64 total = 2 [features.field_presence = IMPLICIT];
  Line first = 3 [features.message_encoding = DELIMITED];
  repeated Line lines = 4;
  repeated int32 marks = 5 [features.repeated_field_encoding = EXPANDED];
  Status status = 6;
  string note = 7 [features.utf8_validation = NONE];
  map<string, int32> stock = 8;
}
"#;

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    common::write_tree(tmp.path(), files);
    tmp
}

#[test]
fn sources_and_buf_images_are_one_schema() {
    let dir = tree(&[("shop/v1/order.proto", ORDER)]);
    let compiled = compile_dir(dir.path()).unwrap();
    let built = Schema::decode(&common::buf_build(dir.path(), &[])).unwrap();
    assert_eq!(compiled.fingerprint(), built.fingerprint());
    assert_eq!(compiled.edition("shop/v1/order.proto"), Some(Edition::E2023));
    assert_eq!(built.edition("shop/v1/order.proto"), Some(Edition::E2023));

    // Served as written: `syntax = "editions"`, edition 2023, and the same schema once
    // decoded again (as the store and the filter's snapshot do).
    let served = compiled.encode();
    let set = <prost_types::FileDescriptorSet as prost::Message>::decode(served.as_slice()).unwrap();
    let file = set.file.iter().find(|f| f.name() == "shop/v1/order.proto").unwrap();
    assert_eq!(file.syntax(), "editions");
    let again = Schema::decode(&served).unwrap();
    assert_eq!(again.fingerprint(), compiled.fingerprint());
    assert_eq!(again.encode(), served);

    // What the features resolve to, as the checker and the validator see it.
    let order = compiled.pool().get_message_by_name("shop.v1.Order").unwrap();
    let field = |name: &str| order.get_field_by_name(name).unwrap();
    assert!(field("id").is_required());
    assert!(field("first").is_group(), "DELIMITED is a group on the wire");
    assert!(switchyard_schema::editions::has_presence(&field("id")));
    assert!(!switchyard_schema::editions::has_presence(&field("total")));
    assert!(switchyard_schema::editions::has_presence(&field("status")));

    // Positions are the file's as written (the label-less field `id`, line 19, column 3).
    let location = compiled.location("shop/v1/order.proto", field("id").path()).unwrap();
    assert_eq!((location.line, location.column), (19, 3));
}

#[test]
fn payloads_from_a_real_runtime_validate() {
    let dir = tree(&[("shop/v1/order.proto", ORDER)]);
    let schema = compile_dir(dir.path()).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("order.binpb"), schema.encode()).unwrap();
    // The Python runtime (upb) loads the served descriptors and serialises an order:
    // a delimited (group-encoded) `first`, expanded marks, a map.
    let out = Command::new(common::python())
        .current_dir(scratch.path())
        .arg("-c")
        .arg(
            r#"
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
fds = descriptor_pb2.FileDescriptorSet.FromString(open("order.binpb", "rb").read())
pool = descriptor_pool.DescriptorPool()
for f in fds.file:
    pool.Add(f)
Order = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.v1.Order"))
o = Order(id="o-1", total=0, status=2, note="hi")
o.first.sku = "a"
o.lines.add(sku="b", qty=3)
o.marks.extend([1, 2])
o.stock["b"] = 4
open("order.bin", "wb").write(o.SerializeToString())
"#,
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    let payload = std::fs::read(scratch.path().join("order.bin")).unwrap();
    // `first` went out as a group (wire type 3), as the DELIMITED feature says.
    assert!(payload.windows(1).any(|b| b[0] == (3 << 3 | 3)), "{payload:02x?}");
    let order = schema.pool().get_message_by_name("shop.v1.Order").unwrap();
    let policy = Policy::default();
    let result = validate_message(&order, &payload, &policy);
    assert!(result.is_valid(), "{result:#?}");

    // Hand-made: no id (LEGACY_REQUIRED), invalid UTF-8 in a verified string, and the same
    // bytes in `note`, whose feature turns the check off.
    let bad = [3 << 3 | 3, 1 << 3 | 2, 1, 0xff, 3 << 3 | 4, 7 << 3 | 2, 1, 0xff];
    let result = validate_message(&order, &bad, &policy);
    let mut kinds: Vec<(ViolationKind, String)> =
        result.violations.iter().map(|v| (v.kind, v.path.clone())).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [(ViolationKind::InvalidUtf8, "first.sku".to_owned()), (ViolationKind::MissingRequired, "id".to_owned())],
        "{result:#?}"
    );
}

/// Google's own feature files, as the venv's protobuf tools install them.
fn google_feature_files() -> Vec<(String, String)> {
    let dir = common::workspace_root().join(".venv/lib/python3.11/site-packages/grpc_tools/_proto/google/protobuf");
    ["cpp_features.proto", "java_features.proto", "go_features.proto"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| {
                panic!("{}: {e} — run `cargo xtask setup` (installs grpcio-tools into .venv)", dir.join(name).display())
            });
            (format!("google/protobuf/{name}"), text)
        })
        .collect()
}

#[test]
fn googles_feature_files_load_and_their_features_apply() {
    let features = google_feature_files();
    let mut files: Vec<(&str, &str)> = features.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let user = r#"edition = "2023";
package lang.v1;
import "google/protobuf/cpp_features.proto";
import "google/protobuf/java_features.proto";
import "google/protobuf/go_features.proto";
option features.(pb.cpp).legacy_closed_enum = false;
option features.(pb.java).legacy_closed_enum = false;
message Doc {
  string body = 1 [features.(pb.cpp).string_type = VIEW];
}
"#;
    files.push(("lang/v1/doc.proto", user));
    let dir = tree(&files);
    let compiled = compile_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let built = Schema::decode(&common::buf_build(dir.path(), &[])).unwrap();
    // buf's image carries buf's own (newer) descriptor.proto, so whole-set fingerprints differ;
    // the user's file means the same: the same options, features and language features.
    let options = |schema: &Schema| {
        let doc = schema.pool().get_message_by_name("lang.v1.Doc").unwrap();
        let body = doc.get_field_by_name("body").unwrap();
        (
            prost::Message::encode_to_vec(&doc.parent_file().options()),
            prost::Message::encode_to_vec(&body.options()),
            Features::of_field(&body),
        )
    };
    assert_eq!(options(&compiled), options(&built));
    let (file_options, _, features) = options(&compiled);
    assert_eq!(features.utf8_validation, Features::EDITION_2023.utf8_validation);
    // `(pb.cpp)` is FeatureSet extension 1000: kept beside the core features.
    assert!(file_options.windows(2).any(|w| w == [0xc2, 0x3e]), "pb.cpp features kept: {file_options:02x?}");
    // And they survive being served and decoded again.
    let served = compiled.encode();
    assert_eq!(Schema::decode(&served).unwrap().fingerprint(), compiled.fingerprint());
}

#[test]
fn googles_feature_files_are_built_in_as_in_buf() {
    // No feature files in the tree: buf has them built in, so do we.
    let user = r#"edition = "2023";
package lang.v1;
import "google/protobuf/cpp_features.proto";
import "google/protobuf/java_features.proto";
import "google/protobuf/go_features.proto";
option features.(pb.java).legacy_closed_enum = false;
option features.(pb.go).api_level = API_OPAQUE;
message Doc {
  string body = 1 [features.(pb.cpp).string_type = VIEW, features.(pb.java).utf8_validation = VERIFY];
  repeated int32 marks = 2;
}
"#;
    let dir = tree(&[("lang/v1/doc.proto", user)]);
    let compiled = compile_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let built = Schema::decode(&common::buf_build(dir.path(), &[])).unwrap();
    let options = |schema: &Schema| {
        let doc = schema.pool().get_message_by_name("lang.v1.Doc").unwrap();
        let fields: Vec<Vec<u8>> = doc.fields().map(|f| prost::Message::encode_to_vec(&f.options())).collect();
        (prost::Message::encode_to_vec(&doc.parent_file().options()), fields)
    };
    assert_eq!(options(&compiled), options(&built));
}

fn refused(text: &str) -> LoadError {
    let dir = tree(&[("bad/v1/bad.proto", text)]);
    compile_dir(dir.path()).expect_err("must be refused")
}

fn at(err: &LoadError) -> (u32, u32) {
    (err.line.unwrap_or(0), err.column.unwrap_or(0))
}

#[test]
fn bad_editions_input_is_refused_with_file_line_and_column() {
    let cases: &[(&str, (u32, u32), &str)] = &[
        ("edition = \"2031\";\npackage bad.v1;\n", (1, 11), "\"2031\" is not supported"),
        ("edition = \"2023\";\npackage bad.v1;\nmessage M {\n  optional int32 a = 1;\n}\n", (4, 3), "field_presence = EXPLICIT"),
        ("edition = \"2023\";\npackage bad.v1;\nmessage M {\n  int32 a = ;\n}\n", (4, 13), "expected"),
        ("edition = \"2023\";\npackage bad.v1;\nmessage M {\n  reserved \"a\";\n}\n", (4, 12), "identifiers"),
        (
            "edition = \"2023\";\npackage bad.v1;\nmessage M {\n  repeated int32 a = 1 [features.field_presence = EXPLICIT];\n}\n",
            (4, 25),
            "repeated fields can't specify field presence",
        ),
        (
            "edition = \"2023\";\npackage bad.v1;\nmessage N {}\nmessage M {\n  N n = 1 [features.field_presence = IMPLICIT];\n}\n",
            (5, 12),
            "implicit presence",
        ),
        (
            "edition = \"2023\";\npackage bad.v1;\noption features.field_presence = IMPLICIT;\nmessage M {\n  int32 a = 1 [default = 3];\n}\n",
            (5, 26),
            "can't specify defaults",
        ),
        (
            "edition = \"2023\";\npackage bad.v1;\nenum E {\n  E_ONE = 1;\n}\n",
            (4, 11),
            "open enum must be zero",
        ),
        (
            "edition = \"2023\";\npackage bad.v1;\nmessage M {\n  int32 a = 1 [features.message_encoding = DELIMITED];\n}\n",
            (4, 16),
            "only message fields",
        ),
        (
            "edition = \"2023\";\npackage bad.v1;\nmessage M {\n  int32 a = 1 [features.field_presence = NOPE];\n}\n",
            (4, 16),
            "NOPE",
        ),
    ];
    let mut wrong = Vec::new();
    for (text, position, says) in cases {
        let err = refused(text);
        if err.file.as_deref() != Some("bad/v1/bad.proto") || at(&err) != *position || !err.message.contains(says) {
            wrong.push(format!("{text:?}\n  expected {position:?} saying {says:?}\n  got {err}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn mutated_editions_sources_load_or_are_refused_with_a_file() {
    // Every single-byte change of a realistic file either loads or is refused with the
    // file named; nothing panics (protox, the lowering, the position mapping, the pool).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop/v1/order.proto");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let (mut loaded, mut refused) = (0, 0);
    for at in (0..ORDER.len()).step_by(3) {
        for with in [b'}', b';', b' '] {
            let mut text = ORDER.as_bytes().to_vec();
            text[at] = with;
            std::fs::write(&path, &text).unwrap();
            match compile_dir(dir.path()) {
                Ok(_) => loaded += 1,
                Err(e) => {
                    assert_eq!(e.file.as_deref(), Some("shop/v1/order.proto"), "{e}");
                    refused += 1;
                }
            }
        }
    }
    assert!(loaded > 0 && refused > 0, "{loaded} loaded, {refused} refused");
}
