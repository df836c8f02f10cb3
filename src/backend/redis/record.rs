//! Event records: the hash fields, the stream entries, and reading them back.

use std::collections::HashMap;

use ::redis::{Value, streams::StreamId};
use uuid::Uuid;

use crate::{
    cursor::EntryId,
    domain::{Event, EventStatus, StatusChange, from_micros, to_micros},
    error::{Error, Result},
    trace::TraceParent,
};

/// How many fields a record has.
pub(super) const RECORD_FIELDS: usize = 14;

/// The record's fields as written to the hash and the streams. An absent
/// payload is an empty string; a present one is its JSON.
pub(super) fn record(event: &Event) -> [(&'static str, String); RECORD_FIELDS] {
    let payload = event
        .payload
        .as_ref()
        .map(|p| serde_json::Value::Object(p.clone()).to_string())
        .unwrap_or_default();
    [
        ("id", event.id.to_string()),
        ("user_id", event.user_id.clone()),
        ("description", event.description.clone()),
        ("status", event.status.as_str().to_owned()),
        ("created_at", to_micros(event.created_at).to_string()),
        ("updated_at", to_micros(event.updated_at).to_string()),
        ("category", event.category.clone()),
        ("type", event.event_type.clone()),
        ("session_id", event.session_id.clone()),
        ("payload", payload),
        ("occurred_at", to_micros(event.occurred_at).to_string()),
        ("request_id", event.request_id.clone()),
        ("source", event.source.clone()),
        (
            "traceparent",
            event.traceparent.map(|t| t.to_string()).unwrap_or_default(),
        ),
    ]
}

/// The result of one change of the status script.
pub(super) fn status_outcome(change: StatusChange, outcome: &str, detail: Value) -> Result<Event> {
    match outcome {
        "missing" => Err(Error::NotFound(change.id)),
        "forbidden" => {
            let current = string(detail)?;
            let from = EventStatus::parse(&current)
                .ok_or_else(|| Error::Internal(format!("stored status {current:?} is unknown")))?;
            Err(Error::InvalidTransition {
                from,
                to: change.status,
            })
        }
        "same" | "changed" => parse_record(&flat_map(detail)?),
        other => Err(Error::Internal(format!(
            "unexpected script outcome {other:?}"
        ))),
    }
}

/// Reads a record back from its fields.
pub(super) fn parse_record(fields: &HashMap<String, String>) -> Result<Event> {
    let get = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| Error::Internal(format!("stored event lacks field {name}")))
    };
    let bad = |name: &str| Error::Internal(format!("stored event has a malformed {name}"));
    let micros = |name: &str| {
        get(name)?
            .parse::<i64>()
            .map(from_micros)
            .map_err(|_| bad(name))
    };
    let optional = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let payload = match fields.get("payload").map(String::as_str) {
        None | Some("") => None,
        Some(json) => match serde_json::from_str(json) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            _ => return Err(bad("payload")),
        },
    };
    let created_at = micros("created_at")?;
    Ok(Event {
        id: Uuid::try_parse(get("id")?).map_err(|_| bad("id"))?,
        user_id: get("user_id")?.clone(),
        description: get("description")?.clone(),
        status: EventStatus::parse(get("status")?).ok_or_else(|| bad("status"))?,
        created_at,
        updated_at: micros("updated_at")?,
        occurred_at: if fields.contains_key("occurred_at") {
            micros("occurred_at")?
        } else {
            created_at
        },
        category: optional("category"),
        event_type: optional("type"),
        session_id: optional("session_id"),
        payload,
        request_id: optional("request_id"),
        source: optional("source"),
        traceparent: fields
            .get("traceparent")
            .and_then(|t| TraceParent::parse(t)),
    })
}

pub(super) fn string(value: Value) -> Result<String> {
    ::redis::from_redis_value(value).map_err(|e| Error::Internal(format!("redis reply: {e}")))
}

/// Reads a flat `[field, value, ...]` array (HGETALL in a script) into a map.
pub(super) fn flat_map(value: Value) -> Result<HashMap<String, String>> {
    let Value::Array(items) = value else {
        return Err(Error::Internal("redis reply: expected an array".into()));
    };
    let mut items = items.into_iter();
    let mut map = HashMap::new();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        map.insert(string(k)?, string(v)?);
    }
    Ok(map)
}

/// A stream entry's single field: the record's fields as one JSON object.
/// One field instead of thirteen keeps XADD and XREAD cheap for Redis.
pub(super) fn entry_json(fields: &[(&'static str, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The id of a stream entry Redis gave.
pub(super) fn entry_id_of(id: &str) -> Result<EntryId> {
    id.parse()
        .map_err(|_| Error::Internal(format!("redis gave the stream entry id {id:?}")))
}

pub(super) fn stream_entry_event(entry: StreamId) -> Result<(EntryId, Event)> {
    let json = entry
        .map
        .get("event")
        .cloned()
        .ok_or_else(|| Error::Internal(format!("stream entry {} has no event", entry.id)))?;
    let fields: HashMap<String, String> = serde_json::from_str(&string(json)?)
        .map_err(|e| Error::Internal(format!("stream entry {}: {e}", entry.id)))?;
    Ok((entry_id_of(&entry.id)?, parse_record(&fields)?))
}
