//! Where notifications go: channels (the notification line, signed
//! webhooks, IRC, email, the simulated one), chosen per event by routes.
//!
//! A [`Channel`] makes one attempt at a time and says, when it fails,
//! whether to retry (and when), to give up, or to leave the event for later
//! (nothing was sent: a breaker is open, the endpoint is busy). The worker
//! runs the attempts, records each, and marks the event PROCESSED once
//! every chosen channel took it. [`Channels`] holds the set in use and
//! swaps it for a new one when the channels file is reloaded; deliveries
//! under way finish on the set they started with.
//!
//! # Layout
//! - [`file`](mod@file): the channels file, read and checked.
//! - [`settings`]: what each kind of channel and a route can be set to.
//! - [`routes`]: which channels an event goes to.
//! - [`line`](mod@line): the notification line and the simulated channel.
//! - [`webhook`]: signed HTTP POSTs, with a per-endpoint concurrency limit
//!   and circuit breaker ([`breaker`]).
//! - [`irc`]: an IRC client that stays connected, with flood control.
//! - [`email`]: messages over SMTP, rendered from templates.

pub mod breaker;
pub mod email;
pub mod file;
pub mod irc;
pub mod line;
pub mod routes;
pub mod settings;
pub mod webhook;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use async_trait::async_trait;
use herald::{
    Event,
    domain::{ChannelKind, Recipient},
    random::SplitMix64,
};
use tracing::{info, warn};

pub use file::{ChannelsError, ChannelsFile};
pub use line::{LineChannel, SimulatedChannel, notification_line};
pub use settings::ChannelSettings;

use crate::{
    config::{SinkKind, WorkerArgs},
    metrics::WorkerMetrics,
};
use routes::Route;

/// A destination of notifications.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// One attempt to send `event` to its user, whose recipient record
    /// (read for this delivery, if the user has one) is `recipient`.
    async fn send(&self, event: &Event, recipient: Option<&Recipient>) -> Result<Sent, Failure>;
    /// The kind of channel.
    fn kind(&self) -> ChannelKind;
    /// Where it sends, as attempts record it.
    fn target(&self) -> String;
}

/// What a successful attempt tells.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// The HTTP status answered, for a webhook.
    pub http_status: Option<u16>,
}

/// A failed attempt: why, and what to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Why, as metrics' `reason` label says it.
    pub reason: Reason,
    /// What went wrong, for logs, attempts and dead letters.
    pub error: String,
    /// The HTTP status answered, if any.
    pub http_status: Option<u16>,
    /// What the worker does next.
    pub next: Next,
    /// Whether anything was sent (an attempt to record) or the channel
    /// refused at once (an open breaker, a disabled endpoint).
    pub attempted: bool,
}

/// Why an attempt failed, or why a channel left an event for later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No answer in time.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// The HTTP exchange broke off.
    Http,
    /// A 4xx answer (408 and 429 included).
    Http4xx,
    /// A 5xx answer.
    Http5xx,
    /// Another answer that is no success (a redirect).
    HttpOther,
    /// 410 Gone: the endpoint is disabled until the next reload.
    Gone,
    /// The request could not be built.
    Request,
    /// The endpoint is disabled (after a 410): nothing was sent.
    Disabled,
    /// The endpoint or connection is saturated: nothing was sent.
    Busy,
    /// The circuit breaker is open: nothing was sent.
    CircuitOpen,
    /// The connection dropped before the message was confirmed.
    Disconnected,
    /// Writing failed.
    Io,
    /// The simulated channel lost the notification on purpose.
    SimulatedLoss,
    /// A 4xx SMTP answer.
    Smtp4xx,
    /// A 5xx SMTP answer.
    Smtp5xx,
    /// The user has no address for the channel: nothing was sent.
    NoAddress,
}

impl Reason {
    /// The label value in `herald_notifications_failed_total{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Http => "http",
            Self::Http4xx => "http_4xx",
            Self::Http5xx => "http_5xx",
            Self::HttpOther => "http_other",
            Self::Gone => "gone",
            Self::Request => "request",
            Self::Disabled => "disabled",
            Self::Busy => "busy",
            Self::CircuitOpen => "circuit_open",
            Self::Disconnected => "disconnected",
            Self::Io => "io",
            Self::SimulatedLoss => "simulated_loss",
            Self::Smtp4xx => "smtp_4xx",
            Self::Smtp5xx => "smtp_5xx",
            Self::NoAddress => "no_address",
        }
    }
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again: after the wait given (a `Retry-After`), or the channel's backoff.
    Retry(Option<Duration>),
    /// Give the event up for this channel: it cannot succeed as it is.
    GiveUp,
    /// Leave the event for later (it is delivered again after the
    /// worker's claim idle time) without counting an attempt.
    Later,
    /// The channel cannot send to this user (no address): it is done with
    /// the event, recorded as a skipped attempt.
    Skip,
}

impl Failure {
    /// An attempt that failed and may succeed if tried again.
    pub fn retry(reason: Reason, error: impl Into<String>) -> Self {
        Self {
            reason,
            error: error.into(),
            http_status: None,
            next: Next::Retry(None),
            attempted: true,
        }
    }

    /// An attempt that failed and would fail again.
    pub fn give_up(reason: Reason, error: impl Into<String>) -> Self {
        Self {
            next: Next::GiveUp,
            ..Self::retry(reason, error)
        }
    }

    /// Nothing to send to: the channel is done with the event (skipped).
    pub fn skip(reason: Reason, error: impl Into<String>) -> Self {
        Self {
            next: Next::Skip,
            attempted: false,
            ..Self::retry(reason, error)
        }
    }

    /// A refusal without an attempt: leave the event for later.
    pub fn later(reason: Reason, error: impl Into<String>) -> Self {
        Self {
            next: Next::Later,
            attempted: false,
            ..Self::retry(reason, error)
        }
    }
}

/// A setting a channel cannot be built with: where it is in the channels
/// file, and what is wrong (read into [`ChannelsError`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct SettingError {
    /// The field (`tls_ca`), or in the file (`channels.hooks.tls_ca`).
    pub at: String,
    /// What is wrong.
    pub message: String,
}

impl SettingError {
    /// A setting `at` that is wrong for `message`.
    pub fn new(at: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            at: at.into(),
            message: message.into(),
        }
    }

    /// The same error, placed in channel `name`'s table.
    fn in_channel(self, name: &str) -> Self {
        Self {
            at: format!("channels.{name}.{}", self.at),
            ..self
        }
    }
}

/// How a channel retries one event: up to `attempts` attempts, waiting
/// `backoff` before the first retry and twice as long before each next one,
/// up to `max_backoff`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts before the event is given up (earlier deliveries' included).
    pub attempts: u64,
    /// Wait before the first retry.
    pub backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
    /// Whether waits are spread over their upper half at random, so that
    /// the retries of many events do not arrive together.
    pub jitter: bool,
}

/// The longest wait between two attempts, unless a channel says otherwise.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);

impl RetryPolicy {
    /// The wait before retry number `attempt` (1 for the first retry).
    pub fn wait(&self, attempt: u64, rng: &mut SplitMix64) -> Duration {
        let shift = attempt.saturating_sub(1).min(30) as u32;
        let full = self
            .backoff
            .saturating_mul(1 << shift)
            .min(self.max_backoff);
        if self.jitter {
            full.mul_f64(0.5 + rng.next_f64() / 2.0)
        } else {
            full
        }
    }

    /// The policy of `settings` over the worker's defaults.
    fn of(settings: &settings::RetrySettings, defaults: RetryPolicy) -> Self {
        Self {
            attempts: settings.attempts.unwrap_or(defaults.attempts),
            backoff: settings.backoff.unwrap_or(defaults.backoff),
            max_backoff: settings.max_backoff.unwrap_or(defaults.max_backoff),
            jitter: defaults.jitter,
        }
    }
}

/// One channel of a set, by name.
pub struct Named {
    /// Its name: in the channels file, or `line` (`simulated`) without one.
    pub name: String,
    /// The channel.
    pub channel: Arc<dyn Channel>,
    /// How it retries.
    pub retry: RetryPolicy,
    /// Whether its attempts and successes are recorded (channels of a
    /// channels file); the one channel without a file does as Herald did
    /// before channels: it prints, and PROCESSED is the only record.
    pub recorded: bool,
    /// Its settings, to keep it (and its connection) across a reload that
    /// leaves them as they are.
    settings: Option<ChannelSettings>,
}

/// The channels and routes in use.
pub struct ChannelSet {
    channels: Vec<Named>,
    routes: Vec<Route>,
}

impl ChannelSet {
    /// The channels the routes choose for `event`, each once, and
    /// whether a required route chose it.
    pub fn choose(&self, event: &Event) -> Vec<(&Named, bool)> {
        routes::choose(&self.routes, event)
            .into_iter()
            .filter_map(|c| Some((self.channels.get(c.place)?, c.required)))
            .collect()
    }

    /// Whether some route is ordered.
    pub fn has_ordered(&self) -> bool {
        routes::any_ordered(&self.routes)
    }

    /// Whether `event` is to wait for its user's earlier events (an
    /// ordered route matches it).
    pub fn ordered(&self, event: &Event) -> bool {
        routes::ordered(&self.routes, event)
    }

    /// Whether some route collects digests.
    pub fn has_digests(&self) -> bool {
        routes::any_digest(&self.routes)
    }

    /// How `event` goes out in a digest, if a digest route matches it:
    /// the route's window and size, and the key of its digest.
    pub fn digest(&self, event: &Event) -> Option<(routes::Digesting, herald_storage::DigestKey)> {
        let route = routes::digest(&self.routes, event)?;
        let channels = route
            .channels
            .iter()
            .filter_map(|&place| Some(self.channels.get(place)?.name.clone()))
            .collect();
        let key = herald_storage::DigestKey {
            user: event.user_id.clone(),
            event_type: event.event_type.clone(),
            channels,
            required: route.required,
        };
        Some((route.digesting, key))
    }

    /// The channel named `name`, if the set has it.
    pub fn named(&self, name: &str) -> Option<&Named> {
        self.channels.iter().find(|c| c.name == name)
    }
}

/// What building channels needs besides their settings.
struct Build {
    /// Where `line` channels write (standard output in production).
    line: Arc<dyn Channel>,
    /// Retry defaults from the worker's flags.
    defaults: RetryPolicy,
    /// The worker's `--claim-idle`: an attempt must end well within it, or
    /// its entry is reclaimed (delivered again) while still in flight.
    claim_idle: Duration,
    metrics: WorkerMetrics,
}

impl Build {
    /// The set a checked channels file describes; channels of `previous`
    /// with the same name and settings are kept as they are (an IRC
    /// channel keeps its connection).
    fn set(
        &self,
        file: &ChannelsFile,
        previous: Option<&ChannelSet>,
    ) -> Result<ChannelSet, SettingError> {
        let mut channels = Vec::with_capacity(file.channels.len());
        for (name, settings) in &file.channels {
            let timeout = match settings {
                ChannelSettings::Webhook(w) => Some(w.timeout),
                ChannelSettings::Irc(irc) => Some(irc.timeout),
                ChannelSettings::Email(email) => Some(email.timeout),
                _ => None,
            };
            if timeout.is_some_and(|t| t >= self.claim_idle / 2) {
                let message = format!(
                    "must be under half of --claim-idle ({}), or an event could be delivered \
                     again while its attempt is under way",
                    humantime::format_duration(self.claim_idle)
                );
                return Err(SettingError::new("timeout", message).in_channel(name));
            }
            let kept = previous.and_then(|p| {
                p.channels
                    .iter()
                    .find(|c| c.name == *name && c.settings.as_ref() == Some(settings))
                    .filter(|_| matches!(settings, ChannelSettings::Irc(_)))
            });
            let channel = match kept {
                Some(c) => c.channel.clone(),
                None => self
                    .channel(name, settings)
                    .map_err(|e| e.in_channel(name))?,
            };
            let mut defaults = self.defaults;
            defaults.jitter = matches!(settings, ChannelSettings::Webhook(_));
            channels.push(Named {
                name: name.clone(),
                channel,
                retry: RetryPolicy::of(settings.retry(), defaults),
                recorded: true,
                settings: Some(settings.clone()),
            });
        }
        let place = |name: &str| channels.iter().position(|c| c.name == name);
        let routes = file.routes.iter().map(|r| Route::new(r, place)).collect();
        Ok(ChannelSet { channels, routes })
    }

    /// A new channel of `settings`.
    fn channel(
        &self,
        name: &str,
        settings: &ChannelSettings,
    ) -> Result<Arc<dyn Channel>, SettingError> {
        Ok(match settings {
            ChannelSettings::Line(_) => self.line.clone(),
            ChannelSettings::Simulated(s) => Arc::new(SimulatedChannel::new(
                self.line.clone(),
                s.loss_ratio,
                s.seed.map_or_else(SplitMix64::from_time, SplitMix64::new),
            )),
            ChannelSettings::Webhook(s) => Arc::new(webhook::WebhookChannel::new(
                name,
                s,
                self.metrics.channel(name),
            )?),
            ChannelSettings::Irc(s) => Arc::new(irc::IrcChannel::start(name, s)?),
            ChannelSettings::Email(s) => Arc::new(email::EmailChannel::new(
                name,
                s,
                self.metrics.channel(name),
            )?),
        })
    }
}

/// The TLS settings of a client: it trusts the CAs of the PEM file `ca`,
/// or else the Web PKI roots.
fn client_tls(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, SettingError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let bad = |e: &dyn std::fmt::Display| {
                SettingError::new("tls_ca", format!("{}: {e}", path.display()))
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SettingError::new("tls", e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The channel set in use, reloadable from its file.
pub struct Channels {
    file: Option<PathBuf>,
    build: Build,
    current: RwLock<Arc<ChannelSet>>,
}

impl Channels {
    /// The channels of the file `worker.channels` names or, without one,
    /// the one channel `--sink` names (routed every event); `line` is
    /// where line channels write. A bad file is an error naming it.
    pub fn load(
        worker: &WorkerArgs,
        line: Arc<dyn Channel>,
        metrics: WorkerMetrics,
    ) -> Result<Self, ChannelsError> {
        let build = Build {
            line,
            defaults: RetryPolicy {
                attempts: worker.max_deliveries,
                backoff: worker.retry_backoff,
                max_backoff: DEFAULT_MAX_BACKOFF,
                jitter: false,
            },
            claim_idle: worker.claim_idle,
            metrics,
        };
        let set = match &worker.channels {
            Some(path) => Self::read(&build, path, None)?,
            None => {
                let (name, settings) = match worker.sink {
                    SinkKind::Line => ("line", ChannelSettings::Line(Default::default())),
                    SinkKind::Simulated => (
                        "simulated",
                        ChannelSettings::Simulated(settings::SimulatedSettings {
                            loss_ratio: worker.loss_ratio,
                            seed: worker.sink_seed,
                            retry: Default::default(),
                        }),
                    ),
                };
                ChannelSet {
                    channels: vec![Named {
                        name: name.to_owned(),
                        channel: build.channel(name, &settings).map_err(|e| ChannelsError {
                            file: PathBuf::new(),
                            at: "--sink".into(),
                            message: e.to_string(),
                        })?,
                        retry: build.defaults,
                        recorded: false,
                        settings: None,
                    }],
                    routes: vec![Route::everything_to(0)],
                }
            }
        };
        Ok(Self {
            file: worker.channels.clone(),
            build,
            current: RwLock::new(Arc::new(set)),
        })
    }

    fn read(
        build: &Build,
        path: &Path,
        previous: Option<&ChannelSet>,
    ) -> Result<ChannelSet, ChannelsError> {
        let file = ChannelsFile::read(path)?;
        build.set(&file, previous).map_err(|e| ChannelsError {
            file: path.to_owned(),
            at: e.at,
            message: e.message,
        })
    }

    /// The set in use now.
    pub fn current(&self) -> Arc<ChannelSet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the channels file again and puts the new set in use; a bad
    /// file keeps the set in use (and is the error). Without a file, nothing
    /// changes.
    pub fn reload(&self) -> Result<(), ChannelsError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let previous = self.current();
        let set = Self::read(&self.build, path, Some(&previous))?;
        let names: Vec<&str> = set.channels.iter().map(|c| c.name.as_str()).collect();
        info!(file = %path.display(), channels = %names.join(","), routes = set.routes.len(), "channels reloaded");
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(())
    }

    /// Reloads on every SIGHUP until `shutdown`; a bad file is logged and
    /// the channels in use stay.
    pub async fn reload_on_hangup(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            warn!("cannot listen for SIGHUP; the channels file is read at start only");
            return;
        };
        loop {
            tokio::select! {
                got = hangups.recv() => if got.is_none() { return },
                () = shutdown.cancelled() => return,
            }
            if let Err(err) = self.reload() {
                warn!(error = %err, "channels file refused; the channels in use stay");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_that_could_outlast_the_claim_idle_time_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("channels.toml");
        std::fs::write(
            &path,
            "[channels.hooks]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\ntimeout = \"5s\"\n\
             [[routes]]\nchannels = [\"hooks\"]\n",
        )
        .expect("write");
        let path = path.to_str().expect("utf-8");
        let metrics = WorkerMetrics::register(&prometheus::Registry::new());
        let line: Arc<dyn Channel> = Arc::new(LineChannel::new(std::io::sink()));
        let config = |claim_idle: &str| {
            WorkerArgs::parse_from_args(&["--channels", path, "--claim-idle", claim_idle])
        };
        let Err(err) = Channels::load(&config("10s"), line.clone(), metrics.clone()) else {
            panic!("a 5s timeout with a 10s claim idle time is refused");
        };
        assert!(
            err.to_string()
                .contains("channels.hooks.timeout: must be under half of --claim-idle (10s)"),
            "{err}"
        );
        assert!(Channels::load(&config("11s"), line, metrics).is_ok());
    }
}
