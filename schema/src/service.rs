//! The tonic `switchyard.registry.v1.SchemaRegistry` service over a [`Registry`].
//!
//! ```text
//! let registry = Registry::open(config)?;
//! let _watch = registry.watch()?;
//! tonic::transport::Server::builder()
//!     .add_service(switchyard_schema::service::server(registry.clone()))
//! ```

use crate::breaking::{check, Category, Finding, Reader};
use crate::compat::{self, Mode};
use crate::registry::{Registry, RejectReason, Revision};
use crate::schema::Schema;
use crate::validate::{Policy, UnknownFields, Violation, WireTypeMismatch};
use pb::check_compatibility_request::Candidate;
use pb::schema_registry_server::{SchemaRegistry, SchemaRegistryServer};
use std::sync::Arc;
use switchyard_proto::switchyard::registry::v1 as pb;
use tonic::{Request, Response, Status};

/// The gRPC face of a [`Registry`].
#[derive(Clone, Debug)]
pub struct RegistryService {
    registry: Arc<Registry>,
}

impl RegistryService {
    pub fn new(registry: Arc<Registry>) -> Self {
        RegistryService { registry }
    }
}

/// The service, ready for `Server::builder().add_service(...)`.
pub fn server(registry: Arc<Registry>) -> SchemaRegistryServer<RegistryService> {
    SchemaRegistryServer::new(RegistryService::new(registry))
}

fn timestamp(unix: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: unix as i64,
        nanos: 0,
    }
}

fn mode_to_pb(mode: Mode) -> i32 {
    (match mode {
        Mode::Backward => pb::CompatibilityMode::Backward,
        Mode::BackwardTransitive => pb::CompatibilityMode::BackwardTransitive,
        Mode::Forward => pb::CompatibilityMode::Forward,
        Mode::ForwardTransitive => pb::CompatibilityMode::ForwardTransitive,
        Mode::Full => pb::CompatibilityMode::Full,
        Mode::FullTransitive => pb::CompatibilityMode::FullTransitive,
        Mode::None => pb::CompatibilityMode::None,
    }) as i32
}

fn category_to_pb(category: Category) -> i32 {
    (match category {
        Category::Wire => pb::RuleCategory::Wire,
        Category::WireJson => pb::RuleCategory::WireJson,
    }) as i32
}

fn category_from_pb(value: i32) -> Result<Option<Category>, Status> {
    match pb::RuleCategory::try_from(value) {
        Ok(pb::RuleCategory::Unspecified) => Ok(None),
        Ok(pb::RuleCategory::Wire) => Ok(Some(Category::Wire)),
        Ok(pb::RuleCategory::WireJson) => Ok(Some(Category::WireJson)),
        Err(_) => Err(Status::invalid_argument(format!("unknown rule category {value}"))),
    }
}

fn finding_to_pb(f: &Finding, against: u32) -> pb::Finding {
    let (file, line, column) = match &f.location {
        Some(l) => (l.file.clone(), l.line, l.column),
        None => (String::new(), 0, 0),
    };
    pb::Finding {
        rule: f.rule.id().to_owned(),
        element: f.element.clone(),
        file,
        line,
        column,
        message: f.message.clone(),
        reader: (match f.reader {
            Reader::Both => pb::Reader::Both,
            Reader::New => pb::Reader::New,
            Reader::Old => pb::Reader::Old,
        }) as i32,
        against_revision: against,
    }
}

fn revision_to_pb(r: &Revision) -> pb::Revision {
    pb::Revision {
        number: r.number,
        fingerprint: r.schema.fingerprint().to_string(),
        source: r.source.clone(),
        forced: r.forced,
        accepted_at: Some(timestamp(r.accepted_at)),
        files: r.schema.own_files().map(str::to_owned).collect(),
        findings: r.findings.iter().map(|f| finding_to_pb(f, 0)).collect(),
    }
}

fn violation_to_pb(v: &Violation) -> pb::Violation {
    pb::Violation {
        kind: v.kind.as_str().to_owned(),
        path: v.path.clone(),
        offset: v.offset as u64,
        frame: v.frame.map(|f| f as u32),
        message: v.message.clone(),
    }
}

fn lookup_status(e: crate::registry::LookupError) -> Status {
    match e {
        crate::registry::LookupError::MessageType(e) => Status::invalid_argument(e.to_string()),
        other => Status::not_found(other.to_string()),
    }
}

fn revision_arg(n: u32) -> Option<u32> {
    (n != 0).then_some(n)
}

#[tonic::async_trait]
impl SchemaRegistry for RegistryService {
    async fn list_subjects(
        &self,
        _request: Request<pb::ListSubjectsRequest>,
    ) -> Result<Response<pb::ListSubjectsResponse>, Status> {
        let state = self.registry.state();
        let subjects = state
            .subjects
            .values()
            .map(|s| pb::Subject {
                name: s.name.clone(),
                mode: mode_to_pb(s.mode),
                category: category_to_pb(s.category),
                current_revision: s.current().number,
                revisions: s.revisions.iter().map(|r| revision_to_pb(r)).collect(),
            })
            .collect();
        let recent_rejections = self
            .registry
            .rejections()
            .iter()
            .map(|r| pb::Rejection {
                source: r.source.clone(),
                subject: r.subject.clone().unwrap_or_default(),
                at: Some(timestamp(r.at)),
                reason: r.to_string(),
                findings: match &r.reason {
                    RejectReason::Incompatible { against, .. } => against
                        .iter()
                        .flat_map(|v| v.findings.iter().map(|f| finding_to_pb(f, v.revision)))
                        .collect(),
                    _ => Vec::new(),
                },
            })
            .collect();
        Ok(Response::new(pb::ListSubjectsResponse {
            subjects,
            recent_rejections,
            generation: state.generation,
        }))
    }

    async fn get_revision(
        &self,
        request: Request<pb::GetRevisionRequest>,
    ) -> Result<Response<pb::GetRevisionResponse>, Status> {
        let req = request.into_inner();
        let revision = self
            .registry
            .revision(&req.subject, revision_arg(req.revision))
            .map_err(lookup_status)?;
        Ok(Response::new(pb::GetRevisionResponse {
            revision: Some(revision_to_pb(&revision)),
            descriptor_set: revision.schema.encode(),
        }))
    }

    async fn check_compatibility(
        &self,
        request: Request<pb::CheckCompatibilityRequest>,
    ) -> Result<Response<pb::CheckCompatibilityResponse>, Status> {
        let req = request.into_inner();
        let category_override = category_from_pb(req.category)?;
        let state = self.registry.state();
        let subject = state.subject(&req.subject);
        let (mode, default_category) = match subject {
            Some(s) => (s.mode, s.category),
            None => {
                let config = self.registry.config();
                let s = config.subjects.get(&req.subject);
                (
                    s.and_then(|s| s.mode).unwrap_or(config.mode),
                    s.and_then(|s| s.category).unwrap_or(config.category),
                )
            }
        };
        let category = category_override.unwrap_or(default_category);
        let candidate_is_revision = matches!(req.candidate, Some(Candidate::Revision(_)));
        let candidate: Arc<Schema> = match req.candidate {
            Some(Candidate::Revision(n)) => {
                self.registry.revision(&req.subject, Some(n)).map_err(lookup_status)?.schema.clone()
            }
            Some(Candidate::DescriptorSet(bytes)) => Arc::new(
                Schema::decode(&bytes)
                    .map_err(|e| Status::invalid_argument(format!("descriptor_set: {e}")))?,
            ),
            None => return Err(Status::invalid_argument("set `revision` or `descriptor_set`")),
        };
        let mut response = pb::CheckCompatibilityResponse {
            mode: mode_to_pb(mode),
            category: category_to_pb(category),
            fingerprint: candidate.fingerprint().to_string(),
            ..Default::default()
        };
        if req.against_revision != 0 {
            let against = self
                .registry
                .revision(&req.subject, Some(req.against_revision))
                .map_err(lookup_status)?;
            let report = check(&against.schema, &candidate, category);
            let (old_client, new_client) = compat::verdicts(&against.schema, &candidate, &report);
            response.compatible = !report.is_breaking();
            response.findings = report.findings.iter().map(|f| finding_to_pb(f, against.number)).collect();
            response.warnings = report.warnings.iter().map(|f| finding_to_pb(f, against.number)).collect();
            response.old_client_new_server = Some(pb::PairVerdict {
                requests: old_client.requests,
                responses: old_client.responses,
            });
            response.new_client_old_server = Some(pb::PairVerdict {
                requests: new_client.requests,
                responses: new_client.responses,
            });
            return Ok(Response::new(response));
        }
        if candidate_is_revision {
            return Err(Status::invalid_argument("`against_revision` is required when the candidate is a revision"));
        }
        let gate = self
            .registry
            .check(&candidate, Some(&req.subject))
            .map_err(Status::invalid_argument)?;
        response.compatible = gate.compatible;
        for (against, report) in &gate.reports {
            response.findings.extend(report.findings.iter().map(|f| finding_to_pb(f, *against)));
            response.warnings.extend(report.warnings.iter().map(|f| finding_to_pb(f, *against)));
        }
        Ok(Response::new(response))
    }

    async fn validate(&self, request: Request<pb::ValidateRequest>) -> Result<Response<pb::ValidateResponse>, Status> {
        let req = request.into_inner();
        let unknown_fields = match pb::UnknownFieldPolicy::try_from(req.unknown_fields) {
            Ok(pb::UnknownFieldPolicy::Allow) => UnknownFields::Allow,
            Ok(pb::UnknownFieldPolicy::Reject) => UnknownFields::Reject,
            Ok(pb::UnknownFieldPolicy::Warn) | Ok(pb::UnknownFieldPolicy::Unspecified) => UnknownFields::Warn,
            Err(_) => return Err(Status::invalid_argument("unknown unknown_fields policy")),
        };
        let wire_type_mismatch = match pb::WireTypeMismatchPolicy::try_from(req.wire_type_mismatch) {
            Ok(pb::WireTypeMismatchPolicy::Warn) => WireTypeMismatch::Warn,
            Ok(pb::WireTypeMismatchPolicy::Reject) | Ok(pb::WireTypeMismatchPolicy::Unspecified) => WireTypeMismatch::Reject,
            Err(_) => return Err(Status::invalid_argument("unknown wire_type_mismatch policy")),
        };
        let mut policy = Policy {
            unknown_fields,
            wire_type_mismatch,
            ..Policy::default()
        };
        if req.max_bytes != 0 {
            policy.max_bytes = req.max_bytes as usize;
        }
        let revision = self
            .registry
            .revision(&req.subject, revision_arg(req.revision))
            .map_err(lookup_status)?;
        let result = self
            .registry
            .validate(&req.subject, Some(revision.number), &req.message_type, &req.payload, req.grpc_frames, &policy)
            .map_err(lookup_status)?;
        Ok(Response::new(pb::ValidateResponse {
            valid: result.is_valid(),
            violations: result.violations.iter().map(violation_to_pb).collect(),
            warnings: result.warnings.iter().map(violation_to_pb).collect(),
            revision: revision.number,
        }))
    }

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::GetSnapshotResponse>, Status> {
        let req = request.into_inner();
        let state = self.registry.state();
        let snapshot_json = if req.known_generation == state.generation && state.generation != 0 {
            Vec::new()
        } else if req.include_descriptors {
            state.snapshot(true).to_json()
        } else {
            state.snapshot_json().to_vec()
        };
        Ok(Response::new(pb::GetSnapshotResponse {
            generation: state.generation,
            snapshot_json,
        }))
    }
}
