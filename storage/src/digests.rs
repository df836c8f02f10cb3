//! Digests: a user's events of one type that a digest route collects over
//! a window and sends as one notification.
//!
//! Membership is exactly once: an event joins one digest, atomically with
//! the digest's growth, and joining it again (a redelivery) answers the
//! same digest. The first event opens the digest and sets when it is due
//! (its window after); reaching the route's `max_events` seals it and
//! makes it due at once. A due digest is taken by one sender at a time:
//! taking it seals it (later events open the next one) and puts its due
//! time a lease ahead, so a sender that dies leaves it to be taken again
//! once the lease runs out, with the channels that already took it
//! recorded. Everything of a digest lives in its user's partition.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use uuid::Uuid;

use crate::Partitioned;
use herald::{error::Result, partition::Partition};

/// What groups events into one digest: the user, the event type and the
/// route's channels (by name, as the channels file names them).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DigestKey {
    /// The user the events are for.
    pub user: String,
    /// Their event type.
    pub event_type: String,
    /// The channels the digest goes to, in the route's order.
    pub channels: Vec<String>,
    /// Whether the route is required (past the recipient's opt-outs).
    pub required: bool,
}

impl DigestKey {
    /// The key as one string: its parts on lines of their own (none of
    /// them holds a line break: user ids, types and channel names are
    /// validated so), channels comma-separated.
    pub fn encode(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.user,
            self.event_type,
            self.channels.join(","),
            u8::from(self.required)
        )
    }

    /// The key [`DigestKey::encode`] wrote; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split('\n');
        let (user, event_type, channels, required) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            user: user.to_owned(),
            event_type: event_type.to_owned(),
            channels: channels
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            required: match required {
                "0" => false,
                "1" => true,
                _ => return None,
            },
        })
    }
}

/// One event joining a digest.
#[derive(Clone, Debug)]
pub struct Join {
    /// The event (PENDING, its user `key.user`).
    pub event: Uuid,
    /// The digest it joins.
    pub key: DigestKey,
    /// How long a digest stays open after its first event.
    pub window: Duration,
    /// The most events of one digest: the one that fills it seals it.
    pub max_events: u32,
    /// The id a digest opened by this join gets (made with
    /// [`herald::partition::new_id`] in the user's partition).
    pub new_digest: Uuid,
    /// Now, by the joiner's clock.
    pub now: SystemTime,
}

/// A due digest, taken to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    /// Its id, in its user's partition.
    pub id: Uuid,
    /// What it collects.
    pub key: DigestKey,
    /// When its first event joined.
    pub opened_at: SystemTime,
    /// Its events, in the order they joined.
    pub members: Vec<Uuid>,
    /// The channels that already took it.
    pub delivered: Vec<String>,
    /// How many times it was taken, this time included.
    pub takes: u64,
}

/// Where digests are kept.
#[async_trait]
pub trait DigestStore: Partitioned {
    /// Puts an event in the open digest of its key (opening one if there is
    /// none), atomically: returns the digest's id, the same for the same
    /// event however often it joins. The event leaves its user's queued
    /// index (an ordered delivery does not wait for an event held in a
    /// digest). [`herald::Error::NotFound`] if the event is gone.
    async fn join_digest(&self, join: &Join) -> Result<Uuid>;
    /// Takes up to `max` digests of `partition` due at `now`, earliest due
    /// first: each is sealed, and not due again until `lease` has passed
    /// (unless [`DigestStore::finish_digest`] ends it before).
    async fn take_due_digests(
        &self,
        partition: Partition,
        now: SystemTime,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Digest>>;
    /// Records that `channel` took digest `id` (a digest taken again skips
    /// it); nothing if the digest is gone.
    async fn digest_took(&self, id: Uuid, channel: &str) -> Result<()>;
    /// Removes digest `id`, with its members' membership: it is done.
    async fn finish_digest(&self, id: Uuid) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::DigestKey;

    #[test]
    fn a_key_reads_back() {
        let key = DigestKey {
            user: "ann".into(),
            event_type: "comment.created".into(),
            channels: vec!["mail".into(), "hooks".into()],
            required: true,
        };
        assert_eq!(DigestKey::decode(&key.encode()), Some(key));
        let empty = DigestKey {
            user: "bob".into(),
            event_type: String::new(),
            channels: vec![],
            required: false,
        };
        assert_eq!(DigestKey::decode(&empty.encode()), Some(empty));
        assert_eq!(DigestKey::decode("ann\nx"), None);
        assert_eq!(DigestKey::decode("ann\nx\ny\n2"), None);
    }
}
