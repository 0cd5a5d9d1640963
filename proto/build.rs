//! Compiles every `.proto` under this directory with `protox` (pure Rust, no `protoc`)
//! and generates prost messages plus tonic clients and servers from the result.

use std::path::{Path, PathBuf};

/// The API files to generate code for; their imports are resolved from this directory
/// and protox's built-in well-known types.
const FILES: &[&str] = &["features/v1/features.proto", "switchyard/registry/v1/registry.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let fds = protox::compile(FILES, [root])?;

    // Kept for gRPC server reflection (`grpcurl` against the sidecar).
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("switchyard_descriptor.binpb"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
