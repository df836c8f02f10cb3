//! `herald-runtime`: what every Herald binary shares, so that the servers and
//! the `herald` tool depend on it and not on each other.
//!
//! The dependency picture is one-way: `herald` (contract, storage) ←
//! `herald-client` (the library services embed) ← `herald-runtime` ←
//! `herald-processor` ← `herald-logger` (which embeds a worker), and
//! `herald-runtime` ← `herald-cli` (the `herald` tool).
//!
//! # Layout
//! - [`flags`]: flags more than one binary takes: TLS towards a logger, and
//!   (feature `storage`) where Herald's data is in Redis.
//! - [`http`]: the small HTTP/1.1 servers beside gRPC: `--*-listen`
//!   flags, binding, and an accept loop that bounds what clients hold.
//! - [`metrics`]: the Prometheus `/metrics` endpoint, metric helpers, the
//!   process's uptime and (feature `storage`) the work queue's sizes.
//! - [`otel`]: OpenTelemetry export of events' spans over OTLP (feature
//!   `otlp`).
//! - [`process`]: flags with a `--config` file under them, logging set-up
//!   (`--log-format`), the async runtime's threads (`--worker-threads`) and
//!   shutdown on SIGINT/SIGTERM.

pub mod flags;
pub mod http;
pub mod metrics;
pub mod otel;
pub mod process;
