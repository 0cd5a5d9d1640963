//! The corpus in `tests/corpus/<case>/{old,new}`: each case is named after the rule it
//! exercises, `<rule_id>__break[_…]` (the rule must fire) or `<rule_id>__ok[_…]` (it must
//! not). Every WIRE and WIRE_JSON rule has at least one case of each kind; agreement with
//! buf on the full rule-ID sets, and on where each finding is, is checked by
//! `differential.rs`.

mod common;

use std::collections::BTreeMap;
use switchyard_schema::breaking::{check, Category, Rule};
use switchyard_schema::compile::compile_dir;

#[test]
fn every_rule_has_a_breaking_and_a_clean_case() {
    every_rule_covered_in(&common::corpus_dir());
}

#[test]
fn every_rule_has_a_breaking_and_a_clean_case_in_editions() {
    every_rule_covered_in(&common::editions_corpus_dir());
}

fn every_rule_covered_in(dir: &std::path::Path) {
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (name, _, _) in common::cases_in(dir, "") {
        let Some((rule, kind)) = name.split_once("__") else { continue };
        let entry = seen.entry(rule.to_ascii_uppercase()).or_default();
        if kind.starts_with("break") {
            entry.0 += 1;
        } else if kind.starts_with("ok") {
            entry.1 += 1;
        }
    }
    for category in [Category::Wire, Category::WireJson] {
        for rule in category.rules() {
            let (breaking, clean) = seen.get(rule.id()).copied().unwrap_or_default();
            assert!(
                breaking > 0 && clean > 0,
                "{rule}: {breaking} breaking, {clean} clean cases in {}",
                dir.display()
            );
        }
    }
}

#[test]
fn named_rule_fires_exactly_in_its_cases() {
    let mut failures = Vec::new();
    for (name, old, new) in common::corpus_cases() {
        let (old, new) = (compile_dir(&old).unwrap(), compile_dir(&new).unwrap());
        let Some((rule, kind)) = name.split_once("__") else { continue };
        let breaking = kind.starts_with("break");
        match rule.to_ascii_uppercase().parse::<Rule>() {
            Ok(rule) => {
                for category in [Category::Wire, Category::WireJson] {
                    if !rule.in_category(category) {
                        continue;
                    }
                    let report = check(&old, &new, category);
                    let fired = report.findings.iter().any(|f| f.rule == rule);
                    if fired != breaking {
                        failures.push(format!("{name} ({category}): {rule} fired = {fired}; findings: {:#?}", report.findings));
                    }
                    for f in report.findings.iter().filter(|f| f.rule == rule) {
                        if f.location.is_none() {
                            failures.push(format!("{name}: {rule} has no location"));
                        }
                    }
                }
            }
            // Whole-schema cases (e.g. `features_v1__ok_add_fields`): clean under WIRE or not.
            Err(_) => {
                let report = check(&old, &new, Category::Wire);
                if report.is_breaking() != breaking {
                    failures.push(format!("{name}: breaking = {}: {:#?}", report.is_breaking(), report.findings));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn findings_point_into_the_new_schema() {
    let case = common::corpus_dir().join("field_wire_compatible_type__break");
    let old = compile_dir(&case.join("old")).unwrap();
    let new = compile_dir(&case.join("new")).unwrap();
    let report = check(&old, &new, Category::Wire);
    let finding = &report.findings[0];
    assert_eq!(finding.rule, Rule::FieldWireCompatibleType);
    assert_eq!(finding.element, "corpus.v1.M.a");
    let loc = finding.location.as_ref().expect("source info is kept");
    // `  sint32 a = 1;` on line 5: the type starts in column 3, as buf reports it.
    assert_eq!((loc.file.as_str(), loc.line, loc.column), ("corpus.proto", 5, 3));
    assert!(finding.message.contains("\"int32\" to \"sint32\""), "{}", finding.message);
}

#[test]
fn warnings_flag_value_changes_the_category_allows() {
    use switchyard_schema::breaking::Report;
    let compile = |text: &str| {
        let tmp = tempfile::tempdir().unwrap();
        common::write_tree(tmp.path(), &[("w/v1/w.proto", text)]);
        compile_dir(tmp.path()).unwrap()
    };
    let old = compile(
        "syntax = \"proto3\";\npackage w.v1;\nenum E { E_UNSPECIFIED = 0; E_RED = 1; }\n\
         message M {\n  int32 a = 1;\n  int32 b = 2;\n  string c = 3;\n  bool d = 4;\n  int32 e = 5;\n  fixed32 f = 6;\n  string old_name = 7;\n}\n",
    );
    let new = compile(
        "syntax = \"proto3\";\npackage w.v1;\nenum E { E_UNSPECIFIED = 0; E_CRIMSON = 1; }\n\
         message M {\n  int64 a = 1;\n  uint32 b = 2;\n  bytes c = 3;\n  uint64 d = 4;\n  optional int32 e = 5;\n  sfixed32 f = 6;\n  string new_name = 7;\n}\n",
    );
    let rules = |r: &Report| -> Vec<(String, String)> {
        r.warnings.iter().map(|w| (w.rule.id().to_owned(), w.element.clone())).collect()
    };
    let wire = check(&old, &new, Category::Wire);
    assert!(!wire.is_breaking(), "{:#?}", wire.findings);
    let mut got = rules(&wire);
    got.sort();
    let mut want: Vec<(String, String)> = [
        ("ENUM_VALUE_JSON_NAME_CHANGED", "w.v1.E.E_CRIMSON"),
        ("FIELD_JSON_NAME_CHANGED", "w.v1.M.new_name"),
        ("FIELD_JSON_STRING_BYTES", "w.v1.M.c"),
        ("FIELD_PRESENCE_CHANGED", "w.v1.M.e"),
        ("FIELD_VALUE_BOOL_INTEGER_TYPE", "w.v1.M.d"),
        ("FIELD_VALUE_SIGN_CHANGING_TYPE", "w.v1.M.b"),
        ("FIELD_VALUE_SIGN_CHANGING_TYPE", "w.v1.M.f"),
        ("FIELD_VALUE_TRUNCATING_TYPE", "w.v1.M.a"),
    ]
    .iter()
    .map(|(r, e)| (r.to_string(), e.to_string()))
    .collect();
    want.sort();
    assert_eq!(got, want);
    assert!(wire.warnings.iter().all(|w| w.location.is_some()));

    // Under WIRE_JSON the JSON-visible and width changes are breaking instead; only the
    // changes it still allows warn.
    let json = check(&old, &new, Category::WireJson);
    let mut got = rules(&json);
    got.sort();
    assert_eq!(
        got,
        [
            ("FIELD_PRESENCE_CHANGED".to_owned(), "w.v1.M.e".to_owned()),
            ("FIELD_VALUE_SIGN_CHANGING_TYPE".to_owned(), "w.v1.M.b".to_owned()),
            ("FIELD_VALUE_SIGN_CHANGING_TYPE".to_owned(), "w.v1.M.f".to_owned()),
        ]
    );
    assert!(json.is_breaking());
}
