//! Delivery attempts: what a processor's channel did with an event, one
//! record per try, readable through `ListDeliveryAttempts`.

use std::time::{Duration, SystemTime};

use uuid::Uuid;

use crate::error::truncate;

/// Most attempts kept per event: the newest.
pub const MAX_ATTEMPTS_KEPT: usize = 100;
/// Longest error text an attempt keeps, in bytes (longer ones are cut).
pub const MAX_ATTEMPT_ERROR: usize = 512;

/// One attempt to send an event through one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryAttempt {
    /// The event sent.
    pub event_id: Uuid,
    /// The channel's name (in the channels file; `line` without one).
    pub channel: String,
    /// The channel's kind: `line`, `webhook`, `irc` or `simulated`.
    pub kind: String,
    /// Where it went: a URL, an IRC server and its channels, `stdout`.
    pub target: String,
    /// When the attempt started (microsecond precision).
    pub attempted_at: SystemTime,
    /// How long it took.
    pub latency: Duration,
    /// Whether the channel took the event.
    pub succeeded: bool,
    /// The HTTP status the endpoint answered, if any.
    pub http_status: Option<u16>,
    /// Why it failed; empty when it succeeded.
    pub error: String,
}

impl DeliveryAttempt {
    /// The attempt with its error cut to [`MAX_ATTEMPT_ERROR`] bytes (see
    /// [`truncate`]).
    pub fn bounded(mut self) -> Self {
        if self.error.len() > MAX_ATTEMPT_ERROR {
            self.error = truncate(&self.error, MAX_ATTEMPT_ERROR);
        }
        self
    }
}
