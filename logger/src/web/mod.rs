//! The end users' listener (`--web-listen`): where browsers and apps of
//! the people notified reach Herald, apart from the operator's listeners
//! (gRPC for services, the console, /metrics), which it never shares.
//!
//! - **gRPC-Web** (binary and text) and gRPC for `herald.v1.Notifier`,
//!   `herald.v1.Inbox` and `herald.v1.Recipients`,
//!   through tonic-web in front of the same layers as the gRPC listener
//!   (calls in flight, metrics, auth, body guard).
//! - **Server-Sent Events** ([`sse`]): `GET /v1/notifications` streams one
//!   user's notifications, resumable with `Last-Event-ID`.
//! - **Tickets** ([`tickets`]): `POST /v1/tickets` trades a user token
//!   (in the `authorization` header) for a single-use ticket valid for
//!   seconds, which `EventSource`, unable to send headers, puts in the URL.
//! - **The inbox** ([`inbox`]): `herald.v1.Inbox` over gRPC-Web, the same
//!   calls as JSON under `/v1/inbox`, and the `<herald-inbox>` element
//!   (`/herald-inbox.js`) that shows them.
//! - **Email links** ([`links`]): `/v1/unsubscribe` and `/v1/open`, the
//!   signed links an email channel puts in its messages.
//! - **Preferences** ([`preferences`]): `herald.v1.Recipients`' own-user
//!   calls (GetPreferences, SetPreferences) over gRPC-Web, and as JSON at
//!   `/v1/preferences`.
//!
//! Browsers may call it only from the origins the operator lists
//! (`--cors-allow-origin`): a request carrying any other `Origin` is
//! refused with 403 before anything else, preflights included; requests
//! without one (servers, curl) pass. Errors are the JSON of
//! [`crate::http_api`].

pub mod inbox;
pub mod links;
pub mod preferences;
pub mod sse;
pub mod tickets;

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use herald::pb::Rpc;
use serde_json::json;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};

use crate::{
    auth::{AuthLayer, Identity, peer_ip},
    http_api::ApiError,
    inbox::InboxService,
    notifier::NotifierService,
    recipients::RecipientsService,
};

pub use tickets::Tickets;

/// The services the gRPC listener and the end users' listener share.
#[derive(Clone)]
pub struct Shared {
    /// Notifier.
    pub notifier: Arc<NotifierService>,
    /// Inbox.
    pub inbox: Arc<InboxService>,
    /// Recipients.
    pub recipients: Arc<RecipientsService>,
}

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// What the end users' endpoints share.
pub struct Web {
    notifier: Arc<NotifierService>,
    inbox: Arc<InboxService>,
    recipients: Arc<RecipientsService>,
    /// Checks the links of emails (`--link-secret`); `None`: refused.
    links: Option<herald::links::LinkSigner>,
    auth: AuthLayer,
    /// `None` without `--user-token-secret`: no user tokens, so no tickets.
    tickets: Option<Tickets>,
    origins: Vec<HeaderValue>,
    /// How long a request's body may take to arrive whole.
    body_timeout: Duration,
}

impl Web {
    /// The endpoints over `notifier`, `inbox` and `recipients`, checking
    /// credentials with `auth` and emails' links with `links`, issuing
    /// `tickets` (if user tokens are configured), to browsers of `origins`
    /// only; a body must arrive whole within `body_timeout`.
    pub fn new(
        Shared {
            notifier,
            inbox,
            recipients,
        }: Shared,
        (auth, links): (AuthLayer, Option<herald::links::LinkSigner>),
        tickets: Option<Tickets>,
        origins: Vec<HeaderValue>,
        body_timeout: Duration,
    ) -> Self {
        Self {
            notifier,
            inbox,
            recipients,
            links,
            auth,
            tickets,
            origins,
            body_timeout,
        }
    }

    /// The credentials its endpoints check, gRPC-Web calls included.
    pub(crate) fn auth(&self) -> &AuthLayer {
        &self.auth
    }

    /// Who calls with `headers` from `peer` as a Subscribe call would be
    /// checked (keys, user tokens, failures, rates).
    fn subscriber(&self, parts: &http::request::Parts) -> Result<Identity, ApiError> {
        self.caller_of(Rpc::Subscribe, parts)
    }

    /// Who makes this request as a call of `rpc` would be checked.
    fn caller_of(&self, rpc: Rpc, parts: &http::request::Parts) -> Result<Identity, ApiError> {
        self.auth
            .admit_call(rpc.path(), &parts.headers, peer_ip(&parts.extensions))
            .map_err(ApiError::from)
    }
}

/// The listener's routes: `grpc` (the layered gRPC services, tonic-web in
/// front) for the Notifier's paths, the HTTP endpoints, and the origin
/// check and CORS answers around them all.
pub fn router<S>(web: Arc<Web>, grpc: S) -> Router
where
    S: tower::Service<Request, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let cors = cors(&web.origins);
    // The links of emails carry their own credential and take any origin.
    let links = Router::new()
        .route(
            "/v1/unsubscribe",
            get(links::confirm).post(links::unsubscribe),
        )
        .route("/v1/open", get(links::open))
        .with_state(web.clone());
    Router::new()
        .route("/v1/tickets", post(issue_ticket))
        .route("/v1/notifications", get(sse::stream))
        .route("/v1/inbox", get(inbox::list))
        .route("/v1/inbox/unread_count", get(inbox::unread))
        .route("/v1/inbox/read", post(inbox::mark_read))
        .route("/herald-inbox.js", get(inbox::element))
        .route(
            "/v1/preferences",
            get(preferences::get).put(preferences::set),
        )
        .route_service("/herald.v1.Notifier/{*method}", grpc.clone())
        .route_service("/herald.v1.Inbox/{*method}", grpc.clone())
        .route_service("/herald.v1.Recipients/{*method}", grpc)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(web.clone())
        .layer(cors)
        .layer(middleware::from_fn_with_state(web, check_origin))
        .merge(links)
}

/// The CORS answers a gRPC-Web client and `EventSource` need, for
/// `origins` only.
fn cors(origins: &[HeaderValue]) -> CorsLayer {
    use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};
    let name = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods(AllowMethods::list([Method::GET, Method::POST, Method::PUT]))
        .allow_headers(AllowHeaders::list([
            AUTHORIZATION,
            CONTENT_TYPE,
            name("x-grpc-web"),
            name("x-user-agent"),
            name("grpc-timeout"),
            name("last-event-id"),
        ]))
        .expose_headers(ExposeHeaders::list([
            name("grpc-status"),
            name("grpc-message"),
            name("grpc-status-details-bin"),
        ]))
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Refuses a request whose `Origin` is not one of the listed origins
/// (403, preflights included), before credentials or bodies are read.
async fn check_origin(State(web): State<Arc<Web>>, request: Request, next: Next) -> Response {
    match request.headers().get(header::ORIGIN) {
        Some(origin) if !web.origins.contains(origin) => ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "origin {} is not allowed: the operator lists browsers' origins with --cors-allow-origin",
                herald::error::quote(&String::from_utf8_lossy(origin.as_bytes()))
            ),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// `POST /v1/tickets`: a single-use ticket for the user whose token is in
/// the `authorization` header, for `GET /v1/notifications?ticket=…`.
async fn issue_ticket(State(web): State<Arc<Web>>, parts: http::request::Parts) -> Response {
    let issued = (|| {
        let tickets = web.tickets.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "tickets are for end users' tokens, and this logger accepts none \
                 (--user-token-secret is not set)",
            )
        })?;
        let identity = web.subscriber(&parts)?;
        let user = identity.user.ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "tickets are for end users' tokens; an API key sends its authorization \
                 header to GET /v1/notifications itself",
            )
        })?;
        tickets.issue(&user).map_err(ApiError::from)
    })();
    match issued {
        Ok(issued) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(json!({
                "ticket": issued.ticket,
                "expires_in_seconds": issued.expires_in.as_secs(),
            })),
        )
            .into_response(),
        Err(err) => err.into_response(),
    }
}

/// Reads `--cors-allow-origin` values: each a browser origin
/// (`https://app.example.com`, a port if not the default), never `*`.
pub fn parse_origin(text: &str) -> Result<HeaderValue, String> {
    let text = text.trim().trim_end_matches('/');
    if text == "*" || text == "null" {
        return Err(format!(
            "{text} is not allowed: list each origin that may call (https://app.example.com)"
        ));
    }
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| format!("{text}: an origin starts with https:// or http://"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "{text}: an origin is a scheme, a host and a port only (https://app.example.com:8443)"
        ));
    }
    HeaderValue::from_str(&text.to_ascii_lowercase()).map_err(|e| format!("{text}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::parse_origin;

    #[test]
    fn origins_are_exact_and_never_wildcards() {
        assert_eq!(
            parse_origin("https://App.example.com/").expect("valid"),
            "https://app.example.com"
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:8080").expect("valid"),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "*",
            "null",
            "app.example.com",
            "https://",
            "https://a.example/path",
            "ftp://a.example",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
