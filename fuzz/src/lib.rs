//! The properties the fuzz targets check, one function per target, each taking the raw
//! input bytes. A property fails by panicking (libFuzzer records the input as a crash).
//!
//! The same functions run in the normal test suite over the committed seeds and every
//! crash ever found (`tests/corpus.rs`), so a fixed crash stays fixed without a fuzzer.
//!
//! Targets cross a trust boundary each: bytes another process (Envoy, the sidecar, another
//! worker, a control plane) hands the filter.

pub mod filter;

/// Every target: name and property.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("filter_config", filter::config),
    ("filter_request", filter::request),
    ("filter_snapshot", filter::snapshot),
    ("filter_shared_health", filter::shared_health),
];
