//! Checking a large schema: 500 generated messages (plus enums and RPCs) against a copy
//! with scattered changes. Prints the timings (run with `--nocapture`); asserts only the
//! findings, never the time (speed belongs in benchmarks, not tests).

mod common;

use std::fmt::Write;
use std::time::Instant;
use switchyard_schema::breaking::{check, Category};
use switchyard_schema::compat::verdicts;
use switchyard_schema::compile::compile_dir;

const MESSAGES: usize = 500;
const TYPES: &[&str] = &["int32", "int64", "uint32", "string", "bytes", "double", "bool", "fixed64", "sint32"];

fn generate(changed: bool) -> String {
    let mut out = String::from("syntax = \"proto3\";\npackage scale.v1;\n\n");
    for e in 0..50 {
        writeln!(out, "enum E{e} {{\n  E{e}_UNSPECIFIED = 0;\n  E{e}_A = 1;\n  E{e}_B = 2;\n}}").unwrap();
    }
    for m in 0..MESSAGES {
        writeln!(out, "message M{m} {{").unwrap();
        if changed && m % 50 == 7 {
            writeln!(out, "  reserved 99;").unwrap();
        }
        for f in 1..=10usize {
            let ty = match (m + f) % 12 {
                10 => format!("M{}", (m * 7 + f) % MESSAGES),
                11 => format!("E{}", (m + f) % 50),
                k => TYPES[k % TYPES.len()].to_string(),
            };
            let ty = if changed && m % 50 == 3 && f == 2 { "sint64".to_string() } else { ty };
            let label = if f == 4 { "repeated " } else { "" };
            writeln!(out, "  {label}{ty} field_{f} = {f};").unwrap();
        }
        if changed && m % 25 == 0 {
            writeln!(out, "  string added = 11;").unwrap();
        }
        writeln!(out, "  map<string, M{}> children = 12;", (m + 1) % MESSAGES).unwrap();
        writeln!(out, "}}").unwrap();
    }
    writeln!(out, "service Scale {{").unwrap();
    for r in 0..50 {
        writeln!(out, "  rpc Call{r}(M{r}) returns (M{});", r + 100).unwrap();
    }
    writeln!(out, "}}").unwrap();
    out
}

#[test]
fn check_500_messages() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    common::write_tree(dirs[0].path(), &[("scale/v1/scale.proto", &generate(false))]);
    common::write_tree(dirs[1].path(), &[("scale/v1/scale.proto", &generate(true))]);

    let t = Instant::now();
    let old = compile_dir(dirs[0].path()).unwrap();
    let new = compile_dir(dirs[1].path()).unwrap();
    let compile = t.elapsed() / 2;

    let runs = 5;
    let t = Instant::now();
    let mut wire = None;
    for _ in 0..runs {
        wire = Some(check(&old, &new, Category::Wire));
    }
    let wire_time = t.elapsed() / runs;
    let t = Instant::now();
    let mut json = None;
    for _ in 0..runs {
        json = Some(check(&old, &new, Category::WireJson));
    }
    let json_time = t.elapsed() / runs;
    let (wire, json) = (wire.unwrap(), json.unwrap());
    let t = Instant::now();
    let pair = verdicts(&old, &new, &wire);
    let verdict_time = t.elapsed();

    let messages = old.pool().all_messages().filter(|m| !m.is_map_entry()).count();
    println!(
        "scale: {messages} messages ({} with map entries), 50 enums, 50 RPCs; compile {compile:?} per schema; \
         check WIRE {wire_time:?}, WIRE_JSON {json_time:?} (mean of {runs}); pair verdicts {verdict_time:?}; \
         {} WIRE findings, {} warnings",
        old.pool().all_messages().count(),
        wire.findings.len(),
        wire.warnings.len(),
    );
    // 10 messages retype field_2 to sint64, 10 reserve a number: exactly the retypes break.
    assert_eq!(messages, MESSAGES);
    assert_eq!(wire.findings.len(), 10, "{:#?}", wire.findings);
    assert!(json.findings.len() >= 10);
    assert!(!pair.0.is_compatible());
}
