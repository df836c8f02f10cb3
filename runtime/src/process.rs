//! Process plumbing shared by every Herald server binary: flags with a
//! `--config` file under them, logging set-up, the async runtime and its
//! worker threads, shutdown on SIGINT or SIGTERM, and the [`Backoff`] of
//! loops that retry until shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Waits between attempts that keep failing: 100 ms (or another first
/// wait), doubling up to a ceiling, back to the first after a success.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// The first wait.
    const FIRST: Duration = Duration::from_millis(100);

    /// Waits that grow up to `max`.
    pub fn up_to(max: Duration) -> Self {
        Self::between(Self::FIRST, max)
    }

    /// Waits from `first`, growing up to `max`.
    pub fn between(first: Duration, max: Duration) -> Self {
        Self {
            next: first,
            first,
            max: max.max(first),
        }
    }

    /// The wait the next failure will get (for the log line).
    pub fn next_wait(&self) -> Duration {
        self.next
    }

    /// An attempt worked: the next failure waits the first wait again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps the next wait and doubles it; `false` if `shutdown` came first.
    pub async fn sleep(&mut self, shutdown: &CancellationToken) -> bool {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = shutdown.cancelled() => false,
        }
    }
}

/// A server binary's `main`: parses its flags into `C` (see [`parse_args`]),
/// starts the runtime `runtime_of` the flags ask for, runs `serve` on it and
/// ends as [`exit_with`] says.
pub fn serve_main<C, Fut>(
    runtime_of: impl FnOnce(&C) -> &RuntimeArgs,
    serve: impl FnOnce(C) -> Fut,
) -> std::process::ExitCode
where
    C: clap::Parser,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config: C = parse_args();
    let served = runtime_of(&config)
        .runtime()
        .and_then(|runtime| runtime.block_on(serve(config)));
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

    /// A multi-threaded runtime with [`RuntimeArgs::threads`] workers, I/O and timers.
    pub fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.threads())
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
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

/// Parses the command line into `T`, with the values of the `--config`
/// file (TOML; env `HERALD_CONFIG`) under the `HERALD_*` variables and the
/// flags: a flag beats its variable, which beats the file, which beats the
/// default. Exits with a message naming the option on any error, as clap does.
pub fn parse_args<T: clap::Parser>() -> T {
    match try_parse_args(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(ConfigError::Clap(err)) => err.exit(),
        Err(ConfigError::File(message)) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    }
}

/// Why [`try_parse_args`] failed.
#[derive(Debug)]
pub enum ConfigError {
    /// The command line itself (clap's own message; it may be `--help`).
    Clap(clap::Error),
    /// The config file, or a value in it; the message names the file and the option.
    File(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Clap(err) => write!(f, "{err}"),
            Self::File(message) => f.write_str(message),
        }
    }
}

/// [`parse_args`] on `args` (program name first), answering errors.
pub fn try_parse_args<T: clap::Parser>(args: Vec<std::ffi::OsString>) -> Result<T, ConfigError> {
    use clap::parser::ValueSource;

    let command = T::command();
    let matches = command
        .clone()
        .try_get_matches_from(&args)
        .map_err(ConfigError::Clap)?;
    let Some(path) = matches.get_one::<std::path::PathBuf>("config").cloned() else {
        return T::from_arg_matches(&matches).map_err(ConfigError::Clap);
    };
    let shown = path.display();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::File(format!("--config: cannot read {shown}: {e}")))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| ConfigError::File(format!("--config {shown}: not valid TOML: {e}")))?;
    let mut extra: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == id.as_str() && a.get_long().is_some() && id != "config")
            .ok_or_else(|| {
                ConfigError::File(format!(
                    "--config {shown}: unknown option `{key}` (keys are the long flags of --help, without the dashes)"
                ))
            })?;
        // A flag or its variable wins over the file.
        if matches!(
            matches.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let long = arg.get_long().unwrap_or_default();
        let takes_value = arg.get_action().takes_values();
        let scalar = |value: &toml::Value| match value {
            _ if !takes_value => None,
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(n) => Some(n.to_string()),
            toml::Value::Float(x) => Some(x.to_string()),
            toml::Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        };
        match &value {
            toml::Value::Boolean(true) if !takes_value => extra.push(format!("--{long}").into()),
            toml::Value::Boolean(false) if !takes_value => {}
            toml::Value::Array(items) if takes_value => {
                for item in items {
                    let item = scalar(item).ok_or_else(|| {
                        ConfigError::File(format!(
                            "--config {shown}: `{key}` holds a list item that is no plain value"
                        ))
                    })?;
                    extra.push(format!("--{long}={item}").into());
                }
            }
            other => {
                let text = scalar(other).ok_or_else(|| {
                    ConfigError::File(format!(
                        "--config {shown}: `{key}` must be {}",
                        if takes_value {
                            "a string or a number"
                        } else {
                            "true or false"
                        }
                    ))
                })?;
                extra.push(format!("--{long}={text}").into());
            }
        }
    }
    let all: Vec<std::ffi::OsString> = args.into_iter().chain(extra).collect();
    T::try_parse_from(all).map_err(|e| {
        ConfigError::File(format!(
            "--config {shown}: {}",
            e.to_string().trim_start_matches("error: ").trim_end()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_double_up_to_the_ceiling_and_a_success_starts_over() {
        let stopped = CancellationToken::new();
        stopped.cancel();
        let mut backoff = Backoff::up_to(Duration::from_millis(500));
        let mut waits = Vec::new();
        for _ in 0..5 {
            waits.push(backoff.next_wait().as_millis());
            assert!(!backoff.sleep(&stopped).await, "shutdown ends the wait");
        }
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(100));
    }
}
