//! Compatibility modes set while the registry runs (Confluent's `PUT /config`), over the
//! ones configured at start.
//!
//! The effective mode of a subject is, first found: the subject's run-time mode, the
//! subject's configured mode (`[subjects."x"] mode`), the run-time global mode, the
//! configured global mode (`mode`). Run-time modes are persisted with the revisions, so a
//! restart keeps them; removing one falls back to the next in that order.

use crate::compat::Mode;
use std::collections::BTreeMap;

/// Modes set at run time; part of the registry's state and of its state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModeOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<Mode>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subjects: BTreeMap<String, Mode>,
}

impl ModeOverrides {
    pub(crate) fn is_empty(&self) -> bool {
        self.global.is_none() && self.subjects.is_empty()
    }

    /// The override at `subject` (`None`: the global one).
    pub(crate) fn get(&self, subject: Option<&str>) -> Option<Mode> {
        match subject {
            None => self.global,
            Some(s) => self.subjects.get(s).copied(),
        }
    }

    /// Sets (`Some`) or removes (`None`) the override at `subject`; returns the previous one.
    pub(crate) fn set(&mut self, subject: Option<&str>, mode: Option<Mode>) -> Option<Mode> {
        match (subject, mode) {
            (None, m) => std::mem::replace(&mut self.global, m),
            (Some(s), Some(m)) => self.subjects.insert(s.to_owned(), m),
            (Some(s), None) => self.subjects.remove(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_remove_return_the_previous_mode() {
        let mut o = ModeOverrides::default();
        assert_eq!(o.set(Some("a"), Some(Mode::Full)), None);
        assert_eq!(o.set(Some("a"), Some(Mode::None)), Some(Mode::Full));
        assert_eq!(o.set(None, Some(Mode::ForwardTransitive)), None);
        assert_eq!((o.get(Some("a")), o.get(None), o.get(Some("b"))), (Some(Mode::None), Some(Mode::ForwardTransitive), None));
        assert_eq!(o.set(Some("a"), None), Some(Mode::None));
        assert_eq!(o.set(None, None), Some(Mode::ForwardTransitive));
        assert!(o.is_empty());
    }
}
