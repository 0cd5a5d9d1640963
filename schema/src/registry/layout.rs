//! How a watched directory maps to candidate revisions.
//!
//! ```text
//! schemas/                          the watched directory
//!   001-initial/                    one revision: a .proto tree (its own include root)
//!     features/v1/features.proto
//!   002-crop.binpb                  one revision: a binary FileDescriptorSet
//!   features.v1@003-rename+force/   subject named explicitly, gate bypassed
//!   .switchyard/                    registry state (hidden: never scanned)
//! ```
//!
//! - Each top-level entry is one candidate revision: a directory (all `.proto` files below
//!   it, compiled with the directory as include root) or a `.binpb` / `.pb` file. Anything
//!   else, and every name starting with `.`, is ignored.
//! - Symlinks are followed, so a Kubernetes ConfigMap volume works as the directory: its
//!   keys are links into `..data` (a `.binpb` per key, or `items[].path` such as
//!   `001-initial/features/v1/features.proto` for a `.proto` tree), and an update swaps
//!   `..data` atomically (see `watch`).
//! - Entries are considered in byte-wise name order, so `001-…`, `002-…` (zero-padded
//!   prefixes) give the intended order. Revision numbers are assigned per subject in the
//!   order revisions are *accepted*, starting at 1.
//! - The subject defaults to the proto package (see [`crate::Schema::default_subject`]);
//!   a `<subject>@` prefix names it explicitly.
//! - A `+force` suffix (before the extension) accepts the revision even if it breaks the
//!   subject's compatibility mode; the findings are still recorded.
//! - An entry whose content matches an accepted revision of its subject (same fingerprint)
//!   adds nothing, so rescans and restarts are idempotent.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// One candidate revision found in the watched directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) path: PathBuf,
    /// The entry's file name, used as the revision's `source`.
    pub(crate) name: String,
    pub(crate) subject: Option<String>,
    pub(crate) force: bool,
}

impl Entry {
    fn parse(path: PathBuf, is_dir: bool) -> Option<Entry> {
        let name = path.file_name()?.to_str()?.to_owned();
        if name.starts_with('.') {
            return None;
        }
        let stem = if is_dir {
            name.as_str()
        } else {
            name.strip_suffix(".binpb").or_else(|| name.strip_suffix(".pb"))?
        };
        let (stem, force) = match stem.strip_suffix("+force") {
            Some(s) => (s, true),
            None => (stem, false),
        };
        let subject = stem.split_once('@').map(|(s, _)| s.to_owned()).filter(|s| !s.is_empty());
        Some(Entry {
            path,
            name,
            subject,
            force,
        })
    }
}

/// The candidate entries of `dir`, in name order.
pub(crate) fn entries(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // Followed through symlinks: a ConfigMap volume's entries are links into `..data`.
        let is_dir = entry.path().is_dir();
        if let Some(e) = Entry::parse(entry.path(), is_dir) {
            out.push(e);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A hash of an entry's bytes (every file of a directory, with its relative path), to
/// skip entries unchanged since the last scan without recompiling them.
pub(crate) fn content_stamp(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    if path.is_dir() {
        let mut files = Vec::new();
        walk(path, path, &mut files)?;
        files.sort();
        for rel in files {
            let bytes = std::fs::read(path.join(&rel))?;
            hasher.update(rel.to_string_lossy().as_bytes());
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(&bytes);
        }
    } else {
        hasher.update(std::fs::read(path)?);
    }
    Ok(hasher.finalize().into())
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let e = Entry::parse("/x/features.v1@003-rename+force".into(), true).unwrap();
        assert_eq!(e.subject.as_deref(), Some("features.v1"));
        assert!(e.force);
        let e = Entry::parse("/x/002-crop.binpb".into(), false).unwrap();
        assert_eq!((e.subject, e.force), (None, false));
        assert!(Entry::parse("/x/notes.txt".into(), false).is_none());
        assert!(Entry::parse("/x/.switchyard".into(), true).is_none());
    }
}
