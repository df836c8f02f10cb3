//! `herald-processor`: parses flags, sets up logging and runs [`herald_processor::run`].

use std::sync::Arc;

use herald_processor::{Config, LineChannel};
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    herald_runtime::process::serve_main(|config: &Config| &config.runtime, serve)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    herald_runtime::process::init_tracing(config.log.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(herald_runtime::process::cancel_on_signal(shutdown.clone()));
    let spans = herald_runtime::otel::init("herald-processor")?;
    let ran = herald_processor::run(config, Arc::new(LineChannel::stdout()), shutdown).await;
    if let Some(spans) = spans {
        spans.finish().await;
    }
    ran
}
