//! Switchyard's proto schema toolkit: run-time descriptor loading, buf-compatible
//! breaking-change detection, payload validation, and the schema registry the sidecar
//! serves and the Envoy filter routes by.
//!
//! | module | what | needs `runtime` |
//! |---|---|---|
//! | [`Schema`], [`fingerprint`] | a decoded descriptor set, its canonical sha256 | no |
//! | [`breaking`] | buf's `WIRE` (15) and `WIRE_JSON` (22) rules, plus warnings | no |
//! | [`compat`] | compatibility modes, per-pair request/response verdicts | no |
//! | [`validate`] | payload and gRPC-frame validation with field paths | no |
//! | [`snapshot`] | the JSON snapshot the filter polls, with lookups | no |
//! | [`framing`] | Confluent's wire framing (magic byte, schema id, message indexes) | no |
//! | [`metrics`] | atomic counters, Prometheus text | no |
//! | `compile` | `.proto` trees compiled with protox, errors with file:line:column | yes |
//! | `registry` | subjects, revisions, the gate, persistence, directory watcher | yes |
//! | `cli` | `schema breaking / validate / ls` | yes |
//! | `service` | the tonic `switchyard.registry.v1.SchemaRegistry` service | `grpc` |
//!
//! Without default features the crate builds for `wasm32-wasip1`
//! (`cargo build -p switchyard-schema --no-default-features --target wasm32-wasip1`), so
//! the filter can decode the snapshot, look up verdicts and validate payloads in-proxy.
//!
//! # Wiring into the sidecar
//!
//! ```text
//! use switchyard_schema::registry::{Registry, RegistryConfig};
//!
//! // Config: `RegistryConfig` is serde (deny_unknown_fields), e.g. a `[schema]` table:
//! //   dir = "schemas"   mode = "BACKWARD"   category = "WIRE"
//! let registry = Registry::open(config)?;          // restores state, scans `dir` once
//! let _watch = registry.watch()?;                   // keep alive; drop to stop watching
//!
//! // gRPC: one line on the tonic server builder.
//! builder.add_service(switchyard_schema::service::server(registry.clone()));
//!
//! // HTTP snapshot for the filter (GET on the admin port), cached per generation:
//! let body: Vec<u8> = registry.snapshot_json();     // content-type: application/json
//! let generation = registry.state().generation;     // e.g. as an ETag
//!
//! // Metrics: append to the sidecar's Prometheus output.
//! let text = registry.metrics().render_prometheus("switchyard_");
//!
//! // CLI: `switchyard-sidecar schema …`
//! #[derive(clap::Subcommand)]
//! enum Command { Schema(switchyard_schema::cli::SchemaArgs), /* … */ }
//! // …
//! Command::Schema(args) => return switchyard_schema::cli::run(args), // -> ExitCode
//! ```
//!
//! See `README.md` for the watched directory's layout, modes, categories and the CLI.
#![forbid(unsafe_code)]

pub mod breaking;
pub mod compat;
pub mod fingerprint;
pub mod editions;
pub mod framing;
mod location;
pub mod metrics;
mod schema;
pub mod snapshot;
pub mod validate;
mod wire;

pub use fingerprint::Fingerprint;
pub use location::Location;
pub use schema::{DecodeError, Schema, SubjectError};

#[cfg(feature = "runtime")]
pub mod cli;
#[cfg(feature = "runtime")]
pub mod compile;
#[cfg(feature = "runtime")]
pub mod registry;
#[cfg(feature = "grpc")]
pub mod service;
