//! Process plumbing shared by every Herald server binary: a binary's
//! `main` ([`serve_main`]), the async runtime and its worker threads,
//! logging set-up, shutdown on SIGINT or SIGTERM; its flags with a
//! `--config` file under them; the [`Backoff`] of loops that retry until
//! shutdown.
//!
//! Here: `main`, runtime, logging and signals; `config_file` layers the
//! `--config` file under the flags; `backoff` is [`Backoff`].

mod backoff;
mod config_file;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;
pub use config_file::{ConfigError, parse_args, try_parse_args};

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

/// Runs `future` as a task of `runtime` until it ends, the calling thread
/// only waiting for it (or, on a current-thread runtime, running it and
/// every other task); a panic in it goes on unwinding here.
///
/// A future that a multi-threaded runtime's `block_on` runs itself stays on
/// the calling thread while the workers drive the I/O, so each of its
/// wake-ups (a processor's receive loop wakes several times per event)
/// would be handed over between two threads (BENCHMARKS.md §24).
pub fn run_as_task<T, Fut>(runtime: &tokio::runtime::Runtime, future: Fut) -> anyhow::Result<T>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
{
    runtime.block_on(async move {
        match tokio::spawn(future).await {
            Ok(ended) => ended,
            Err(join) => match join.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(cancelled) => Err(anyhow::Error::new(cancelled)),
            },
        }
    })
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

/// The async runtime flags of every Herald server binary.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RuntimeArgs {
    /// Threads that run the server's tasks, 1 to 1024 [default: half the
    /// cores the process may use, at least one]
    #[arg(long, env = "HERALD_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

impl RuntimeArgs {
    /// The worker threads to start: the flag's, or half the cores this
    /// process may use (its CPU quota counted), at least one.
    pub fn threads(&self) -> usize {
        self.worker_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            usize::from,
        )
    }

    /// The runtime, with I/O and timers: for one thread, tokio's
    /// current-thread scheduler on the thread that calls `block_on`; for
    /// more, a multi-threaded one with [`RuntimeArgs::threads`] workers.
    ///
    /// One worker of a multi-threaded runtime would run the same tasks less
    /// well: a task it wakes runs next (its LIFO slot), so each gRPC answer
    /// or Redis command was written on its own as soon as it was ready,
    /// where the current-thread scheduler runs the woken connection task
    /// after the tasks already waiting, and writes what they all gave it at
    /// once (BENCHMARKS.md §25).
    pub fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        let mut builder = match self.threads() {
            1 => tokio::runtime::Builder::new_current_thread(),
            threads => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(threads);
                builder
            }
        };
        builder
            .enable_all()
            .build()
            .context("cannot start the async runtime")
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime_of(threads: u16) -> tokio::runtime::Runtime {
        let args = RuntimeArgs {
            worker_threads: Some(threads),
        };
        args.runtime().expect("a runtime")
    }

    /// The thread `future` ran on, and its name.
    fn ran_on(threads: u16) -> (std::thread::ThreadId, Option<String>) {
        run_as_task(&runtime_of(threads), async {
            let thread = std::thread::current();
            Ok((thread.id(), thread.name().map(str::to_owned)))
        })
        .expect("it ran")
    }

    #[test]
    fn one_thread_is_the_callers_and_more_are_workers() {
        let caller = std::thread::current().id();
        assert_eq!(ran_on(1).0, caller);
        let (thread, name) = ran_on(2);
        assert_ne!(thread, caller);
        assert_eq!(name.as_deref(), Some("tokio-rt-worker"));
    }

    #[test]
    fn its_error_is_returned_and_its_panic_unwinds_in_the_caller() {
        for threads in [1, 2] {
            let runtime = runtime_of(threads);
            let failed: anyhow::Result<()> =
                run_as_task(&runtime, async { Err(anyhow::anyhow!("port taken")) });
            assert_eq!(failed.expect_err("an error").to_string(), "port taken");
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_as_task::<(), _>(&runtime, async { panic!("a bug") })
            }));
            let payload = panicked.expect_err("the panic came through");
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"a bug"));
        }
    }
}
