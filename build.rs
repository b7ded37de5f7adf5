//! Generates the gRPC code and the descriptor set that server reflection
//! serves. Uses a vendored `protoc`, so a fresh machine needs no system one.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
    unsafe { env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [
        "proto/sightline/v1/profile.proto",
        "proto/sightline/v1/segment.proto",
        "proto/sightline/v1/privacy.proto",
        "proto/sightline/v1/admin.proto",
        "proto/sightline/v1/recommendation.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("sightline_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
