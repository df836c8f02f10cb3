//! The links an email carries (signed by the email channel with
//! `--link-secret`'s twin, checked here, see [`herald::links`]):
//!
//! - `GET /v1/unsubscribe?t=…`: a page asking to confirm (mail scanners
//!   fetch links; a GET changes nothing), whose button POSTs;
//! - `POST /v1/unsubscribe?t=…`: adds the link's opt-out to the user's
//!   preferences (RFC 8058 one-click: mail clients POST
//!   `List-Unsubscribe=One-Click` here themselves);
//! - `GET /v1/open?t=…`: a 1×1 GIF; the first fetch marks the event
//!   OPENED (once it is PROCESSED).
//!
//! The token is the only credential, so these take any `Origin`: a page
//! of another site cannot forge one.

use std::sync::Arc;

use axum::{
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use herald::{domain::OptOut, links::Link};
use serde::Deserialize;
use tracing::warn;

use super::Web;

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The query of every link.
#[derive(Deserialize)]
pub struct Token {
    t: String,
}

/// `GET /v1/unsubscribe`: the confirmation page.
pub async fn confirm(State(web): State<Arc<Web>>, Query(token): Query<Token>) -> Response {
    match unsubscribe_link(&web, &token.t) {
        Ok((_, _, what)) => page(
            StatusCode::OK,
            &format!(
                "<p>Stop receiving {what}?</p><form method=\"post\"><button>Unsubscribe</button></form>"
            ),
        ),
        Err((status, why)) => page(status, why),
    }
}

/// `POST /v1/unsubscribe`: adds the opt-out.
pub async fn unsubscribe(State(web): State<Arc<Web>>, Query(token): Query<Token>) -> Response {
    let (user, opt_out, what) = match unsubscribe_link(&web, &token.t) {
        Ok(link) => link,
        Err((status, why)) => return page(status, why),
    };
    match web.recipients.unsubscribe(&user, &opt_out).await {
        Ok(_) => page(
            StatusCode::OK,
            &format!("<p>You will no longer receive {what}.</p>"),
        ),
        Err(herald::Error::InvalidArgument(_)) => page(
            StatusCode::CONFLICT,
            "<p>Your preferences already hold as many opt-outs as they may; remove some \
             in the app first.</p>",
        ),
        Err(err) => {
            warn!(error = %err, "cannot apply an unsubscribe link");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "<p>That did not work; please try again in a moment.</p>",
            )
        }
    }
}

/// `GET /v1/open`: the pixel; marks the event OPENED.
pub async fn open(State(web): State<Arc<Web>>, Query(token): Query<Token>) -> Response {
    if let Some(Link::Open { event_id, user }) = web.links.as_ref().and_then(|l| l.verify(&token.t))
        && let Err(err) = web.inbox.open(event_id, &user).await
    {
        warn!(error = %err, %event_id, "cannot mark an opened email's event OPENED");
    }
    (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PIXEL,
    )
        .into_response()
}

/// The user and opt-out of an unsubscribe token, and the opt-out in
/// words (HTML-escaped); or the status and page text that refuse it.
fn unsubscribe_link(
    web: &Web,
    token: &str,
) -> Result<(String, OptOut, String), (StatusCode, &'static str)> {
    let Some(links) = &web.links else {
        return Err((
            StatusCode::NOT_FOUND,
            "<p>Links are not enabled on this server.</p>",
        ));
    };
    match links.verify(token) {
        Some(Link::Unsubscribe { user, opt_out }) => {
            let what = match (opt_out.category.as_str(), opt_out.event_type.as_str()) {
                ("", "") => format!("{} messages", opt_out.channel),
                ("", kind) => format!("{} messages about {kind}", opt_out.channel),
                (category, _) => format!("{} messages about {category}", opt_out.channel),
            };
            Ok((user, opt_out, escape(&what)))
        }
        _ => Err((StatusCode::BAD_REQUEST, "<p>This link is not valid.</p>")),
    }
}

/// A small HTML page.
fn page(status: StatusCode, body: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!("<!doctype html><meta charset=\"utf-8\"><title>Herald</title>{body}"),
    )
        .into_response()
}

/// `text` safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
