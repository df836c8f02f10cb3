//! Code generated from `proto/herald/v1` (messages, clients and servers).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("herald.v1");

/// The encoded `FileDescriptorSet` of Herald's protos and their imports, for
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("herald_descriptor");
