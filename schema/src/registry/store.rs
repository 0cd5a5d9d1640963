//! Persistence of accepted revisions across restarts.
//!
//! ```text
//! <state dir>/                    default: <watched dir>/.switchyard
//!   registry.json                 subjects, revisions, fingerprints, sources, schema ids,
//!                                 submitted documents, run-time compatibility modes
//!   descriptors/<sha256>.binpb    each revision's FileDescriptorSet (source info included)
//! ```
//!
//! Files are written to a temporary name and renamed, so a crash leaves the previous
//! state readable. Descriptor sets are keyed by fingerprint and verified on load.

use super::document::Document;
use super::modes::ModeOverrides;
use super::Revision;
use crate::breaking::Finding;
use crate::fingerprint::Fingerprint;
use crate::schema::Schema;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const STATE_VERSION: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    generation: u64,
    subjects: BTreeMap<String, Vec<StoredRevision>>,
    #[serde(default, skip_serializing_if = "ModeOverrides::is_empty")]
    modes: ModeOverrides,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredRevision {
    revision: u32,
    fingerprint: Fingerprint,
    source: String,
    forced: bool,
    accepted_at: u64,
    own_files: Vec<String>,
    #[serde(default)]
    findings: Vec<Finding>,
    /// Absent in state files written before schema ids existed (derived on load).
    #[serde(default)]
    id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    document: Option<Document>,
}

/// The persisted state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("registry state {}: {message}", path.display())]
pub struct StoreError {
    pub path: PathBuf,
    pub message: String,
}

fn err(path: &Path, message: impl std::fmt::Display) -> StoreError {
    StoreError {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// What a previous run left: its generation and, per subject, its revisions in order.
pub(crate) struct Restored {
    pub(crate) generation: u64,
    pub(crate) subjects: BTreeMap<String, Vec<Arc<Revision>>>,
    pub(crate) modes: ModeOverrides,
}

pub(crate) fn load(dir: &Path) -> Result<Option<Restored>, StoreError> {
    let path = dir.join("registry.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(&path, e)),
    };
    let state: StateFile = serde_json::from_slice(&bytes).map_err(|e| err(&path, e))?;
    if state.version != STATE_VERSION {
        return Err(err(&path, format!("unsupported version {} (expected {STATE_VERSION})", state.version)));
    }
    // Ids first: revisions from an older file get theirs derived, in a fixed order.
    let mut schema_ids: Vec<(Fingerprint, Option<u32>)> =
        state.subjects.values().flatten().map(|r| (r.fingerprint, r.id)).collect();
    super::ids::complete(&mut schema_ids);
    let mut schema_ids = schema_ids.into_iter().map(|(_, id)| id.unwrap_or_default());
    let mut subjects = BTreeMap::new();
    for (subject, stored) in state.subjects {
        let mut revisions = Vec::with_capacity(stored.len());
        for r in stored {
            let file = descriptor_path(dir, &r.fingerprint);
            let bytes = std::fs::read(&file).map_err(|e| err(&file, e))?;
            let own: BTreeSet<String> = r.own_files.into_iter().collect();
            let schema = Schema::decode_with_own_files(&bytes, own).map_err(|e| err(&file, e))?;
            if schema.fingerprint() != r.fingerprint {
                return Err(err(&file, format!("content does not match fingerprint {}", r.fingerprint)));
            }
            revisions.push(Arc::new(Revision {
                subject: subject.clone(),
                number: r.revision,
                schema: Arc::new(schema),
                source: r.source,
                forced: r.forced,
                accepted_at: r.accepted_at,
                findings: r.findings,
                id: schema_ids.next().unwrap_or_default(),
                document: r.document.map(Arc::new),
            }));
        }
        subjects.insert(subject, revisions);
    }
    Ok(Some(Restored {
        generation: state.generation,
        subjects,
        modes: state.modes,
    }))
}

pub(crate) fn save<'a>(
    dir: &Path,
    generation: u64,
    subjects: impl Iterator<Item = (&'a str, &'a [Arc<Revision>])>,
    modes: &ModeOverrides,
) -> Result<(), StoreError> {
    let descriptors = dir.join("descriptors");
    std::fs::create_dir_all(&descriptors).map_err(|e| err(&descriptors, e))?;
    let mut state = StateFile {
        version: STATE_VERSION,
        generation,
        subjects: BTreeMap::new(),
        modes: modes.clone(),
    };
    for (subject, revisions) in subjects {
        let mut stored = Vec::with_capacity(revisions.len());
        for r in revisions {
            let file = descriptor_path(dir, &r.schema.fingerprint());
            if !file.exists() {
                write_atomic(&file, &r.schema.encode())?;
            }
            stored.push(StoredRevision {
                revision: r.number,
                fingerprint: r.schema.fingerprint(),
                source: r.source.clone(),
                forced: r.forced,
                accepted_at: r.accepted_at,
                own_files: r.schema.own_files().map(str::to_owned).collect(),
                findings: r.findings.clone(),
                id: Some(r.id),
                document: r.document.as_deref().cloned(),
            });
        }
        state.subjects.insert(subject.to_owned(), stored);
    }
    let json = serde_json::to_vec_pretty(&state).map_err(|e| err(dir, e))?;
    write_atomic(&dir.join("registry.json"), &json)
}

fn descriptor_path(dir: &Path, fingerprint: &Fingerprint) -> PathBuf {
    dir.join("descriptors").join(format!("{}.binpb", fingerprint.to_hex()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))
}
