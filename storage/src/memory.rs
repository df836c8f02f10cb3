//! The in-memory backend: one lock over all state, so every write is atomic
//! with its side effects, exactly as the Redis scripts are. Nothing survives a
//! restart of the process.
//!
//! It follows the partitioned model of the Redis backend where a client can
//! tell: each partition has its own notification log (with its own length
//! bound and trimmed position), queue and dead-letter entries carry their
//! partition, and retention sweeps one partition at a time. Entry ids are
//! `0-{n}`, numbered across partitions, so merged reads keep log order.
//!
//! This file holds the state and the lock; each face of the backend has a
//! room of its own: `store` (the event store: creates, status changes,
//! lists, dead letters, retention), `index` (the lists' ordered indexes),
//! `queue` (the work queue and its consumers), `feed` (the notification
//! log), `attempts` (the delivery log), `recipients` and `digests`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use tokio::{sync::Notify, time::Instant};
use uuid::Uuid;

use super::{DeadLetter, Notification, Partitioned, StatusCounts, StoreOptions};
use herald::{
    cursor::{Cursor, EntryId, PartitionEntry},
    domain::{DeliveryAttempt, Event, EventStatus, StatusChange, now},
    error::{Error, Result},
    partition::{Partition, Partitions},
};

mod attempts;
mod dead_letters;
mod digests;
mod feed;
mod index;
mod queue;
mod recipients;
mod store;

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
    /// Recipient records by user.
    recipients: HashMap<String, herald::domain::Recipient>,
    /// The SCHEDULED events, earliest due first.
    schedule: BTreeSet<(SystemTime, Uuid)>,
    /// Each user's PENDING events, by id (a user with none has no entry):
    /// those created since `ordering`, and every one queued again.
    queued_by_user: HashMap<String, BTreeSet<Uuid>>,
    /// Whether creates index their events in `queued_by_user`.
    ordering: bool,
    /// Digests and their members.
    digests: digests::Digests,
    last_entry: u64,
    last_notification: u64,
}

/// One partition's notification log.
#[derive(Default)]
struct Log {
    /// Sequence number, when logged, the event, and its user's unread
    /// count if the change moved it.
    entries: VecDeque<(u64, Instant, Event, Option<u64>)>,
    /// The newest sequence number trimmed from the log (0: none).
    trimmed_through: u64,
    /// The newest sequence number logged (0: none).
    last: u64,
}

impl Log {
    fn trim_front(&mut self) {
        if let Some((seq, ..)) = self.entries.pop_front() {
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

    /// Indexes `event` among its user's PENDING events.
    fn index_queued(&mut self, event: &Event) {
        self.queued_by_user
            .entry(event.user_id.clone())
            .or_default()
            .insert(event.id);
    }

    /// Takes event `id` out of `user`'s PENDING events.
    fn unqueue(&mut self, user: &str, id: Uuid) {
        if let Some(queued) = self.queued_by_user.get_mut(user) {
            queued.remove(&id);
            if queued.is_empty() {
                self.queued_by_user.remove(user);
            }
        }
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
        if from == EventStatus::Scheduled {
            self.unschedule(&event);
        }
        if from == EventStatus::Pending {
            self.unqueue(&event.user_id, event.id);
        }
        *self.counts.slot(from) -= 1;
        *self.counts.slot(status) += 1;
        if status.enqueues() {
            self.index_queued(&event);
            self.enqueue(&event);
        }
        let unread = self.indexes.status_changed(&event, from);
        self.log(&event, unread);
        Ok(event)
    }

    /// Puts a SCHEDULED `event` on the schedule, or queues any other.
    fn schedule_or_enqueue(&mut self, event: &Event) {
        match (event.status, event.deliver_at) {
            (EventStatus::Scheduled, Some(due)) => {
                self.schedule.insert((due, event.id));
            }
            _ => {
                if self.ordering {
                    self.index_queued(event);
                }
                self.enqueue(event)
            }
        }
    }

    /// Takes `event` off the schedule.
    fn unschedule(&mut self, event: &Event) {
        if let Some(due) = event.deliver_at {
            self.schedule.remove(&(due, event.id));
        }
    }

    /// Logs `event`'s change, with its user's unread count if it moved.
    fn log(&mut self, event: &Event, unread: Option<u64>) {
        self.last_notification += 1;
        let seq = self.last_notification;
        let max_len = self.log_max_len;
        let log = &mut self.logs[self.partitions.of_user(&event.user_id).index()];
        log.entries
            .push_back((seq, Instant::now(), event.clone(), unread));
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
            let start = log.entries.partition_point(|(seq, ..)| *seq <= after);
            out.extend(
                log.entries
                    .range(start..)
                    .take(max)
                    .map(|(seq, _, event, unread)| Notification {
                        partition,
                        entry: entry_id(*seq),
                        event: event.clone(),
                        unread: *unread,
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

impl Partitioned for MemoryBackend {
    fn partitions(&self) -> Partitions {
        self.partitions
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
