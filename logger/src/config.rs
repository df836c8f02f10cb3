//! The logger's configuration: clap flags, each with an env twin.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use herald_processor::WorkerConfig;

/// `herald-logger`: Herald's gRPC front door (EventLogger, Notifier, health,
/// reflection). Without --redis-url it runs the whole system in this process on
/// an in-memory backend.
#[derive(Parser, Clone, Debug)]
#[command(name = "herald-logger", version, about)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Redis holding Herald's data, e.g. redis://127.0.0.1:6379/. Without it:
    /// in-memory backend plus an embedded worker, and nothing survives a restart.
    #[arg(long, env = "HERALD_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key.
    #[arg(long, env = "HERALD_REDIS_PREFIX", default_value = "herald")]
    pub redis_prefix: String,
    /// With --redis-url, also run a processor worker in this process.
    #[arg(long, env = "HERALD_WORKER")]
    pub worker: bool,
    /// On shutdown, how long open calls may take to finish (milliseconds).
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE_MS", default_value_t = 5_000)]
    pub shutdown_grace_ms: u64,
    /// Messages buffered per subscriber; one that falls further behind is cut off.
    #[arg(long, env = "HERALD_SUBSCRIBER_BUFFER", default_value_t = 1_024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub subscriber_buffer: u32,
    /// Flags of the embedded worker.
    #[command(flatten)]
    pub embedded_worker: WorkerConfig,
}

impl Config {
    /// Parses flags (and env twins) from `args`, program name excluded; for tests.
    pub fn from_args(args: &[&str]) -> Self {
        Self::parse_from(std::iter::once("herald-logger").chain(args.iter().copied()))
    }

    /// Shutdown grace time.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// Whether this process runs a worker: always on memory, on request with Redis.
    pub fn runs_worker(&self) -> bool {
        self.redis_url.is_none() || self.worker
    }
}
