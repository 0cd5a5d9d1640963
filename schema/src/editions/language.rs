//! Google's language feature files, `google/protobuf/{cpp,java,go}_features.proto`, built
//! in as buf builds them in: a schema may set `features.(pb.cpp).string_type = VIEW` without
//! carrying the file. A file of that name in the tree is used instead.
//!
//! Declared from the published messages, enums and field numbers (the `FeatureSet`
//! extensions 1000–1002 and what they hold); the files' own option values (edition
//! defaults, targets, support windows) are left out: the registry resolves the six core
//! features only, and a language feature is kept as written.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto, FileDescriptorProto};

/// One language's features message.
struct Language {
    file: &'static str,
    extension: &'static str,
    number: i32,
    message: &'static str,
    fields: &'static [(&'static str, i32, Value)],
    /// Enums declared in the message, and messages that only wrap an enum.
    enums: &'static [Enumeration],
}

enum Value {
    Bool,
    /// The enum's name relative to the features message (`StringType`, `Wrapper.Enum`).
    Enum(&'static str),
}

struct Enumeration {
    /// `None` for an enum declared in the features message itself.
    wrapper: Option<&'static str>,
    name: &'static str,
    values: &'static [(&'static str, i32)],
}

const LANGUAGES: [Language; 3] = [
    Language {
        file: "google/protobuf/cpp_features.proto",
        extension: "cpp",
        number: 1000,
        message: "CppFeatures",
        fields: &[
            ("legacy_closed_enum", 1, Value::Bool),
            ("string_type", 2, Value::Enum("StringType")),
            ("enum_name_uses_string_view", 3, Value::Bool),
            ("repeated_type", 4, Value::Enum("RepeatedType")),
        ],
        enums: &[
            Enumeration {
                wrapper: None,
                name: "StringType",
                values: &[("STRING_TYPE_UNKNOWN", 0), ("VIEW", 1), ("CORD", 2), ("STRING", 3)],
            },
            Enumeration {
                wrapper: None,
                name: "RepeatedType",
                values: &[("REPEATED_TYPE_UNKNOWN", 0), ("LEGACY", 1), ("PROXY", 2)],
            },
        ],
    },
    Language {
        file: "google/protobuf/java_features.proto",
        extension: "java",
        number: 1001,
        message: "JavaFeatures",
        fields: &[
            ("legacy_closed_enum", 1, Value::Bool),
            ("utf8_validation", 2, Value::Enum("Utf8Validation")),
            ("large_enum", 3, Value::Bool),
            ("use_old_outer_classname_default", 4, Value::Bool),
            ("nest_in_file_class", 5, Value::Enum("NestInFileClassFeature.NestInFileClass")),
        ],
        enums: &[
            Enumeration {
                wrapper: None,
                name: "Utf8Validation",
                values: &[("UTF8_VALIDATION_UNKNOWN", 0), ("DEFAULT", 1), ("VERIFY", 2)],
            },
            Enumeration {
                wrapper: Some("NestInFileClassFeature"),
                name: "NestInFileClass",
                values: &[("NEST_IN_FILE_CLASS_UNKNOWN", 0), ("NO", 1), ("YES", 2), ("LEGACY", 3)],
            },
        ],
    },
    Language {
        file: "google/protobuf/go_features.proto",
        extension: "go",
        number: 1002,
        message: "GoFeatures",
        fields: &[
            ("legacy_unmarshal_json_enum", 1, Value::Bool),
            ("api_level", 2, Value::Enum("APILevel")),
            ("strip_enum_prefix", 3, Value::Enum("StripEnumPrefix")),
            ("optimize_mode", 4, Value::Enum("OptimizeModeFeature.OptimizeMode")),
        ],
        enums: &[
            Enumeration {
                wrapper: None,
                name: "APILevel",
                values: &[("API_LEVEL_UNSPECIFIED", 0), ("API_OPEN", 1), ("API_HYBRID", 2), ("API_OPAQUE", 3)],
            },
            Enumeration {
                wrapper: None,
                name: "StripEnumPrefix",
                values: &[
                    ("STRIP_ENUM_PREFIX_UNSPECIFIED", 0),
                    ("STRIP_ENUM_PREFIX_KEEP", 1),
                    ("STRIP_ENUM_PREFIX_GENERATE_BOTH", 2),
                    ("STRIP_ENUM_PREFIX_STRIP", 3),
                ],
            },
            Enumeration {
                wrapper: Some("OptimizeModeFeature"),
                name: "OptimizeMode",
                values: &[("OPTIMIZE_MODE_UNSPECIFIED", 0), ("SPEED", 1), ("CODE_SIZE", 2)],
            },
        ],
    },
];

/// The built-in file named `name`, if it is one of Google's language feature files.
pub(crate) fn file(name: &str) -> Option<FileDescriptorProto> {
    LANGUAGES.iter().find(|l| l.file == name).map(describe)
}

fn describe(language: &Language) -> FileDescriptorProto {
    let own = format!(".pb.{}", language.message);
    let mut message = DescriptorProto {
        name: Some(language.message.into()),
        ..Default::default()
    };
    for e in language.enums {
        let declared = EnumDescriptorProto {
            name: Some(e.name.into()),
            value: e
                .values
                .iter()
                .map(|(name, number)| EnumValueDescriptorProto {
                    name: Some((*name).into()),
                    number: Some(*number),
                    options: None,
                })
                .collect(),
            ..Default::default()
        };
        match e.wrapper {
            None => message.enum_type.push(declared),
            Some(wrapper) => message.nested_type.push(DescriptorProto {
                name: Some(wrapper.into()),
                enum_type: vec![declared],
                ..Default::default()
            }),
        }
    }
    for (name, number, value) in language.fields {
        let (ty, type_name) = match value {
            Value::Bool => (Type::Bool, None),
            Value::Enum(e) => (Type::Enum, Some(format!("{own}.{e}"))),
        };
        message.field.push(field(name, *number, ty, type_name, None));
    }
    FileDescriptorProto {
        name: Some(language.file.into()),
        package: Some("pb".into()),
        dependency: vec![super::descriptor::NAME.into()],
        message_type: vec![message],
        extension: vec![field(
            language.extension,
            language.number,
            Type::Message,
            Some(own),
            Some(".google.protobuf.FeatureSet".into()),
        )],
        syntax: Some("proto2".into()),
        ..Default::default()
    }
}

fn field(name: &str, number: i32, ty: Type, type_name: Option<String>, extendee: Option<String>) -> FieldDescriptorProto {
    FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(ty as i32),
        type_name,
        extendee,
        json_name: Some(crate::fingerprint::default_json_name(name)),
        ..Default::default()
    }
}
