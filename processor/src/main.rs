//! `herald-processor`: parses flags, sets up logging and runs [`herald_processor::run`].

use std::sync::Arc;

use herald_processor::{Config, LineChannel};
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    let config: Config = herald_runtime::process::parse_args();
    let served = config
        .runtime
        .runtime()
        .and_then(|runtime| runtime.block_on(serve(config)));
    herald_runtime::process::exit_with(served)
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
