//! Events, their statuses and lifecycle, input validation, and the
//! conversions to and from protobuf messages.
//!
//! Validation lives in the constructors ([`NewEvent::new`], [`parse_event_id`],
//! [`EventStatus::from_pb`]), so a handler only converts and calls. Every item
//! is re-exported here, so callers name `herald::domain::X` whatever file
//! holds it.
//!
//! # Layout
//! - `status.rs`: [`EventStatus`] and its lifecycle, [`Statuses`],
//!   [`StatusChange`].
//! - `validation.rs`: limits, [`EventInput`] → [`NewEvent`], [`Rules`] and
//!   [`PayloadRules`], id and timestamp parsing, batches, [`FieldViolation`].
//! - `convert.rs`: domain types ↔ protobuf messages, JSON ↔ `Struct`,
//!   [`BatchResult`].
//! - `time.rs`: [`now`], microseconds, [`rfc3339`].
//! - `attempt.rs`: [`DeliveryAttempt`], what a channel did with an event.
//! - `recipient.rs`: [`Recipient`], its [`Contact`] and [`Preferences`],
//!   and the checks of a [`RecipientUpdate`].

mod attempt;
mod convert;
mod recipient;
mod status;
mod time;
mod validation;

pub use attempt::*;
pub use convert::*;
pub use recipient::*;
pub use status::*;
pub use time::*;
pub use validation::*;

use std::time::SystemTime;

use uuid::Uuid;

use crate::trace::TraceParent;

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
    /// When it is (or was) due, if it was created to be delivered later
    /// (microsecond precision).
    pub deliver_at: Option<SystemTime>,
}

/// An event's payload: a JSON object.
pub type Payload = serde_json::Map<String, serde_json::Value>;

#[cfg(test)]
mod tests;
