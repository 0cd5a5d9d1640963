//! Loading schemas: `.proto` trees and buf-built descriptor sets give the same canonical
//! fingerprint; broken trees fail with file, line and column.

mod common;

use prost::Message;
use switchyard_schema::compile::{compile_dir, load};
use switchyard_schema::Schema;

fn features_tree() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::corpus_dir().join("features_v1__ok_add_fields/new");
    common::copy_tree(&src, tmp.path()).unwrap();
    // A second file importing the first, so order and imports matter.
    common::write_tree(
        tmp.path(),
        &[(
            "features/v1/batch.proto",
            "syntax = \"proto3\";\npackage features.v1;\nimport \"features/v1/features.proto\";\n\
             message Batch {\n  repeated ExtractRealtimeRequest requests = 1;\n}\n",
        )],
    );
    tmp
}

#[test]
fn fingerprint_ignores_the_producer_file_order_and_source_info() {
    let tree = features_tree();
    let compiled = compile_dir(tree.path()).unwrap();
    let fingerprint = compiled.fingerprint();

    for extra in [&[][..], &["--exclude-imports"], &["--exclude-source-info"], &["--as-file-descriptor-set"]] {
        let bytes = common::buf_build(tree.path(), extra);
        let decoded = Schema::decode(&bytes).unwrap_or_else(|e| panic!("buf build {extra:?}: {e}"));
        assert_eq!(decoded.fingerprint(), fingerprint, "buf build {extra:?}");
        assert_eq!(
            decoded.own_files().collect::<Vec<_>>(),
            ["features/v1/batch.proto", "features/v1/features.proto"],
            "buf marks imports; {extra:?}"
        );
    }

    // Reversed file order, no source info: same fingerprint.
    let mut set = prost_types::FileDescriptorSet::decode(compiled.encode().as_slice()).unwrap();
    set.file.reverse();
    for f in &mut set.file {
        f.source_code_info = None;
    }
    let canonical = switchyard_schema::Fingerprint::of_descriptor_set(&set.encode_to_vec()).unwrap();
    assert_eq!(canonical, fingerprint);

    // A change of meaning changes it.
    let path = tree.path().join("features/v1/batch.proto");
    let text = std::fs::read_to_string(&path).unwrap().replace("requests = 1", "requests = 2");
    std::fs::write(&path, text).unwrap();
    assert_ne!(compile_dir(tree.path()).unwrap().fingerprint(), fingerprint);
    // A comment does not.
    let text = std::fs::read_to_string(&path).unwrap().replace("message Batch", "// batches\nmessage Batch");
    std::fs::write(&path, &text).unwrap();
    let commented = compile_dir(tree.path()).unwrap().fingerprint();
    std::fs::write(&path, text.replace("// batches\n", "")).unwrap();
    assert_eq!(compile_dir(tree.path()).unwrap().fingerprint(), commented);
}

fn error_of(files: &[(&str, &str)]) -> switchyard_schema::compile::LoadError {
    let tmp = tempfile::tempdir().unwrap();
    common::write_tree(tmp.path(), files);
    compile_dir(tmp.path()).expect_err("must not compile")
}

#[test]
fn load_errors_name_file_line_and_column() {
    let parse = error_of(&[("a/v1/a.proto", "syntax = \"proto3\";\npackage a.v1;\nmessage M {\n  int32 x = ;\n}\n")]);
    assert_eq!((parse.file.as_deref(), parse.line, parse.column), (Some("a/v1/a.proto"), Some(4), Some(13)), "{parse}");

    let import = error_of(&[("a/v1/a.proto", "syntax = \"proto3\";\npackage a.v1;\nimport \"missing/b.proto\";\n")]);
    assert_eq!((import.file.as_deref(), import.line, import.column), (Some("a/v1/a.proto"), Some(3), Some(1)), "{import}");
    assert!(import.message.contains("missing/b.proto"), "{import}");

    let duplicate = error_of(&[
        ("a/v1/a.proto", "syntax = \"proto3\";\npackage a.v1;\nmessage M {}\n"),
        ("a/v1/b.proto", "syntax = \"proto3\";\npackage a.v1;\n\nmessage M {}\n"),
    ]);
    assert!(duplicate.file.is_some() && duplicate.line.is_some() && duplicate.column.is_some(), "{duplicate}");
    assert!(duplicate.message.contains("a.v1.M"), "{duplicate}");

    let not_a_set = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_a_set.path(), b"\xff\xff\xff").unwrap();
    let err = load(not_a_set.path()).unwrap_err();
    assert!(err.message.contains("FileDescriptorSet"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    assert!(compile_dir(empty.path()).unwrap_err().message.contains("no .proto files"));
}
