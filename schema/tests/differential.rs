//! Differential test against the real `buf` (PyPI `buf-bin==1.75.0`, installed into
//! `.venv` by `cargo xtask setup`): on every corpus pair and on seeded random mutations,
//! our checker must report exactly the rule IDs buf reports, for `WIRE` and `WIRE_JSON`,
//! and each finding at buf's `file:line:column`, as many times as buf reports it.

mod common;

use common::mutate::{Model, Rng};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use switchyard_schema::breaking::{check, Category};
use switchyard_schema::compile::compile_dir;
use switchyard_schema::Schema;

/// Random pairs tried in one run; each is one `buf` invocation (~0.1 s). Override with
/// `SWITCHYARD_DIFF_PAIRS` (and the first seed with `SWITCHYARD_DIFF_SEED`) to explore more.
const RANDOM_PAIRS: u64 = 200;
const SEED: u64 = 0x5EED_2026;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Pair {
    name: String,
    old: PathBuf,
    new: PathBuf,
}

fn ours(old: &Schema, new: &Schema, category: Category) -> BTreeSet<String> {
    check(old, new, category).rule_ids().into_iter().map(str::to_owned).collect()
}

/// Our findings of both categories as `RULE file:line:column`, sorted, as buf lists them
/// when run with `[WIRE, WIRE_JSON]`: every WIRE_JSON finding, and the two WIRE rules that
/// WIRE_JSON replaces by stricter ones.
fn ours_located(old: &Schema, new: &Schema) -> Vec<String> {
    let json = check(old, new, Category::WireJson).findings;
    let wire = check(old, new, Category::Wire).findings.into_iter().filter(|f| !common::is_wire_json(f.rule.id()));
    let mut out: Vec<String> = json
        .into_iter()
        .chain(wire)
        .map(|f| match &f.location {
            Some(l) => format!("{} {}:{}:{}", f.rule.id(), l.file, l.line, l.column),
            None => format!("{} -:0:0", f.rule.id()),
        })
        .collect();
    out.sort();
    out
}

fn write_model(dir: &Path, model: &Model) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("fuzz.proto"), model.render()).unwrap();
}

/// Seeded random pairs: a generated schema and the same after 1–3 mutations. Pairs that
/// protox rejects (a mutation produced an invalid file) are retried with the next seed.
fn random_pairs(root: &Path) -> Vec<Pair> {
    let mut pairs = Vec::new();
    let mut seed = env_u64("SWITCHYARD_DIFF_SEED", SEED);
    let wanted = env_u64("SWITCHYARD_DIFF_PAIRS", RANDOM_PAIRS);
    while (pairs.len() as u64) < wanted {
        seed += 1;
        let mut rng = Rng::new(seed);
        let old = Model::generate(&mut rng);
        let mut new = old.clone();
        let mut what = Vec::new();
        for _ in 0..(1 + rng.below(3)) {
            what.push(new.mutate(&mut rng));
        }
        let name = format!("seed-{seed:#x} [{}]", what.join("; "));
        let dir = root.join(format!("{seed:x}"));
        write_model(&dir.join("old"), &old);
        write_model(&dir.join("new"), &new);
        if compile_dir(&dir.join("old")).is_err() || compile_dir(&dir.join("new")).is_err() {
            continue;
        }
        pairs.push(Pair {
            name,
            old: dir.join("old"),
            new: dir.join("new"),
        });
    }
    pairs
}

#[test]
fn same_rule_ids_and_places_as_buf() {
    let buf = common::buf();
    let scratch = tempfile::tempdir().unwrap();
    let mut pairs: Vec<Pair> = common::corpus_cases()
        .into_iter()
        .map(|(name, old, new)| Pair { name, old, new })
        .collect();
    let corpus = pairs.len();
    pairs.extend(random_pairs(scratch.path()));

    // buf runs in a few threads: each call is mostly process start-up.
    let verdicts = Mutex::new(vec![None; pairs.len()]);
    let next = Mutex::new(0usize);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                let Some(pair) = pairs.get(i) else { break };
                let verdict = common::buf_breaking(&buf, &pair.old, &pair.new);
                verdicts.lock().unwrap()[i] = Some(verdict);
            });
        }
    });

    let mut disagreements = Vec::new();
    let mut located = Vec::new();
    let mut breaking_pairs = 0;
    let mut random_rules: BTreeSet<String> = BTreeSet::new();
    for (pair, verdict) in pairs.iter().zip(verdicts.into_inner().unwrap()) {
        let verdict = verdict.expect("every pair ran");
        let verdict = match verdict {
            Ok(v) => v,
            Err(e) => {
                disagreements.push(format!("{}: buf failed: {e}", pair.name));
                continue;
            }
        };
        if !verdict.wire_json.is_empty() {
            breaking_pairs += 1;
        }
        if pair.name.starts_with("seed-") {
            random_rules.extend(verdict.wire.iter().chain(&verdict.wire_json).cloned());
        }
        let compiled = compile_dir(&pair.old)
            .map_err(|e| format!("old: {e}"))
            .and_then(|old| Ok((old, compile_dir(&pair.new).map_err(|e| format!("new: {e}"))?)));
        let (old, new) = match compiled {
            Ok(schemas) => schemas,
            Err(e) => {
                disagreements.push(format!("{}: we failed to load: {e}", pair.name));
                continue;
            }
        };
        let mine = ours_located(&old, &new);
        if mine != verdict.located {
            located.push(format!(
                "{}: findings at other places than buf's:\n    buf:  {:?}\n    ours: {:?}\n    new: {}",
                pair.name,
                verdict.located,
                mine,
                pair.new.display()
            ));
        }
        for (category, theirs) in [(Category::Wire, &verdict.wire), (Category::WireJson, &verdict.wire_json)] {
            let mine = ours(&old, &new, category);
            if &mine != theirs {
                disagreements.push(format!(
                    "{} ({category}):\n    buf only:  {:?}\n    ours only: {:?}\n    old: {}\n    new: {}",
                    pair.name,
                    theirs.difference(&mine).collect::<Vec<_>>(),
                    mine.difference(theirs).collect::<Vec<_>>(),
                    pair.old.display(),
                    pair.new.display(),
                ));
            }
        }
    }
    let disagreeing_pairs: BTreeSet<&str> = disagreements
        .iter()
        .map(|d| d.split([' ', ':']).next().unwrap_or(""))
        .collect();
    println!(
        "differential: {}/{} pairs agree with buf on WIRE and WIRE_JSON ({corpus} corpus, {} random; \
         {breaking_pairs} breaking under WIRE_JSON; random pairs hit {} of the 24 rules, not {:?})",
        pairs.len() - disagreeing_pairs.len(),
        pairs.len(),
        pairs.len() - corpus,
        random_rules.len(),
        common::WIRE_RULES
            .iter()
            .chain(common::WIRE_JSON_ONLY_RULES)
            .filter(|r| !random_rules.contains(**r))
            .collect::<Vec<_>>(),
    );
    assert!(
        random_rules.len() >= 20,
        "the random mutations should exercise most rules; they hit only {random_rules:?}"
    );
    disagreements.extend(located);
    if !disagreements.is_empty() {
        // Keep the trees for inspection.
        let kept = scratch.keep();
        panic!(
            "{} disagreement(s) with buf (random trees kept in {}):\n{}",
            disagreements.len(),
            kept.display(),
            disagreements.join("\n")
        );
    }
}
