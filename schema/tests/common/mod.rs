//! Helpers shared by the integration tests: the corpus, the real `buf`, temp schema trees.
#![allow(dead_code)]

pub mod mutate;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use testkit::paths::root as workspace_root;

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The editions corpus: the same cases written in `edition = "2023"`, plus mixed-syntax
/// pairs (`mixed__…`).
pub fn editions_corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus_editions")
}

/// `buf build -o <image> <extra…>` in `dir` (a temporary `buf.yaml` makes it a module);
/// the image's bytes. Fails the test with buf's message when buf refuses the tree.
pub fn buf_build(dir: &Path, extra: &[&str]) -> Vec<u8> {
    let out = tempfile::tempdir().unwrap();
    let image = out.path().join("image.binpb");
    std::fs::write(dir.join("buf.yaml"), "version: v2\n").unwrap();
    let result = Command::new(buf())
        .current_dir(dir)
        .args(["build", "-o"])
        .arg(&image)
        .args(extra)
        .env("BUF_CACHE_DIR", std::env::temp_dir().join("switchyard-buf-cache"))
        .output()
        .unwrap();
    std::fs::remove_file(dir.join("buf.yaml")).unwrap();
    assert!(result.status.success(), "buf build {extra:?}: {}", String::from_utf8_lossy(&result.stderr));
    std::fs::read(image).unwrap()
}

/// Every case of both corpora, sorted by name: `(name, old dir, new dir)`; editions cases
/// are named `<case>@editions`.
pub fn corpus_cases() -> Vec<(String, PathBuf, PathBuf)> {
    let mut cases = cases_in(&corpus_dir(), "");
    cases.extend(cases_in(&editions_corpus_dir(), "@editions"));
    cases.sort();
    cases
}

/// The cases of one corpus directory.
pub fn cases_in(dir: &Path, suffix: &str) -> Vec<(String, PathBuf, PathBuf)> {
    let mut cases: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable corpus entry").path())
        .filter(|p| p.is_dir())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (format!("{name}{suffix}"), p.join("old"), p.join("new"))
        })
        .collect();
    cases.sort();
    cases
}

/// The real `buf` from the project venv (or `SWITCHYARD_BUF`). Panics with set-up
/// instructions when it is missing: the differential test must never pass without it.
pub fn buf() -> PathBuf {
    let path = std::env::var_os("SWITCHYARD_BUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/buf"));
    assert!(
        path.exists(),
        "buf not found at {} — run `cargo xtask setup` (installs buf-bin from xtask/requirements.txt \
         into .venv) or set SWITCHYARD_BUF",
        path.display()
    );
    path
}

/// The project venv's Python, which has the real protobuf runtime (upb) installed by the
/// set-up. Panics with set-up instructions when it is missing.
pub fn python() -> PathBuf {
    let path = workspace_root().join(".venv/bin/python");
    assert!(path.exists(), "{} not found — run `cargo xtask setup` (creates .venv with protobuf)", path.display());
    path
}

/// What `buf breaking` said about one pair: rule IDs per category, or its error.
#[derive(Debug, Clone)]
pub struct BufVerdict {
    pub wire: BTreeSet<String>,
    pub wire_json: BTreeSet<String>,
    /// Every finding of both categories as `RULE file:line:column`, sorted (a rule reported
    /// twice at one place is listed twice).
    pub located: Vec<String>,
}

pub const WIRE_RULES: &[&str] = &[
    "FIELD_SAME_DEFAULT",
    "FIELD_SAME_ONEOF",
    "FILE_SAME_PACKAGE",
    "MESSAGE_SAME_REQUIRED_FIELDS",
    "RESERVED_ENUM_NO_DELETE",
    "RESERVED_MESSAGE_NO_DELETE",
    "RPC_SAME_CLIENT_STREAMING",
    "RPC_SAME_IDEMPOTENCY_LEVEL",
    "RPC_SAME_REQUEST_TYPE",
    "RPC_SAME_RESPONSE_TYPE",
    "RPC_SAME_SERVER_STREAMING",
    "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED",
    "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED",
    "FIELD_WIRE_COMPATIBLE_CARDINALITY",
    "FIELD_WIRE_COMPATIBLE_TYPE",
];

pub const WIRE_JSON_ONLY_RULES: &[&str] = &[
    "ENUM_SAME_JSON_FORMAT",
    "ENUM_VALUE_SAME_NAME",
    "FIELD_SAME_JSON_NAME",
    "FIELD_SAME_NAME",
    "MESSAGE_SAME_JSON_FORMAT",
    "ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED",
    "FIELD_NO_DELETE_UNLESS_NAME_RESERVED",
    "FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY",
    "FIELD_WIRE_JSON_COMPATIBLE_TYPE",
];

/// Whether `rule` belongs to WIRE_JSON (the WIRE rules but two, which it makes stricter).
pub fn is_wire_json(rule: &str) -> bool {
    WIRE_JSON_ONLY_RULES.contains(&rule)
        || (WIRE_RULES.contains(&rule)
            && rule != "FIELD_WIRE_COMPATIBLE_CARDINALITY"
            && rule != "FIELD_WIRE_COMPATIBLE_TYPE")
}

/// Runs `buf breaking NEW --against OLD --error-format json` once with the union of both
/// categories (each rule runs independently, so one invocation answers both).
pub fn buf_breaking(buf: &Path, old: &Path, new: &Path) -> Result<BufVerdict, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = "version: v2\nbreaking:\n  use: [WIRE, WIRE_JSON]\n";
    for (side, src) in [("old", old), ("new", new)] {
        let dst = work.path().join(side);
        copy_tree(src, &dst).map_err(|e| e.to_string())?;
        std::fs::write(dst.join("buf.yaml"), config).map_err(|e| e.to_string())?;
    }
    let out = Command::new(buf)
        .current_dir(work.path())
        .args(["breaking", "new", "--against", "old", "--error-format", "json"])
        .env("BUF_CACHE_DIR", std::env::temp_dir().join("switchyard-buf-cache"))
        .output()
        .map_err(|e| format!("running {}: {e}", buf.display()))?;
    match out.status.code() {
        Some(0) | Some(100) => {}
        other => {
            return Err(format!(
                "buf exited with {other:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
    let mut verdict = BufVerdict {
        wire: BTreeSet::new(),
        wire_json: BTreeSet::new(),
        located: Vec::new(),
    };
    for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        let rule = v["type"].as_str().ok_or_else(|| format!("no type in {line}"))?.to_owned();
        if !WIRE_RULES.contains(&rule.as_str()) && !WIRE_JSON_ONLY_RULES.contains(&rule.as_str()) {
            return Err(format!("buf reported {rule}: {line}"));
        }
        verdict.located.push(format!(
            "{rule} {}:{}:{}",
            // buf names files from where it runs: `new/<file>`.
            v["path"].as_str().map_or("-", |p| p.strip_prefix("new/").unwrap_or(p)),
            v["start_line"].as_u64().unwrap_or(0),
            v["start_column"].as_u64().unwrap_or(0)
        ));
        if WIRE_RULES.contains(&rule.as_str()) {
            verdict.wire.insert(rule.clone());
        }
        if is_wire_json(&rule) {
            verdict.wire_json.insert(rule);
        }
    }
    verdict.located.sort();
    Ok(verdict)
}

pub fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let target = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Writes `files` (relative path → contents) under `dir`.
pub fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    for (path, contents) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}
