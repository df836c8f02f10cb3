//! Delivery attempts: what a processor's channel did with an event, one
//! record per try, readable through `ListDeliveryAttempts`.

use std::time::{Duration, SystemTime};

use uuid::Uuid;

use crate::error::truncate;

/// Most attempts kept per event: the newest.
pub const MAX_ATTEMPTS_KEPT: usize = 100;
/// Longest error text an attempt keeps, in bytes (longer ones are cut).
pub const MAX_ATTEMPT_ERROR: usize = 512;

/// The kinds of channel a notification goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// The notification line (stdout or a file).
    Line,
    /// A signed HTTP POST.
    Webhook,
    /// A message on IRC.
    Irc,
    /// The line, losing a share of attempts on purpose.
    Simulated,
    /// An email over SMTP.
    Email,
}

impl ChannelKind {
    /// Every kind.
    pub const ALL: [ChannelKind; 5] = [
        Self::Line,
        Self::Webhook,
        Self::Irc,
        Self::Simulated,
        Self::Email,
    ];

    /// The kind's name in attempts, the channels file and metrics: `line`,
    /// `webhook`, `irc`, `simulated`, `email`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Line => "line",
            Self::Webhook => "webhook",
            Self::Irc => "irc",
            Self::Simulated => "simulated",
            Self::Email => "email",
        }
    }

    /// The kind of this name; `None` for a kind this version does not know
    /// (an attempt written by a newer processor).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt to send an event through one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryAttempt {
    /// The event sent.
    pub event_id: Uuid,
    /// The channel's name (in the channels file; `line` without one).
    pub channel: String,
    /// The channel's kind.
    pub kind: ChannelKind,
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
    /// Why it failed, or why it was skipped; empty when it succeeded.
    pub error: String,
    /// Nothing was sent: the recipient opted out (error says how), or the
    /// channel had nowhere to send it. The channel is done with the event.
    pub skipped: bool,
    /// The digest the event went out in, if a digest route collected it
    /// (the attempt sent the whole digest).
    pub digest_id: Option<Uuid>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    #[test]
    fn channel_kinds_read_back_and_unknown_ones_are_refused() {
        for kind in ChannelKind::ALL {
            assert_eq!(ChannelKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ChannelKind::parse("sms"), None);
        let sent = pb::DeliveryAttempt {
            kind: "sms".into(),
            attempted_at: Some(SystemTime::now().into()),
            ..Default::default()
        };
        let err = DeliveryAttempt::from_pb(Uuid::now_v7(), sent).expect_err("unknown kind");
        assert!(err.to_string().contains("kind"), "{err}");
    }
}
