//! `herald-processor`: a worker in the consumer group `processors`. For each
//! queued event it sends the notification through the sinks, marks the event
//! PROCESSED through the logger's `UpdateStatus` (with `herald-client`), and
//! only then acknowledges the queue entry. A failed delivery is retried after
//! a growing wait; entries another consumer left pending too long are
//! reclaimed; once the attempts reach `--max-deliveries`, the entry is
//! dead-lettered and its event marked FAILED.
//!
//! # Layout
//! - [`config`]: command-line flags (with `HERALD_*` env twins) and defaults.
//! - [`process`]: logging set-up (`--log-format`) and shutdown on
//!   SIGINT/SIGTERM, shared with the logger binary.
//! - [`sink`]: the [`Sink`] abstraction, the line sink that prints
//!   `Event {event_id} has been sent to {user_id}: {description}`, and the
//!   simulated sink that loses a share of attempts.
//! - [`worker`]: the consume/deliver/update/acknowledge loop, [`run_worker`],
//!   shared with the logger's embedded worker.
//! - [`run`]: the whole processor on Redis, as the binary runs it.

pub mod config;
pub mod process;
pub mod sink;
pub mod worker;

use std::sync::Arc;

use anyhow::Context;
use herald::backend::{self, BackendConfig};
use herald_client::Client;
use tokio_util::sync::CancellationToken;

pub use config::{Config, WorkerConfig};
pub use sink::{LineSink, SimulatedSink, Sink};
pub use worker::run_worker;

/// Runs a processor on Redis until `shutdown` is cancelled, then finishes the
/// events in flight (within the worker's grace time).
pub async fn run(
    config: Config,
    sink: Arc<dyn Sink>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let backend = backend::open(&BackendConfig::Redis {
        url: config.redis_url.clone(),
        prefix: config.redis_prefix.clone(),
    })
    .context("--redis-url")?;
    let tls = config.tls.tls()?;
    let client = Client::connect_lazy_with(config.logger_url.clone(), &tls)
        .context("--logger-url")?
        .with_api_key(&config.api_key)
        .context("--api-key")?;
    tracing::info!(
        consumer = %config.worker.consumer_name,
        logger = %config.logger_url,
        concurrency = config.worker.concurrency,
        "processor started"
    );
    run_worker(
        backend.queue.as_ref(),
        client,
        config.worker.sink_over(sink),
        &config.worker,
        shutdown,
    )
    .await;
    Ok(())
}
