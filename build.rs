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
    fs::write(out_dir.join("rpcs.rs"), rpcs(&fds)?)?;
    // Messages and clients, which every crate uses.
    generator()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds.clone())?;
    // Servers, in a file of their own that `pb` includes with the feature
    // `server` only: the client library compiles no server stubs.
    let servers = out_dir.join("servers");
    fs::create_dir_all(&servers)?;
    generator()
        .build_client(false)
        .build_server(true)
        .extern_path(".herald.v1", "crate::pb")
        .out_dir(&servers)
        .compile_fds(fds)?;
    Ok(())
}

/// Rust source of `Rpc`, an enum of every RPC of Herald's services (a
/// variant per method, named after it), with each one's path: what code
/// that must decide per RPC matches on, so a new RPC does not compile until
/// every such match has given it a case.
fn rpcs(fds: &prost_types::FileDescriptorSet) -> Result<String, String> {
    let mut methods: Vec<(String, String)> = Vec::new();
    for file in fds
        .file
        .iter()
        .filter(|f| f.package().starts_with("herald."))
    {
        for service in &file.service {
            for method in &service.method {
                let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                if methods.iter().any(|(name, _)| name == method.name()) {
                    return Err(format!(
                        "two RPCs named {}: give Rpc's variants their service's name",
                        method.name()
                    ));
                }
                methods.push((method.name().to_owned(), path));
            }
        }
    }
    let variants: String = methods
        .iter()
        .map(|(name, path)| format!("    /// `{path}`\n    {name},\n"))
        .collect();
    let all: String = methods
        .iter()
        .map(|(name, _)| format!("Self::{name}, "))
        .collect();
    let paths: String = methods
        .iter()
        .map(|(name, path)| format!("            Self::{name} => \"{path}\",\n"))
        .collect();
    let parse: String = methods
        .iter()
        .map(|(name, path)| format!("            \"{path}\" => Some(Self::{name}),\n"))
        .collect();
    Ok(format!(
        "/// Every RPC of Herald's services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rpc {{
{variants}}}

impl Rpc {{
    /// Every RPC, in the order of the proto file.
    pub const ALL: [Rpc; {n}] = [{all}];

    /// The RPC's gRPC path, `/herald.v1.Service/Method`.
    pub fn path(self) -> &'static str {{
        match self {{
{paths}        }}
    }}

    /// The RPC at a gRPC path; `None` for a path Herald does not serve.
    pub fn from_path(path: &str) -> Option<Self> {{
        match path {{
{parse}            _ => None,
        }}
    }}
}}
",
        n = methods.len()
    ))
}

/// The settings both passes share.
fn generator() -> tonic_prost_build::Builder {
    tonic_prost_build::configure()
        // google.rpc.Status is tonic-types' own type, not generated twice.
        .extern_path(".google.rpc", "::tonic_types::pb")
        // prost's codec, with undecodable messages made INVALID_ARGUMENT.
        .codec_path("crate::codec::Codec")
}
