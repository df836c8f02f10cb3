//! The memory backend's dead letters: given up, read, redriven and trimmed
//! under the one lock.

use std::time::SystemTime;

use async_trait::async_trait;
use herald::{
    cursor::{Cursor, PartitionEntry},
    domain::{Event, StatusChange},
    error::Result,
};

use super::{MemoryBackend, entry_id};
use crate::{DeadLetter, DeadLetters, Delivery};

#[async_trait]
impl DeadLetters for MemoryBackend {
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let mut state = self.lock();
        state.pending.remove(&delivery.entry_id.id.seq);
        state.last_dead += 1;
        let seq = state.last_dead;
        let dead = DeadLetter {
            id: PartitionEntry {
                partition: delivery.entry_id.partition,
                id: entry_id(seq),
            },
            delivery: delivery.clone(),
            reason: reason.to_owned(),
        };
        state.dead.insert(seq, (dead, SystemTime::now()));
        Ok(())
    }

    async fn dead_letters(&self, after: &Cursor, max: usize) -> Result<Vec<DeadLetter>> {
        let state = self.lock();
        Ok(state
            .dead
            .values()
            .filter(|(dead, _)| !after.has(dead.id.partition, dead.id.id))
            .take(max)
            .map(|(dead, _)| dead.clone())
            .collect())
    }

    async fn redrive_many(&self, changes: &[StatusChange]) -> Result<Vec<Result<Event>>> {
        let mut state = self.lock();
        let before = state.last_entry;
        let results: Vec<Result<Event>> = changes
            .iter()
            .map(|change| {
                let result = state.change_status(*change);
                if result.is_ok() {
                    state
                        .dead
                        .retain(|_, (dead, _)| dead.delivery.event.id != change.id);
                }
                result
            })
            .collect();
        let queued = state.last_entry != before;
        drop(state);
        if queued {
            self.queued.notify_waiters();
            self.notified.notify_waiters();
        }
        Ok(results)
    }

    async fn trim_dead_letters(&self, cutoff: SystemTime) -> Result<u64> {
        let mut state = self.lock();
        let before = state.dead.len();
        state.dead.retain(|_, (_, at)| *at >= cutoff);
        Ok((before - state.dead.len()) as u64)
    }
}
