//! The `schema` CLI as the sidecar mounts it: exit codes and output shapes.

mod common;

use clap::Parser;
use switchyard_schema::cli::{execute, SchemaArgs, EXIT_FINDINGS};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    schema: SchemaArgs,
}

fn run(args: &[&str]) -> Result<u8, String> {
    let cli = Cli::try_parse_from(std::iter::once("schema").chain(args.iter().copied())).map_err(|e| e.to_string())?;
    execute(cli.schema)
}

fn case(name: &str, side: &str) -> String {
    common::corpus_dir().join(name).join(side).display().to_string()
}

#[test]
fn breaking_exits_like_buf() {
    let (old, new) = (case("field_wire_compatible_type__break", "old"), case("field_wire_compatible_type__break", "new"));
    assert_eq!(run(&["breaking", &new, "--against", &old]), Ok(EXIT_FINDINGS));
    assert_eq!(run(&["breaking", &new, "--against", &old, "--format", "json", "--warnings"]), Ok(EXIT_FINDINGS));
    let (old, new) = (case("field_wire_compatible_type__ok", "old"), case("field_wire_compatible_type__ok", "new"));
    assert_eq!(run(&["breaking", &new, "--against", &old, "--warnings"]), Ok(0));
    // The same pair breaks WIRE_JSON (int32 -> int64 changes the JSON encoding).
    assert_eq!(run(&["breaking", &new, "--against", &old, "--category", "wire-json"]), Ok(EXIT_FINDINGS));
    // Bad input: a message, not a verdict.
    let err = run(&["breaking", "/nonexistent", "--against", &old]).unwrap_err();
    assert!(err.contains("/nonexistent"), "{err}");
    assert!(run(&["breaking", &new, "--against", &old, "--category", "json"]).is_err());
}

#[test]
fn validate_and_ls() {
    let tmp = tempfile::tempdir().unwrap();
    let payload = tmp.path().join("request.bin");
    let schema = case("features_v1__ok_add_fields", "old");
    std::fs::write(&payload, [1 << 3 | 2, 1, b'x']).unwrap();
    let p = payload.display().to_string();
    let ty = "features.v1.ExtractRealtimeRequest";
    assert_eq!(run(&["validate", &schema, "--type", ty, "--payload", &p]), Ok(0));
    std::fs::write(&payload, [2 << 3, 1]).unwrap();
    assert_eq!(run(&["validate", &schema, "--type", ty, "--payload", &p, "--format", "json"]), Ok(EXIT_FINDINGS));
    assert!(run(&["validate", &schema, "--type", "features.v1.Nope", "--payload", &p]).unwrap_err().contains("Nope"));

    assert_eq!(run(&["ls", &schema]), Ok(0));
    assert_eq!(run(&["ls", &schema, "--format", "json"]), Ok(0));
    // A registry directory after one scan.
    let dir = tmp.path().join("schemas");
    common::copy_tree(std::path::Path::new(&schema), &dir.join("001-initial")).unwrap();
    let registry = switchyard_schema::registry::Registry::open(switchyard_schema::registry::RegistryConfig {
        dir: Some(dir.clone()),
        ..Default::default()
    })
    .unwrap();
    drop(registry);
    let d = dir.display().to_string();
    assert_eq!(run(&["ls", &d, "--registry"]), Ok(0));
    assert!(run(&["ls", &schema, "--registry"]).is_err());
}
