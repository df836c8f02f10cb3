//! `GET /v1/notifications`: one user's notifications as Server-Sent Events.
//!
//! The stream is a Subscribe stream ([`crate::notifier::NotifierService::open`]: the same
//! filters, limits and budget) written as `text/event-stream`:
//!
//! - a notification is a `message` event whose `data` is the event as JSON
//!   (the fields of `herald get --json`) and whose `id` is its cursor;
//! - a change that moved the user's unread count (into PROCESSED, or
//!   OPENED) is followed by an `unread` event, `{"unread_count": n}`;
//! - a heartbeat is a comment after the stream's cursor as `id` (no event
//!   fires, but the position moves on);
//! - `history_gap` and `lagged` events carry those messages as JSON, and
//!   an `end` event says why the server ended the stream (`code`,
//!   `message`), e.g. UNAVAILABLE when it shuts down.
//!
//! A client resumes with the last `id` it had in a `Last-Event-ID` header
//! (`EventSource` sends it when it reconnects), or in `after_cursor` when
//! it cannot send headers: what it missed comes first, with no gap and no
//! repeat. Credentials: `authorization: Bearer` (an API key with
//! `notifications:subscribe`, or a user token), or `ticket=` from
//! `POST /v1/tickets`. A user token itself is never accepted in the URL.
//!
//! Query parameters are Subscribe's fields: `user_id` (a user token's own
//! by default), `categories`, `types` and `statuses` (each repeatable,
//! statuses by name: `PROCESSED`), `session_id`, `after_cursor`.

use std::{convert::Infallible, sync::Arc};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::StreamExt;
use herald::pb::{self, subscribe_response::Kind};
use serde_json::json;
use tonic::Status;

use super::{Web, tickets::Claim};
use crate::{
    auth::{Identity, peer_addr, peer_ip},
    encoded::Encoded,
    http_api::{ApiError, parse_status},
    notifier::Caller,
};

/// How long `EventSource` waits before reconnecting, in milliseconds.
const RETRY_MS: u32 = 3_000;

/// Query parameters that are never accepted, and why.
const NEVER_IN_URLS: [&str; 3] = ["access_token", "token", "authorization"];

/// The stream's request, read from the query string and the headers.
struct StreamRequest {
    subscribe: pb::SubscribeRequest,
    ticket: Option<String>,
}

/// Streams the notifications the query asks for.
pub async fn stream(State(web): State<Arc<Web>>, parts: http::request::Parts) -> Response {
    match open(&web, &parts) {
        Ok(stream) => events(stream),
        Err(err) => err.into_response(),
    }
}

/// The Subscribe stream of this request, checked.
fn open(
    web: &Web,
    parts: &http::request::Parts,
) -> Result<crate::notifier::SubscribeStream, ApiError> {
    let StreamRequest {
        mut subscribe,
        ticket,
    } = read_request(parts.uri.query().unwrap_or_default(), &parts.headers)?;
    let (identity, claim) = match ticket {
        Some(_) if parts.headers.contains_key(header::AUTHORIZATION) => {
            return Err(ApiError::invalid(
                "ticket",
                "send a ticket or an authorization header, not both",
            ));
        }
        Some(ticket) => {
            let claim = check_ticket(web, parts, &ticket)?;
            let identity = Identity::end_user(claim.user.clone());
            web.auth.admit_rate(&identity)?;
            (identity, Some(claim))
        }
        None => (web.subscriber(parts)?, None),
    };
    if let Some(user) = &identity.user
        && subscribe.user_id.is_empty()
    {
        subscribe.user_id.clone_from(user);
    }
    let caller = Caller::new(Some(&identity), peer_addr(&parts.extensions));
    let stream = web.notifier.open(caller, subscribe)?;
    // Spent only now: a request refused above leaves its ticket usable. A
    // ticket spent meanwhile drops the stream just opened.
    if let (Some(claim), Some(tickets)) = (claim, &web.tickets) {
        tickets.spend(&claim)?;
    }
    Ok(stream)
}

/// What `ticket` claims, checked as a user token would be (failures
/// counted against the peer). Not spent yet.
fn check_ticket(web: &Web, parts: &http::request::Parts, ticket: &str) -> Result<Claim, ApiError> {
    let failures = web.auth.failures().zip(peer_ip(&parts.extensions));
    if let Some((failures, peer)) = failures {
        failures.check(peer)?;
    }
    let tickets = web.tickets.as_ref().ok_or_else(|| {
        ApiError::invalid(
            "ticket",
            "this logger issues no tickets (no --user-token-secret)",
        )
    })?;
    let claim = tickets.check(ticket).inspect_err(|_| {
        if let Some((failures, peer)) = failures {
            failures.failed(peer);
        }
    })?;
    Ok(claim)
}

/// Reads the query string (Subscribe's fields, and `ticket`) and the
/// `Last-Event-ID` header; an unknown or repeated single parameter is an
/// error naming it.
fn read_request(query: &str, headers: &HeaderMap) -> Result<StreamRequest, ApiError> {
    let mut subscribe = pb::SubscribeRequest::default();
    let mut ticket = None;
    let once = |slot: &mut String, key: &str, value: String| {
        if slot.is_empty() {
            *slot = value;
            Ok(())
        } else {
            Err(ApiError::invalid(key, "given twice"))
        }
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "user_id" => once(&mut subscribe.user_id, "user_id", value)?,
            "session_id" => once(&mut subscribe.session_id, "session_id", value)?,
            "after_cursor" => once(&mut subscribe.after_cursor, "after_cursor", value)?,
            "categories" => subscribe.categories.push(value),
            "types" => subscribe.types.push(value),
            "statuses" => {
                let status = parse_status("statuses", &value)?;
                subscribe.statuses.push(status.to_pb() as i32);
            }
            "ticket" if ticket.is_none() => ticket = Some(value),
            "ticket" => return Err(ApiError::invalid("ticket", "given twice")),
            never if NEVER_IN_URLS.contains(&never) => {
                return Err(ApiError::invalid(
                    never,
                    "credentials never go in a URL (access logs keep them): send \
                     authorization: Bearer, or a ticket from POST /v1/tickets",
                ));
            }
            other => {
                return Err(ApiError::invalid(
                    &herald::error::truncate(other, 64),
                    "is not a parameter of this stream (user_id, categories, types, \
                     session_id, statuses, after_cursor, ticket)",
                ));
            }
        }
    }
    if let Some(last) = headers.get("last-event-id") {
        let last = last
            .to_str()
            .map_err(|_| ApiError::invalid("Last-Event-ID", "is not text"))?;
        if !subscribe.after_cursor.is_empty() {
            return Err(ApiError::invalid(
                "after_cursor",
                "given with a Last-Event-ID header; send one",
            ));
        }
        subscribe.after_cursor = last.trim().to_owned();
    }
    Ok(StreamRequest { subscribe, ticket })
}

/// The response: the stream's messages as events, not buffered by proxies.
fn events(stream: crate::notifier::SubscribeStream) -> Response {
    let opening = futures_util::stream::once(std::future::ready(Bytes::from(format!(
        "retry: {RETRY_MS}\n\n"
    ))));
    let frames = opening.chain(stream.map(frame)).map(Ok::<_, Infallible>);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache, no-store, no-transform"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}

/// One message of the stream as an event (or a comment).
fn frame(message: Result<Encoded, Status>) -> Bytes {
    let message = match message {
        Ok(encoded) => encoded.decode(),
        Err(status) => {
            let end = ApiError::from(status);
            return event(
                None,
                Some("end"),
                &json!({ "code": end.code, "message": end.message }).to_string(),
            );
        }
    };
    let id = Some(message.cursor.as_str());
    match message.kind {
        Some(Kind::Event(event_pb)) => {
            let mut frame = match herald::Event::try_from(event_pb) {
                Ok(notification) => event(id, None, &notification.to_json().to_string()),
                // Never sent by this server: a message it cannot read is
                // skipped with its position kept.
                Err(_) => comment(id, "unreadable"),
            };
            if let Some(count) = message.unread_count {
                let unread = event(
                    id,
                    Some("unread"),
                    &json!({ "unread_count": count }).to_string(),
                );
                frame = [frame, unread].concat().into();
            }
            frame
        }
        Some(Kind::Heartbeat(_)) | None => comment(id, "heartbeat"),
        Some(Kind::HistoryGap(gap)) => event(
            id,
            Some("history_gap"),
            &json!({
                "requested_cursor": gap.requested_cursor,
                "oldest_cursor": gap.oldest_cursor,
                "reason": gap.reason,
            })
            .to_string(),
        ),
        Some(Kind::Lagged(lagged)) => event(
            id,
            Some("lagged"),
            &json!({ "buffered": lagged.buffered }).to_string(),
        ),
    }
}

/// An event: its `id` (a cursor: no line breaks), its name (`None`: a
/// plain message) and its one-line JSON `data`.
fn event(id: Option<&str>, name: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 64);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(data);
    out.push_str("\n\n");
    out.into()
}

/// A comment after an `id`: the client's position moves, no event fires.
fn comment(id: Option<&str>, text: &str) -> Bytes {
    let id = id.map(|id| format!("id: {id}\n")).unwrap_or_default();
    format!("{id}: {text}\n\n").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(query: &str, last_event_id: Option<&str>) -> Result<StreamRequest, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(last) = last_event_id {
            headers.insert("last-event-id", last.parse().expect("header"));
        }
        read_request(query, &headers)
    }

    #[test]
    fn the_query_is_subscribes_fields() {
        let request = read(
            "user_id=ann&categories=billing&categories=promo*&types=a&statuses=PROCESSED&statuses=opened&ticket=t",
            Some("2:16:0:1"),
        )
        .map_err(|e| e.message)
        .expect("valid");
        let s = request.subscribe;
        assert_eq!(s.user_id, "ann");
        assert_eq!(s.categories, ["billing", "promo*"]);
        assert_eq!(s.types, ["a"]);
        assert_eq!(
            s.statuses,
            [
                pb::EventStatus::Processed as i32,
                pb::EventStatus::Opened as i32
            ]
        );
        assert_eq!(s.after_cursor, "2:16:0:1");
        assert_eq!(request.ticket.as_deref(), Some("t"));
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        for (query, last, field) in [
            ("token=abc", None, "token"),
            ("access_token=abc", None, "access_token"),
            ("colour=red", None, "colour"),
            ("statuses=SENT", None, "statuses"),
            ("user_id=a&user_id=b", None, "user_id"),
            ("ticket=a&ticket=b", None, "ticket"),
            ("after_cursor=1", Some("2"), "after_cursor"),
        ] {
            let err = read(query, last).err().expect(query);
            assert_eq!(err.code, "INVALID_ARGUMENT", "{query}");
            assert!(err.message.starts_with(field), "{query}: {}", err.message);
        }
    }

    #[test]
    fn messages_become_events_and_comments() {
        let heartbeat = frame(Ok(crate::notifier::heartbeat(
            &herald::cursor::Cursor::start(herald::partition::Partitions::default()),
        )
        .into()));
        let text = String::from_utf8(heartbeat.to_vec()).expect("utf-8");
        assert!(
            text.starts_with("id: ") && text.ends_with("\n: heartbeat\n\n"),
            "{text:?}"
        );
        let lagged = frame(Ok(pb::SubscribeResponse {
            kind: Some(Kind::Lagged(pb::Lagged { buffered: 3 })),
            cursor: "c1".into(),
            unread_count: None,
        }
        .into()));
        assert_eq!(
            &lagged[..],
            b"id: c1\nevent: lagged\ndata: {\"buffered\":3}\n\n"
        );
        let end = frame(Err(Status::unavailable("server is shutting down")));
        assert_eq!(
            &end[..],
            b"event: end\ndata: {\"code\":\"UNAVAILABLE\",\"message\":\"server is shutting down\"}\n\n"
        );
    }
}
