//! `herald-logger`: Herald's front door. Serves `herald.v1.EventLogger` and
//! `herald.v1.Notifier` with gRPC health and reflection on one port, over the
//! Redis backend, or, without Redis, over the memory backend with a processor
//! worker embedded, so one command runs the whole system.
//!
//! # Layout
//! - [`app`]: the logger assembled from its parts: the checked
//!   configuration, every listener and background loop as a named task, and
//!   the order they stop in.
//! - [`auth`]: API keys and scopes, checked for every call by one tower layer,
//!   and the caller's identity as the handlers read it.
//! - [`config`]: flags with `HERALD_*` env twins.
//! - [`console`]: the console, a live web page of events on a port of its
//!   own, and the JSON API it calls.
//! - [`encoded`]: Subscribe messages encoded once for every stream, the
//!   codec that sends them as they are, and the Notifier's server.
//! - [`guard`]: reads and checks every request body (size, framing, time)
//!   before a handler sees it.
//! - [`in_flight`]: the calls in flight on every listener, so shutdown
//!   ends once they have.
//! - [`limits`]: per-client token-bucket rate limits, and the accounting of
//!   open Subscribe streams per client.
//! - [`loading`]: reading the JSON configuration files, and [`loading::LoadError`].
//! - [`metrics`]: Prometheus metrics: the RPC layer, the event counts, the
//!   gauges read at each scrape (served on `--metrics-listen`).
//! - [`event_types`]: the event-type registry (payload JSON Schemas per type).
//! - [`service`]: the EventLogger handlers.
//! - [`observe`]: what every write is counted, logged and traced as.
//! - [`notifier`]: the Notifier handler: filters, stream limits, and the
//!   trimming of the notification log.
//! - [`subscription`]: one Subscribe stream as a state machine (catching
//!   up, joining, live, ended), with heartbeats.
//! - [`catch_up`]: a resuming stream's catch-up from the log, bounded and
//!   taking turns.
//! - [`fanout`]: the per-process fan-out: local subscribers and the one tail
//!   of the notification log that feeds them.
//! - [`queue`]: each subscriber's queue, and the byte budget one client's
//!   queues share.
//! - [`retention`]: the background removal of old events and dead letters,
//!   and the trimming of the acknowledged work queue.
//! - [`server`]: registration of every service, health tracking, serving with
//!   graceful shutdown.
//! - [`run`] / [`run_with_line`] / [`run_with`]: read the configuration and
//!   run [`app`] on a bound listener.

pub mod app;
pub mod auth;
pub mod catch_up;
pub mod config;
pub mod console;
pub mod encoded;
pub mod event_types;
pub mod fanout;
pub mod guard;
pub mod in_flight;
pub mod limits;
pub mod loading;
pub mod metrics;
pub mod notifier;
pub mod observe;
pub mod queue;
pub mod retention;
pub mod server;
pub mod service;
pub mod subscription;

use std::sync::Arc;

use anyhow::Context;
use herald_processor::{Channel, LineChannel};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Runs the logger on `listener` until `shutdown` is cancelled; an embedded
/// worker's line channels print on stdout.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_line(listener, config, Arc::new(LineChannel::stdout()), shutdown).await
}

/// [`run`], with the embedded worker's (if any) line channels writing
/// through `line`.
pub async fn run_with_line(
    listener: TcpListener,
    config: Config,
    line: Arc<dyn Channel>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = herald_runtime::http::bind(config.metrics_listen.0, "--metrics-listen").await?;
    let console = herald_runtime::http::bind(config.console_listen.0, "--console-listen").await?;
    run_with(listener, metrics, console, config, line, shutdown).await
}

/// [`run_with_line`], serving metrics on `metrics` and the console on
/// `console` (if any) instead of `--metrics-listen` and `--console-listen`.
pub async fn run_with(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    console: Option<TcpListener>,
    config: Config,
    line: Arc<dyn Channel>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("listener address")?;
    let parts = app::Parts::read(&config, addr, console).await?;
    app::run(listener, metrics, parts, &config, line, shutdown).await
}
