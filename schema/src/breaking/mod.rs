//! Breaking-change detection with buf's `WIRE` and `WIRE_JSON` rules.
//!
//! [`check`] compares an old and a new [`Schema`] the way `buf breaking NEW --against OLD`
//! does: elements are paired by full name (messages, enums, services), fields by number,
//! enum values by number, RPCs by name, files by path; every rule of the chosen category
//! runs over every pair, and each violation becomes a [`Finding`] with buf's rule ID, the
//! element, the `file:line:column` in the new schema and a message.
//!
//! # Warnings
//! Beyond buf, the report carries *warnings*: changes the category allows but after which
//! a reader can get a different value than the writer meant, with no error anywhere —
//! `int32`→`int64` (truncation), `int32`↔`uint32` or `fixed32`↔`sfixed32` (sign),
//! `bool`↔integers, and under `WIRE` the JSON-visible ones (`string`→`bytes`, renamed
//! fields and enum values), plus explicit↔implicit presence. They never make a change
//! breaking; the registry's gate ignores them unless configured otherwise.

mod field;
mod finding;
mod kinds;
mod ranges;
mod rule;
mod structure;

pub use finding::{Finding, Reader, Report, Scope};
pub use rule::{Category, Rule};

use crate::schema::Schema;

/// Compares `new` against `old` with the rules of `category`.
pub fn check(old: &Schema, new: &Schema, category: Category) -> Report {
    let mut checker = Checker {
        old,
        new,
        category,
        report: Report::default(),
    };
    structure::check_files(&mut checker);
    structure::check_messages(&mut checker);
    field::check_fields(&mut checker);
    structure::check_enums(&mut checker);
    structure::check_services(&mut checker);
    let sort_key = |f: &Finding| {
        (
            f.location.clone(),
            f.rule,
            f.element.clone(),
            f.message.clone(),
        )
    };
    checker.report.findings.sort_by_key(sort_key);
    checker.report.warnings.sort_by_key(sort_key);
    checker.report
}

/// Shared state of one comparison: both schemas and the findings so far.
pub(crate) struct Checker<'a> {
    pub(crate) old: &'a Schema,
    pub(crate) new: &'a Schema,
    pub(crate) category: Category,
    report: Report,
}

/// What a rule reports, before the checker resolves its location.
pub(crate) struct Emit<'p> {
    pub(crate) rule: Rule,
    pub(crate) element: String,
    /// The file and source path of the element in the *new* schema.
    pub(crate) file: &'p str,
    pub(crate) path: &'p [i32],
    pub(crate) message: String,
    pub(crate) reader: Reader,
    pub(crate) scope: Scope,
}

impl Checker<'_> {
    /// Whether a breaking rule is part of the category being checked.
    pub(crate) fn enabled(&self, rule: Rule) -> bool {
        rule.in_category(self.category)
    }

    pub(crate) fn emit(&mut self, e: Emit<'_>) {
        if !e.rule.is_warning() && !self.enabled(e.rule) {
            return;
        }
        let finding = Finding {
            rule: e.rule,
            element: e.element,
            location: self.new.location(e.file, e.path),
            message: e.message,
            reader: e.reader,
            scope: e.scope,
        };
        if e.rule.is_warning() {
            self.report.warnings.push(finding);
        } else {
            self.report.findings.push(finding);
        }
    }
}
