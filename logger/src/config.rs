//! The logger's configuration: clap flags, each with an env twin.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use herald::domain::Rules;
use herald_client::tls::read_pem;
use herald_processor::WorkerArgs;
use herald_runtime::flags::{duration, duration_within, positive_duration};
use herald_storage::StoreOptions;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::{
    auth::KeyRing,
    event_types::{DEFAULT_REGISTRY, EventTypes},
    limits::Rate,
    retention::RetentionOptions,
};

/// The `--retention` age: `None` keeps events forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

/// Reads `--retention`: a duration such as `30d` or `12h`, or `off`.
fn parse_retention(text: &str) -> Result<Retention, String> {
    match text.trim() {
        "off" | "0" => Ok(Retention(None)),
        other => positive_duration(other).map(|age| Retention(Some(age))),
    }
}

/// `herald-logger`: Herald's gRPC front door (EventLogger, Notifier, Inbox,
/// health, reflection). Without --redis-url it runs the whole system in this
/// process on an in-memory backend.
#[derive(Parser, Clone, Debug)]
#[command(name = "herald-logger", version, about)]
pub struct Config {
    /// A TOML file of options: keys are the long flags (`redis-url =
    /// "redis://..."`); flags and HERALD_* variables win over it.
    #[arg(help_heading = "Serving", long, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve gRPC on.
    #[arg(
        help_heading = "Serving",
        long,
        env = "HERALD_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,
    /// Where to serve the console, a live web page of events, at `/`
    /// (`off`: nowhere). It asks for the same API keys as gRPC.
    #[arg(help_heading = "Serving", long, env = "HERALD_CONSOLE_LISTEN", default_value = "127.0.0.1:8088", value_parser = herald_runtime::http::parse_listen)]
    pub console_listen: herald_runtime::http::Listen,
    /// Where to serve end users' endpoints (`off`: nowhere): gRPC-Web and
    /// gRPC for the Notifier, Server-Sent Events at /v1/notifications and
    /// tickets at /v1/tickets, over HTTP/1.1 and HTTP/2 (TLS as on
    /// --listen). Never the console's port.
    #[arg(help_heading = "End users", long, env = "HERALD_WEB_LISTEN", default_value = "off", value_parser = herald_runtime::http::parse_listen)]
    pub web_listen: herald_runtime::http::Listen,
    /// A browser origin allowed to call --web-listen, e.g.
    /// `https://app.example.com` (repeatable; comma-separated in the env
    /// variable). None by default: requests from browsers are refused.
    #[arg(help_heading = "End users", long, env = "HERALD_CORS_ALLOW_ORIGIN", value_delimiter = ',', value_parser = crate::web::parse_origin)]
    pub cors_allow_origin: Vec<http::HeaderValue>,
    /// How long a ticket from POST /v1/tickets stays valid (1s to 5m): it
    /// opens one event stream, within this time.
    #[arg(help_heading = "End users", long, env = "HERALD_TICKET_TTL", default_value = "30s", value_parser = duration_within(Duration::from_secs(1), Duration::from_secs(300)))]
    pub ticket_ttl: Duration,
    /// On shutdown, how long open calls may take to finish.
    #[arg(help_heading = "Serving", long, env = "HERALD_SHUTDOWN_GRACE", default_value = "5s", value_parser = duration)]
    pub shutdown_grace: Duration,
    /// PEM certificate chain to serve TLS with (with --tls-key); without
    /// it, plain HTTP/2.
    #[arg(
        help_heading = "Serving",
        long,
        env = "HERALD_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        help_heading = "Serving",
        long,
        env = "HERALD_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that client certificates must be signed by:
    /// every connection must present one (mutual TLS). Needs --tls-cert.
    #[arg(
        help_heading = "Serving",
        long,
        env = "HERALD_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// Where Herald's data is (none: the in-memory backend).
    #[command(flatten, next_help_heading = "Storage")]
    pub redis: herald_runtime::flags::RedisArgs,
    /// Replicas of the Redis node written to that must have each write
    /// (event creations, status changes) before the call is answered: a
    /// WAIT after each write batch, up to 1 s, then UNAVAILABLE. A
    /// partition whose master has fewer online replicas is refused at once
    /// (UNAVAILABLE) until they are back. 0: answer once the master has it
    /// (a failover may lose the last writes).
    #[arg(help_heading = "Storage", long, env = "HERALD_REDIS_WAIT_REPLICAS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub redis_wait_replicas: u32,
    /// With Redis, also run a processor worker in this process.
    #[arg(help_heading = "Storage", long, env = "HERALD_WORKER")]
    pub worker: bool,
    /// Upgrade the Redis data of the previous version's layout in place,
    /// print what was done and exit (serving nothing). Run it once, with
    /// the deployment's storage flags, while no Herald process runs.
    #[arg(help_heading = "Storage", long)]
    pub upgrade_storage: bool,
    /// Event-type registry: a JSON file of payload schemas per type. Without it,
    /// the registry shipped in config/event-types.json is used.
    #[arg(help_heading = "Events", long, env = "HERALD_EVENT_TYPES")]
    pub event_types: Option<PathBuf>,
    /// Refuse events whose type is not in the registry.
    #[arg(help_heading = "Events", long, env = "HERALD_REJECT_UNKNOWN_TYPES")]
    pub reject_unknown_types: bool,
    /// How far ahead of this server's clock an event's occurred_at may be.
    #[arg(help_heading = "Events", long, env = "HERALD_MAX_FUTURE_SKEW", default_value = "5m", value_parser = duration)]
    pub max_future_skew: Duration,
    /// How old an event's occurred_at may be.
    #[arg(help_heading = "Events", long, env = "HERALD_MAX_EVENT_AGE", default_value = "30d", value_parser = duration)]
    pub max_event_age: Duration,
    /// How far ahead an event may be scheduled (CreateEvent's deliver_at
    /// or deliver_after).
    #[arg(help_heading = "Events", long, env = "HERALD_MAX_SCHEDULE_AHEAD", default_value = "365d", value_parser = duration_within(Duration::from_secs(1), Duration::from_secs(100 * 365 * 24 * 3600)))]
    pub max_schedule_ahead: Duration,
    /// How long a client's request_id keeps answering with the event it
    /// created (at least 1s).
    #[arg(help_heading = "Events", long, env = "HERALD_REQUEST_ID_WINDOW", default_value = "24h", value_parser = duration_within(Duration::from_secs(1), Duration::MAX))]
    pub request_id_window: Duration,
    /// API keys file: per client, its id, the SHA-256 of its key and its
    /// scopes (`herald keys new` makes entries). Without it, every call is
    /// allowed (open mode), and only on a loopback address.
    #[arg(help_heading = "Authentication", long, env = "HERALD_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,
    /// Allow open mode (no keys file) on a non-loopback address.
    #[arg(help_heading = "Authentication", long, env = "HERALD_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
    /// Secret that end users' tokens are signed with (JWT, HS256, with `sub`
    /// the user id and an `exp`): such a token may Subscribe to its user's
    /// notifications and mark its user's events OPENED, nothing else.
    #[arg(
        help_heading = "Authentication",
        long,
        env = "HERALD_USER_TOKEN_SECRET",
        hide_env_values = true
    )]
    pub user_token_secret: Option<String>,
    /// Secret of the links in emails (unsubscribe, open pixel), the same
    /// as the email channels' `links.secret`, at least 16 bytes; without
    /// it those links are refused.
    #[arg(
        help_heading = "Authentication",
        long,
        env = "HERALD_LINK_SECRET",
        hide_env_values = true
    )]
    pub link_secret: Option<String>,
    /// How far a user token's `exp` and `nbf` may be off (clock skew
    /// between its signer and this server), e.g. 5s; 0s for none.
    #[arg(help_heading = "Authentication", long, env = "HERALD_USER_TOKEN_LEEWAY", default_value = "5s", value_parser = duration_within(Duration::ZERO, Duration::from_secs(300)))]
    pub user_token_leeway: Duration,
    /// Calls a second each client may make on average (0: no limit); a key's
    /// own rate_per_sec in the keys file wins.
    #[arg(
        help_heading = "Limits",
        long,
        env = "HERALD_RATE_LIMIT",
        default_value_t = 0.0
    )]
    pub rate_limit: f64,
    /// Calls a client may make at once after a quiet spell (default: one second's worth).
    #[arg(help_heading = "Limits", long, env = "HERALD_RATE_BURST")]
    pub rate_burst: Option<f64>,
    /// Failed authentications (a missing, unknown or invalid key or token)
    /// one peer address may make a minute, all at once at most; past it
    /// its calls are RESOURCE_EXHAUSTED, credentials unread, until the
    /// allowance comes back (0: no limit).
    #[arg(
        help_heading = "Limits",
        long,
        env = "HERALD_AUTH_FAILURES_PER_MINUTE",
        default_value_t = 60
    )]
    pub auth_failures_per_minute: u32,
    /// Subscribe streams one client (or user) may hold open at once.
    #[arg(help_heading = "Limits", long, env = "HERALD_MAX_STREAMS_PER_CLIENT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_streams_per_client: u64,
    /// Bytes (encoded messages) the Subscribe queues of one client (or user)
    /// may hold together; a stream whose message would pass it is cut off
    /// like one whose queue is full.
    #[arg(help_heading = "Limits", long, env = "HERALD_MAX_BUFFERED_BYTES_PER_CLIENT", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(64 * 1024..))]
    pub max_buffered_bytes_per_client: u64,
    /// Largest request or response message, in bytes (at least 256 KiB, so
    /// that the largest event fits in an answer).
    #[arg(help_heading = "Limits", long, env = "HERALD_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(256 * 1024..=64 * 1024 * 1024))]
    pub max_message_bytes: u64,
    /// How long a request's message may take to arrive whole, e.g. 10s;
    /// a slower one is refused with DEADLINE_EXCEEDED and its bytes freed
    /// (and a console change's body with 408).
    #[arg(help_heading = "Limits", long, env = "HERALD_BODY_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub body_timeout: Duration,
    /// Bytes of request messages all calls may hold at once (being received
    /// or served); a call past it is refused with RESOURCE_EXHAUSTED.
    #[arg(help_heading = "Limits", long, env = "HERALD_MAX_PENDING_REQUEST_BYTES", default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(256 * 1024..=4 * 1024 * 1024 * 1024 - 1))]
    pub max_pending_request_bytes: u64,
    /// Calls (HTTP/2 streams) one connection may have open at once.
    #[arg(help_heading = "Limits", long, env = "HERALD_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_concurrent_streams: u32,
    /// Largest header list (metadata) of one request, in bytes.
    #[arg(help_heading = "Limits", long, env = "HERALD_HTTP2_MAX_HEADER_LIST_SIZE", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u32).range(1024..=1024 * 1024))]
    pub http2_max_header_list_size: u32,
    /// Time between HTTP/2 keepalive pings to each client, e.g. 30s.
    #[arg(help_heading = "Limits", long, env = "HERALD_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = positive_duration)]
    pub http2_keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is
    /// closed, e.g. 10s.
    #[arg(help_heading = "Limits", long, env = "HERALD_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub http2_keepalive_timeout: Duration,
    /// Messages buffered per subscriber; one that falls further behind is cut off.
    #[arg(help_heading = "Subscriptions", long, env = "HERALD_SUBSCRIBER_BUFFER", default_value_t = 1_024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub subscriber_buffer: u32,
    /// Idle time after which a Subscribe stream gets a heartbeat (1s to 1h;
    /// it comes within twice that).
    #[arg(help_heading = "Subscriptions", long, env = "HERALD_HEARTBEAT", default_value = "15s", value_parser = duration_within(Duration::from_secs(1), Duration::from_secs(3600)))]
    pub heartbeat: Duration,
    /// Most entries each partition's notification log keeps for resuming
    /// subscribers; older ones are trimmed as new ones arrive.
    #[arg(help_heading = "Subscriptions", long, env = "HERALD_NOTIFICATIONS_MAX_LEN", default_value_t = herald_storage::DEFAULT_NOTIFICATIONS_MAX_LEN as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub notifications_max_len: u64,
    /// Oldest entry the notification log keeps (at least 1s).
    #[arg(help_heading = "Subscriptions", long, env = "HERALD_NOTIFICATIONS_MAX_AGE", default_value = "24h", value_parser = duration_within(Duration::from_secs(1), Duration::MAX))]
    pub notifications_max_age: Duration,
    /// Events older than this (by occurred_at and created_at) are removed,
    /// with their index entries, and so are dead letters as old; PENDING
    /// events always stay. E.g. 30d, 12h, 90m; `off` keeps everything.
    #[arg(help_heading = "Retention", long, env = "HERALD_RETENTION", default_value = "7d", value_parser = parse_retention)]
    pub retention: Retention,
    /// Time between two retention sweeps (which also trim the work queue
    /// below what every consumer group has acknowledged), e.g. 1m, 30s.
    #[arg(help_heading = "Retention", long, env = "HERALD_RETENTION_INTERVAL", default_value = "1m", value_parser = positive_duration)]
    pub retention_interval: Duration,
    /// Most events one retention slice (one Redis script) looks at.
    #[arg(help_heading = "Retention", long, env = "HERALD_RETENTION_SLICE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub retention_slice: u32,
    /// Where to serve Prometheus metrics on /metrics (`off`: nowhere).
    #[arg(help_heading = "Telemetry", long, env = "HERALD_METRICS_LISTEN", default_value = "127.0.0.1:9464", value_parser = herald_runtime::http::parse_listen)]
    pub metrics_listen: herald_runtime::http::Listen,
    /// Logging flags.
    #[command(flatten, next_help_heading = "Telemetry")]
    pub log: herald_runtime::process::LogArgs,
    /// The async runtime's threads.
    #[command(flatten, next_help_heading = "Serving")]
    pub runtime: herald_runtime::process::RuntimeArgs,
    /// Flags of the embedded worker.
    #[command(flatten, next_help_heading = "Embedded worker")]
    pub embedded_worker: WorkerArgs,
}

impl Config {
    /// Parses flags (and env twins) from `args`, program name excluded; for tests.
    pub fn from_args(args: &[&str]) -> Self {
        Self::parse_from(std::iter::once("herald-logger").chain(args.iter().copied()))
    }

    /// The limits on request bodies; the error says what to fix.
    pub fn body_limits(&self) -> anyhow::Result<crate::guard::BodyLimits> {
        if self.max_pending_request_bytes < self.max_message_bytes {
            anyhow::bail!(
                "--max-pending-request-bytes ({}) must be at least --max-message-bytes ({})",
                self.max_pending_request_bytes,
                self.max_message_bytes
            );
        }
        Ok(crate::guard::BodyLimits::new(
            self.max_message_bytes as usize,
            self.body_timeout,
            self.max_pending_request_bytes as usize,
        ))
    }

    /// What one HTTP/2 connection may hold.
    pub fn http2(&self) -> crate::server::Http2Options {
        crate::server::Http2Options {
            max_concurrent_streams: self.http2_max_concurrent_streams,
            max_header_list_size: self.http2_max_header_list_size,
            keepalive_interval: self.http2_keepalive_interval,
            keepalive_timeout: self.http2_keepalive_timeout,
        }
    }

    /// The validation rules: the event-type registry (loaded and compiled now)
    /// and the timestamp bounds. The error says what to fix.
    pub fn rules(&self) -> anyhow::Result<Rules> {
        let types = match &self.event_types {
            Some(path) => EventTypes::load(path).context("--event-types")?,
            None => EventTypes::parse(DEFAULT_REGISTRY).context("the shipped event types")?,
        };
        Ok(Rules {
            types: Arc::new(types),
            reject_unknown_types: self.reject_unknown_types,
            max_future_skew: self.max_future_skew,
            max_age: self.max_event_age,
            max_schedule_ahead: self.max_schedule_ahead,
        })
    }

    /// The API keys, checked against where the server listens: open mode is
    /// refused off loopback unless --allow-anonymous.
    pub fn key_ring(&self, listen: SocketAddr) -> anyhow::Result<KeyRing> {
        let ring = match &self.keys_file {
            Some(path) => KeyRing::load(path).context("--keys-file"),
            None if listen.ip().is_loopback() || self.allow_anonymous => Ok(KeyRing::open()),
            None => anyhow::bail!(
                "refusing to serve {listen} without --keys-file: anyone who can reach it could \
                 write events; give a keys file, listen on loopback, or pass --allow-anonymous"
            ),
        }?;
        Ok(match self.user_token_secret.as_deref() {
            Some(secret) => {
                herald::auth::check_user_token_secret(secret)
                    .map_err(|why| anyhow::anyhow!("--user-token-secret {why}"))?;
                ring.with_user_secret(secret, self.user_token_leeway)
            }
            None => ring,
        })
    }

    /// The signer of emails' links (`--link-secret`), checked.
    pub fn link_signer(&self) -> anyhow::Result<Option<herald::links::LinkSigner>> {
        self.link_secret
            .as_deref()
            .map(|secret| {
                herald::auth::check_user_token_secret(secret)
                    .map_err(|why| anyhow::anyhow!("--link-secret {why}"))?;
                Ok(herald::links::LinkSigner::new(secret))
            })
            .transpose()
    }

    /// The allowance of failed authentications per peer address: `None`
    /// when unlimited.
    pub fn auth_failure_rate(&self) -> Option<Rate> {
        let per_minute = f64::from(self.auth_failures_per_minute);
        (per_minute > 0.0).then_some(Rate {
            per_sec: per_minute / 60.0,
            burst: per_minute,
        })
    }

    /// The default rate limit, checked: `None` when unlimited.
    pub fn default_rate(&self) -> anyhow::Result<Option<Rate>> {
        match (self.rate_limit, self.rate_burst) {
            (r, _) if r < 0.0 || !r.is_finite() => {
                anyhow::bail!("--rate-limit must be 0 or a positive number")
            }
            (0.0, _) => Ok(None),
            (_, Some(b)) if b < 1.0 || !b.is_finite() => {
                anyhow::bail!("--rate-burst must be at least 1")
            }
            (per_sec, burst) => Ok(Some(Rate {
                per_sec,
                burst: burst.unwrap_or(per_sec).max(1.0),
            })),
        }
    }

    /// The TLS settings, files read: `None` for plain HTTP/2. The error names the flag.
    pub fn server_tls(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let Some(identity) = self.tls_identity()? else {
            return Ok(None);
        };
        let mut tls = ServerTlsConfig::new()
            .identity(identity)
            .timeout(Duration::from_secs(10));
        if let Some(ca) = &self.tls_client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read_pem(
                ca,
                "CERTIFICATE",
                "--tls-client-ca",
            )?));
        }
        Ok(Some(tls))
    }

    /// The TLS settings of the end users' listener: the same certificate,
    /// no client certificates (browsers have none). `None`: plain HTTP.
    pub fn web_tls(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        Ok(self.tls_identity()?.map(|identity| {
            ServerTlsConfig::new()
                .identity(identity)
                .timeout(Duration::from_secs(10))
        }))
    }

    /// The certificate and key of `--tls-cert` and `--tls-key`, read.
    fn tls_identity(&self) -> anyhow::Result<Option<Identity>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        Ok(Some(Identity::from_pem(
            read_pem(cert, "CERTIFICATE", "--tls-cert")?,
            read_pem(key, "PRIVATE KEY", "--tls-key")?,
        )))
    }

    /// How retention runs; the error says what to fix.
    pub fn retention(&self) -> anyhow::Result<RetentionOptions> {
        if let Retention(Some(max_age)) = self.retention
            && max_age <= self.request_id_window
        {
            anyhow::bail!(
                "--retention ({}) must be longer than --request-id-window ({}): a \
                 repeated request id must still find the event it created",
                humantime::format_duration(max_age),
                humantime::format_duration(self.request_id_window)
            );
        }
        Ok(RetentionOptions {
            max_age: self.retention.0,
            interval: self.retention_interval,
            slice: self.retention_slice as usize,
        })
    }

    /// The store's options.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            request_id_window: self.request_id_window,
            notifications_max_len: usize::try_from(self.notifications_max_len)
                .unwrap_or(usize::MAX),
            partitions: self.redis.partitions(),
            wait_replicas: self.redis_wait_replicas,
        }
    }

    /// Whether this process runs a worker: always on memory, on request with Redis.
    pub fn runs_worker(&self) -> bool {
        !self.redis.is_set() || self.worker
    }
}
