//! Event records: one Redis string per event, written once on creation
//! and changed in place by status changes. It starts with a fixed head of
//! [`HEAD`] bytes, the part that changes and the part the scripts read:
//!
//! | bytes   | what                                                     |
//! |---------|----------------------------------------------------------|
//! | 0       | status code (`1` PENDING, `2` PROCESSED, `3` OPENED, `4` FAILED, `5` SCHEDULED, `6` CANCELLED) |
//! | 1..9    | updated_at, microseconds since the epoch, i64 big-endian |
//! | 9..17   | created_at, the same way (retention reads it)            |
//! | 17..25  | occurred_at, the same way (a status change scores the status index with it) |
//! | 25..50  | traceparent of the last change that carried one, packed (zeros: none) |
//! | 50..52  | length n of `ix`, u16 big-endian                         |
//!
//! then `ix`, the event's query indexes other than its status's, for
//! retention: the user id on the first line, then one `kind:value` line per
//! other index (`category:billing`); these lines are the only place the
//! user id, session, category and type are stored. Then the rest of what
//! never changes as protobuf bytes. The event id is not in the record:
//! it is in the record's key, and every reader knows it. A notification
//! entry carries what the change left in the head (status, updated_at and
//! traceparent, [`CHANGE`] bytes); a dead letter the id and
//! the record whole. Nothing is encoded in Lua and no reader parses JSON or
//! text numbers.

use std::time::SystemTime;

use ::redis::{FromRedisValue, Value};
use prost::Message;
use uuid::Uuid;

use super::stream::Entry;
use herald::{
    cursor::EntryId,
    domain::{Event, EventStatus, StatusChange, from_micros, to_micros},
    error::{Error, Result},
    trace::TraceParent,
};

/// Bytes of a record's head (see the module docs).
pub(super) const HEAD: usize = 50;
/// Where `created_at` starts in the head.
const CREATED_AT: usize = 9;
/// Where `occurred_at` starts in the head.
const OCCURRED_AT: usize = 17;
/// Where the packed traceparent starts in the head.
const TRACE: usize = 25;
/// Bytes of a change as a notification entry holds it: the head without
/// the times that never change (status, updated_at, traceparent).
pub(super) const CHANGE: usize = HEAD - (TRACE - CREATED_AT);

/// The part of an event that never changes, as stored after `ix` (the id
/// is in the key; the user id and the indexed attributes are in `ix`).
#[derive(Clone, PartialEq, Message)]
struct Stored {
    #[prost(string, tag = "3")]
    description: String,
    /// The payload as JSON; empty for none.
    #[prost(string, tag = "9")]
    payload: String,
    #[prost(string, tag = "10")]
    request_id: String,
    #[prost(string, tag = "11")]
    source: String,
    /// The channels that took the event: each success appends one
    /// field to the record (see [`delivered_field`]), which protobuf reads
    /// as one more item.
    #[prost(string, repeated, tag = "12")]
    delivered: Vec<String>,
    /// When the event is due, microseconds since the epoch; 0 for an event
    /// delivered at once.
    #[prost(int64, tag = "13")]
    deliver_at: i64,
}

/// The bytes a success of `channel` appends to the record: one
/// `delivered` item of the protobuf part, which is the record's end.
pub(super) fn delivered_field(channel: &str) -> Vec<u8> {
    Stored {
        delivered: vec![channel.to_owned()],
        ..Stored::default()
    }
    .encode_to_vec()
}

/// The one-byte code of `status` in a record's head (the scripts compare
/// and write codes; `change_status.lua` names their indexes).
pub(super) fn code(status: EventStatus) -> u8 {
    match status {
        EventStatus::Pending => b'1',
        EventStatus::Processed => b'2',
        EventStatus::Opened => b'3',
        EventStatus::Failed => b'4',
        EventStatus::Scheduled => b'5',
        EventStatus::Cancelled => b'6',
    }
}

/// The status of a code.
fn status_of(code: u8) -> Option<EventStatus> {
    EventStatus::ALL
        .into_iter()
        .find(|s| self::code(*s) == code)
}

/// The codes of the statuses `status` may be entered from, as the status
/// scripts take them.
pub(super) fn source_codes(status: EventStatus) -> Vec<u8> {
    status.sources().map(code).collect()
}

/// A time as the head holds it: microseconds, i64 big-endian.
pub(super) fn micros_bytes(t: SystemTime) -> [u8; 8] {
    to_micros(t).to_be_bytes()
}

/// A change's traceparent as the status scripts take it: packed, or
/// empty to keep the record's.
pub(super) fn trace_arg(trace: Option<TraceParent>) -> Vec<u8> {
    trace.map_or_else(Vec::new, |t| t.to_packed().to_vec())
}

/// What a notification entry holds of a record just written: its head's
/// status, updated_at and traceparent ([`CHANGE`] bytes), as the scripts
/// write it.
pub(super) fn change_of(record: &[u8]) -> Vec<u8> {
    [&record[..CREATED_AT], &record[TRACE..HEAD]].concat()
}

/// The head of `event`'s record as it is now.
fn head(event: &Event) -> [u8; HEAD] {
    let mut head = [0u8; HEAD];
    head[0] = code(event.status);
    head[1..CREATED_AT].copy_from_slice(&micros_bytes(event.updated_at));
    head[CREATED_AT..OCCURRED_AT].copy_from_slice(&micros_bytes(event.created_at));
    head[OCCURRED_AT..TRACE].copy_from_slice(&micros_bytes(event.occurred_at));
    if let Some(trace) = event.traceparent {
        head[TRACE..].copy_from_slice(&trace.to_packed());
    }
    head
}

/// What creating an event writes (see `create_many.lua`).
pub(super) struct NewRecord {
    /// The record's bytes (see the module docs).
    pub value: Vec<u8>,
    /// The event's query indexes other than its status's, as kind and
    /// value (`("user", "ann")` first).
    pub indexes: Vec<(&'static str, String)>,
}

/// The record of `event` as it is now.
pub(super) fn record(event: &Event) -> Result<NewRecord> {
    let mut indexes = vec![("user", event.user_id.clone())];
    let mut ix = event.user_id.clone();
    for (kind, value) in [
        ("session", &event.session_id),
        ("category", &event.category),
        ("type", &event.event_type),
    ] {
        if !value.is_empty() {
            ix.extend(["\n", kind, ":", value]);
            indexes.push((kind, value.clone()));
        }
    }
    let ix_len = u16::try_from(ix.len())
        .map_err(|_| Error::Internal(format!("index keys of {} bytes", ix.len())))?;
    let stored = Stored {
        description: event.description.clone(),
        payload: event
            .payload
            .as_ref()
            .map(|p| serde_json::Value::Object(p.clone()).to_string())
            .unwrap_or_default(),
        request_id: event.request_id.clone(),
        source: event.source.clone(),
        delivered: Vec::new(),
        deliver_at: event.deliver_at.map_or(0, to_micros),
    };
    let mut value = Vec::with_capacity(HEAD + 2 + ix.len() + stored.encoded_len());
    value.extend_from_slice(&head(event));
    value.extend_from_slice(&ix_len.to_be_bytes());
    value.extend_from_slice(ix.as_bytes());
    stored
        .encode(&mut value)
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(NewRecord { value, indexes })
}

/// The bytes of `event`'s record with `delivered` (the channels that took
/// it), as a dead letter keeps it.
pub(super) fn record_delivered(event: &Event, delivered: &[String]) -> Result<Vec<u8>> {
    let mut value = record(event)?.value;
    for channel in delivered {
        value.extend(delivered_field(channel));
    }
    Ok(value)
}

/// The result of one change of a status script.
pub(super) fn status_outcome(change: StatusChange, outcome: &str, detail: Value) -> Result<Event> {
    match outcome {
        "missing" => Err(Error::NotFound(change.id)),
        "forbidden" => {
            let current: Vec<u8> = from_value(detail)?;
            let from = current
                .first()
                .and_then(|c| status_of(*c))
                .ok_or_else(|| Error::Internal(format!("stored status {current:?} is unknown")))?;
            Err(Error::InvalidTransition {
                from,
                to: change.status,
            })
        }
        "same" | "changed" => parse_record(change.id, &from_value::<Vec<u8>>(detail)?, None),
        other => Err(Error::Internal(format!(
            "unexpected script outcome {other:?}"
        ))),
    }
}

/// Reads event `id` back from its record's bytes, with `change` (a
/// notification entry's, [`CHANGE`] bytes) in place of what the record's
/// head says now.
pub(super) fn parse_record(id: Uuid, value: &[u8], change: Option<&[u8]>) -> Result<Event> {
    parse_record_delivered(id, value, change).map(|(event, _)| event)
}

/// [`parse_record`], with the channels that took the event.
pub(super) fn parse_record_delivered(
    id: Uuid,
    value: &[u8],
    change: Option<&[u8]>,
) -> Result<(Event, Vec<String>)> {
    let bad = |name: &str| Error::Internal(format!("stored event has a malformed {name}"));
    let (own, rest) = value.split_at_checked(HEAD).ok_or_else(|| bad("head"))?;
    let mut head = [0u8; HEAD];
    head.copy_from_slice(own);
    if let Some(change) = change {
        if change.len() != CHANGE {
            return Err(bad("change"));
        }
        head[..CREATED_AT].copy_from_slice(&change[..CREATED_AT]);
        head[TRACE..].copy_from_slice(&change[CREATED_AT..]);
    }
    let (ix_len, rest) = rest.split_at_checked(2).ok_or_else(|| bad("ix"))?;
    let ix_len = usize::from(u16::from_be_bytes([ix_len[0], ix_len[1]]));
    let (ix, pb) = rest.split_at_checked(ix_len).ok_or_else(|| bad("ix"))?;
    let mut lines = std::str::from_utf8(ix).map_err(|_| bad("ix"))?.split('\n');
    let user_id = lines.next().unwrap_or_default().to_owned();
    let (mut session_id, mut category, mut event_type) =
        (String::new(), String::new(), String::new());
    for line in lines {
        let slot = match line.split_once(':') {
            Some(("session", value)) => (&mut session_id, value),
            Some(("category", value)) => (&mut category, value),
            Some(("type", value)) => (&mut event_type, value),
            _ => return Err(bad("ix")),
        };
        *slot.0 = slot.1.to_owned();
    }
    let stored = Stored::decode(pb).map_err(|_| bad("protobuf bytes"))?;
    let payload = match stored.payload.as_str() {
        "" => None,
        json => match serde_json::from_str(json) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            _ => return Err(bad("payload")),
        },
    };
    let micros = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&head[at..at + 8]);
        from_micros(i64::from_be_bytes(bytes))
    };
    let event = Event {
        id,
        user_id,
        description: stored.description,
        status: status_of(head[0]).ok_or_else(|| bad("status"))?,
        created_at: micros(CREATED_AT),
        updated_at: micros(1),
        occurred_at: micros(OCCURRED_AT),
        category,
        event_type,
        session_id,
        payload,
        request_id: stored.request_id,
        source: stored.source,
        traceparent: TraceParent::from_packed(&head[TRACE..]),
        deliver_at: (stored.deliver_at != 0).then(|| from_micros(stored.deliver_at)),
    };
    let mut delivered = stored.delivered;
    // A success recorded twice (two consumers racing) counts once.
    let mut seen = std::collections::HashSet::with_capacity(delivered.len());
    delivered.retain(|c| seen.insert(c.clone()));
    Ok((event, delivered))
}

/// A value of a Redis reply as `T`; a reply of another shape is our bug.
pub(super) fn from_value<T: FromRedisValue>(value: Value) -> Result<T> {
    ::redis::from_redis_value(value).map_err(|e| Error::Internal(format!("redis reply: {e}")))
}

/// The id of a stream entry Redis gave.
pub(super) fn entry_id_of(id: &str) -> Result<EntryId> {
    id.parse()
        .map_err(|_| Error::Internal(format!("redis gave the stream entry id {id:?}")))
}

/// What a queue or notification entry holds: the id of its event (16
/// bytes, field `id`; the rest is in the record) and, in the notification
/// log, what the change left in the record's head (field `change`).
pub(super) struct EntryRef {
    /// The entry's id in its stream.
    pub entry: EntryId,
    /// The event's id.
    pub id: Uuid,
    /// What the change left in the head, [`CHANGE`] bytes (`None` in the
    /// work queue, whose entries are all PENDING as their record says while
    /// they matter).
    pub change: Option<Vec<u8>>,
    /// The user's unread count after the change, if it moved it (field
    /// `unread`).
    pub unread: Option<u64>,
}

impl EntryRef {
    /// The reference a stream entry holds.
    pub fn of(mut entry: Entry) -> Result<Self> {
        let (event, change) = (entry.take("id"), entry.take("change"));
        let unread = entry.take("unread");
        let id = entry.id;
        let bad = || Error::Internal(format!("stream entry {id} is malformed"));
        let event = event.ok_or_else(bad)?;
        if change.as_ref().is_some_and(|c| c.len() != CHANGE) {
            return Err(bad());
        }
        let unread = unread
            .map(|n| {
                std::str::from_utf8(&n)
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(bad)
            })
            .transpose()?;
        Ok(Self {
            entry: entry_id_of(&id)?,
            id: Uuid::from_slice(&event).map_err(|_| bad())?,
            change,
            unread,
        })
    }

    /// The status the entry records, read without the record (`None` for
    /// a queue entry).
    pub fn status(&self) -> Option<EventStatus> {
        self.change.as_ref().and_then(|c| status_of(c[0]))
    }

    /// The event as of this entry, from its record's bytes (`None` if the
    /// record is gone: a gone record stays gone, whatever the entry says).
    pub fn event(&self, record: Option<&[u8]>) -> Result<Option<Event>> {
        record
            .map(|r| parse_record(self.id, r, self.change.as_deref()))
            .transpose()
    }

    /// [`EntryRef::event`], with the channels that took the event.
    pub fn event_delivered(&self, record: Option<&[u8]>) -> Result<Option<(Event, Vec<String>)>> {
        record
            .map(|r| parse_record_delivered(self.id, r, self.change.as_deref()))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald::{NewEvent, partition::Partitions};

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
        let new = record(&event).expect("record");
        assert_eq!(
            new.indexes,
            [("user", "ann".into()), ("category", "billing".into())]
        );
        // The scripts read the head and ix by place.
        let ix = b"ann\ncategory:billing";
        assert_eq!(new.value[0], b'1');
        assert_eq!(new.value[HEAD..HEAD + 2], [0, ix.len() as u8]);
        assert_eq!(&new.value[HEAD + 2..HEAD + 2 + ix.len()], ix);
        assert_eq!(
            parse_record(event.id, &new.value, None).expect("parse"),
            event
        );

        // A notification entry's change stands for what the record said then.
        let mut changed = event.clone();
        changed.status = EventStatus::Processed;
        changed.updated_at += std::time::Duration::from_secs(1);
        changed.traceparent = None;
        let change = change_of(&record(&changed).expect("record").value);
        assert_eq!(
            parse_record(event.id, &new.value, Some(&change)).expect("parse"),
            changed
        );
        assert!(parse_record(event.id, &new.value[..HEAD + 1], None).is_err());

        // Successes appended to the record read back as its channels, once each.
        let mut value = new.value.clone();
        for channel in ["hooks", "irc", "hooks"] {
            value.extend(delivered_field(channel));
        }
        let (read, delivered) = parse_record_delivered(event.id, &value, None).expect("parse");
        assert_eq!(
            (read, delivered),
            (event.clone(), vec!["hooks".into(), "irc".into()])
        );
        // The user id and attributes read back whole from `ix` (validation
        // refuses a line break in them; a colon is fine).
        event.user_id = "ann:x".into();
        event.session_id = "s:1".into();
        event.event_type = "click".into();
        let new = record(&event).expect("record");
        assert_eq!(
            parse_record(event.id, &new.value, None).expect("parse"),
            event
        );
    }

    #[test]
    fn every_status_has_its_own_code() {
        for status in EventStatus::ALL {
            assert_eq!(status_of(code(status)), Some(status));
        }
        assert_eq!(source_codes(EventStatus::Opened), b"2");
    }
}
