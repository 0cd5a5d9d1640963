//! `google/protobuf/descriptor.proto` as the current protobuf release declares it for
//! editions: prost-reflect's built-in copy predates `EDITION_LEGACY` and `feature_support`,
//! which Google's own `cpp_features.proto`, `java_features.proto` and `go_features.proto`
//! use in their option values. The built-in copy is taken and the missing declarations
//! added (numbers as in protobuf's descriptor.proto), rather than shipping a second file.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto, FileDescriptorProto};

pub(crate) const NAME: &str = "google/protobuf/descriptor.proto";

/// Edition values added to `google.protobuf.Edition`.
const EDITIONS: [(&str, i32); 4] = [
    ("EDITION_LEGACY", 900),
    ("EDITION_2024", 1001),
    ("EDITION_UNSTABLE", 9999),
    ("EDITION_MAX", i32::MAX),
];

/// `FeatureSet`'s extension numbers for languages' features (end exclusive).
const LANGUAGE_FEATURES: std::ops::Range<i32> = 1000..9995;

pub(crate) fn descriptor_proto() -> FileDescriptorProto {
    let mut file = prost_reflect::DescriptorPool::global()
        .get_file_by_name(NAME)
        .map(|f| f.file_descriptor_proto().clone())
        .unwrap_or_default();
    if let Some(edition) = file.enum_type.iter_mut().find(|e| e.name() == "Edition") {
        for (name, number) in EDITIONS {
            if !edition.value.iter().any(|v| v.number() == number) {
                edition.value.push(EnumValueDescriptorProto {
                    name: Some(name.into()),
                    number: Some(number),
                    options: None,
                });
            }
        }
    }
    let message = |file: &mut FileDescriptorProto, name: &str| -> Option<usize> {
        file.message_type.iter().position(|m| m.name() == name)
    };
    if let Some(i) = message(&mut file, "FieldOptions") {
        if let Some(options) = file.message_type.get_mut(i) {
            if !options.nested_type.iter().any(|m| m.name() == "FeatureSupport") {
                options.nested_type.push(feature_support());
            }
            add_field(options, "feature_support", 22, ".google.protobuf.FieldOptions.FeatureSupport", Type::Message);
        }
    }
    if let Some(i) = message(&mut file, "FeatureSet") {
        if let Some(set) = file.message_type.get_mut(i) {
            // Language features (`pb.cpp` 1000, `pb.java` 1001, `pb.go` 1002, …): the built-in
            // copy declares only the first two numbers.
            set.extension_range.retain(|r| r.end() <= LANGUAGE_FEATURES.start || r.start() >= LANGUAGE_FEATURES.end);
            set.extension_range.push(prost_types::descriptor_proto::ExtensionRange {
                start: Some(LANGUAGE_FEATURES.start),
                end: Some(LANGUAGE_FEATURES.end),
                options: None,
            });
            set.extension_range.sort_by_key(|r| r.start());
        }
    }
    if let Some(i) = message(&mut file, "EnumValueOptions") {
        if let Some(options) = file.message_type.get_mut(i) {
            add_field(options, "feature_support", 4, ".google.protobuf.FieldOptions.FeatureSupport", Type::Message);
        }
    }
    file
}

/// `FieldOptions.FeatureSupport`: in which editions a feature (or feature value) exists.
fn feature_support() -> DescriptorProto {
    let mut m = DescriptorProto {
        name: Some("FeatureSupport".into()),
        ..Default::default()
    };
    add_field(&mut m, "edition_introduced", 1, ".google.protobuf.Edition", Type::Enum);
    add_field(&mut m, "edition_deprecated", 2, ".google.protobuf.Edition", Type::Enum);
    add_field(&mut m, "deprecation_warning", 3, "", Type::String);
    add_field(&mut m, "edition_removed", 4, ".google.protobuf.Edition", Type::Enum);
    add_field(&mut m, "removal_error", 5, "", Type::String);
    m
}

fn add_field(message: &mut DescriptorProto, name: &str, number: i32, type_name: &str, ty: Type) {
    if message.field.iter().any(|f| f.number() == number) {
        return;
    }
    message.field.push(FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(ty as i32),
        type_name: (!type_name.is_empty()).then(|| type_name.into()),
        json_name: Some(crate::fingerprint::default_json_name(name)),
        ..Default::default()
    });
}
