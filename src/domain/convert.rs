//! Conversions between the domain types and the protobuf messages, and
//! between JSON payloads and `google.protobuf.Struct`.

use std::time::SystemTime;

use uuid::Uuid;

use super::*;
use crate::{error::Error, pb, trace::TraceParent};

/// A protobuf `Struct` as a JSON object. Whole numbers become JSON integers;
/// numbers that JSON cannot carry (NaN, infinities) become null.
pub fn struct_to_json(s: prost_types::Struct) -> Payload {
    fn value(v: prost_types::Value) -> serde_json::Value {
        use prost_types::value::Kind;
        match v.kind {
            None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
            // Struct numbers are doubles; whole ones read back as JSON integers.
            Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
                serde_json::Value::Number((n as i64).into())
            }
            Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Some(Kind::StringValue(s)) => serde_json::Value::String(s),
            Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
            Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(s)),
            Some(Kind::ListValue(l)) => {
                serde_json::Value::Array(l.values.into_iter().map(value).collect())
            }
        }
    }
    s.fields.into_iter().map(|(k, v)| (k, value(v))).collect()
}

/// A JSON object as a protobuf `Struct` (numbers become doubles).
pub fn json_to_struct(payload: &Payload) -> prost_types::Struct {
    fn value(v: &serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(*b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => Kind::StringValue(s.clone()),
            serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
                values: items.iter().map(value).collect(),
            }),
            serde_json::Value::Object(map) => Kind::StructValue(json_to_struct(map)),
        };
        prost_types::Value { kind: Some(kind) }
    }
    prost_types::Struct {
        fields: payload.iter().map(|(k, v)| (k.clone(), value(v))).collect(),
    }
}

impl From<Event> for pb::Event {
    fn from(e: Event) -> Self {
        pb::Event {
            event_id: e.id.to_string(),
            user_id: e.user_id,
            description: e.description,
            status: e.status.to_pb() as i32,
            created_at: Some(e.created_at.into()),
            updated_at: Some(e.updated_at.into()),
            category: e.category,
            r#type: e.event_type,
            session_id: e.session_id,
            payload: e.payload.as_ref().map(json_to_struct),
            occurred_at: Some(e.occurred_at.into()),
            request_id: e.request_id,
            source: e.source,
            traceparent: e.traceparent.map(|t| t.to_string()).unwrap_or_default(),
            deliver_at: e.deliver_at.map(Into::into),
        }
    }
}

impl TryFrom<pb::Event> for Event {
    type Error = Error;

    /// Reads an event sent by a server; a malformed one is [`Error::Internal`].
    fn try_from(e: pb::Event) -> Result<Self, Error> {
        let bad = |what: &str| Error::Internal(format!("malformed event from server: {what}"));
        let time = |t: Option<prost_types::Timestamp>, what: &str| {
            t.and_then(|t| SystemTime::try_from(t).ok())
                .ok_or_else(|| bad(what))
        };
        Ok(Event {
            id: Uuid::try_parse(&e.event_id).map_err(|_| bad("event_id"))?,
            status: EventStatus::from_pb(e.status, "status").map_err(|_| bad("status"))?,
            created_at: time(e.created_at, "created_at")?,
            updated_at: time(e.updated_at, "updated_at")?,
            occurred_at: time(e.occurred_at, "occurred_at")?,
            user_id: e.user_id,
            description: e.description,
            category: e.category,
            event_type: e.r#type,
            session_id: e.session_id,
            payload: e.payload.map(struct_to_json),
            request_id: e.request_id,
            source: e.source,
            traceparent: TraceParent::parse(&e.traceparent),
            deliver_at: e.deliver_at.and_then(|t| SystemTime::try_from(t).ok()),
        })
    }
}

impl Event {
    /// The event as one JSON object (field names as in the protobuf
    /// message, times in RFC 3339; `deliver_at` only if the event was
    /// scheduled): what `herald get --json` prints and a webhook posts.
    pub fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "event_id": self.id.to_string(),
            "user_id": self.user_id,
            "description": self.description,
            "status": self.status.as_str(),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "category": self.category,
            "type": self.event_type,
            "session_id": self.session_id,
            "payload": self.payload,
            "occurred_at": rfc3339(self.occurred_at),
            "request_id": self.request_id,
            "source": self.source,
        });
        if let (Some(due), Some(object)) = (self.deliver_at, json.as_object_mut()) {
            object.insert("deliver_at".into(), rfc3339(due).into());
        }
        json
    }
}

impl From<DeliveryAttempt> for pb::DeliveryAttempt {
    fn from(a: DeliveryAttempt) -> Self {
        pb::DeliveryAttempt {
            channel: a.channel,
            kind: a.kind.as_str().to_owned(),
            target: a.target,
            attempted_at: Some(a.attempted_at.into()),
            latency: prost_types::Duration::try_from(a.latency).ok(),
            succeeded: a.succeeded,
            http_status: a.http_status.map_or(0, i32::from),
            error: a.error,
            skipped: a.skipped,
            digest_id: a.digest_id.map(|d| d.to_string()).unwrap_or_default(),
        }
    }
}

impl DeliveryAttempt {
    /// The attempt as one JSON object (times in RFC 3339, the latency in
    /// milliseconds): what `herald attempts --json` prints and the console
    /// shows.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "attempted_at": rfc3339(self.attempted_at),
            "channel": self.channel,
            "kind": self.kind.as_str(),
            "target": self.target,
            "succeeded": self.succeeded,
            "skipped": self.skipped,
            "http_status": self.http_status,
            "latency_ms": self.latency.as_secs_f64() * 1000.0,
            "error": self.error,
            "digest_id": self.digest_id.map(|d| d.to_string()),
        })
    }

    /// Reads an attempt of event `event_id` sent by a server; a malformed
    /// one is [`Error::Internal`].
    pub fn from_pb(event_id: Uuid, a: pb::DeliveryAttempt) -> Result<Self, Error> {
        let bad = |what: &str| Error::Internal(format!("malformed delivery attempt: {what}"));
        Ok(DeliveryAttempt {
            event_id,
            attempted_at: a
                .attempted_at
                .and_then(|t| SystemTime::try_from(t).ok())
                .ok_or_else(|| bad("attempted_at"))?,
            latency: a
                .latency
                .and_then(|d| std::time::Duration::try_from(d).ok())
                .unwrap_or_default(),
            http_status: u16::try_from(a.http_status).ok().filter(|s| *s != 0),
            kind: ChannelKind::parse(&a.kind).ok_or_else(|| bad("kind"))?,
            channel: a.channel,
            target: a.target,
            succeeded: a.succeeded,
            error: a.error,
            skipped: a.skipped,
            digest_id: match a.digest_id.as_str() {
                "" => None,
                id => Some(id.parse().map_err(|_| bad("digest_id"))?),
            },
        })
    }
}

impl TryFrom<pb::CreateEventRequest> for EventInput {
    type Error = Error;

    /// Reads a request; only an invalid timestamp or a payload number JSON
    /// cannot hold (NaN, infinities) fails here, the rest is checked by
    /// [`NewEvent::validate`].
    fn try_from(r: pb::CreateEventRequest) -> Result<Self, Error> {
        if let Some(path) = r
            .payload
            .as_ref()
            .and_then(|p| non_finite_number(p, "payload"))
        {
            return Err(Error::invalid(
                &path,
                "must be a finite number (JSON has no NaN or infinity)",
            ));
        }
        let occurred_at = match r.occurred_at {
            Some(t) => Some(parse_timestamp(t, "occurred_at")?),
            None => None,
        };
        let deliver_at = match r.deliver_at {
            Some(t) => Some(parse_timestamp(t, "deliver_at")?),
            None => None,
        };
        let deliver_after = match r.deliver_after {
            Some(d) => Some(
                std::time::Duration::try_from(d)
                    .map_err(|_| Error::invalid("deliver_after", "must be positive"))?,
            ),
            None => None,
        };
        Ok(EventInput {
            user_id: r.user_id,
            description: r.description,
            category: r.category,
            event_type: r.r#type,
            session_id: r.session_id,
            payload: r.payload.map(struct_to_json),
            occurred_at,
            request_id: r.request_id,
            deliver_at,
            deliver_after,
        })
    }
}

impl From<StatusChange> for pb::UpdateStatusRequest {
    fn from(c: StatusChange) -> Self {
        pb::UpdateStatusRequest {
            event_id: c.id.to_string(),
            status: c.status.to_pb() as i32,
            traceparent: c.trace.map(|t| t.to_string()).unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::UpdateStatusRequest> for StatusChange {
    type Error = Error;

    fn try_from(r: pb::UpdateStatusRequest) -> Result<Self, Error> {
        let id = parse_event_id(&r.event_id, "event_id");
        let status = EventStatus::from_pb(r.status, "status").and_then(|status| match status {
            EventStatus::Scheduled => Err(Error::invalid(
                "status",
                "SCHEDULED is entered by creating an event with deliver_at or deliver_after",
            )),
            EventStatus::Cancelled => Err(Error::invalid(
                "status",
                "CANCELLED is entered through CancelEvent",
            )),
            status => Ok(status),
        });
        let trace = match r.traceparent.as_str() {
            "" => Ok(None),
            text => TraceParent::parse(text).map(Some).ok_or_else(|| {
                Error::invalid(
                    "traceparent",
                    "is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)",
                )
            }),
        };
        match (id, status, trace) {
            (Ok(id), Ok(status), Ok(trace)) => Ok(StatusChange { id, status, trace }),
            (id, status, trace) => Err(Error::InvalidArgument(
                [id.err(), status.err(), trace.err()]
                    .into_iter()
                    .flatten()
                    .flat_map(Error::into_violations)
                    .collect(),
            )),
        }
    }
}

/// The per-item results of the batch RPCs (`CreateEventResult`,
/// `UpdateStatusResult`): each holds an event or the error that refused it.
pub trait BatchResult: Sized {
    /// The message for one item's outcome, as messages.
    fn from_parts(outcome: Result<pb::Event, tonic_types::pb::Status>) -> Self;
    /// The message for one item's outcome.
    fn from_outcome(outcome: Result<Event, Error>) -> Self {
        Self::from_parts(outcome.map(Into::into).map_err(Error::into_rpc_status))
    }
    /// The event or the error it holds (neither if the server sent an empty one).
    fn into_parts(self) -> (Option<pb::Event>, Option<tonic_types::pb::Status>);
}

macro_rules! batch_result {
    ($message:ident, $oneof:ident) => {
        impl BatchResult for pb::$message {
            fn from_parts(outcome: Result<pb::Event, tonic_types::pb::Status>) -> Self {
                // Other fields (CreateEventResult's flag) are the caller's to set.
                let mut message = Self::default();
                message.result = Some(match outcome {
                    Ok(event) => pb::$oneof::Result::Event(event),
                    Err(status) => pb::$oneof::Result::Error(status),
                });
                message
            }

            fn into_parts(self) -> (Option<pb::Event>, Option<tonic_types::pb::Status>) {
                match self.result {
                    Some(pb::$oneof::Result::Event(event)) => (Some(event), None),
                    Some(pb::$oneof::Result::Error(status)) => (None, Some(status)),
                    None => (None, None),
                }
            }
        }
    };
}

batch_result!(CreateEventResult, create_event_result);
batch_result!(UpdateStatusResult, update_status_result);
