//! Content fingerprints of descriptor sets.
//!
//! A fingerprint names a schema by what it means, not by how it was produced: the same
//! `.proto` sources compiled by `protox` at run time, by `buf build` or by `protoc` must get
//! the same fingerprint, whatever order the files come in and whether or not source info
//! (comments, spans) is attached. Clients may quote it instead of a revision number.
//!
//! # Canonical form
//! The fingerprint is `sha256` over the *canonical encoding* of the descriptor set:
//! - files are sorted by name; each appears once;
//! - `source_code_info` (field 9) and buf's image metadata (field 8042) are removed;
//! - `syntax = "proto2"` is removed (it is the meaning of an absent syntax);
//! - a field's `json_name` is removed when it equals the default lowerCamelCase name
//!   (compilers differ on whether they fill it in);
//! - within each file, message and field descriptor, top-level fields are re-encoded in
//!   field-number order (repeated fields keep their order, which carries meaning);
//! - everything else, including options and custom options, is kept byte for byte.
//!
//! The canonical bytes are themselves a valid `FileDescriptorSet`.

use crate::wire::{self, RawField, WireType};
use sha2::{Digest, Sha256};
use std::fmt;

/// The sha256 of a descriptor set's canonical encoding (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Computes the fingerprint of an encoded `FileDescriptorSet`.
    pub fn of_descriptor_set(encoded: &[u8]) -> Result<Self, CanonicalError> {
        let canonical = canonical_descriptor_set(encoded)?;
        Ok(Fingerprint(Sha256::digest(&canonical).into()))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }

    /// Parses 64 hex digits, optionally prefixed with `sha256:`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.strip_prefix("sha256:").unwrap_or(text);
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Fingerprint(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.short())
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Fingerprint::parse(&text)
            .ok_or_else(|| serde::de::Error::custom("expected sha256:<64 hex digits>"))
    }
}

/// The descriptor set is not valid protobuf.
#[derive(Debug, thiserror::Error)]
#[error("malformed descriptor set: {0:?} while reading {1}")]
pub struct CanonicalError(wire::WireError, &'static str);

impl CanonicalError {
    pub(crate) fn from_wire(err: wire::WireError, what: &'static str) -> Self {
        CanonicalError(err, what)
    }
}

// Field numbers from google/protobuf/descriptor.proto.
const FDS_FILE: u32 = 1;
const FILE_NAME: u32 = 1;
const FILE_MESSAGE_TYPE: u32 = 4;
const FILE_EXTENSION: u32 = 7;
const FILE_SOURCE_CODE_INFO: u32 = 9;
const FILE_SYNTAX: u32 = 12;
const FILE_BUF_IMAGE: u32 = 8042;
const MESSAGE_FIELD: u32 = 2;
const MESSAGE_NESTED_TYPE: u32 = 3;
const MESSAGE_EXTENSION: u32 = 6;
const FIELD_NAME: u32 = 1;
const FIELD_JSON_NAME: u32 = 10;

/// Returns the canonical encoding of a `FileDescriptorSet` (see the module docs).
pub fn canonical_descriptor_set(encoded: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    let set = wire::fields(encoded).map_err(|e| CanonicalError(e, "FileDescriptorSet"))?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for field in set.iter().filter(|f| f.number == FDS_FILE) {
        let canonical = canonical_file(field.value)?;
        let name = file_name(field.value).unwrap_or_default();
        if !files.iter().any(|(n, _)| *n == name) {
            files.push((name, canonical));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (_, file) in files {
        wire::write_len_field(&mut out, FDS_FILE, &file);
    }
    Ok(out)
}

/// The `name` of an encoded `FileDescriptorProto`.
pub(crate) fn file_name(file: &[u8]) -> Option<String> {
    wire::last_str(&wire::fields(file).ok()?, FILE_NAME).map(str::to_owned)
}

fn canonical_file(file: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    let fields = wire::fields(file).map_err(|e| CanonicalError(e, "FileDescriptorProto"))?;
    let mut parts = Vec::with_capacity(fields.len());
    for f in fields {
        match f.number {
            FILE_SOURCE_CODE_INFO | FILE_BUF_IMAGE => {}
            FILE_SYNTAX if f.value == b"proto2" => {}
            FILE_MESSAGE_TYPE => parts.push((f.number, rewrap(f.number, canonical_message(f.value)?))),
            FILE_EXTENSION => parts.push((f.number, rewrap(f.number, canonical_field(f.value)?))),
            _ => parts.push((f.number, f.whole.to_vec())),
        }
    }
    Ok(join_sorted(parts))
}

fn canonical_message(message: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    let fields = wire::fields(message).map_err(|e| CanonicalError(e, "DescriptorProto"))?;
    let mut parts = Vec::with_capacity(fields.len());
    for f in fields {
        let bytes = match f.number {
            MESSAGE_FIELD | MESSAGE_EXTENSION => rewrap(f.number, canonical_field(f.value)?),
            MESSAGE_NESTED_TYPE => rewrap(f.number, canonical_message(f.value)?),
            _ => f.whole.to_vec(),
        };
        parts.push((f.number, bytes));
    }
    Ok(join_sorted(parts))
}

fn canonical_field(field: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    let fields = wire::fields(field).map_err(|e| CanonicalError(e, "FieldDescriptorProto"))?;
    let name = last_string(&fields, FIELD_NAME).unwrap_or_default();
    let default_json = default_json_name(name);
    let parts = fields
        .iter()
        .filter(|f| !(f.number == FIELD_JSON_NAME && f.value == default_json.as_bytes()))
        .map(|f| (f.number, f.whole.to_vec()))
        .collect();
    Ok(join_sorted(parts))
}

fn last_string<'a>(fields: &[RawField<'a>], number: u32) -> Option<&'a str> {
    fields
        .iter()
        .rev()
        .find(|f| f.number == number && f.wire_type == WireType::Len)
        .and_then(|f| std::str::from_utf8(f.value).ok())
}

fn rewrap(number: u32, value: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    wire::write_len_field(&mut out, number, &value);
    out
}

fn join_sorted(mut parts: Vec<(u32, Vec<u8>)>) -> Vec<u8> {
    parts.sort_by_key(|(number, _)| *number); // stable: repeated fields keep their order
    parts.into_iter().flat_map(|(_, bytes)| bytes).collect()
}

/// protoc's default JSON name: underscores dropped, the letter after each upper-cased.
pub fn default_json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper_next = false;
    for c in name.chars() {
        if c == '_' {
            upper_next = true;
        } else if upper_next {
            out.extend(c.to_uppercase());
            upper_next = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names() {
        assert_eq!(default_json_name("image_data"), "imageData");
        assert_eq!(default_json_name("a__b"), "aB");
        assert_eq!(default_json_name("x"), "x");
    }

    #[test]
    fn parse_and_display() {
        let fp = Fingerprint::of_descriptor_set(&[]).unwrap();
        assert_eq!(Fingerprint::parse(&fp.to_string()), Some(fp));
        assert_eq!(Fingerprint::parse(&fp.to_hex()), Some(fp));
        assert_eq!(Fingerprint::parse("sha256:zz"), None);
    }
}
