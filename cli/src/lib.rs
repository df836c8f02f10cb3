//! `herald-cli`: the `herald` command-line tool, built on `herald-client`
//! (which stays a library without any of this crate's dependencies).
//!
//! # Layout
//! - [`advice`]: what to do about an error (the flag to change), and the
//!   parsers that refuse a bad `--server` or event id up front.
//! - [`bench`](mod@bench): `herald bench`, the benchmark suite (ingest, paced latency,
//!   end to end, fan-out, health floor).
//! - [`simulate`]: `herald simulate`, deliveries through lossy processors,
//!   with the report of what arrived.
//! - `main.rs` (binary `herald`): the flags and the subcommands.

pub mod advice;
pub mod bench;
pub mod simulate;
