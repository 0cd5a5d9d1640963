//! The schema registry: subjects, numbered revisions, the compatibility gate, persistence
//! and hot loading from a watched directory.
//!
//! Readers call [`Registry::state`] and get an `Arc` of an immutable [`RegistryState`];
//! writers (the directory scan, [`Registry::register`]) build a new state and swap it in
//! atomically, so a reader never sees a half-applied revision. Writers are serialised by a
//! mutex; readers never wait for them.
//!
//! This module is free of tonic and tokio: the gRPC service (`crate::service`) and the
//! sidecar wrap it.

mod document;
mod framed;
mod ids;
mod layout;
mod modes;
mod store;
mod watch;

pub use document::{root_file, Document, Reference, ROOT_FILE};
pub use framed::FramedValidation;
pub use ids::SchemaIds;
pub use modes::ModeOverrides;
pub use store::StoreError;
pub use watch::{WatchError, WatchHandle};

use crate::breaking::{check, Category, Finding, Report};
use crate::compat::{verdicts, Mode, PairVerdict};
use crate::compile::{self, LoadError};
use crate::metrics::Metrics;
use crate::schema::Schema;
use crate::snapshot::{PairSnapshot, RevisionSnapshot, Snapshot, SubjectSnapshot};
use crate::validate::{self, Policy, Validation};
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Registry settings (e.g. a `[schema]` table of the sidecar's config).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// The watched directory (see `layout` for what it may hold). `None` keeps the
    /// registry in memory only.
    pub dir: Option<PathBuf>,
    /// Where accepted revisions are persisted; default `<dir>/.switchyard`.
    pub state_dir: Option<PathBuf>,
    /// Default compatibility mode of subjects.
    pub mode: Mode,
    /// Default rule category of subjects.
    pub category: Category,
    /// Also refuse revisions that only raise warnings (value-changing type changes etc.).
    pub block_on_warnings: bool,
    /// Per-subject overrides.
    pub subjects: BTreeMap<String, SubjectConfig>,
    /// Quiet time after the last file-system event before the directory is rescanned.
    pub debounce_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            dir: None,
            state_dir: None,
            mode: Mode::Backward,
            category: Category::Wire,
            block_on_warnings: false,
            subjects: BTreeMap::new(),
            debounce_ms: 250,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubjectConfig {
    pub mode: Option<Mode>,
    pub category: Option<Category>,
    pub block_on_warnings: Option<bool>,
}

impl RegistryConfig {
    /// A subject's mode, category and warning policy; run-time modes (`modes`) come first
    /// (see `modes` for the order).
    fn policy(&self, modes: &ModeOverrides, subject: &str) -> (Mode, Category, bool) {
        let s = self.subjects.get(subject);
        (
            self.subject_mode(modes, subject).or(modes.global).unwrap_or(self.mode),
            s.and_then(|s| s.category).unwrap_or(self.category),
            s.and_then(|s| s.block_on_warnings).unwrap_or(self.block_on_warnings),
        )
    }

    /// The mode set for `subject` itself, at run time or in the configuration.
    fn subject_mode(&self, modes: &ModeOverrides, subject: &str) -> Option<Mode> {
        modes.get(Some(subject)).or_else(|| self.subjects.get(subject).and_then(|s| s.mode))
    }

    /// Where accepted revisions are persisted: `state_dir`, or `<dir>/.switchyard`.
    pub fn state_dir(&self) -> Option<PathBuf> {
        self.state_dir.clone().or_else(|| self.dir.as_ref().map(|d| d.join(".switchyard")))
    }
}

/// One accepted revision of a subject.
#[derive(Debug)]
pub struct Revision {
    pub subject: String,
    /// 1, 2, 3… in acceptance order.
    pub number: u32,
    pub schema: Arc<Schema>,
    /// Where it came from: the entry name in the watched directory, or the caller's label.
    pub source: String,
    /// Accepted despite breaking the mode.
    pub forced: bool,
    /// Seconds since the Unix epoch.
    pub accepted_at: u64,
    /// For forced revisions: the findings that would have rejected it.
    pub findings: Vec<Finding>,
    /// The global schema id (Confluent's): equal for equal content, across subjects.
    pub id: u32,
    /// The document as submitted through the Confluent API; `None` for directory entries.
    pub document: Option<Arc<Document>>,
}

/// A subject's accepted revisions and the compatibility between every pair of them.
#[derive(Clone, Debug)]
pub struct Subject {
    pub name: String,
    pub mode: Mode,
    pub category: Category,
    /// Ascending by number; never empty.
    pub revisions: Vec<Arc<Revision>>,
    /// `(client, server)` → verdict, for every ordered pair of distinct revisions.
    pub pairs: BTreeMap<(u32, u32), PairVerdict>,
}

impl Subject {
    /// The newest accepted revision.
    pub fn current(&self) -> &Arc<Revision> {
        self.revisions.last().expect("a subject has at least one revision")
    }

    pub fn revision(&self, number: u32) -> Option<&Arc<Revision>> {
        self.revisions.iter().find(|r| r.number == number)
    }

    pub fn verdict(&self, client: u32, server: u32) -> Option<PairVerdict> {
        if client == server {
            return self.revision(client).map(|_| PairVerdict::COMPATIBLE);
        }
        self.pairs.get(&(client, server)).copied()
    }
}

/// An immutable view of the registry; swapped whole on every accepted revision.
#[derive(Debug, Default)]
pub struct RegistryState {
    /// Grows by one with every accepted revision and every run-time mode change.
    pub generation: u64,
    pub subjects: BTreeMap<String, Arc<Subject>>,
    /// Compatibility modes set at run time.
    pub modes: ModeOverrides,
    /// Which revisions have which schema id.
    pub ids: SchemaIds,
    snapshot_json: Vec<u8>,
}

impl RegistryState {
    pub fn subject(&self, name: &str) -> Option<&Arc<Subject>> {
        self.subjects.get(name)
    }

    /// The first revision (by subject name, then number) with schema id `id`.
    pub fn revision_by_id(&self, id: u32) -> Option<&Arc<Revision>> {
        let (subject, number) = self.ids.uses(id).first()?;
        self.subject(subject)?.revision(*number)
    }

    /// The filter's snapshot of this state (see [`crate::snapshot`]).
    pub fn snapshot(&self, include_descriptors: bool) -> Snapshot {
        use base64::Engine;
        Snapshot {
            generation: self.generation,
            subjects: self
                .subjects
                .iter()
                .map(|(name, s)| {
                    let revisions = s
                        .revisions
                        .iter()
                        .map(|r| RevisionSnapshot {
                            revision: r.number,
                            fingerprint: r.schema.fingerprint(),
                            descriptor_set: include_descriptors
                                .then(|| base64::engine::general_purpose::STANDARD.encode(r.schema.encode())),
                        })
                        .collect();
                    let pairs = s
                        .pairs
                        .iter()
                        .map(|(&(client, server), v)| PairSnapshot {
                            client,
                            server,
                            requests: v.requests,
                            responses: v.responses,
                        })
                        .collect();
                    let snapshot = SubjectSnapshot {
                        current: s.current().number,
                        mode: s.mode,
                        category: s.category,
                        revisions,
                        pairs,
                    };
                    (name.clone(), snapshot)
                })
                .collect(),
        }
    }

    /// The snapshot as JSON (without descriptor sets), computed once per state.
    pub fn snapshot_json(&self) -> &[u8] {
        &self.snapshot_json
    }
}

/// Why a candidate revision was not accepted.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RejectReason {
    /// The files did not parse, resolve or decode.
    Load { error: LoadError },
    /// The subject could not be determined.
    Subject { message: String },
    /// The revision breaks the subject's compatibility mode.
    Incompatible {
        mode: Mode,
        category: Category,
        /// Per accepted revision compared with: the findings that violate the mode.
        against: Vec<Violations>,
    },
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Violations {
    pub revision: u32,
    pub findings: Vec<Finding>,
}

/// A refused candidate, kept (the last [`REJECTIONS_KEPT`]) for display.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    pub source: String,
    pub subject: Option<String>,
    pub at: u64,
    pub reason: RejectReason,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rejected", self.source)?;
        if let Some(s) = &self.subject {
            write!(f, " for {s}")?;
        }
        match &self.reason {
            RejectReason::Load { error } => write!(f, ": {error}"),
            RejectReason::Subject { message } => write!(f, ": {message}"),
            RejectReason::Incompatible { mode, category, against } => {
                write!(f, ": breaks {mode} ({category})")?;
                for v in against {
                    for finding in &v.findings {
                        write!(f, "\n  vs revision {}: {finding}", v.revision)?;
                    }
                }
                Ok(())
            }
        }
    }
}

pub const REJECTIONS_KEPT: usize = 64;

/// What registering a candidate did.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A new revision, now current.
    Accepted(Arc<Revision>),
    /// The subject already has a revision with this fingerprint; nothing changed.
    Unchanged(Arc<Revision>),
}

/// The gate's verdict on a candidate, without registering it.
#[derive(Clone, Debug)]
pub struct GateCheck {
    pub subject: String,
    pub mode: Mode,
    pub category: Category,
    /// Whether the candidate would be accepted (without forcing).
    pub compatible: bool,
    /// The full report against each revision the mode compares with.
    pub reports: Vec<(u32, Report)>,
    pub violations: Vec<Violations>,
}

/// The registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("schema directory {}: {error}", path.display())]
    Dir { path: PathBuf, error: std::io::Error },
}

/// Looking up a revision or validating against it failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("unknown subject {0:?}")]
    Subject(String),
    #[error("subject {0:?} has no revision {1}")]
    Revision(String, u32),
    #[error(transparent)]
    MessageType(#[from] validate::UnknownMessageType),
}

pub struct Registry {
    config: RegistryConfig,
    state: ArcSwap<RegistryState>,
    writer: Mutex<Writer>,
    rejections: Mutex<VecDeque<Rejection>>,
    metrics: Arc<Metrics>,
}

/// State only writers touch: content stamps of directory entries already processed.
#[derive(Default)]
struct Writer {
    stamps: HashMap<String, [u8; 32]>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("config", &self.config).finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Registry {
    /// Restores persisted revisions, then (with a directory configured) scans it once.
    /// Call [`Registry::watch`] to follow later changes.
    pub fn open(config: RegistryConfig) -> Result<Arc<Registry>, RegistryError> {
        let registry = Arc::new(Registry {
            state: ArcSwap::from_pointee(RegistryState::default()),
            writer: Mutex::new(Writer::default()),
            rejections: Mutex::new(VecDeque::new()),
            metrics: Arc::new(Metrics::default()),
            config,
        });
        if let Some(dir) = registry.config.state_dir() {
            if let Some(restored) = store::load(&dir)? {
                let mut subjects = BTreeMap::new();
                for (name, revisions) in restored.subjects {
                    if revisions.is_empty() {
                        continue;
                    }
                    let (mode, category, _) = registry.config.policy(&restored.modes, &name);
                    let subject = build_subject(name.clone(), mode, category, revisions);
                    subjects.insert(name, Arc::new(subject));
                }
                registry.swap(restored.generation, subjects, restored.modes);
                tracing::info!(
                    dir = %dir.display(),
                    subjects = registry.state().subjects.len(),
                    "schema registry restored"
                );
            }
        }
        if let Some(dir) = &registry.config.dir {
            if !dir.is_dir() {
                return Err(RegistryError::Dir {
                    path: dir.clone(),
                    error: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
                });
            }
            registry.scan();
        }
        Ok(registry)
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The current state (cheap: one atomic load).
    pub fn state(&self) -> Arc<RegistryState> {
        self.state.load_full()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The most recent rejections, oldest first.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.rejections.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// Can a client on revision `client` talk to a server on `server`?
    pub fn verdict(&self, subject: &str, client: u32, server: u32) -> Option<PairVerdict> {
        self.state().subject(subject)?.verdict(client, server)
    }

    /// The filter's snapshot as JSON (cached per generation).
    pub fn snapshot_json(&self) -> Vec<u8> {
        self.state().snapshot_json().to_vec()
    }

    /// Validates a payload against a revision (`None` = current), counting the result in
    /// the metrics. `grpc_frames` treats `payload` as gRPC length-prefixed frames.
    pub fn validate(
        &self,
        subject: &str,
        revision: Option<u32>,
        message_type: &str,
        payload: &[u8],
        grpc_frames: bool,
        policy: &Policy,
    ) -> Result<Validation, LookupError> {
        let revision = self.revision(subject, revision)?;
        let descriptor = validate::find_message(revision.schema.pool(), message_type)?;
        let result = if grpc_frames {
            validate::validate_grpc_frames(&descriptor, payload, policy)
        } else {
            validate::validate_message(&descriptor, payload, policy)
        };
        self.metrics.record_validation(&result);
        Ok(result)
    }

    /// A revision of a subject (`None` = current).
    pub fn revision(&self, subject: &str, revision: Option<u32>) -> Result<Arc<Revision>, LookupError> {
        let state = self.state();
        let s = state.subject(subject).ok_or_else(|| LookupError::Subject(subject.to_owned()))?;
        match revision {
            None => Ok(s.current().clone()),
            Some(n) => s.revision(n).cloned().ok_or_else(|| LookupError::Revision(subject.to_owned(), n)),
        }
    }

    /// What the gate would say about `candidate` for `subject` (default: its package).
    pub fn check(&self, candidate: &Schema, subject: Option<&str>) -> Result<GateCheck, String> {
        let subject = match subject {
            Some(s) => s.to_owned(),
            None => candidate.default_subject().map_err(|e| e.to_string())?,
        };
        Ok(self.gate(&self.state(), &subject, candidate))
    }

    /// What the gate would say about `candidate` against one revision of `subject` only
    /// (Confluent's `POST /compatibility/subjects/{subject}/versions/{version}`), under the
    /// subject's mode.
    pub fn check_against(&self, candidate: &Schema, subject: &str, revision: u32) -> Result<GateCheck, LookupError> {
        let state = self.state();
        let existing = state.subject(subject).ok_or_else(|| LookupError::Subject(subject.to_owned()))?;
        let against = existing.revision(revision).ok_or_else(|| LookupError::Revision(subject.to_owned(), revision))?;
        Ok(self.judged(&state, subject, candidate, |_| vec![against]))
    }

    fn gate(&self, state: &RegistryState, subject: &str, candidate: &Schema) -> GateCheck {
        self.judged(state, subject, candidate, |mode| match state.subject(subject) {
            None => Vec::new(),
            Some(existing) if mode.is_transitive() => existing.revisions.iter().collect(),
            Some(existing) => vec![existing.current()],
        })
    }

    /// `candidate` judged under `subject`'s policy against the revisions `against` picks for
    /// its mode (none under `NONE`).
    fn judged<'s>(
        &self,
        state: &'s RegistryState,
        subject: &str,
        candidate: &Schema,
        against: impl FnOnce(Mode) -> Vec<&'s Arc<Revision>>,
    ) -> GateCheck {
        let (mode, category, block_on_warnings) = self.config.policy(&state.modes, subject);
        let mut out = GateCheck {
            subject: subject.to_owned(),
            mode,
            category,
            compatible: true,
            reports: Vec::new(),
            violations: Vec::new(),
        };
        if mode != Mode::None {
            for revision in against(mode) {
                judge(&mut out, revision, candidate, block_on_warnings);
            }
        }
        out
    }

    /// The effective compatibility mode of `subject` (`None`: the global default).
    pub fn mode(&self, subject: Option<&str>) -> Mode {
        let state = self.state();
        match subject {
            Some(s) => self.config.policy(&state.modes, s).0,
            None => state.modes.global.unwrap_or(self.config.mode),
        }
    }

    /// The mode set for `subject` itself (at run time or in the configuration), if any.
    pub fn subject_mode(&self, subject: &str) -> Option<Mode> {
        self.config.subject_mode(&self.state().modes, subject)
    }

    /// Sets (`Some`) or removes (`None`) the run-time mode of `subject` (`None`: the global
    /// one), persists it, and applies it to the subjects it governs. Returns the run-time
    /// mode it replaced. When the state cannot be saved nothing changes.
    pub fn set_mode(&self, subject: Option<&str>, mode: Option<Mode>) -> Result<Option<Mode>, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let state = self.state();
        let mut modes = state.modes.clone();
        let previous = modes.set(subject, mode);
        let subjects: BTreeMap<String, Arc<Subject>> = state
            .subjects
            .iter()
            .map(|(name, s)| {
                let mode = self.config.policy(&modes, name).0;
                let s = if s.mode == mode { s.clone() } else { Arc::new(Subject { mode, ..Subject::clone(s) }) };
                (name.clone(), s)
            })
            .collect();
        let generation = state.generation + 1;
        self.persist(generation, &subjects, &modes)?;
        tracing::info!(subject = subject.unwrap_or("(global)"), mode = ?mode, "compatibility mode set");
        self.swap(generation, subjects, modes);
        Ok(previous)
    }

    /// Registers `schema` as a new revision of `subject` (default: its package), unless it
    /// is already there or breaks the subject's mode (then it is rejected unless `force`).
    pub fn register(
        &self,
        schema: Schema,
        source: &str,
        subject: Option<&str>,
        force: bool,
    ) -> Result<Outcome, Rejection> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.register_locked(schema, source, subject, force, None)
    }

    /// Registers a document (`.proto` text or a base64 descriptor, see [`Document`]) under
    /// `subject`, its references resolved against the same state the gate judges it in.
    /// The document is kept with the revision; an unchanged schema keeps its first one.
    pub fn register_document(
        &self,
        subject: &str,
        schema: &str,
        references: &[Reference],
        source: &str,
    ) -> Result<Outcome, Rejection> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        match self.compile_document(schema, references) {
            Ok((compiled, document)) => {
                self.register_locked(compiled, source, Some(subject), false, Some(Arc::new(document)))
            }
            Err(error) => Err(self.reject(source, Some(subject), RejectReason::Load { error })),
        }
    }

    fn register_locked(
        &self,
        schema: Schema,
        source: &str,
        subject: Option<&str>,
        force: bool,
        document: Option<Arc<Document>>,
    ) -> Result<Outcome, Rejection> {
        let subject = match subject {
            Some(s) => s.to_owned(),
            None => match schema.default_subject() {
                Ok(s) => s,
                Err(e) => {
                    return Err(self.reject(source, None, RejectReason::Subject { message: e.to_string() }));
                }
            },
        };
        let state = self.state();
        if let Some(existing) = state.subject(&subject) {
            if let Some(same) = existing.revisions.iter().find(|r| r.schema.fingerprint() == schema.fingerprint()) {
                return Ok(Outcome::Unchanged(same.clone()));
            }
        }
        let gate = self.gate(&state, &subject, &schema);
        if !gate.compatible && !force {
            let reason = RejectReason::Incompatible {
                mode: gate.mode,
                category: gate.category,
                against: gate.violations,
            };
            return Err(self.reject(source, Some(&subject), reason));
        }
        let previous = state.subject(&subject);
        let number = previous.map(|s| s.current().number + 1).unwrap_or(1);
        let schema_fingerprint = schema.fingerprint();
        let revision = Arc::new(Revision {
            subject: subject.clone(),
            number,
            schema: Arc::new(schema),
            source: source.to_owned(),
            forced: !gate.compatible,
            accepted_at: now(),
            findings: gate.violations.into_iter().flat_map(|v| v.findings).collect(),
            id: state.ids.id_for(&schema_fingerprint),
            document,
        });
        let mut revisions = previous.map(|s| s.revisions.clone()).unwrap_or_default();
        let mut pairs = previous.map(|s| s.pairs.clone()).unwrap_or_default();
        for old in &revisions {
            let report = check(&old.schema, &revision.schema, gate.category);
            let (old_client, new_client) = verdicts(&old.schema, &revision.schema, &report);
            pairs.insert((old.number, number), old_client);
            pairs.insert((number, old.number), new_client);
        }
        revisions.push(revision.clone());
        let mut subjects = state.subjects.clone();
        subjects.insert(
            subject.clone(),
            Arc::new(Subject {
                name: subject.clone(),
                mode: gate.mode,
                category: gate.category,
                revisions,
                pairs,
            }),
        );
        let generation = state.generation + 1;
        if let Err(e) = self.persist(generation, &subjects, &state.modes) {
            // The revision still serves from memory; only a restart would lose it.
            tracing::error!("{e}; accepted revisions will not survive a restart");
        }
        self.swap(generation, subjects, state.modes.clone());
        self.metrics.revision_loaded(&subject);
        tracing::info!(
            subject = %subject,
            revision = number,
            fingerprint = %revision.schema.fingerprint(),
            source,
            forced = revision.forced,
            "schema revision accepted"
        );
        Ok(Outcome::Accepted(revision))
    }

    fn reject(&self, source: &str, subject: Option<&str>, reason: RejectReason) -> Rejection {
        let rejection = Rejection {
            source: source.to_owned(),
            subject: subject.map(str::to_owned),
            at: now(),
            reason,
        };
        tracing::warn!("schema {rejection}");
        self.metrics.revision_rejected(subject);
        let mut kept = self.rejections.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == REJECTIONS_KEPT {
            kept.pop_front();
        }
        kept.push_back(rejection.clone());
        rejection
    }

    fn persist(
        &self,
        generation: u64,
        subjects: &BTreeMap<String, Arc<Subject>>,
        modes: &ModeOverrides,
    ) -> Result<(), StoreError> {
        let Some(dir) = self.config.state_dir() else { return Ok(()) };
        store::save(
            &dir,
            generation,
            subjects.iter().map(|(name, s)| (name.as_str(), s.revisions.as_slice())),
            modes,
        )
    }

    fn swap(&self, generation: u64, subjects: BTreeMap<String, Arc<Subject>>, modes: ModeOverrides) {
        let mut ids = SchemaIds::default();
        for (name, s) in &subjects {
            for r in &s.revisions {
                ids.record(r.schema.fingerprint(), r.id, name, r.number);
            }
        }
        let mut state = RegistryState {
            generation,
            subjects,
            modes,
            ids,
            snapshot_json: Vec::new(),
        };
        state.snapshot_json = state.snapshot(false).to_json();
        self.state.store(Arc::new(state));
    }

    /// Processes every new or changed entry of the watched directory, in name order.
    pub fn scan(&self) -> ScanSummary {
        let mut summary = ScanSummary::default();
        let Some(dir) = self.config.dir.clone() else { return summary };
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let entries = match layout::entries(&dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(dir = %dir.display(), "cannot list the schema directory: {e}");
                return summary;
            }
        };
        for entry in entries {
            let Ok(stamp) = layout::content_stamp(&entry.path) else {
                continue; // vanished or unreadable mid-write; the next event retries
            };
            if writer.stamps.get(&entry.name) == Some(&stamp) {
                continue;
            }
            writer.stamps.insert(entry.name.clone(), stamp);
            let schema = match compile::load(&entry.path) {
                Ok(s) => s,
                Err(error) => {
                    let error = relative_to(error, &entry.path);
                    summary
                        .rejected
                        .push(self.reject(&entry.name, entry.subject.as_deref(), RejectReason::Load { error }));
                    continue;
                }
            };
            match self.register_locked(schema, &entry.name, entry.subject.as_deref(), entry.force, None) {
                Ok(Outcome::Accepted(r)) => summary.accepted.push(r),
                Ok(Outcome::Unchanged(r)) => summary.unchanged.push(r),
                Err(rejection) => summary.rejected.push(rejection),
            }
        }
        summary
    }

    /// Watches the configured directory and rescans it after changes settle. Dropping the
    /// handle stops the watcher.
    pub fn watch(self: &Arc<Self>) -> Result<WatchHandle, WatchError> {
        watch::start(self.clone())
    }
}

/// Makes a load error's file name relative to the watched directory entry it came from.
fn relative_to(mut error: LoadError, entry: &Path) -> LoadError {
    if let Some(file) = &error.file {
        if let Ok(rel) = Path::new(file).strip_prefix(entry) {
            error.file = Some(rel.display().to_string());
        }
    }
    error
}

/// What one scan did.
#[derive(Debug, Default)]
pub struct ScanSummary {
    pub accepted: Vec<Arc<Revision>>,
    pub unchanged: Vec<Arc<Revision>>,
    pub rejected: Vec<Rejection>,
}

/// Compares `candidate` with one accepted revision and records the findings that violate
/// the check's mode.
fn judge(out: &mut GateCheck, revision: &Revision, candidate: &Schema, block_on_warnings: bool) {
    let report = check(&revision.schema, candidate, out.category);
    let mut findings: Vec<Finding> = report.findings.iter().filter(|f| out.mode.is_violated_by(f)).cloned().collect();
    if block_on_warnings {
        findings.extend(report.warnings.iter().filter(|f| out.mode.is_violated_by(f)).cloned());
    }
    if !findings.is_empty() {
        out.compatible = false;
        out.violations.push(Violations {
            revision: revision.number,
            findings,
        });
    }
    out.reports.push((revision.number, report));
}

fn build_subject(name: String, mode: Mode, category: Category, revisions: Vec<Arc<Revision>>) -> Subject {
    let mut pairs = BTreeMap::new();
    for (i, old) in revisions.iter().enumerate() {
        for new in &revisions[i + 1..] {
            let report = check(&old.schema, &new.schema, category);
            let (old_client, new_client) = verdicts(&old.schema, &new.schema, &report);
            pairs.insert((old.number, new.number), old_client);
            pairs.insert((new.number, old.number), new_client);
        }
    }
    Subject {
        name,
        mode,
        category,
        revisions,
        pairs,
    }
}
