//! `herald-logger`: parses flags, sets up logging, binds and runs [`herald_logger::run`].

use anyhow::Context;
use clap::Parser;
use herald_logger::Config;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::parse();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(herald_processor::signal::cancel_on_signal(shutdown.clone()));
    herald_logger::run(listener, config, shutdown).await
}
