//! `herald-logger`: Herald's front door. Serves `herald.v1.EventLogger` and
//! `herald.v1.Notifier` with gRPC health and reflection on one port, over the
//! Redis backend, or, without Redis, over the memory backend with a processor
//! worker embedded, so one command runs the whole system.
//!
//! # Layout
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
//! - [`notifier`]: the Notifier handler: filters, resuming after a cursor,
//!   heartbeats, stream limits.
//! - [`fanout`]: the per-process fan-out: local subscribers and the one tail
//!   of the notification log that feeds them.
//! - [`queue`]: each subscriber's queue, and the byte budget one client's
//!   queues share.
//! - [`retention`]: the background removal of old events and dead letters,
//!   and the trimming of the acknowledged work queue.
//! - [`server`]: registration of every service, health tracking, serving with
//!   graceful shutdown.
//! - [`run`] / [`run_with_line`] / [`run_with`]: wire it all up on a bound listener.

pub mod auth;
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

use std::sync::Arc;

use anyhow::Context;
use herald::{
    auth::Scope,
    backend::{self, BackendConfig},
};
use herald_client::Client;
use herald_processor::{Channel, LineChannel, Worker};
use metrics::LoggerMetrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use auth::{AuthLayer, FailureLimit, KeyRing};
pub use config::Config;
use fanout::Fanout;
use limits::RateLimiter;
use notifier::{NotifierOptions, NotifierService};
use service::EventLoggerService;

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
    let unscoped = herald::auth::methods_without_scope();
    anyhow::ensure!(
        unscoped.is_empty(),
        "RPCs without a scope in herald::auth::METHODS: {}",
        unscoped.join(", ")
    );
    let rules = config.rules()?;
    let limits = Arc::new(RateLimiter::new(config.default_rate()?));
    let keys = Arc::new(config.key_ring(addr)?);
    let tls = config.server_tls()?;
    let retention = config.retention()?;
    let body = config.body_limits()?;
    if keys.is_open() {
        warn!(%addr, "no --keys-file: every call is allowed without credentials (open mode)");
    }
    let console = match console {
        // Dropped here, so its port closes.
        Some(listener) if config.tls_client_ca.is_some() => {
            drop(listener);
            warn!(
                "no console: it cannot ask browsers for client certificates, and --tls-client-ca requires one on every call (give --console-listen off to silence this)"
            );
            None
        }
        console => console,
    };
    check_console_address(console.as_ref(), keys.is_open())?;
    let backend_config = config.redis.backend().unwrap_or(BackendConfig::Memory);
    let backend = backend::open_with(&backend_config, &config.store_options())
        .context("--redis-url or --redis-cluster")?;
    match backend.store.prepare().await {
        Err(err @ herald::Error::Misconfigured(_)) => return Err(err.into()),
        Err(err) => {
            warn!(storage = %backend_config.location(), error = %err, "cannot check the storage layout yet; it is checked before first use")
        }
        Ok(()) => {}
    }
    if config.embedded_worker.channels.is_some() && !config.runs_worker() {
        warn!(
            "--channels is for an embedded worker, and this logger runs none: give --worker, or the file to the processors"
        );
    }
    if !config.redis.is_set() {
        warn!(
            "NO --redis-url: running on the in-memory backend with an embedded worker. \
             Every event is LOST when this process stops. Use --redis-url for anything that matters."
        );
    }

    let meters = LoggerMetrics::new();
    // Failed authentications per peer, on gRPC and the console alike.
    let failures = config
        .auth_failure_rate()
        .filter(|_| !keys.is_open())
        .map(|rate| FailureLimit::new(rate, meters.auth_failures.clone()));
    let (reporter, health) = tonic_health::server::health_reporter();
    let fanout = Fanout::new(config.subscriber_buffer as usize);
    let mut background = tokio::task::JoinSet::new();
    background.spawn(server::watch_health(
        reporter,
        backend.store.clone(),
        backend_config.location(),
        shutdown.clone(),
    ));
    background.spawn(fanout.clone().tail(backend.feed.clone(), shutdown.clone()));
    background.spawn(retention::run(
        backend.store.clone(),
        backend.queue.clone(),
        retention,
        shutdown.clone(),
    ));
    background.spawn(notifier::retain(
        backend.feed.clone(),
        config.notifications_max_age,
        shutdown.clone(),
    ));

    // The worker stops first, so its last UpdateStatus calls still reach this server.
    let stop_server = CancellationToken::new();
    let mut internal = Vec::new();
    // The embedded worker calls this server like any processor, over a
    // loopback listener of its own that admits only its key: that way it
    // needs neither the server's CA nor a client certificate.
    let worker = if config.runs_worker() {
        let (ring, key) = KeyRing::internal(
            "embedded-worker",
            vec![Scope::EventsProcess, Scope::EventsRead],
        )
        .map_err(|e| anyhow::anyhow!("no randomness for the embedded worker's key: {e}"))?;
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .context("loopback listener of the embedded worker")?;
        let client = Client::connect_lazy(format!("http://{}", listener.local_addr()?))
            .and_then(|c| c.with_api_key(&key))
            .context("embedded worker client")?;
        let worker = Worker::new(
            &backend,
            client,
            line,
            &config.embedded_worker,
            meters.worker.clone(),
        )?;
        let worker = tokio::spawn(worker.run(shutdown.clone()));
        internal.push((
            listener,
            AuthLayer::new(Arc::new(ring), Arc::new(RateLimiter::new(None))),
        ));
        Some(worker)
    } else {
        None
    };
    // The console calls this server too, over a loopback listener that
    // checks the same keys as the public one, with the callers' own keys.
    if let Some(console_listener) = console {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .context("loopback listener of the console")?;
        let client = Client::connect_lazy(format!("http://{}", listener.local_addr()?))
            .context("console client")?;
        internal.push((listener, AuthLayer::new(keys.clone(), limits.clone())));
        let console = Arc::new(
            console::Console::new(
                client,
                keys.clone(),
                backend.feed.clone(),
                shutdown.clone(),
                config.body_timeout,
            )
            .with_failure_limit(failures.clone()),
        );
        background.spawn(console.clone().sample(backend.store.clone()));
        background.spawn(console::serve(console_listener, console, shutdown.clone()));
    }
    {
        let (shutdown, stop_server) = (shutdown.clone(), stop_server.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            if let Some(worker) = worker {
                let _ = worker.await;
            }
            stop_server.cancel();
        });
    }

    info!(%addr, store = backend.kind, worker = config.runs_worker(), tls = config.tls_cert.is_some(), "listening");
    let notifier = NotifierService::new(
        fanout,
        backend.feed.clone(),
        shutdown.clone(),
        NotifierOptions {
            max_streams: config.max_streams_per_client as usize,
            max_buffered_bytes: config.max_buffered_bytes_per_client as usize,
            heartbeat: config.heartbeat,
        },
    );
    if let Some(listener) = metrics {
        let refresh = meters.refresh(
            backend.store.clone(),
            backend.queue.clone(),
            notifier.active_streams(),
        );
        background.spawn(herald_runtime::metrics::serve(
            listener,
            meters.registry.clone(),
            refresh,
            shutdown.clone(),
        ));
    }
    let logger = EventLoggerService::new(
        backend.store.clone(),
        backend.deliveries.clone(),
        rules,
        meters.events.clone(),
    )
    .with_streams(notifier.active_streams())
    .with_message_limit(config.max_message_bytes as usize);
    let served = server::serve(
        listener,
        logger,
        notifier,
        health,
        server::ServeOptions {
            auth: AuthLayer::new(keys, limits).with_failure_limit(failures),
            metrics: meters.rpc.clone(),
            tls,
            internal,
            body,
            http2: config.http2(),
            stop: stop_server,
            grace: config.shutdown_grace,
        },
    )
    .await;
    shutdown.cancel();
    background.shutdown().await;
    served
}

/// Refuses a console without keys anywhere but loopback (anyone who reached
/// it could read every event and redrive dead letters), and warns that a
/// keyed console beyond loopback needs TLS in front of it.
fn check_console_address(console: Option<&TcpListener>, open: bool) -> anyhow::Result<()> {
    let Some(console) = console else {
        return Ok(());
    };
    let console_addr = console.local_addr().context("console address")?;
    if console_addr.ip().is_loopback() {
        return Ok(());
    }
    if open {
        anyhow::bail!(
            "refusing to serve the console on {console_addr} without --keys-file: anyone who \
             can reach it could read every event and redrive dead letters; give --keys-file, \
             or put --console-listen on loopback (127.0.0.1:8088) or off"
        );
    }
    warn!(%console_addr, "the console serves plain HTTP: API keys typed into it cross the network unencrypted; keep it on loopback or put a TLS proxy in front of it");
    Ok(())
}
