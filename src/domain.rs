//! Events, their statuses and lifecycle, and input validation.
//!
//! Validation lives in the constructors ([`NewEvent::new`], [`parse_event_id`],
//! [`EventStatus::from_pb`]), so a handler only converts and calls.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use uuid::Uuid;

use crate::{error::Error, pb};

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
}

/// A validated request to create an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    user_id: String,
    description: String,
}

impl NewEvent {
    /// Validates the fields; every problem is reported, each naming its field.
    pub fn new(user_id: impl Into<String>, description: impl Into<String>) -> Result<Self, Error> {
        let (user_id, description) = (user_id.into(), description.into());
        let mut violations = Vec::new();
        check_text(&mut violations, "user_id", &user_id, MAX_USER_ID_BYTES);
        check_text(
            &mut violations,
            "description",
            &description,
            MAX_DESCRIPTION_BYTES,
        );
        if violations.is_empty() {
            Ok(Self {
                user_id,
                description,
            })
        } else {
            Err(Error::InvalidArgument(violations))
        }
    }

    /// The user the event concerns.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// Text of the notification.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The event as first stored: a fresh UUID v7, PENDING, created now.
    pub fn into_event(self) -> Event {
        let now = now();
        Event {
            id: Uuid::now_v7(),
            user_id: self.user_id,
            description: self.description,
            status: EventStatus::Pending,
            created_at: now,
            updated_at: now,
        }
    }
}

/// Not blank, at most `max` bytes, and one line: the notification is printed as
/// a single line, so control characters (newlines included) are refused.
fn check_text(out: &mut Vec<FieldViolation>, field: &str, value: &str, max: usize) {
    if value.trim().is_empty() {
        out.push(FieldViolation::new(
            field,
            "is required and must not be blank",
        ));
    } else if value.len() > max {
        out.push(FieldViolation::new(
            field,
            format!("must be at most {max} bytes, got {}", value.len()),
        ));
    } else if value.chars().any(char::is_control) {
        out.push(FieldViolation::new(
            field,
            "must not contain control characters",
        ));
    }
}

/// Parses an event id: a UUID in its hyphenated text form, else INVALID_ARGUMENT on `field`.
pub fn parse_event_id(value: &str, field: &str) -> Result<Uuid, Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Uuid::try_parse(value)
        .map_err(|_| Error::invalid(field, format!("is not a valid UUID: {value:?}")))
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
            user_id: e.user_id,
            description: e.description,
        })
    }
}

impl TryFrom<pb::CreateEventRequest> for NewEvent {
    type Error = Error;

    fn try_from(r: pb::CreateEventRequest) -> Result<Self, Error> {
        NewEvent::new(r.user_id, r.description)
    }
}

/// A validated UpdateStatus request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusChange {
    /// The event to change.
    pub id: Uuid,
    /// Its new status.
    pub status: EventStatus,
}

impl TryFrom<pb::UpdateStatusRequest> for StatusChange {
    type Error = Error;

    fn try_from(r: pb::UpdateStatusRequest) -> Result<Self, Error> {
        let id = parse_event_id(&r.event_id, "event_id");
        let status = EventStatus::from_pb(r.status, "status");
        match (id, status) {
            (Ok(id), Ok(status)) => Ok(StatusChange { id, status }),
            (id, status) => Err(Error::InvalidArgument(
                [id.err(), status.err()]
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

/// Checks a BatchUpdateStatus request: its size (else INVALID_ARGUMENT on
/// `requests`), then each change on its own, with field names like
/// `requests[3].event_id`.
pub fn parse_batch_changes(
    r: pb::BatchUpdateStatusRequest,
) -> Result<Vec<Result<StatusChange, Error>>, Error> {
    let n = r.requests.len();
    if n == 0 || n > MAX_BATCH_CHANGES {
        return Err(Error::invalid(
            "requests",
            format!("must hold 1 to {MAX_BATCH_CHANGES} changes, got {n}"),
        ));
    }
    Ok(r.requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            StatusChange::try_from(request).map_err(|err| {
                Error::InvalidArgument(
                    err.into_violations()
                        .into_iter()
                        .map(|v| {
                            FieldViolation::new(format!("requests[{i}].{}", v.field), v.description)
                        })
                        .collect(),
                )
            })
        })
        .collect())
}

/// A validated Subscribe request: whose notifications to stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionFilter {
    /// The user whose notifications are streamed.
    pub user_id: String,
}

impl SubscriptionFilter {
    /// Whether a logged change is a notification for this subscriber: the
    /// event reached PROCESSED and belongs to the user.
    pub fn matches(&self, event: &Event) -> bool {
        event.status == EventStatus::Processed && event.user_id == self.user_id
    }
}

impl TryFrom<pb::SubscribeRequest> for SubscriptionFilter {
    type Error = Error;

    fn try_from(r: pb::SubscribeRequest) -> Result<Self, Error> {
        let mut violations = Vec::new();
        check_text(&mut violations, "user_id", &r.user_id, MAX_USER_ID_BYTES);
        match violations.is_empty() {
            true => Ok(Self { user_id: r.user_id }),
            false => Err(Error::InvalidArgument(violations)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(err: Error) -> Vec<String> {
        err.into_violations().into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn valid_event_is_accepted() {
        let e = NewEvent::new("alice", "Welcome to Herald").expect("valid");
        assert_eq!(e.user_id(), "alice");
        let stored = e.into_event();
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
    fn update_request_reports_both_fields() {
        let err = StatusChange::try_from(pb::UpdateStatusRequest {
            event_id: "nope".into(),
            status: 0,
        })
        .expect_err("invalid");
        assert_eq!(fields(err), ["event_id", "status"]);
    }

    #[test]
    fn batch_requests_are_sized_and_checked_per_item() {
        let item = |id: &str, status: i32| pb::UpdateStatusRequest {
            event_id: id.into(),
            status,
        };
        let empty = pb::BatchUpdateStatusRequest { requests: vec![] };
        assert_eq!(
            fields(parse_batch_changes(empty).expect_err("empty")),
            ["requests"]
        );
        let too_many = pb::BatchUpdateStatusRequest {
            requests: vec![item("x", 1); MAX_BATCH_CHANGES + 1],
        };
        assert_eq!(
            fields(parse_batch_changes(too_many).expect_err("too many")),
            ["requests"]
        );

        let id = Uuid::now_v7();
        let request = pb::BatchUpdateStatusRequest {
            requests: vec![
                item(&id.to_string(), 2),
                item("bad", 2),
                item(&id.to_string(), 0),
            ],
        };
        let items = parse_batch_changes(request).expect("sized right");
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
        let e = NewEvent::new("alice", "hi").expect("valid").into_event();
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
