//! Counters for the registry and the validator, exported in Prometheus text format.
//!
//! Plain atomics and one mutex-guarded map (subjects appear at run time), so the crate
//! stays free of a metrics framework: the sidecar appends [`Metrics::render_prometheus`]
//! to its own `/metrics` output, or reads the values and feeds its registry of choice.

use crate::validate::{Validation, ViolationKind};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Metrics {
    subjects: Mutex<BTreeMap<String, SubjectCounters>>,
    /// Loads that failed before a subject was known (parse errors, bad descriptor sets).
    load_failures: AtomicU64,
    validations: AtomicU64,
    invalid: AtomicU64,
    violations: [AtomicU64; ViolationKind::ALL.len()],
}

/// Per-subject registry counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubjectCounters {
    /// Revisions accepted (forced ones included).
    pub loaded: u64,
    /// Candidate revisions refused by the compatibility gate.
    pub rejected: u64,
}

impl Metrics {
    pub fn revision_loaded(&self, subject: &str) {
        self.with_subject(subject, |c| c.loaded += 1);
    }

    pub fn revision_rejected(&self, subject: Option<&str>) {
        match subject {
            Some(s) => self.with_subject(s, |c| c.rejected += 1),
            None => {
                self.load_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn with_subject(&self, subject: &str, f: impl FnOnce(&mut SubjectCounters)) {
        let mut subjects = self.subjects.lock().unwrap_or_else(|p| p.into_inner());
        f(subjects.entry(subject.to_owned()).or_default());
    }

    /// Counts one validation and each of its violations by kind (warnings excluded).
    pub fn record_validation(&self, validation: &Validation) {
        self.validations.fetch_add(1, Ordering::Relaxed);
        if !validation.is_valid() {
            self.invalid.fetch_add(1, Ordering::Relaxed);
        }
        for v in &validation.violations {
            self.violations[kind_index(v.kind)].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn subject(&self, subject: &str) -> SubjectCounters {
        let subjects = self.subjects.lock().unwrap_or_else(|p| p.into_inner());
        subjects.get(subject).copied().unwrap_or_default()
    }

    pub fn load_failures(&self) -> u64 {
        self.load_failures.load(Ordering::Relaxed)
    }

    pub fn validations(&self) -> u64 {
        self.validations.load(Ordering::Relaxed)
    }

    pub fn violations(&self, kind: ViolationKind) -> u64 {
        self.violations[kind_index(kind)].load(Ordering::Relaxed)
    }

    /// Prometheus text exposition, metric names prefixed with `prefix` (e.g. `switchyard_`):
    /// `schema_revisions_loaded_total{subject}`, `schema_revisions_rejected_total{subject}`,
    /// `schema_load_failures_total`, `schema_validations_total`,
    /// `schema_validations_invalid_total`, `schema_violations_total{kind}`.
    pub fn render_prometheus(&self, prefix: &str) -> String {
        let mut out = String::new();
        let subjects = self.subjects.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let counter = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {prefix}{name} {help}\n# TYPE {prefix}{name} counter");
        };
        counter(&mut out, "schema_revisions_loaded_total", "Schema revisions accepted, per subject.");
        for (s, c) in &subjects {
            let _ = writeln!(out, "{prefix}schema_revisions_loaded_total{{subject=\"{}\"}} {}", escape(s), c.loaded);
        }
        counter(&mut out, "schema_revisions_rejected_total", "Schema revisions refused by the compatibility gate, per subject.");
        for (s, c) in &subjects {
            let _ = writeln!(out, "{prefix}schema_revisions_rejected_total{{subject=\"{}\"}} {}", escape(s), c.rejected);
        }
        counter(&mut out, "schema_load_failures_total", "Schema files that failed to parse or decode.");
        let _ = writeln!(out, "{prefix}schema_load_failures_total {}", self.load_failures());
        counter(&mut out, "schema_validations_total", "Payloads validated.");
        let _ = writeln!(out, "{prefix}schema_validations_total {}", self.validations());
        counter(&mut out, "schema_validations_invalid_total", "Payloads with at least one violation.");
        let _ = writeln!(out, "{prefix}schema_validations_invalid_total {}", self.invalid.load(Ordering::Relaxed));
        counter(&mut out, "schema_violations_total", "Payload violations, per kind.");
        for kind in ViolationKind::ALL {
            let _ = writeln!(out, "{prefix}schema_violations_total{{kind=\"{kind}\"}} {}", self.violations(*kind));
        }
        out
    }
}

fn kind_index(kind: ViolationKind) -> usize {
    ViolationKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
