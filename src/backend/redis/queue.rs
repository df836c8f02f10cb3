//! The work queue on Redis: a stream read by the consumer group, and its consumers.

use std::{collections::HashMap, sync::Arc, time::Duration};

use ::redis::{
    AsyncCommands, Client, RedisError, Value,
    aio::{ConnectionManager, MultiplexedConnection},
    streams::{
        StreamAutoClaimOptions, StreamId, StreamPendingCountReply, StreamReadOptions,
        StreamReadReply,
    },
};
use async_trait::async_trait;
use tokio::{sync::Mutex, time::Instant};
use tracing::{info, instrument, warn};

use super::{
    Keys, RedisBackend, blocking_connection,
    record::{record, stream_entry_event},
    redis_error,
};
use crate::backend::{Consumer, ConsumerConfig, Delivery, GROUP, QueueStats, WorkQueue};
use crate::error::{Error, Result};

/// Time between two scans for idle entries once the pending list was read
/// through: a tenth of the idle time, between 100 ms and 1 s (one XAUTOCLAIM
/// of at most a batch of entries each).
fn claim_scan_interval(claim_idle: Duration) -> Duration {
    (claim_idle / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

fn is_nogroup(err: &RedisError) -> bool {
    err.code() == Some("NOGROUP")
}

#[async_trait]
impl WorkQueue for RedisBackend {
    async fn trim_acknowledged(&self) -> Result<u64> {
        self.trim_acknowledged
            .key(self.keys.events())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }

    async fn stats(&self) -> Result<QueueStats> {
        let (length, dead_letters): (u64, u64) = ::redis::pipe()
            .xlen(self.keys.events())
            .xlen(self.keys.dead())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        let key = self.keys.events();
        let groups = ::redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .query_async(&mut self.conn.clone())
            .await;
        // No queue yet: nothing waits.
        let groups: Vec<HashMap<String, Value>> =
            self.unless_missing(&key, groups).await?.unwrap_or_default();
        let group = groups.iter().find(
            |g| matches!(g.get("name"), Some(Value::BulkString(name)) if name == GROUP.as_bytes()),
        );
        let int = |name: &str| match group.and_then(|g| g.get(name)) {
            Some(Value::Int(n)) => u64::try_from(*n).ok(),
            _ => None,
        };
        Ok(QueueStats {
            length,
            pending: int("pending").unwrap_or(0),
            // Without the group, every entry waits.
            lag: if group.is_some() {
                int("lag")
            } else {
                Some(length)
            },
            dead_letters,
        })
    }

    fn consumer(&self, config: ConsumerConfig) -> Arc<dyn Consumer> {
        Arc::new(RedisConsumer {
            client: self.client.clone(),
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            config,
            state: Mutex::new(ConsumerState {
                reader: None,
                own_cursor: Some("0".into()),
                claim_cursor: "0-0".into(),
                next_claim: Instant::now(),
                group_ready: false,
            }),
        })
    }
}

struct RedisConsumer {
    client: Client,
    conn: ConnectionManager,
    keys: Keys,
    config: ConsumerConfig,
    /// Held across the blocking read: one consumer reads from one task.
    state: Mutex<ConsumerState>,
}

struct ConsumerState {
    /// The connection for blocking reads; dropped after an error and remade.
    reader: Option<MultiplexedConnection>,
    /// Where the scan of this consumer's own pending entries is; `None` once done.
    own_cursor: Option<String>,
    /// Where the `XAUTOCLAIM` scan is.
    claim_cursor: String,
    /// When to scan for idle entries again.
    next_claim: Instant,
    /// Whether the group is known to exist.
    group_ready: bool,
}

impl RedisConsumer {
    async fn ensure_group(&self, state: &mut ConsumerState) -> Result<()> {
        if state.group_ready {
            return Ok(());
        }
        let created: Result<(), RedisError> = self
            .conn
            .clone()
            .xgroup_create_mkstream(self.keys.events(), GROUP, "0")
            .await;
        match created {
            Ok(()) => info!(group = GROUP, stream = %self.keys.events(), "created consumer group"),
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(redis_error(e)),
        }
        state.group_ready = true;
        Ok(())
    }

    /// Adds delivery counts (from `XPENDING`) to entries just handed to us.
    async fn with_counts(&self, entries: Vec<StreamId>) -> Result<Vec<Delivery>> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        let pending: StreamPendingCountReply = self
            .conn
            .clone()
            .xpending_consumer_count(
                self.keys.events(),
                GROUP,
                &first.id,
                &last.id,
                // Other entries of ours may lie in the same id range.
                entries.len() * 4 + 100,
                &self.config.name,
            )
            .await
            .map_err(redis_error)?;
        let counts: HashMap<String, u64> = pending
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered as u64))
            .collect();
        self.deliveries(entries, |id| counts.get(id).copied().unwrap_or(1))
    }

    fn deliveries(
        &self,
        entries: Vec<StreamId>,
        count: impl Fn(&str) -> u64,
    ) -> Result<Vec<Delivery>> {
        entries
            .into_iter()
            .map(|entry| {
                let deliveries = count(&entry.id);
                let (entry_id, event) = stream_entry_event(entry)?;
                Ok(Delivery {
                    entry_id,
                    event,
                    deliveries,
                })
            })
            .collect()
    }

    async fn read_group(
        &self,
        state: &mut ConsumerState,
        id: &str,
        max: usize,
        block: bool,
    ) -> Result<Vec<StreamId>> {
        let mut options = StreamReadOptions::default()
            .group(GROUP, &self.config.name)
            .count(max);
        if block {
            options = options.block(self.config.block.as_millis() as usize);
        }
        let reply: Result<Option<StreamReadReply>, RedisError> = if block {
            if state.reader.is_none() {
                state.reader = Some(blocking_connection(&self.client, self.config.block).await?);
            }
            let reader = state
                .reader
                .as_mut()
                .ok_or_else(|| Error::Internal("no reader".into()))?;
            reader
                .xread_options(&[self.keys.events()], &[id], &options)
                .await
        } else {
            self.conn
                .clone()
                .xread_options(&[self.keys.events()], &[id], &options)
                .await
        };
        match reply {
            Ok(reply) => Ok(reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .collect()),
            Err(e) => {
                if is_nogroup(&e) {
                    warn!(group = GROUP, "consumer group missing, recreating it");
                    state.group_ready = false;
                } else if block {
                    state.reader = None;
                }
                Err(redis_error(e))
            }
        }
    }

    async fn receive_once(&self, state: &mut ConsumerState, max: usize) -> Result<Vec<Delivery>> {
        if let Some(cursor) = state.own_cursor.clone() {
            let entries = self.read_group(state, &cursor, max, false).await?;
            match entries.last() {
                Some(last) => {
                    state.own_cursor = Some(last.id.clone());
                    return self.with_counts(entries).await;
                }
                None => state.own_cursor = None,
            }
        }
        if Instant::now() >= state.next_claim {
            let claimed = self.claim_idle(state, max).await?;
            if !claimed.is_empty() {
                return self.with_counts(claimed).await;
            }
        }
        let entries = self.read_group(state, ">", max, true).await?;
        self.deliveries(entries, |_| 1)
    }

    async fn claim_idle(&self, state: &mut ConsumerState, max: usize) -> Result<Vec<StreamId>> {
        let options = StreamAutoClaimOptions::default().count(max);
        let reply: Result<::redis::streams::StreamAutoClaimReply, RedisError> = self
            .conn
            .clone()
            .xautoclaim_options(
                self.keys.events(),
                GROUP,
                &self.config.name,
                self.config.claim_idle.as_millis() as u64,
                &state.claim_cursor,
                options,
            )
            .await;
        let reply = reply.map_err(|e| {
            if is_nogroup(&e) {
                state.group_ready = false;
            }
            redis_error(e)
        })?;
        if reply.next_stream_id == "0-0" {
            // Scanned the whole PEL: look again soon, so that an entry is
            // reclaimed within about a second (plus a blocking read) of
            // reaching the idle time.
            state.next_claim = Instant::now() + claim_scan_interval(self.config.claim_idle);
        }
        state.claim_cursor = reply.next_stream_id;
        Ok(reply.claimed)
    }
}

#[async_trait]
impl Consumer for RedisConsumer {
    #[instrument(skip_all, fields(consumer = %self.config.name))]
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>> {
        let mut state = self.state.lock().await;
        self.ensure_group(&mut state).await?;
        match self.receive_once(&mut state, max.max(1)).await {
            // The group vanished (Redis restarted without its data): recreate it and go on.
            Err(_) if !state.group_ready => {
                self.ensure_group(&mut state).await?;
                self.receive_once(&mut state, max.max(1)).await
            }
            result => result,
        }
    }

    #[instrument(skip_all)]
    async fn ack(&self, entry_ids: &[String]) -> Result<()> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let _: i64 = self
            .conn
            .clone()
            .xack(self.keys.events(), GROUP, entry_ids)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let mut fields = record(&delivery.event).to_vec();
        fields.push(("reason", reason.to_owned()));
        fields.push(("deliveries", delivery.deliveries.to_string()));
        fields.push(("entry_id", delivery.entry_id.clone()));
        let _: () = ::redis::pipe()
            .atomic()
            .xadd(self.keys.dead(), "*", &fields)
            .ignore()
            .xack(self.keys.events(), GROUP, &[&delivery.entry_id])
            .ignore()
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn pending_by_consumer(&self) -> Result<Vec<(String, u64)>> {
        let reply: Value = ::redis::cmd("XPENDING")
            .arg(self.keys.events())
            .arg(GROUP)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        // [count, first, last, [[consumer, count], ...] or nil]
        let Value::Array(mut parts) = reply else {
            return Err(Error::Internal(
                "redis reply: XPENDING is not an array".into(),
            ));
        };
        let consumers = if parts.len() == 4 {
            parts.swap_remove(3)
        } else {
            Value::Nil
        };
        let pairs: Vec<(String, String)> = match consumers {
            Value::Nil => Vec::new(),
            other => ::redis::from_redis_value(other)
                .map_err(|e| Error::Internal(format!("redis reply: {e}")))?,
        };
        pairs
            .into_iter()
            .map(|(name, count)| {
                let count = count
                    .parse()
                    .map_err(|_| Error::Internal("redis reply: bad pending count".into()))?;
                Ok((name, count))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_entries_are_looked_for_often_enough_to_be_reclaimed_on_time() {
        assert_eq!(
            claim_scan_interval(Duration::from_secs(30)),
            Duration::from_secs(1)
        );
        assert_eq!(
            claim_scan_interval(Duration::from_secs(5)),
            Duration::from_millis(500)
        );
        assert_eq!(
            claim_scan_interval(Duration::from_millis(200)),
            Duration::from_millis(100)
        );
    }
}
