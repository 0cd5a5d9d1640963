//! Compatibility modes (Confluent's vocabulary) and per-pair verdicts between revisions.
//!
//! buf's rules say *what* changed; a mode says *which revisions* a candidate is compared
//! with and *which reader* must keep working:
//!
//! | mode | compared with | must keep working |
//! |---|---|---|
//! | `BACKWARD` | the current revision | readers on the new schema, reading old data |
//! | `FORWARD` | the current revision | readers on the old schema, reading new data |
//! | `FULL` | the current revision | both |
//! | `*_TRANSITIVE` | every accepted revision | as above |
//! | `NONE` | nothing | nothing |
//!
//! Most of buf's rules break both readers at once, so the modes differ only on the
//! one-sided findings (see [`Reader`]): adding a required field passes `FORWARD` but not
//! `BACKWARD`, dropping one the reverse.

use crate::breaking::{check, Category, Finding, Reader, Report, Scope};
use crate::schema::Schema;
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A subject's compatibility mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
    None,
}

impl Mode {
    pub const ALL: [Mode; 7] = [
        Mode::Backward,
        Mode::BackwardTransitive,
        Mode::Forward,
        Mode::ForwardTransitive,
        Mode::Full,
        Mode::FullTransitive,
        Mode::None,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Mode::Backward => "BACKWARD",
            Mode::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Mode::Forward => "FORWARD",
            Mode::ForwardTransitive => "FORWARD_TRANSITIVE",
            Mode::Full => "FULL",
            Mode::FullTransitive => "FULL_TRANSITIVE",
            Mode::None => "NONE",
        }
    }

    /// Whether the candidate is compared with every accepted revision, not just the current.
    pub fn is_transitive(self) -> bool {
        matches!(self, Mode::BackwardTransitive | Mode::ForwardTransitive | Mode::FullTransitive)
    }

    /// Whether `finding` (old = an accepted revision, new = the candidate) violates the mode.
    pub fn is_violated_by(self, finding: &Finding) -> bool {
        match self {
            Mode::Backward | Mode::BackwardTransitive => finding.reader.breaks_new_reader(),
            Mode::Forward | Mode::ForwardTransitive => finding.reader.breaks_old_reader(),
            Mode::Full | Mode::FullTransitive => true,
            Mode::None => false,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let wanted = s.to_ascii_uppercase().replace('-', "_");
        Mode::ALL
            .into_iter()
            .find(|m| m.id() == wanted)
            .ok_or_else(|| format!("unknown compatibility mode {s:?}"))
    }
}

/// Whether two revisions can talk, per direction of traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PairVerdict {
    /// The server can read the client's requests.
    pub requests: bool,
    /// The client can read the server's responses.
    pub responses: bool,
}

impl PairVerdict {
    pub const COMPATIBLE: PairVerdict = PairVerdict {
        requests: true,
        responses: true,
    };

    pub fn is_compatible(self) -> bool {
        self.requests && self.responses
    }
}

/// Message and enum types carried in requests and in responses of a schema's RPCs.
#[derive(Clone, Debug, Default)]
pub struct TrafficTypes {
    requests: BTreeSet<String>,
    responses: BTreeSet<String>,
}

impl TrafficTypes {
    pub fn of(pool: &DescriptorPool) -> Self {
        let mut out = TrafficTypes::default();
        for service in pool.services() {
            for method in service.methods() {
                reach(&method.input(), &mut out.requests);
                reach(&method.output(), &mut out.responses);
            }
        }
        out
    }

    fn merge(mut self, other: TrafficTypes) -> Self {
        self.requests.extend(other.requests);
        self.responses.extend(other.responses);
        self
    }

    /// `(requests, responses)`: which traffic a finding's scope touches. Types no RPC
    /// reaches count for both, since they may travel inside `Any` or other services.
    fn touched_by(&self, scope: &Scope) -> (bool, bool) {
        match scope {
            Scope::All => (true, true),
            Scope::Requests => (true, false),
            Scope::Responses => (false, true),
            Scope::Type(name) => {
                let (req, res) = (self.requests.contains(name), self.responses.contains(name));
                if req || res {
                    (req, res)
                } else {
                    (true, true)
                }
            }
        }
    }
}

fn reach(message: &MessageDescriptor, seen: &mut BTreeSet<String>) {
    if !seen.insert(message.full_name().to_owned()) {
        return;
    }
    for field in message.fields() {
        match field.kind() {
            Kind::Message(m) => reach(&m, seen),
            Kind::Enum(e) => {
                seen.insert(e.full_name().to_owned());
            }
            _ => {}
        }
    }
}

/// Decides whether a client on one revision and a server on another can talk.
///
/// `client_is_newer` orders the two revisions in time: the older one is checked as buf's
/// `--against`. For requests the server reads what the client wrote; for responses the
/// client reads what the server wrote; each finding counts where its scope and its
/// [`Reader`] side say it does.
pub fn pair_verdict(client: &Schema, server: &Schema, client_is_newer: bool, category: Category) -> (PairVerdict, Report) {
    if client.fingerprint() == server.fingerprint() {
        return (PairVerdict::COMPATIBLE, Report::default());
    }
    let (old, new) = if client_is_newer { (server, client) } else { (client, server) };
    let report = check(old, new, category);
    let (old_client, new_client) = verdicts(old, new, &report);
    (if client_is_newer { new_client } else { old_client }, report)
}

/// Both verdicts from one `check(old, new)` report: `(old client → new server, new client
/// → old server)`.
pub fn verdicts(old: &Schema, new: &Schema, report: &Report) -> (PairVerdict, PairVerdict) {
    let traffic = TrafficTypes::of(old.pool()).merge(TrafficTypes::of(new.pool()));
    let mut old_client = PairVerdict::COMPATIBLE;
    let mut new_client = PairVerdict::COMPATIBLE;
    for finding in &report.findings {
        let (requests, responses) = traffic.touched_by(&finding.scope);
        // Old client, new server: the new side reads requests, the old side responses.
        if requests && breaks(finding.reader, true) {
            old_client.requests = false;
        }
        if responses && breaks(finding.reader, false) {
            old_client.responses = false;
        }
        // New client, old server: the old side reads requests, the new side responses.
        if requests && breaks(finding.reader, false) {
            new_client.requests = false;
        }
        if responses && breaks(finding.reader, true) {
            new_client.responses = false;
        }
    }
    (old_client, new_client)
}

fn breaks(reader: Reader, reader_is_new: bool) -> bool {
    if reader_is_new {
        reader.breaks_new_reader()
    } else {
        reader.breaks_old_reader()
    }
}
