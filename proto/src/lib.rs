//! Rust bindings for Switchyard's protocol sources in `proto/`.
//!
//! The `.proto` files are the single source of truth; this crate only generates code
//! from them at build time (see `build.rs`).

/// `features.v1`: the feature-extraction API.
pub mod features {
    pub mod v1 {
        tonic::include_proto!("features.v1");
    }
}

/// `switchyard.registry.v1`: the schema registry API.
pub mod switchyard {
    pub mod registry {
        pub mod v1 {
            tonic::include_proto!("switchyard.registry.v1");
        }
    }
}

/// Encoded `FileDescriptorSet` of every file in this crate, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchyard_descriptor.binpb"));
