//! Compiles `proto/` into Rust (tonic + prost) with protox, so building needs no
//! system `protoc`, and writes the encoded descriptor set that reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &["proto/herald/v1/herald.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Imports (google/protobuf/*) are included so reflection clients can resolve them.
    let fds = protox::compile(PROTOS, ["proto"])?;
    fs::write(out_dir.join("herald_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // google.rpc.Status is tonic-types' own type, not generated twice.
        .extern_path(".google.rpc", "::tonic_types::pb")
        // prost's codec, with undecodable messages made INVALID_ARGUMENT.
        .codec_path("crate::codec::Codec")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
