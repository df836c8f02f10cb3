//! The console's JSON API: each route calls this logger over gRPC with the
//! caller's key and answers JSON, or `{"code", "message", "field"}` with the
//! HTTP status of the gRPC code. The live feed is newline-delimited JSON, one
//! object per change (`{"kind": "event", "cursor", "event"}`), heartbeat or
//! history gap, after a first `{"kind": "open"}`.

use std::{sync::Arc, time::SystemTime};

use axum::{
    Json,
    body::Body,
    extract::{Path, Query, State, rejection::JsonRejection, rejection::QueryRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;
use herald::{Event, EventStatus, auth::Scope};
use herald_client::{Client, Error, ListEvents, Message, Redrive, SubscribeOptions};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Console;
use crate::http_api::{ApiError, parse_status, storage_error};

pub(super) type ApiResult = Result<Response, ApiError>;

impl Console {
    /// This logger's client, carrying the caller's key (if any) on every call.
    pub(super) fn client_for(&self, headers: &HeaderMap) -> Result<Client, ApiError> {
        let key = headers
            .get(header::AUTHORIZATION)
            .map(|v| {
                v.to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "send the key as authorization: Bearer <key>",
                        )
                    })
            })
            .transpose()?;
        match key {
            None => Ok(self.client.clone()),
            Some(key) => Ok(self.client.clone().with_api_key(key)?),
        }
    }
}

/// `GET /api/session`: who the key is and what the page may show it.
pub async fn session(State(console): State<Arc<Console>>, headers: HeaderMap) -> ApiResult {
    let identity = console.keys.authenticate(&headers).map_err(Error::from)?;
    if identity.user.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a user token cannot open the console: use an API key",
        ));
    }
    let may = |scope: Scope| identity.allows(scope);
    Ok(Json(json!({
        "open": console.keys.is_open(),
        "client_id": identity.client_id,
        "scopes": identity.scopes().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "read": may(Scope::EventsRead),
        "write": may(Scope::EventsWrite),
        "process": may(Scope::EventsProcess),
        "subscribe": may(Scope::NotificationsSubscribe),
        "recipients_read": may(Scope::RecipientsRead),
        "recipients_write": may(Scope::RecipientsWrite),
    }))
    .into_response())
}

/// `GET /api/stats`: events by status, and stored events per second over
/// the last minutes (`rate`: `[unix ms, per second]`, from the change in
/// the number stored; removals by retention count as none).
pub async fn stats(State(console): State<Arc<Console>>, headers: HeaderMap) -> ApiResult {
    let stats = console.client_for(&headers)?.stats().await?;
    let samples = console.samples.lock().expect("samples lock").clone();
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    };
    let rate: Vec<Value> = samples
        .iter()
        .zip(samples.iter().skip(1))
        .map(|((t0, n0), (t1, n1))| {
            let seconds = t1.duration_since(*t0).map_or(0.0, |d| d.as_secs_f64());
            let per_second = if seconds > 0.0 {
                n1.saturating_sub(*n0) as f64 / seconds
            } else {
                0.0
            };
            json!([ms(*t1), per_second])
        })
        .collect();
    Ok(Json(json!({
        "total": stats.total_events,
        "pending": stats.pending_events,
        "processed": stats.processed_events,
        "opened": stats.opened_events,
        "failed": stats.failed_events,
        "scheduled": stats.scheduled_events,
        "cancelled": stats.cancelled_events,
        "subscribers": stats.active_subscribers,
        "rate": rate,
    }))
    .into_response())
}

/// The filters of `GET /api/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    user_id: Option<String>,
    session_id: Option<String>,
    category: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    status: Option<String>,
    /// RFC 3339: events that occurred at or after.
    since: Option<String>,
    /// RFC 3339: events that occurred before.
    until: Option<String>,
    /// `newest` (first) or `oldest`.
    order: Option<String>,
    page_size: Option<String>,
    page_token: Option<String>,
}

/// `GET /api/events`: one page of ListEvents.
pub async fn list_events(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query?;
    let given = |v: Option<String>| v.filter(|v| !v.is_empty());
    let mut list = ListEvents::new();
    if let Some(user) = given(q.user_id) {
        list = list.user(user);
    }
    if let Some(session) = given(q.session_id) {
        list = list.session(session);
    }
    if let Some(category) = given(q.category) {
        list = list.category(category);
    }
    if let Some(event_type) = given(q.event_type) {
        list = list.event_type(event_type);
    }
    if let Some(status) = given(q.status) {
        list = list.status(parse_status("status", &status)?);
    }
    if let Some(since) = given(q.since) {
        list = list.since(parse_time("since", &since)?);
    }
    if let Some(until) = given(q.until) {
        list = list.until(parse_time("until", &until)?);
    }
    match given(q.order).as_deref() {
        None | Some("oldest") => {}
        Some("newest") => list = list.newest_first(),
        Some(other) => {
            return Err(ApiError::invalid(
                "order",
                format!("is newest or oldest, not {}", herald::error::quote(other)),
            ));
        }
    }
    if let Some(size) = given(q.page_size) {
        let size = size
            .parse()
            .map_err(|_| ApiError::invalid("page_size", "is not a whole number"))?;
        list = list.page_size(size);
    }
    if let Some(token) = given(q.page_token) {
        list = list.page_token(token);
    }
    let page = console.client_for(&headers)?.list_events(list).await?;
    Ok(Json(json!({
        "events": page.items.iter().map(Event::to_json).collect::<Vec<_>>(),
        "next_page_token": page.next,
    }))
    .into_response())
}

/// `GET /api/events/{id}`: the event, its delivery attempts, and its status
/// history as far as the notification log keeps it.
pub async fn event(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::invalid("event_id", "is not a UUID"))?;
    let client = console.client_for(&headers)?;
    let event = client.get_event(id).await?;
    let attempts = client.delivery_attempts(id).await?;
    let (history, complete) = console.history(&event).await?;
    Ok(Json(json!({
        "event": event.to_json(),
        "attempts": attempts.iter().map(|a| a.to_json()).collect::<Vec<_>>(),
        "history": history,
        "history_complete": complete,
    }))
    .into_response())
}

/// `POST /api/events/{id}/cancel`: cancels a SCHEDULED event
/// (CancelEvent) and answers it.
pub async fn cancel(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::invalid("event_id", "is not a UUID"))?;
    let event = console.client_for(&headers)?.cancel_event(id).await?;
    Ok(Json(json!({ "event": event.to_json() })).into_response())
}

/// The query of `GET /api/dead-letters`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLettersQuery {
    page_token: Option<String>,
}

/// `GET /api/dead-letters`: one page of dead letters, oldest first.
pub async fn dead_letters(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    query: Result<Query<DeadLettersQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query?;
    let token = q.page_token.unwrap_or_default();
    let page = console
        .client_for(&headers)?
        .list_dead_letters(100, &token)
        .await?;
    let dead: Vec<Value> = page
        .items
        .iter()
        .map(|d| {
            json!({
                "dead_letter_id": d.id,
                "event": d.event.to_json(),
                "reason": d.reason,
                "deliveries": d.deliveries,
            })
        })
        .collect();
    Ok(Json(json!({ "dead_letters": dead, "next_page_token": page.next })).into_response())
}

/// The body of `POST /api/redrive`: some events, or every dead letter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveBody {
    #[serde(default)]
    event_ids: Vec<String>,
    #[serde(default)]
    all: bool,
}

/// `POST /api/redrive`: queues dead-lettered events again.
pub async fn redrive(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    body: Result<Json<RedriveBody>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body?;
    let which = match (body.all, body.event_ids.is_empty()) {
        (true, true) => Redrive::All,
        (false, false) => Redrive::Ids(
            body.event_ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    Uuid::parse_str(id)
                        .map_err(|_| ApiError::invalid(&format!("event_ids[{i}]"), "is not a UUID"))
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => {
            return Err(ApiError::invalid(
                "event_ids",
                "give event ids or all, one of them",
            ));
        }
    };
    let results = console.client_for(&headers)?.redrive(which).await?;
    let results: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(event) => json!({ "ok": true, "event": event.to_json() }),
            Err(err) => json!({ "ok": false, "error": ApiError::from(err).message }),
        })
        .collect();
    Ok(Json(json!({ "results": results })).into_response())
}

/// The filters of `GET /api/feed`; lists are comma-separated.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    user_id: Option<String>,
    categories: Option<String>,
    types: Option<String>,
    session_id: Option<String>,
    /// Statuses changed into; empty for every status.
    statuses: Option<String>,
    /// Resume after this cursor.
    after: Option<String>,
}

/// `GET /api/feed`: the changes the filters ask for as they happen (after
/// `after`, if given), as newline-delimited JSON, until the page goes or
/// the logger stops.
pub async fn feed(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> ApiResult {
    // Whether the caller may subscribe at all, before anything is read
    // from storage (the Subscribe call below decides the rest).
    console
        .keys
        .check("/herald.v1.Notifier/Subscribe", &headers)
        .map_err(Error::from)?;
    let Query(q) = query?;
    let list = |v: Option<String>| -> Vec<String> {
        v.unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let statuses = match list(q.statuses) {
        names if names.is_empty() => EventStatus::ALL.to_vec(),
        names => names
            .iter()
            .map(|name| parse_status("statuses", name))
            .collect::<Result<_, _>>()?,
    };
    let options = SubscribeOptions {
        user_id: q.user_id.unwrap_or_default(),
        categories: list(q.categories),
        types: list(q.types),
        session_id: q.session_id.unwrap_or_default(),
        statuses,
        after_cursor: match q.after.filter(|a| !a.is_empty()) {
            Some(after) => after,
            // From the newest entry on, so the page knows where it stands
            // before the first change comes (a pause resumes from there).
            None => console
                .feed
                .latest_cursor()
                .await
                .map_err(storage_error)?
                .to_string(),
        },
    };
    let cursor = options.after_cursor.clone();
    let subscription = console
        .client_for(&headers)?
        .subscribe_with(options)
        .await?;
    let opened = futures_util::stream::once(std::future::ready(
        json!({ "kind": "open", "cursor": cursor }),
    ));
    let messages = subscription.map(|message| match message {
        Ok(Message::Event(n)) => {
            json!({ "kind": "event", "cursor": n.cursor, "event": n.event.to_json() })
        }
        Ok(Message::Heartbeat { cursor }) => json!({ "kind": "heartbeat", "cursor": cursor }),
        Ok(Message::HistoryGap {
            oldest_cursor,
            reason,
            ..
        }) => json!({ "kind": "gap", "cursor": oldest_cursor, "reason": reason }),
        Err(err) => {
            let err = ApiError::from(err);
            json!({ "kind": "error", "code": err.code, "message": err.message })
        }
    });
    let lines = opened
        .chain(messages)
        .take_until(console.shutdown.clone().cancelled_owned())
        .map(|value| {
            let mut line = value.to_string();
            line.push('\n');
            Ok::<_, std::convert::Infallible>(line)
        });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(lines),
    )
        .into_response())
}

fn parse_time(field: &str, text: &str) -> Result<SystemTime, ApiError> {
    herald::domain::parse_rfc3339(text).map_err(|why| ApiError::invalid(field, why))
}
