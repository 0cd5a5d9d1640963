//! The `schema` subcommand of the real binary, with buf's exit codes.

use std::path::PathBuf;
use std::process::Command;

fn corpus(case: &str, side: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schema/tests/corpus").join(case).join(side)
}

fn breaking(case: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-sidecar"))
        .args(["schema", "breaking"])
        .arg(corpus(case, "new"))
        .arg("--against")
        .arg(corpus(case, "old"))
        .output()
        .expect("run switchyard-sidecar");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn breaking_exits_like_buf() {
    let (code, out) = breaking("features_v1__ok_add_fields");
    assert_eq!(code, 0, "{out}");
    let (code, out) = breaking("features_v1__break_types");
    assert_eq!(code, 100, "{out}");
    assert!(out.contains("features/v1/features.proto:35:3:") && out.contains("(FIELD_WIRE_COMPATIBLE_TYPE)"), "{out}");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-sidecar"))
        .args(["schema", "breaking", "/nonexistent", "--against", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!out.stderr.is_empty());
}
