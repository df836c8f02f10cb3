//! Code generated from `proto/herald/v1`: messages and clients, and with the
//! feature `server` the servers' traits and services.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("herald.v1");

// `Rpc`: every RPC of the services, for code that decides per RPC.
include!(concat!(env!("OUT_DIR"), "/rpcs.rs"));

#[cfg(feature = "server")]
mod servers {
    include!(concat!(env!("OUT_DIR"), "/servers/herald.v1.rs"));
}
#[cfg(feature = "server")]
pub use servers::*;

/// The encoded `FileDescriptorSet` of Herald's protos and their imports, for
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("herald_descriptor");
