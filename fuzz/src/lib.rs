//! The properties the fuzz targets check, one function per target, each taking the raw
//! input bytes. A property fails by panicking (libFuzzer records the input as a crash).
//!
//! The same functions run in the normal test suite over the committed seeds and every
//! crash ever found (`tests/corpus.rs`), so a fixed crash stays fixed without a fuzzer.
//!
//! Targets cross a trust boundary each: bytes another process (Envoy, the sidecar, another
//! worker, a control plane, a client, an operator) hands the filter, the sidecar or its
//! schema registry.
//!
//! A target `<area>_<name>` is the function `<area>::<name>`, and the cargo-fuzz binary of
//! that name (`targets/fuzz_targets/<target>.rs`) calls exactly it; `tests/corpus.rs`
//! checks that this list, the binaries in `targets/Cargo.toml` and the seed directories
//! agree.

pub mod filter;
pub mod schema;
pub mod sidecar;

/// A target's property: panics when the input breaks it.
pub type Property = fn(&[u8]);

/// Every target: name and property.
pub const TARGETS: &[(&str, Property)] = &[
    ("filter_config", filter::config),
    ("filter_request", filter::request),
    ("filter_snapshot", filter::snapshot),
    ("filter_shared_health", filter::shared_health),
    ("filter_frames", filter::frames),
    ("schema_payload", schema::payload),
    ("schema_frames", schema::frames),
    ("schema_descriptor_set", schema::descriptor_set),
    ("schema_proto_source", schema::proto_source),
    ("sidecar_image", sidecar::image),
    ("sidecar_config", sidecar::config),
    ("sidecar_model_config", sidecar::model_config),
    ("sidecar_admin_json", sidecar::admin_json),
];
