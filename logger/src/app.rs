//! The logger assembled from its parts, in one place.
//!
//! [`Parts::read`] turns the configuration into checked parts (rules, keys,
//! TLS, limits, the opened storage) and fails before anything is served.
//! [`run`] then starts every task under a name, in [`Tasks`]:
//!
//! - `health`: health follows the storage (SERVING while it answers);
//! - `log tail`: the fan-out's one tail of the notification log;
//! - `retention`: old events, dead letters and the acknowledged queue removed;
//! - `notification log trim`: the notification log kept to its age;
//! - `console` and `console sampler` (with `--console-listen`);
//! - `metrics` (with `--metrics-listen`);
//! - the end users' listener (with `--web-listen`), served beside the gRPC
//!   listeners;
//! - `embedded worker` (without Redis, or with `--worker`);
//! - and the gRPC listeners, the public one and a loopback one each for the
//!   embedded worker and the console, which [`run`] serves itself.
//!
//! # Shutdown
//!
//! One token stops everything, in this order:
//! 1. `shutdown` is cancelled: the loops, the console, the metrics listener
//!    and every Subscribe stream end;
//! 2. the embedded worker finishes the events it holds (its UpdateStatus
//!    calls still reach the gRPC listeners);
//! 3. the gRPC listeners take no new calls, and the calls in flight get
//!    `--shutdown-grace` to end;
//! 4. the tasks still running are stopped, and [`run`] returns.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use anyhow::Context;
use herald::{auth::Scope, domain::Rules};
use herald_client::Client;
use herald_processor::{Channel, Worker};
use herald_storage::{self as storage, Backend, BackendTarget};
use tokio::{
    net::TcpListener,
    task::{Id, JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::ServerTlsConfig;
use tracing::{debug, info, warn};

use crate::{
    Config,
    auth::{AuthLayer, FailureLimit, KeyRing},
    console,
    fanout::Fanout,
    guard::BodyLimits,
    inbox::InboxService,
    limits::RateLimiter,
    metrics::LoggerMetrics,
    notifier::{self, NotifierOptions, NotifierService},
    recipients::RecipientsService,
    retention::{self, RetentionOptions},
    schedule, server,
    service::EventLoggerService,
    web::{Shared, Tickets, Web},
};

/// The logger's tasks, each under a name, stopped together at the end.
#[derive(Default)]
pub struct Tasks {
    set: JoinSet<()>,
    names: HashMap<Id, &'static str>,
}

impl Tasks {
    /// Starts `task` under `name`.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Stops the tasks still running and waits for all; a task that
    /// panicked is named in the log.
    pub async fn stop(mut self) {
        self.set.abort_all();
        while let Some(ended) = self.set.join_next_with_id().await {
            match ended {
                Ok((id, ())) => debug!(task = self.name(id), "task ended"),
                Err(err) if err.is_panic() => {
                    warn!(task = self.name(err.id()), "task panicked")
                }
                Err(err) => debug!(task = self.name(err.id()), "task stopped"),
            }
        }
    }

    fn name(&self, id: Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("unnamed")
    }
}

/// What the configuration holds, read and checked, and the storage opened.
pub struct Parts {
    /// The address the public listener is bound to.
    addr: SocketAddr,
    rules: Rules,
    limits: Arc<RateLimiter>,
    keys: Arc<KeyRing>,
    tls: Option<ServerTlsConfig>,
    retention: RetentionOptions,
    body: BodyLimits,
    /// The console's listener, unless the configuration rules it out.
    console: Option<TcpListener>,
    /// The end users' listener, and its TLS settings.
    web: Option<(TcpListener, Option<ServerTlsConfig>)>,
    location: String,
    backend: Backend,
}

impl Parts {
    /// Reads `config` for a logger on `addr`, with the console on `console`
    /// and the end users' endpoints on `web`: every file and flag checked,
    /// the storage opened and its layout checked if it answers; warns of
    /// settings that serve but risk data or secrets.
    pub async fn read(
        config: &Config,
        addr: SocketAddr,
        console: Option<TcpListener>,
        web: Option<TcpListener>,
    ) -> anyhow::Result<Self> {
        let rules = config.rules()?;
        let limits = Arc::new(RateLimiter::new(config.default_rate()?));
        let keys = Arc::new(config.key_ring(addr)?);
        let tls = config.server_tls()?;
        let retention = config.retention()?;
        let body = config.body_limits()?;
        if keys.is_open() {
            warn!(%addr, "no --keys-file: every call is allowed without credentials (open mode)");
        }
        let console = match console {
            // Dropped here, so its port closes.
            Some(listener) if config.tls_client_ca.is_some() => {
                drop(listener);
                warn!(
                    "no console: it cannot ask browsers for client certificates, and --tls-client-ca requires one on every call (give --console-listen off to silence this)"
                );
                None
            }
            console => console,
        };
        check_console_address(console.as_ref(), keys.is_open())?;
        let web = match web {
            Some(listener) => {
                let tls = config.web_tls()?;
                check_web_address(&listener, keys.is_open(), tls.is_some())?;
                Some((listener, tls))
            }
            None => None,
        };
        let backend_config = config.redis.backend().unwrap_or(BackendTarget::Memory);
        let backend = storage::open_with(&backend_config, &config.store_options())
            .context("--redis-url or --redis-cluster")?;
        let location = backend_config.location();
        match backend.store.prepare().await {
            Err(err @ herald::Error::Misconfigured(_)) => return Err(err.into()),
            Err(err) => {
                warn!(storage = %location, error = %err, "cannot check the storage layout yet; it is checked before first use")
            }
            Ok(()) => {}
        }
        if config.embedded_worker.channels.is_some() && !config.runs_worker() {
            warn!(
                "--channels is for an embedded worker, and this logger runs none: give --worker, or the file to the processors"
            );
        }
        if !config.redis.is_set() {
            warn!(
                "NO --redis-url: running on the in-memory backend with an embedded worker. \
                 Every event is LOST when this process stops. Use --redis-url for anything that matters."
            );
        }
        Ok(Self {
            addr,
            rules,
            limits,
            keys,
            tls,
            retention,
            body,
            console,
            web,
            location,
            backend,
        })
    }
}

/// Runs the logger of `parts` on `listener` (and metrics on `metrics`, if
/// any) until `shutdown` is cancelled, stopping in the order of the module
/// docs; an embedded worker's line channels write through `line`.
pub async fn run(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    parts: Parts,
    config: &Config,
    line: Arc<dyn Channel>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Parts {
        addr,
        rules,
        limits,
        keys,
        tls,
        retention,
        body,
        console,
        web,
        location,
        backend,
    } = parts;
    let meters = LoggerMetrics::new();
    // Failed authentications per peer, on gRPC and the console alike.
    let failures = config
        .auth_failure_rate()
        .filter(|_| !keys.is_open())
        .map(|rate| FailureLimit::new(rate, meters.auth_failures.clone()));
    let (reporter, health) = tonic_health::server::health_reporter();
    let fanout = Fanout::new(config.subscriber_buffer as usize);
    let notifier = Arc::new(NotifierService::new(
        fanout.clone(),
        backend.feed.clone(),
        shutdown.clone(),
        NotifierOptions {
            max_streams: config.max_streams_per_client as usize,
            max_buffered_bytes: config.max_buffered_bytes_per_client as usize,
            heartbeat: config.heartbeat,
        },
    ));
    let (store, feed) = (backend.store.clone(), backend.feed.clone());

    let mut tasks = Tasks::default();
    let stopping = shutdown.clone();
    tasks.spawn(
        "health",
        server::watch_health(
            reporter,
            store.clone(),
            location,
            meters.partitions.clone(),
            stopping.clone(),
        ),
    );
    tasks.spawn("log tail", fanout.tail(feed.clone(), stopping.clone()));
    tasks.spawn(
        "retention",
        retention::run(backend.clone(), retention, stopping.clone()),
    );
    tasks.spawn(
        "scheduler",
        schedule::run(
            store.clone(),
            meters.events.clone(),
            format!("logger-{}", uuid::Uuid::now_v7().simple()),
            stopping.clone(),
        ),
    );
    tasks.spawn(
        "notification log trim",
        notifier::retain(feed.clone(), config.notifications_max_age, stopping.clone()),
    );
    if let Some(listener) = metrics {
        let refresh = meters.refresh(
            store.clone(),
            backend.queue.clone(),
            notifier.active_streams(),
        );
        let registry = meters.registry.clone();
        tasks.spawn(
            "metrics",
            herald_runtime::metrics::serve(listener, registry, refresh, stopping.clone()),
        );
    }
    // The loopback listeners of the callers inside this process.
    let mut internal = Vec::new();
    let worker = if config.runs_worker() {
        let (worker, listener) = embedded_worker(&backend, config, line, &meters).await?;
        internal.push(listener);
        Some(tokio::spawn(worker.run(stopping.clone())))
    } else {
        None
    };
    if let Some(console_listener) = console {
        // The console calls this server too, over a loopback listener that
        // checks the same keys as the public one, with the callers' own keys.
        let (client, listener) = loopback("console", None).await?;
        internal.push((listener, AuthLayer::new(keys.clone(), limits.clone())));
        let console = console::Console::new(
            client,
            keys.clone(),
            feed,
            stopping.clone(),
            config.body_timeout,
        )
        .with_failure_limit(failures.clone());
        let console = Arc::new(console);
        tasks.spawn("console sampler", console.clone().sample(store.clone()));
        tasks.spawn(
            "console",
            console::serve(console_listener, console, stopping.clone()),
        );
    }
    let stop_server = after_worker(worker, shutdown.clone());

    info!(%addr, store = %backend.kind, worker = config.runs_worker(), tls = tls.is_some(), "listening");
    let inbox = Arc::new(InboxService::new(
        &backend,
        meters.events.clone(),
        config.max_message_bytes as usize,
    ));
    let logger = EventLoggerService::new(&backend, rules, meters.events.clone())
        .with_streams(notifier.active_streams())
        .with_message_limit(config.max_message_bytes as usize);
    let shared = Shared {
        notifier,
        inbox,
        recipients: Arc::new(RecipientsService::new(&backend)),
    };
    let auth = AuthLayer::new(keys.clone(), limits).with_failure_limit(failures);
    let links = config.link_signer()?;
    let web = web.map(|(listener, tls)| {
        let tickets = config
            .user_token_secret
            .as_deref()
            .filter(|_| !keys.is_open())
            .map(|secret| Tickets::new(secret, config.ticket_ttl));
        let web = Web::new(
            shared.clone(),
            (auth.clone(), links.clone()),
            tickets,
            config.cors_allow_origin.clone(),
            config.body_timeout,
        );
        server::WebListener {
            listener,
            web: Arc::new(web),
            tls,
        }
    });
    let options = server::ServeOptions {
        auth,
        web,
        metrics: meters.rpc.clone(),
        tls,
        internal,
        body,
        http2: config.http2(),
        stop: stop_server,
        grace: config.shutdown_grace,
    };
    let served = server::serve(listener, logger, shared, health, options).await;
    shutdown.cancel();
    tasks.stop().await;
    served
}

/// The embedded worker, and the loopback listener it calls this server
/// over, which admits only its own key: that way it needs neither the
/// server's CA nor a client certificate.
async fn embedded_worker(
    backend: &Backend,
    config: &Config,
    line: Arc<dyn Channel>,
    meters: &LoggerMetrics,
) -> anyhow::Result<(Worker, (TcpListener, AuthLayer))> {
    let (ring, key) = KeyRing::internal(
        "embedded-worker",
        vec![Scope::EventsProcess, Scope::EventsRead],
    )
    .map_err(|e| anyhow::anyhow!("no randomness for the embedded worker's key: {e}"))?;
    let (client, listener) = loopback("embedded worker", Some(&key)).await?;
    let worker = Worker::new(
        backend,
        client,
        line,
        &config.embedded_worker,
        meters.worker.clone(),
    )?;
    let auth = AuthLayer::new(Arc::new(ring), Arc::new(RateLimiter::new(None)));
    Ok((worker, (listener, auth)))
}

/// A loopback listener for `who` inside this process, and a client of it
/// (sending `key`, if any).
async fn loopback(who: &str, key: Option<&str>) -> anyhow::Result<(Client, TcpListener)> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .with_context(|| format!("loopback listener of the {who}"))?;
    let mut client = Client::connect_lazy(format!("http://{}", listener.local_addr()?))
        .with_context(|| format!("{who} client"))?;
    if let Some(key) = key {
        client = client
            .with_api_key(key)
            .with_context(|| format!("{who} client"))?;
    }
    Ok((client, listener))
}

/// The token that stops the gRPC listeners: cancelled once `shutdown` is
/// and the embedded worker (if any) has finished, so its last UpdateStatus
/// calls still reach this server.
fn after_worker(worker: Option<JoinHandle<()>>, shutdown: CancellationToken) -> CancellationToken {
    let stop_server = CancellationToken::new();
    let stop = stop_server.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        stop.cancel();
    });
    stop_server
}

/// Refuses the end users' listener without keys anywhere but loopback
/// (anyone could read anyone's notifications), and warns that beyond
/// loopback without TLS, tokens and tickets cross the network in the clear.
fn check_web_address(web: &TcpListener, open: bool, tls: bool) -> anyhow::Result<()> {
    let addr = web.local_addr().context("--web-listen address")?;
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if open {
        anyhow::bail!(
            "refusing to serve --web-listen {addr} without --keys-file: anyone who can reach \
             it could read every user's notifications; give --keys-file (and \
             --user-token-secret for end users' tokens), or listen on loopback"
        );
    }
    if !tls {
        warn!(%addr, "--web-listen serves plain HTTP: end users' tokens and tickets cross the network unencrypted; give --tls-cert and --tls-key, or put a TLS proxy in front of it");
    }
    Ok(())
}

/// Refuses a console without keys anywhere but loopback (anyone who reached
/// it could read every event and redrive dead letters), and warns that a
/// keyed console beyond loopback needs TLS in front of it.
fn check_console_address(console: Option<&TcpListener>, open: bool) -> anyhow::Result<()> {
    let Some(console) = console else {
        return Ok(());
    };
    let console_addr = console.local_addr().context("console address")?;
    if console_addr.ip().is_loopback() {
        return Ok(());
    }
    if open {
        anyhow::bail!(
            "refusing to serve the console on {console_addr} without --keys-file: anyone who \
             can reach it could read every event and redrive dead letters; give --keys-file, \
             or put --console-listen on loopback (127.0.0.1:8088) or off"
        );
    }
    warn!(%console_addr, "the console serves plain HTTP: API keys typed into it cross the network unencrypted; keep it on loopback or put a TLS proxy in front of it");
    Ok(())
}
