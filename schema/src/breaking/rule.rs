//! Rule identities: buf's `WIRE` / `WIRE_JSON` breaking rules, plus Switchyard's warnings.

use std::fmt;
use std::str::FromStr;

/// A set of rules, named as in buf.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Category {
    /// Binary wire compatibility (buf's `WIRE`, 15 rules).
    #[default]
    Wire,
    /// Wire plus JSON compatibility (buf's `WIRE_JSON`, 22 rules).
    WireJson,
}

impl Category {
    pub fn id(self) -> &'static str {
        match self {
            Category::Wire => "WIRE",
            Category::WireJson => "WIRE_JSON",
        }
    }

    /// The buf rules of this category.
    pub fn rules(self) -> impl Iterator<Item = Rule> {
        Rule::ALL
            .iter()
            .copied()
            .filter(move |r| !r.is_warning() && r.in_category(self))
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Category {
    type Err = String;

    /// Accepts `WIRE`, `wire`, `WIRE_JSON`, `wire-json`, `wire_json`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "WIRE" => Ok(Category::Wire),
            "WIRE_JSON" => Ok(Category::WireJson),
            _ => Err(format!("unknown rule category {s:?} (expected WIRE or WIRE_JSON)")),
        }
    }
}

macro_rules! rules {
    ($( $variant:ident = $id:literal, wire: $wire:literal, wire_json: $json:literal, warning: $warn:literal; )*) => {
        /// A rule. Breaking rules carry buf's exact IDs; warning rules are Switchyard's own
        /// (changes that `WIRE` or `WIRE_JSON` allow but that silently alter values).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Rule { $( $variant, )* }

        impl Rule {
            pub const ALL: &'static [Rule] = &[ $( Rule::$variant, )* ];

            /// The rule ID, e.g. `FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED`.
            pub fn id(self) -> &'static str {
                match self { $( Rule::$variant => $id, )* }
            }

            pub fn in_category(self, category: Category) -> bool {
                match (self, category) {
                    $( (Rule::$variant, Category::Wire) => $wire, )*
                    $( (Rule::$variant, Category::WireJson) => $json, )*
                }
            }

            /// Warning rules never make a change breaking; see [`crate::breaking`].
            pub fn is_warning(self) -> bool {
                match self { $( Rule::$variant => $warn, )* }
            }
        }
    };
}

rules! {
    EnumSameJsonFormat = "ENUM_SAME_JSON_FORMAT", wire: false, wire_json: true, warning: false;
    EnumValueSameName = "ENUM_VALUE_SAME_NAME", wire: false, wire_json: true, warning: false;
    FieldSameJsonName = "FIELD_SAME_JSON_NAME", wire: false, wire_json: true, warning: false;
    FieldSameName = "FIELD_SAME_NAME", wire: false, wire_json: true, warning: false;
    MessageSameJsonFormat = "MESSAGE_SAME_JSON_FORMAT", wire: false, wire_json: true, warning: false;
    FieldSameDefault = "FIELD_SAME_DEFAULT", wire: true, wire_json: true, warning: false;
    FieldSameOneof = "FIELD_SAME_ONEOF", wire: true, wire_json: true, warning: false;
    FileSamePackage = "FILE_SAME_PACKAGE", wire: true, wire_json: true, warning: false;
    MessageSameRequiredFields = "MESSAGE_SAME_REQUIRED_FIELDS", wire: true, wire_json: true, warning: false;
    ReservedEnumNoDelete = "RESERVED_ENUM_NO_DELETE", wire: true, wire_json: true, warning: false;
    ReservedMessageNoDelete = "RESERVED_MESSAGE_NO_DELETE", wire: true, wire_json: true, warning: false;
    RpcSameClientStreaming = "RPC_SAME_CLIENT_STREAMING", wire: true, wire_json: true, warning: false;
    RpcSameIdempotencyLevel = "RPC_SAME_IDEMPOTENCY_LEVEL", wire: true, wire_json: true, warning: false;
    RpcSameRequestType = "RPC_SAME_REQUEST_TYPE", wire: true, wire_json: true, warning: false;
    RpcSameResponseType = "RPC_SAME_RESPONSE_TYPE", wire: true, wire_json: true, warning: false;
    RpcSameServerStreaming = "RPC_SAME_SERVER_STREAMING", wire: true, wire_json: true, warning: false;
    EnumValueNoDeleteUnlessNameReserved = "ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED", wire: false, wire_json: true, warning: false;
    FieldNoDeleteUnlessNameReserved = "FIELD_NO_DELETE_UNLESS_NAME_RESERVED", wire: false, wire_json: true, warning: false;
    FieldWireJsonCompatibleCardinality = "FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY", wire: false, wire_json: true, warning: false;
    FieldWireJsonCompatibleType = "FIELD_WIRE_JSON_COMPATIBLE_TYPE", wire: false, wire_json: true, warning: false;
    EnumValueNoDeleteUnlessNumberReserved = "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED", wire: true, wire_json: true, warning: false;
    FieldNoDeleteUnlessNumberReserved = "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED", wire: true, wire_json: true, warning: false;
    FieldWireCompatibleCardinality = "FIELD_WIRE_COMPATIBLE_CARDINALITY", wire: true, wire_json: false, warning: false;
    FieldWireCompatibleType = "FIELD_WIRE_COMPATIBLE_TYPE", wire: true, wire_json: false, warning: false;

    // Switchyard warnings: allowed by the category, but a reader can get a different value
    // than the writer meant, without any error.
    FieldValueTruncatingType = "FIELD_VALUE_TRUNCATING_TYPE", wire: true, wire_json: true, warning: true;
    FieldValueSignChangingType = "FIELD_VALUE_SIGN_CHANGING_TYPE", wire: true, wire_json: true, warning: true;
    FieldValueBoolIntegerType = "FIELD_VALUE_BOOL_INTEGER_TYPE", wire: true, wire_json: true, warning: true;
    FieldJsonStringBytes = "FIELD_JSON_STRING_BYTES", wire: true, wire_json: true, warning: true;
    FieldJsonNameChanged = "FIELD_JSON_NAME_CHANGED", wire: true, wire_json: true, warning: true;
    EnumValueJsonNameChanged = "ENUM_VALUE_JSON_NAME_CHANGED", wire: true, wire_json: true, warning: true;
    FieldPresenceChanged = "FIELD_PRESENCE_CHANGED", wire: true, wire_json: true, warning: true;
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Rule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Rule::ALL
            .iter()
            .copied()
            .find(|r| r.id() == s)
            .ok_or_else(|| format!("unknown rule {s:?}"))
    }
}

impl serde::Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

impl<'de> serde::Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_sizes_match_buf() {
        assert_eq!(Category::Wire.rules().count(), 15);
        assert_eq!(Category::WireJson.rules().count(), 22);
    }
}
