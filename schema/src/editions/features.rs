//! Resolved features: what an element's edition, and every `features` option on the way
//! down to it, make of it. Proto2 and proto3 files resolve too, to the defaults their
//! syntax stands for, so the checker and the validator ask one question whatever the syntax.

use prost_reflect::{ReflectMessage,
    EnumDescriptor, ExtensionDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor,
    Syntax, Value,
};

/// `FeatureSet` field numbers (descriptor.proto).
pub(crate) mod number {
    pub(crate) const FIELD_PRESENCE: u32 = 1;
    pub(crate) const ENUM_TYPE: u32 = 2;
    pub(crate) const REPEATED_FIELD_ENCODING: u32 = 3;
    pub(crate) const UTF8_VALIDATION: u32 = 4;
    pub(crate) const MESSAGE_ENCODING: u32 = 5;
    pub(crate) const JSON_FORMAT: u32 = 6;
}

/// The six features of edition 2023, as their `FeatureSet` enum numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// `EXPLICIT` 1, `IMPLICIT` 2, `LEGACY_REQUIRED` 3.
    pub field_presence: i32,
    /// `OPEN` 1, `CLOSED` 2.
    pub enum_type: i32,
    /// `PACKED` 1, `EXPANDED` 2.
    pub repeated_field_encoding: i32,
    /// `VERIFY` 2, `NONE` 3.
    pub utf8_validation: i32,
    /// `LENGTH_PREFIXED` 1, `DELIMITED` 2.
    pub message_encoding: i32,
    /// `ALLOW` 1, `LEGACY_BEST_EFFORT` 2.
    pub json_format: i32,
}

pub(crate) const EXPLICIT: i32 = 1;
pub(crate) const IMPLICIT: i32 = 2;
pub(crate) const LEGACY_REQUIRED: i32 = 3;
pub(crate) const OPEN: i32 = 1;
pub(crate) const CLOSED: i32 = 2;
pub(crate) const PACKED: i32 = 1;
pub(crate) const EXPANDED: i32 = 2;
pub(crate) const VERIFY: i32 = 2;
pub(crate) const NONE: i32 = 3;
pub(crate) const LENGTH_PREFIXED: i32 = 1;
pub(crate) const DELIMITED: i32 = 2;
pub(crate) const ALLOW: i32 = 1;
pub(crate) const LEGACY_BEST_EFFORT: i32 = 2;

impl Features {
    /// What `syntax = "proto2"` means in features.
    pub const PROTO2: Features = Features {
        field_presence: EXPLICIT,
        enum_type: CLOSED,
        repeated_field_encoding: EXPANDED,
        utf8_validation: NONE,
        message_encoding: LENGTH_PREFIXED,
        json_format: LEGACY_BEST_EFFORT,
    };
    /// What `syntax = "proto3"` means in features.
    pub const PROTO3: Features = Features {
        field_presence: IMPLICIT,
        enum_type: OPEN,
        repeated_field_encoding: PACKED,
        utf8_validation: VERIFY,
        message_encoding: LENGTH_PREFIXED,
        json_format: ALLOW,
    };
    /// Edition 2023's defaults: proto3's, with explicit presence.
    pub const EDITION_2023: Features = Features {
        field_presence: EXPLICIT,
        ..Features::PROTO3
    };

    /// The features in a list of `(FeatureSet field number, value)`, in field order.
    pub(crate) fn get(&self, number: u32) -> Option<i32> {
        Some(match number {
            number::FIELD_PRESENCE => self.field_presence,
            number::ENUM_TYPE => self.enum_type,
            number::REPEATED_FIELD_ENCODING => self.repeated_field_encoding,
            number::UTF8_VALIDATION => self.utf8_validation,
            number::MESSAGE_ENCODING => self.message_encoding,
            number::JSON_FORMAT => self.json_format,
            _ => return None,
        })
    }

    pub(crate) fn set(&mut self, number: u32, value: i32) {
        let slot = match number {
            number::FIELD_PRESENCE => &mut self.field_presence,
            number::ENUM_TYPE => &mut self.enum_type,
            number::REPEATED_FIELD_ENCODING => &mut self.repeated_field_encoding,
            number::UTF8_VALIDATION => &mut self.utf8_validation,
            number::MESSAGE_ENCODING => &mut self.message_encoding,
            number::JSON_FORMAT => &mut self.json_format,
            _ => return,
        };
        // 0 is each enum's `…_UNKNOWN`: never a setting.
        if value != 0 {
            *slot = value;
        }
    }

    pub(crate) const NUMBERS: [u32; 6] = [
        number::FIELD_PRESENCE,
        number::ENUM_TYPE,
        number::REPEATED_FIELD_ENCODING,
        number::UTF8_VALIDATION,
        number::MESSAGE_ENCODING,
        number::JSON_FORMAT,
    ];

    /// These features with the `features` set in `options` (any descriptor's options message) applied.
    fn refined(mut self, options: &prost_reflect::DynamicMessage) -> Features {
        let Some(field) = options.descriptor().get_field_by_name("features") else {
            return self;
        };
        if !options.has_field(&field) {
            return self;
        }
        if let Value::Message(set) = options.get_field(&field).as_ref() {
            for number in Features::NUMBERS {
                if set.has_field_by_number(number) {
                    if let Some(Value::EnumNumber(v)) = set.get_field_by_number(number).as_deref() {
                        self.set(number, *v);
                    }
                }
            }
        }
        self
    }

    /// A file's features. Proto3 and plain proto2 files resolve from their syntax alone
    /// (features are valid only under editions; protoc refuses them elsewhere); an editions
    /// file reaches here lowered to proto2 with every feature of its edition written into its
    /// options (see [`super::lowering`]), so the options alone decide.
    pub fn of_file(file: &FileDescriptor) -> Features {
        by_syntax(file).unwrap_or_else(|| Features::PROTO2.refined(&file.options()))
    }

    pub fn of_message(message: &MessageDescriptor) -> Features {
        by_syntax(&message.parent_file()).unwrap_or_else(|| chain::message(message))
    }

    pub fn of_enum(e: &EnumDescriptor) -> Features {
        by_syntax(&e.parent_file()).unwrap_or_else(|| chain::scope(e.parent_message(), &e.parent_file()).refined(&e.options()))
    }

    pub fn of_field(field: &FieldDescriptor) -> Features {
        by_syntax(&field.parent_file()).unwrap_or_else(|| {
            let mut outer = chain::message(field.parent_message());
            if let Some(oneof) = field.containing_oneof() {
                outer = outer.refined(&oneof.options());
            }
            outer.refined(&field.options())
        })
    }

    pub fn of_extension(ext: &ExtensionDescriptor) -> Features {
        by_syntax(&ext.parent_file())
            .unwrap_or_else(|| chain::scope(ext.parent_message(), &ext.parent_file()).refined(&ext.options()))
    }
}

/// The features of a proto3 or plain proto2 file's elements: their syntax's, without
/// decoding any options (the validator asks for every string field it meets, per payload).
fn by_syntax(file: &FileDescriptor) -> Option<Features> {
    match file.syntax() {
        Syntax::Proto3 => Some(Features::PROTO3),
        _ if !is_editions_file(file) => Some(Features::PROTO2),
        _ => None,
    }
}

/// Resolution down the options of an editions file's elements.
mod chain {
    use super::Features;
    use prost_reflect::{FileDescriptor, MessageDescriptor};

    pub(super) fn message(message: &MessageDescriptor) -> Features {
        scope(message.parent_message(), &message.parent_file()).refined(&message.options())
    }

    /// The features in force inside `parent` (or at the top of `file`).
    pub(super) fn scope(parent: Option<MessageDescriptor>, file: &FileDescriptor) -> Features {
        match parent {
            Some(parent) => message(&parent),
            None => Features::PROTO2.refined(&file.options()),
        }
    }
}

/// Whether a singular field tells "unset" from its default: repeated fields never do;
/// message fields, oneof members and proto3 `optional` always do; the rest per `field_presence`.
pub fn has_presence(field: &FieldDescriptor) -> bool {
    if field.is_list() || field.is_map() {
        return false;
    }
    if field.supports_presence() && field.parent_file().syntax() == Syntax::Proto3 {
        return true;
    }
    if matches!(field.kind(), Kind::Message(_)) || field.containing_oneof().is_some() {
        return true;
    }
    Features::of_field(field).field_presence != IMPLICIT
}

/// [`has_presence`] for extensions (which are never in a oneof).
pub fn extension_has_presence(ext: &ExtensionDescriptor) -> bool {
    if ext.is_list() || ext.is_map() {
        return false;
    }
    if matches!(ext.kind(), Kind::Message(_)) {
        return true;
    }
    Features::of_extension(ext).field_presence != IMPLICIT
}

/// Whether `file` was written in an edition: lowered editions files carry their features in
/// their options, which proto2 and proto3 files may not (see [`super::lowering`]).
pub fn is_editions_file(file: &FileDescriptor) -> bool {
    let options = file.options();
    options
        .descriptor()
        .get_field_by_name("features")
        .is_some_and(|f| options.has_field(&f))
}
