//! The in-memory backend: one lock over all state, so every write is atomic
//! with its side effects, exactly as the Redis scripts are. Nothing survives a
//! restart of the process.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use tokio::{sync::Notify, time::Instant};
use uuid::Uuid;

use super::{
    Consumer, ConsumerConfig, DeadLetter, Delivery, EventStore, History, Notification,
    NotificationFeed, QueueStats, StatusCounts, StoreOptions, Sweep, WorkQueue,
};
use crate::{
    domain::{Event, EventStatus, NewEvent, StatusChange, now},
    error::{Error, Result},
    query::{ListQuery, Page, page_of},
};

/// All of Herald's state in this process.
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
    queued: Arc<Notify>,
    notified: Arc<Notify>,
    request_id_window: Duration,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new(&StoreOptions::default())
    }
}

#[derive(Default)]
struct State {
    events: HashMap<Uuid, Event>,
    /// Queued, never delivered entries, oldest first.
    queue: VecDeque<(u64, Event)>,
    /// Delivered, not acknowledged entries by sequence number.
    pending: BTreeMap<u64, Pending>,
    /// Dead letters by sequence number, with their reason and when they were given up.
    dead: BTreeMap<u64, (Delivery, String, SystemTime)>,
    last_dead: u64,
    /// Idempotency keys by (source, request_id): the event created, and when.
    requests: HashMap<(String, String), (Uuid, Instant)>,
    /// The notification log: sequence number, when logged, the event.
    notifications: VecDeque<(u64, Instant, Event)>,
    /// The newest sequence number trimmed from the log (0: none).
    trimmed_through: u64,
    notifications_max_len: usize,
    /// Events per status, kept with every write.
    counts: StatusCounts,
    last_entry: u64,
    last_notification: u64,
}

struct Pending {
    event: Event,
    consumer: String,
    delivered_at: Instant,
    deliveries: u64,
}

impl State {
    fn enqueue(&mut self, event: &Event) {
        self.last_entry += 1;
        self.queue.push_back((self.last_entry, event.clone()));
    }

    fn change_status(&mut self, change: StatusChange) -> Result<Event> {
        let StatusChange { id, status, trace } = change;
        let event = self.events.get_mut(&id).ok_or(Error::NotFound(id))?;
        if event.status == status {
            return Ok(event.clone());
        }
        if !event.status.can_become(status) {
            return Err(Error::InvalidTransition {
                from: event.status,
                to: status,
            });
        }
        let from = event.status;
        event.status = status;
        event.updated_at = now();
        if trace.is_some() {
            event.traceparent = trace;
        }
        let event = event.clone();
        *self.counts.slot(from) -= 1;
        *self.counts.slot(status) += 1;
        if status.enqueues() {
            self.enqueue(&event);
        }
        self.log(&event);
        Ok(event)
    }

    fn log(&mut self, event: &Event) {
        self.last_notification += 1;
        self.notifications
            .push_back((self.last_notification, Instant::now(), event.clone()));
        while self.notifications.len() > self.notifications_max_len {
            self.trim_front();
        }
    }

    fn trim_front(&mut self) {
        if let Some((seq, _, _)) = self.notifications.pop_front() {
            self.trimmed_through = seq;
        }
    }

    /// Up to `max` notifications after sequence number `after`.
    fn notifications_after(&self, after: u64, max: usize) -> Vec<Notification> {
        // Sequence numbers ascend: find the start by bisection, not a scan.
        let start = self
            .notifications
            .partition_point(|(seq, _, _)| *seq <= after);
        self.notifications
            .range(start..)
            .take(max)
            .map(|(seq, _, event)| Notification {
                cursor: entry_id(*seq),
                event: event.clone(),
            })
            .collect()
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new(options: &StoreOptions) -> Self {
        let state = State {
            notifications_max_len: options.notifications_max_len.max(1),
            ..State::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
            queued: Arc::default(),
            notified: Arc::default(),
            request_id_window: options.request_id_window,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied write
        // (each write completes before any call that could panic), so the state
        // behind a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Memory entry ids and cursors look like Redis stream ids: `0-{sequence}`.
fn entry_id(seq: u64) -> String {
    format!("0-{seq}")
}

fn parse_entry_id(id: &str) -> Result<u64> {
    id.split_once('-')
        .and_then(|(_, seq)| seq.parse().ok())
        .ok_or_else(|| {
            Error::invalid(
                "cursor",
                format!("is not a valid cursor: {}", crate::error::quote(id)),
            )
        })
}

#[async_trait]
impl EventStore for MemoryBackend {
    async fn create_many(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        let mut state = self.lock();
        let now = Instant::now();
        let mut out = Vec::with_capacity(events.len());
        for new in events {
            let key = (new.source().to_owned(), new.request_id().to_owned());
            let prior = match state.requests.get(&key) {
                Some((id, at))
                    if !key.1.is_empty() && now.duration_since(*at) < self.request_id_window =>
                {
                    state.events.get(id).cloned()
                }
                _ => None,
            };
            if let Some(prior) = prior {
                out.push(prior);
                continue;
            }
            let event = new.into_event();
            if !key.1.is_empty() {
                state.requests.insert(key, (event.id, now));
            }
            state.events.insert(event.id, event.clone());
            state.counts.pending += 1;
            state.enqueue(&event);
            state.log(&event);
            out.push(event);
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

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        // The memory backend is for one process and small data: a filtered
        // scan in the reference order, under the lock for a consistent page.
        let state = self.lock();
        let matching = state
            .events
            .values()
            .filter(|e| query.matches(e))
            .cloned()
            .collect();
        drop(state);
        Ok(page_of(query, matching))
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

    async fn status_counts(&self) -> Result<StatusCounts> {
        Ok(self.lock().counts)
    }

    async fn dead_letters(&self, cursor: &str, max: usize) -> Result<Vec<DeadLetter>> {
        let after = parse_entry_id(cursor)?;
        let state = self.lock();
        Ok(state
            .dead
            .range(after + 1..)
            .take(max)
            .map(|(seq, (delivery, reason, _))| DeadLetter {
                id: entry_id(*seq),
                delivery: delivery.clone(),
                reason: reason.clone(),
            })
            .collect())
    }

    async fn remove_dead_letters(&self, ids: &[String]) -> Result<()> {
        let mut state = self.lock();
        for id in ids {
            state.dead.remove(&parse_entry_id(id)?);
        }
        Ok(())
    }

    async fn remove_older_than(
        &self,
        cutoff: SystemTime,
        skip: usize,
        max: usize,
    ) -> Result<Sweep> {
        let mut state = self.lock();
        // The same candidates, in the same order, as the Redis index gives.
        let mut candidates: Vec<(SystemTime, Uuid)> = state
            .events
            .values()
            .filter(|e| e.occurred_at < cutoff)
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
            state.events.remove(&id);
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

    async fn trim_dead_letters(&self, cutoff: SystemTime) -> Result<u64> {
        let mut state = self.lock();
        let before = state.dead.len();
        state.dead.retain(|_, (_, _, at)| *at >= cutoff);
        Ok((before - state.dead.len()) as u64)
    }
}

#[async_trait]
impl WorkQueue for MemoryBackend {
    fn consumer(&self, config: ConsumerConfig) -> Arc<dyn Consumer> {
        Arc::new(MemoryConsumer {
            backend: MemoryBackend {
                state: self.state.clone(),
                queued: self.queued.clone(),
                notified: self.notified.clone(),
                request_id_window: self.request_id_window,
            },
            config,
            drained_own: Mutex::new(false),
        })
    }

    async fn trim_acknowledged(&self) -> Result<u64> {
        // An acknowledged entry is dropped at once here.
        Ok(0)
    }

    async fn stats(&self) -> Result<QueueStats> {
        let state = self.lock();
        Ok(QueueStats {
            length: (state.queue.len() + state.pending.len()) as u64,
            pending: state.pending.len() as u64,
            lag: Some(state.queue.len() as u64),
            dead_letters: state.dead.len() as u64,
        })
    }
}

struct MemoryConsumer {
    backend: MemoryBackend,
    config: ConsumerConfig,
    drained_own: Mutex<bool>,
}

impl MemoryConsumer {
    /// Takes what is available now, following the order of [`Consumer::receive`].
    fn take(&self, max: usize) -> Vec<Delivery> {
        let mut state = self.backend.lock();
        let now = Instant::now();
        let name = &self.config.name;
        let mut drained = self.drained_own.lock().unwrap_or_else(|p| p.into_inner());
        let claimable: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, p)| {
                (!*drained && p.consumer == *name)
                    || now.duration_since(p.delivered_at) >= self.config.claim_idle
            })
            .map(|(seq, _)| *seq)
            .take(max)
            .collect();
        *drained = true;
        let mut out = Vec::new();
        for seq in claimable {
            if let Some(p) = state.pending.get_mut(&seq) {
                p.consumer.clone_from(name);
                p.delivered_at = now;
                p.deliveries += 1;
                out.push(Delivery {
                    entry_id: entry_id(seq),
                    event: p.event.clone(),
                    deliveries: p.deliveries,
                });
            }
        }
        while out.len() < max {
            let Some((seq, event)) = state.queue.pop_front() else {
                break;
            };
            state.pending.insert(
                seq,
                Pending {
                    event: event.clone(),
                    consumer: name.clone(),
                    delivered_at: now,
                    deliveries: 1,
                },
            );
            out.push(Delivery {
                entry_id: entry_id(seq),
                event,
                deliveries: 1,
            });
        }
        out
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + self.config.block;
        loop {
            let queued = self.backend.queued.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            let batch = self.take(max.max(1));
            if !batch.is_empty() {
                return Ok(batch);
            }
            // Wake for new entries, or in time to reclaim idle ones.
            let wake = deadline
                .min(Instant::now() + self.config.claim_idle.max(Duration::from_millis(10)));
            if tokio::time::timeout_at(wake, queued).await.is_err() && Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, entry_ids: &[String]) -> Result<()> {
        let seqs = entry_ids
            .iter()
            .map(|id| parse_entry_id(id))
            .collect::<Result<Vec<_>>>()?;
        let mut state = self.backend.lock();
        for seq in seqs {
            state.pending.remove(&seq);
        }
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let seq = parse_entry_id(&delivery.entry_id)?;
        let mut state = self.backend.lock();
        state.pending.remove(&seq);
        state.last_dead += 1;
        let id = state.last_dead;
        state
            .dead
            .insert(id, (delivery.clone(), reason.to_owned(), SystemTime::now()));
        Ok(())
    }

    async fn pending_by_consumer(&self) -> Result<Vec<(String, u64)>> {
        let state = self.backend.lock();
        let mut counts = BTreeMap::<String, u64>::new();
        for p in state.pending.values() {
            *counts.entry(p.consumer.clone()).or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }
}

#[async_trait]
impl NotificationFeed for MemoryBackend {
    async fn latest_cursor(&self) -> Result<String> {
        Ok(entry_id(self.lock().last_notification))
    }

    async fn read_after(
        &self,
        cursor: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Notification>> {
        let after = parse_entry_id(cursor)?;
        let deadline = Instant::now() + block;
        loop {
            let notified = self.notified.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch = self.lock().notifications_after(after, max);
            if !batch.is_empty() {
                return Ok(batch);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn read_range(&self, cursor: &str, max: usize) -> Result<Vec<Notification>> {
        let after = parse_entry_id(cursor)?;
        Ok(self.lock().notifications_after(after, max))
    }

    async fn history(&self) -> Result<History> {
        let state = self.lock();
        Ok(History {
            trimmed_through: entry_id(state.trimmed_through),
            last: entry_id(state.last_notification),
        })
    }

    async fn trim_older_than(&self, age: Duration) -> Result<()> {
        let mut state = self.lock();
        let now = Instant::now();
        while state
            .notifications
            .front()
            .is_some_and(|(_, at, _)| now.duration_since(*at) > age)
        {
            state.trim_front();
        }
        Ok(())
    }
}
