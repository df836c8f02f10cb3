//! The notification log on Redis: a stream every logger tails.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use ::redis::{
    AsyncCommands, RedisError, Value,
    streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply},
};
use async_trait::async_trait;
use tracing::instrument;

use super::{RedisBackend, blocking_connection, record::stream_entry_event, redis_error};
use crate::backend::{History, Notification, NotificationFeed};
use crate::{
    error::{Error, Result},
    subscription::Cursor,
};

#[async_trait]
impl NotificationFeed for RedisBackend {
    async fn latest_cursor(&self) -> Result<String> {
        let newest: Vec<(String, HashMap<String, Value>)> = ::redis::cmd("XREVRANGE")
            .arg(self.keys.notifications())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(newest
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id))
    }

    #[instrument(skip_all)]
    async fn read_after(
        &self,
        cursor: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Notification>> {
        let mut guard = self.feed_conn.lock().await;
        if guard.is_none() {
            *guard = Some(blocking_connection(&self.client, block).await?);
        }
        let conn = guard
            .as_mut()
            .ok_or_else(|| Error::Internal("no feed connection".into()))?;
        let options = StreamReadOptions::default()
            .count(max.max(1))
            .block(block.as_millis() as usize);
        let reply: Result<Option<StreamReadReply>, RedisError> = conn
            .xread_options(&[self.keys.notifications()], &[cursor], &options)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                *guard = None;
                return Err(redis_error(e));
            }
        };
        notifications(reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids))
    }

    async fn read_range(&self, cursor: &str, max: usize) -> Result<Vec<Notification>> {
        let reply: StreamRangeReply = self
            .conn
            .clone()
            .xrange_count(
                self.keys.notifications(),
                format!("({cursor}"),
                "+",
                max.max(1),
            )
            .await
            .map_err(redis_error)?;
        notifications(reply.ids)
    }

    async fn history(&self) -> Result<History> {
        let key = self.keys.notifications();
        let info = ::redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&key)
            .query_async(&mut self.conn.clone())
            .await;
        // No log yet: nothing was ever trimmed.
        let info: HashMap<String, Value> =
            self.unless_missing(&key, info).await?.unwrap_or_default();
        let text = |name: &str| match info.get(name) {
            Some(Value::BulkString(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            Some(Value::SimpleString(text)) => Some(text.clone()),
            _ => None,
        };
        let int = |name: &str| match info.get(name) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let first = match info.get("first-entry") {
            Some(Value::Array(entry)) => match entry.first() {
                Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).parse().ok(),
                _ => None,
            },
            _ => None,
        };
        let last = text("last-generated-id").unwrap_or_else(|| "0-0".to_owned());
        // Trimming does not move Redis's max-deleted-entry-id: what is gone is
        // told by how many entries were ever added against how many are left
        // (Redis 7; before it, anything before the first entry counts as gone).
        let length = int("length").unwrap_or(0);
        let trimmed_through = match (int("entries-added"), first) {
            (Some(added), _) if added == length => "0-0".to_owned(),
            (_, Some(first)) => Cursor::predecessor(first).to_string(),
            (Some(_), None) => last.clone(),
            (None, None) => "0-0".to_owned(),
        };
        Ok(History {
            trimmed_through,
            last,
        })
    }

    async fn trim_older_than(&self, age: Duration) -> Result<()> {
        let cutoff = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(std::time::UNIX_EPOCH);
        self.trim_before(&self.keys.notifications(), cutoff).await?;
        Ok(())
    }
}

/// The notifications of stream entries.
fn notifications(entries: impl IntoIterator<Item = StreamId>) -> Result<Vec<Notification>> {
    entries
        .into_iter()
        .map(|entry| {
            let (cursor, event) = stream_entry_event(entry)?;
            Ok(Notification { cursor, event })
        })
        .collect()
}
