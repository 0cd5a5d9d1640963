//! Switchyard's proto schema toolkit.
#![forbid(unsafe_code)]

pub mod breaking;
pub mod fingerprint;
mod location;
mod schema;
mod wire;

pub use fingerprint::Fingerprint;
pub use location::Location;
pub use schema::{DecodeError, Schema, SubjectError};

#[cfg(feature = "runtime")]
pub mod compile;
