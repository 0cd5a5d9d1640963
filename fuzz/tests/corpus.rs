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
