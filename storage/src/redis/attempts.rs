//! The [`DeliveryLog`] on Redis: each event's attempts in a list of its
//! partition (`{p}:attempts:{id}`, the newest
//! [`MAX_ATTEMPTS_KEPT`]), and each channel's success appended to the
//! event's record (see `record`), in one script per partition.

use std::time::Duration;

use async_trait::async_trait;
use prost::Message;
use uuid::Uuid;

use super::{RedisBackend, record::delivered_field, redis_error, split::by_partition};
use crate::DeliveryLog;
use herald::{
    domain::{ChannelKind, DeliveryAttempt, MAX_ATTEMPTS_KEPT, from_micros, to_micros},
    error::{Error, Result},
};

/// One attempt as its list holds it (the event id is in the key).
#[derive(Clone, PartialEq, Message)]
struct StoredAttempt {
    #[prost(string, tag = "1")]
    channel: String,
    #[prost(string, tag = "2")]
    kind: String,
    #[prost(string, tag = "3")]
    target: String,
    /// Microseconds since the epoch.
    #[prost(int64, tag = "4")]
    attempted_at: i64,
    #[prost(uint64, tag = "5")]
    latency_micros: u64,
    #[prost(bool, tag = "6")]
    succeeded: bool,
    /// 0: none.
    #[prost(uint32, tag = "7")]
    http_status: u32,
    #[prost(string, tag = "8")]
    error: String,
    #[prost(bool, tag = "9")]
    skipped: bool,
    /// The digest's id bytes; empty: none.
    #[prost(bytes = "vec", tag = "10")]
    digest_id: Vec<u8>,
}

impl StoredAttempt {
    fn of(a: &DeliveryAttempt) -> Self {
        Self {
            channel: a.channel.clone(),
            kind: a.kind.as_str().to_owned(),
            target: a.target.clone(),
            attempted_at: to_micros(a.attempted_at),
            latency_micros: u64::try_from(a.latency.as_micros()).unwrap_or(u64::MAX),
            succeeded: a.succeeded,
            http_status: a.http_status.map_or(0, u32::from),
            error: a.error.clone(),
            skipped: a.skipped,
            digest_id: a
                .digest_id
                .map(|d| d.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    /// The attempt; refused if its kind is one this version does not know
    /// (a newer processor wrote it).
    fn attempt(self, event_id: Uuid) -> Result<DeliveryAttempt> {
        let kind = ChannelKind::parse(&self.kind).ok_or_else(|| {
            Error::Misconfigured(format!(
                "an attempt of event {event_id} went through a channel of kind {:?}, which \
                 this version does not know: a newer processor wrote it; upgrade this logger",
                herald::error::truncate(&self.kind, 40)
            ))
        })?;
        Ok(DeliveryAttempt {
            event_id,
            kind,
            channel: self.channel,
            target: self.target,
            attempted_at: from_micros(self.attempted_at),
            latency: Duration::from_micros(self.latency_micros),
            succeeded: self.succeeded,
            http_status: u16::try_from(self.http_status).ok().filter(|s| *s != 0),
            error: self.error,
            skipped: self.skipped,
            digest_id: Uuid::from_slice(&self.digest_id).ok(),
        })
    }
}

#[async_trait]
impl DeliveryLog for RedisBackend {
    async fn record_attempts(&self, attempts: &[DeliveryAttempt]) -> Result<()> {
        // An id that names no partition of this deployment is no event of it.
        let known = attempts
            .iter()
            .enumerate()
            .filter_map(|(i, a)| Some((i, self.partitions.of_id(a.event_id)?, a)));
        let groups = by_partition(self.partitions, known);
        self.checked().await?;
        futures_util::future::try_join_all(groups.into_iter().map(|(p, _, group)| async move {
            let mut invocation = self.record_attempts.prepare_invoke();
            invocation.arg(MAX_ATTEMPTS_KEPT);
            for attempt in group {
                let success = if attempt.succeeded {
                    delivered_field(&attempt.channel)
                } else {
                    Vec::new()
                };
                invocation
                    .key(self.keys.event(p, attempt.event_id))
                    .key(self.keys.attempts(p, attempt.event_id))
                    .arg(StoredAttempt::of(attempt).encode_to_vec())
                    .arg(success);
            }
            self.write::<u64>(p, &invocation).await
        }))
        .await?;
        Ok(())
    }

    async fn attempts(&self, id: Uuid) -> Result<Vec<DeliveryAttempt>> {
        let p = self.partitions.of_id(id).ok_or(Error::NotFound(id))?;
        self.checked().await?;
        let (exists, stored): (bool, Vec<Vec<u8>>) = ::redis::pipe()
            .exists(self.keys.event(p, id))
            .lrange(self.keys.attempts(p, id), 0, -1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        if !exists {
            return Err(Error::NotFound(id));
        }
        stored
            .iter()
            .map(|bytes| {
                StoredAttempt::decode(bytes.as_slice())
                    .map_err(|_| Error::Internal(format!("a stored attempt of {id} is malformed")))?
                    .attempt(id)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_attempt_of_an_unknown_kind_names_the_kind_and_the_remedy() {
        let stored = StoredAttempt {
            kind: "sms".into(),
            ..StoredAttempt::default()
        };
        let err = stored.attempt(Uuid::now_v7()).expect_err("unknown kind");
        assert!(matches!(err, Error::Misconfigured(_)), "{err:?}");
        assert!(err.to_string().contains("\"sms\""), "{err}");
        let known = StoredAttempt {
            kind: "irc".into(),
            ..StoredAttempt::default()
        };
        let attempt = known.attempt(Uuid::now_v7()).expect("known kind");
        assert_eq!(attempt.kind, ChannelKind::Irc);
    }
}
