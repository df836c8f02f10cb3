//! Event records: the immutable part of an event as protobuf bytes written
//! once, beside the few fields the scripts read or change (status, times,
//! trace, the index keys); stream entries and dead letters carry the same
//! bytes with the event's current status, so nothing is encoded in Lua and
//! no reader parses JSON.

use std::collections::HashMap;

use ::redis::{FromRedisValue, Value, streams::StreamId};
use prost::Message;
use uuid::Uuid;

use crate::{
    cursor::EntryId,
    domain::{Event, EventStatus, StatusChange, from_micros, to_micros},
    error::{Error, Result},
    trace::TraceParent,
};

/// A record's or entry's fields as Redis returns them: names to raw values.
pub(super) type Fields = HashMap<String, Vec<u8>>;

/// Longest value of a record field: Redis keeps a hash whose values are all
/// this short (and which has few fields) as one compact listpack, about half
/// the memory of a hash table (`hash-max-listpack-value`, 64 by default).
const MAX_FIELD_BYTES: usize = 64;
/// Where the pieces of the protobuf bytes start in [`READ_FIELDS`].
const FIRST_PIECE: usize = 3;
/// The names of the pieces of a record's protobuf bytes, in order
/// (`change_status.lua` reads the same eight by name).
const PB_PIECES: &[&str] = READ_FIELDS.split_at(FIRST_PIECE).1;

/// The part of an event that never changes, as stored (field `pb`).
#[derive(Clone, PartialEq, Message)]
struct Stored {
    /// The UUID's 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(string, tag = "2")]
    user_id: String,
    #[prost(string, tag = "3")]
    description: String,
    /// Microseconds since the epoch.
    #[prost(int64, tag = "4")]
    created_at: i64,
    /// Microseconds since the epoch.
    #[prost(int64, tag = "5")]
    occurred_at: i64,
    #[prost(string, tag = "6")]
    category: String,
    #[prost(string, tag = "7")]
    event_type: String,
    #[prost(string, tag = "8")]
    session_id: String,
    /// The payload as JSON; empty for none.
    #[prost(string, tag = "9")]
    payload: String,
    #[prost(string, tag = "10")]
    request_id: String,
    #[prost(string, tag = "11")]
    source: String,
}

fn stored(event: &Event) -> Vec<u8> {
    Stored {
        id: event.id.as_bytes().to_vec(),
        user_id: event.user_id.clone(),
        description: event.description.clone(),
        created_at: to_micros(event.created_at),
        occurred_at: to_micros(event.occurred_at),
        category: event.category.clone(),
        event_type: event.event_type.clone(),
        session_id: event.session_id.clone(),
        payload: event
            .payload
            .as_ref()
            .map(|p| serde_json::Value::Object(p.clone()).to_string())
            .unwrap_or_default(),
        request_id: event.request_id.clone(),
        source: event.source.clone(),
    }
    .encode_to_vec()
}

/// The changing fields of an event, as records and entries hold them.
fn changing(event: &Event) -> [(&'static str, Vec<u8>); 3] {
    [
        ("status", event.status.as_str().as_bytes().to_vec()),
        (
            "updated_at",
            to_micros(event.updated_at).to_string().into_bytes(),
        ),
        (
            "traceparent",
            event
                .traceparent
                .map(|t| t.to_string())
                .unwrap_or_default()
                .into_bytes(),
        ),
    ]
}

/// What creating an event writes (see `create_many.lua`).
pub(super) struct NewRecord {
    /// The record hash's fields: `status`, `updated_at`, `traceparent`,
    /// `occurred_at` and `created_at` (micros, for the scripts' index scores
    /// and retention) and `ix` always first and in that order (the create
    /// script reads them by place), then the protobuf bytes in pieces of at
    /// most 64 bytes (`pb`, `pb1`, ...; the last takes what is left).
    pub fields: Vec<(&'static str, Vec<u8>)>,
    /// The event's query-index keys other than its status's (field `ix`),
    /// one `kind:value` per line (`user:ann`, `type:…`).
    pub ix: String,
}

/// The record of a new event.
pub(super) fn record(event: &Event) -> NewRecord {
    let [status, updated_at, traceparent] = changing(event);
    let mut ix = format!("user:{}", event.user_id);
    for (kind, value) in [
        ("session", &event.session_id),
        ("category", &event.category),
        ("type", &event.event_type),
    ] {
        if !value.is_empty() {
            ix.extend(["\n", kind, ":", value]);
        }
    }
    let pb = stored(event);
    let pieces = pb.chunks(MAX_FIELD_BYTES).count().min(PB_PIECES.len());
    let mut fields = Vec::with_capacity(6 + pieces);
    fields.extend([
        status,
        updated_at,
        traceparent,
        (
            "occurred_at",
            to_micros(event.occurred_at).to_string().into_bytes(),
        ),
        (
            "created_at",
            to_micros(event.created_at).to_string().into_bytes(),
        ),
        ("ix", ix.clone().into_bytes()),
    ]);
    for (i, name) in PB_PIECES.iter().take(pieces).enumerate() {
        let from = i * MAX_FIELD_BYTES;
        let to = if i + 1 == pieces {
            pb.len()
        } else {
            from + MAX_FIELD_BYTES
        };
        fields.push((*name, pb[from..to].to_vec()));
    }
    NewRecord { fields, ix }
}

/// The fields of a stream entry or dead letter of the event as it is now.
pub(super) fn entry(event: &Event) -> [(&'static str, Vec<u8>); 4] {
    let [status, updated_at, traceparent] = changing(event);
    [("pb", stored(event)), status, updated_at, traceparent]
}

/// The result of one change of a status script.
pub(super) fn status_outcome(change: StatusChange, outcome: &str, detail: Value) -> Result<Event> {
    match outcome {
        "missing" => Err(Error::NotFound(change.id)),
        "forbidden" => {
            let current: String = from_value(detail)?;
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

/// Reads an event back from a record's or a dead letter's fields.
pub(super) fn parse_record(fields: &Fields) -> Result<Event> {
    assemble(|i| fields.get(READ_FIELDS[i]).map(Vec::as_slice))?
        .ok_or_else(|| Error::Internal("stored event lacks its status or bytes".into()))
}

/// The fields a reader reads of each record (`HMGET`): the changing ones,
/// then every piece of the protobuf bytes.
pub(super) const READ_FIELDS: [&str; 11] = [
    "status",
    "updated_at",
    "traceparent",
    "pb",
    "pb1",
    "pb2",
    "pb3",
    "pb4",
    "pb5",
    "pb6",
    "pb7",
];

/// The values of a record's [`READ_FIELDS`], as `HMGET` gives them (all
/// `None` if the record is gone).
pub(super) type ReadValues = Vec<Option<Vec<u8>>>;

/// Reads an event back from the values of a record's [`READ_FIELDS`];
/// `None` if the record is gone.
pub(super) fn event_of_read(values: &ReadValues) -> Result<Option<Event>> {
    assemble(|i| values.get(i).and_then(Option::as_deref))
}

/// An event from the value of each of [`READ_FIELDS`] (by place), its
/// protobuf pieces joined; `None` without a status or bytes.
fn assemble<'a>(field: impl Fn(usize) -> Option<&'a [u8]>) -> Result<Option<Event>> {
    let (Some(status), Some(updated_at), Some(first)) = (field(0), field(1), field(FIRST_PIECE))
    else {
        return Ok(None);
    };
    let mut pb = first.to_vec();
    for piece in (FIRST_PIECE + 1..READ_FIELDS.len()).map_while(&field) {
        pb.extend_from_slice(piece);
    }
    event_from(&pb, status, updated_at, field(2)).map(Some)
}

/// An event from its protobuf bytes and its changing fields as stored.
fn event_from(
    pb: &[u8],
    status: &[u8],
    updated_at: &[u8],
    traceparent: Option<&[u8]>,
) -> Result<Event> {
    let bad = |name: &str| Error::Internal(format!("stored event has a malformed {name}"));
    let stored = Stored::decode(pb).map_err(|_| bad("pb"))?;
    let payload = match stored.payload.as_str() {
        "" => None,
        json => match serde_json::from_str(json) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            _ => return Err(bad("payload")),
        },
    };
    Ok(Event {
        id: Uuid::from_slice(&stored.id).map_err(|_| bad("id"))?,
        user_id: stored.user_id,
        description: stored.description,
        status: std::str::from_utf8(status)
            .ok()
            .and_then(EventStatus::parse)
            .ok_or_else(|| bad("status"))?,
        created_at: from_micros(stored.created_at),
        updated_at: std::str::from_utf8(updated_at)
            .ok()
            .and_then(|t| t.parse().ok())
            .map(from_micros)
            .ok_or_else(|| bad("updated_at"))?,
        occurred_at: from_micros(stored.occurred_at),
        category: stored.category,
        event_type: stored.event_type,
        session_id: stored.session_id,
        payload,
        request_id: stored.request_id,
        source: stored.source,
        traceparent: traceparent
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(TraceParent::parse),
    })
}

/// A value of a Redis reply as `T`; a reply of another shape is our bug.
pub(super) fn from_value<T: FromRedisValue>(value: Value) -> Result<T> {
    ::redis::from_redis_value(value).map_err(|e| Error::Internal(format!("redis reply: {e}")))
}

/// Reads a flat `[field, value, ...]` array (HGETALL in a script) into fields.
pub(super) fn flat_map(value: Value) -> Result<Fields> {
    let Value::Array(items) = value else {
        return Err(Error::Internal("redis reply: expected an array".into()));
    };
    let mut items = items.into_iter();
    let mut map = Fields::new();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        map.insert(from_value(k)?, from_value(v)?);
    }
    Ok(map)
}

/// A stream entry's fields.
pub(super) fn entry_fields(entry: StreamId) -> Result<(String, Fields)> {
    let mut fields = Fields::with_capacity(entry.map.len());
    for (name, value) in entry.map {
        fields.insert(name, from_value(value)?);
    }
    Ok((entry.id, fields))
}

/// The id of a stream entry Redis gave.
pub(super) fn entry_id_of(id: &str) -> Result<EntryId> {
    id.parse()
        .map_err(|_| Error::Internal(format!("redis gave the stream entry id {id:?}")))
}

/// What a queue or notification entry holds: the id of its event (16
/// bytes, field `id`; the rest is in the record, read with
/// [`READ_FIELDS`]) and, in the notification log, the change it records.
pub(super) struct EntryRef {
    /// The entry's id in its stream.
    pub entry: EntryId,
    /// The event's id.
    pub id: Uuid,
    /// `status`, `updated_at` and `traceparent` as the change left them
    /// (`None` in the work queue, whose entries are all PENDING as their
    /// record says while they matter).
    pub change: Option<[Vec<u8>; 3]>,
}

impl EntryRef {
    /// The reference a stream entry holds.
    pub fn of(entry: StreamId) -> Result<Self> {
        let (id, mut fields) = entry_fields(entry)?;
        let bad = || Error::Internal(format!("stream entry {id} is malformed"));
        let event = fields.remove("id").ok_or_else(bad)?;
        let change = match (
            fields.remove("status"),
            fields.remove("updated_at"),
            fields.remove("traceparent"),
        ) {
            (Some(status), Some(updated_at), trace) => {
                Some([status, updated_at, trace.unwrap_or_default()])
            }
            _ => None,
        };
        Ok(Self {
            entry: entry_id_of(&id)?,
            id: Uuid::from_slice(&event).map_err(|_| bad())?,
            change,
        })
    }

    /// The event as of this entry, from the values of its record's
    /// [`READ_FIELDS`] (`None` if the record is gone).
    pub fn event(&self, values: &ReadValues) -> Result<Option<Event>> {
        let stored = |i: usize| values.get(i).and_then(Option::as_deref);
        match &self.change {
            // A gone record stays gone, whatever the entry says.
            Some(change) if stored(0).is_some() => assemble(|i| match change.get(i) {
                Some(value) => Some(value.as_slice()),
                None => stored(i),
            }),
            _ => assemble(stored),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewEvent, partition::Partitions};

    #[test]
    fn a_record_reads_back_as_the_event() {
        let mut event = NewEvent::new("ann", "hello")
            .expect("valid")
            .into_event(Partitions::default());
        event.category = "billing".into();
        event.payload = serde_json::json!({"n": 1, "x": [1.5, "y"]})
            .as_object()
            .cloned();
        event.traceparent = Some(TraceParent::new_root());
        let new = record(&event);
        // The create script reads the first six fields by place.
        let names: Vec<&str> = new.fields.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names[..6],
            [
                "status",
                "updated_at",
                "traceparent",
                "occurred_at",
                "created_at",
                "ix"
            ]
        );
        assert_eq!(new.ix, "user:ann\ncategory:billing");
        let fields: Fields = new
            .fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(parse_record(&fields).expect("parse"), event);
        assert_eq!(fields["ix"], b"user:ann\ncategory:billing");
        // Every piece fits a compact hash; a long payload takes several.
        assert!(fields.values().all(|v| v.len() <= MAX_FIELD_BYTES));
        event.payload = serde_json::json!({"text": "x".repeat(300)})
            .as_object()
            .cloned();
        let fields: Fields = record(&event)
            .fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert!(fields.contains_key("pb5"));
        assert_eq!(parse_record(&fields).expect("parse"), event);
        let entry: Fields = entry(&event)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(parse_record(&entry).expect("parse"), event);
    }
}
