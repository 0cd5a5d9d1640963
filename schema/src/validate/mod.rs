//! Payload validation against a message type.
//!
//! A decoder answers "does this parse?" with one error; a gateway needs more: *where* in
//! the message the problem is (`items[2].name`), *what kind* it is (so it can be counted
//! and alerted on), and checks a decoder skips — proto2 `required` fields, unknown fields,
//! size caps, the gRPC length prefix. So the validator walks the wire bytes itself, guided
//! by the `prost-reflect` descriptor, without building a message. It needs no file system
//! or threads and builds for `wasm32-wasip1`, so the Envoy filter can run it with the
//! descriptor set from the snapshot.
//!
//! Field paths are relative to the validated message: field names joined with `.`,
//! repeated and map elements by index (`scores[1].value`), unknown fields by number
//! (`crop.#7`); the empty path is the message itself.

mod frame;
mod walker;

pub use frame::{validate_grpc_frames, GRPC_FRAME_HEADER};

use prost_reflect::{DescriptorPool, MessageDescriptor};
use std::fmt;

/// A policy's names, stated once: `as_str`, and `FromStr` (any case) with an error that
/// lists them.
macro_rules! policy_names {
    ($ty:ident, $what:literal: $( $variant:ident = $name:literal ),+) => {
        impl $ty {
            /// The policy's name, as configurations and queries spell it.
            pub fn as_str(self) -> &'static str {
                match self { $( $ty::$variant => $name, )+ }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                const ALL: &[$ty] = &[$( $ty::$variant ),+];
                ALL.iter().copied().find(|p| p.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
                    let names: Vec<&str> = ALL.iter().map(|p| p.as_str()).collect();
                    let (last, rest) = names.split_last().unwrap_or((&"", &[]));
                    format!("{} {s:?}: expected {} or {last}", $what, rest.join(", "))
                })
            }
        }
    };
}

/// What to do with fields the schema does not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownFields {
    /// Accept silently (what every protobuf decoder does).
    Allow,
    /// Accept, but report each unknown field as a warning.
    #[default]
    Warn,
    /// Report each unknown field as a violation.
    Reject,
}

policy_names!(UnknownFields, "unknown-field policy": Allow = "allow", Warn = "warn", Reject = "reject");

/// What to do with a declared field that arrives with another wire type (an `int32` sent
/// length-delimited, a `string` sent as a varint). Every reference runtime (C++, upb,
/// Java, Go) parses such a payload and keeps the value as an *unknown* field: the receiver
/// reads the declared field as unset and never learns why. That is a client on another
/// schema, losing data silently, which is what validation is for, hence `Reject` by default;
/// `Warn` forwards it as the runtimes would and reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireTypeMismatch {
    /// Accept, but report each mismatched field as a warning.
    Warn,
    /// Report each mismatched field as a violation.
    #[default]
    Reject,
}

policy_names!(WireTypeMismatch, "wire-type mismatch policy": Warn = "warn", Reject = "reject");

/// How strict validation is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub unknown_fields: UnknownFields,
    pub wire_type_mismatch: WireTypeMismatch,
    /// Largest accepted message, in bytes (gRPC's default receive limit is 4 MiB).
    pub max_bytes: usize,
    /// Deepest accepted message nesting (protobuf's own decoders stop at 100).
    pub max_depth: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            unknown_fields: UnknownFields::Warn,
            wire_type_mismatch: WireTypeMismatch::Reject,
            max_bytes: 4 * 1024 * 1024,
            max_depth: 100,
        }
    }
}

macro_rules! kinds {
    ($( $variant:ident = $id:literal: $doc:literal, )*) => {
        /// The kinds of problems the validator reports.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ViolationKind { $( #[doc = $doc] $variant, )* }

        impl ViolationKind {
            pub const ALL: &'static [ViolationKind] = &[ $( ViolationKind::$variant, )* ];

            /// Stable snake_case name, used in metrics labels and JSON.
            pub fn as_str(self) -> &'static str {
                match self { $( ViolationKind::$variant => $id, )* }
            }
        }
    };
}

kinds! {
    WrongWireType = "wrong_wire_type": "A declared field arrived with a wire type its type cannot have: the receiver keeps it as an unknown field.",
    Truncated = "truncated": "The payload ends inside a field or a length runs past its end.",
    BadVarint = "bad_varint": "A varint longer than ten bytes. (Bits beyond 64 in a ten-byte varint are dropped, as the C++, upb and Java runtimes do.)",
    InvalidTag = "invalid_tag": "A field key with number 0, a number beyond 2^29-1, or wire type 6 or 7.",
    InvalidUtf8 = "invalid_utf8": "A `string` whose UTF-8 is verified (proto3; editions unless `utf8_validation = NONE`) that is not valid UTF-8.",
    GroupMismatch = "group_mismatch": "An end-group marker with no matching start, or a group left open.",
    MissingRequired = "missing_required": "A proto2 `required` field (editions: `LEGACY_REQUIRED`) is absent.",
    UnknownField = "unknown_field": "A field number the schema does not declare.",
    TooLarge = "too_large": "The payload is larger than the policy allows.",
    TooDeep = "too_deep": "Messages nest deeper than the policy allows.",
    CompressedFrame = "compressed_frame": "A gRPC frame with the compressed flag set.",
    BadFrame = "bad_frame": "A gRPC frame whose 5-byte prefix is malformed or disagrees with the body.",
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in a payload.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Violation {
    pub kind: ViolationKind,
    /// Field path relative to the validated message (see the module docs).
    pub path: String,
    /// Byte offset in the message (in the frame body for gRPC frames).
    pub offset: usize,
    /// For gRPC frame mode: which frame (0-based) the violation is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<usize>,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(frame) = self.frame {
            write!(f, "frame {frame}: ")?;
        }
        let path = if self.path.is_empty() { "(message)" } else { &self.path };
        write!(f, "{path}: {} [{} at byte {}]", self.message, self.kind, self.offset)
    }
}

/// The outcome of validating one payload.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validation {
    pub violations: Vec<Violation>,
    /// Problems the policy tolerates (unknown fields under [`UnknownFields::Warn`],
    /// mismatched wire types under [`WireTypeMismatch::Warn`]).
    pub warnings: Vec<Violation>,
}

impl Validation {
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The message type is not in the schema.
#[derive(Debug, thiserror::Error)]
#[error("message type {0:?} is not defined in this schema")]
pub struct UnknownMessageType(pub String);

/// Validates one encoded message of type `message_type` (full name, e.g.
/// `features.v1.ExtractRealtimeRequest`; a leading `.` is accepted).
pub fn validate(
    pool: &DescriptorPool,
    message_type: &str,
    payload: &[u8],
    policy: &Policy,
) -> Result<Validation, UnknownMessageType> {
    let descriptor = find_message(pool, message_type)?;
    Ok(validate_message(&descriptor, payload, policy))
}

pub(crate) fn find_message(pool: &DescriptorPool, name: &str) -> Result<MessageDescriptor, UnknownMessageType> {
    pool.get_message_by_name(name.trim_start_matches('.'))
        .ok_or_else(|| UnknownMessageType(name.to_owned()))
}

/// Validates one encoded message against its descriptor.
pub fn validate_message(descriptor: &MessageDescriptor, payload: &[u8], policy: &Policy) -> Validation {
    let mut out = Validation::default();
    if payload.len() > policy.max_bytes {
        out.violations.push(Violation {
            kind: ViolationKind::TooLarge,
            path: String::new(),
            offset: 0,
            frame: None,
            message: format!("payload is {} bytes; the limit is {}", payload.len(), policy.max_bytes),
        });
        return out;
    }
    walker::Walker::new(policy, &mut out).message(descriptor, payload);
    out
}
