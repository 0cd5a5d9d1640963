//! Editions descriptors to proto2 and back, at the wire level (prost-types 0.14 has no
//! `FeatureSet` and would drop every `features` option on decode).

use super::features::{number as feature, Features};
use super::{Edition, DELIMITED, IMPLICIT, LEGACY_REQUIRED};
use crate::wire::{self, RawField, WireType};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

const SET_FILE: u32 = 1;
const FILE_NAME: u32 = 1;
const FILE_PACKAGE: u32 = 2;
const FILE_MESSAGE: u32 = 4;
const FILE_ENUM: u32 = 5;
const FILE_EXTENSION: u32 = 7;
const FILE_OPTIONS: u32 = 8;
const FILE_SOURCE_INFO: u32 = 9;
const FILE_SYNTAX: u32 = 12;
const FILE_EDITION: u32 = 14;
const FILE_OPTIONS_FEATURES: u32 = 50;
const MESSAGE_NAME: u32 = 1;
const MESSAGE_FIELD: u32 = 2;
const MESSAGE_NESTED: u32 = 3;
const MESSAGE_ENUM: u32 = 4;
const MESSAGE_EXTENSION: u32 = 6;
const MESSAGE_OPTIONS: u32 = 7;
const MESSAGE_ONEOF: u32 = 8;
const MESSAGE_OPTIONS_MAP_ENTRY: u32 = 7;
const MESSAGE_OPTIONS_FEATURES: u32 = 12;
const ONEOF_OPTIONS: u32 = 2;
const ONEOF_OPTIONS_FEATURES: u32 = 1;
const FIELD_LABEL: u32 = 4;
const FIELD_TYPE: u32 = 5;
const FIELD_TYPE_NAME: u32 = 6;
const FIELD_DEFAULT: u32 = 7;
const FIELD_OPTIONS: u32 = 8;
const FIELD_ONEOF_INDEX: u32 = 9;
const FIELD_OPTIONS_PACKED: u32 = 2;
const FIELD_OPTIONS_FEATURES: u32 = 21;
const ENUM_VALUE: u32 = 2;
const ENUM_OPTIONS: u32 = 3;
const ENUM_OPTIONS_FEATURES: u32 = 7;
const ENUM_VALUE_NUMBER: u32 = 2;
const SOURCE_LOCATION: u32 = 1;
const LOCATION_PATH: u32 = 1;
const LOCATION_SPAN: u32 = 2;

const LABEL_OPTIONAL: u64 = 1;
const LABEL_REQUIRED: u64 = 2;
const LABEL_REPEATED: u64 = 3;
const TYPE_STRING: u64 = 9;
const TYPE_GROUP: u64 = 10;
const TYPE_MESSAGE: u64 = 11;
const TYPE_BYTES: u64 = 12;

/// An editions file that does not hold together, with where when the set has source info.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoweringError {
    pub file: String,
    /// 1-based line and column.
    pub position: Option<(u32, u32)>,
    pub message: String,
}

impl fmt::Display for LoweringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for LoweringError {}

/// A descriptor set the pool accepts, and the edition of each file that had one.
pub(crate) struct Lowered<'a> {
    pub(crate) bytes: Cow<'a, [u8]>,
    pub(crate) editions: BTreeMap<String, Edition>,
}

/// Lowers every editions file of an encoded `FileDescriptorSet`; a set without any is
/// returned as it is.
pub(crate) fn lower_set(encoded: &[u8]) -> Result<Lowered<'_>, LoweringError> {
    let Ok(set) = wire::fields(encoded) else {
        // Malformed: the pool reports it.
        return Ok(Lowered { bytes: Cow::Borrowed(encoded), editions: BTreeMap::new() });
    };
    for field in set.iter().filter(|f| f.number == SET_FILE) {
        check_syntax(field.value)?;
    }
    if !set.iter().any(|f| f.number == SET_FILE && is_editions(f.value)) {
        return Ok(Lowered { bytes: Cow::Borrowed(encoded), editions: BTreeMap::new() });
    }
    let mut out = Vec::with_capacity(encoded.len() + 64);
    let mut editions = BTreeMap::new();
    for field in &set {
        if field.number == SET_FILE && is_editions(field.value) {
            let (file, name, edition) = lower_file(field.value)?;
            editions.insert(name, edition);
            wire::write_len_field(&mut out, SET_FILE, &file);
        } else {
            out.extend_from_slice(field.whole);
        }
    }
    Ok(Lowered { bytes: Cow::Owned(out), editions })
}

/// Lowers one encoded `FileDescriptorProto` if it is an editions file.
#[cfg(feature = "runtime")]
pub(crate) fn lower_file_bytes(file: &[u8]) -> Result<Option<(Vec<u8>, Edition)>, LoweringError> {
    check_syntax(file)?;
    if !is_editions(file) {
        return Ok(None);
    }
    lower_file(file).map(|(bytes, _, edition)| Some((bytes, edition)))
}

/// Undoes [`lower_set`] for the files named in `editions`.
pub(crate) fn raise_set(encoded: &[u8], editions: &BTreeMap<String, Edition>) -> Vec<u8> {
    if editions.is_empty() {
        return encoded.to_vec();
    }
    map_files(encoded, |name, file| editions.get(name).map(|edition| raise_file(file, *edition)))
}

/// Refuses a file whose `syntax` is none of proto2 (or absent), proto3 and editions. Such a
/// file must not reach a `DescriptorPool`: prost-reflect 0.16 panics building the error for
/// it (its label indexes the file before the file is added).
fn check_syntax(file: &[u8]) -> Result<(), LoweringError> {
    match string_field(file, FILE_SYNTAX).as_deref() {
        None | Some("proto2" | "proto3" | "editions") => Ok(()),
        Some(other) => Err(LoweringError {
            file: string_field(file, FILE_NAME).unwrap_or_default(),
            position: None,
            message: format!("unknown syntax {other:?}: expected \"proto2\", \"proto3\" or \"editions\""),
        }),
    }
}

fn is_editions(file: &[u8]) -> bool {
    string_field(file, FILE_SYNTAX).as_deref() == Some("editions")
}

fn string_field(message: &[u8], number: u32) -> Option<String> {
    wire::last_str(&wire::fields(message).ok()?, number).map(str::to_owned)
}

fn varint_field(message: &[u8], number: u32) -> Option<u64> {
    wire::last_varint(&wire::fields(message).ok()?, number)
}

fn write_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    wire::write_varint(out, u64::from(number) << 3);
    wire::write_varint(out, value);
}

/// The features written in an options message's `features` field, by number.
fn explicit_features(options: Option<&[u8]>, features_field: u32) -> BTreeMap<u32, i32> {
    let mut out = BTreeMap::new();
    let Some(options) = options else { return out };
    let Ok(fields) = wire::fields(options) else { return out };
    for set in fields.iter().filter(|f| f.number == features_field && f.wire_type == WireType::Len) {
        let Ok(values) = wire::fields(set.value) else { continue };
        for v in values.iter().filter(|v| v.wire_type == WireType::Varint) {
            if let Ok(value) = wire::read_varint(v.value, &mut 0) {
                out.insert(v.number, value as i32);
            }
        }
    }
    out
}

fn refine(mut features: Features, explicit: &BTreeMap<u32, i32>) -> Features {
    for (number, value) in explicit {
        features.set(*number, *value);
    }
    features
}

/// What lowering one file needs to know as it walks down.
struct FileWalk<'a> {
    name: String,
    sources: Sources<'a>,
    map_entries: BTreeSet<String>,
}

impl FileWalk<'_> {
    fn error(&self, path: &[i32], message: impl Into<String>) -> LoweringError {
        LoweringError {
            file: self.name.clone(),
            position: self.sources.find(path),
            message: message.into(),
        }
    }
}

fn lower_file(file: &[u8]) -> Result<(Vec<u8>, String, Edition), LoweringError> {
    let fields = wire::fields(file).map_err(|e| LoweringError {
        file: String::new(),
        position: None,
        message: format!("malformed FileDescriptorProto: {e:?}"),
    })?;
    let name = wire::last_str(&fields, FILE_NAME).unwrap_or_default().to_owned();
    let number = wire::last_varint(&fields, FILE_EDITION).map(|n| n as i32);
    let walk = FileWalk {
        name: name.clone(),
        sources: Sources::new(fields.iter().find(|f| f.number == FILE_SOURCE_INFO).map(|f| f.value)),
        map_entries: map_entries(file),
    };
    let edition = match number.and_then(Edition::from_number) {
        Some(e) => e,
        None => {
            return Err(walk.error(
                &[FILE_EDITION as i32],
                format!(
                    "{} is not supported (supported: edition {})",
                    number.map_or_else(|| "a file without an edition".into(), super::edition_number_name),
                    super::SUPPORTED
                ),
            ))
        }
    };
    let options = fields.iter().rev().find(|f| f.number == FILE_OPTIONS).map(|f| f.value);
    let file_features = refine(edition.defaults(), &explicit_features(options, FILE_OPTIONS_FEATURES));
    let mut out = Vec::with_capacity(file.len() + 32);
    let (mut message_index, mut enum_index, mut extension_index) = (0, 0, 0);
    for field in &fields {
        match field.number {
            FILE_SYNTAX => wire::write_len_field(&mut out, FILE_SYNTAX, b"proto2"),
            FILE_EDITION | FILE_OPTIONS => {}
            FILE_MESSAGE => {
                let path = [FILE_MESSAGE as i32, message_index];
                message_index += 1;
                let message = lower_message(&walk, field.value, file_features, &path)?;
                wire::write_len_field(&mut out, FILE_MESSAGE, &message);
            }
            FILE_ENUM => {
                check_enum(&walk, field.value, file_features, &[FILE_ENUM as i32, enum_index])?;
                enum_index += 1;
                out.extend_from_slice(field.whole);
            }
            FILE_EXTENSION => {
                let path = [FILE_EXTENSION as i32, extension_index];
                extension_index += 1;
                let ext = lower_field(&walk, field.value, file_features, false, true, &path)?;
                wire::write_len_field(&mut out, FILE_EXTENSION, &ext);
            }
            _ => out.extend_from_slice(field.whole),
        }
    }
    wire::write_len_field(&mut out, FILE_OPTIONS, &with_features(options, FILE_OPTIONS_FEATURES, file_features));
    Ok((out, name, edition))
}

/// `options` with its `features` replaced by all of `features`, written in full so that
/// the lowered file resolves without knowing its edition.
fn with_features(options: Option<&[u8]>, features_field: u32, features: Features) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(Ok(fields)) = options.map(wire::fields) {
        for f in fields.iter().filter(|f| f.number != features_field) {
            out.extend_from_slice(f.whole);
        }
    }
    let mut set = Vec::new();
    // Language features (`features.(pb.cpp)…`) and any other field stay as written.
    if let Some(Ok(fields)) = options.map(wire::fields) {
        for written in fields.iter().filter(|f| f.number == features_field && f.wire_type == WireType::Len) {
            if let Ok(inner) = wire::fields(written.value) {
                for f in inner.iter().filter(|f| !Features::NUMBERS.contains(&f.number)) {
                    set.extend_from_slice(f.whole);
                }
            }
        }
    }
    for number in Features::NUMBERS {
        if let Some(value) = features.get(number) {
            write_varint_field(&mut set, number, value as u64);
        }
    }
    wire::write_len_field(&mut out, features_field, &set);
    out
}

/// Message nesting beyond which a descriptor is refused (prost's own decoding limit): the
/// walk recurses, and hostile input must not exhaust the stack.
const MAX_DEPTH: usize = 100;

fn lower_message(walk: &FileWalk<'_>, message: &[u8], outer: Features, path: &[i32]) -> Result<Vec<u8>, LoweringError> {
    if path.len() / 2 > MAX_DEPTH {
        return Err(walk.error(&[], format!("messages nest more than {MAX_DEPTH} deep")));
    }
    let fields = wire::fields(message).map_err(|e| walk.error(path, format!("malformed DescriptorProto: {e:?}")))?;
    let options = fields.iter().rev().find(|f| f.number == MESSAGE_OPTIONS).map(|f| f.value);
    let features = refine(outer, &explicit_features(options, MESSAGE_OPTIONS_FEATURES));
    let oneofs: Vec<Features> = fields
        .iter()
        .filter(|f| f.number == MESSAGE_ONEOF)
        .map(|o| {
            let options = wire::fields(o.value)
                .ok()
                .and_then(|of| of.iter().rev().find(|f| f.number == ONEOF_OPTIONS).map(|f| f.value.to_vec()));
            refine(features, &explicit_features(options.as_deref(), ONEOF_OPTIONS_FEATURES))
        })
        .collect();
    let mut out = Vec::with_capacity(message.len() + 16);
    let (mut field_index, mut nested_index, mut enum_index, mut extension_index) = (0, 0, 0, 0);
    for field in &fields {
        let child = |number: u32, index: i32| -> Vec<i32> { path.iter().copied().chain([number as i32, index]).collect() };
        match field.number {
            MESSAGE_FIELD => {
                let p = child(MESSAGE_FIELD, field_index);
                field_index += 1;
                let oneof = varint_field(field.value, FIELD_ONEOF_INDEX)
                    .and_then(|i| oneofs.get(i as usize).copied());
                let lowered = lower_field(walk, field.value, oneof.unwrap_or(features), oneof.is_some(), false, &p)?;
                wire::write_len_field(&mut out, MESSAGE_FIELD, &lowered);
            }
            MESSAGE_EXTENSION => {
                let p = child(MESSAGE_EXTENSION, extension_index);
                extension_index += 1;
                let lowered = lower_field(walk, field.value, features, false, true, &p)?;
                wire::write_len_field(&mut out, MESSAGE_EXTENSION, &lowered);
            }
            MESSAGE_NESTED => {
                let p = child(MESSAGE_NESTED, nested_index);
                nested_index += 1;
                let lowered = lower_message(walk, field.value, features, &p)?;
                wire::write_len_field(&mut out, MESSAGE_NESTED, &lowered);
            }
            MESSAGE_ENUM => {
                check_enum(walk, field.value, features, &child(MESSAGE_ENUM, enum_index))?;
                enum_index += 1;
                out.extend_from_slice(field.whole);
            }
            _ => out.extend_from_slice(field.whole),
        }
    }
    Ok(out)
}

/// Lowers one field: `LEGACY_REQUIRED` to `required`, `DELIMITED` message fields to groups;
/// refuses feature settings that contradict the field (as protoc does).
fn lower_field(
    walk: &FileWalk<'_>,
    field: &[u8],
    outer: Features,
    in_oneof: bool,
    extension: bool,
    path: &[i32],
) -> Result<Vec<u8>, LoweringError> {
    let fields = wire::fields(field).map_err(|e| walk.error(path, format!("malformed FieldDescriptorProto: {e:?}")))?;
    let options = fields.iter().rev().find(|f| f.number == FIELD_OPTIONS).map(|f| f.value);
    let explicit = explicit_features(options, FIELD_OPTIONS_FEATURES);
    let features = refine(outer, &explicit);
    let label = wire::last_varint(&fields, FIELD_LABEL).unwrap_or(LABEL_OPTIONAL);
    let ty = wire::last_varint(&fields, FIELD_TYPE).unwrap_or(0);
    let type_name = wire::last_str(&fields, FIELD_TYPE_NAME).unwrap_or_default();
    let is_map = ty == TYPE_MESSAGE && walk.map_entries.contains(type_name);
    let is_message = ty == TYPE_MESSAGE || ty == TYPE_GROUP;
    let repeated = label == LABEL_REPEATED;
    let options_path = |number: u32| -> Vec<i32> {
        path.iter().copied().chain([FIELD_OPTIONS as i32, FIELD_OPTIONS_FEATURES as i32, number as i32]).collect()
    };
    let contradiction = |number: u32, message: &str| Err(walk.error(&options_path(number), message.to_owned()));
    if explicit.contains_key(&feature::FIELD_PRESENCE) {
        if repeated {
            return contradiction(feature::FIELD_PRESENCE, "repeated fields can't specify field presence");
        }
        if in_oneof {
            return contradiction(feature::FIELD_PRESENCE, "oneof fields can't specify field presence");
        }
        if extension && features.field_presence != super::EXPLICIT {
            return contradiction(feature::FIELD_PRESENCE, "extensions can't specify field presence other than EXPLICIT");
        }
    }
    if !repeated && !in_oneof && !extension {
        if explicit.get(&feature::FIELD_PRESENCE) == Some(&IMPLICIT) && is_message {
            return contradiction(feature::FIELD_PRESENCE, "message fields can't specify implicit presence");
        }
        if features.field_presence == IMPLICIT && wire::last_str(&fields, FIELD_DEFAULT).is_some() {
            return Err(walk.error(
                &path.iter().copied().chain([FIELD_DEFAULT as i32]).collect::<Vec<_>>(),
                "implicit presence fields can't specify defaults",
            ));
        }
    }
    if explicit.contains_key(&feature::MESSAGE_ENCODING) && (!is_message || is_map) {
        return contradiction(feature::MESSAGE_ENCODING, "only message fields (not maps) can specify message encoding");
    }
    if explicit.contains_key(&feature::UTF8_VALIDATION) && !(ty == TYPE_STRING || is_map) {
        return contradiction(feature::UTF8_VALIDATION, "only string fields can specify utf8 validation");
    }
    if explicit.contains_key(&feature::REPEATED_FIELD_ENCODING)
        && (!repeated || is_message || ty == TYPE_STRING || ty == TYPE_BYTES)
    {
        return contradiction(
            feature::REPEATED_FIELD_ENCODING,
            "only repeated primitive fields can specify repeated field encoding",
        );
    }
    if explicit.contains_key(&feature::ENUM_TYPE) || explicit.contains_key(&feature::JSON_FORMAT) {
        let number = if explicit.contains_key(&feature::ENUM_TYPE) { feature::ENUM_TYPE } else { feature::JSON_FORMAT };
        return contradiction(number, "this feature applies to enums and messages, not to fields");
    }
    if options.and_then(|o| varint_field(o, FIELD_OPTIONS_PACKED)).is_some() {
        return Err(walk.error(
            &path.iter().copied().chain([FIELD_OPTIONS as i32, FIELD_OPTIONS_PACKED as i32]).collect::<Vec<_>>(),
            "field option packed is not allowed under editions; use features.repeated_field_encoding",
        ));
    }
    let required = features.field_presence == LEGACY_REQUIRED && !repeated;
    let delimited = features.message_encoding == DELIMITED && ty == TYPE_MESSAGE && !is_map;
    let mut out = Vec::with_capacity(field.len());
    for f in &fields {
        match f.number {
            FIELD_LABEL if required && label == LABEL_OPTIONAL => write_varint_field(&mut out, FIELD_LABEL, LABEL_REQUIRED),
            FIELD_TYPE if delimited => write_varint_field(&mut out, FIELD_TYPE, TYPE_GROUP),
            _ => out.extend_from_slice(f.whole),
        }
    }
    Ok(out)
}

/// Open enums need a first value of zero (it is their default).
fn check_enum(walk: &FileWalk<'_>, e: &[u8], outer: Features, path: &[i32]) -> Result<(), LoweringError> {
    let fields = wire::fields(e).map_err(|err| walk.error(path, format!("malformed EnumDescriptorProto: {err:?}")))?;
    let options = fields.iter().rev().find(|f| f.number == ENUM_OPTIONS).map(|f| f.value);
    let features = refine(outer, &explicit_features(options, ENUM_OPTIONS_FEATURES));
    if features.enum_type != super::CLOSED {
        if let Some(first) = fields.iter().find(|f| f.number == ENUM_VALUE) {
            if varint_field(first.value, ENUM_VALUE_NUMBER).unwrap_or(0) != 0 {
                let at: Vec<i32> = path.iter().copied().chain([ENUM_VALUE as i32, 0, ENUM_VALUE_NUMBER as i32]).collect();
                return Err(walk.error(&at, "the first value of an open enum must be zero"));
            }
        }
    }
    Ok(())
}

fn raise_file(file: &[u8], edition: Edition) -> Vec<u8> {
    let Ok(fields) = wire::fields(file) else { return file.to_vec() };
    let mut out = Vec::with_capacity(file.len() + 8);
    for field in &fields {
        match field.number {
            FILE_SYNTAX => {}
            FILE_MESSAGE => wire::write_len_field(&mut out, FILE_MESSAGE, &raise_message(field.value)),
            FILE_EXTENSION => wire::write_len_field(&mut out, FILE_EXTENSION, &raise_field(field.value)),
            _ => out.extend_from_slice(field.whole),
        }
    }
    wire::write_len_field(&mut out, FILE_SYNTAX, b"editions");
    write_varint_field(&mut out, FILE_EDITION, edition.number() as u64);
    out
}

fn raise_message(message: &[u8]) -> Vec<u8> {
    // Raised sets come from a pool, whose decoding already bounds nesting.
    rewrite(message, &|number, value| match number {
        MESSAGE_FIELD | MESSAGE_EXTENSION => Some(raise_field(value)),
        MESSAGE_NESTED => Some(raise_message(value)),
        _ => None,
    })
}

/// In an editions file every `required` came from `LEGACY_REQUIRED` and every group from
/// `DELIMITED`, both still written in the field's features.
fn raise_field(field: &[u8]) -> Vec<u8> {
    let Ok(fields) = wire::fields(field) else { return field.to_vec() };
    let mut out = Vec::with_capacity(field.len());
    for f in &fields {
        let value = wire::read_varint(f.value, &mut 0).ok();
        match (f.number, f.wire_type, value) {
            (FIELD_LABEL, WireType::Varint, Some(LABEL_REQUIRED)) => write_varint_field(&mut out, FIELD_LABEL, LABEL_OPTIONAL),
            (FIELD_TYPE, WireType::Varint, Some(TYPE_GROUP)) => write_varint_field(&mut out, FIELD_TYPE, TYPE_MESSAGE),
            _ => out.extend_from_slice(f.whole),
        }
    }
    out
}

/// Full names (`.pkg.Outer.XEntry`) of the map entry messages a file declares.
fn map_entries(file: &[u8]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let package = string_field(file, FILE_PACKAGE).unwrap_or_default();
    let scope = if package.is_empty() { String::new() } else { format!(".{package}") };
    if let Ok(fields) = wire::fields(file) {
        for m in fields.iter().filter(|f| f.number == FILE_MESSAGE) {
            collect_map_entries(m.value, &scope, &mut out, 0);
        }
    }
    out
}

fn collect_map_entries(message: &[u8], scope: &str, out: &mut BTreeSet<String>, depth: usize) {
    if depth > MAX_DEPTH {
        return; // refused by `lower_message`
    }
    let name = format!("{scope}.{}", string_field(message, MESSAGE_NAME).unwrap_or_default());
    let Ok(fields) = wire::fields(message) else { return };
    let is_entry = fields
        .iter()
        .filter(|f| f.number == MESSAGE_OPTIONS)
        .any(|o| varint_field(o.value, MESSAGE_OPTIONS_MAP_ENTRY) == Some(1));
    if is_entry {
        out.insert(name.clone());
    }
    for nested in fields.iter().filter(|f| f.number == MESSAGE_NESTED) {
        collect_map_entries(nested.value, &name, out, depth + 1);
    }
}

/// Source positions by path, read from the file's raw `source_code_info`.
struct Sources<'a> {
    locations: Vec<RawField<'a>>,
}

impl<'a> Sources<'a> {
    fn new(info: Option<&'a [u8]>) -> Self {
        let locations = info
            .and_then(|i| wire::fields(i).ok())
            .map(|f| f.into_iter().filter(|l| l.number == SOURCE_LOCATION).collect())
            .unwrap_or_default();
        Sources { locations }
    }

    /// The 1-based start of `path`, or of its nearest ancestor that has one.
    fn find(&self, path: &[i32]) -> Option<(u32, u32)> {
        let mut path = path.to_vec();
        loop {
            for location in &self.locations {
                let Ok(fields) = wire::fields(location.value) else { continue };
                let packed = |n: u32| -> Vec<i32> {
                    fields
                        .iter()
                        .filter(|f| f.number == n)
                        .flat_map(|f| packed_varints(f.value))
                        .map(|v| v as i32)
                        .collect()
                };
                if packed(LOCATION_PATH) == path {
                    let span = packed(LOCATION_SPAN);
                    if let (Some(line), Some(col)) = (span.first(), span.get(1)) {
                        return Some((*line as u32 + 1, *col as u32 + 1));
                    }
                }
            }
            path.pop()?;
        }
    }
}

fn packed_varints(bytes: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match wire::read_varint(bytes, &mut pos) {
            Ok(v) => out.push(v),
            Err(_) => break,
        }
    }
    out
}

/// The set with each file `change` returns new bytes for replaced (`change` gets the file's
/// name and encoding).
pub(crate) fn map_files(encoded: &[u8], change: impl Fn(&str, &[u8]) -> Option<Vec<u8>>) -> Vec<u8> {
    let Ok(set) = wire::fields(encoded) else { return encoded.to_vec() };
    let mut out = Vec::with_capacity(encoded.len());
    for field in &set {
        let name = (field.number == SET_FILE).then(|| string_field(field.value, FILE_NAME)).flatten();
        match name.and_then(|n| change(&n, field.value)) {
            Some(file) => wire::write_len_field(&mut out, SET_FILE, &file),
            None => out.extend_from_slice(field.whole),
        }
    }
    out
}

/// protox resolves option values against prost-reflect's built-in descriptor.proto, which
/// predates protobuf renumbering `Utf8Validation.NONE` from 1 to 3 (1 is now reserved): a
/// compiled `utf8_validation = NONE` arrives as 1. Rewrites it to 3 in the file, message
/// and field features of one compiled file, as protoc and buf write it.
#[cfg(feature = "runtime")]
pub(crate) fn renumber_utf8_none(file: &[u8]) -> Vec<u8> {
    rewrite(file, &|number, value| match number {
        FILE_OPTIONS => Some(in_options(value, FILE_OPTIONS_FEATURES)),
        FILE_MESSAGE => Some(renumber_in_message(value)),
        FILE_EXTENSION => Some(rewrite(value, &|n, v| (n == FIELD_OPTIONS).then(|| in_options(v, FIELD_OPTIONS_FEATURES)))),
        _ => None,
    })
}

#[cfg(feature = "runtime")]
fn renumber_in_message(message: &[u8]) -> Vec<u8> {
    rewrite(message, &|number, value| match number {
        MESSAGE_OPTIONS => Some(in_options(value, MESSAGE_OPTIONS_FEATURES)),
        MESSAGE_NESTED => Some(renumber_in_message(value)),
        MESSAGE_FIELD | MESSAGE_EXTENSION => {
            Some(rewrite(value, &|n, v| (n == FIELD_OPTIONS).then(|| in_options(v, FIELD_OPTIONS_FEATURES))))
        }
        _ => None,
    })
}

#[cfg(feature = "runtime")]
fn in_options(options: &[u8], features_field: u32) -> Vec<u8> {
    rewrite(options, &|number, set| {
        (number == features_field).then(|| {
            let Ok(fields) = wire::fields(set) else { return set.to_vec() };
            let mut out = Vec::with_capacity(set.len());
            for f in &fields {
                let old_none = f.number == feature::UTF8_VALIDATION
                    && f.wire_type == WireType::Varint
                    && wire::read_varint(f.value, &mut 0).ok() == Some(1);
                if old_none {
                    write_varint_field(&mut out, feature::UTF8_VALIDATION, super::features::NONE as u64);
                } else {
                    out.extend_from_slice(f.whole);
                }
            }
            out
        })
    })
}

/// New bytes for a length-delimited field (number, value), or `None` to keep it.
type FieldChange<'a> = &'a dyn Fn(u32, &[u8]) -> Option<Vec<u8>>;

/// `message` with each length-delimited field that `change` returns bytes for replaced.
fn rewrite(message: &[u8], change: FieldChange<'_>) -> Vec<u8> {
    let Ok(fields) = wire::fields(message) else { return message.to_vec() };
    let mut out = Vec::with_capacity(message.len());
    for f in &fields {
        match (f.wire_type == WireType::Len).then(|| change(f.number, f.value)).flatten() {
            Some(value) => wire::write_len_field(&mut out, f.number, &value),
            None => out.extend_from_slice(f.whole),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(name: &str, nested: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        wire::write_len_field(&mut m, MESSAGE_NAME, name.as_bytes());
        if !nested.is_empty() {
            wire::write_len_field(&mut m, MESSAGE_NESTED, nested);
        }
        m
    }

    #[test]
    fn an_unknown_syntax_is_refused_before_the_pool_sees_it() {
        let mut file = Vec::new();
        wire::write_len_field(&mut file, FILE_NAME, b"x.proto");
        wire::write_len_field(&mut file, FILE_MESSAGE, &message("M", &[]));
        wire::write_len_field(&mut file, FILE_SYNTAX, b"proto4");
        let mut set = Vec::new();
        wire::write_len_field(&mut set, SET_FILE, &file);
        let err = lower_set(&set).err().expect("refused");
        assert_eq!((err.file.as_str(), err.message.as_str()), ("x.proto", "unknown syntax \"proto4\": expected \"proto2\", \"proto3\" or \"editions\""));
        #[cfg(feature = "runtime")]
        assert_eq!(lower_file_bytes(&file).err(), Some(err));
        // The ones the pool knows pass.
        for syntax in [&b"proto2"[..], b"proto3"] {
            let mut file = Vec::new();
            wire::write_len_field(&mut file, FILE_NAME, b"x.proto");
            wire::write_len_field(&mut file, FILE_SYNTAX, syntax);
            let mut set = Vec::new();
            wire::write_len_field(&mut set, SET_FILE, &file);
            assert!(lower_set(&set).is_ok());
        }
    }

    #[test]
    fn hostile_nesting_is_refused_not_recursed_into() {
        let mut inner = Vec::new();
        for _ in 0..5_000 {
            inner = message("M", &inner);
        }
        let mut file = Vec::new();
        wire::write_len_field(&mut file, FILE_NAME, b"deep.proto");
        wire::write_len_field(&mut file, FILE_MESSAGE, &inner);
        wire::write_len_field(&mut file, FILE_SYNTAX, b"editions");
        write_varint_field(&mut file, FILE_EDITION, 1000);
        let mut set = Vec::new();
        wire::write_len_field(&mut set, SET_FILE, &file);
        let err = lower_set(&set).err().expect("refused");
        assert!(err.message.contains("nest more than"), "{err}");
    }

    #[test]
    fn a_lowered_file_raises_to_what_it_was() {
        let mut field = Vec::new();
        wire::write_len_field(&mut field, 1, b"g");
        write_varint_field(&mut field, 3, 1);
        write_varint_field(&mut field, FIELD_LABEL, LABEL_OPTIONAL);
        write_varint_field(&mut field, FIELD_TYPE, TYPE_MESSAGE);
        wire::write_len_field(&mut field, FIELD_TYPE_NAME, b".p.M");
        let mut features = Vec::new();
        write_varint_field(&mut features, feature::MESSAGE_ENCODING, DELIMITED as u64);
        let mut options = Vec::new();
        wire::write_len_field(&mut options, FIELD_OPTIONS_FEATURES, &features);
        wire::write_len_field(&mut field, FIELD_OPTIONS, &options);
        let mut m = message("M", &[]);
        wire::write_len_field(&mut m, MESSAGE_FIELD, &field);
        let mut file = Vec::new();
        wire::write_len_field(&mut file, FILE_NAME, b"p.proto");
        wire::write_len_field(&mut file, FILE_PACKAGE, b"p");
        wire::write_len_field(&mut file, FILE_MESSAGE, &m);
        wire::write_len_field(&mut file, FILE_SYNTAX, b"editions");
        write_varint_field(&mut file, FILE_EDITION, 1000);
        let mut set = Vec::new();
        wire::write_len_field(&mut set, SET_FILE, &file);
        let lowered = lower_set(&set).unwrap();
        assert_eq!(lowered.editions.get("p.proto"), Some(&Edition::E2023));
        assert!(!is_editions(&lowered.bytes[2..]), "lowered to proto2");
        let raised = raise_set(&lowered.bytes, &lowered.editions);
        // Lowering the raised set again gives the same lowered set.
        assert_eq!(lower_set(&raised).unwrap().bytes, lowered.bytes);
    }
}
