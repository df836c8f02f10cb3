//! The notification log on Redis: a stream per partition, all of which
//! every logger tails.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use ::redis::{AsyncCommands, RedisError, Value, streams::StreamReadOptions};
use async_trait::async_trait;
use futures_util::future::try_join_all;
use tracing::instrument;

use super::{
    RedisBackend, blocking_connection, events_of, poll,
    record::{EntryRef, entry_id_of},
    redis_error,
    stream::{Entry, range_reply, read_reply},
};
use crate::{FeedRead, History, Notification, NotificationFeed};
use herald::{
    cursor::{Cursor, EntryId},
    domain::Statuses,
    error::{Error, Result},
    partition::Partition,
};

#[async_trait]
impl NotificationFeed for RedisBackend {
    async fn latest_cursor(&self) -> Result<Cursor> {
        let newest = self
            .each_partition(|p| async move {
                let newest: Vec<(String, HashMap<String, Value>)> = ::redis::cmd("XREVRANGE")
                    .arg(self.keys.notifications(p))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut self.conn.clone())
                    .await
                    .map_err(redis_error)?;
                newest.first().map(|(id, _)| entry_id_of(id)).transpose()
            })
            .await?;
        let mut cursor = Cursor::start(self.partitions);
        for (p, id) in self.partitions.all().zip(newest) {
            if let Some(id) = id {
                cursor.set(p, id);
            }
        }
        Ok(cursor)
    }

    #[instrument(skip_all)]
    async fn read_after(
        &self,
        cursor: &Cursor,
        max: usize,
        block: Duration,
        wanted: Statuses,
    ) -> Result<FeedRead> {
        self.checked().await?;
        let Some(client) = &self.client else {
            // A cluster: no one command reads every partition.
            return poll(block, cursor, || async {
                let reads = self
                    .each_partition(|p| async move {
                        let entries = self.range_after(p, cursor.get(p), max).await?;
                        self.notifications(p, entries, wanted).await
                    })
                    .await?;
                Ok(joined(cursor, reads))
            })
            .await;
        };
        let options = StreamReadOptions::default()
            .count(max.max(1))
            .block(block.as_millis() as usize);
        let keys: Vec<&str> = self
            .partitions
            .all()
            .map(|p| self.keys.notifications(p))
            .collect();
        let ids: Vec<String> = self
            .partitions
            .all()
            .map(|p| cursor.get(p).to_string())
            .collect();
        let mut guard = self.feed_conn.lock().await;
        if guard.is_none() {
            *guard = Some(blocking_connection(client, block).await?);
        }
        let conn = guard
            .as_mut()
            .ok_or_else(|| Error::Internal("no feed connection".into()))?;
        let reply: Result<Value, RedisError> = conn.xread_options(&keys, &ids, &options).await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                *guard = None;
                return Err(redis_error(e));
            }
        };
        drop(guard);
        let reads = read_reply(reply)?
            .into_iter()
            .map(|(key, entries)| {
                let p = self
                    .keys
                    .partition_of_stream(&key)
                    .ok_or_else(|| Error::Internal(format!("redis answered for {key:?}")))?;
                Ok(self.notifications(p, entries, wanted))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(joined(cursor, try_join_all(reads).await?))
    }

    async fn read_range(
        &self,
        cursor: &Cursor,
        only: Option<Partition>,
        max: usize,
    ) -> Result<Vec<Notification>> {
        let read = |p: Partition| async move {
            let mut after = cursor.get(p);
            loop {
                let entries = self.range_after(p, after, max).await?;
                let read = self.notifications(p, entries, Statuses::ALL).await?;
                match read.last {
                    // Every entry read was of a removed event: read on past them.
                    Some((_, last)) if read.notifications.is_empty() => after = last,
                    _ => return Ok(read.notifications),
                }
            }
        };
        let mut all: Vec<Notification> = match only {
            Some(p) => {
                self.checked().await?;
                read(p).await?
            }
            None => self
                .each_partition(read)
                .await?
                .into_iter()
                .flatten()
                .collect(),
        };
        // Roughly in log order across partitions (by the time each was logged).
        all.sort_by_key(|n| n.entry);
        Ok(all)
    }

    fn position_before(&self, time: SystemTime) -> EntryId {
        let ms = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        EntryId { ms, seq: 0 }.predecessor()
    }

    async fn history(&self) -> Result<History> {
        let bounds = self.each_partition(|p| self.history_in(p)).await?;
        let mut history = History {
            trimmed_through: Cursor::start(self.partitions),
            last: Cursor::start(self.partitions),
        };
        for (p, (trimmed, last)) in self.partitions.all().zip(bounds) {
            history.trimmed_through.set(p, trimmed);
            history.last.set(p, last);
        }
        Ok(history)
    }

    async fn trim_older_than(&self, age: Duration) -> Result<()> {
        let cutoff = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(std::time::UNIX_EPOCH);
        self.each_partition(|p| async move {
            self.trim_before(self.keys.notifications(p), cutoff).await
        })
        .await?;
        Ok(())
    }
}

impl RedisBackend {
    /// What partition `p`'s log has trimmed, and its newest entry ever.
    async fn history_in(&self, p: Partition) -> Result<(EntryId, EntryId)> {
        let key = self.keys.notifications(p);
        let info = ::redis::cmd("XINFO")
            .arg("STREAM")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await;
        // No log yet: nothing was ever trimmed.
        let info: HashMap<String, Value> =
            self.unless_missing(key, info).await?.unwrap_or_default();
        let text = |name: &str| match info.get(name) {
            Some(Value::BulkString(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            Some(Value::SimpleString(text)) => Some(text.clone()),
            _ => None,
        };
        let int = |name: &str| match info.get(name) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let first: Option<EntryId> = match info.get("first-entry") {
            Some(Value::Array(entry)) => match entry.first() {
                Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).parse().ok(),
                _ => None,
            },
            _ => None,
        };
        let last = match text("last-generated-id") {
            Some(id) => entry_id_of(&id)?,
            None => EntryId::START,
        };
        // Trimming does not move Redis's max-deleted-entry-id: what is gone is
        // told by how many entries were ever added against how many are left
        // (Redis 7; before it, anything before the first entry counts as gone).
        let length = int("length").unwrap_or(0);
        let trimmed_through = match (int("entries-added"), first) {
            (Some(added), _) if added == length => EntryId::START,
            (_, Some(first)) => first.predecessor(),
            (Some(_), None) => last,
            (None, None) => EntryId::START,
        };
        Ok((trimmed_through, last))
    }
}

/// What one read of a partition's notification log gave.
struct Read {
    /// The notifications of the wanted entries whose event is still there.
    notifications: Vec<Notification>,
    /// The partition and the last entry read, whether or not its event
    /// is still there (`None` if nothing was read): where to read on from.
    last: Option<(Partition, EntryId)>,
}

impl RedisBackend {
    /// Up to `max` entries of partition `p`'s log after `after`.
    async fn range_after(&self, p: Partition, after: EntryId, max: usize) -> Result<Vec<Entry>> {
        let reply: Value = self
            .conn
            .clone()
            .xrange_count(
                self.keys.notifications(p),
                format!("({after}"),
                "+",
                max.max(1),
            )
            .await
            .map_err(redis_error)?;
        range_reply(reply)
    }

    /// The notifications of partition `p`'s stream entries whose status is
    /// `wanted` (told by the entry, so the others' records are not read),
    /// their events read from the records (an event removed since is
    /// skipped: it is gone).
    async fn notifications(
        &self,
        p: Partition,
        entries: Vec<Entry>,
        wanted: Statuses,
    ) -> Result<Read> {
        let mut refs = entries
            .into_iter()
            .map(EntryRef::of)
            .collect::<Result<Vec<_>>>()?;
        let last = refs.last().map(|r| (p, r.entry));
        refs.retain(|r| r.status().is_none_or(|s| wanted.contains(s)));
        let events = events_of(&self.conn, &self.keys, p, &refs).await?;
        Ok(Read {
            last,
            notifications: refs
                .iter()
                .zip(events)
                .filter_map(|(r, event)| {
                    Some(Notification {
                        partition: p,
                        entry: r.entry,
                        event: event?,
                        unread: r.unread,
                    })
                })
                .collect(),
        })
    }
}

/// The reads of several partitions after `cursor` as one.
fn joined(cursor: &Cursor, reads: Vec<Read>) -> FeedRead {
    let mut through = cursor.clone();
    let mut notifications = Vec::new();
    for read in reads {
        notifications.extend(read.notifications);
        if let Some((p, last)) = read.last {
            through.advance(p, last);
        }
    }
    FeedRead {
        notifications,
        through,
    }
}
