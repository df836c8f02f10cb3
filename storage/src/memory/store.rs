//! The memory backend as the event store: creates, status changes, lists,
//! dead letters and retention, each under the one lock.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::time::Instant;
use uuid::Uuid;

use super::MemoryBackend;
use crate::{EventStore, Released, RetentionSlice, StatusCounts, Sweep};
use herald::{
    domain::{Event, EventStatus, NewEvent, StatusChange},
    error::{Error, Result},
    partition::Partition,
    query::{ListQuery, Page},
};

#[async_trait]
impl EventStore for MemoryBackend {
    async fn prepare(&self) -> Result<()> {
        Ok(())
    }

    async fn upgrade(&self) -> Result<Option<crate::Upgraded>> {
        // Nothing outlives the process.
        Ok(None)
    }

    async fn create_many(&self, events: Vec<NewEvent>) -> Result<Vec<Result<Event>>> {
        let mut state = self.lock();
        let now = Instant::now();
        let mut out = Vec::with_capacity(events.len());
        for new in events {
            let key = (
                new.source().to_owned(),
                new.user_id().to_owned(),
                new.request_id().to_owned(),
            );
            let prior = match state.requests.get(&key) {
                Some((id, at))
                    if !key.2.is_empty() && now.duration_since(*at) < self.request_id_window =>
                {
                    state.events.get(id).cloned()
                }
                _ => None,
            };
            if let Some(prior) = prior {
                out.push(Ok(prior));
                continue;
            }
            let event = new.into_event(self.partitions);
            if !key.2.is_empty() {
                state.requests.insert(key, (event.id, now));
            }
            state.indexes.insert(&event);
            state.events.insert(event.id, event.clone());
            *state.counts.slot(event.status) += 1;
            state.schedule_or_enqueue(&event);
            state.log(&event, None);
            out.push(Ok(event));
        }
        drop(state);
        self.queued.notify_waiters();
        self.notified.notify_waiters();
        Ok(out)
    }

    async fn get(&self, id: Uuid) -> Result<Event> {
        self.lock()
            .events
            .get(&id)
            .cloned()
            .ok_or(Error::NotFound(id))
    }

    async fn page_token_key(&self) -> Result<[u8; 32]> {
        self.token_key
            .get_or_try_init(|| async {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| {
                    Error::Internal(format!("no randomness for the page-token key: {e}"))
                })?;
                Ok(key)
            })
            .await
            .copied()
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        // Under the lock for a consistent page.
        let state = self.lock();
        Ok(state.indexes.page(query, &state.events))
    }

    async fn update_status_many(&self, changes: &[StatusChange]) -> Result<Vec<Result<Event>>> {
        let mut state = self.lock();
        let before = (state.last_entry, state.last_notification);
        let results: Vec<Result<Event>> = changes.iter().map(|c| state.change_status(*c)).collect();
        let after = (state.last_entry, state.last_notification);
        drop(state);
        // Wake readers only for what this batch really queued or logged
        // (no-ops and refused changes write nothing).
        if after.0 != before.0 {
            self.queued.notify_waiters();
        }
        if after.1 != before.1 {
            self.notified.notify_waiters();
        }
        Ok(results)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn unread_count(&self, user: &str) -> Result<u64> {
        Ok(self.lock().indexes.unread(user))
    }

    async fn status_counts(&self) -> Result<StatusCounts> {
        Ok(self.lock().counts)
    }

    async fn first_queued(&self, user: &str) -> Result<Option<Uuid>> {
        Ok(self
            .lock()
            .queued_by_user
            .get(user)
            .and_then(|ids| ids.first().copied()))
    }

    async fn use_ordering(&self) -> Result<()> {
        self.lock().ordering = true;
        Ok(())
    }

    async fn release_due(
        &self,
        partition: Partition,
        now: SystemTime,
        max: usize,
        _owner: &str,
        _lease: Duration,
    ) -> Result<Option<Vec<Released>>> {
        // One process: no other mover to lease against.
        let mut state = self.lock();
        let due: Vec<(SystemTime, Uuid)> = state
            .schedule
            .range(..=(now, Uuid::max()))
            .filter(|(_, id)| state.partitions.of_id(*id) == Some(partition))
            .take(max)
            .copied()
            .collect();
        let mut released = Vec::with_capacity(due.len());
        for (due, id) in due {
            match state.change_status(StatusChange::new(id, EventStatus::Pending)) {
                Ok(_) => released.push(Released { id, due }),
                // Gone or no longer SCHEDULED: off the schedule all the same.
                Err(_) => {
                    state.schedule.remove(&(due, id));
                }
            }
        }
        drop(state);
        if !released.is_empty() {
            self.queued.notify_waiters();
            self.notified.notify_waiters();
        }
        Ok(Some(released))
    }

    async fn remove_older_than(&self, slice: RetentionSlice) -> Result<Sweep> {
        let RetentionSlice {
            partition,
            status,
            cutoff,
            skip,
            max,
        } = slice;
        let mut state = self.lock();
        // The same candidates, in the same order, as the Redis index gives.
        let mut candidates: Vec<(SystemTime, Uuid)> = state
            .events
            .values()
            .filter(|e| {
                e.occurred_at < cutoff && e.status == status && state.partition_of(e) == partition
            })
            .map(|e| (e.occurred_at, e.id))
            .collect();
        candidates.sort_unstable();
        let mut sweep = Sweep::default();
        for (_, id) in candidates.into_iter().skip(skip).take(max) {
            sweep.scanned += 1;
            let Some(event) = state.events.get(&id) else {
                continue;
            };
            if event.status == EventStatus::Pending || event.created_at >= cutoff {
                sweep.kept += 1;
                continue;
            }
            let status = event.status;
            if let Some(removed) = state.events.remove(&id) {
                state.indexes.remove(&removed);
            }
            state.deliveries.remove(&id);
            *state.counts.slot(status) -= 1;
            sweep.removed += 1;
        }
        // Idempotency keys past their window answer nothing any more.
        let now = Instant::now();
        let window = self.request_id_window;
        state
            .requests
            .retain(|_, (_, at)| now.duration_since(*at) < window);
        Ok(sweep)
    }
}
