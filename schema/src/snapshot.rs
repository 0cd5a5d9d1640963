//! The compact registry snapshot the Envoy filter polls (JSON).
//!
//! Shape (one source of truth: these serde types; the filter can depend on this crate with
//! `default-features = false` and deserialize them directly):
//!
//! ```json
//! {
//!   "generation": 7,
//!   "subjects": {
//!     "features.v1": {
//!       "current": 2,
//!       "mode": "BACKWARD",
//!       "category": "WIRE",
//!       "revisions": [
//!         {"revision": 1, "fingerprint": "sha256:…"},
//!         {"revision": 2, "fingerprint": "sha256:…"}
//!       ],
//!       "pairs": [
//!         {"client": 1, "server": 2, "requests": true, "responses": true},
//!         {"client": 2, "server": 1, "requests": false, "responses": true}
//!       ]
//!     }
//!   }
//! }
//! ```
//!
//! `generation` grows by one with every accepted revision (and never otherwise), so a
//! poller compares it with the last one it parsed and skips unchanged snapshots. `pairs`
//! lists every ordered pair of distinct revisions, sorted by `(client, server)`; a pair of
//! a revision with itself is always compatible and omitted.

use crate::compat::{Mode, PairVerdict};
use crate::breaking::Category;
use crate::fingerprint::Fingerprint;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub generation: u64,
    pub subjects: BTreeMap<String, SubjectSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubjectSnapshot {
    /// The newest accepted revision.
    pub current: u32,
    pub mode: Mode,
    pub category: Category,
    pub revisions: Vec<RevisionSnapshot>,
    pub pairs: Vec<PairSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RevisionSnapshot {
    pub revision: u32,
    pub fingerprint: Fingerprint,
    /// The revision's `FileDescriptorSet`, base64, only in snapshots requested with
    /// descriptors (for validating payloads in the filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptor_set: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PairSnapshot {
    pub client: u32,
    pub server: u32,
    /// The server can read the client's requests.
    pub requests: bool,
    /// The client can read the server's responses.
    pub responses: bool,
}

impl Snapshot {
    pub fn from_json(json: &[u8]) -> Result<Snapshot, serde_json::Error> {
        serde_json::from_slice(json)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Can a client on `client` talk to a server on `server`? `None` when the subject or a
    /// revision is unknown.
    pub fn verdict(&self, subject: &str, client: u32, server: u32) -> Option<PairVerdict> {
        self.subjects.get(subject)?.verdict(client, server)
    }

    /// Resolves a client's declared revision: `features.v1@3`, `features.v1@sha256:…`,
    /// or a bare fingerprint (searched in every subject). Returns `(subject, revision)`.
    pub fn resolve(&self, declared: &str) -> Option<(&str, u32)> {
        let declared = declared.trim();
        if let Some((subject, rev)) = declared.split_once('@') {
            let (name, s) = self.subjects.get_key_value(subject)?;
            return s.resolve(rev).map(|r| (name.as_str(), r));
        }
        let fingerprint = Fingerprint::parse(declared)?;
        self.subjects.iter().find_map(|(name, s)| {
            s.revisions
                .iter()
                .find(|r| r.fingerprint == fingerprint)
                .map(|r| (name.as_str(), r.revision))
        })
    }
}

impl SubjectSnapshot {
    pub fn verdict(&self, client: u32, server: u32) -> Option<PairVerdict> {
        let known = |r: u32| self.revisions.iter().any(|x| x.revision == r);
        if !known(client) || !known(server) {
            return None;
        }
        if client == server {
            return Some(PairVerdict::COMPATIBLE);
        }
        self.pairs
            .binary_search_by_key(&(client, server), |p| (p.client, p.server))
            .ok()
            .map(|i| PairVerdict {
                requests: self.pairs[i].requests,
                responses: self.pairs[i].responses,
            })
    }

    /// A revision number or fingerprint of this subject.
    pub fn resolve(&self, revision: &str) -> Option<u32> {
        if let Ok(n) = revision.parse::<u32>() {
            return self.revisions.iter().any(|r| r.revision == n).then_some(n);
        }
        let fingerprint = Fingerprint::parse(revision)?;
        self.revisions.iter().find(|r| r.fingerprint == fingerprint).map(|r| r.revision)
    }

    /// The revisions a server on `server` can fully serve (requests and responses).
    pub fn clients_served_by(&self, server: u32) -> impl Iterator<Item = u32> + '_ {
        self.revisions
            .iter()
            .map(|r| r.revision)
            .filter(move |&c| self.verdict(c, server).is_some_and(PairVerdict::is_compatible))
    }
}
