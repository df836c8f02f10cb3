//! The Redis backend's dead letters: a stream per partition, written by the
//! dead-letter script (atomically with the entry's acknowledgement), read,
//! redriven and trimmed.

use std::time::SystemTime;

use async_trait::async_trait;
use herald::{
    cursor::Cursor,
    domain::{Event, StatusChange},
    error::Result,
};
use tracing::instrument;

use super::{RedisBackend, record::record_delivered, redis_error};
use crate::{DeadLetter, DeadLetters, Delivery, GROUP};

#[async_trait]
impl DeadLetters for RedisBackend {
    #[instrument(skip_all)]
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let p = delivery.entry_id.partition;
        let entry_id = delivery.entry_id.id.to_string();
        let mut invocation = self.dead_letter.prepare_invoke();
        invocation
            .key(self.keys.dead(p))
            .key(self.keys.dead_index(p))
            .key(self.keys.events(p))
            .arg(GROUP)
            .arg(&entry_id)
            .arg(delivery.event.id.to_string())
            .arg("id")
            .arg(delivery.event.id.as_bytes())
            .arg("record")
            .arg(record_delivered(&delivery.event, &delivery.delivered)?)
            .arg("reason")
            .arg(reason)
            .arg("deliveries")
            .arg(delivery.deliveries)
            .arg("entry_id")
            .arg(&entry_id);
        let _: String = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn dead_letters(&self, after: &Cursor, max: usize) -> Result<Vec<DeadLetter>> {
        let max = max.max(1);
        let pages = self
            .each_partition(|p| self.dead_letters_in(p, after, max))
            .await?;
        // The oldest first, whichever their partition.
        let mut all: Vec<DeadLetter> = pages.into_iter().flatten().collect();
        all.sort_unstable_by_key(|d| (d.id.id, d.id.partition));
        all.truncate(max);
        Ok(all)
    }

    #[instrument(skip_all, fields(n = changes.len()))]
    async fn redrive_many(&self, changes: &[StatusChange]) -> Result<Vec<Result<Event>>> {
        self.by_partition_of_id(changes, |p, changes| async move {
            self.redrive_in(p, &changes).await
        })
        .await
    }

    async fn trim_dead_letters(&self, cutoff: SystemTime) -> Result<u64> {
        let removed = self
            .each_partition(|p| async move { self.trim_before(&self.keys.dead(p), cutoff).await })
            .await?;
        Ok(removed.into_iter().sum())
    }
}
