//! What a check reports.

use super::rule::Rule;
use crate::location::Location;
use std::fmt;

/// One rule violation (or warning) between an old and a new schema.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    pub rule: Rule,
    /// The element concerned: a file path, or the full name of a message, field
    /// (`pkg.Msg.field`), enum value (`pkg.Enum.VALUE`), service or RPC (`pkg.Svc.Method`).
    /// Deleted elements are named as they were in the old schema.
    pub element: String,
    /// Where to look in the *new* schema, when it carries source info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    pub message: String,
    /// Which reader the change breaks; used by compatibility modes and the snapshot.
    pub reader: Reader,
    /// Which traffic the change concerns; used by the snapshot's per-direction verdicts.
    pub scope: Scope,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "{loc}:{} ({})", self.message, self.rule),
            None => write!(f, "{}: {} ({})", self.element, self.message, self.rule),
        }
    }
}

/// Which side of a schema change fails to read the other's data.
///
/// Most of buf's rules guard both directions at once (a renumbered field is misread by old
/// and new readers alike, and a deleted-but-unreserved number can be reused later). A few
/// are one-sided: a newly required field breaks only new readers of old data; a dropped
/// required field breaks only old readers of new data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reader {
    /// Both directions break.
    Both,
    /// A reader on the new schema cannot read data written with the old one.
    New,
    /// A reader on the old schema cannot read data written with the new one.
    Old,
}

impl Reader {
    /// Does the change break a reader on the new schema reading old data?
    pub fn breaks_new_reader(self) -> bool {
        matches!(self, Reader::Both | Reader::New)
    }

    /// Does the change break a reader on the old schema reading new data?
    pub fn breaks_old_reader(self) -> bool {
        matches!(self, Reader::Both | Reader::Old)
    }
}

/// The traffic a finding concerns.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Scope {
    /// Everything in the schema (a file's package, an RPC's streaming shape).
    All,
    /// Messages of this type (message or enum full name), wherever they are used.
    Type(String),
    /// Requests of the RPCs (a changed request type).
    Requests,
    /// Responses of the RPCs (a changed response type).
    Responses,
}

/// The outcome of comparing two schemas.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Breaking findings of the category's rules, in a stable order.
    pub findings: Vec<Finding>,
    /// Switchyard's warnings (value-changing changes the category allows).
    pub warnings: Vec<Finding>,
}

impl Report {
    pub fn is_breaking(&self) -> bool {
        !self.findings.is_empty()
    }

    /// The distinct rule IDs of the breaking findings, sorted.
    pub fn rule_ids(&self) -> std::collections::BTreeSet<&'static str> {
        self.findings.iter().map(|f| f.rule.id()).collect()
    }
}
