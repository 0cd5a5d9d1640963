//! Switchyard's proto schema toolkit.
#![forbid(unsafe_code)]

pub mod breaking;
pub mod compat;
pub mod fingerprint;
pub mod metrics;
pub mod snapshot;
mod location;
mod schema;
mod wire;

pub use fingerprint::Fingerprint;
pub use location::Location;
pub use schema::{DecodeError, Schema, SubjectError};

#[cfg(feature = "runtime")]
pub mod cli;
#[cfg(feature = "runtime")]
pub mod compile;
pub mod validate;
#[cfg(feature = "runtime")]
pub mod registry;
#[cfg(feature = "grpc")]
pub mod service;
