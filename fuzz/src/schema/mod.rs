//! The schema crate's inputs: payloads and their framings, descriptor sets and `.proto`
//! text, each as the registry, the sidecar's validator or the filter receives them.

mod descriptors;
mod frames;
mod payload;
pub mod schemas;
mod source;

pub use descriptors::descriptor_set;
pub use frames::frames;
pub use payload::payload;
pub use source::proto_source;
