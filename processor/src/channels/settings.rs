//! What each kind of channel, its retries and a route can be set to, as
//! the channels file holds them (see `file` for how the file is read and
//! checked), with their defaults.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

/// One channel's settings, by kind.
#[derive(Clone, Debug, PartialEq)]
pub enum ChannelSettings {
    /// `kind = "line"`: the notification line on standard output.
    Line(LineSettings),
    /// `kind = "simulated"`: loses a share of attempts, prints the rest.
    Simulated(SimulatedSettings),
    /// `kind = "webhook"`: signed HTTP POSTs.
    Webhook(WebhookSettings),
    /// `kind = "irc"`: messages to IRC channels.
    Irc(IrcSettings),
    /// `kind = "email"`: a message per event over SMTP.
    Email(EmailSettings),
}

/// How a channel retries one event. Unset fields take the worker's
/// `--max-deliveries` and `--retry-backoff`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Attempts per event before it is given up (dead-lettered), counting
    /// the attempts of earlier deliveries of its queue entry.
    pub attempts: Option<u64>,
    /// Wait before the first retry; doubles per attempt.
    #[serde(default, deserialize_with = "some_duration")]
    pub backoff: Option<Duration>,
    /// Longest wait between two attempts (default 10s).
    #[serde(default, deserialize_with = "some_duration")]
    pub max_backoff: Option<Duration>,
}

/// Settings of a `line` channel.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LineSettings {
    /// How it retries.
    #[serde(default)]
    pub retry: RetrySettings,
}

/// Settings of a `simulated` channel.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SimulatedSettings {
    /// Share of attempts lost, 0 to 1.
    #[serde(default)]
    pub loss_ratio: f64,
    /// Seed of the losses (default: from the clock).
    pub seed: Option<u64>,
    /// How it retries.
    #[serde(default)]
    pub retry: RetrySettings,
}

/// Settings of a `webhook` channel.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// The endpoint, `http://` or `https://`.
    pub url: String,
    /// With an `https://` url: a PEM file of the CA to trust (default: the
    /// Web PKI roots).
    pub tls_ca: Option<PathBuf>,
    /// The signing secret, `whsec_...` (or `secrets`).
    pub secret: Option<String>,
    /// Several signing secrets while one is rotated: each signs every
    /// message (or `secret`).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Longest one attempt may take, answer included (default 10s).
    #[serde(default = "default_webhook_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Requests in flight to the endpoint at once (default 16).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Also retry 4xx answers (other than 408 and 429, always retried, and
    /// 410, which disables the endpoint); by default they fail at once.
    #[serde(default)]
    pub retry_4xx: bool,
    /// Consecutive failed attempts that open the circuit breaker (default 5).
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker refuses attempts before one is let through
    /// to probe the endpoint (default 30s).
    #[serde(default = "default_breaker_cooldown", deserialize_with = "duration")]
    pub breaker_cooldown: Duration,
    /// How it retries.
    #[serde(default)]
    pub retry: RetrySettings,
}

/// Settings of an `irc` channel.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IrcSettings {
    /// The server, `host:port`.
    pub server: String,
    /// Connect with TLS.
    #[serde(default)]
    pub tls: bool,
    /// With `tls`: a PEM file of the CA to trust (default: the Web PKI roots).
    pub tls_ca: Option<PathBuf>,
    /// The server password (`PASS`), if it needs one.
    pub password: Option<String>,
    /// The nickname (a number is added while it is taken).
    pub nick: String,
    /// The channels to join and write to, such as `#ops`.
    pub channels: Vec<String>,
    /// The message: `{event_id}`, `{user_id}`, `{description}`,
    /// `{category}`, `{type}`, `{session_id}` and `{status}` are replaced
    /// (default: the notification line).
    #[serde(default = "default_template")]
    pub template: String,
    /// Messages per second, at most (default 1): flood control, so the
    /// server never drops the connection.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Messages that may go at once before `rate` applies (default 4).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Longest one message may wait to be sent and confirmed by the server
    /// (default 10s); a server that answers no PING for this long is left
    /// for a new connection.
    #[serde(default = "default_irc_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Longest wait between two reconnections (default 30s); the first is
    /// after 500ms.
    #[serde(default = "default_reconnect_max", deserialize_with = "duration")]
    pub reconnect_max: Duration,
    /// How it retries.
    #[serde(default)]
    pub retry: RetrySettings,
}

/// Settings of an `email` channel.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// The SMTP server, `host:port`.
    pub server: String,
    /// How the connection is secured (default `starttls`).
    #[serde(default)]
    pub tls: EmailTls,
    /// A PEM file of the CA to trust (default: the Web PKI roots).
    pub tls_ca: Option<PathBuf>,
    /// The user to authenticate as, if the server asks.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// The sender, such as `Herald <noreply@example.com>`.
    pub from: String,
    /// The folder of templates (`<type>[.<locale>].subject`, `.txt`,
    /// `.html`; `default.*` for other types).
    pub templates: PathBuf,
    /// A payload field holding the address, used before the recipient's.
    pub address_field: Option<String>,
    /// Signed links in each message: unsubscribe (`List-Unsubscribe`,
    /// RFC 8058 one-click) and, with `open_tracking`, an open pixel.
    pub links: Option<EmailLinks>,
    /// Longest one message may take to send (default 10s).
    #[serde(default = "default_email_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Connections kept open to the server, at most (default 4).
    #[serde(default = "default_pool")]
    pub pool: u32,
    /// Consecutive failed attempts that open the circuit breaker (default 5).
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker refuses attempts (default 30s).
    #[serde(default = "default_breaker_cooldown", deserialize_with = "duration")]
    pub breaker_cooldown: Duration,
    /// How it retries.
    #[serde(default)]
    pub retry: RetrySettings,
}

/// Where an email's links lead, and how they are signed.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailLinks {
    /// The logger's end users' listener as mail readers reach it
    /// (`https://herald.example.com`).
    pub base_url: String,
    /// The logger's `--link-secret`.
    pub secret: String,
    /// Add a 1×1 image to HTML messages whose first fetch marks the
    /// event OPENED.
    #[serde(default)]
    pub open_tracking: bool,
}

/// How an email channel secures its connection.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain, then STARTTLS, which the server must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain text throughout: for a server on the same host only.
    None,
}

/// One route: the events it matches, and the channels it sends them to.
/// Every filter given must match (one of its values); none given matches
/// every event. A value ending in `*` matches every value it starts with.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// Categories to match.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Event types to match, such as `user.*`.
    #[serde(default)]
    pub types: Vec<String>,
    /// User ids to match.
    #[serde(default)]
    pub users: Vec<String>,
    /// Session ids to match.
    #[serde(default)]
    pub sessions: Vec<String>,
    /// The channels the matched events go to.
    pub channels: Vec<String>,
    /// Whether the route's events go out whatever the recipient's
    /// preferences say (security alerts, receipts).
    #[serde(default)]
    pub required: bool,
    /// Whether one user's events matched by the route go out one at a
    /// time, in the order they were created: each waits until the user's
    /// earlier PENDING events are settled.
    #[serde(default)]
    pub ordered: bool,
    /// Whether the route collects each user's events of one type over a
    /// window (opened by the first) and sends them as one notification.
    #[serde(default, deserialize_with = "some_duration")]
    pub digest: Option<Duration>,
    /// The most events of one digest: the one that fills it sends it at
    /// once (default [`DEFAULT_DIGEST_MAX_EVENTS`]).
    #[serde(default)]
    pub max_events: Option<u32>,
}

/// The most events of one digest, unless its route says otherwise.
pub const DEFAULT_DIGEST_MAX_EVENTS: u32 = 100;
/// The most events a route may put in one digest.
pub const MAX_DIGEST_EVENTS: u32 = 1_000;
/// The shortest and longest digest windows.
pub const DIGEST_WINDOWS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600));

/// The default IRC message: the notification line.
pub const DEFAULT_TEMPLATE: &str = "Event {event_id} has been sent to {user_id}: {description}";
/// What an IRC template may name.
pub const TEMPLATE_FIELDS: [&str; 7] = [
    "event_id",
    "user_id",
    "description",
    "category",
    "type",
    "session_id",
    "status",
];

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_concurrency() -> u32 {
    16
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown() -> Duration {
    Duration::from_secs(30)
}
fn default_email_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_pool() -> u32 {
    4
}
fn default_template() -> String {
    DEFAULT_TEMPLATE.to_owned()
}
fn default_rate() -> f64 {
    1.0
}
fn default_burst() -> u32 {
    4
}
fn default_irc_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}

/// A duration as text: `500ms`, `30s`, `5m`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    herald_runtime::flags::duration(&text).map_err(serde::de::Error::custom)
}

fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

impl ChannelSettings {
    /// The channel's retry settings.
    pub fn retry(&self) -> &RetrySettings {
        match self {
            Self::Line(s) => &s.retry,
            Self::Simulated(s) => &s.retry,
            Self::Webhook(s) => &s.retry,
            Self::Irc(s) => &s.retry,
            Self::Email(s) => &s.retry,
        }
    }
}

/// The names in `{...}` of a template.
pub fn template_fields(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name))
}
