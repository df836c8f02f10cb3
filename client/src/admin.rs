//! What operators read and do, as domain types: [`DeadLetter`]s and
//! [`Redrive`], the logger's [`Stats`] and its [`Health`].

use std::time::{Duration, SystemTime};

use herald::{Event, pb};
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;

use crate::{Error, client::event_of};

/// An event given up after too many delivery attempts (it is FAILED).
///
/// ```no_run
/// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
/// use futures_util::TryStreamExt;
///
/// let dead: Vec<herald_client::DeadLetter> = client.dead_letters(100).try_collect().await?;
/// for letter in dead {
///     println!("{} ({} deliveries): {}", letter.event.id, letter.deliveries, letter.reason);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// Its id among the dead letters.
    pub id: String,
    /// The event as it was last delivered.
    pub event: Event,
    /// Why it was given up.
    pub reason: String,
    /// How many times its queue entry had been delivered.
    pub deliveries: u64,
}

impl TryFrom<pb::DeadLetter> for DeadLetter {
    type Error = Error;

    fn try_from(dead: pb::DeadLetter) -> Result<Self, Error> {
        Ok(Self {
            id: dead.dead_letter_id,
            event: event_of(dead.event)?,
            reason: dead.reason,
            deliveries: u64::try_from(dead.deliveries).unwrap_or_default(),
        })
    }
}

/// Which FAILED events [`Client::redrive`](crate::Client::redrive) puts back
/// in the queue.
///
/// ```
/// use herald_client::Redrive;
/// use uuid::Uuid;
///
/// let some = Redrive::Ids(vec![Uuid::nil()]);
/// assert_ne!(some, Redrive::All);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redrive {
    /// These events (1 to 1,000), each with its own result.
    Ids(Vec<Uuid>),
    /// The event of every dead letter.
    All,
}

impl Redrive {
    /// The request that asks for this.
    pub(crate) fn to_request(&self) -> pb::RedriveEventsRequest {
        match self {
            Self::Ids(ids) => pb::RedriveEventsRequest {
                event_ids: ids.iter().map(Uuid::to_string).collect(),
                all: false,
            },
            Self::All => pb::RedriveEventsRequest {
                event_ids: Vec::new(),
                all: true,
            },
        }
    }
}

/// The logger's counts ([`Client::stats`](crate::Client::stats)): events
/// stored by status, and this logger process's own activity.
///
/// ```no_run
/// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
/// let stats = client.stats().await?;
/// println!("{} PENDING of {}, up {:?}", stats.pending_events, stats.total_events, stats.uptime);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events stored, every status.
    pub total_events: u64,
    /// Events PENDING.
    pub pending_events: u64,
    /// Events PROCESSED (not yet opened).
    pub processed_events: u64,
    /// Events OPENED.
    pub opened_events: u64,
    /// Events FAILED.
    pub failed_events: u64,
    /// Events this logger process created.
    pub events_created: u64,
    /// Status changes this logger process made.
    pub status_updates: u64,
    /// Events this logger process queued for the processors (created, or
    /// set back to PENDING).
    pub events_published: u64,
    /// Writes this logger process could not make (storage errors).
    pub publish_failures: u64,
    /// Subscribe streams open on this logger now.
    pub active_subscribers: u64,
    /// When this logger process started.
    pub started_at: Option<SystemTime>,
    /// How long it has been running.
    pub uptime: Duration,
}

impl From<pb::GetStatsResponse> for Stats {
    fn from(r: pb::GetStatsResponse) -> Self {
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        Self {
            total_events: count(r.total_events),
            pending_events: count(r.pending_events),
            processed_events: count(r.processed_events),
            opened_events: count(r.opened_events),
            failed_events: count(r.failed_events),
            events_created: count(r.events_created),
            status_updates: count(r.status_updates),
            events_published: count(r.events_published),
            publish_failures: count(r.publish_failures),
            active_subscribers: count(r.active_subscribers),
            started_at: r.started_at.and_then(|t| SystemTime::try_from(t).ok()),
            uptime: r
                .uptime
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or_default(),
        }
    }
}

/// A service's gRPC health ([`Client::health`](crate::Client::health)).
///
/// ```
/// use herald_client::Health;
///
/// assert_eq!(Health::NotServing.as_str(), "NOT_SERVING");
/// assert_eq!(Health::Serving.to_string(), "SERVING");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// It answers calls.
    Serving,
    /// It does not (starting, stopping, or its storage is unreachable).
    NotServing,
    /// The server does not know.
    Unknown,
    /// The server has no such service.
    ServiceUnknown,
}

impl Health {
    /// The standard name: `SERVING`, `NOT_SERVING`, `UNKNOWN`, `SERVICE_UNKNOWN`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "SERVING",
            Self::NotServing => "NOT_SERVING",
            Self::Unknown => "UNKNOWN",
            Self::ServiceUnknown => "SERVICE_UNKNOWN",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ServingStatus> for Health {
    fn from(status: ServingStatus) -> Self {
        match status {
            ServingStatus::Serving => Self::Serving,
            ServingStatus::NotServing => Self::NotServing,
            ServingStatus::ServiceUnknown => Self::ServiceUnknown,
            ServingStatus::Unknown => Self::Unknown,
        }
    }
}
