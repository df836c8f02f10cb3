//! Flags more than one Herald binary takes: TLS towards a logger (the
//! `herald` tool and the processor) and (feature `storage`) where Herald's
//! data is in Redis (the logger and the processor).

use std::time::Duration;

use clap::{Args, FromArgMatches};
#[cfg(feature = "storage")]
use herald::partition::Partitions;
use herald_client::Tls;
#[cfg(feature = "storage")]
use herald_storage::BackendTarget;

/// A group of flags `T` at its defaults, overridden by `args` (flag syntax,
/// without a program name); a bad flag exits as clap does.
pub fn parse_flags<T: Args + FromArgMatches>(name: &'static str, args: &[&str]) -> T {
    let command = T::augment_args(clap::Command::new(name));
    let matches = command.get_matches_from(std::iter::once(name).chain(args.iter().copied()));
    T::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
}

/// Reads a duration flag: humantime, such as `500ms`, `30s`, `5m`, `12h`,
/// `30d` or `1h 30m`; zero is allowed.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e} (expected a duration such as 500ms, 30s, 5m, 12h or 30d)"))
}

/// Reads a duration flag that must be longer than zero.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        Duration::ZERO => Err("must be longer than zero".into()),
        value => Ok(value),
    }
}

/// A reader of duration flags from `min` to `max`, for `value_parser`.
pub fn duration_within(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| match duration(text)? {
        value if value < min => Err(format!(
            "must be at least {}",
            humantime::format_duration(min)
        )),
        value if value > max => Err(format!(
            "must be at most {}",
            humantime::format_duration(max)
        )),
        value => Ok(value),
    }
}

/// Where Herald's data is in Redis: flags shared by `herald-processor` and
/// `herald-logger` (feature `storage`).
#[cfg(feature = "storage")]
#[derive(Args, Clone, Debug)]
pub struct RedisArgs {
    /// Redis holding Herald's data, e.g. redis://127.0.0.1:6379/ (the
    /// logger without it or --redis-cluster: in-memory backend plus an
    /// embedded worker, and nothing survives a restart).
    #[arg(long, env = "HERALD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster holding Herald's data, in place of
    /// --redis-url, e.g. redis://10.0.0.1:7000,redis://10.0.0.2:7000.
    #[arg(
        long,
        env = "HERALD_REDIS_CLUSTER",
        hide_env_values = true,
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        conflicts_with = "redis_url"
    )]
    pub redis_cluster: Vec<String>,
    /// Prefix of every Redis key.
    #[arg(long, env = "HERALD_REDIS_PREFIX", default_value = "herald")]
    pub redis_prefix: String,
    /// Partitions of the Redis keyspace (each in one Redis Cluster slot).
    /// Fixed when a deployment is first used: every logger and processor of
    /// it must give the same number.
    #[arg(long, env = "HERALD_PARTITIONS", default_value_t = herald::partition::DEFAULT_PARTITIONS, value_parser = clap::value_parser!(u16).range(1..=i64::from(herald::partition::MAX_PARTITIONS)))]
    pub partitions: u16,
}

#[cfg(feature = "storage")]
impl RedisArgs {
    /// Flags for one Redis node at `url`, every other flag at its default.
    pub fn node(url: &str) -> Self {
        Self {
            redis_url: Some(url.to_owned()),
            ..Self::parse_from_args(&[])
        }
    }

    /// The defaults, overridden by `args` (flag syntax, without a program name).
    pub fn parse_from_args(args: &[&str]) -> Self {
        parse_flags("redis", args)
    }

    /// Whether a Redis (node or cluster) is named.
    pub fn is_set(&self) -> bool {
        self.redis_url.is_some() || !self.redis_cluster.is_empty()
    }

    /// The backend these flags name; `None` when no Redis is named.
    pub fn backend(&self) -> Option<BackendTarget> {
        let prefix = self.redis_prefix.clone();
        match &self.redis_url {
            Some(url) => Some(BackendTarget::Redis {
                url: url.clone(),
                prefix,
            }),
            None if !self.redis_cluster.is_empty() => Some(BackendTarget::RedisCluster {
                urls: self.redis_cluster.clone(),
                prefix,
            }),
            None => None,
        }
    }

    /// The partitions these flags ask for.
    pub fn partitions(&self) -> Partitions {
        Partitions::new(self.partitions).unwrap_or_default()
    }
}

/// The `--ca-cert`, `--client-cert` and `--client-key` flags (with env twins)
/// of the command-line tool and the processor.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// PEM CA certificate(s) to trust for https:// servers, instead of the
    /// public web roots.
    #[arg(long, env = "HERALD_CA_CERT", global = true)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate, for servers that require one (mutual TLS).
    #[arg(
        long,
        env = "HERALD_CLIENT_CERT",
        global = true,
        requires = "client_key"
    )]
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "HERALD_CLIENT_KEY",
        global = true,
        requires = "client_cert"
    )]
    pub client_key: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// The settings these flags name, files read and checked.
    pub fn tls(&self) -> Result<Tls, herald_client::Error> {
        Tls::from_files(
            self.ca_cert.as_deref(),
            self.client_cert.as_deref(),
            self.client_key.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_humantime_within_their_bounds() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        assert!(duration("3").expect_err("no unit").contains("500ms, 30s"));
        assert_eq!(
            positive_duration("0s"),
            Err("must be longer than zero".into())
        );
        let heartbeat = duration_within(Duration::from_secs(1), Duration::from_secs(3600));
        assert_eq!(heartbeat("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(heartbeat("500ms"), Err("must be at least 1s".into()));
        assert_eq!(heartbeat("2h"), Err("must be at most 1h".into()));
    }
}
