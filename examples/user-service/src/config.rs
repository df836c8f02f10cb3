//! The service's flags, each with an env twin.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;

/// `user-service`: a user REST API over SQLite that publishes
/// `user.created`, `user.updated` and `user.deleted` to Herald.
#[derive(Parser, Clone, Debug)]
#[command(name = "user-service", version, about)]
pub struct Config {
    /// Address to serve the REST API (and /metrics) on.
    #[arg(long, env = "USER_SERVICE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The SQLite file holding the users (created if missing).
    #[arg(long, env = "USER_SERVICE_DATABASE", default_value = "users.db")]
    pub database: PathBuf,
    /// The Herald logger events are published to.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:50051")]
    pub herald_url: String,
    /// API key for Herald (scope events:write); none for a logger in open mode.
    #[arg(
        long,
        env = "HERALD_API_KEY",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub api_key: String,
}

impl Config {
    /// The flags in `args` (without the program name), the rest at their defaults.
    pub fn from_args(args: &[&str]) -> Self {
        Self::parse_from(std::iter::once("user-service").chain(args.iter().copied()))
    }
}
