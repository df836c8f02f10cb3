//! The in-memory backend: one lock over all state, so every write is atomic
//! with its side effects, exactly as the Redis scripts are. Nothing survives a
//! restart of the process.
//!
//! It follows the partitioned model of the Redis backend where a client can
//! tell: each partition has its own notification log (with its own length
//! bound and trimmed position), queue and dead-letter entries carry their
//! partition, and retention sweeps one partition at a time. Entry ids are
//! `0-{n}`, numbered across partitions, so merged reads keep log order.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use tokio::{sync::Notify, time::Instant};
use uuid::Uuid;

use super::{
    Consumer, ConsumerConfig, DeadLetter, Delivery, DeliveryLog, EventStore, FeedRead, History,
    Notification, NotificationFeed, QueueStats, RetentionSlice, StatusCounts, StoreOptions, Sweep,
    WorkQueue,
};
use herald::{
    cursor::{Cursor, EntryId, PartitionEntry},
    domain::{
        DeliveryAttempt, Event, EventStatus, MAX_ATTEMPTS_KEPT, NewEvent, StatusChange, Statuses,
        now,
    },
    error::{Error, Result},
    partition::{Partition, Partitions},
    query::{ListQuery, Page},
};

mod index;

/// All of Herald's state in this process.
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
    /// This process's page-token key, made on first use.
    token_key: Arc<tokio::sync::OnceCell<[u8; 32]>>,
    queued: Arc<Notify>,
    notified: Arc<Notify>,
    request_id_window: Duration,
    partitions: Partitions,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new(&StoreOptions::default())
    }
}

#[derive(Default)]
struct State {
    partitions: Partitions,
    events: HashMap<Uuid, Event>,
    /// Delivery attempts and the channels that took the event, of events
    /// that have any; they go with the event.
    deliveries: HashMap<Uuid, Deliveries>,
    /// Queued, never delivered entries of each partition, oldest first.
    queues: Vec<VecDeque<(PartitionEntry, Event)>>,
    /// The partition whose queue gives the next entry: they take turns, so
    /// no busy partition starves the others.
    next_queue: usize,
    /// Delivered, not acknowledged entries by sequence number.
    pending: BTreeMap<u64, Pending>,
    /// Dead letters by sequence number, with their reason and when they were given up.
    dead: BTreeMap<u64, (DeadLetter, SystemTime)>,
    last_dead: u64,
    /// Idempotency: the event made for each (client, user, request id),
    /// and when.
    requests: HashMap<(String, String, String), (Uuid, Instant)>,
    /// The notification log of each partition.
    logs: Vec<Log>,
    /// Longest each partition's log grows.
    log_max_len: usize,
    /// Events per status, kept with every write.
    counts: StatusCounts,
    /// Every event's place in the ListEvents order, overall and by field.
    indexes: index::Indexes,
    last_entry: u64,
    last_notification: u64,
}

/// One partition's notification log.
#[derive(Default)]
struct Log {
    /// Sequence number, when logged, the event.
    entries: VecDeque<(u64, Instant, Event)>,
    /// The newest sequence number trimmed from the log (0: none).
    trimmed_through: u64,
    /// The newest sequence number logged (0: none).
    last: u64,
}

impl Log {
    fn trim_front(&mut self) {
        if let Some((seq, _, _)) = self.entries.pop_front() {
            self.trimmed_through = seq;
        }
    }
}

/// What [`DeliveryLog`] keeps of one event.
#[derive(Default)]
struct Deliveries {
    /// The newest attempts, oldest first.
    attempts: VecDeque<DeliveryAttempt>,
    /// Channels that took the event, in the order they did.
    delivered: Vec<String>,
}

struct Pending {
    partition: Partition,
    event: Event,
    consumer: String,
    delivered_at: Instant,
    deliveries: u64,
}

impl State {
    /// The channels that took event `id`.
    fn delivered(&self, id: Uuid) -> Vec<String> {
        self.deliveries
            .get(&id)
            .map(|d| d.delivered.clone())
            .unwrap_or_default()
    }

    /// Entries queued and not yet delivered.
    fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// The oldest queued entry of the next partition (in turn) that has one.
    fn next_queued(&mut self) -> Option<(PartitionEntry, Event)> {
        let n = self.queues.len();
        for i in 0..n {
            let at = (self.next_queue + i) % n;
            if let Some(entry) = self.queues[at].pop_front() {
                self.next_queue = (at + 1) % n;
                return Some(entry);
            }
        }
        None
    }

    fn partition_of(&self, event: &Event) -> Partition {
        self.partitions.of_user(&event.user_id)
    }

    fn enqueue(&mut self, event: &Event) {
        self.last_entry += 1;
        let entry = PartitionEntry {
            partition: self.partition_of(event),
            id: entry_id(self.last_entry),
        };
        self.queues[entry.partition.index()].push_back((entry, event.clone()));
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
        let seq = self.last_notification;
        let max_len = self.log_max_len;
        let log = &mut self.logs[self.partitions.of_user(&event.user_id).index()];
        log.entries.push_back((seq, Instant::now(), event.clone()));
        log.last = seq;
        while log.entries.len() > max_len {
            log.trim_front();
        }
    }

    /// Up to `max` notifications after `cursor` in each partition, in log order.
    fn notifications_after(&self, cursor: &Cursor, max: usize) -> Vec<Notification> {
        let mut out = Vec::new();
        for (partition, log) in self.partitions.all().zip(&self.logs) {
            let after = cursor.get(partition).seq;
            // Sequence numbers ascend: find the start by bisection, not a scan.
            let start = log.entries.partition_point(|(seq, _, _)| *seq <= after);
            out.extend(
                log.entries
                    .range(start..)
                    .take(max)
                    .map(|(seq, _, event)| Notification {
                        partition,
                        entry: entry_id(*seq),
                        event: event.clone(),
                    }),
            );
        }
        out.sort_unstable_by_key(|n| n.entry);
        out
    }

    /// Each partition's log position by `position`.
    fn cursor(&self, position: impl Fn(&Log) -> u64) -> Cursor {
        let mut cursor = Cursor::start(self.partitions);
        for (partition, log) in self.partitions.all().zip(&self.logs) {
            cursor.set(partition, entry_id(position(log)));
        }
        cursor
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new(options: &StoreOptions) -> Self {
        let partitions = options.partitions;
        let state = State {
            partitions,
            logs: partitions.all().map(|_| Log::default()).collect(),
            queues: partitions.all().map(|_| VecDeque::new()).collect(),
            log_max_len: options.notifications_max_len.max(1),
            ..State::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
            token_key: Arc::default(),
            queued: Arc::default(),
            notified: Arc::default(),
            request_id_window: options.request_id_window,
            partitions,
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

/// Memory entry ids look like Redis stream ids: `0-{sequence}`.
fn entry_id(seq: u64) -> EntryId {
    EntryId { ms: 0, seq }
}

#[async_trait]
impl EventStore for MemoryBackend {
    fn partitions(&self) -> Partitions {
        self.partitions
    }

    async fn prepare(&self) -> Result<()> {
        Ok(())
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
            state.counts.pending += 1;
            state.enqueue(&event);
            state.log(&event);
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

    async fn status_counts(&self) -> Result<StatusCounts> {
        Ok(self.lock().counts)
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

    async fn trim_dead_letters(&self, cutoff: SystemTime) -> Result<u64> {
        let mut state = self.lock();
        let before = state.dead.len();
        state.dead.retain(|_, (_, at)| *at >= cutoff);
        Ok((before - state.dead.len()) as u64)
    }
}

#[async_trait]
impl WorkQueue for MemoryBackend {
    fn consumer(&self, config: ConsumerConfig) -> Arc<dyn Consumer> {
        Arc::new(MemoryConsumer {
            backend: MemoryBackend {
                state: self.state.clone(),
                token_key: self.token_key.clone(),
                queued: self.queued.clone(),
                notified: self.notified.clone(),
                request_id_window: self.request_id_window,
                partitions: self.partitions,
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
            length: (state.queued() + state.pending.len()) as u64,
            pending: state.pending.len() as u64,
            lag: Some(state.queued() as u64),
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
            let Some(id) = state.pending.get(&seq).map(|p| p.event.id) else {
                continue;
            };
            let delivered = state.delivered(id);
            if let Some(p) = state.pending.get_mut(&seq) {
                p.consumer.clone_from(name);
                p.delivered_at = now;
                p.deliveries += 1;
                out.push(Delivery {
                    entry_id: PartitionEntry {
                        partition: p.partition,
                        id: entry_id(seq),
                    },
                    event: p.event.clone(),
                    deliveries: p.deliveries,
                    delivered,
                });
            }
        }
        while out.len() < max {
            let Some((entry, event)) = state.next_queued() else {
                break;
            };
            state.pending.insert(
                entry.id.seq,
                Pending {
                    partition: entry.partition,
                    event: event.clone(),
                    consumer: name.clone(),
                    delivered_at: now,
                    deliveries: 1,
                },
            );
            out.push(Delivery {
                entry_id: entry,
                delivered: state.delivered(event.id),
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

    async fn ack(&self, entry_ids: &[PartitionEntry]) -> Result<()> {
        let mut state = self.backend.lock();
        for entry in entry_ids {
            state.pending.remove(&entry.id.seq);
        }
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let mut state = self.backend.lock();
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
impl DeliveryLog for MemoryBackend {
    async fn record_attempts(&self, attempts: &[DeliveryAttempt]) -> Result<()> {
        let mut state = self.lock();
        for attempt in attempts {
            if !state.events.contains_key(&attempt.event_id) {
                continue;
            }
            let kept = state.deliveries.entry(attempt.event_id).or_default();
            if kept.attempts.len() == MAX_ATTEMPTS_KEPT {
                kept.attempts.pop_front();
            }
            kept.attempts.push_back(attempt.clone());
            if attempt.succeeded && !kept.delivered.contains(&attempt.channel) {
                kept.delivered.push(attempt.channel.clone());
            }
        }
        Ok(())
    }

    async fn attempts(&self, id: Uuid) -> Result<Vec<DeliveryAttempt>> {
        let state = self.lock();
        if !state.events.contains_key(&id) {
            return Err(Error::NotFound(id));
        }
        Ok(state
            .deliveries
            .get(&id)
            .map(|d| d.attempts.iter().cloned().collect())
            .unwrap_or_default())
    }
}

#[async_trait]
impl NotificationFeed for MemoryBackend {
    fn partitions(&self) -> Partitions {
        self.partitions
    }

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
                .is_some_and(|(_, at, _)| now.duration_since(*at) > age)
            {
                log.trim_front();
            }
        }
        Ok(())
    }
}
