//! The schemas the payload and frame targets validate against: the real features.v1
//! revisions (as `proto/` has it, the schema crate's next revision and its editions form),
//! and three files that between them hold every field kind (`fuzz/protos/`). Each is
//! compiled once per process, the way the registry compiles a submitted document.

use prost_reflect::MessageDescriptor;
use std::sync::LazyLock;
use switchyard_schema::registry::{Registry, RegistryConfig};
use switchyard_schema::Schema;

/// `(name, .proto text)` of every schema, in a fixed order: an input's first byte picks a
/// message type by position, so the order is part of what a corpus file means.
pub const SOURCES: &[(&str, &str)] = &[
    ("features.v1@1", include_str!("../../../proto/features/v1/features.proto")),
    ("features.v1@2", include_str!("../../../schema/tests/corpus/features_v1__ok_add_fields/new/features/v1/features.proto")),
    ("features.v1 (editions)", include_str!("../../../schema/tests/corpus_editions/features_v1__ok_add_fields/new/features/v1/features.proto")),
    ("kinds2", include_str!("../../protos/kinds2.proto")),
    ("kinds3", include_str!("../../protos/kinds3.proto")),
    ("kinds_editions", include_str!("../../protos/kinds_editions.proto")),
];

/// A registry with nothing in it: compiling a document needs one (for its references),
/// and this one is only ever asked to compile.
pub fn registry() -> &'static Registry {
    static REGISTRY: LazyLock<std::sync::Arc<Registry>> = LazyLock::new(|| match Registry::open(RegistryConfig::default()) {
        Ok(r) => r,
        Err(e) => panic!("an in-memory registry: {e}"),
    });
    &REGISTRY
}

/// Every schema of [`SOURCES`], compiled.
pub fn schemas() -> &'static [(&'static str, Schema)] {
    static SCHEMAS: LazyLock<Vec<(&'static str, Schema)>> = LazyLock::new(|| {
        SOURCES
            .iter()
            .map(|(name, text)| match registry().compile_document(text, &[]) {
                Ok((schema, _)) => (*name, schema),
                Err(e) => panic!("fuzz schema {name}: {e}"),
            })
            .collect()
    });
    &SCHEMAS
}

/// Every message type the schemas define themselves (not the well-known types they
/// import, not map entries), in schema order.
pub fn messages() -> &'static [MessageDescriptor] {
    static MESSAGES: LazyLock<Vec<MessageDescriptor>> = LazyLock::new(|| {
        schemas()
            .iter()
            .flat_map(|(_, schema)| {
                let own: Vec<String> = schema.own_files().map(str::to_owned).collect();
                schema
                    .pool()
                    .all_messages()
                    .filter(move |m| own.iter().any(|f| f == m.parent_file().name()) && !m.is_map_entry())
            })
            .collect()
    });
    &MESSAGES
}

/// The message type an input's selector byte names.
pub fn pick(selector: u8) -> &'static MessageDescriptor {
    let all = messages();
    &all[usize::from(selector) % all.len()]
}
