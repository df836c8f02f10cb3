//! The memory backend as the notification log: reads after a cursor, the
//! log's history and its trimming.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::MemoryBackend;
use crate::{FeedRead, History, Notification, NotificationFeed};
use herald::{cursor::Cursor, domain::Statuses, error::Result, partition::Partition};

#[async_trait]
impl NotificationFeed for MemoryBackend {
    async fn latest_cursor(&self) -> Result<Cursor> {
        Ok(self.lock().cursor(|log| log.last))
    }

    async fn read_after(
        &self,
        cursor: &Cursor,
        max: usize,
        block: Duration,
        wanted: Statuses,
    ) -> Result<FeedRead> {
        let deadline = Instant::now() + block;
        loop {
            let notified = self.notified.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut notifications = self.lock().notifications_after(cursor, max);
            if !notifications.is_empty() {
                let mut through = cursor.clone();
                for n in &notifications {
                    through.advance(n.partition, n.entry);
                }
                notifications.retain(|n| wanted.contains(n.event.status));
                return Ok(FeedRead {
                    notifications,
                    through,
                });
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(FeedRead {
                    notifications,
                    through: cursor.clone(),
                });
            }
        }
    }

    async fn read_range(
        &self,
        cursor: &Cursor,
        only: Option<Partition>,
        max: usize,
    ) -> Result<Vec<Notification>> {
        let mut page = self.lock().notifications_after(cursor, max);
        if let Some(only) = only {
            page.retain(|n| n.partition == only);
        }
        Ok(page)
    }

    async fn history(&self) -> Result<History> {
        let state = self.lock();
        Ok(History {
            trimmed_through: state.cursor(|log| log.trimmed_through),
            last: state.cursor(|log| log.last),
        })
    }

    async fn trim_older_than(&self, age: Duration) -> Result<()> {
        let mut state = self.lock();
        let now = Instant::now();
        for log in &mut state.logs {
            while log
                .entries
                .front()
                .is_some_and(|(_, at, ..)| now.duration_since(*at) > age)
            {
                log.trim_front();
            }
        }
        Ok(())
    }
}
