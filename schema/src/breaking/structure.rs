//! Rules on files, messages, enums and services (everything but field-by-field pairs).

use super::ranges::{self, Span};
use super::{Checker, Emit, Reader, Rule, Scope};
use crate::editions::Features;
use prost_reflect::{EnumDescriptor, MessageDescriptor};
use std::collections::{BTreeMap, BTreeSet};

// Source paths within descriptor.proto messages.
const FILE_PACKAGE: i32 = 2;
const METHOD_INPUT: i32 = 2;
const METHOD_OUTPUT: i32 = 3;
const METHOD_OPTIONS: i32 = 4;
const METHOD_OPTIONS_IDEMPOTENCY: i32 = 34;
const ENUM_VALUE_NUMBER: i32 = 2;
const ENUM_VALUE_NAME: i32 = 1;

/// The largest field number, and the largest enum number.
const MESSAGE_MAX: i64 = (1 << 29) - 1;
const ENUM_MAX: i64 = i32::MAX as i64;

pub(crate) fn check_files(c: &mut Checker<'_>) {
    let (old, new) = (c.old, c.new);
    for old_file in old.pool().file_descriptor_protos() {
        let Some(new_file) = new.pool().file_descriptor_protos().find(|f| f.name() == old_file.name()) else {
            continue;
        };
        if old_file.package() != new_file.package() {
            c.emit(Emit {
                rule: Rule::FileSamePackage,
                element: new_file.name().to_owned(),
                file: new_file.name(),
                path: &[FILE_PACKAGE],
                message: format!(
                    "File package changed from {:?} to {:?}.",
                    old_file.package(),
                    new_file.package()
                ),
                reader: Reader::Both,
                scope: Scope::All,
            });
        }
    }
}

/// Messages paired by full name (map entries included, as in buf).
fn message_pairs(c: &Checker<'_>) -> Vec<(MessageDescriptor, MessageDescriptor)> {
    c.old
        .pool()
        .all_messages()
        .filter_map(|old| c.new.pool().get_message_by_name(old.full_name()).map(|new| (old, new)))
        .collect()
}

pub(crate) fn check_messages(c: &mut Checker<'_>) {
    for (old, new) in message_pairs(c) {
        field_deletions(c, &old, &new);
        required_fields(c, &old, &new);
        reserved_message(c, &old, &new);
        if json_format_allowed(Features::of_message(&old)) && !json_format_allowed(Features::of_message(&new)) {
            c.emit(Emit {
                rule: Rule::MessageSameJsonFormat,
                element: new.full_name().to_owned(),
                file: new.parent_file().name(),
                path: new.path(),
                message: format!(
                    "Message {:?} JSON format support changed from ALLOW to LEGACY_BEST_EFFORT.",
                    new.name()
                ),
                reader: Reader::Both,
                scope: Scope::Type(new.full_name().to_owned()),
            });
        }
    }
}

/// The resolved `json_format` feature (`ALLOW` for proto3, `LEGACY_BEST_EFFORT` for proto2,
/// per feature in editions).
fn json_format_allowed(features: Features) -> bool {
    features.json_format == crate::editions::ALLOW
}

fn field_deletions(c: &mut Checker<'_>, old: &MessageDescriptor, new: &MessageDescriptor) {
    let reserved: Vec<Span> = new
        .reserved_ranges()
        .map(|r| (i64::from(r.start), i64::from(r.end) - 1))
        .collect();
    let reserved_names: BTreeSet<&str> = new.reserved_names().collect();
    for field in old.fields() {
        if new.get_field(field.number()).is_some() {
            continue;
        }
        let number = i64::from(field.number());
        let description = format!(
            "Previously present field \"{}\" with name {:?} on message {:?} was deleted",
            field.number(),
            field.name(),
            old.name()
        );
        let element = field.full_name().to_owned();
        if !reserved.iter().any(|&(s, e)| s <= number && number <= e) {
            c.emit(Emit {
                rule: Rule::FieldNoDeleteUnlessNumberReserved,
                element: element.clone(),
                file: new.parent_file().name(),
                path: new.path(),
                message: format!("{description} without reserving the number \"{}\".", field.number()),
                reader: Reader::Both,
                scope: Scope::Type(new.full_name().to_owned()),
            });
        }
        if !reserved_names.contains(field.name()) {
            c.emit(Emit {
                rule: Rule::FieldNoDeleteUnlessNameReserved,
                element,
                file: new.parent_file().name(),
                path: new.path(),
                message: format!("{description} without reserving the name {:?}.", field.name()),
                reader: Reader::Both,
                scope: Scope::Type(new.full_name().to_owned()),
            });
        }
    }
}

/// Fields with the `required` label. As in buf, which reads the label as written, an
/// editions field with `LEGACY_REQUIRED` presence (label `optional`) is not one of them.
fn required_numbers(message: &MessageDescriptor) -> BTreeMap<u32, prost_reflect::FieldDescriptor> {
    let editions = crate::editions::is_editions_file(&message.parent_file());
    message
        .fields()
        .filter(|f| !editions && f.field_descriptor_proto().label() == prost_types::field_descriptor_proto::Label::Required)
        .map(|f| (f.number(), f))
        .collect()
}

fn required_fields(c: &mut Checker<'_>, old: &MessageDescriptor, new: &MessageDescriptor) {
    let (before, after) = (required_numbers(old), required_numbers(new));
    for number in before.keys().filter(|n| !after.contains_key(n)) {
        c.emit(Emit {
            rule: Rule::MessageSameRequiredFields,
            element: new.full_name().to_owned(),
            file: new.parent_file().name(),
            path: new.path(),
            message: format!(
                "Message {:?} had required field \"{number}\" deleted. Required fields must always be sent, \
                 so if one side does not know about the required field, this will result in a breakage.",
                old.name()
            ),
            // Old readers insist on the field that new writers no longer send.
            reader: Reader::Old,
            scope: Scope::Type(new.full_name().to_owned()),
        });
    }
    for (number, field) in after.iter().filter(|(n, _)| !before.contains_key(n)) {
        c.emit(Emit {
            rule: Rule::MessageSameRequiredFields,
            element: field.full_name().to_owned(),
            file: new.parent_file().name(),
            path: field.path(),
            message: format!(
                "Message {:?} had required field \"{number}\" added. Required fields must always be sent, \
                 so if one side does not know about the required field, this will result in a breakage.",
                new.name()
            ),
            // New readers insist on a field that old writers never send.
            reader: Reader::New,
            scope: Scope::Type(new.full_name().to_owned()),
        });
    }
}

fn reserved_message(c: &mut Checker<'_>, old: &MessageDescriptor, new: &MessageDescriptor) {
    // Field ranges are end-exclusive in descriptors; spans are inclusive.
    let to_span = |r: std::ops::Range<u32>| (i64::from(r.start), i64::from(r.end) - 1);
    let lost = Reserved::lost(
        Reserved { spans: old.reserved_ranges().map(to_span).collect(), names: old.reserved_names().collect() },
        Reserved { spans: new.reserved_ranges().map(to_span).collect(), names: new.reserved_names().collect() },
        ("message", new.name(), MESSAGE_MAX),
    );
    for message in lost {
        c.emit(Emit {
            rule: Rule::ReservedMessageNoDelete,
            element: new.full_name().to_owned(),
            file: new.parent_file().name(),
            path: new.path(),
            message,
            reader: Reader::Both,
            scope: Scope::Type(new.full_name().to_owned()),
        });
    }
}

/// What a message or enum reserves: number spans (inclusive) and names.
struct Reserved<'a> {
    spans: Vec<Span>,
    /// In declaration order, so findings come out in the order buf reports them.
    names: Vec<&'a str>,
}

impl Reserved<'_> {
    /// One finding per reservation of `old` that `new` dropped, worded as buf words it.
    /// `owner` is the element's kind ("message" or "enum"), its name and its largest number.
    fn lost(old: Self, new: Self, (kind, name, max): (&str, &str, i64)) -> Vec<String> {
        let have = ranges::collapse(new.spans);
        let numbers = old.spans.into_iter().filter_map(|span| {
            let gone = ranges::missing(span, &have);
            (!gone.is_empty()).then(|| {
                format!(
                    "Previously present reserved range {:?} on {kind} {name:?} is missing values: {} were removed.",
                    ranges::describe(span, max),
                    gone.iter().map(|&g| ranges::describe(g, max)).collect::<Vec<_>>().join(", ")
                )
            })
        });
        let names = old
            .names
            .iter()
            .filter(|n| !new.names.contains(n))
            .map(|n| format!("Previously present reserved name {n:?} on {kind} {name:?} was deleted."));
        numbers.chain(names).collect()
    }
}

pub(crate) fn check_enums(c: &mut Checker<'_>) {
    let pairs: Vec<(EnumDescriptor, EnumDescriptor)> = c
        .old
        .pool()
        .all_enums()
        .filter_map(|old| c.new.pool().get_enum_by_name(old.full_name()).map(|new| (old, new)))
        .collect();
    for (old, new) in pairs {
        enum_values(c, &old, &new);
        reserved_enum(c, &old, &new);
        if json_format_allowed(Features::of_enum(&old)) && !json_format_allowed(Features::of_enum(&new)) {
            c.emit(Emit {
                rule: Rule::EnumSameJsonFormat,
                element: new.full_name().to_owned(),
                file: new.parent_file().name(),
                path: new.path(),
                message: format!(
                    "Enum {:?} JSON format support changed from ALLOW to LEGACY_BEST_EFFORT.",
                    new.name()
                ),
                reader: Reader::Both,
                scope: Scope::Type(new.full_name().to_owned()),
            });
        }
    }
}

/// Enum value names per number (aliases give several).
fn names_by_number(e: &EnumDescriptor) -> BTreeMap<i32, BTreeSet<String>> {
    let mut out: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
    for v in e.values() {
        out.entry(v.number()).or_default().insert(v.name().to_owned());
    }
    out
}

fn enum_values(c: &mut Checker<'_>, old: &EnumDescriptor, new: &EnumDescriptor) {
    let (before, after) = (names_by_number(old), names_by_number(new));
    let reserved: Vec<Span> = new
        .reserved_ranges()
        .map(|r| (i64::from(*r.start()), i64::from(*r.end())))
        .collect();
    let reserved_names: BTreeSet<&str> = new.reserved_names().collect();
    let scope = Scope::Type(new.full_name().to_owned());
    for (number, old_names) in &before {
        let element = format!("{}.{}", old.full_name(), old_names.iter().next().map(String::as_str).unwrap_or(""));
        let Some(new_names) = after.get(number) else {
            let n = i64::from(*number);
            if !reserved.iter().any(|&(s, e)| s <= n && n <= e) {
                c.emit(Emit {
                    rule: Rule::EnumValueNoDeleteUnlessNumberReserved,
                    element: element.clone(),
                    file: new.parent_file().name(),
                    path: new.path(),
                    message: format!(
                        "Previously present enum value \"{number}\" on enum {:?} was deleted without reserving the number \"{number}\".",
                        new.name()
                    ),
                    reader: Reader::Both,
                    scope: scope.clone(),
                });
            }
            if !old_names.iter().all(|n| reserved_names.contains(n.as_str())) {
                c.emit(Emit {
                    rule: Rule::EnumValueNoDeleteUnlessNameReserved,
                    element,
                    file: new.parent_file().name(),
                    path: new.path(),
                    message: format!(
                        "Previously present enum value \"{number}\" on enum {:?} was deleted without reserving the name{} {}.",
                        new.name(),
                        if old_names.len() > 1 { "s" } else { "" },
                        quoted(old_names)
                    ),
                    reader: Reader::Both,
                    scope: scope.clone(),
                });
            }
            continue;
        };
        // Adding aliases is fine; every old name must still be there.
        if !old_names.is_subset(new_names) {
            let rule = if c.enabled(Rule::EnumValueSameName) {
                Rule::EnumValueSameName
            } else {
                Rule::EnumValueJsonNameChanged
            };
            let message = if rule.is_warning() {
                format!(
                    "Enum value \"{number}\" on enum {:?} changed name from {} to {}: binary readers are unaffected, \
                     but JSON and text readers of either side cannot parse the other's name.",
                    new.name(),
                    quoted(old_names),
                    quoted(new_names)
                )
            } else {
                format!(
                    "Enum value \"{number}\" on enum {:?} changed name{} from {} to {}.",
                    new.name(),
                    if old_names.len() > 1 && new_names.len() > 1 { "s" } else { "" },
                    quoted(old_names),
                    quoted(new_names)
                )
            };
            // One finding per name the number now has, at that name's value (as buf).
            for value in new.values().filter(|v| v.number() == *number) {
                let part = if rule.is_warning() { ENUM_VALUE_NAME } else { ENUM_VALUE_NUMBER };
                let path = [value.path(), &[part]].concat();
                c.emit(Emit {
                    rule,
                    element: format!("{}.{}", new.full_name(), value.name()),
                    file: new.parent_file().name(),
                    path: &path,
                    message: message.clone(),
                    reader: Reader::Both,
                    scope: scope.clone(),
                });
            }
        }
    }
}

fn quoted(names: &BTreeSet<String>) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

fn reserved_enum(c: &mut Checker<'_>, old: &EnumDescriptor, new: &EnumDescriptor) {
    let to_span = |r: std::ops::RangeInclusive<i32>| (i64::from(*r.start()), i64::from(*r.end()));
    let lost = Reserved::lost(
        Reserved { spans: old.reserved_ranges().map(to_span).collect(), names: old.reserved_names().collect() },
        Reserved { spans: new.reserved_ranges().map(to_span).collect(), names: new.reserved_names().collect() },
        ("enum", new.name(), ENUM_MAX),
    );
    for message in lost {
        c.emit(Emit {
            rule: Rule::ReservedEnumNoDelete,
            element: new.full_name().to_owned(),
            file: new.parent_file().name(),
            path: new.path(),
            message,
            reader: Reader::Both,
            scope: Scope::Type(new.full_name().to_owned()),
        });
    }
}

const IDEMPOTENCY_LEVELS: [&str; 3] = ["IDEMPOTENCY_UNKNOWN", "NO_SIDE_EFFECTS", "IDEMPOTENT"];

pub(crate) fn check_services(c: &mut Checker<'_>) {
    let pairs: Vec<_> = c
        .old
        .pool()
        .services()
        .filter_map(|old| c.new.pool().get_service_by_name(old.full_name()).map(|new| (old, new)))
        .collect();
    for (old_service, new_service) in pairs {
        for old in old_service.methods() {
            let Some(new) = new_service.methods().find(|m| m.name() == old.name()) else {
                continue;
            };
            let file = new.parent_file();
            let file = file.name();
            let rpc = format!("RPC {:?} on service {:?}", new.name(), new_service.name());
            let element = new.full_name().to_owned();
            let emit = |c: &mut Checker<'_>, rule, sub: &[i32], message: String, scope: Scope| {
                let path = [new.path(), sub].concat();
                c.emit(Emit {
                    rule,
                    element: element.clone(),
                    file,
                    path: &path,
                    message,
                    reader: Reader::Both,
                    scope,
                });
            };
            if old.input().full_name() != new.input().full_name() {
                let message = format!(
                    "{rpc} changed request type from {:?} to {:?}.",
                    old.input().full_name(),
                    new.input().full_name()
                );
                emit(c, Rule::RpcSameRequestType, &[METHOD_INPUT], message, Scope::Requests);
            }
            if old.output().full_name() != new.output().full_name() {
                let message = format!(
                    "{rpc} changed response type from {:?} to {:?}.",
                    old.output().full_name(),
                    new.output().full_name()
                );
                emit(c, Rule::RpcSameResponseType, &[METHOD_OUTPUT], message, Scope::Responses);
            }
            let shape = |streaming: bool| if streaming { "streaming" } else { "unary" };
            if old.is_client_streaming() != new.is_client_streaming() {
                let message = format!(
                    "{rpc} changed from client {} to client {}.",
                    shape(old.is_client_streaming()),
                    shape(new.is_client_streaming())
                );
                emit(c, Rule::RpcSameClientStreaming, &[], message, Scope::All);
            }
            if old.is_server_streaming() != new.is_server_streaming() {
                let message = format!(
                    "{rpc} changed from server {} to server {}.",
                    shape(old.is_server_streaming()),
                    shape(new.is_server_streaming())
                );
                emit(c, Rule::RpcSameServerStreaming, &[], message, Scope::All);
            }
            let level = |m: &prost_reflect::MethodDescriptor| {
                m.method_descriptor_proto()
                    .options
                    .as_ref()
                    .and_then(|o| o.idempotency_level)
                    .unwrap_or(0)
            };
            let (before, after) = (level(&old), level(&new));
            if before != after {
                let name = |l: i32| IDEMPOTENCY_LEVELS.get(l as usize).copied().unwrap_or("UNKNOWN");
                let message = format!(
                    "{rpc} changed option \"idempotency_level\" from {:?} to {:?}.",
                    name(before),
                    name(after)
                );
                emit(c, Rule::RpcSameIdempotencyLevel, &[METHOD_OPTIONS, METHOD_OPTIONS_IDEMPOTENCY], message, Scope::All);
            }
        }
    }
}
