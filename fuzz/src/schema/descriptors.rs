//! `schema_descriptor_set`: a binary `FileDescriptorSet` (`.binpb`, `buf build` output) as
//! the registry loads one from its watched directory (`compile::load` → `Schema::decode`).
//!
//! A registry persists each accepted revision as `Schema::encode` and, on restart, reloads
//! it with its own files and refuses to start if the fingerprint changed
//! (`registry/store.rs`). So an accepted set must survive exactly that round trip.

use std::collections::BTreeSet;
use switchyard_schema::fingerprint::{canonical_descriptor_set, Fingerprint};
use switchyard_schema::Schema;

pub fn descriptor_set(data: &[u8]) {
    canonical_form(data);
    let schema = match Schema::decode(data) {
        Ok(schema) => schema,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "a refused descriptor set without a reason");
            return;
        }
    };
    let own: BTreeSet<String> = schema.own_files().map(str::to_owned).collect();
    let stored = schema.encode();
    let restored = Schema::decode_with_own_files(&stored, own.clone())
        .unwrap_or_else(|e| panic!("an accepted descriptor set does not reload as stored: {e}"));
    assert_eq!(restored.fingerprint(), schema.fingerprint(), "the fingerprint changes across a restart");
    assert!(restored.own_files().eq(own.iter().map(String::as_str)), "the own files change across a restart");
    // The stored form is stable: storing the restored schema writes the same bytes.
    assert_eq!(restored.encode(), stored, "storing a reloaded schema writes other bytes");
    // A plain reload (no own files given, as the watched directory reads it) agrees too.
    let reread = Schema::decode(&stored).unwrap_or_else(|e| panic!("the stored form does not load: {e}"));
    assert_eq!(reread.fingerprint(), schema.fingerprint(), "the stored form loads with another fingerprint");
}

/// The canonical encoding behind fingerprints is a fixed point, and names the same
/// fingerprint as the input it came from.
fn canonical_form(data: &[u8]) {
    let Ok(canonical) = canonical_descriptor_set(data) else {
        assert!(Fingerprint::of_descriptor_set(data).is_err(), "a fingerprint for bytes that have no canonical form");
        return;
    };
    let again = canonical_descriptor_set(&canonical).unwrap_or_else(|e| panic!("the canonical form is not a descriptor set: {e}"));
    assert_eq!(again, canonical, "canonicalising twice changes the bytes");
    let (a, b) = (Fingerprint::of_descriptor_set(data), Fingerprint::of_descriptor_set(&canonical));
    assert_eq!(a.ok(), b.ok(), "a set and its canonical form have different fingerprints");
}
