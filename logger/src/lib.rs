//! `herald-logger`: Herald's front door. Serves `herald.v1.EventLogger`,
//! `herald.v1.Notifier`, `herald.v1.Inbox` and `herald.v1.Recipients` with gRPC health and
//! reflection on one port (and end users' endpoints on another), over the
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
//! - [`http_api`]: what every HTTP endpoint shares: the JSON error, bodies
//!   read within bounds.
//! - [`inbox`]: the Inbox handlers: each user's notifications, unread
//!   count and marking read.
//! - [`recipients`]: the Recipients handlers: contact data and
//!   preferences.
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
//! - [`schedule`]: the move of due SCHEDULED events to the work queue,
//!   partition by partition under a lease.
//! - [`server`]: registration of every service, health tracking, serving with
//!   graceful shutdown.
//! - [`web`]: the end users' listener: gRPC-Web, Server-Sent Events and
//!   the tickets `EventSource` needs.
//! - [`run`] / [`run_with_line`] / [`run_with`]: read the configuration and
//!   run [`app`] on bound [`Listeners`].

pub mod app;
pub mod auth;
pub mod catch_up;
pub mod config;
pub mod console;
pub mod encoded;
pub mod event_types;
pub mod fanout;
pub mod guard;
pub mod http_api;
pub mod in_flight;
pub mod inbox;
pub mod limits;
pub mod loading;
pub mod metrics;
pub mod notifier;
pub mod observe;
pub mod queue;
pub mod recipients;
pub mod retention;
pub mod schedule;
pub mod server;
pub mod service;
pub mod subscription;
pub mod web;

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

/// `--upgrade-storage`: upgrades the configured storage's layout in place
/// and says what was done on stdout.
pub async fn upgrade_storage(config: &Config) -> anyhow::Result<()> {
    let target = config
        .redis
        .backend()
        .context("--upgrade-storage needs the storage: give --redis-url or --redis-cluster")?;
    let backend = herald_storage::open_with(&target, &config.store_options())
        .context("--redis-url or --redis-cluster")?;
    match backend
        .store
        .upgrade()
        .await
        .with_context(|| format!("upgrading the storage at {}", target.location()))?
    {
        Some(done) => println!(
            "upgraded {} from layout {} to {}: {} index entries moved",
            target.location(),
            done.from,
            done.to,
            done.entries
        ),
        None => println!("{}: nothing to upgrade", target.location()),
    }
    Ok(())
}

/// [`run`], with the embedded worker's (if any) line channels writing
/// through `line`.
pub async fn run_with_line(
    listener: TcpListener,
    config: Config,
    line: Arc<dyn Channel>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use herald_runtime::http::bind;
    let listeners = Listeners {
        grpc: listener,
        metrics: bind(config.metrics_listen.0, "--metrics-listen").await?,
        console: bind(config.console_listen.0, "--console-listen").await?,
        web: bind(config.web_listen.0, "--web-listen").await?,
    };
    run_with(listeners, config, line, shutdown).await
}

/// Where the logger serves, bound: what `--listen`, `--metrics-listen`,
/// `--console-listen` and `--web-listen` name, or listeners taken before
/// (tests bind free ports).
pub struct Listeners {
    /// gRPC for services (`--listen`).
    pub grpc: TcpListener,
    /// Prometheus metrics, if served.
    pub metrics: Option<TcpListener>,
    /// The console, if served.
    pub console: Option<TcpListener>,
    /// The end users' endpoints ([`web`]), if served.
    pub web: Option<TcpListener>,
}

impl Listeners {
    /// gRPC on `grpc` and nothing else.
    pub fn grpc(grpc: TcpListener) -> Self {
        Self {
            grpc,
            metrics: None,
            console: None,
            web: None,
        }
    }
}

/// [`run_with_line`] on `listeners` instead of the flags' addresses.
pub async fn run_with(
    listeners: Listeners,
    config: Config,
    line: Arc<dyn Channel>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listeners.grpc.local_addr().context("listener address")?;
    let parts = app::Parts::read(&config, addr, listeners.console, listeners.web).await?;
    app::run(
        listeners.grpc,
        listeners.metrics,
        parts,
        &config,
        line,
        shutdown,
    )
    .await
}
