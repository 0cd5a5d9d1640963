//! Rules on pairs of fields: same message (by full name) and number, or same extendee and
//! number for extensions.

use super::kinds::{Cardinality, DefaultValue, FieldType};
use super::{Checker, Emit, Reader, Rule, Scope};
use prost_reflect::{ExtensionDescriptor, FieldDescriptor};
use std::collections::BTreeMap;

// Source paths within FieldDescriptorProto.
const NAME: i32 = 1;
const TYPE: i32 = 5;
const TYPE_NAME: i32 = 6;
const DEFAULT: i32 = 7;
const JSON_NAME: i32 = 10;

/// The facts the rules need about a field or an extension.
struct FieldView {
    file: String,
    path: Vec<i32>,
    name: String,
    full_name: String,
    number: u32,
    ty: FieldType,
    cardinality: Cardinality,
    /// Name of the (non-synthetic) oneof holding the field.
    oneof: Option<String>,
    json_name: String,
    default: Option<DefaultValue>,
    /// The extendee's full name, for extensions.
    extendee: Option<String>,
    in_map_entry: bool,
    /// The message that holds the field (or the extendee), by short and full name.
    owner: String,
    owner_full: String,
}

impl FieldView {
    fn of_field(f: &FieldDescriptor) -> Self {
        let owner = f.parent_message();
        let ty = FieldType::new(&f.kind(), f.is_group());
        FieldView {
            file: f.parent_file().name().to_owned(),
            path: f.path().to_vec(),
            name: f.name().to_owned(),
            full_name: f.full_name().to_owned(),
            number: f.number(),
            cardinality: cardinality(f.is_list(), f.is_map(), f.is_required(), crate::editions::has_presence(f)),
            oneof: f.containing_oneof().filter(|o| !o.is_synthetic()).map(|o| o.name().to_owned()),
            json_name: f.json_name().to_owned(),
            default: scalar_default(&ty, f.is_list() || f.is_map(), &f.default_value()),
            ty,
            extendee: None,
            in_map_entry: owner.is_map_entry(),
            owner: owner.name().to_owned(),
            owner_full: owner.full_name().to_owned(),
        }
    }

    fn of_extension(f: &ExtensionDescriptor) -> Self {
        let extendee = f.containing_message();
        let ty = FieldType::new(&f.kind(), f.is_group());
        let required = f.cardinality() == prost_reflect::Cardinality::Required;
        FieldView {
            file: f.parent_file().name().to_owned(),
            path: f.path().to_vec(),
            name: f.name().to_owned(),
            full_name: f.full_name().to_owned(),
            number: f.number(),
            cardinality: cardinality(f.is_list(), f.is_map(), required, crate::editions::extension_has_presence(f)),
            oneof: None,
            json_name: f.json_name().to_owned(),
            default: scalar_default(&ty, f.is_list() || f.is_map(), &f.default_value()),
            ty,
            extendee: Some(extendee.full_name().to_owned()),
            in_map_entry: false,
            owner: extendee.full_name().to_owned(),
            owner_full: extendee.full_name().to_owned(),
        }
    }

    /// `Field "3" with name "x" on message "M"`, as buf words it.
    fn describe(&self) -> String {
        match &self.extendee {
            Some(extendee) => format!("Extension \"{}\" with name {:?} on message {:?}", self.number, self.full_name, extendee),
            None => format!("Field \"{}\" with name {:?} on message {:?}", self.number, self.name, self.owner),
        }
    }

    fn sub_path(&self, sub: &[i32]) -> Vec<i32> {
        [self.path.as_slice(), sub].concat()
    }

    fn type_path(&self) -> Vec<i32> {
        self.sub_path(&[if self.ty.type_name().is_some() { TYPE_NAME } else { TYPE }])
    }
}

fn cardinality(is_list: bool, is_map: bool, required: bool, presence: bool) -> Cardinality {
    match () {
        _ if is_list => Cardinality::Repeated,
        _ if is_map => Cardinality::Map,
        _ if required => Cardinality::Required,
        _ if presence => Cardinality::OptionalExplicit,
        _ => Cardinality::OptionalImplicit,
    }
}

fn scalar_default(ty: &FieldType, repeated: bool, value: &prost_reflect::Value) -> Option<DefaultValue> {
    if repeated || matches!(ty, FieldType::Message(_) | FieldType::Group(_)) {
        return None;
    }
    DefaultValue::new(value)
}

/// Pairs of (old, new) fields.
fn field_pairs(c: &Checker<'_>) -> Vec<(FieldView, FieldView)> {
    let mut pairs = Vec::new();
    for old_message in c.old.pool().all_messages() {
        let Some(new_message) = c.new.pool().get_message_by_name(old_message.full_name()) else {
            continue;
        };
        for old in old_message.fields() {
            if let Some(new) = new_message.get_field(old.number()) {
                pairs.push((FieldView::of_field(&old), FieldView::of_field(&new)));
            }
        }
    }
    let extensions = |pool: &prost_reflect::DescriptorPool| -> BTreeMap<(String, u32), FieldView> {
        pool.all_extensions()
            .map(|e| ((e.containing_message().full_name().to_owned(), e.number()), FieldView::of_extension(&e)))
            .collect()
    };
    let mut new_extensions = extensions(c.new.pool());
    for (key, old) in extensions(c.old.pool()) {
        if let Some(new) = new_extensions.remove(&key) {
            pairs.push((old, new));
        }
    }
    pairs
}

pub(crate) fn check_fields(c: &mut Checker<'_>) {
    for (old, new) in field_pairs(c) {
        let scope = Scope::Type(new.owner_full.clone());
        let emit = |c: &mut Checker<'_>, rule: Rule, path: Vec<i32>, message: String, reader: Reader| {
            c.emit(Emit {
                rule,
                element: new.full_name.clone(),
                file: &new.file,
                path: &path,
                message,
                reader,
                scope: scope.clone(),
            })
        };

        same_oneof(c, &old, &new, &emit);
        same_default(c, &old, &new, &emit);
        types(c, &old, &new, &emit);
        cardinalities(c, &old, &new, &emit);

        // Names only matter to JSON (and text) readers.
        let (old_name, new_name) = match new.extendee {
            Some(_) => (&old.full_name, &new.full_name),
            None => (&old.name, &new.name),
        };
        if old_name != new_name {
            let described = match &new.extendee {
                Some(e) => format!("Extension \"{}\" on message {e:?}", new.number),
                None => format!("Field \"{}\" on message {:?}", new.number, new.owner),
            };
            emit(
                c,
                Rule::FieldSameName,
                new.sub_path(&[NAME]),
                format!("{described} changed name from {old_name:?} to {new_name:?}."),
                Reader::Both,
            );
        }
        if new.extendee.is_none() && old.json_name != new.json_name {
            emit(
                c,
                Rule::FieldSameJsonName,
                new.sub_path(&[JSON_NAME]),
                format!(
                    "{} changed option \"json_name\" from {:?} to {:?}.",
                    new.describe(),
                    old.json_name,
                    new.json_name
                ),
                Reader::Both,
            );
        }
        if !c.enabled(Rule::FieldSameJsonName) && new.extendee.is_none() && old.json_name != new.json_name {
            emit(
                c,
                Rule::FieldJsonNameChanged,
                new.sub_path(&[NAME]),
                format!(
                    "{} changed its JSON name from {:?} to {:?}: binary readers are unaffected, but JSON \
                     readers of either side silently drop the other's value.",
                    new.describe(),
                    old.json_name,
                    new.json_name
                ),
                Reader::Both,
            );
        }
        if !new.in_map_entry {
            let presence = |c: Cardinality| match c {
                Cardinality::OptionalExplicit => Some(true),
                Cardinality::OptionalImplicit => Some(false),
                _ => None,
            };
            if let (Some(before), Some(after)) = (presence(old.cardinality), presence(new.cardinality)) {
                if before != after {
                    emit(
                        c,
                        Rule::FieldPresenceChanged,
                        new.path.clone(),
                        format!(
                            "{} changed from {} to {}: a value equal to the default is {} on the wire, so \
                             readers can no longer tell \"unset\" from \"set to the default\" the same way.",
                            new.describe(),
                            old.cardinality.describe(),
                            new.cardinality.describe(),
                            if after { "now sent" } else { "no longer sent" }
                        ),
                        Reader::Both,
                    );
                }
            }
        }
    }
}

type EmitFn<'e> = dyn Fn(&mut Checker<'_>, Rule, Vec<i32>, String, Reader) + 'e;

fn same_oneof(c: &mut Checker<'_>, old: &FieldView, new: &FieldView, emit: &EmitFn<'_>) {
    if old.extendee.is_some() {
        return;
    }
    let message = match (&old.oneof, &new.oneof) {
        (None, None) => return,
        (Some(a), Some(b)) if a == b => return,
        (Some(a), Some(b)) => format!("{} moved from oneof {a:?} to oneof {b:?}.", new.describe()),
        (Some(_), None) => format!("{} moved from inside to outside a oneof.", new.describe()),
        (None, Some(_)) => format!("{} moved from outside to inside a oneof.", new.describe()),
    };
    emit(c, Rule::FieldSameOneof, new.path.clone(), message, Reader::Both);
}

fn same_default(c: &mut Checker<'_>, old: &FieldView, new: &FieldView, emit: &EmitFn<'_>) {
    let (Some(before), Some(after)) = (&old.default, &new.default) else {
        return;
    };
    if (before.is_zero() && after.is_zero()) || before.same_as(after) {
        return;
    }
    emit(
        c,
        Rule::FieldSameDefault,
        new.sub_path(&[DEFAULT]),
        format!(
            "{} changed default value from {} to {}.",
            new.describe(),
            before.describe(),
            after.describe()
        ),
        Reader::Both,
    );
}

fn types(c: &mut Checker<'_>, old: &FieldView, new: &FieldView, emit: &EmitFn<'_>) {
    let changed_type = |extra: &str| {
        format!(
            "{} changed type from {:?} to {:?}.{extra}",
            new.describe(),
            old.ty.keyword(),
            new.ty.keyword()
        )
    };
    // WIRE
    if old.ty.wire_group() != new.ty.wire_group() {
        match (&old.ty, &new.ty) {
            (FieldType::String, FieldType::Bytes) => {}
            (FieldType::Bytes, FieldType::String) => emit(
                c,
                Rule::FieldWireCompatibleType,
                new.type_path(),
                changed_type(
                    " Note that while string and bytes are compatible if the data is valid UTF-8, there is no \
                     way to enforce that a bytes field is UTF-8, so these fields may be incompatible.",
                ),
                // Old bytes readers take any string; new string readers reject non-UTF-8.
                Reader::New,
            ),
            _ => emit(c, Rule::FieldWireCompatibleType, new.type_path(), changed_type(""), Reader::Both),
        }
    } else {
        named_type(c, Rule::FieldWireCompatibleType, old, new, emit);
    }
    // WIRE_JSON
    if old.ty.wire_json_group() != new.ty.wire_json_group() {
        emit(c, Rule::FieldWireJsonCompatibleType, new.type_path(), changed_type(""), Reader::Both);
    } else {
        named_type(c, Rule::FieldWireJsonCompatibleType, old, new, emit);
    }
    value_warnings(c, old, new, emit);
}

/// Same group of a named type: messages must keep their type; an enum may be replaced by
/// one with the same short name whose values include all the old ones.
fn named_type(c: &mut Checker<'_>, rule: Rule, old: &FieldView, new: &FieldView, emit: &EmitFn<'_>) {
    let (Some(before), Some(after)) = (old.ty.type_name(), new.ty.type_name()) else {
        return;
    };
    if before == after {
        return;
    }
    if let (FieldType::Enum(_), FieldType::Enum(_)) = (&old.ty, &new.ty) {
        let old_enum = c.old.pool().get_enum_by_name(before);
        let new_enum = c.new.pool().get_enum_by_name(after);
        if let (Some(o), Some(n)) = (old_enum, new_enum) {
            let superset = o
                .values()
                .all(|v| n.get_value_by_name(v.name()).is_some_and(|nv| nv.number() == v.number()));
            if o.name() == n.name() && superset {
                return;
            }
        }
    }
    emit(
        c,
        rule,
        new.sub_path(&[TYPE_NAME]),
        format!("{} changed type from {before:?} to {after:?}.", new.describe()),
        Reader::Both,
    );
}

/// Switchyard's warnings for type changes the category lets through.
fn value_warnings(c: &mut Checker<'_>, old: &FieldView, new: &FieldView, emit: &EmitFn<'_>) {
    if old.ty == new.ty {
        return;
    }
    let json = c.category == super::Category::WireJson;
    let allowed = if json {
        old.ty.wire_json_group() == new.ty.wire_json_group()
    } else {
        old.ty.wire_group() == new.ty.wire_group()
    };
    if let (Some((w1, s1)), Some((w2, s2)), true) = (old.ty.integer_shape(), new.ty.integer_shape(), allowed) {
        let (rule, why) = if w1 == 1 || w2 == 1 {
            (
                Rule::FieldValueBoolIntegerType,
                "every non-zero integer reads as true, and true reads back as 1",
            )
        } else if w1 != w2 {
            (
                Rule::FieldValueTruncatingType,
                "values beyond 32 bits written by the wider side are truncated by the narrower reader",
            )
        } else if s1 != s2 {
            (
                Rule::FieldValueSignChangingType,
                "negative values read as large positive ones (and back)",
            )
        } else {
            return;
        };
        emit(
            c,
            rule,
            new.type_path(),
            format!(
                "{} changed type from {:?} to {:?}, which {}: {why}.",
                new.describe(),
                old.ty.keyword(),
                new.ty.keyword(),
                if json { "WIRE_JSON allows" } else { "WIRE allows" }
            ),
            Reader::Both,
        );
    }
    if !json && old.ty == FieldType::String && new.ty == FieldType::Bytes {
        emit(
            c,
            Rule::FieldJsonStringBytes,
            new.type_path(),
            format!(
                "{} changed type from \"string\" to \"bytes\": the binary encoding is unchanged, but JSON \
                 now carries base64, so JSON readers of either side misread the other's value.",
                new.describe()
            ),
            Reader::Both,
        );
    }
}

fn cardinalities(c: &mut Checker<'_>, old: &FieldView, new: &FieldView, emit: &EmitFn<'_>) {
    if old.in_map_entry && new.in_map_entry {
        return;
    }
    let message = || {
        format!(
            "{} changed cardinality from {:?} to {:?}.",
            new.describe(),
            old.cardinality.describe(),
            new.cardinality.describe()
        )
    };
    if old.cardinality.wire_group() != new.cardinality.wire_group() {
        let reader = Reader::Both;
        emit(c, Rule::FieldWireCompatibleCardinality, new.path.clone(), message(), reader);
    }
    if old.cardinality.wire_json_group() != new.cardinality.wire_json_group() {
        emit(c, Rule::FieldWireJsonCompatibleCardinality, new.path.clone(), message(), Reader::Both);
    }
}
