//! Field types and cardinalities, grouped the way buf groups them for compatibility.

use prost_reflect::{Kind, Value};

/// A field's type, with groups told apart from length-delimited messages (their wire
/// encodings differ) and named types by full name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FieldType {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    Message(String),
    Group(String),
    Enum(String),
}

impl FieldType {
    pub(crate) fn new(kind: &Kind, is_group: bool) -> Self {
        match kind {
            Kind::Double => FieldType::Double,
            Kind::Float => FieldType::Float,
            Kind::Int32 => FieldType::Int32,
            Kind::Int64 => FieldType::Int64,
            Kind::Uint32 => FieldType::Uint32,
            Kind::Uint64 => FieldType::Uint64,
            Kind::Sint32 => FieldType::Sint32,
            Kind::Sint64 => FieldType::Sint64,
            Kind::Fixed32 => FieldType::Fixed32,
            Kind::Fixed64 => FieldType::Fixed64,
            Kind::Sfixed32 => FieldType::Sfixed32,
            Kind::Sfixed64 => FieldType::Sfixed64,
            Kind::Bool => FieldType::Bool,
            Kind::String => FieldType::String,
            Kind::Bytes => FieldType::Bytes,
            Kind::Message(m) if is_group => FieldType::Group(m.full_name().to_owned()),
            Kind::Message(m) => FieldType::Message(m.full_name().to_owned()),
            Kind::Enum(e) => FieldType::Enum(e.full_name().to_owned()),
        }
    }

    /// Type name as `.proto` spells it (`message`, `enum`, `group` for named types).
    pub(crate) fn keyword(&self) -> &'static str {
        match self {
            FieldType::Double => "double",
            FieldType::Float => "float",
            FieldType::Int32 => "int32",
            FieldType::Int64 => "int64",
            FieldType::Uint32 => "uint32",
            FieldType::Uint64 => "uint64",
            FieldType::Sint32 => "sint32",
            FieldType::Sint64 => "sint64",
            FieldType::Fixed32 => "fixed32",
            FieldType::Fixed64 => "fixed64",
            FieldType::Sfixed32 => "sfixed32",
            FieldType::Sfixed64 => "sfixed64",
            FieldType::Bool => "bool",
            FieldType::String => "string",
            FieldType::Bytes => "bytes",
            FieldType::Message(_) => "message",
            FieldType::Group(_) => "group",
            FieldType::Enum(_) => "enum",
        }
    }

    /// The full name of a message, group or enum type.
    pub(crate) fn type_name(&self) -> Option<&str> {
        match self {
            FieldType::Message(n) | FieldType::Group(n) | FieldType::Enum(n) => Some(n),
            _ => None,
        }
    }

    /// Types within one group read each other's bytes without error (proto3 "Updating a
    /// message type"); string and bytes sit apart so the checker can allow one direction.
    pub(crate) fn wire_group(&self) -> u8 {
        match self {
            FieldType::Int32 | FieldType::Int64 | FieldType::Uint32 | FieldType::Uint64 | FieldType::Bool => 1,
            FieldType::Sint32 | FieldType::Sint64 => 2,
            FieldType::String => 3,
            FieldType::Bytes => 4,
            FieldType::Fixed32 | FieldType::Sfixed32 => 5,
            FieldType::Fixed64 | FieldType::Sfixed64 => 6,
            FieldType::Double => 7,
            FieldType::Float => 8,
            FieldType::Group(_) => 9,
            FieldType::Message(_) => 10,
            FieldType::Enum(_) => 11,
        }
    }

    /// The intersection of wire and JSON compatibility: 64-bit integers are strings in
    /// JSON, so they no longer mix with 32-bit ones.
    pub(crate) fn wire_json_group(&self) -> u8 {
        match self {
            FieldType::Int32 | FieldType::Uint32 => 1,
            FieldType::Int64 | FieldType::Uint64 => 2,
            FieldType::Fixed32 | FieldType::Sfixed32 => 3,
            FieldType::Fixed64 | FieldType::Sfixed64 => 4,
            FieldType::Bool => 5,
            FieldType::Sint32 => 6,
            FieldType::Sint64 => 7,
            FieldType::String => 8,
            FieldType::Bytes => 9,
            FieldType::Double => 10,
            FieldType::Float => 11,
            FieldType::Group(_) => 12,
            FieldType::Message(_) => 13,
            FieldType::Enum(_) => 14,
        }
    }

    /// Bit width and signedness of integer types (bool counts as a 1-bit unsigned).
    pub(crate) fn integer_shape(&self) -> Option<(u8, bool)> {
        Some(match self {
            FieldType::Int32 | FieldType::Sint32 | FieldType::Sfixed32 => (32, true),
            FieldType::Int64 | FieldType::Sint64 | FieldType::Sfixed64 => (64, true),
            FieldType::Uint32 | FieldType::Fixed32 => (32, false),
            FieldType::Uint64 | FieldType::Fixed64 => (64, false),
            FieldType::Bool => (1, false),
            _ => return None,
        })
    }
}

/// buf's cardinalities: explicit and implicit presence share a wire encoding, maps and
/// lists share a wire encoding but not a JSON one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cardinality {
    OptionalExplicit,
    OptionalImplicit,
    Required,
    Repeated,
    Map,
}

impl Cardinality {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Cardinality::OptionalExplicit => "optional with explicit presence",
            Cardinality::OptionalImplicit => "optional with implicit presence",
            Cardinality::Required => "required",
            Cardinality::Repeated => "repeated",
            Cardinality::Map => "map",
        }
    }

    pub(crate) fn wire_group(self) -> u8 {
        match self {
            Cardinality::OptionalExplicit | Cardinality::OptionalImplicit => 1,
            Cardinality::Required => 2,
            Cardinality::Repeated | Cardinality::Map => 3,
        }
    }

    pub(crate) fn wire_json_group(self) -> u8 {
        match self {
            Cardinality::OptionalExplicit | Cardinality::OptionalImplicit => 1,
            Cardinality::Required => 2,
            Cardinality::Repeated => 3,
            Cardinality::Map => 4,
        }
    }
}

/// A scalar default value, compared leniently across types the way buf does: strings
/// with bytes, and every number (bool and enum numbers included) by numeric value.
#[derive(Clone, Debug)]
pub(crate) enum DefaultValue {
    Text(Vec<u8>),
    Int(i128),
    F32(f32),
    F64(f64),
}

impl DefaultValue {
    pub(crate) fn new(value: &Value) -> Option<Self> {
        Some(match value {
            Value::Bool(b) => DefaultValue::Int(i128::from(*b)),
            Value::I32(v) => DefaultValue::Int(i128::from(*v)),
            Value::I64(v) => DefaultValue::Int(i128::from(*v)),
            Value::U32(v) => DefaultValue::Int(i128::from(*v)),
            Value::U64(v) => DefaultValue::Int(i128::from(*v)),
            Value::EnumNumber(v) => DefaultValue::Int(i128::from(*v)),
            Value::F32(v) => DefaultValue::F32(*v),
            Value::F64(v) => DefaultValue::F64(*v),
            Value::String(s) => DefaultValue::Text(s.as_bytes().to_vec()),
            Value::Bytes(b) => DefaultValue::Text(b.to_vec()),
            Value::Message(_) | Value::List(_) | Value::Map(_) => return None,
        })
    }

    /// The zero value of its type (negative zero is not zero, as in Go's reflect).
    pub(crate) fn is_zero(&self) -> bool {
        match self {
            DefaultValue::Text(t) => t.is_empty(),
            DefaultValue::Int(i) => *i == 0,
            DefaultValue::F32(f) => f.to_bits() == 0,
            DefaultValue::F64(f) => f.to_bits() == 0,
        }
    }

    pub(crate) fn same_as(&self, other: &DefaultValue) -> bool {
        use DefaultValue::*;
        match (self, other) {
            (Text(a), Text(b)) => a == b,
            (Text(_), _) | (_, Text(_)) => false,
            (Int(a), Int(b)) => a == b,
            (F32(a), F64(b)) | (F64(b), F32(a)) => (a.is_nan() && b.is_nan()) || *a == *b as f32,
            (F32(a), F32(b)) => (a.is_nan() && b.is_nan()) || a == b,
            (F64(a), F64(b)) => (a.is_nan() && b.is_nan()) || a == b,
            (Int(i), F32(f)) | (F32(f), Int(i)) => !f.is_nan() && *i as f64 == f64::from(*f),
            (Int(i), F64(f)) | (F64(f), Int(i)) => !f.is_nan() && *i as f64 == *f,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            DefaultValue::Text(t) => match std::str::from_utf8(t) {
                Ok(s) => format!("{s:?}"),
                Err(_) => format!("{t:?}"),
            },
            DefaultValue::Int(i) => i.to_string(),
            DefaultValue::F32(f) => f.to_string(),
            DefaultValue::F64(f) => f.to_string(),
        }
    }
}
