//! Input validation: the limits, [`EventInput`] checked into a [`NewEvent`]
//! (per-type payload rules included), ids, timestamps and batches; every
//! problem is a [`FieldViolation`] naming its field.

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use uuid::Uuid;

use super::*;
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
    /// Deliver at this time, not before (the event waits as SCHEDULED).
    pub deliver_at: Option<SystemTime>,
    /// Deliver this long after the server receives it; not with
    /// `deliver_at`.
    pub deliver_after: Option<Duration>,
}

/// Checks of payloads against per-type schemas (the event-type registry).
pub trait PayloadRules: Send + Sync {
    /// The problems of `payload` (field names starting with `payload`) for a
    /// registered `event_type`, or `None` if the type is not registered.
    fn check(&self, event_type: &str, payload: &serde_json::Value) -> Option<Vec<FieldViolation>>;
    /// Whether `event_type` is registered.
    fn is_registered(&self, event_type: &str) -> bool;
}

/// No registered types.
struct NoTypes;

impl PayloadRules for NoTypes {
    fn check(&self, _: &str, _: &serde_json::Value) -> Option<Vec<FieldViolation>> {
        None
    }

    fn is_registered(&self, _: &str) -> bool {
        false
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
    /// How far ahead `deliver_at` may be.
    pub max_schedule_ahead: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            types: std::sync::Arc::new(NoTypes),
            reject_unknown_types: false,
            max_future_skew: Duration::from_secs(5 * 60),
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_schedule_ahead: DEFAULT_MAX_SCHEDULE_AHEAD,
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
        check_identifier(v, "user_id", &input.user_id, MAX_USER_ID_BYTES);
        check_text(v, "description", &input.description, MAX_DESCRIPTION_BYTES);
        for (field, value) in [
            ("category", &input.category),
            ("type", &input.event_type),
            ("session_id", &input.session_id),
            ("request_id", &input.request_id),
        ] {
            if !value.is_empty() {
                check_identifier(v, field, value, MAX_ATTRIBUTE_BYTES);
            }
        }
        if let Some(at) = input.occurred_at {
            check_occurred_at(v, at, rules);
        }
        let deliver_at = check_deliver_at(v, &input, rules);
        let payload_ok = match &input.payload {
            Some(payload) => check_json_limits(v, "payload", payload, MAX_PAYLOAD_BYTES),
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
                input: EventInput {
                    deliver_at,
                    deliver_after: None,
                    ..input
                },
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

    /// When the event is due, if it was scheduled.
    pub fn deliver_at(&self) -> Option<SystemTime> {
        self.input.deliver_at
    }

    /// The event as first stored: PENDING (SCHEDULED when its `deliver_at`
    /// is still ahead), created now, with a fresh UUID v7 that carries its
    /// user's partition among `partitions`.
    pub fn into_event(self, partitions: Partitions) -> Event {
        let now = now();
        let input = self.input;
        let deliver_at = input.deliver_at.map(|t| from_micros(to_micros(t)));
        let status = match deliver_at {
            Some(due) if due > now => EventStatus::Scheduled,
            _ => EventStatus::Pending,
        };
        Event {
            id: new_id(partitions.of_user(&input.user_id)),
            user_id: input.user_id,
            description: input.description,
            status,
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
            deliver_at,
        }
    }
}

/// How far ahead an event may be scheduled unless configured otherwise: a
/// year.
pub const DEFAULT_MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(365 * 24 * 3600);

/// When the event is due (from `deliver_at`, or `deliver_after` from now),
/// checked: one of them at most, a positive wait, not past
/// `max_schedule_ahead`.
fn check_deliver_at(
    out: &mut Vec<FieldViolation>,
    input: &EventInput,
    rules: &Rules,
) -> Option<SystemTime> {
    let now = SystemTime::now();
    let (field, ahead) = match (input.deliver_at, input.deliver_after) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            out.push(FieldViolation::new(
                "deliver_after",
                "give deliver_at or deliver_after, not both",
            ));
            return None;
        }
        (Some(at), None) => ("deliver_at", at.duration_since(now).unwrap_or_default()),
        (None, Some(wait)) if wait.is_zero() => {
            out.push(FieldViolation::new("deliver_after", "must be positive"));
            return None;
        }
        (None, Some(wait)) => ("deliver_after", wait),
    };
    if ahead > rules.max_schedule_ahead {
        out.push(FieldViolation::new(
            field,
            format!(
                "is {} s ahead; events may be scheduled at most {} s ahead \
                 (--max-schedule-ahead)",
                ahead.as_secs(),
                rules.max_schedule_ahead.as_secs()
            ),
        ));
        return None;
    }
    input.deliver_at.or_else(|| now.checked_add(ahead))
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

/// The size (at most `max_bytes` as JSON), depth and key count of the
/// JSON object in `field` (a payload, a recipient's attributes); false if
/// any is exceeded.
pub(crate) fn check_json_limits(
    out: &mut Vec<FieldViolation>,
    field: &str,
    payload: &Payload,
    max_bytes: usize,
) -> bool {
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
    if size > max_bytes {
        out.push(FieldViolation::new(
            field,
            format!("must be at most {max_bytes} bytes as JSON, got {size}"),
        ));
    }
    if depth > MAX_PAYLOAD_DEPTH {
        out.push(FieldViolation::new(
            field,
            format!("must be nested at most {MAX_PAYLOAD_DEPTH} deep, got {depth}"),
        ));
    }
    if keys > MAX_PAYLOAD_KEYS {
        out.push(FieldViolation::new(
            field,
            format!("must have at most {MAX_PAYLOAD_KEYS} keys in all, got {keys}"),
        ));
    }
    out.len() == before
}

/// What is wrong with `user_id` as an event's user (blank, too long, more
/// than one line, invisible characters), if anything; `field` names it in
/// the violation.
pub fn check_user_id(field: &str, user_id: &str) -> Option<FieldViolation> {
    let mut out = Vec::new();
    check_identifier(&mut out, field, user_id, MAX_USER_ID_BYTES);
    out.pop()
}

/// [`check_text`], and no invisible character anywhere ([`is_invisible`]):
/// an identifier (a user, session, category, type or request id) is
/// compared byte for byte, so `alice` and `al\u{200B}ice` would be two
/// users that print the same.
pub(crate) fn check_identifier(
    out: &mut Vec<FieldViolation>,
    field: &str,
    value: &str,
    max: usize,
) {
    let before = out.len();
    check_text(out, field, value, max);
    if out.len() > before {
        return;
    }
    if let Some(c) = value.chars().find(|&c| is_invisible(c)) {
        out.push(FieldViolation::new(
            field,
            format!(
                "must not hold invisible characters: no format or default-ignorable \
                 code points such as zero-width spaces (found U+{:04X})",
                c as u32
            ),
        ));
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

/// Whether `c` shows nothing by itself: a default-ignorable code point, or a
/// format character (Unicode general category Cf, such as U+0600 ARABIC
/// NUMBER SIGN or U+FFF9 INTERLINEAR ANNOTATION ANCHOR).
pub fn is_invisible(c: char) -> bool {
    is_default_ignorable(c)
        || matches!(c,
            '\u{0600}'..='\u{0605}' | '\u{06DD}' | '\u{070F}' | '\u{0890}'..='\u{0891}'
            | '\u{08E2}' | '\u{FFF9}'..='\u{FFFB}' | '\u{110BD}' | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}')
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

/// The path (`payload.a.b[2]`, under `root`) of the first number in
/// `payload` that JSON cannot hold (NaN or an infinity), if any.
pub(super) fn non_finite_number(payload: &prost_types::Struct, root: &str) -> Option<String> {
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
    fields(payload, root)
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

/// Most changes in one BatchUpdateStatus call.
pub const MAX_BATCH_CHANGES: usize = 1000;

/// Most events in one CreateEvents call.
pub const MAX_BATCH_CREATES: usize = 1000;

/// Checks the size of a batch request's list `field` (`requests`).
pub(super) fn check_batch_size(field: &str, n: usize, max: usize) -> Result<(), Error> {
    if n == 0 || n > max {
        return Err(Error::invalid(
            field,
            format!("must hold 1 to {max} items, got {n}"),
        ));
    }
    Ok(())
}

/// Names the fields of an error under `prefix`: `requests[3].field` for
/// `requests[3]`.
pub fn within<T>(prefix: &str, result: Result<T, Error>) -> Result<T, Error> {
    result.map_err(|err| match err {
        Error::InvalidArgument(violations) => Error::InvalidArgument(
            violations
                .into_iter()
                .map(|v| FieldViolation::new(format!("{prefix}.{}", v.field), v.description))
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
    check_batch_size("requests", r.requests.len(), max.min(MAX_BATCH_CHANGES))?;
    Ok(r.requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| within(&format!("requests[{i}]"), StatusChange::try_from(request)))
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
    check_batch_size("requests", r.requests.len(), max.min(MAX_BATCH_CREATES))?;
    Ok(r.requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            within(
                &format!("requests[{i}]"),
                EventInput::try_from(request).and_then(|input| NewEvent::validate(input, rules)),
            )
        })
        .collect())
}
