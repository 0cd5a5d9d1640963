//! `schema_payload`: one encoded message, validated against a real message type.
//!
//! The validator walks wire bytes itself instead of decoding (schema/src/validate), so it
//! can disagree with a decoder. The gateway's promise is that what it accepts, the server
//! can read: checked against prost-reflect, the decoder the sidecar and filter use.

use super::schemas;
use prost::Message;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use std::collections::HashSet;
use switchyard_schema::editions::Features;
use switchyard_schema::validate::{validate_message, Policy, UnknownFields, Validation, Violation, ViolationKind, WireTypeMismatch};

/// What the validator checks and protobuf decoders do not: a payload a decoder reads may
/// still be refused for these.
const BEYOND_DECODERS: &[ViolationKind] = &[ViolationKind::MissingRequired];

/// The first byte picks the message type ([`schemas::pick`]); the rest is the payload.
pub fn payload(data: &[u8]) {
    let Some((&selector, payload)) = data.split_first() else { return };
    let message = schemas::pick(selector);
    let policy = Policy::default();
    let v = validate_message(message, payload, &policy);
    for found in v.violations.iter().chain(&v.warnings) {
        assert!(found.offset <= payload.len(), "{}: offset past the payload ({} bytes): {found}", message.full_name(), payload.len());
        assert!(found.frame.is_none(), "a frame number outside frame mode: {found}");
    }
    assert!(
        v.warnings.iter().all(|w| w.kind == ViolationKind::UnknownField),
        "the default policy tolerates unknown fields only: {:?}",
        v.warnings
    );
    policies_report_the_same(message, payload, &v);
    size_cap(message, payload);

    match DynamicMessage::decode(message.clone(), payload) {
        Ok(decoded) => {
            // prost-reflect 0.16.5 reads a map field sent with another wire type (an end-group
            // marker included) as if it were length-delimited (prost's generated code, the
            // sidecar's, refuses it): from there on the two parses are of different bytes, and
            // the validator's is the right one.
            let lenient_map = |x: &Violation| {
                matches!(x.kind, ViolationKind::WrongWireType | ViolationKind::GroupMismatch)
                    && field_at(message, &x.path).is_some_and(|f| f.is_map())
            };
            if v.violations.iter().any(lenient_map) {
                return;
            }
            let beyond: Vec<&Violation> = v.violations.iter().filter(|x| !BEYOND_DECODERS.contains(&x.kind)).collect();
            assert!(beyond.is_empty(), "{}: prost-reflect reads the payload, the validator refuses it: {beyond:?}", message.full_name());
            // prost-reflect's own encoding of what it read validates as well.
            let again = decoded.encode_to_vec();
            let v2 = validate_message(message, &again, &policy);
            let beyond: Vec<&Violation> = v2.violations.iter().filter(|x| !BEYOND_DECODERS.contains(&x.kind)).collect();
            assert!(beyond.is_empty(), "{}: prost-reflect's re-encoding is refused: {beyond:?}", message.full_name());
        }
        Err(e) if v.is_valid() => {
            // Two documented differences. A proto2 (or `utf8_validation = NONE`) string is
            // bytes on the wire; prost-reflect reads every string as UTF-8. And a ten-byte
            // varint with bits beyond 64 is read by the validator as C++, upb and Java read
            // it (the bits dropped); prost refuses it. Any other disagreement is the validator's.
            let e = e.to_string();
            let unverified_string = e.contains("UTF-8") && reaches_unverified_string(message, &mut HashSet::new());
            let overlong_varint = e.contains("invalid varint") && has_overflowing_varint(payload);
            assert!(unverified_string || overlong_varint, "{}: the validator accepts a payload prost-reflect rejects: {e}", message.full_name());
        }
        Err(_) => {}
    }
}

/// Policies only decide whether an unknown field or a mismatched wire type is a violation,
/// a warning or (unknown fields under `allow`) not reported: the problems found are the same.
/// One of the six other policies per input, chosen by its length (every policy checked
/// against every one costs the fuzzer five more validations per input for little more).
fn policies_report_the_same(message: &MessageDescriptor, payload: &[u8], default: &Validation) {
    let all = |v: &Validation| {
        let mut found: Vec<(usize, String, String, String)> =
            v.violations.iter().chain(&v.warnings).map(|x| (x.offset, x.kind.to_string(), x.path.clone(), x.message.clone())).collect();
        found.sort();
        found
    };
    const UNKNOWN: [UnknownFields; 3] = [UnknownFields::Allow, UnknownFields::Warn, UnknownFields::Reject];
    const MISMATCH: [WireTypeMismatch; 2] = [WireTypeMismatch::Warn, WireTypeMismatch::Reject];
    let pick = payload.len() % (UNKNOWN.len() * MISMATCH.len());
    let (unknown_fields, wire_type_mismatch) = (UNKNOWN[pick / MISMATCH.len()], MISMATCH[pick % MISMATCH.len()]);
    let policy = Policy { unknown_fields, wire_type_mismatch, ..Policy::default() };
    let v = validate_message(message, payload, &policy);
    let mut want = all(default);
    if unknown_fields == UnknownFields::Allow {
        want.retain(|(_, kind, _, _)| kind != ViolationKind::UnknownField.as_str());
    }
    assert_eq!(all(&v), want, "{}: policy {policy:?} finds other problems than the default", message.full_name());
    for w in &v.warnings {
        let tolerated = (w.kind == ViolationKind::UnknownField && unknown_fields == UnknownFields::Warn)
            || (w.kind == ViolationKind::WrongWireType && wire_type_mismatch == WireTypeMismatch::Warn);
        assert!(tolerated, "policy {policy:?} warns of {w}");
    }
}

/// A payload over `max_bytes` is refused for its size alone, before any parsing.
fn size_cap(message: &MessageDescriptor, payload: &[u8]) {
    let Some(max_bytes) = payload.len().checked_sub(1) else { return };
    let v = validate_message(message, payload, &Policy { max_bytes, ..Policy::default() });
    let kinds: Vec<ViolationKind> = v.violations.iter().map(|x| x.kind).collect();
    assert_eq!(kinds, [ViolationKind::TooLarge], "{} bytes over a cap of {max_bytes}", payload.len());
}

/// Whether a string field whose UTF-8 is not verified is reachable from `message`.
fn reaches_unverified_string(message: &MessageDescriptor, seen: &mut HashSet<String>) -> bool {
    if !seen.insert(message.full_name().to_owned()) {
        return false;
    }
    let verify = Features::PROTO3.utf8_validation;
    let fields = message.fields().map(|f| (Features::of_field(&f).utf8_validation, f.kind()));
    let extensions = message.extensions().map(|e| (Features::of_extension(&e).utf8_validation, e.kind()));
    let kinds: Vec<(i32, Kind)> = fields.chain(extensions).collect();
    kinds.into_iter().any(|(utf8, kind)| match kind {
        Kind::String => utf8 != verify,
        Kind::Message(m) => reaches_unverified_string(&m, seen),
        _ => false,
    })
}

/// Whether the bytes hold a ten-byte varint whose last byte carries bits beyond 64 (nine
/// continuation bytes, then a final byte above 1). A byte pattern, not a parse: it may
/// also match inside a `bytes` field, which only makes the check above more lenient.
fn has_overflowing_varint(payload: &[u8]) -> bool {
    payload.windows(10).any(|w| w[..9].iter().all(|b| b & 0x80 != 0) && (2..0x80).contains(&w[9]))
}

/// The declared field a violation's path (`items[2].crop.width`) ends at, if it is one.
fn field_at(message: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let mut current = message.clone();
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let name = segment.split('[').next()?;
        let field = current.get_field_by_name(name)?;
        if segments.peek().is_none() {
            return Some(field);
        }
        current = match field.kind() {
            Kind::Message(m) => m,
            _ => return None,
        };
    }
    None
}
