//! Global schema ids, Confluent's way: one id per distinct schema content across every
//! subject, so registering the same schema again, or under another subject, gives the id it
//! already has; a new content gets the next unused number, from 1.
//!
//! "Same content" is the fingerprint (canonical descriptor set): comments and formatting
//! do not make a new schema, and a `.proto` text and the serialized descriptor of the same
//! file share an id. Ids are stored with each revision in the state file; revisions
//! restored from an older state file without ids get them here, in subject-name and
//! revision order, so every restart derives the same ones until they are saved.

use crate::fingerprint::Fingerprint;
use std::collections::{BTreeMap, HashMap};

/// Where each id is used, and which id each content has.
#[derive(Clone, Debug, Default)]
pub struct SchemaIds {
    by_fingerprint: HashMap<Fingerprint, u32>,
    /// id → `(subject, revision)`, in subject-name then revision order.
    uses: BTreeMap<u32, Vec<(String, u32)>>,
}

impl SchemaIds {
    /// Records that `subject`'s revision `revision`, of content `fingerprint`, has `id`.
    pub(crate) fn record(&mut self, fingerprint: Fingerprint, id: u32, subject: &str, revision: u32) {
        self.by_fingerprint.entry(fingerprint).or_insert(id);
        self.uses.entry(id).or_default().push((subject.to_owned(), revision));
    }

    /// The id of `fingerprint`: the one it has, or the next unused.
    pub(crate) fn id_for(&self, fingerprint: &Fingerprint) -> u32 {
        self.by_fingerprint.get(fingerprint).copied().unwrap_or_else(|| self.next())
    }

    fn next(&self) -> u32 {
        self.uses.keys().next_back().map_or(1, |max| max.saturating_add(1))
    }

    /// Every `(subject, revision)` with this id.
    pub fn uses(&self, id: u32) -> &[(String, u32)] {
        self.uses.get(&id).map_or(&[], Vec::as_slice)
    }
}

/// Fills in the ids a restored state file did not carry (`None`), keeping those it did.
/// `revisions` is in subject-name then revision order.
pub(crate) fn complete(revisions: &mut [(Fingerprint, Option<u32>)]) {
    let mut ids = SchemaIds::default();
    for (fingerprint, id) in revisions.iter() {
        if let Some(id) = id {
            ids.record(*fingerprint, *id, "", 0);
        }
    }
    for (fingerprint, id) in revisions.iter_mut() {
        if id.is_none() {
            let assigned = ids.id_for(fingerprint);
            ids.record(*fingerprint, assigned, "", 0);
            *id = Some(assigned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::parse(&format!("sha256:{}", hex::encode([n; 32]))).expect("fingerprint")
    }

    #[test]
    fn same_content_same_id_new_content_next_id() {
        let mut ids = SchemaIds::default();
        assert_eq!(ids.id_for(&fp(1)), 1);
        ids.record(fp(1), 1, "a", 1);
        assert_eq!(ids.id_for(&fp(1)), 1, "same content again");
        assert_eq!(ids.id_for(&fp(2)), 2);
        ids.record(fp(2), 2, "a", 2);
        ids.record(fp(1), 1, "b", 1);
        assert_eq!(ids.uses(1), &[("a".to_owned(), 1), ("b".to_owned(), 1)]);
        assert_eq!(ids.uses(9), &[] as &[(String, u32)]);
        assert_eq!(ids.id_for(&fp(3)), 3);
    }

    #[test]
    fn ids_continue_after_the_highest_even_with_gaps() {
        let mut ids = SchemaIds::default();
        ids.record(fp(1), 7, "a", 1);
        assert_eq!(ids.id_for(&fp(2)), 8);
    }

    #[test]
    fn restored_ids_are_kept_and_missing_ones_derived_in_order() {
        let mut revisions = vec![(fp(1), None), (fp(2), Some(5)), (fp(1), None), (fp(3), None)];
        complete(&mut revisions);
        let ids: Vec<u32> = revisions.iter().map(|r| r.1.unwrap()).collect();
        assert_eq!(ids, vec![6, 5, 6, 7]);
        // Deterministic: a second restart derives the same.
        let mut again = vec![(fp(1), None), (fp(2), Some(5)), (fp(1), None), (fp(3), None)];
        complete(&mut again);
        assert_eq!(again, revisions);
    }
}
