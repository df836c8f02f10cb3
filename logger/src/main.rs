//! `herald-logger`: parses flags, sets up logging, binds and runs [`herald_logger::run`].

use anyhow::Context;
use herald_logger::Config;
use tokio_util::sync::CancellationToken;

/// mimalloc gives freed memory back to the system within moments (glibc's
/// arenas keep it), so what a burst of subscribers made the logger hold is
/// returned once they are cut off or gone.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    herald_runtime::process::serve_main(|config: &Config| &config.runtime, serve)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    herald_runtime::process::init_tracing(config.log.log_format);
    if config.upgrade_storage {
        return herald_logger::upgrade_storage(&config).await;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(herald_runtime::process::cancel_on_signal(shutdown.clone()));
    let spans = herald_runtime::otel::init("herald-logger")?;
    let ran = herald_logger::run(listener, config, shutdown).await;
    if let Some(spans) = spans {
        spans.finish().await;
    }
    ran
}
