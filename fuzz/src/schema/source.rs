//! `schema_proto_source`: `.proto` text as the registry compiles a submitted document
//! (`Registry::compile_document`: protox, with the crate's own editions lowering in front).
//!
//! A refused document must point into the text the client sent; an accepted one must mean
//! one thing: the same fingerprint when compiled again, when stored and reloaded, and when
//! sent as a serialized `FileDescriptorProto` instead of text (Confluent clients send
//! either, and the fingerprint decides the schema id).

use super::schemas;
use prost::Message;
use std::collections::BTreeSet;
use switchyard_schema::compile::LoadError;
use switchyard_schema::Schema;

pub fn proto_source(data: &[u8]) {
    // Documents arrive in JSON strings (the Confluent API) or are refused as "not valid
    // UTF-8" before compiling (the watched directory): only text reaches the compiler.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let registry = schemas::registry();
    match registry.compile_document(text, &[]) {
        Ok((schema, document)) => {
            let (again, _) = registry.compile_document(text, &[]).unwrap_or_else(|e| panic!("compiles once, then not: {e}"));
            assert_eq!(again.fingerprint(), schema.fingerprint(), "the same text compiles to two fingerprints");
            let own: BTreeSet<String> = schema.own_files().map(str::to_owned).collect();
            let restored = Schema::decode_with_own_files(&schema.encode(), own)
                .unwrap_or_else(|e| panic!("a compiled document does not reload as stored: {e}"));
            assert_eq!(restored.fingerprint(), schema.fingerprint(), "the fingerprint changes across a restart");
            as_descriptor(&schema, &document.file);
        }
        Err(e) => located(text, &e),
    }
}

/// The compiled file, sent back as the base64 of its `FileDescriptorProto` (what
/// `confluent-kafka`'s serializer registers), compiles to the same fingerprint.
fn as_descriptor(schema: &Schema, root: &str) {
    let encoded = schema.encode();
    let Some(file) = files(&encoded).find(|f| prost_types::FileDescriptorProto::decode(*f).is_ok_and(|p| p.name() == root)) else {
        panic!("the compiled set has no {root}");
    };
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(file);
    match schemas::registry().compile_document(&b64, &[]) {
        Ok((from_descriptor, _)) => assert_eq!(
            from_descriptor.fingerprint(),
            schema.fingerprint(),
            "the same schema as text and as a serialized descriptor gets two fingerprints"
        ),
        Err(e) => panic!("the compiled file, sent as a serialized descriptor, is refused: {e}"),
    }
}

/// The encoded files of a `FileDescriptorSet` (field 1, length-delimited), as sent.
fn files(set: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = set;
    std::iter::from_fn(move || {
        let mut buf = rest;
        let key = prost::encoding::decode_varint(&mut buf).ok()?;
        assert_eq!(key, (1 << 3) | 2, "Schema::encode wrote a field other than `file`");
        let len = usize::try_from(prost::encoding::decode_varint(&mut buf).ok()?).ok()?;
        let file = buf.get(..len)?;
        rest = &buf[len..];
        Some(file)
    })
}

/// A refusal names the file and, when it has a position, one inside the text.
fn located(text: &str, e: &LoadError) {
    assert!(!e.message.is_empty(), "a refusal without a message: {e:?}");
    assert!(e.file.is_some(), "a refusal that names no file: {e}");
    match (e.line, e.column) {
        (None, None) => {}
        (Some(line), Some(column)) => {
            // protox (through miette) ends a line at `\n`, `\r\n` or a lone `\r`, as editors do.
            let lines: Vec<&str> = text.split('\n').flat_map(|l| l.strip_suffix('\r').unwrap_or(l).split('\r')).collect();
            let Some(at) = line.checked_sub(1).and_then(|l| lines.get(l as usize)) else {
                panic!("line {line} of a {}-line document: {e}", lines.len());
            };
            // Columns count bytes (as protoc's do), not characters.
            assert!(column >= 1 && column as usize <= at.len() + 1, "column {column} of a {}-byte line: {e}", at.len());
        }
        _ => panic!("a line without a column or a column without a line: {e:?}"),
    }
}
