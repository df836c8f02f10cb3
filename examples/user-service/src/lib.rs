//! `user-service`: an example of a service built on `herald-client`. A REST
//! API over SQLite manages users; after each write is committed it publishes
//! `user.created`, `user.updated` or `user.deleted` (category `user`, the
//! user's id as `user_id`) through a [`herald_client::Publisher`], so a slow
//! or stopped Herald never fails or slows a request. `/metrics` shows users by
//! state, events by type and outcome, and uptime.
//!
//! # Layout
//! - [`config`]: flags with env twins (`--listen`, `--database`,
//!   `--herald-url`, `--api-key`).
//! - [`store`]: the users table (SQLite), one transaction per write.
//! - [`api`]: the routes, input checks and the events.
//! - [`metrics`]: the in-memory counts behind `/metrics`, and their text.
//! - [`run`]: the whole service on a listener, until shutdown.

pub mod api;
pub mod config;
pub mod metrics;
pub mod store;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use herald_client::{Client, Observer, Publisher, PublisherOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Serves the API on `listener` until `shutdown` is cancelled, then sends
/// the events still buffered (for at most five seconds).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = store::Store::open(&config.database)
        .with_context(|| format!("--database {}", config.database.display()))?;
    let counts = store.counts().await.context("reading the users table")?;
    let metrics = Arc::new(metrics::Metrics::new(counts));
    let client = Client::connect_lazy(config.herald_url.clone())
        .context("--herald-url")?
        .with_api_key(&config.api_key)
        .context("--api-key")?;
    let observed = metrics.clone();
    let publisher = Publisher::new(
        client,
        PublisherOptions {
            observer: Some(Observer::new(move |outcome, event_type| {
                observed.observe(outcome, event_type);
            })),
            ..PublisherOptions::default()
        },
    );
    tracing::info!(
        listen = %listener.local_addr()?,
        herald = %config.herald_url,
        "user service started"
    );
    let app = api::router(store, publisher.clone(), metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving the API")?;
    let stats = publisher.close(Duration::from_secs(5)).await;
    tracing::info!(
        published = stats.published,
        dropped = stats.dropped,
        "user service stopped"
    );
    Ok(())
}
