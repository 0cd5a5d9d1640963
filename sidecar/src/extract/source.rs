//! Which images to extract: every file under some directories, the matches of some glob
//! patterns, the lines of some list files — in that order, sorted within each source, each
//! path once.
//!
//! Nothing is filtered by extension: a file that is not an image reaches the model server,
//! which says so, and becomes an error row naming it. A listed path that does not exist is
//! kept too (its row says it was not found); a source that cannot be read at all — a missing
//! directory, an unreadable list, a bad pattern — stops the run before any work.

use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Where to look, as the command line gives it.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    pub dirs: Vec<PathBuf>,
    pub globs: Vec<String>,
    pub lists: Vec<PathBuf>,
}

/// The images of `sources`, and the listed paths that do not exist (for a warning).
pub(crate) struct Images {
    pub paths: Vec<String>,
    pub missing: Vec<String>,
}

pub(crate) fn collect(sources: &Sources) -> Result<Images> {
    if sources.dirs.is_empty() && sources.globs.is_empty() && sources.lists.is_empty() {
        bail!("no images given: name a directory (--dir), a glob pattern (--glob) or a list file (--list)");
    }
    let mut images = Images { paths: Vec::new(), missing: Vec::new() };
    let mut seen = HashSet::new();
    let mut add = |path: String, images: &mut Images| {
        if seen.insert(path.clone()) {
            images.paths.push(path);
        }
    };
    for dir in &sources.dirs {
        for path in walk(dir)? {
            add(display(&path)?, &mut images);
        }
    }
    for pattern in &sources.globs {
        let matches = glob::glob(pattern).with_context(|| format!("bad glob pattern {pattern:?}"))?;
        let mut paths = Vec::new();
        for entry in matches {
            let path = entry.with_context(|| format!("reading a match of {pattern:?}"))?;
            if path.is_file() {
                paths.push(path);
            }
        }
        if paths.is_empty() {
            bail!("the glob pattern {pattern:?} matches no files");
        }
        paths.sort();
        for path in paths {
            add(display(&path)?, &mut images);
        }
    }
    for list in &sources.lists {
        let text = std::fs::read_to_string(list).with_context(|| format!("reading the list file {}", list.display()))?;
        // Paths in a list are relative to the list's directory, like the config file's.
        let base = list.parent().unwrap_or(Path::new(""));
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let path = display(&base.join(line))?;
            if !Path::new(&path).exists() {
                images.missing.push(path.clone());
            }
            add(path, &mut images);
        }
    }
    Ok(images)
}

/// Every regular file under `dir`, recursively, sorted; hidden files and directories skipped.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = std::fs::read_dir(&d).with_context(|| format!("listing the image directory {}", d.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing the image directory {}", d.display()))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type().with_context(|| format!("reading {}", entry.path().display()))?;
            // Followed symlinks count as what they point to.
            let path = entry.path();
            if kind.is_dir() || (kind.is_symlink() && path.is_dir()) {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A path as the row's id: it must be UTF-8 to be a Parquet string.
fn display(path: &Path) -> Result<String> {
    match path.to_str() {
        Some(s) => Ok(s.to_owned()),
        None => bail!("{} is not a UTF-8 path; Parquet's `path` column cannot hold it", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_globs_and_lists_in_order_each_path_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("imgs/sub")).unwrap();
        for f in ["imgs/b.jpg", "imgs/a.png", "imgs/sub/c.jpg", "imgs/.hidden", "other.jpg"] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        std::fs::write(root.join("list.txt"), "# ids\nother.jpg\nimgs/a.png\n\nmissing.jpg\n").unwrap();
        let sources = Sources {
            dirs: vec![root.join("imgs")],
            globs: vec![format!("{}/*.jpg", root.display())],
            lists: vec![root.join("list.txt")],
        };
        let images = collect(&sources).unwrap();
        let rel: Vec<String> = images.paths.iter().map(|p| p.strip_prefix(&format!("{}/", root.display())).unwrap().to_string()).collect();
        assert_eq!(rel, ["imgs/a.png", "imgs/b.jpg", "imgs/sub/c.jpg", "other.jpg", "missing.jpg"]);
        assert_eq!(images.missing, [root.join("missing.jpg").display().to_string()]);
    }

    #[test]
    fn unreadable_sources_are_named() {
        let e = collect(&Sources { dirs: vec!["/nonexistent/imgs".into()], ..Default::default() }).err().unwrap();
        assert!(format!("{e:#}").contains("/nonexistent/imgs"), "{e:#}");
        let e = collect(&Sources { lists: vec!["/nonexistent/list.txt".into()], ..Default::default() }).err().unwrap();
        assert!(format!("{e:#}").contains("list file /nonexistent/list.txt"), "{e:#}");
        let e = collect(&Sources::default()).err().unwrap();
        assert!(e.to_string().contains("no images given"), "{e}");
    }
}
