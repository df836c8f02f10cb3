//! The status lifecycle: [`EventStatus`] and which moves it allows, sets of
//! statuses ([`Statuses`]), and [`StatusChange`], one requested move.

use std::fmt;

use uuid::Uuid;

use crate::{error::Error, pb, trace::TraceParent};

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
    /// Stored, waiting for its `deliver_at`; queued (PENDING) when due.
    Scheduled,
    /// Cancelled while SCHEDULED; never delivered.
    Cancelled,
}

impl EventStatus {
    /// Every status, in the order they were added to the lifecycle (their
    /// places are kept in storage: a new status goes last).
    pub const ALL: [EventStatus; 6] = [
        Self::Pending,
        Self::Processed,
        Self::Opened,
        Self::Failed,
        Self::Scheduled,
        Self::Cancelled,
    ];

    /// The lifecycle: whether an event in `self` may move to `next`. Staying in
    /// the same status is not a transition (it is a no-op success elsewhere).
    pub fn can_become(self, next: EventStatus) -> bool {
        use EventStatus::*;
        matches!(
            (self, next),
            (Pending, Processed)
                | (Processed, Opened)
                | (Pending, Failed)
                | (Failed, Pending)
                | (Scheduled, Pending)
                | (Scheduled, Cancelled)
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

    /// Its place in [`EventStatus::ALL`] (the order it is declared in).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The stable upper-case name used in storage and output (`PROCESSED`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Processed => "PROCESSED",
            Self::Opened => "OPENED",
            Self::Failed => "FAILED",
            Self::Scheduled => "SCHEDULED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Parses a name as written by [`EventStatus::as_str`], case-insensitively,
    /// with or without the protobuf enum's prefix (`EVENT_STATUS_OPENED`, as
    /// grpcurl writes it).
    pub fn parse(name: &str) -> Option<Self> {
        const PREFIX: &str = "EVENT_STATUS_";
        let name = match name.get(..PREFIX.len()) {
            Some(head) if head.eq_ignore_ascii_case(PREFIX) => &name[PREFIX.len()..],
            _ => name,
        };
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
            Ok(pb::EventStatus::Scheduled) => Ok(Self::Scheduled),
            Ok(pb::EventStatus::Cancelled) => Ok(Self::Cancelled),
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
            Self::Scheduled => pb::EventStatus::Scheduled,
            Self::Cancelled => pb::EventStatus::Cancelled,
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
    pub const ALL: Self = Self(0b11_1111);
    /// No status.
    pub const NONE: Self = Self(0);

    fn bit(status: EventStatus) -> u8 {
        1 << status.index()
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
