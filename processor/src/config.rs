//! The processor's configuration: clap flags, each with an env twin.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser};
use herald::random::parse_ratio;
use herald_runtime::flags::{
    RedisArgs, TlsArgs, duration, duration_within, parse_flags, positive_duration,
};

/// Flags of a worker, shared by `herald-processor` and the logger's embedded worker.
#[derive(Args, Clone, Debug)]
pub struct WorkerArgs {
    /// Name of this consumer in the group; unique per processor.
    #[arg(long, env = "HERALD_CONSUMER_NAME", default_value_t = default_consumer_name())]
    pub consumer_name: String,
    /// Events in flight at once.
    #[arg(long, env = "HERALD_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Reclaim entries pending longer than this from other consumers.
    #[arg(long, env = "HERALD_CLAIM_IDLE", default_value = "30s", value_parser = positive_duration)]
    pub claim_idle: Duration,
    /// Attempts per event and channel before the event is given up
    /// (FAILED, dead-lettered), and deliveries of a queue entry before it is
    /// (a channel's `retry.attempts` overrides the first).
    #[arg(long, env = "HERALD_MAX_DELIVERIES", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_deliveries: u64,
    /// Wait before retrying a failed attempt; doubles per attempt up to
    /// 10 s (a channel's `retry.backoff` and `retry.max_backoff` override it).
    #[arg(long, env = "HERALD_RETRY_BACKOFF", default_value = "100ms", value_parser = duration)]
    pub retry_backoff: Duration,
    /// A channels file (TOML): named channels (line, webhook, irc,
    /// simulated) and the routes that choose them per event; reloaded on
    /// SIGHUP. Every setting is documented in config/channels.example.toml.
    /// Without one, every event goes to the one channel --sink names.
    #[arg(long, env = "HERALD_CHANNELS")]
    pub channels: Option<PathBuf>,
    /// Without --channels, where notifications go: `line` (print the
    /// notification line) or `simulated` (lose --loss-ratio of attempts,
    /// print the rest).
    #[arg(long, env = "HERALD_SINK", value_enum, default_value_t = SinkKind::Line)]
    pub sink: SinkKind,
    /// With --sink simulated: the share of delivery attempts lost (0 to 1).
    #[arg(long, env = "HERALD_LOSS_RATIO", default_value_t = 0.0, value_parser = parse_ratio)]
    pub loss_ratio: f64,
    /// With --sink simulated: seed of the losses (default: from the clock).
    #[arg(long, env = "HERALD_SINK_SEED")]
    pub sink_seed: Option<u64>,
    /// Longest wait of one blocking read for new entries (up to 1m).
    #[arg(long, env = "HERALD_BLOCK", default_value = "2s", value_parser = duration_within(Duration::from_millis(1), Duration::from_secs(60)))]
    pub block: Duration,
    /// On shutdown, how long events in flight may take to finish.
    #[arg(long, env = "HERALD_WORKER_GRACE", default_value = "10s", value_parser = duration)]
    pub worker_grace: Duration,
}

/// Which sink a worker delivers through.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkKind {
    /// Print the notification line.
    Line,
    /// Lose a share of attempts (`--loss-ratio`), print the rest.
    Simulated,
}

impl Default for WorkerArgs {
    fn default() -> Self {
        Self::parse_from_args(&[])
    }
}

impl WorkerArgs {
    /// The defaults, overridden by `args` (flag syntax, without a program name).
    pub fn parse_from_args(args: &[&str]) -> Self {
        parse_flags("worker", args)
    }
}

/// `herald-processor`: consumes Herald's event stream and sends notifications.
#[derive(Parser, Clone, Debug)]
#[command(name = "herald-processor", version, about)]
pub struct Config {
    /// A TOML file of options: keys are the long flags (`redis-url =
    /// "redis://..."`); flags and HERALD_* variables win over it.
    #[arg(long, env = "HERALD_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Where Herald's data is: --redis-url or --redis-cluster (one is needed).
    #[command(flatten, next_help_heading = "Storage")]
    pub redis: RedisArgs,
    /// The logger whose UpdateStatus marks events processed (http:// or https://).
    #[arg(
        long,
        help_heading = "Logger",
        env = "HERALD_LOGGER_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub logger_url: String,
    /// API key for the logger (needs the events:process scope); none in open mode.
    #[arg(
        long,
        help_heading = "Logger",
        env = "HERALD_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// TLS towards an https:// logger: the CA to trust and the client certificate.
    #[command(flatten, next_help_heading = "Logger")]
    pub tls: TlsArgs,
    /// Where to serve Prometheus metrics on /metrics (`off`: nowhere).
    #[arg(long, help_heading = "Telemetry", env = "HERALD_METRICS_LISTEN", default_value = "127.0.0.1:9465", value_parser = herald_runtime::http::parse_listen)]
    pub metrics_listen: herald_runtime::http::Listen,
    /// Worker flags.
    #[command(flatten, next_help_heading = "Worker")]
    pub worker: WorkerArgs,
    /// Logging flags.
    #[command(flatten, next_help_heading = "Telemetry")]
    pub log: herald_runtime::process::LogArgs,
    /// The async runtime's threads.
    #[command(flatten, next_help_heading = "Worker")]
    pub runtime: herald_runtime::process::RuntimeArgs,
}

/// `{host name}-{pid}`: unique per process on a host.
pub fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "herald".to_owned());
    format!("{host}-{}", std::process::id())
}
