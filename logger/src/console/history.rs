//! An event's status history, as far as the notification log keeps it: the
//! one part of the console that reads the backend itself (after GetEvent
//! allowed the caller to read the event).

use herald::{Event, cursor::Cursor};
use herald_client::rfc3339;
use serde_json::{Value, json};

use super::Console;
use crate::http_api::{ApiError, storage_error};

/// How many log entries an event's history reads at most, from its creation on.
const HISTORY_SCAN: usize = 5_000;
/// Entries read from the log at a time.
const HISTORY_PAGE: usize = 500;
/// How far before an event's creation its history is looked for (the log's
/// clock and the logger's may differ).
const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(60);

impl Console {
    /// The changes of `event` the notification log still holds, oldest
    /// first (`{"status", "at", "cursor"}`), and whether they are all of
    /// them: false when the log was trimmed past the event's creation, or
    /// more than [`HISTORY_SCAN`] entries came after it.
    pub(super) async fn history(&self, event: &Event) -> Result<(Vec<Value>, bool), ApiError> {
        let partition = self.partitions.of_user(&event.user_id);
        let since = event
            .created_at
            .checked_sub(CLOCK_SKEW)
            .unwrap_or(event.created_at);
        let mut cursor = Cursor::start(self.partitions);
        cursor.set(partition, self.feed.position_before(since));
        let trimmed = self
            .feed
            .history()
            .await
            .map_err(storage_error)?
            .trimmed_through;
        let mut complete = trimmed.get(partition) <= cursor.get(partition);
        let (mut changes, mut scanned) = (Vec::new(), 0);
        loop {
            let read = self
                .feed
                .read_range(&cursor, Some(partition), HISTORY_PAGE)
                .await
                .map_err(storage_error)?;
            let count = read.len();
            for entry in read {
                cursor.set(partition, entry.entry);
                if entry.event.id == event.id {
                    changes.push(json!({
                        "status": entry.event.status.as_str(),
                        "at": rfc3339(entry.event.updated_at),
                        "cursor": cursor.to_string(),
                    }));
                }
            }
            scanned += count;
            if count < HISTORY_PAGE {
                break;
            }
            if scanned >= HISTORY_SCAN {
                complete = false;
                break;
            }
        }
        Ok((changes, complete))
    }
}
