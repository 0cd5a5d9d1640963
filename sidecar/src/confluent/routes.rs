//! The Confluent endpoints, each mapped to one registry operation. Subjects are the
//! registry's subjects, versions its revision numbers, schema ids its global ids; a
//! registration is a revision like any other (gate, persistence, the filter's snapshot).

use super::json::{
    self, reply, ApiError, Compatibility, ConfigLevel, ConfigSet, ConfigUpdate, ReferenceJson, Registered, SchemaById,
    SchemaRequest, SubjectVersion, VersionRef, VersionSpec, PROTOBUF,
};
use super::{Confluent, WriteAccess};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use switchyard_schema::registry::{root_file, GateCheck, Outcome, Reference, RejectReason, Revision, Subject};
use switchyard_schema::Schema;

type Shared = State<Arc<Confluent>>;

/// What a revision's registration through this API is labelled with (its `source`).
const SOURCE: &str = "confluent-api";

pub(crate) async fn subjects(State(c): Shared) -> Response {
    let state = c.registry.state();
    let names: Vec<&String> = state.subjects.keys().collect();
    reply(&names)
}

pub(crate) async fn versions(State(c): Shared, Path(subject): Path<String>) -> Result<Response, ApiError> {
    let state = c.registry.state();
    let s = state.subject(&subject).ok_or_else(|| ApiError::subject_not_found(&subject))?;
    let numbers: Vec<u32> = s.revisions.iter().map(|r| r.number).collect();
    Ok(reply(&numbers))
}

pub(crate) async fn version(State(c): Shared, Path((subject, version)): Path<(String, String)>) -> Result<Response, ApiError> {
    let state = c.registry.state();
    let revision = find_version(state.subject(&subject), &subject, &version)?;
    Ok(reply(&subject_version(&revision)?))
}

/// The schema alone, unquoted, as Confluent answers `/schema`.
pub(crate) async fn version_schema(
    State(c): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let state = c.registry.state();
    let revision = find_version(state.subject(&subject), &subject, &version)?;
    let text = document_text(&revision)?;
    Ok(([(header::CONTENT_TYPE, json::CONTENT_TYPE)], text).into_response())
}

/// `POST /subjects/{subject}`: is this schema registered under the subject?
pub(crate) async fn lookup(State(c): Shared, Path(subject): Path<String>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let request = parse_request(&body)?;
    let state = c.registry.state();
    let s = state.subject(&subject).ok_or_else(|| ApiError::subject_not_found(&subject))?;
    let (candidate, _) = compile(&c, &request)?;
    let found = s
        .revisions
        .iter()
        .find(|r| r.schema.fingerprint() == candidate.fingerprint())
        .ok_or_else(|| ApiError::schema_not_found(format!("with fingerprint {} under subject '{subject}'", candidate.fingerprint())))?;
    Ok(reply(&subject_version(found)?))
}

/// `POST /subjects/{subject}/versions`: register (or find) the schema; `{"id": N}`.
pub(crate) async fn register(
    _: WriteAccess,
    State(c): Shared,
    Path(subject): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request = parse_request(&body)?;
    let references = resolve_references(&c, &request.references)?;
    let registry = c.registry.clone();
    let schema = request.schema;
    let outcome = tokio::task::spawn_blocking(move || registry.register_document(&subject, &schema, &references, SOURCE))
        .await
        .map_err(|e| ApiError::store(format!("registration did not finish: {e}")))?;
    match outcome {
        Ok(Outcome::Accepted(r) | Outcome::Unchanged(r)) => Ok(reply(&Registered { id: r.id })),
        Err(rejection) => Err(match rejection.reason {
            RejectReason::Load { error } => ApiError::invalid_schema(format!("Invalid schema: {error}")),
            RejectReason::Subject { message } => ApiError::invalid_schema(format!("Invalid schema: {message}")),
            RejectReason::Incompatible { against, .. } => {
                let subject = rejection.subject.unwrap_or_default();
                let details: Vec<String> = against
                    .iter()
                    .flat_map(|v| v.findings.iter().map(move |f| finding_message(f, v.revision)))
                    .collect();
                ApiError::incompatible(&subject, &details)
            }
        }),
    }
}

#[derive(Deserialize)]
pub(crate) struct VerboseQuery {
    #[serde(default)]
    verbose: Option<String>,
}

impl VerboseQuery {
    fn verbose(&self) -> bool {
        self.verbose.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// `POST /compatibility/subjects/{subject}/versions/{version}`: against that version only,
/// under the subject's mode.
pub(crate) async fn compatibility_with_version(
    State(c): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Query<VerboseQuery>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request = parse_request(&body)?;
    let against = find_version(c.registry.state().subject(&subject), &subject, &version)?;
    let (candidate, _) = compile(&c, &request)?;
    let check = c
        .registry
        .check_against(&candidate, &subject, against.number)
        .map_err(|_| ApiError::version_not_found(against.number))?;
    Ok(reply(&compatibility(&check, q.verbose())))
}

/// `POST /compatibility/subjects/{subject}/versions`: against every version the subject's
/// mode compares with, as registering would.
pub(crate) async fn compatibility_with_subject(
    State(c): Shared,
    Path(subject): Path<String>,
    Query(q): Query<VerboseQuery>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request = parse_request(&body)?;
    let (candidate, _) = compile(&c, &request)?;
    let check = c.registry.check(&candidate, Some(&subject)).map_err(ApiError::invalid_schema)?;
    Ok(reply(&compatibility(&check, q.verbose())))
}

fn compatibility(check: &GateCheck, verbose: bool) -> Compatibility {
    let messages = verbose.then(|| {
        check
            .violations
            .iter()
            .flat_map(|v| v.findings.iter().map(move |f| finding_message(f, v.revision)))
            .collect()
    });
    Compatibility { is_compatible: check.compatible, messages }
}

/// One finding for a client: buf's rule ID, `file:line:column` in the candidate, buf's
/// message, and the version it breaks.
fn finding_message(finding: &switchyard_schema::breaking::Finding, version: u32) -> String {
    let at = finding.location.as_ref().map_or_else(|| finding.element.clone(), |l| l.to_string());
    format!("{} {at}: {} (against version {version})", finding.rule, finding.message)
}

pub(crate) async fn global_config(State(c): Shared) -> Response {
    reply(&ConfigLevel { compatibility_level: c.registry.mode(None) })
}

#[derive(Deserialize)]
pub(crate) struct ConfigQuery {
    #[serde(default, rename = "defaultToGlobal")]
    default_to_global: Option<String>,
}

/// Confluent answers 40408 for a subject without a level of its own, unless
/// `defaultToGlobal=true`.
pub(crate) async fn subject_config(
    State(c): Shared,
    Path(subject): Path<String>,
    Query(q): Query<ConfigQuery>,
) -> Result<Response, ApiError> {
    let to_global = q.default_to_global.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("true"));
    match c.registry.subject_mode(&subject) {
        Some(mode) => Ok(reply(&ConfigLevel { compatibility_level: mode })),
        None if to_global => Ok(reply(&ConfigLevel { compatibility_level: c.registry.mode(None) })),
        None => Err(ApiError::subject_config_not_found(&subject)),
    }
}

pub(crate) async fn set_global_config(_: WriteAccess, State(c): Shared, body: axum::body::Bytes) -> Result<Response, ApiError> {
    set_config(&c, None, &body)
}

pub(crate) async fn set_subject_config(
    _: WriteAccess,
    State(c): Shared,
    Path(subject): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    set_config(&c, Some(&subject), &body)
}

fn set_config(c: &Confluent, subject: Option<&str>, body: &[u8]) -> Result<Response, ApiError> {
    let update: ConfigUpdate =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid config body: {e}")))?;
    let level = update
        .compatibility
        .or(update.compatibility_level)
        .ok_or_else(|| ApiError::invalid_compatibility("(none given)"))?;
    let mode = json::parse_level(&level)?;
    c.registry.set_mode(subject, Some(mode)).map_err(|e| ApiError::store(e.to_string()))?;
    Ok(reply(&ConfigSet { compatibility: mode }))
}

/// `DELETE /config`: back to the configured global level; answers the level removed.
pub(crate) async fn delete_global_config(_: WriteAccess, State(c): Shared) -> Result<Response, ApiError> {
    let before = c.registry.mode(None);
    c.registry.set_mode(None, None).map_err(|e| ApiError::store(e.to_string()))?;
    Ok(reply(&ConfigLevel { compatibility_level: before }))
}

/// `DELETE /config/{subject}`: the subject follows the global level again (unless the
/// sidecar's configuration gives it one); answers the level removed.
pub(crate) async fn delete_subject_config(
    _: WriteAccess,
    State(c): Shared,
    Path(subject): Path<String>,
) -> Result<Response, ApiError> {
    let Some(before) = c.registry.subject_mode(&subject) else {
        return Err(if c.registry.state().subject(&subject).is_some() {
            ApiError::subject_config_not_found(&subject)
        } else {
            ApiError::subject_not_found(&subject)
        });
    };
    c.registry.set_mode(Some(&subject), None).map_err(|e| ApiError::store(e.to_string()))?;
    Ok(reply(&ConfigLevel { compatibility_level: before }))
}

pub(crate) async fn schema_by_id(State(c): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let state = c.registry.state();
    let revision = state.revision_by_id(id).ok_or_else(|| ApiError::schema_not_found(id))?;
    let (schema, references) = document(revision)?;
    Ok(reply(&SchemaById { schema, schema_type: PROTOBUF, references }))
}

pub(crate) async fn schema_versions(State(c): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let state = c.registry.state();
    let uses = state.ids.uses(id);
    if uses.is_empty() {
        return Err(ApiError::schema_not_found(id));
    }
    let versions: Vec<VersionRef> =
        uses.iter().map(|(subject, version)| VersionRef { subject: subject.clone(), version: *version }).collect();
    Ok(reply(&versions))
}

pub(crate) async fn schema_subjects(State(c): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let state = c.registry.state();
    let subjects: BTreeSet<&str> = state.ids.uses(id).iter().map(|(s, _)| s.as_str()).collect();
    if subjects.is_empty() {
        return Err(ApiError::schema_not_found(id));
    }
    Ok(reply(&subjects))
}

pub(crate) async fn schema_types() -> Response {
    reply(&[PROTOBUF])
}

fn parse_id(text: &str) -> Result<u32, ApiError> {
    text.parse().map_err(|_| ApiError::schema_not_found(text))
}

fn parse_request(body: &[u8]) -> Result<SchemaRequest, ApiError> {
    let request: SchemaRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid schema request body: {e}")))?;
    match request.schema_type.as_deref() {
        Some(t) if t.eq_ignore_ascii_case(PROTOBUF) => Ok(request),
        other => Err(ApiError::invalid_schema(format!(
            "Invalid schema type {}: this registry serves PROTOBUF schemas only",
            other.unwrap_or("AVRO (no schemaType given)")
        ))),
    }
}

/// References with `version: -1` name the subject's latest version; anything else must be
/// a version number (whether it exists is the compiler's to say, naming the reference).
fn resolve_references(c: &Confluent, given: &[ReferenceJson]) -> Result<Vec<Reference>, ApiError> {
    let state = c.registry.state();
    given
        .iter()
        .map(|r| {
            let version = match r.version {
                -1 => state.subject(&r.subject).map_or(0, |s| s.current().number),
                n => u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| ApiError::invalid_version(&n.to_string()))?,
            };
            Ok(Reference { name: r.name.clone(), subject: r.subject.clone(), version })
        })
        .collect()
}

fn compile(c: &Confluent, request: &SchemaRequest) -> Result<(Schema, switchyard_schema::registry::Document), ApiError> {
    let references = resolve_references(c, &request.references)?;
    c.registry
        .compile_document(&request.schema, &references)
        .map_err(|e| ApiError::invalid_schema(format!("Invalid schema: {e}")))
}

fn find_version(subject: Option<&Arc<Subject>>, name: &str, version: &str) -> Result<Arc<Revision>, ApiError> {
    let spec = VersionSpec::parse(version)?;
    let s = subject.ok_or_else(|| ApiError::subject_not_found(name))?;
    match spec {
        VersionSpec::Latest => Ok(s.current().clone()),
        VersionSpec::Number(n) => s.revision(n).cloned().ok_or_else(|| ApiError::version_not_found(n)),
    }
}

fn subject_version(revision: &Revision) -> Result<SubjectVersion, ApiError> {
    let (schema, references) = document(revision)?;
    Ok(SubjectVersion {
        subject: revision.subject.clone(),
        id: revision.id,
        version: revision.number,
        schema_type: PROTOBUF,
        schema,
        references,
    })
}

/// The schema as a client can read it back: the document as sent, or for a revision from
/// the watched directory its file's descriptor, serialized and base64-encoded (Confluent's
/// `serialized` format, which its protobuf clients decode).
fn document(revision: &Revision) -> Result<(String, Vec<ReferenceJson>), ApiError> {
    match &revision.document {
        Some(doc) => Ok((doc.schema.clone(), doc.references.iter().map(ReferenceJson::from).collect())),
        None => Ok((document_text(revision)?, Vec::new())),
    }
}

fn document_text(revision: &Revision) -> Result<String, ApiError> {
    if let Some(doc) = &revision.document {
        return Ok(doc.schema.clone());
    }
    let file = root_file(revision).map_err(ApiError::invalid_schema)?;
    let proto = revision
        .schema
        .pool()
        .get_file_by_name(&file)
        .map(|f| prost::Message::encode_to_vec(f.file_descriptor_proto()))
        .ok_or_else(|| ApiError::schema_not_found(&file))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(proto))
}
