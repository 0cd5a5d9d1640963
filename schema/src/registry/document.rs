//! Schemas submitted as one `.proto` document plus references (Confluent's model), as
//! opposed to the watched directory's trees.
//!
//! A document is `.proto` text, or (what `confluent-kafka`'s `ProtobufSerializer` sends)
//! the base64 of a serialized `FileDescriptorProto`. Each `import` it makes is resolved by a
//! reference, `{name, subject, version}`: the import path `name` is that subject version's
//! document. The well-known types (`google/protobuf/…`) need none.
//!
//! The document is compiled as [`ROOT_FILE`], whatever subject it is registered under and
//! whatever name a serialized descriptor carries: a file's name is part of the fingerprint,
//! and the fingerprint decides the schema id, so the same content must compile the same
//! way wherever it comes from. Findings and load errors therefore point at
//! `schema.proto:line:column`, the document as sent.

use super::{Registry, RegistryState, Revision};
use crate::compile::{well_known, Compilation, LoadError};
use crate::schema::Schema;
use base64::Engine;
use prost::Message;
use prost_types::FileDescriptorProto;
use protox::file::{File, FileResolver};
use std::collections::{BTreeSet, HashMap};

/// The name a document is compiled under (unless one of its imports has that name, then
/// [`ROOT_FILE_ALT`]).
pub const ROOT_FILE: &str = "schema.proto";
const ROOT_FILE_ALT: &str = "schema.root.proto";

/// A schema as submitted: kept with its revision so it can be served back as sent.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// `.proto` text, or base64 of a serialized `FileDescriptorProto`.
    pub schema: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    /// The name the document was compiled under (see [`ROOT_FILE`]).
    pub file: String,
}

/// An import resolved from another subject's version.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// The import path, as the document writes it.
    pub name: String,
    pub subject: String,
    pub version: u32,
}

/// The file of a revision that a document or a framed payload means: the document's, or
/// the only file of a revision loaded from the watched directory.
pub fn root_file(revision: &Revision) -> Result<String, String> {
    if let Some(doc) = &revision.document {
        return Ok(doc.file.clone());
    }
    let mut own = revision.schema.own_files();
    match (own.next(), own.next()) {
        (Some(file), None) => Ok(file.to_owned()),
        _ => Err(format!(
            "{}@{} has {} files of its own; a single-document view needs exactly one",
            revision.subject,
            revision.number,
            revision.schema.own_files().count()
        )),
    }
}

impl Registry {
    /// Compiles a document, resolving its references against the current state. Errors
    /// carry the document's `file:line:column`, or name the reference that does not
    /// resolve.
    pub fn compile_document(&self, schema: &str, references: &[Reference]) -> Result<(Schema, Document), LoadError> {
        compile(&self.state(), schema, references)
    }
}

fn compile(state: &RegistryState, schema: &str, references: &[Reference]) -> Result<(Schema, Document), LoadError> {
    let descriptor = as_descriptor(schema);
    let imports_root = references.iter().any(|r| r.name == ROOT_FILE)
        || descriptor.as_ref().is_some_and(|d| d.dependency.iter().any(|d| d == ROOT_FILE));
    let root = if imports_root { ROOT_FILE_ALT } else { ROOT_FILE };
    let error = |message: String| LoadError {
        file: Some(root.to_owned()),
        line: None,
        column: None,
        message,
    };

    // Imported files as their revisions hold them (editions files lowered), renamed where
    // the reference names them differently; options and features kept byte for byte.
    let mut imports: HashMap<String, Import> = HashMap::new();
    for reference in references {
        let revision = state
            .subject(&reference.subject)
            .ok_or_else(|| error(format!("reference {:?}: subject '{}' not found", reference.name, reference.subject)))?
            .revision(reference.version)
            .ok_or_else(|| {
                error(format!(
                    "reference {:?}: subject '{}' has no version {}",
                    reference.name, reference.subject, reference.version
                ))
            })?;
        let file = root_file(revision).map_err(|e| error(format!("reference {:?}: {e}", reference.name)))?;
        for f in revision.schema.pool().files() {
            let name = if f.name() == file {
                reference.name.clone()
            } else if f.name().starts_with("google/protobuf/") {
                continue; // served by the well-known resolver, as in every other schema
            } else {
                f.name().to_owned()
            };
            let lowered = revision.schema.edition(f.name());
            imports.entry(name.clone()).or_insert_with(|| Import { encoded: renamed(&f.encode_to_vec(), &name), lowered });
        }
    }

    let source = match descriptor {
        Some(proto) => Source::Descriptor(renamed(&proto.encoded, root)),
        None => Source::Text(schema.to_owned()),
    };
    let compilation = Compilation::default();
    let mut compiler = protox::Compiler::with_file_resolver(DocumentFiles {
        root: root.to_owned(),
        source,
        imports,
        compilation: compilation.clone(),
    });
    compiler.include_source_info(true).include_imports(true);
    compiler.open_file(root).map_err(|e| undangle(compilation.error(&e), references))?;
    let own: BTreeSet<String> = [root.to_owned()].into();
    let compiled = compilation.finish(&compiler.descriptor_pool(), own, root)?;
    let document = Document {
        schema: schema.to_owned(),
        references: references.to_vec(),
        file: root.to_owned(),
    };
    Ok((compiled, document))
}

/// An encoded `FileDescriptorProto` under another name: a later `name` field wins.
fn renamed(encoded: &[u8], name: &str) -> Vec<u8> {
    let mut out = encoded.to_vec();
    prost::encoding::string::encode(1, &name.to_owned(), &mut out);
    out
}

/// An import no reference resolves is the client's mistake in the references, not in the
/// text: say so.
fn undangle(mut error: LoadError, references: &[Reference]) -> LoadError {
    if error.message.contains("not found") && error.message.contains("import") {
        let given: Vec<&str> = references.iter().map(|r| r.name.as_str()).collect();
        error.message = format!(
            "{}; imports other than google/protobuf/… must be given as references {{name, subject, version}} (given: {})",
            error.message,
            if given.is_empty() { "none".to_owned() } else { given.join(", ") }
        );
    }
    error
}

/// The base64 of a serialized `FileDescriptorProto`, if that is what `schema` is. `.proto`
/// text always has characters base64 lacks (spaces, `;`), so the two cannot be confused.
fn as_descriptor(schema: &str) -> Option<EncodedDescriptor> {
    let text = schema.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')) {
        return None;
    }
    let encoded = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
    let proto = FileDescriptorProto::decode(encoded.as_slice()).ok().filter(|p| !p.name().is_empty())?;
    Some(EncodedDescriptor { dependency: proto.dependency, encoded })
}

/// A serialized `FileDescriptorProto` as sent, kept encoded so options and editions
/// features (which prost-types would drop) survive.
struct EncodedDescriptor {
    dependency: Vec<String>,
    encoded: Vec<u8>,
}

enum Source {
    Text(String),
    Descriptor(Vec<u8>),
}

/// A file a reference brings: encoded, and its edition if the revision holds it lowered.
struct Import {
    encoded: Vec<u8>,
    lowered: Option<crate::editions::Edition>,
}

/// The document and the files its references bring, for protox.
struct DocumentFiles {
    root: String,
    source: Source,
    imports: HashMap<String, Import>,
    compilation: Compilation,
}

impl FileResolver for DocumentFiles {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == self.root {
            return match &self.source {
                Source::Text(text) => self.compilation.open_text(name, text),
                Source::Descriptor(encoded) => self.compilation.open_descriptor(name, encoded, None),
            };
        }
        match self.imports.get(name) {
            Some(import) => self.compilation.open_descriptor(name, &import.encoded, import.lowered),
            None if name.starts_with("google/protobuf/") => well_known(name),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_descriptors_are_told_from_text() {
        let proto = FileDescriptorProto {
            name: Some("x.proto".into()),
            package: Some("x".into()),
            ..Default::default()
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(proto.encode_to_vec());
        assert_eq!(as_descriptor(&b64).map(|p| p.encoded), Some(proto.encode_to_vec()));
        assert!(as_descriptor("syntax = \"proto3\";\nmessage A {}").is_none());
        assert!(as_descriptor("").is_none());
        assert!(as_descriptor("abcd").is_none(), "decodes, but to no named file");
    }
}
