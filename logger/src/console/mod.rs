//! The console: a live web page of events, served by the logger on a port of
//! its own (`--console-listen`), with its assets inside the binary.
//!
//! The page talks to a small JSON API on the same port ([`api`]), and the API
//! calls this logger over gRPC like any client, through a loopback listener
//! that checks the same keys as the public one: the key the page sends
//! (`authorization: Bearer`, kept in the browser's sessionStorage) is passed
//! on as it came, so scopes, user tokens and rate limits apply unchanged.
//! Only the status history of an event reads the notification log directly,
//! after the caller was allowed to read the event. The routes are in
//! [`api`] (events) and [`recipients`], the errors they answer in
//! [`crate::http_api`], the history in `history`.
//!
//! Every response carries a strict Content-Security-Policy (scripts and
//! styles from this origin only, no inline code), and the page renders
//! every event field as text. In open mode (no keys) the console listens on
//! loopback only (the logger refuses to start otherwise) and answers only
//! requests addressed to a loopback address or `localhost` (no DNS
//! rebinding); a change (POST) must be JSON from the same origin.

pub mod api;
pub mod recipients;

mod history;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use herald::partition::Partitions;
use herald_client::Client;
use herald_storage::{EventStore, NotificationFeed};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, info};

use crate::{
    auth::{FailureLimit, KeyRing},
    http_api::ApiError,
};

/// The page, its script and its styles, as served.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "/console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "/console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
];

/// What every response may load and do: its own scripts, styles and API,
/// nothing inline, nothing framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Connections the console serves at once (each open page holds one or two).
const MAX_CONNECTIONS: usize = 256;
/// The largest body a change may send.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How often the rate chart's samples are taken, and how many are kept.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
const SAMPLES_KEPT: usize = 300;

/// What the console's handlers share.
pub struct Console {
    /// This logger, over its loopback listener (no key of its own).
    client: Client,
    /// The keys the gRPC listener checks.
    keys: Arc<KeyRing>,
    /// The notification log, for an event's status history.
    feed: Arc<dyn NotificationFeed>,
    partitions: Partitions,
    /// Stored events over time, for the rate chart.
    samples: Mutex<VecDeque<(SystemTime, u64)>>,
    /// Ends the live feeds when the logger stops.
    shutdown: CancellationToken,
    /// How long a change's body may take to arrive whole (`--body-timeout`).
    body_timeout: Duration,
    /// Failed authentications per peer address, shared with gRPC.
    failures: Option<FailureLimit>,
}

impl Console {
    /// A console calling this logger through `client`, checking `keys`;
    /// a change's body must arrive whole within `body_timeout`.
    pub fn new(
        client: Client,
        keys: Arc<KeyRing>,
        feed: Arc<dyn NotificationFeed>,
        shutdown: CancellationToken,
        body_timeout: Duration,
    ) -> Self {
        Self {
            client,
            keys,
            body_timeout,
            partitions: feed.partitions(),
            feed,
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES_KEPT)),
            shutdown,
            failures: None,
        }
    }

    /// The same console, limiting failed authentications per peer address
    /// as the gRPC listener does (with the same counts): a request that
    /// sends a key and is answered 401 is a failure, and a peer past its
    /// allowance is answered 429 before its key is looked at.
    pub fn with_failure_limit(mut self, failures: Option<FailureLimit>) -> Self {
        self.failures = failures;
        self
    }

    /// Counts the stored events every few seconds, for the rate chart,
    /// until the logger stops.
    pub async fn sample(self: Arc<Self>, store: Arc<dyn EventStore>) {
        loop {
            match store.status_counts().await {
                Ok(counts) => {
                    let mut samples = self.samples.lock().expect("samples lock");
                    if samples.len() == SAMPLES_KEPT {
                        samples.pop_front();
                    }
                    samples.push_back((SystemTime::now(), counts.total()));
                }
                Err(err) => debug!(error = %err, "console: cannot count events"),
            }
            tokio::select! {
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }
}

/// Serves the console on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, console: Arc<Console>, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(url = %format!("http://{addr}/"), "serving the console");
    }
    let router = router(console);
    let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
        router.clone().oneshot(request.map(axum::body::Body::new))
    });
    let limits = herald_runtime::http::Limits {
        max_connections: MAX_CONNECTIONS,
        header_timeout: Duration::from_secs(10),
    };
    herald_runtime::http::serve(listener, service, limits, "console", shutdown).await;
}

/// Every page and API route, behind [`guard`].
fn router(console: Arc<Console>) -> Router {
    let mut router = Router::new();
    for (path, content_type, body) in ASSETS {
        router = router.route(path, get(move || async move { asset(content_type, body) }));
    }
    router
        .route("/api/session", get(api::session))
        .route("/api/stats", get(api::stats))
        .route("/api/events", get(api::list_events))
        .route("/api/events/{id}", get(api::event))
        .route("/api/events/{id}/cancel", post(api::cancel))
        .route("/api/dead-letters", get(api::dead_letters))
        .route("/api/redrive", post(api::redrive))
        .route("/api/feed", get(api::feed))
        .route(
            "/api/recipients/{user_id}",
            get(recipients::recipient)
                .put(recipients::put_recipient)
                .delete(recipients::delete_recipient),
        )
        .fallback(|| async { ApiError::not_found("no such page or API") })
        .layer(middleware::from_fn_with_state(console.clone(), guard))
        .with_state(console)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Refuses what a browser could be tricked into sending (open mode: other
/// hosts' names; always: changes that are not same-origin JSON), and puts
/// the security headers on every response.
async fn guard(State(console): State<Arc<Console>>, request: Request, next: Next) -> Response {
    if let Err(refused) = admit(&console, request.method(), request.headers()) {
        return secure(refused.into_response());
    }
    // Only a request that sends a key can fail to authenticate: the page
    // asks without one first, to learn whether it needs one.
    let limited = console
        .failures
        .as_ref()
        .filter(|_| request.headers().contains_key(header::AUTHORIZATION));
    let peer = request
        .extensions()
        .get::<herald_runtime::http::Peer>()
        .map(|peer| peer.0.ip());
    let limited = limited.zip(peer);
    if let Some((failures, peer)) = limited
        && let Err(status) = failures.check(peer)
    {
        let refused = ApiError::new(StatusCode::TOO_MANY_REQUESTS, status.message());
        return secure(refused.into_response());
    }
    let response =
        match crate::http_api::read_whole(request, MAX_BODY_BYTES, console.body_timeout).await {
            Ok(request) => next.run(request).await,
            Err(refused) => refused.into_response(),
        };
    if let Some((failures, peer)) = limited
        && response.status() == StatusCode::UNAUTHORIZED
    {
        failures.failed(peer);
    }
    secure(response)
}

fn admit(console: &Console, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if console.keys.is_open() && !herald_runtime::http::loopback_host(host) {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "a console without keys answers only at a loopback address or localhost",
        ));
    }
    if method != Method::GET && method != Method::HEAD {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send changes as application/json",
            ));
        }
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let same = |o: &str| o.split_once("://").is_some_and(|(_, rest)| rest == host);
        if origin.is_some_and(|o| !same(o)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "changes are accepted from the console's own page only",
            ));
        }
    }
    Ok(())
}

fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
