//! Validating Confluent-framed records (see [`crate::framing`]): the schema id and message
//! indexes in the frame pick the revision and the type, then the payload is validated as
//! any other.
//!
//! Everything wrong with a record is the record's fault and comes back as a `bad_frame`
//! violation, never as an error of the call: a malformed header, a schema id this
//! registry never gave out, indexes that name no message.

use super::document::root_file;
use super::Registry;
use crate::framing::{self, Frame};
use crate::validate::{self, Policy, Validation, Violation, ViolationKind};

/// What validating one framed record found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramedValidation {
    /// From the frame, when its header parsed.
    pub schema_id: Option<u32>,
    /// The revision the id resolved to: `(subject, revision)`.
    pub revision: Option<(String, u32)>,
    /// The full name of the type the indexes resolved to.
    pub message_type: Option<String>,
    /// Violation offsets are within the message, after the frame's header.
    pub validation: Validation,
}

impl Registry {
    /// Validates a Confluent-framed protobuf record, counting it in the metrics.
    pub fn validate_framed(&self, record: &[u8], policy: &Policy) -> FramedValidation {
        let mut out = FramedValidation {
            schema_id: None,
            revision: None,
            message_type: None,
            validation: Validation::default(),
        };
        let result = self.resolve_frame(record, &mut out).map(|(descriptor, frame)| {
            validate::validate_message(&descriptor, frame.payload, policy)
        });
        out.validation = result.unwrap_or_else(|message| Validation {
            violations: vec![Violation {
                kind: ViolationKind::BadFrame,
                path: String::new(),
                offset: 0,
                frame: None,
                message,
            }],
            warnings: Vec::new(),
        });
        self.metrics.record_validation(&out.validation);
        out
    }

    fn resolve_frame<'a>(
        &self,
        record: &'a [u8],
        out: &mut FramedValidation,
    ) -> Result<(prost_reflect::MessageDescriptor, Frame<'a>), String> {
        let frame = framing::parse(record).map_err(|e| format!("not a Confluent-framed record: {e}"))?;
        out.schema_id = Some(frame.schema_id);
        let state = self.state();
        let revision = state
            .revision_by_id(frame.schema_id)
            .ok_or_else(|| format!("schema id {} is not registered", frame.schema_id))?;
        out.revision = Some((revision.subject.clone(), revision.number));
        let file_name = root_file(revision)?;
        let file = revision
            .schema
            .pool()
            .get_file_by_name(&file_name)
            .ok_or_else(|| format!("{file_name} is missing from schema id {}", frame.schema_id))?;
        let descriptor = framing::message_at(&file, &frame.message_indexes).ok_or_else(|| {
            format!(
                "message indexes {:?} name no message in schema id {} ({} top-level messages)",
                frame.message_indexes,
                frame.schema_id,
                file.messages().len()
            )
        })?;
        out.message_type = Some(descriptor.full_name().to_owned());
        Ok((descriptor, frame))
    }
}
