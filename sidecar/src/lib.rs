//! Switchyard's sidecar: serves an ONNX model over `features.v1` gRPC with dynamic batching,
//! versions side by side and hot reload, and reports per-version state for the filter.
//!
//! The binary (`switchyard-sidecar serve`) is a thin CLI over [`serve::Sidecar`]; the parts
//! are public so the benchmark can run the same pipeline in-process and the schema registry
//! can mount itself on the same ports.

pub mod admin;
pub mod background;
pub mod batch;
pub(crate) mod cache;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod confluent;
pub mod console;
pub mod extract;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod onnx;
pub mod preprocess;
pub mod priority;
pub mod registry;
pub mod reload;
pub mod repository;
pub mod serve;
pub mod service;
pub mod telemetry;
pub mod watch;

pub use models::{ModelsSnapshot, VersionState};
