//! Process plumbing shared by every Herald server binary: a binary's
//! `main` ([`serve_main`]), the async runtime and its worker threads,
//! logging set-up, shutdown on SIGINT or SIGTERM; its flags with a
//! `--config` file under them; the [`Backoff`] of loops that retry until
//! shutdown.
//!
//! Here: `main`, logging and signals; `threads` builds the runtime with the
//! threads the flags ask for and runs the server as its task;
//! `config_file` layers the `--config` file under the flags; `backoff` is
//! [`Backoff`].

mod backoff;
mod config_file;
mod threads;

use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;
pub use config_file::{ConfigError, parse_args, toml_syntax_error, try_parse_args};
pub use threads::{RuntimeArgs, run_as_task};

/// A server binary's `main`: parses its flags into `C` (see [`parse_args`]),
/// starts the runtime `runtime_of` the flags ask for, runs `serve` on it (see
/// [`run_as_task`]) and ends as [`exit_with`] says.
pub fn serve_main<C, Fut>(
    runtime_of: impl FnOnce(&C) -> &RuntimeArgs,
    serve: impl FnOnce(C) -> Fut,
) -> std::process::ExitCode
where
    C: clap::Parser,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let config: C = parse_args();
    let served = runtime_of(&config)
        .runtime()
        .and_then(|runtime| run_as_task(&runtime, serve(config)));
    exit_with(served)
}

/// How a server binary ends: success, or its error on one line
/// (`error: what: why`) with a non-zero status. A start-up error is the
/// user's to fix (a taken port, a bad file), so no backtrace is printed
/// even under `RUST_BACKTRACE=1`.
pub fn exit_with(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Cancels `token` on the first SIGINT or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    shutdown_signal().await;
    tracing::info!("shutdown requested");
    token.cancel();
}

/// How log lines look.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per event (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The logging flags of every Herald server binary.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LogArgs {
    /// Log line format on stderr: text or json (the filter is RUST_LOG,
    /// default info).
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}
