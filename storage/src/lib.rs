//! Herald's storage: the event store, the work queue and the notification
//! log, behind traits with one Redis and one memory implementation that pass
//! the same behavioural tests (`tests/backend`, on memory, one redis-server
//! and a Redis Cluster).
//!
//! - [`EventStore`]: the producer half the logger uses. Creating an event
//!   stores its record, queues it for the processors and appends it to the
//!   notification log in one atomic write; so does every status change.
//! - [`WorkQueue`] / [`Consumer`]: the consumer half the processors use, with
//!   consumer-group semantics (at-least-once: an entry stays pending until
//!   acknowledged, and entries idle too long are reclaimed by other consumers).
//! - [`NotificationFeed`]: the log of creations and status changes that each
//!   logger tails to fan out to live subscribers.
//! - [`DeliveryLog`]: each event's delivery attempts, and the channels that
//!   already took it (kept in its record, so a redelivery skips them).
//! - [`DeadLetters`]: entries given up (atomically with their
//!   acknowledgement), read, redriven and trimmed.
//! - [`RecipientStore`]: each user's contact data and preferences.
//! - [`DigestStore`]: digests, the events a digest route collects per
//!   user and sends as one notification.
//!
//! # Layout
//! - this file: the traits, the backend configuration and [`open`], the
//!   factory that picks a backend.
//! - `batch`: the batching loop that groups concurrent calls into one write.
//! - [`dead_letters`]: the dead letters' trait and type, and redriving the
//!   oldest.
//! - [`retention`]: retention's slices, and the sweep that runs them.
//! - `recipients`: the recipients' trait.
//! - [`digests`]: the digests' trait and types.
//! - `memory`: [`MemoryBackend`], everything in one process behind one
//!   lock; its store, indexes, queue, feed and delivery log each in a file
//!   of their own under `memory/`, as the Redis backend's are.
//! - `redis`: [`RedisBackend`], on one server or a Redis Cluster; its keys
//!   (`redis/keys.rs`), records, lists, queue consumers, feed and delivery
//!   attempts each in a file of their own, and the Lua scripts in
//!   `redis/lua/`.
//! - [`testing`] (feature `testing`): a private `redis-server` (or Redis
//!   Cluster) per test.

mod batch;
pub mod dead_letters;
pub mod digests;
mod memory;
mod recipients;
mod redis;
pub mod retention;
#[cfg(feature = "testing")]
pub mod testing;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use uuid::Uuid;

pub use self::batch::{Batching, MAX_BATCH, run_batches};
pub use self::dead_letters::{DeadLetter, DeadLetters, redrive_oldest};
pub use self::digests::{Digest, DigestKey, DigestStore, Join};
pub use self::memory::MemoryBackend;
pub use self::recipients::{RecipientStore, recipient};
pub use self::redis::{Keys, RedisBackend, RedisTarget};
pub use self::retention::{RetentionSlice, Sweep, sweep};

use herald::{
    cursor::{Cursor, EntryId, PartitionEntry},
    domain::{DeliveryAttempt, Event, EventStatus, NewEvent, StatusChange, Statuses},
    error::Result,
    partition::{Partition, Partitions},
    query::{ListQuery, Page},
};

/// Storage split into partitions: what every storage trait knows of its
/// deployment, implemented once per backend.
pub trait Partitioned: Send + Sync + 'static {
    /// The partitions of the deployment.
    fn partitions(&self) -> Partitions;
}

/// The producer half: records, with their queue and notification entries.
///
/// The batch methods are the primitives: a backend does a whole batch in one
/// atomic write (one script, one lock). The single-item methods are batches of
/// one.
#[async_trait]
pub trait EventStore: Partitioned {
    /// Checks, once, that the storage holds this deployment's layout with
    /// the same number of partitions (recording it on first use); an error
    /// names what differs. Every other call checks it too before its first
    /// use of the storage.
    async fn prepare(&self) -> Result<()>;
    /// Upgrades the storage's layout in place from the one the previous
    /// version wrote, for `herald-logger --upgrade-storage`: run while no
    /// other Herald process uses the storage. `None` when there was
    /// nothing to upgrade (no layout recorded yet, or this version's).
    async fn upgrade(&self) -> Result<Option<Upgraded>>;
    /// Stores new PENDING events, queues them and logs their creation:
    /// atomically within each partition, so each event has its own outcome
    /// (in order): the event stored, or the error of its partition's write
    /// (nothing of that partition was written; the other partitions'
    /// events stand). An event whose `request_id` its client (`source`)
    /// already used for the same user within the request-id window is not
    /// stored: its place holds the event created the first time. The outer error is for the
    /// whole call (nothing written).
    async fn create_many(&self, events: Vec<NewEvent>) -> Result<Vec<Result<Event>>>;
    /// Applies status changes in order, each atomically with its notification
    /// entry (and its queue entry when the new status enqueues). Each change
    /// has its own outcome: the same status again is a no-op success, a
    /// forbidden transition [`herald::Error::InvalidTransition`], an unknown
    /// event [`herald::Error::NotFound`]. The outer error is for the whole call
    /// (Redis down).
    async fn update_status_many(&self, changes: &[StatusChange]) -> Result<Vec<Result<Event>>>;
    /// The event with this id, or [`herald::Error::NotFound`].
    async fn get(&self, id: Uuid) -> Result<Event>;
    /// The key page tokens are signed with ([`herald::query::PageTokens`]):
    /// made once per deployment and kept in the storage, so every logger of
    /// it reads the tokens of the others.
    async fn page_token_key(&self) -> Result<[u8; 32]>;
    /// One page of the events matching `query`, in its order; the same events
    /// in the same pages as [`herald::query::page_of`] gives, except that a
    /// page may end early (with a next position) to bound the work of one call.
    async fn list(&self, query: &ListQuery) -> Result<Page>;
    /// Succeeds when the backend can serve requests.
    async fn ping(&self) -> Result<()>;
    /// How many unread notifications (PROCESSED, not yet OPENED) `user`
    /// has: the size of an index kept with every status change, never a
    /// scan.
    async fn unread_count(&self, user: &str) -> Result<u64>;
    /// How many events are in each status now (read from sizes the storage
    /// keeps, never by scanning events).
    async fn status_counts(&self) -> Result<StatusCounts>;
    /// One slice of retention (see [`RetentionSlice`]): removes each event
    /// it looks at that was also created before the cutoff, with its index
    /// entries, atomically. PENDING events are never removed.
    async fn remove_older_than(&self, slice: RetentionSlice) -> Result<Sweep>;

    /// Queues the due SCHEDULED events of `partition`: up to `max` whose
    /// `deliver_at` is at or before `now`, earliest due first, each moved
    /// to PENDING as a status change moves it (queued and logged in one
    /// atomic write, which a cancellation cannot interleave: an event is
    /// cancelled or queued, never both). `None` when another mover holds
    /// the partition's lease: `owner` names this one, and the lease, taken
    /// or renewed by each call of its holder, lasts `lease`.
    async fn release_due(
        &self,
        partition: Partition,
        now: SystemTime,
        max: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Vec<Released>>>;

    /// The earliest (by id, so by creation) of `user`'s PENDING events,
    /// if any: read from an index kept with every status change, never a
    /// scan. An ordered delivery waits until its event is the first. The
    /// index holds the events created since the deployment uses ordering
    /// (see [`EventStore::use_ordering`]), and every event queued again.
    async fn first_queued(&self, user: &str) -> Result<Option<Uuid>>;

    /// Records that the deployment uses ordered delivery: from then on
    /// every create also indexes the event among its user's PENDING events
    /// (one more write per event, which deployments without ordering do
    /// not pay). A processor with an ordered route calls it as it starts;
    /// the other processes of the deployment see it within
    /// [`ORDERING_REFRESH`].
    async fn use_ordering(&self) -> Result<()>;

    /// The partitions that cannot take writes now, each with why: its
    /// Redis master does not answer, or has fewer replicas than
    /// `--redis-wait-replicas` asks for. One small read per partition;
    /// none on memory, whose partitions are always writable.
    async fn unwritable_partitions(&self) -> Result<Vec<(Partition, String)>> {
        Ok(Vec::new())
    }

    /// Stores one new event; see [`EventStore::create_many`].
    async fn create(&self, event: NewEvent) -> Result<Event> {
        let mut created = self.create_many(vec![event]).await?;
        created
            .pop()
            .unwrap_or_else(|| Err(herald::Error::Internal("create returned nothing".into())))
    }

    /// Applies one status change (with its trace context); see
    /// [`EventStore::update_status_many`].
    async fn apply(&self, change: StatusChange) -> Result<Event> {
        let mut results = self.update_status_many(&[change]).await?;
        results
            .pop()
            .unwrap_or_else(|| Err(herald::Error::Internal("update returned nothing".into())))
    }

    /// Moves event `id` to `status`, outside any trace; see [`EventStore::apply`].
    async fn update_status(&self, id: Uuid, status: EventStatus) -> Result<Event> {
        self.apply(StatusChange::new(id, status)).await
    }
}

/// How long a process may go on creating events without indexing them
/// after another one called [`EventStore::use_ordering`].
pub const ORDERING_REFRESH: Duration = Duration::from_secs(1);

/// An event [`EventStore::release_due`] queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Released {
    /// The event.
    pub id: Uuid,
    /// When it was due.
    pub due: SystemTime,
}

/// How one consumer of the work queue behaves.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// Unique name of the consumer within the group.
    pub name: String,
    /// Entries pending longer than this, with any consumer, are reclaimed.
    pub claim_idle: Duration,
    /// How long one [`Consumer::receive`] waits for new entries.
    pub block: Duration,
}

/// One queue entry handed to a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The entry's partition and id in its queue, to acknowledge it.
    pub entry_id: PartitionEntry,
    /// The event (as it was queued, or on Redis as its record is when the
    /// entry is read: then its status and trace may be newer).
    pub event: Event,
    /// How many times the entry has been delivered, this time included.
    pub deliveries: u64,
    /// The channels that already took the event (see [`DeliveryLog`]), as
    /// its record says when the entry is read.
    pub delivered: Vec<String>,
}

/// Each event's delivery attempts, and the channels that took it.
#[async_trait]
pub trait DeliveryLog: Send + Sync + 'static {
    /// Records attempts, in order: each joins its event's attempts (the
    /// newest [`MAX_ATTEMPTS_KEPT`](herald::domain::MAX_ATTEMPTS_KEPT) are
    /// kept), and a successful one marks its channel as having taken the
    /// event, in the event's record: atomically per partition. An attempt
    /// of an event that is gone is dropped.
    async fn record_attempts(&self, attempts: &[DeliveryAttempt]) -> Result<()>;
    /// The attempts recorded for event `id`, oldest first, or
    /// [`herald::Error::NotFound`] if there is no such event.
    async fn attempts(&self, id: Uuid) -> Result<Vec<DeliveryAttempt>>;
}

/// The consumer half: a factory of consumers in the group `processors`.
#[async_trait]
pub trait WorkQueue: Send + Sync + 'static {
    /// A consumer with this configuration.
    fn consumer(&self, config: ConsumerOptions) -> Arc<dyn Consumer>;
    /// Removes the entries that every consumer group has acknowledged (none
    /// while no group exists); returns how many. Unacknowledged entries, and
    /// entries not yet delivered, always stay.
    async fn trim_acknowledged(&self) -> Result<u64>;
    /// The queue's sizes now.
    async fn stats(&self) -> Result<QueueStats>;
}

/// The work queue's sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Entries in the queue, acknowledged ones not yet trimmed included.
    pub length: u64,
    /// Entries delivered to a consumer and not acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to any consumer (`None` when Redis cannot tell).
    pub lag: Option<u64>,
    /// Dead letters kept.
    pub dead_letters: u64,
}

/// One member of the consumer group.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// Up to `max` entries: first this consumer's own pending entries (once,
    /// after start), then entries idle longer than `claim_idle` with any
    /// consumer, then new entries, waiting up to `block` for them.
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>>;
    /// Acknowledges entries: they are done and never delivered again.
    async fn ack(&self, entry_ids: &[PartitionEntry]) -> Result<()>;
    /// Keeps entries this consumer holds from being reclaimed for another
    /// `claim_idle`, without counting a delivery (an entry waiting for its
    /// turn is not idle).
    async fn touch(&self, entry_ids: &[PartitionEntry]) -> Result<()>;
    /// The number of entries pending (delivered, not acknowledged) per consumer.
    async fn pending_by_consumer(&self) -> Result<Vec<(String, u64)>>;
}

/// One entry of the notification log: an event as it was after a creation or
/// status change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The partition whose log holds the entry (its user's).
    pub partition: Partition,
    /// The entry's id in that partition's log.
    pub entry: EntryId,
    /// The event after the change.
    pub event: Event,
    /// The user's unread notifications after the change, if it moved them
    /// (a change into PROCESSED, or out of it).
    pub unread: Option<u64>,
}

/// What one [`NotificationFeed::read_after`] gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedRead {
    /// The entries wanted, of events still there.
    pub notifications: Vec<Notification>,
    /// The cursor past every entry read, wanted or not: where to read on.
    pub through: Cursor,
}

/// The log of creations and status changes: one stream per partition.
/// Entries of one partition are in the order they were logged; entries of
/// different partitions have no order among them.
#[async_trait]
pub trait NotificationFeed: Partitioned {
    /// The newest entry of every partition: reading after it yields only
    /// what comes next.
    async fn latest_cursor(&self) -> Result<Cursor>;
    /// Entries after `cursor` (up to `max` per partition), waiting up to
    /// `block` for one. Only changes into a status of `wanted` come back
    /// (the others are passed over without reading their events), nor do
    /// entries of removed events; [`FeedRead::through`] says how far the
    /// read went all the same. Meant for one reader per process (the
    /// logger's tail).
    async fn read_after(
        &self,
        cursor: &Cursor,
        max: usize,
        block: Duration,
        wanted: Statuses,
    ) -> Result<FeedRead>;
    /// Entries after `cursor` in partition `only` (or in every partition),
    /// up to `max` per partition, without waiting, for any number of readers
    /// (subscribers catching up); merged in the order they were logged.
    async fn read_range(
        &self,
        cursor: &Cursor,
        only: Option<Partition>,
        max: usize,
    ) -> Result<Vec<Notification>>;
    /// The bounds of what the log still holds.
    async fn history(&self) -> Result<History>;
    /// A position in a partition's log before every entry logged at or
    /// after `time` (by the log's clock), where entry ids carry one; else
    /// the start of the log.
    fn position_before(&self, time: SystemTime) -> EntryId {
        let _ = time;
        EntryId::START
    }
    /// Removes the entries older than `age` (retention by age; the length
    /// bound is kept on every write).
    async fn trim_older_than(&self, age: Duration) -> Result<()>;
}

/// What [`EventStore::upgrade`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgraded {
    /// The layout found.
    pub from: String,
    /// The layout written.
    pub to: String,
    /// Index entries moved into the new layout's places.
    pub entries: u64,
}

/// How many events are in each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Stored and queued, not yet delivered.
    pub pending: u64,
    /// Delivered, not opened.
    pub processed: u64,
    /// Opened by the recipient.
    pub opened: u64,
    /// Given up after every delivery attempt.
    pub failed: u64,
    /// Waiting for their `deliver_at`.
    pub scheduled: u64,
    /// Cancelled while scheduled.
    pub cancelled: u64,
}

impl StatusCounts {
    /// Events in every status.
    pub fn total(&self) -> u64 {
        self.pending + self.processed + self.opened + self.failed + self.scheduled + self.cancelled
    }

    /// The count of `status`.
    pub fn slot(&mut self, status: EventStatus) -> &mut u64 {
        match status {
            EventStatus::Pending => &mut self.pending,
            EventStatus::Processed => &mut self.processed,
            EventStatus::Opened => &mut self.opened,
            EventStatus::Failed => &mut self.failed,
            EventStatus::Scheduled => &mut self.scheduled,
            EventStatus::Cancelled => &mut self.cancelled,
        }
    }
}

/// The bounds of the notification log's kept history, per partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// Entries at or before this cursor may have been removed: reading after
    /// an older position in a partition may miss some of its entries.
    pub trimmed_through: Cursor,
    /// The newest entry each partition's log ever held: a position beyond it
    /// comes from a log that was since reset.
    pub last: Cursor,
}

/// Both halves and the feed of one backend, ready to share.
#[derive(Clone)]
pub struct Backend {
    /// Which backend this is.
    pub kind: BackendKind,
    /// The producer half.
    pub store: Arc<dyn EventStore>,
    /// The consumer half.
    pub queue: Arc<dyn WorkQueue>,
    /// The notification log.
    pub feed: Arc<dyn NotificationFeed>,
    /// Delivery attempts.
    pub deliveries: Arc<dyn DeliveryLog>,
    /// The dead letters.
    pub dead_letters: Arc<dyn DeadLetters>,
    /// Recipients and their preferences.
    pub recipients: Arc<dyn RecipientStore>,
    /// Digests.
    pub digests: Arc<dyn DigestStore>,
}

/// The kinds of backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// In this process.
    Memory,
    /// One Redis server.
    Redis,
    /// A Redis Cluster.
    RedisCluster,
}

impl BackendKind {
    /// The kind's name in logs: `memory`, `redis`, `redis-cluster`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::RedisCluster => "redis-cluster",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which backend to open.
#[derive(Clone, Debug)]
pub enum BackendTarget {
    /// In this process only; nothing survives a restart.
    Memory,
    /// Redis at `url`, with every key under `prefix`.
    Redis {
        /// A `redis://` URL.
        url: String,
        /// Key prefix (normally `herald`).
        prefix: String,
    },
    /// A Redis Cluster found through the nodes at `urls`, with every key
    /// under `prefix`.
    RedisCluster {
        /// `redis://` URLs of some of the cluster's nodes.
        urls: Vec<String>,
        /// Key prefix (normally `herald`).
        prefix: String,
    },
}

impl BackendTarget {
    /// Where the data is, for messages: the Redis URL(s) without any
    /// password, or `memory`.
    pub fn location(&self) -> String {
        match self {
            Self::Memory => "memory".to_owned(),
            Self::Redis { url, .. } => herald::redact::url(url),
            Self::RedisCluster { urls, .. } => urls
                .iter()
                .map(|u| herald::redact::url(u))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// Opens the configured backend, its store wrapped in [`Batching`]. Redis
/// connections are made lazily, so this succeeds while Redis is down; only a
/// malformed URL fails. Needs a Tokio runtime (for the batching tasks).
pub fn open(config: &BackendTarget) -> Result<Backend> {
    open_with(config, &StoreOptions::default())
}

/// Options of the store, whichever the backend.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long a client's `request_id` keeps answering with the event it created.
    pub request_id_window: Duration,
    /// Longest each partition's notification log grows before its oldest
    /// entries go.
    pub notifications_max_len: usize,
    /// How many partitions the deployment has.
    pub partitions: Partitions,
    /// Replicas (of the Redis node written to) that must have each write
    /// before it is answered: a `WAIT` after every write batch (0: none).
    pub wait_replicas: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            request_id_window: DEFAULT_REQUEST_ID_WINDOW,
            notifications_max_len: DEFAULT_NOTIFICATIONS_MAX_LEN,
            partitions: Partitions::default(),
            wait_replicas: 0,
        }
    }
}

/// [`open`] with store options other than the defaults.
pub fn open_with(config: &BackendTarget, options: &StoreOptions) -> Result<Backend> {
    let (kind, target, prefix) = match config {
        BackendTarget::Memory => {
            let memory = Arc::new(MemoryBackend::new(options));
            return Ok(assemble(BackendKind::Memory, memory));
        }
        BackendTarget::Redis { url, prefix } => {
            (BackendKind::Redis, RedisTarget::Node(url.clone()), prefix)
        }
        BackendTarget::RedisCluster { urls, prefix } => (
            BackendKind::RedisCluster,
            RedisTarget::Cluster(urls.clone()),
            prefix,
        ),
    };
    let keys = Keys::new(prefix, options.partitions);
    Ok(assemble(
        kind,
        Arc::new(RedisBackend::open(&target, keys, options)?),
    ))
}

/// A backend's faces, its store wrapped in [`Batching`].
fn assemble<B>(kind: BackendKind, backend: Arc<B>) -> Backend
where
    B: EventStore
        + WorkQueue
        + NotificationFeed
        + DeliveryLog
        + DeadLetters
        + RecipientStore
        + DigestStore,
{
    Backend {
        kind,
        store: Arc::new(match kind {
            BackendKind::RedisCluster => Batching::per_partition(backend.clone()),
            BackendKind::Memory | BackendKind::Redis => Batching::new(backend.clone()),
        }),
        queue: backend.clone(),
        feed: backend.clone(),
        deliveries: backend.clone(),
        dead_letters: backend.clone(),
        recipients: backend.clone(),
        digests: backend,
    }
}

/// Longest the notification log grows before its oldest entries are
/// trimmed, unless [`StoreOptions`] say otherwise.
pub const DEFAULT_NOTIFICATIONS_MAX_LEN: usize = 32_000;
/// How long a client's `request_id` keeps answering with the event it created,
/// unless [`StoreOptions`] say otherwise.
pub const DEFAULT_REQUEST_ID_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The consumer group of the processors.
pub const GROUP: &str = "processors";

#[cfg(test)]
mod location_tests {
    use super::BackendTarget;

    #[test]
    fn a_location_names_the_servers_but_no_password() {
        let redis = BackendTarget::Redis {
            url: "redis://:s3cret@cache.internal:6379/0".into(),
            prefix: "herald".into(),
        };
        assert_eq!(redis.location(), "redis://***@cache.internal:6379/0");
        let cluster = BackendTarget::RedisCluster {
            urls: vec!["redis://a:7000".into(), "rediss://u:p@b:7001".into()],
            prefix: "herald".into(),
        };
        assert_eq!(cluster.location(), "redis://a:7000,rediss://***@b:7001");
        assert_eq!(BackendTarget::Memory.location(), "memory");
    }
}
