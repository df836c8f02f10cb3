//! `herald-processor`: parses flags, sets up logging and runs [`herald_processor::run`].

use std::sync::Arc;

use clap::Parser;
use herald_processor::{Config, LineSink};
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
    let shutdown = CancellationToken::new();
    tokio::spawn(herald_processor::signal::cancel_on_signal(shutdown.clone()));
    herald_processor::run(config, Arc::new(LineSink::stdout()), shutdown).await
}
