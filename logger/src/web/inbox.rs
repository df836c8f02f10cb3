//! The inbox as JSON, for pages that do not speak gRPC-Web (the
//! `<herald-inbox>` element among them), and the element itself.
//!
//! - `GET /v1/inbox?unread_only=true&page_size=20&page_token=…`:
//!   `{"notifications": [event…], "next_page_token", "unread_count"}`,
//!   newest first (ListInbox);
//! - `GET /v1/inbox/unread_count`: `{"unread_count"}` (GetUnreadCount);
//! - `POST /v1/inbox/read` with `{"event_ids": […]}` or `{"all": true}`:
//!   `{"marked", "unread_count"}` (MarkRead);
//! - `GET /herald-inbox.js`: the `<herald-inbox>` custom element.
//!
//! Each takes `user_id` too (a user token's own by default), and the same
//! credentials in `authorization` as the gRPC call it stands for.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use herald::pb::{self, Rpc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Web;
use crate::http_api::{ApiError, read_whole};

/// The element's script, as served.
const ELEMENT: &str = include_str!("assets/herald-inbox.js");

/// The largest body of `POST /v1/inbox/read` (1,000 ids fit).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// `GET /v1/inbox`: a page of the caller's inbox.
pub async fn list(State(web): State<Arc<Web>>, parts: http::request::Parts) -> Response {
    respond(async {
        let identity = web.caller_of(Rpc::ListInbox, &parts)?;
        let mut request = pb::ListInboxRequest::default();
        for (key, value) in query_pairs(&parts) {
            match key.as_str() {
                "user_id" => request.user_id = value,
                "unread_only" => request.unread_only = flag("unread_only", &value)?,
                "page_size" => {
                    request.page_size = value
                        .parse()
                        .map_err(|_| ApiError::invalid("page_size", "must be a whole number"))?;
                }
                "page_token" => request.page_token = value,
                other => {
                    return Err(unknown(
                        other,
                        "user_id, unread_only, page_size, page_token",
                    ));
                }
            }
        }
        default_user(&mut request.user_id, identity.user.as_deref());
        let page = web.inbox.list(identity.user.as_deref(), request).await?;
        let notifications: Vec<Value> = page
            .notifications
            .into_iter()
            .filter_map(|e| herald::Event::try_from(e).ok())
            .map(|e| e.to_json())
            .collect();
        Ok(json!({
            "notifications": notifications,
            "next_page_token": page.next_page_token,
            "unread_count": page.unread_count,
        }))
    })
    .await
}

/// `GET /v1/inbox/unread_count`: how many of the caller's notifications are unread.
pub async fn unread(State(web): State<Arc<Web>>, parts: http::request::Parts) -> Response {
    respond(async {
        let identity = web.caller_of(Rpc::GetUnreadCount, &parts)?;
        let mut request = pb::GetUnreadCountRequest::default();
        for (key, value) in query_pairs(&parts) {
            match key.as_str() {
                "user_id" => request.user_id = value,
                other => return Err(unknown(other, "user_id")),
            }
        }
        default_user(&mut request.user_id, identity.user.as_deref());
        let count = web.inbox.unread(identity.user.as_deref(), request).await?;
        Ok(json!({ "unread_count": count.unread_count }))
    })
    .await
}

/// The body of `POST /v1/inbox/read`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkRead {
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    event_ids: Vec<String>,
    #[serde(default)]
    all: bool,
}

/// `POST /v1/inbox/read`: marks notifications read.
pub async fn mark_read(State(web): State<Arc<Web>>, request: Request) -> Response {
    respond(async {
        let (identity, body): (_, MarkRead) = json_call(&web, Rpc::MarkRead, request).await?;
        let mut request = pb::MarkReadRequest {
            user_id: body.user_id,
            event_ids: body.event_ids,
            all: body.all,
        };
        default_user(&mut request.user_id, identity.user.as_deref());
        let done = web
            .inbox
            .mark_read(identity.user.as_deref(), request)
            .await?;
        Ok(json!({ "marked": done.marked, "unread_count": done.unread_count }))
    })
    .await
}

/// The caller of a JSON call standing for `rpc`, and its body: read whole
/// (at most [`MAX_BODY_BYTES`], within the body timeout), then checked as
/// `application/json` holding a `T` (named after the RPC in errors).
pub(super) async fn json_call<T: serde::de::DeserializeOwned>(
    web: &Web,
    rpc: Rpc,
    request: Request,
) -> Result<(crate::auth::Identity, T), ApiError> {
    let (parts, body) = read_whole(request, MAX_BODY_BYTES, web.body_timeout)
        .await?
        .into_parts();
    let identity = web.caller_of(rpc, &parts)?;
    let json_body = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_body {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as application/json",
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the request body broke off"))?;
    let body: T = serde_json::from_slice(&bytes).map_err(|e| {
        let name = rpc.path().rsplit('/').next().unwrap_or_default();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not a {name}: {e}"),
        )
    })?;
    Ok((identity, body))
}

/// `GET /herald-inbox.js`: the `<herald-inbox>` element.
pub async fn element() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        ELEMENT,
    )
        .into_response()
}

/// The JSON of `answer`, or its error.
pub(super) async fn respond(answer: impl Future<Output = Result<Value, ApiError>>) -> Response {
    match answer.await {
        Ok(value) => ([(header::CACHE_CONTROL, "no-store")], Json(value)).into_response(),
        Err(err) => err.into_response(),
    }
}

/// The query's parameters, decoded.
pub(super) fn query_pairs(parts: &http::request::Parts) -> Vec<(String, String)> {
    form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A user token's own user when the request names none.
pub(super) fn default_user(user_id: &mut String, token_user: Option<&str>) {
    if user_id.is_empty()
        && let Some(user) = token_user
    {
        user.clone_into(user_id);
    }
}

/// `true` or `false`.
fn flag(field: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        _ => Err(ApiError::invalid(field, "must be true or false")),
    }
}

/// An unknown query parameter, named, and those there are.
pub(super) fn unknown(key: &str, known: &str) -> ApiError {
    ApiError::invalid(
        &herald::error::truncate(key, 64),
        format!("is not a parameter here ({known})"),
    )
}
