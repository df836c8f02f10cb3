//! Events, their statuses and lifecycle, and input validation.
//!
//! Validation lives in the constructors ([`NewEvent::new`], [`parse_event_id`],
//! [`EventStatus::from_pb`]), so a handler only converts and calls.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use uuid::Uuid;

use crate::{
    error::{Error, quote},
    partition::{Partitions, new_id},
    pb,
    trace::TraceParent,
};

/// Longest accepted `user_id`, in bytes of UTF-8.
pub const MAX_USER_ID_BYTES: usize = 256;
/// Longest accepted `description`, in bytes of UTF-8.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;

/// One problem with one field of a request: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The request field, as named in the proto (`user_id`).
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field` described by `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Where an event is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventStatus {
    /// Stored and queued; no notification sent yet.
    Pending,
    /// The notification was sent.
    Processed,
    /// The recipient opened the notification.
    Opened,
    /// Delivery gave up; the event was dead-lettered.
    Failed,
}

impl EventStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [EventStatus; 4] = [Self::Pending, Self::Processed, Self::Opened, Self::Failed];

    /// The lifecycle: whether an event in `self` may move to `next`. Staying in
    /// the same status is not a transition (it is a no-op success elsewhere).
    pub fn can_become(self, next: EventStatus) -> bool {
        use EventStatus::*;
        matches!(
            (self, next),
            (Pending, Processed) | (Processed, Opened) | (Pending, Failed) | (Failed, Pending)
        )
    }

    /// The statuses from which an event may move to `self`.
    pub fn sources(self) -> impl Iterator<Item = EventStatus> {
        Self::ALL
            .into_iter()
            .filter(move |from| from.can_become(self))
    }

    /// Whether entering this status puts the event (back) on the work queue.
    pub fn enqueues(self) -> bool {
        self == Self::Pending
    }

    /// The stable upper-case name used in storage and output (`PROCESSED`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Processed => "PROCESSED",
            Self::Opened => "OPENED",
            Self::Failed => "FAILED",
        }
    }

    /// Parses a name as written by [`EventStatus::as_str`], case-insensitively.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }

    /// Converts a protobuf enum value; UNSPECIFIED or unknown values are
    /// INVALID_ARGUMENT on `field`.
    pub fn from_pb(value: i32, field: &str) -> Result<Self, Error> {
        match pb::EventStatus::try_from(value) {
            Ok(pb::EventStatus::Pending) => Ok(Self::Pending),
            Ok(pb::EventStatus::Processed) => Ok(Self::Processed),
            Ok(pb::EventStatus::Opened) => Ok(Self::Opened),
            Ok(pb::EventStatus::Failed) => Ok(Self::Failed),
            Ok(pb::EventStatus::Unspecified) => {
                Err(Error::invalid(field, "must be set to a status"))
            }
            Err(_) => Err(Error::invalid(
                field,
                format!("unknown status value {value}"),
            )),
        }
    }

    /// The protobuf enum value.
    pub fn to_pb(self) -> pb::EventStatus {
        match self {
            Self::Pending => pb::EventStatus::Pending,
            Self::Processed => pb::EventStatus::Processed,
            Self::Opened => pb::EventStatus::Opened,
            Self::Failed => pb::EventStatus::Failed,
        }
    }
}

impl fmt::Display for EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of statuses (the ones some reader of the notification log wants).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Statuses(u8);

impl Statuses {
    /// Every status.
    pub const ALL: Self = Self(0b1111);
    /// No status.
    pub const NONE: Self = Self(0);

    fn bit(status: EventStatus) -> u8 {
        1 << EventStatus::ALL
            .iter()
            .position(|s| *s == status)
            .unwrap_or_default()
    }

    /// Whether `status` is in the set.
    pub fn contains(self, status: EventStatus) -> bool {
        self.0 & Self::bit(status) != 0
    }

    /// Whether every status of `other` is in this set too.
    pub fn covers(self, other: Self) -> bool {
        other.0 & !self.0 == 0
    }
}

impl FromIterator<EventStatus> for Statuses {
    fn from_iter<I: IntoIterator<Item = EventStatus>>(statuses: I) -> Self {
        Self(statuses.into_iter().fold(0, |set, s| set | Self::bit(s)))
    }
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Server-assigned UUID v7.
    pub id: Uuid,
    /// The user the event concerns.
    pub user_id: String,
    /// Text of the notification.
    pub description: String,
    /// Current lifecycle status.
    pub status: EventStatus,
    /// When it was stored (microsecond precision).
    pub created_at: SystemTime,
    /// When the status last changed (microsecond precision).
    pub updated_at: SystemTime,
    /// Group of the event; empty if none.
    pub category: String,
    /// Kind of event; empty if none.
    pub event_type: String,
    /// Session the event belongs to; empty if none.
    pub session_id: String,
    /// Free-form data, if any was sent.
    pub payload: Option<Payload>,
    /// When the event happened (microsecond precision).
    pub occurred_at: SystemTime,
    /// The client's idempotency key; empty if none.
    pub request_id: String,
    /// Which client sent the event; empty while no identities are configured.
    pub source: String,
    /// Trace context of the event's last change, if any.
    pub traceparent: Option<TraceParent>,
}

/// An event's payload: a JSON object.
pub type Payload = serde_json::Map<String, serde_json::Value>;

/// Longest accepted `category`, `type`, `session_id` and `request_id`, in bytes.
pub const MAX_ATTRIBUTE_BYTES: usize = 128;
/// Largest accepted payload, as compact JSON, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 32 * 1024;
/// Deepest accepted nesting of objects and lists in a payload (the payload itself is 1).
pub const MAX_PAYLOAD_DEPTH: usize = 8;
/// Most keys accepted in a payload, counting every nested object.
pub const MAX_PAYLOAD_KEYS: usize = 256;

/// A request to create an event as received, before validation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventInput {
    /// The user the event concerns.
    pub user_id: String,
    /// Text of the notification.
    pub description: String,
    /// Optional group.
    pub category: String,
    /// Optional kind.
    pub event_type: String,
    /// Optional session.
    pub session_id: String,
    /// Optional free-form data.
    pub payload: Option<Payload>,
    /// When it happened; `None` means when received.
    pub occurred_at: Option<SystemTime>,
    /// Optional idempotency key.
    pub request_id: String,
}

/// Checks of payloads against per-type schemas (the event-type registry).
pub trait PayloadRules: Send + Sync {
    /// The problems of `payload` (field names starting with `payload`) for a
    /// registered `event_type`, or `None` if the type is not registered.
    fn check(&self, event_type: &str, payload: &serde_json::Value) -> Option<Vec<FieldViolation>>;
}

/// No registered types.
struct NoTypes;

impl PayloadRules for NoTypes {
    fn check(&self, _: &str, _: &serde_json::Value) -> Option<Vec<FieldViolation>> {
        None
    }
}

/// What a new event is checked against besides the fixed limits.
#[derive(Clone)]
pub struct Rules {
    /// Per-type payload schemas.
    pub types: std::sync::Arc<dyn PayloadRules>,
    /// Whether a type that is not registered is refused.
    pub reject_unknown_types: bool,
    /// How far ahead of the server's clock `occurred_at` may be.
    pub max_future_skew: Duration,
    /// How old `occurred_at` may be.
    pub max_age: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            types: std::sync::Arc::new(NoTypes),
            reject_unknown_types: false,
            max_future_skew: Duration::from_secs(5 * 60),
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// A validated request to create an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    input: EventInput,
    source: String,
    trace: Option<TraceParent>,
}

impl NewEvent {
    /// An event with only the required fields, checked with the default rules.
    pub fn new(user_id: impl Into<String>, description: impl Into<String>) -> Result<Self, Error> {
        let input = EventInput {
            user_id: user_id.into(),
            description: description.into(),
            ..EventInput::default()
        };
        Self::validate(input, &Rules::default())
    }

    /// Validates every field against the limits and `rules`; every problem is
    /// reported, each naming its field.
    pub fn validate(input: EventInput, rules: &Rules) -> Result<Self, Error> {
        let mut violations = Vec::new();
        let v = &mut violations;
        check_text(v, "user_id", &input.user_id, MAX_USER_ID_BYTES);
        check_text(v, "description", &input.description, MAX_DESCRIPTION_BYTES);
        for (field, value) in [
            ("category", &input.category),
            ("type", &input.event_type),
            ("session_id", &input.session_id),
            ("request_id", &input.request_id),
        ] {
            if !value.is_empty() {
                check_text(v, field, value, MAX_ATTRIBUTE_BYTES);
            }
        }
        if let Some(at) = input.occurred_at {
            check_occurred_at(v, at, rules);
        }
        let payload_ok = match &input.payload {
            Some(payload) => check_payload_limits(v, payload),
            None => true,
        };
        if !input.event_type.is_empty() && payload_ok {
            let payload = serde_json::Value::Object(input.payload.clone().unwrap_or_default());
            match rules.types.check(&input.event_type, &payload) {
                Some(problems) => v.extend(problems),
                None if rules.reject_unknown_types => {
                    v.push(FieldViolation::new(
                        "type",
                        format!("unknown event type {}", quote(&input.event_type)),
                    ));
                }
                None => {}
            }
        }
        if violations.is_empty() {
            Ok(Self {
                input,
                source: String::new(),
                trace: None,
            })
        } else {
            Err(Error::InvalidArgument(violations))
        }
    }

    /// The same event, sent by the client `source`.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// The same event, created in `trace` (its own span of it).
    pub fn in_trace(mut self, trace: TraceParent) -> Self {
        self.trace = Some(trace);
        self
    }

    /// The client's idempotency key; empty if none.
    pub fn request_id(&self) -> &str {
        &self.input.request_id
    }

    /// Which client sent the event.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The user the event concerns.
    pub fn user_id(&self) -> &str {
        &self.input.user_id
    }

    /// Text of the notification.
    pub fn description(&self) -> &str {
        &self.input.description
    }

    /// The event as first stored: PENDING, created now, with a fresh UUID v7
    /// that carries its user's partition among `partitions`.
    pub fn into_event(self, partitions: Partitions) -> Event {
        let now = now();
        let input = self.input;
        Event {
            id: new_id(partitions.of_user(&input.user_id)),
            user_id: input.user_id,
            description: input.description,
            status: EventStatus::Pending,
            created_at: now,
            updated_at: now,
            category: input.category,
            event_type: input.event_type,
            session_id: input.session_id,
            payload: input.payload,
            occurred_at: input.occurred_at.map_or(now, |t| from_micros(to_micros(t))),
            request_id: input.request_id,
            source: self.source,
            traceparent: self.trace,
        }
    }
}

/// `occurred_at` within the allowed skew ahead and age behind the server clock.
fn check_occurred_at(out: &mut Vec<FieldViolation>, at: SystemTime, rules: &Rules) {
    let now = SystemTime::now();
    if let Ok(ahead) = at.duration_since(now) {
        if ahead > rules.max_future_skew {
            out.push(FieldViolation::new(
                "occurred_at",
                format!(
                    "invalid timestamp: {} is more than {} s ahead of the server clock",
                    rfc3339(at),
                    rules.max_future_skew.as_secs()
                ),
            ));
        }
    } else if now.duration_since(at).is_ok_and(|age| age > rules.max_age) {
        out.push(FieldViolation::new(
            "occurred_at",
            format!(
                "invalid timestamp: {} is older than the maximum age of {} s",
                rfc3339(at),
                rules.max_age.as_secs()
            ),
        ));
    }
}

/// The payload's size, depth and key count; false if any is exceeded.
fn check_payload_limits(out: &mut Vec<FieldViolation>, payload: &Payload) -> bool {
    /// The nesting depth below `value`, counting its keys into `keys`.
    fn walk(value: &serde_json::Value, keys: &mut usize) -> usize {
        match value {
            serde_json::Value::Object(map) => {
                *keys += map.len();
                1 + map.values().map(|v| walk(v, keys)).max().unwrap_or(0)
            }
            serde_json::Value::Array(items) => {
                1 + items.iter().map(|v| walk(v, keys)).max().unwrap_or(0)
            }
            _ => 0,
        }
    }
    let before = out.len();
    let mut keys = 0;
    // The payload object itself is level 1; no copy of it is made to walk it.
    keys += payload.len();
    let depth = 1 + payload
        .values()
        .map(|v| walk(v, &mut keys))
        .max()
        .unwrap_or(0);
    let size = serde_json::to_string(payload).map_or(usize::MAX, |s| s.len());
    if size > MAX_PAYLOAD_BYTES {
        out.push(FieldViolation::new(
            "payload",
            format!("must be at most {MAX_PAYLOAD_BYTES} bytes as JSON, got {size}"),
        ));
    }
    if depth > MAX_PAYLOAD_DEPTH {
        out.push(FieldViolation::new(
            "payload",
            format!("must be nested at most {MAX_PAYLOAD_DEPTH} deep, got {depth}"),
        ));
    }
    if keys > MAX_PAYLOAD_KEYS {
        out.push(FieldViolation::new(
            "payload",
            format!("must have at most {MAX_PAYLOAD_KEYS} keys in all, got {keys}"),
        ));
    }
    out.len() == before
}

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

/// Not blank, at most `max` bytes, and one line: the notification is printed as
/// a single line, so what breaks or reorders a line is refused
/// ([`breaks_line`]).
pub(crate) fn check_text(out: &mut Vec<FieldViolation>, field: &str, value: &str, max: usize) {
    if is_blank(value) {
        out.push(FieldViolation::new(
            field,
            "is required and must not be blank",
        ));
    } else if value.len() > max {
        out.push(FieldViolation::new(
            field,
            format!("must be at most {max} bytes, got {}", value.len()),
        ));
    } else if let Some(c) = value.chars().find(|&c| breaks_line(c)) {
        out.push(FieldViolation::new(
            field,
            format!(
                "must be one line: no control characters, line separators or \
                 bidirectional controls (found U+{:04X})",
                c as u32
            ),
        ));
    }
}

/// Whether `value` shows nothing: only white space and invisible characters
/// (Unicode's default-ignorable code points, such as U+200B zero-width
/// space or U+FEFF).
pub fn is_blank(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_whitespace() || is_default_ignorable(c))
}

/// Unicode's Default_Ignorable_Code_Point property: characters that are
/// invisible where they are not supported.
fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
        | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// Characters a one-line value may not hold: control characters (U+0000 to
/// U+001F, U+007F to U+009F), the line and paragraph separators U+2028 and
/// U+2029, and the bidirectional embedding, override and isolate controls
/// U+202A to U+202E and U+2066 to U+2069 (which reorder how the rest of a
/// line shows).
pub fn breaks_line(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The path (`payload.a.b[2]`) of the first number in `payload` that JSON
/// cannot hold (NaN or an infinity), if any.
fn non_finite_number(payload: &prost_types::Struct) -> Option<String> {
    fn walk(value: &prost_types::Value, path: String) -> Option<String> {
        use prost_types::value::Kind;
        match &value.kind {
            Some(Kind::NumberValue(n)) if !n.is_finite() => Some(path),
            Some(Kind::StructValue(s)) => fields(s, &path),
            Some(Kind::ListValue(list)) => list
                .values
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, format!("{path}[{i}]"))),
            _ => None,
        }
    }
    fn fields(s: &prost_types::Struct, path: &str) -> Option<String> {
        s.fields
            .iter()
            .find_map(|(key, v)| walk(v, format!("{path}.{key}")))
    }
    fields(payload, "payload")
}

/// Earliest and latest seconds a Timestamp may hold: 0001-01-01T00:00:00Z
/// to 9999-12-31T23:59:59Z, as protobuf defines it.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// A client's `google.protobuf.Timestamp` as a time, or INVALID_ARGUMENT on
/// `field` for one that is not valid (nanos outside 0 to 999,999,999, or
/// seconds outside years 1 to 9999): nothing is normalised.
pub fn parse_timestamp(t: prost_types::Timestamp, field: &str) -> Result<SystemTime, Error> {
    if !(0..=999_999_999).contains(&t.nanos) {
        return Err(Error::invalid(
            field,
            format!(
                "invalid timestamp: nanos must be 0 to 999999999, got {}",
                t.nanos
            ),
        ));
    }
    if !TIMESTAMP_SECONDS.contains(&t.seconds) {
        return Err(Error::invalid(
            field,
            "invalid timestamp: must be between years 1 and 9999",
        ));
    }
    SystemTime::try_from(t).map_err(|_| Error::invalid(field, "invalid timestamp: out of range"))
}

/// Parses an event id: a UUID in its hyphenated text form, else INVALID_ARGUMENT on `field`.
pub fn parse_event_id(value: &str, field: &str) -> Result<Uuid, Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Uuid::try_parse(value)
        .map_err(|_| Error::invalid(field, format!("is not a valid UUID: {}", quote(value))))
}

/// The current time, truncated to microseconds (the precision kept in storage).
pub fn now() -> SystemTime {
    from_micros(to_micros(SystemTime::now()))
}

/// Microseconds since the Unix epoch.
pub fn to_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// The time `micros` microseconds after the Unix epoch.
pub fn from_micros(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// An RFC 3339 rendering of a time, as grpcurl and the CLI print it.
pub fn rfc3339(t: SystemTime) -> String {
    prost_types::Timestamp::from(t).to_string()
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
        })
    }
}

impl TryFrom<pb::CreateEventRequest> for EventInput {
    type Error = Error;

    /// Reads a request; only an invalid timestamp or a payload number JSON
    /// cannot hold (NaN, infinities) fails here, the rest is checked by
    /// [`NewEvent::validate`].
    fn try_from(r: pb::CreateEventRequest) -> Result<Self, Error> {
        if let Some(path) = r.payload.as_ref().and_then(non_finite_number) {
            return Err(Error::invalid(
                &path,
                "must be a finite number (JSON has no NaN or infinity)",
            ));
        }
        let occurred_at = match r.occurred_at {
            Some(t) => Some(parse_timestamp(t, "occurred_at")?),
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
        })
    }
}

/// A validated UpdateStatus request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusChange {
    /// The event to change.
    pub id: Uuid,
    /// Its new status.
    pub status: EventStatus,
    /// The trace context of the caller's work on the change, stored with it.
    pub trace: Option<TraceParent>,
}

impl StatusChange {
    /// A change of event `id` to `status`, outside any trace.
    pub fn new(id: Uuid, status: EventStatus) -> Self {
        Self {
            id,
            status,
            trace: None,
        }
    }

    /// The same change, in `trace`.
    pub fn in_trace(self, trace: Option<TraceParent>) -> Self {
        Self { trace, ..self }
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
        let status = EventStatus::from_pb(r.status, "status");
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

/// Most changes in one BatchUpdateStatus call.
pub const MAX_BATCH_CHANGES: usize = 1000;

/// Most events in one CreateEvents call.
pub const MAX_BATCH_CREATES: usize = 1000;

/// Checks the size of a batch request's `requests` field.
fn check_batch_size(n: usize, max: usize) -> Result<(), Error> {
    if n == 0 || n > max {
        return Err(Error::invalid(
            "requests",
            format!("must hold 1 to {max} items, got {n}"),
        ));
    }
    Ok(())
}

/// Names the fields of item `i`'s error as `requests[i].field`.
fn within_item<T>(i: usize, result: Result<T, Error>) -> Result<T, Error> {
    result.map_err(|err| match err {
        Error::InvalidArgument(violations) => Error::InvalidArgument(
            violations
                .into_iter()
                .map(|v| FieldViolation::new(format!("requests[{i}].{}", v.field), v.description))
                .collect(),
        ),
        other => other,
    })
}

/// Checks a BatchUpdateStatus request: its size (else INVALID_ARGUMENT on
/// `requests`), then each change on its own, with field names like
/// `requests[3].event_id`.
/// `max` is the most items an answer can hold (at most [`MAX_BATCH_CHANGES`]).
pub fn parse_batch_changes(
    r: pb::BatchUpdateStatusRequest,
    max: usize,
) -> Result<Vec<Result<StatusChange, Error>>, Error> {
    check_batch_size(r.requests.len(), max.min(MAX_BATCH_CHANGES))?;
    Ok(r.requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| within_item(i, StatusChange::try_from(request)))
        .collect())
}

/// Checks a CreateEvents request: its size, then each event on its own
/// against `rules`, with field names like `requests[2].payload.host`.
/// `max` is the most items an answer can hold (at most [`MAX_BATCH_CREATES`]).
pub fn parse_batch_creates(
    r: pb::CreateEventsRequest,
    rules: &Rules,
    max: usize,
) -> Result<Vec<Result<NewEvent, Error>>, Error> {
    check_batch_size(r.requests.len(), max.min(MAX_BATCH_CREATES))?;
    Ok(r.requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            within_item(
                i,
                EventInput::try_from(request).and_then(|input| NewEvent::validate(input, rules)),
            )
        })
        .collect())
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
                Self {
                    result: Some(match outcome {
                        Ok(event) => pb::$oneof::Result::Event(event),
                        Err(status) => pb::$oneof::Result::Error(status),
                    }),
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_of_statuses_holds_what_it_was_given() {
        let some: Statuses = [EventStatus::Processed, EventStatus::Processed]
            .into_iter()
            .collect();
        assert!(some.contains(EventStatus::Processed));
        assert!(!some.contains(EventStatus::Pending));
        assert!(Statuses::ALL.covers(some));
        assert!(some.covers(Statuses::NONE));
        assert!(!some.covers(Statuses::ALL));
        assert_eq!(
            EventStatus::ALL.into_iter().collect::<Statuses>(),
            Statuses::ALL
        );
    }

    fn fields(err: Error) -> Vec<String> {
        err.into_violations().into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn valid_event_is_accepted() {
        let e = NewEvent::new("alice", "Welcome to Herald").expect("valid");
        assert_eq!(e.user_id(), "alice");
        let stored = e.into_event(crate::partition::Partitions::default());
        assert_eq!(stored.status, EventStatus::Pending);
        assert_eq!(stored.id.get_version_num(), 7);
        assert_eq!(stored.created_at, stored.updated_at);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("", "hi", &["user_id"]),
            ("   ", "hi", &["user_id"]),
            ("bob", "", &["description"]),
            ("bob", " \n\t ", &["description"]),
            ("", "", &["user_id", "description"]),
            ("bo\nb", "hi", &["user_id"]),
            ("bob", "bell\u{7}", &["description"]),
            ("bob", "two\nlines", &["description"]),
        ];
        for (user, desc, want) in cases {
            let err = NewEvent::new(*user, *desc).expect_err("must be rejected");
            assert_eq!(fields(err), *want, "user={user:?} desc={desc:?}");
        }
    }

    #[test]
    fn length_limits_are_inclusive() {
        let max_user = "u".repeat(MAX_USER_ID_BYTES);
        let max_desc = "d".repeat(MAX_DESCRIPTION_BYTES);
        assert!(NewEvent::new(max_user.clone(), max_desc.clone()).is_ok());
        let err = NewEvent::new(max_user + "u", max_desc + "d").expect_err("too long");
        assert_eq!(fields(err), ["user_id", "description"]);
        // Bytes, not characters: 129 two-byte characters are 258 bytes.
        assert!(NewEvent::new("é".repeat(129), "x").is_err());
    }

    fn input() -> EventInput {
        EventInput {
            user_id: "u".into(),
            description: "d".into(),
            ..EventInput::default()
        }
    }

    fn check(input: EventInput, rules: &Rules) -> Vec<String> {
        NewEvent::validate(input, rules)
            .err()
            .map(fields)
            .unwrap_or_default()
    }

    #[test]
    fn invisible_values_are_blank_and_line_breakers_are_refused() {
        let rules = Rules::default();
        for blank in ["\u{200B}", " \u{FEFF}\u{2060} ", "\u{00AD}", "\t\u{3000}"] {
            let input = EventInput {
                user_id: blank.into(),
                ..input()
            };
            let err = NewEvent::validate(input, &rules).expect_err("blank");
            assert_eq!(
                err.into_violations()[0].description,
                "is required and must not be blank",
                "{blank:?}"
            );
        }
        for breaker in [
            '\u{202E}', '\u{2028}', '\u{2029}', '\u{2066}', '\u{0085}', '\n',
        ] {
            let input = EventInput {
                description: format!("left {breaker} right"),
                ..input()
            };
            let err = NewEvent::validate(input, &rules).expect_err("not one line");
            let v = &err.into_violations()[0];
            assert_eq!(v.field, "description");
            assert!(
                v.description.contains("one line"),
                "{breaker:?}: {}",
                v.description
            );
        }
        // Letters of other scripts, marks and emoji (with a zero-width joiner) stay.
        let fine = EventInput {
            description: "שלום \u{200F}مرحبا 👩\u{200D}💻 café".into(),
            ..input()
        };
        NewEvent::validate(fine, &rules).expect("one line, not blank");
    }

    #[test]
    fn numbers_json_cannot_hold_and_invalid_timestamps_are_refused() {
        use prost_types::{ListValue, Struct, Timestamp, Value, value::Kind};
        let number = |n: f64| Value {
            kind: Some(Kind::NumberValue(n)),
        };
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let list = Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: vec![number(1.0), number(bad)],
                })),
            };
            let request = pb::CreateEventRequest {
                user_id: "u".into(),
                description: "d".into(),
                payload: Some(Struct {
                    fields: [("a".to_owned(), list)].into(),
                }),
                ..Default::default()
            };
            let err = EventInput::try_from(request).expect_err("not JSON");
            assert_eq!(fields(err), ["payload.a[1]"]);
        }
        for (seconds, nanos) in [
            (0, 2_000_000_000),
            (0, -1),
            (i64::MAX, 0),
            (-62_135_596_801, 0),
        ] {
            let request = pb::CreateEventRequest {
                user_id: "u".into(),
                description: "d".into(),
                occurred_at: Some(Timestamp { seconds, nanos }),
                ..Default::default()
            };
            let err = EventInput::try_from(request).expect_err("invalid timestamp");
            assert_eq!(fields(err), ["occurred_at"], "{seconds} {nanos}");
        }
        let edge = parse_timestamp(
            Timestamp {
                seconds: 1,
                nanos: 999_999_999,
            },
            "t",
        );
        assert!(edge.is_ok());
    }

    #[test]
    fn optional_attributes_are_bounded_and_one_line() {
        let rules = Rules::default();
        let full = EventInput {
            category: "page interaction".into(),
            event_type: "pageview".into(),
            session_id: "s".repeat(MAX_ATTRIBUTE_BYTES),
            request_id: "r-1".into(),
            ..input()
        };
        assert!(check(full.clone(), &rules).is_empty());
        let bad = EventInput {
            category: "c".repeat(MAX_ATTRIBUTE_BYTES + 1),
            event_type: "page\nview".into(),
            session_id: "  ".into(),
            request_id: "r".repeat(MAX_ATTRIBUTE_BYTES + 1),
            ..full
        };
        assert_eq!(
            check(bad, &rules),
            ["category", "type", "session_id", "request_id"]
        );
    }

    #[test]
    fn payload_limits_are_checked() {
        let rules = Rules::default();
        let payload = |v: serde_json::Value| EventInput {
            payload: v.as_object().cloned(),
            ..input()
        };
        let mut deep = serde_json::json!(1);
        for _ in 0..=MAX_PAYLOAD_DEPTH {
            deep = serde_json::json!({ "x": deep });
        }
        assert_eq!(
            check(payload(deep.clone()), &rules),
            ["payload"],
            "one level too deep"
        );
        assert!(
            check(payload(deep["x"].clone()), &rules).is_empty(),
            "exactly the deepest allowed"
        );
        let many: serde_json::Map<_, _> = (0..=MAX_PAYLOAD_KEYS)
            .map(|i| (format!("k{i}"), serde_json::json!(i)))
            .collect();
        assert_eq!(
            check(payload(serde_json::Value::Object(many)), &rules),
            ["payload"]
        );
        let big = serde_json::json!({ "text": "x".repeat(MAX_PAYLOAD_BYTES) });
        assert_eq!(check(payload(big), &rules), ["payload"]);
    }

    #[test]
    fn occurred_at_bounds_are_inclusive_of_the_allowed_window() {
        let rules = Rules {
            max_future_skew: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
            ..Rules::default()
        };
        let at = |t: SystemTime| EventInput {
            occurred_at: Some(t),
            ..input()
        };
        let now = SystemTime::now();
        assert!(check(at(now + Duration::from_secs(50)), &rules).is_empty());
        assert!(check(at(now - Duration::from_secs(3500)), &rules).is_empty());
        let ahead =
            NewEvent::validate(at(now + Duration::from_secs(70)), &rules).expect_err("ahead");
        let v = ahead.into_violations();
        assert_eq!(v[0].field, "occurred_at");
        assert!(
            v[0].description.starts_with("invalid timestamp: "),
            "{}",
            v[0].description
        );
        assert_eq!(
            check(at(now - Duration::from_secs(3700)), &rules),
            ["occurred_at"]
        );
        let stored = NewEvent::validate(at(now - Duration::from_secs(10)), &rules)
            .expect("valid")
            .into_event(crate::partition::Partitions::default());
        assert_eq!(
            to_micros(stored.occurred_at),
            to_micros(now - Duration::from_secs(10))
        );
        assert!(stored.occurred_at < stored.created_at);
    }

    #[test]
    fn unknown_types_are_accepted_unless_rejected() {
        let typed = EventInput {
            event_type: "signup".into(),
            ..input()
        };
        assert!(check(typed.clone(), &Rules::default()).is_empty());
        let strict = Rules {
            reject_unknown_types: true,
            ..Rules::default()
        };
        assert_eq!(check(typed, &strict), ["type"]);
        assert!(
            check(input(), &strict).is_empty(),
            "no type, nothing to look up"
        );
    }

    #[test]
    fn payloads_round_trip_through_struct() {
        let payload = serde_json::json!({
            "host": "example.com", "n": 1.5, "ok": true, "none": null,
            "form": { "first_name": "Ada", "tags": ["a", 2] }
        });
        let map = payload.as_object().cloned().expect("object");
        assert_eq!(struct_to_json(json_to_struct(&map)), map);
    }

    #[test]
    fn lifecycle_allows_exactly_the_designed_transitions() {
        use EventStatus::*;
        let allowed = [
            (Pending, Processed),
            (Processed, Opened),
            (Pending, Failed),
            (Failed, Pending),
        ];
        for from in EventStatus::ALL {
            for to in EventStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        assert_eq!(Pending.sources().collect::<Vec<_>>(), [Failed]);
        assert_eq!(Processed.sources().collect::<Vec<_>>(), [Pending]);
    }

    #[test]
    fn status_names_round_trip() {
        for s in EventStatus::ALL {
            assert_eq!(EventStatus::parse(s.as_str()), Some(s));
            assert_eq!(EventStatus::parse(&s.as_str().to_lowercase()), Some(s));
            assert_eq!(
                EventStatus::from_pb(s.to_pb() as i32, "status").ok(),
                Some(s)
            );
        }
        assert!(EventStatus::parse("done").is_none());
        assert_eq!(
            fields(EventStatus::from_pb(0, "status").expect_err("unspecified")),
            ["status"]
        );
        assert_eq!(
            fields(EventStatus::from_pb(42, "status").expect_err("unknown")),
            ["status"]
        );
    }

    #[test]
    fn update_request_reports_every_bad_field() {
        let err = StatusChange::try_from(pb::UpdateStatusRequest {
            event_id: "nope".into(),
            status: 0,
            traceparent: "00-nope".into(),
        })
        .expect_err("invalid");
        assert_eq!(fields(err), ["event_id", "status", "traceparent"]);
        let traced = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let change = StatusChange::try_from(pb::UpdateStatusRequest {
            event_id: Uuid::now_v7().to_string(),
            status: 2,
            traceparent: traced.into(),
        })
        .expect("valid");
        assert_eq!(change.trace.map(|t| t.to_string()).as_deref(), Some(traced));
        assert_eq!(pb::UpdateStatusRequest::from(change).traceparent, traced);
    }

    #[test]
    fn batch_requests_are_sized_and_checked_per_item() {
        let item = |id: &str, status: i32| pb::UpdateStatusRequest {
            event_id: id.into(),
            status,
            ..Default::default()
        };
        let empty = pb::BatchUpdateStatusRequest::default();
        assert_eq!(
            fields(parse_batch_changes(empty, MAX_BATCH_CHANGES).expect_err("empty")),
            ["requests"]
        );
        let too_many = pb::BatchUpdateStatusRequest {
            requests: vec![item("x", 1); MAX_BATCH_CHANGES + 1],
            ..Default::default()
        };
        assert_eq!(
            fields(parse_batch_changes(too_many, MAX_BATCH_CHANGES).expect_err("too many")),
            ["requests"]
        );

        let id = Uuid::now_v7();
        let request = pb::BatchUpdateStatusRequest {
            requests: vec![
                item(&id.to_string(), 2),
                item("bad", 2),
                item(&id.to_string(), 0),
            ],
            ..Default::default()
        };
        let items = parse_batch_changes(request, MAX_BATCH_CHANGES).expect("sized right");
        assert_eq!(
            items[0].as_ref().expect("valid").status,
            EventStatus::Processed
        );
        let fields_of = |r: &Result<StatusChange, Error>| fields(r.clone().expect_err("invalid"));
        assert_eq!(fields_of(&items[1]), ["requests[1].event_id"]);
        assert_eq!(fields_of(&items[2]), ["requests[2].status"]);
    }

    #[test]
    fn event_round_trips_through_protobuf() {
        let input = EventInput {
            category: "c".into(),
            event_type: "t".into(),
            session_id: "s".into(),
            payload: serde_json::json!({"k": "v"}).as_object().cloned(),
            occurred_at: Some(SystemTime::now() - Duration::from_secs(5)),
            request_id: "r".into(),
            ..input()
        };
        let e = NewEvent::validate(input, &Rules::default())
            .expect("valid")
            .with_source("app")
            .into_event(crate::partition::Partitions::default());
        let back = Event::try_from(pb::Event::from(e.clone())).expect("well-formed");
        assert_eq!(back, e);
    }

    #[test]
    fn micros_round_trip_before_and_after_epoch() {
        for m in [0, 1, -1, 1_700_000_000_123_456, -5_000_000] {
            assert_eq!(to_micros(from_micros(m)), m);
        }
    }
}
