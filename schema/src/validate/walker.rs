//! The wire walker behind [`super::validate_message`].

use super::{Policy, UnknownFields, Validation, Violation, ViolationKind, WireTypeMismatch};
use crate::wire::{self, WireError, WireType};
use crate::editions::{Features, VERIFY};
use prost_reflect::{Kind, MessageDescriptor};
use std::collections::HashMap;

/// Parsing cannot continue at this level (the violation is already recorded).
pub(super) struct Stop;

pub(super) struct Walker<'a> {
    policy: &'a Policy,
    out: &'a mut Validation,
    /// Path segments of the message being walked.
    path: Vec<String>,
    frame: Option<usize>,
    /// Added to every offset (the frame body's position in a gRPC stream).
    base: usize,
}

/// What the walker needs to know about a declared field or extension.
struct Declared {
    name: String,
    kind: Kind,
    is_list: bool,
    is_group: bool,
    check_utf8: bool,
}

impl<'a> Walker<'a> {
    pub(super) fn new(policy: &'a Policy, out: &'a mut Validation) -> Self {
        Walker {
            policy,
            out,
            path: Vec::new(),
            frame: None,
            base: 0,
        }
    }

    pub(super) fn in_frame(mut self, frame: usize, base: usize) -> Self {
        self.frame = Some(frame);
        self.base = base;
        self
    }

    pub(super) fn message(&mut self, descriptor: &MessageDescriptor, payload: &[u8]) {
        let mut pos = 0;
        let _ = self.walk(descriptor, payload, &mut pos, payload.len(), None);
    }

    fn path_with(&self, last: Option<&str>) -> String {
        let mut p = self.path.join(".");
        if let Some(last) = last {
            if !p.is_empty() {
                p.push('.');
            }
            p.push_str(last);
        }
        p
    }

    fn report(&mut self, kind: ViolationKind, segment: Option<&str>, offset: usize, message: String) {
        let violation = Violation {
            kind,
            path: self.path_with(segment),
            offset: self.base + offset,
            frame: self.frame,
            message,
        };
        let tolerated = match kind {
            ViolationKind::UnknownField => self.policy.unknown_fields == UnknownFields::Warn,
            ViolationKind::WrongWireType => self.policy.wire_type_mismatch == WireTypeMismatch::Warn,
            _ => false,
        };
        if tolerated {
            self.out.warnings.push(violation);
        } else {
            self.out.violations.push(violation);
        }
    }

    fn report_wire(&mut self, err: WireError, segment: Option<&str>, offset: usize, what: &str) {
        let (kind, message) = match err {
            WireError::BadVarint => (ViolationKind::BadVarint, format!("malformed varint in {what}")),
            WireError::Truncated => (ViolationKind::Truncated, format!("payload ends inside {what}")),
            WireError::InvalidTag => (ViolationKind::InvalidTag, format!("invalid field number in {what}")),
            WireError::InvalidWireType => (ViolationKind::InvalidTag, format!("invalid wire type (6 or 7) in {what}")),
        };
        self.report(kind, segment, offset, message);
    }

    /// Walks the fields in `buf[*pos..end]`, or up to the end-group marker of `group`.
    fn walk(
        &mut self,
        descriptor: &MessageDescriptor,
        buf: &[u8],
        pos: &mut usize,
        end: usize,
        group: Option<u32>,
    ) -> Result<(), Stop> {
        let buf = &buf[..end];
        let mut counts: HashMap<u32, usize> = HashMap::new();
        let start = *pos;
        loop {
            if *pos >= end {
                if let Some(number) = group {
                    self.report(
                        ViolationKind::GroupMismatch,
                        None,
                        *pos,
                        format!("group (field {number}) is not closed before the end of its container"),
                    );
                    return Err(Stop);
                }
                break;
            }
            let field_start = *pos;
            let (number, wire_type) = match wire::read_key(buf, pos) {
                Ok(key) => key,
                Err(err) => {
                    self.report_wire(err, None, field_start, "a field key");
                    return Err(Stop);
                }
            };
            if wire_type == WireType::EndGroup {
                if group == Some(number) {
                    break;
                }
                // At a declared field's path when it is one: which field was sent wrongly.
                let name = descriptor.get_field(number).map(|f| f.name().to_owned());
                self.report(
                    ViolationKind::GroupMismatch,
                    name.as_deref(),
                    field_start,
                    format!("end-group marker for field {number} without a matching start"),
                );
                return Err(Stop);
            }
            let Some(declared) = declared(descriptor, number) else {
                let segment = format!("#{number}");
                if self.policy.unknown_fields != UnknownFields::Allow {
                    self.report(
                        ViolationKind::UnknownField,
                        Some(&segment),
                        field_start,
                        format!("field number {number} ({}) is not declared in {}", wire_type.name(), descriptor.full_name()),
                    );
                }
                if let Err(err) = skip(buf, pos, wire_type, number) {
                    self.report_wire(err, Some(&segment), field_start, "an unknown field");
                    return Err(Stop);
                }
                continue;
            };
            let index = counts.entry(number).or_default();
            let segment = if declared.is_list || is_map(&declared) {
                format!("{}[{index}]", declared.name)
            } else {
                declared.name.clone()
            };
            *index += 1;
            self.field(&declared, &segment, buf, pos, field_start, number, wire_type)?;
        }
        for field in descriptor.fields() {
            if field.field_descriptor_proto().label() == prost_types::field_descriptor_proto::Label::Required
                && !counts.contains_key(&field.number())
            {
                self.report(
                    ViolationKind::MissingRequired,
                    Some(field.name()),
                    start,
                    format!("required field {} (number {}) is missing", field.name(), field.number()),
                );
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn field(
        &mut self,
        declared: &Declared,
        segment: &str,
        buf: &[u8],
        pos: &mut usize,
        field_start: usize,
        number: u32,
        wire_type: WireType,
    ) -> Result<(), Stop> {
        let expected = expected_wire_type(&declared.kind, declared.is_group);
        let packed = declared.is_list && packable(&declared.kind) && wire_type == WireType::Len;
        if wire_type != expected && !packed {
            self.report(
                ViolationKind::WrongWireType,
                Some(segment),
                field_start,
                format!(
                    "field {} ({}) arrived as {}; its type is sent as {}: the receiver keeps it as an unknown field and reads {} as unset",
                    declared.name,
                    kind_name(&declared.kind, declared.is_group),
                    wire_type.name(),
                    expected.name(),
                    declared.name,
                ),
            );
            if let Err(err) = skip(buf, pos, wire_type, number) {
                self.report_wire(err, Some(segment), field_start, "a mistyped field");
                return Err(Stop);
            }
            return Ok(());
        }
        let value_start = *pos;
        let result = match wire_type {
            WireType::Varint => wire::read_varint(buf, pos).map(drop),
            WireType::Fixed64 => wire::skip_fixed(buf, pos, 8),
            WireType::Fixed32 => wire::skip_fixed(buf, pos, 4),
            WireType::StartGroup => {
                let Kind::Message(group) = &declared.kind else { return Ok(()) };
                return self.nested(group, segment, buf, pos, buf.len(), Some(number));
            }
            WireType::EndGroup => Ok(()),
            WireType::Len => match wire::read_len(buf, pos) {
                Err(err) => Err(err),
                Ok(range) if packed => {
                    self.packed(&declared.kind, segment, &buf[range.clone()], range.start);
                    Ok(())
                }
                Ok(range) => {
                    match &declared.kind {
                        Kind::Message(message) => {
                            let mut inner = range.start;
                            // A broken nested message is reported inside; its length is
                            // known, so the container can go on.
                            let _ = self.nested(message, segment, buf, &mut inner, range.end, None);
                        }
                        Kind::String if declared.check_utf8 => {
                            if let Err(e) = std::str::from_utf8(&buf[range.clone()]) {
                                self.report(
                                    ViolationKind::InvalidUtf8,
                                    Some(segment),
                                    range.start + e.valid_up_to(),
                                    format!("string field {} is not valid UTF-8", declared.name),
                                );
                            }
                        }
                        _ => {}
                    }
                    Ok(())
                }
            },
        };
        if let Err(err) = result {
            self.report_wire(err, Some(segment), value_start, &format!("field {}", declared.name));
            return Err(Stop);
        }
        Ok(())
    }

    fn nested(
        &mut self,
        message: &MessageDescriptor,
        segment: &str,
        buf: &[u8],
        pos: &mut usize,
        end: usize,
        group: Option<u32>,
    ) -> Result<(), Stop> {
        if self.path.len() >= self.policy.max_depth {
            self.report(
                ViolationKind::TooDeep,
                Some(segment),
                *pos,
                format!("messages nest deeper than {} levels", self.policy.max_depth),
            );
            return Err(Stop);
        }
        self.path.push(segment.to_owned());
        let result = self.walk(message, buf, pos, end, group);
        self.path.pop();
        result
    }

    fn packed(&mut self, kind: &Kind, segment: &str, bytes: &[u8], offset: usize) {
        let width = match expected_wire_type(kind, false) {
            WireType::Fixed32 => 4,
            WireType::Fixed64 => 8,
            _ => 0,
        };
        if width > 0 {
            if !bytes.len().is_multiple_of(width) {
                self.report(
                    ViolationKind::Truncated,
                    Some(segment),
                    offset,
                    format!("packed field holds {} bytes, not a multiple of {width}", bytes.len()),
                );
            }
            return;
        }
        let mut pos = 0;
        while pos < bytes.len() {
            let at = pos;
            if let Err(err) = wire::read_varint(bytes, &mut pos) {
                self.report_wire(err, Some(segment), offset + at, "a packed varint");
                return;
            }
        }
    }
}

fn declared(descriptor: &MessageDescriptor, number: u32) -> Option<Declared> {
    if let Some(f) = descriptor.get_field(number) {
        return Some(Declared {
            name: f.name().to_owned(),
            is_list: f.is_list(),
            is_group: f.is_group(),
            check_utf8: matches!(f.kind(), Kind::String) && Features::of_field(&f).utf8_validation == VERIFY,
            kind: f.kind(),
        });
    }
    descriptor.get_extension(number).map(|e| Declared {
        name: format!("[{}]", e.full_name()),
        is_list: e.is_list(),
        is_group: e.is_group(),
        check_utf8: matches!(e.kind(), Kind::String) && Features::of_extension(&e).utf8_validation == VERIFY,
        kind: e.kind(),
    })
}

/// Map fields are repeated entry messages on the wire.
fn is_map(declared: &Declared) -> bool {
    matches!(&declared.kind, Kind::Message(m) if m.is_map_entry())
}

fn expected_wire_type(kind: &Kind, is_group: bool) -> WireType {
    match kind {
        Kind::Message(_) if is_group => WireType::StartGroup,
        Kind::Message(_) | Kind::String | Kind::Bytes => WireType::Len,
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => WireType::Fixed64,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => WireType::Fixed32,
        _ => WireType::Varint,
    }
}

fn packable(kind: &Kind) -> bool {
    !matches!(kind, Kind::Message(_) | Kind::String | Kind::Bytes)
}

fn kind_name(kind: &Kind, is_group: bool) -> String {
    match kind {
        Kind::Message(m) if is_group => format!("group {}", m.full_name()),
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

/// Skips one value of an unknown (or mistyped) field.
fn skip(buf: &[u8], pos: &mut usize, wire_type: WireType, number: u32) -> Result<(), WireError> {
    match wire_type {
        WireType::Varint => wire::read_varint(buf, pos).map(drop),
        WireType::Fixed64 => wire::skip_fixed(buf, pos, 8),
        WireType::Fixed32 => wire::skip_fixed(buf, pos, 4),
        WireType::Len => wire::read_len(buf, pos).map(drop),
        WireType::EndGroup => Ok(()),
        WireType::StartGroup => loop {
            if *pos >= buf.len() {
                return Err(WireError::Truncated);
            }
            let (inner, inner_type) = wire::read_key(buf, pos)?;
            if inner_type == WireType::EndGroup {
                if inner == number {
                    return Ok(());
                }
                return Err(WireError::InvalidTag);
            }
            skip(buf, pos, inner_type, inner)?;
        },
    }
}
