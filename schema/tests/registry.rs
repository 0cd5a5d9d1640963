//! Registry core: hot loading from a watched directory, the gate, persistence, atomic
//! swaps, the snapshot.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_schema::compat::Mode;
use switchyard_schema::registry::{Outcome, RegistryConfig, RejectReason, SubjectConfig};
use switchyard_schema::registry::Registry;
use switchyard_schema::snapshot::Snapshot;

const V1: &str = r#"syntax = "proto3";
package features.v1;
import "google/protobuf/timestamp.proto";
service FeatureExtractionService {
  rpc ExtractRealtime(ExtractRealtimeRequest) returns (ExtractRealtimeResponse);
}
message ExtractRealtimeRequest {
  string request_id = 1;
  bytes image_data = 2;
}
message ExtractRealtimeResponse {
  string request_id = 1;
  repeated float feature_vector = 3;
  google.protobuf.Timestamp processed_at = 4;
}
"#;

/// v2 adds a field to each message: compatible both ways.
fn v2() -> String {
    V1.replace("  bytes image_data = 2;\n", "  bytes image_data = 2;\n  uint32 max_side = 3;\n")
        .replace("  google.protobuf.Timestamp processed_at = 4;\n", "  google.protobuf.Timestamp processed_at = 4;\n  string model_version = 5;\n")
}

/// Breaks v2: `max_side` changes to a wire-incompatible type.
fn v3_breaking() -> String {
    v2().replace("uint32 max_side = 3;", "sint32 max_side = 3;")
}

fn put(dir: &Path, entry: &str, source: &str) {
    common::write_tree(&dir.join(entry), &[("features/v1/features.proto", source)]);
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn config(dir: &Path) -> RegistryConfig {
    RegistryConfig {
        dir: Some(dir.to_path_buf()),
        debounce_ms: 100,
        ..RegistryConfig::default()
    }
}

fn current(registry: &Registry) -> u32 {
    registry.state().subject("features.v1").map(|s| s.current().number).unwrap_or(0)
}

#[test]
fn hot_loading_gate_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    put(dir, "001-initial", V1);

    let registry = Registry::open(config(dir)).unwrap();
    assert_eq!(current(&registry), 1, "the initial scan registers the first revision");
    let watch = registry.watch().unwrap();

    // A compatible revision dropped in becomes current.
    put(dir, "002-max-side", &v2());
    wait_for("revision 2", || current(&registry) == 2);
    assert_eq!(registry.state().generation, 2);

    // A file that does not parse is rejected with file:line:column; 2 stays current.
    let rejected_before = registry.rejections().len();
    put(dir, "003-broken", &v2().replace("uint32 max_side = 3;", "uint32 max_side = ;"));
    wait_for("the broken revision's rejection", || registry.rejections().len() > rejected_before);
    let rejection = registry.rejections().last().cloned().unwrap();
    assert_eq!(rejection.source, "003-broken");
    match &rejection.reason {
        RejectReason::Load { error } => {
            assert_eq!(error.file.as_deref(), Some("features/v1/features.proto"), "{error}");
            assert_eq!((error.line, error.column), (Some(10), Some(21)), "{error}");
        }
        other => panic!("expected a load error, got {other:?}"),
    }
    assert_eq!(current(&registry), 2);

    // A breaking revision is rejected with its findings; 2 stays current.
    let rejected_before = registry.rejections().len();
    put(dir, "004-sint32", &v3_breaking());
    wait_for("the breaking revision's rejection", || registry.rejections().len() > rejected_before);
    let rejection = registry.rejections().last().cloned().unwrap();
    match &rejection.reason {
        RejectReason::Incompatible { mode, against, .. } => {
            assert_eq!(*mode, Mode::Backward);
            assert_eq!(against[0].revision, 2);
            let f = &against[0].findings[0];
            assert_eq!(f.rule.id(), "FIELD_WIRE_COMPATIBLE_TYPE");
            assert_eq!(f.element, "features.v1.ExtractRealtimeRequest.max_side");
            assert_eq!(f.location.as_ref().map(|l| l.to_string()).as_deref(), Some("features/v1/features.proto:10:3"));
        }
        other => panic!("expected incompatibility, got {other:?}"),
    }
    assert_eq!(current(&registry), 2);
    assert_eq!(registry.metrics().subject("features.v1").rejected, 1);

    // Forced, the same change is accepted and marked.
    put(dir, "005-sint32+force", &v3_breaking().replace("string model_version = 5;", "string model_version = 5;\n  bool cached = 6;"));
    wait_for("the forced revision", || current(&registry) == 3);
    let state = registry.state();
    let subject = state.subject("features.v1").unwrap();
    assert!(subject.current().forced);
    assert!(!subject.current().findings.is_empty());

    // The snapshot says who can talk to whom.
    let snapshot = Snapshot::from_json(state.snapshot_json()).unwrap();
    assert_eq!(snapshot.generation, 3);
    let both = |c, s| snapshot.verdict("features.v1", c, s).unwrap();
    assert!(both(1, 2).is_compatible() && both(2, 1).is_compatible());
    // max_side changed its encoding: requests between 2 and 3 break both ways; responses
    // do not carry it, so they still work.
    assert!(!both(2, 3).requests && both(2, 3).responses);
    assert!(!both(3, 2).requests && both(3, 2).responses);
    // Revision 1 never had max_side: requests stay readable.
    assert!(both(1, 3).is_compatible());
    assert_eq!(snapshot.resolve("features.v1@2"), Some(("features.v1", 2)));
    let fp = subject.revision(1).unwrap().schema.fingerprint().to_string();
    assert_eq!(snapshot.resolve(&fp), Some(("features.v1", 1)));

    // The same content again (as a .binpb) adds no revision.
    let binpb = subject.revision(2).unwrap().schema.encode();
    std::fs::write(dir.join("006-copy-of-2.binpb"), binpb).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(current(&registry), 3);
    assert_eq!(registry.state().generation, 3);

    // Restart: revisions come back from the state directory, and rescanning adds nothing.
    drop(watch);
    let fingerprints: Vec<_> = subject.revisions.iter().map(|r| r.schema.fingerprint()).collect();
    drop(state);
    drop(registry);
    let registry = Registry::open(config(dir)).unwrap();
    let state = registry.state();
    let subject = state.subject("features.v1").unwrap();
    assert_eq!(state.generation, 3);
    assert_eq!(subject.revisions.iter().map(|r| r.schema.fingerprint()).collect::<Vec<_>>(), fingerprints);
    assert_eq!(subject.revisions.iter().map(|r| r.source.as_str()).collect::<Vec<_>>(), ["001-initial", "002-max-side", "005-sint32+force"]);
    assert!(subject.current().forced);
    assert_eq!(Snapshot::from_json(state.snapshot_json()).unwrap(), snapshot);
}

#[test]
fn a_configmap_volume_is_a_registry_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, state) = (tmp.path().join("schemas"), tmp.path().join("state"));
    std::fs::create_dir(&dir).unwrap();
    let mut volume = testkit::configmap::Volume::new(&dir);
    // Keys are `.proto` trees (`items[].path`).
    let key = |entry: &str| format!("{entry}/features/v1/features.proto");
    let (k1, k2, k3) = (key("001-initial"), key("002-next"), key("003-breaking"));
    // `002-next` starts as a copy of 1 (adds nothing), like a key kept for the next revision.
    volume.publish(&[(&k1, V1), (&k2, V1)], true).unwrap();
    // The volume is read-only in a pod: state lives elsewhere.
    let registry = Registry::open(RegistryConfig { state_dir: Some(state.clone()), ..config(&dir) }).unwrap();
    assert_eq!(current(&registry), 1, "keys are links into ..data, followed");
    let _watch = registry.watch().unwrap();
    // Past the watcher's own first scan: what follows must come from events.
    std::thread::sleep(Duration::from_millis(300));

    // An update that only changes a key's content: the swap of ..data is the one event
    // (the old directory is still there: the kubelet has not cleaned up yet).
    volume.publish(&[(&k1, V1), (&k2, &v2())], false).unwrap();
    wait_for("the changed key's revision", || current(&registry) == 2);

    // An update that adds a key: a new link beside the swap.
    let rejected_before = registry.rejections().len();
    volume.publish(&[(&k1, V1), (&k2, &v2()), (&k3, &v3_breaking())], true).unwrap();
    wait_for("the new key's rejection", || registry.rejections().len() > rejected_before);
    assert_eq!(registry.rejections().last().map(|r| r.source.clone()).as_deref(), Some("003-breaking"));
    assert_eq!(current(&registry), 2, "the last good revision keeps serving");
    assert!(!dir.join(".switchyard").exists(), "nothing written into the volume");
}

#[test]
fn modes_choose_the_reader_that_must_keep_working() {
    let base = "syntax = \"proto2\";\npackage legacy.v1;\nmessage Order {\n  required string id = 1;\n}\n";
    let added = base.replace("required string id = 1;", "required string id = 1;\n  required int32 qty = 2;");
    let compile = |text: &str| {
        let tmp = tempfile::tempdir().unwrap();
        common::write_tree(tmp.path(), &[("legacy/v1/order.proto", text)]);
        switchyard_schema::compile::compile_dir(tmp.path()).unwrap()
    };
    for (mode, accepted) in [(Mode::Backward, false), (Mode::Forward, true), (Mode::Full, false), (Mode::None, true)] {
        let registry = Registry::open(RegistryConfig {
            subjects: [("legacy.v1".to_owned(), SubjectConfig { mode: Some(mode), ..Default::default() })].into(),
            ..RegistryConfig::default()
        })
        .unwrap();
        assert!(matches!(registry.register(compile(base), "base", None, false), Ok(Outcome::Accepted(_))));
        // A new required field: new readers reject old data (BACKWARD breaks); old readers
        // ignore the extra field (FORWARD holds).
        let outcome = registry.register(compile(&added), "added", None, false);
        assert_eq!(outcome.is_ok(), accepted, "{mode}: {outcome:?}");
    }
}

#[test]
fn transitive_modes_compare_with_every_revision() {
    let compile = |text: String| {
        let tmp = tempfile::tempdir().unwrap();
        common::write_tree(tmp.path(), &[("t/v1/t.proto", &text)]);
        switchyard_schema::compile::compile_dir(tmp.path()).unwrap()
    };
    let rev = |body: &str| compile(format!("syntax = \"proto3\";\npackage t.v1;\nmessage M {{\n{body}\n}}\n"));
    // 1: x is int32. 2: x deleted, number reserved. 3: number 1 reused as string.
    let (r1, r2, r3) = (
        || rev("  int32 x = 1;"),
        || rev("  reserved 1;"),
        || rev("  string y = 1;"),
    );
    for (mode, compared) in [(Mode::Backward, vec![2]), (Mode::BackwardTransitive, vec![1, 2])] {
        let registry = Registry::open(RegistryConfig {
            mode,
            ..RegistryConfig::default()
        })
        .unwrap();
        registry.register(r1(), "1", None, false).unwrap();
        registry.register(r2(), "2", None, false).unwrap();
        // Against 2, dropping the reservation breaks RESERVED_MESSAGE_NO_DELETE; only the
        // transitive mode also sees the int32 -> string change against revision 1.
        let rejection = registry.register(r3(), "3", None, false).unwrap_err();
        let RejectReason::Incompatible { against, .. } = rejection.reason else { panic!("{rejection}") };
        assert_eq!(against.iter().map(|v| v.revision).collect::<Vec<_>>(), compared, "{mode}");
        if mode.is_transitive() {
            assert_eq!(against[0].findings[0].rule.id(), "FIELD_WIRE_COMPATIBLE_TYPE");
        }
    }
}

#[test]
fn readers_see_whole_states_while_revisions_arrive() {
    let registry = Registry::open(RegistryConfig::default()).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (registry, stop) = (registry.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = 0;
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let state = registry.state();
                assert!(state.generation >= last, "generation went backwards");
                last = state.generation;
                if let Some(s) = state.subject("grow.v1") {
                    // Every pair of distinct revisions has a verdict, in every state seen.
                    let n = s.revisions.len();
                    assert_eq!(s.current().number as usize, n);
                    assert_eq!(s.pairs.len(), n * (n - 1));
                    let snapshot = Snapshot::from_json(state.snapshot_json()).unwrap();
                    assert_eq!(snapshot.generation, state.generation);
                }
                reads += 1;
            }
            reads
        })
    };
    let mut fields = String::new();
    for i in 1..=15 {
        fields.push_str(&format!("  int32 f{i} = {i};\n"));
        let tmp = tempfile::tempdir().unwrap();
        let text = format!("syntax = \"proto3\";\npackage grow.v1;\nmessage M {{\n{fields}}}\n");
        common::write_tree(tmp.path(), &[("grow.proto", &text)]);
        let schema = switchyard_schema::compile::compile_dir(tmp.path()).unwrap();
        assert!(matches!(registry.register(schema, &format!("{i}"), None, false), Ok(Outcome::Accepted(_))));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(registry.state().generation, 15);
}

/// `V1` rewritten in edition 2023 with the same wire behaviour, plus a field.
fn v2_editions() -> String {
    v2().replace("syntax = \"proto3\";\npackage features.v1;\n", "edition = \"2023\";\npackage features.v1;\noption features.field_presence = IMPLICIT;\n")
}

#[test]
fn editions_revisions_are_gated_persisted_and_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    put(dir, "001-proto3", V1);
    put(dir, "002-editions", &v2_editions());
    let registry = Registry::open(config(dir)).unwrap();
    assert_eq!(current(&registry), 2, "proto3 to editions with the same wire behaviour is compatible");
    let served = registry.state().subject("features.v1").unwrap().current().schema.clone();
    assert_eq!(served.edition("features/v1/features.proto"), Some(switchyard_schema::editions::Edition::E2023));

    // Bad editions input: refused with file:line:column; revision 2 keeps serving.
    put(dir, "003-label", &v2_editions().replace("  bytes image_data = 2;", "  optional bytes image_data = 2;"));
    put(dir, "004-edition", &v2_editions().replace("edition = \"2023\";", "edition = \"2077\";"));
    put(
        dir,
        "005-contradiction",
        &v2_editions().replace("repeated float feature_vector = 3;", "repeated float feature_vector = 3 [features.field_presence = EXPLICIT];"),
    );
    let summary = registry.scan();
    assert_eq!(current(&registry), 2, "{summary:?}");
    let mut refused: Vec<(String, Option<u32>, Option<u32>)> = registry
        .rejections()
        .iter()
        .map(|r| match &r.reason {
            RejectReason::Load { error } => (r.source.clone(), error.line, error.column),
            other => panic!("{}: expected a load error, got {other:?}", r.source),
        })
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        [
            ("003-label".to_owned(), Some(10), Some(3)),
            ("004-edition".to_owned(), Some(1), Some(11)),
            ("005-contradiction".to_owned(), Some(15), Some(38)),
        ]
    );

    // A restart restores the editions revision as it was (same fingerprint, same edition).
    let fingerprint = served.fingerprint();
    drop(registry);
    let registry = Registry::open(config(dir)).unwrap();
    let restored = registry.state().subject("features.v1").unwrap().current().schema.clone();
    assert_eq!(restored.fingerprint(), fingerprint);
    assert_eq!(restored.edition("features/v1/features.proto"), Some(switchyard_schema::editions::Edition::E2023));
}
