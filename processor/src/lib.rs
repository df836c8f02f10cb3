//! `herald-processor`: a worker in the consumer group `processors`. For each
//! queued event it sends the notification through the channels its routes
//! choose (the notification line, signed webhooks, IRC), marks the event
//! PROCESSED through the logger's `UpdateStatus` (with `herald-client`) once
//! every channel took it, and only then acknowledges the queue entry. A
//! failed attempt is retried after a growing wait; entries another consumer
//! left pending too long are reclaimed; a channel that keeps failing gives
//! the event up: it is dead-lettered and marked FAILED.
//!
//! # Layout
//! - [`config`]: command-line flags (with `HERALD_*` env twins) and defaults.
//! - [`metrics`]: the worker's own metrics (notifications sent and failed,
//!   dead letters, processing time), also kept by the logger's embedded
//!   worker. The `/metrics` endpoint, logging, signals and OTLP export are
//!   `herald-runtime`'s.
//! - [`channels`]: the [`Channel`] abstraction, the channels file and its
//!   routes, and the channels: the line that prints
//!   `Event {event_id} has been sent to {user_id}: {description}`, webhooks,
//!   IRC, and the simulated channel that loses a share of attempts.
//! - [`worker`]: the consume/deliver/update/acknowledge loop, [`Worker`],
//!   shared with the logger's embedded worker.
//! - [`run`] / [`run_with`]: the whole processor on Redis, as the binary runs it.

pub mod channels;
pub mod config;
pub mod metrics;
pub mod worker;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use herald_client::Client;
use herald_runtime::{metrics as endpoint, process::Backoff};
use herald_storage::{self as storage, EventStore, StoreOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use channels::{Channel, LineChannel, SimulatedChannel};
pub use config::{Config, WorkerArgs};
pub use worker::Worker;

/// Runs a processor on Redis until `shutdown` is cancelled, then finishes the
/// events in flight (within the worker's grace time); serves metrics where
/// `--metrics-listen` says. `line` is where line channels write.
pub async fn run(
    config: Config,
    line: Arc<dyn Channel>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = herald_runtime::http::bind(config.metrics_listen.0, "--metrics-listen").await?;
    run_with(config, metrics, line, shutdown).await
}

/// [`run`], serving metrics on `metrics` (if any) instead of `--metrics-listen`.
pub async fn run_with(
    config: Config,
    metrics: Option<TcpListener>,
    line: Arc<dyn Channel>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let backend_config = config
        .redis
        .backend()
        .context("give --redis-url or --redis-cluster: where Herald's data is")?;
    let backend = storage::open_with(
        &backend_config,
        &StoreOptions {
            partitions: config.redis.partitions(),
            ..StoreOptions::default()
        },
    )
    .context("--redis-url or --redis-cluster")?;
    let tls = config.tls.tls()?;
    let mut client =
        Client::connect_lazy_with(config.logger_url.clone(), &tls).context("--logger-url")?;
    if let Some(key) = &config.api_key {
        client = client.with_api_key(key).context("--api-key")?;
    }
    let registry = prometheus::Registry::new();
    let worker_metrics = metrics::WorkerMetrics::register(&registry);
    // A bad channels file stops the start at once, Redis up or not.
    let worker = Worker::new(
        &backend,
        client.clone(),
        line,
        &config.worker,
        worker_metrics,
    )?;
    wait_until_prepared(
        backend.store.as_ref(),
        &backend_config.location(),
        &shutdown,
    )
    .await?;
    // No event is taken (and no notification sent) before its settle can
    // reach the logger.
    if !wait_for_logger(&client, &config.logger_url, &shutdown).await {
        return Ok(());
    }
    tracing::info!(
        consumer = %config.worker.consumer_name,
        logger = %config.logger_url,
        concurrency = config.worker.concurrency,
        "processor started"
    );
    let serving = metrics.map(|listener| {
        let uptime = endpoint::Uptime::register(&registry);
        let queue_gauges = endpoint::QueueGauges::register(&registry);
        let queue = backend.queue.clone();
        let refresh: endpoint::Refresh = Arc::new(move || {
            let (uptime, queue_gauges, queue) =
                (uptime.clone(), queue_gauges.clone(), queue.clone());
            Box::pin(async move {
                uptime.refresh();
                queue_gauges.refresh(queue.as_ref()).await;
            })
        });
        tokio::spawn(endpoint::serve(
            listener,
            registry,
            refresh,
            shutdown.clone(),
        ))
    });
    worker.run(shutdown).await;
    if let Some(serving) = serving {
        serving.abort();
    }
    Ok(())
}

/// Waits until `store` is prepared (see [`EventStore::prepare`](herald_storage::EventStore::prepare)), retrying
/// while the storage cannot be reached; a storage that holds another layout
/// is an error at once. Returns early (with `Ok`) on `shutdown`.
async fn wait_until_prepared(
    store: &dyn EventStore,
    location: &str,
    shutdown: &CancellationToken,
) -> herald::Result<()> {
    let mut backoff = Backoff::up_to(Duration::from_secs(5));
    loop {
        match store.prepare().await {
            Ok(()) => return Ok(()),
            Err(err @ herald::Error::Misconfigured(_)) => return Err(err),
            Err(err) => {
                tracing::warn!(storage = %location, error = %err, retry_in = ?backoff.next_wait(), "cannot check the storage layout");
                if !backoff.sleep(shutdown).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Waits until the logger at `url` answers a health check (each try within
/// 5 s), warning with its URL while it does not: true once it answers,
/// false when `shutdown` comes first.
async fn wait_for_logger(client: &Client, url: &str, shutdown: &CancellationToken) -> bool {
    let mut backoff = Backoff::up_to(Duration::from_secs(5));
    loop {
        let error = match tokio::time::timeout(Duration::from_secs(5), client.health("")).await {
            Ok(Ok(_)) => return true,
            Ok(Err(err)) => err.to_string(),
            Err(_) => "no answer within 5s".to_owned(),
        };
        tracing::warn!(
            logger = %url,
            error = %error,
            retry_in = ?backoff.next_wait(),
            "cannot reach the logger (--logger-url); no event is taken until it answers"
        );
        if !backoff.sleep(shutdown).await {
            return false;
        }
    }
}
