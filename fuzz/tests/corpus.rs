//! Replays every fuzz target's committed inputs through its property: the seeds
//! (`fuzz/seeds/<target>/`) and every crash a fuzzer ever found (`fuzz/regressions/<target>/`,
//! kept after the fix). Fast, and part of `cargo xtask test`; the long runs are
//! `cargo xtask fuzz`.

use std::path::PathBuf;
use switchyard_fuzz_properties::TARGETS;

fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut out: Vec<(PathBuf, Vec<u8>)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

/// The cargo-fuzz binaries, from `targets/Cargo.toml`'s `[[bin]]` names: the list
/// `cargo xtask fuzz` runs.
fn fuzz_binaries() -> Vec<String> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("targets/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let manifest: toml::Table = text.parse().unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let bins = manifest.get("bin").and_then(toml::Value::as_array).cloned().unwrap_or_default();
    bins.iter().map(|b| b.get("name").and_then(toml::Value::as_str).unwrap_or_default().to_owned()).collect()
}

fn subdirectories(kind: &str) -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(kind);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut names: Vec<String> = entries.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// One list of targets: `TARGETS` here, the binaries cargo-fuzz builds (and xtask runs),
/// and the seed and regression directories name the same targets, and each binary calls
/// its own property (`<area>_<name>` → `<area>::<name>`).
#[test]
fn the_targets_agree_everywhere() {
    let mut listed: Vec<String> = TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
    listed.sort();
    let mut bins = fuzz_binaries();
    bins.sort();
    assert_eq!(bins, listed, "fuzz/targets/Cargo.toml's [[bin]] names and fuzz/src/lib.rs's TARGETS differ");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("targets/fuzz_targets");
    for target in &listed {
        let (area, name) = target.split_once('_').unwrap_or_else(|| panic!("target {target} is not <area>_<name>"));
        let path = dir.join(format!("{target}.rs"));
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let call = format!("switchyard_fuzz_properties::{area}::{name}(data)");
        assert!(source.contains(&call), "{} does not call {call}", path.display());
    }
    assert_eq!(subdirectories("seeds"), listed, "fuzz/seeds/ has a directory per target, and only those");
    for dir in subdirectories("regressions") {
        assert!(listed.contains(&dir), "fuzz/regressions/{dir} is not a target");
    }
}

/// Seeds stay small: the fuzzer grows its corpus outside the repository.
#[test]
fn seeds_are_small() {
    for (target, _) in TARGETS {
        for (path, bytes) in inputs("seeds", target).into_iter().chain(inputs("regressions", target)) {
            assert!(bytes.len() < 20 << 10, "{} is {} bytes (keep committed inputs under 20 KB)", path.display(), bytes.len());
        }
    }
}

#[test]
fn every_target_has_seeds_and_passes_them() {
    for (target, property) in TARGETS {
        let seeds = inputs("seeds", target);
        assert!(!seeds.is_empty(), "no seeds for fuzz target {target} in fuzz/seeds/{target}/");
        for (path, bytes) in seeds {
            if std::panic::catch_unwind(|| property(&bytes)).is_err() {
                panic!("fuzz target {target}: seed {} fails its property", path.display());
            }
        }
    }
}

#[test]
fn every_crash_found_stays_fixed() {
    for (target, property) in TARGETS {
        for (path, bytes) in inputs("regressions", target) {
            if std::panic::catch_unwind(|| property(&bytes)).is_err() {
                panic!("fuzz target {target}: regression {} fails again", path.display());
            }
        }
    }
}

/// The snapshot target reaches the poller: a good document is installed (a target whose
/// inputs never got past the worker would fuzz nothing).
#[test]
fn the_snapshot_target_installs_a_good_document() {
    assert_eq!(switchyard_fuzz_properties::filter::snapshot_generation(switchyard_fuzz_properties::filter::SNAPSHOT.as_bytes()), 3);
    assert_eq!(switchyard_fuzz_properties::filter::snapshot_generation(b"{}"), 0);
}

/// The shared-health target replaces a record the worker really reads (the route's).
#[test]
fn the_shared_health_target_replaces_a_record() {
    assert!(switchyard_fuzz_properties::filter::shared_health_records(b"") >= 1);
}
