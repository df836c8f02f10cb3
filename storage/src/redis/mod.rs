//! The Redis backend.
//!
//! A short primer, since everything here leans on Redis Streams: a stream is an
//! append-only log of entries (`XADD`), each with a time-based id and a few
//! field/value pairs. A consumer group (`XGROUP CREATE`) hands each entry to one
//! consumer (`XREADGROUP ... >`); the entry then sits in the group's pending
//! entries list (PEL) until acknowledged (`XACK`). Entries left pending by a
//! consumer that died are taken over by another (`XAUTOCLAIM`), and Redis counts
//! how often each entry was delivered (`XPENDING`).
//!
//! Keys. The keyspace is split into partitions (see [`herald::partition`]):
//! every key of partition 7 starts with `{prefix}:{p07}:`, whose hash tag puts
//! the whole partition in one Redis Cluster slot, and every script touches one
//! partition only (on one Redis node, which has no slots, the creates of a
//! batch without idempotency keys are one transaction across partitions). The
//! prefix is `herald` by default; tests vary it.
//! - `{prefix}:meta`: hash, the layout (`layout` = 5), the number of
//!   partitions and the key page tokens are signed with (`page-token-key`,
//!   64 hex digits), written once when the deployment is first used and
//!   checked (the key read) by every process that opens it. Keys of the first, unpartitioned layout
//!   (`{prefix}:events`, `{prefix}:stats`, `{prefix}:idx:all`) make it refuse
//!   to start instead.
//! - `{p}:event:{id}`: string, the event record (see `record`), named by
//!   the id's 32 hex digits: a fixed head of 50 bytes (status code,
//!   updated_at, created_at, occurred_at, the packed traceparent of the
//!   last change that carried one), then the event's user id and other
//!   query indexes (for retention), then the rest of what never changes
//!   (description, attributes, payload, request id, source) as protobuf
//!   bytes. Written once with `SET NX`; a status change reads it with one
//!   `GET` and writes it back with the new head. One string instead of a hash:
//!   no field names, no per-field overhead, and readers fetch many records
//!   with one `MGET`.
//! - `{p}:events`: stream, the partition's work queue, read by the group
//!   `processors`; each entry has one field, `id`: its event's id (16
//!   bytes). The consumer reads the records of the entries it took with one
//!   `MGET` (an entry whose record is gone is acknowledged: nothing is left
//!   to deliver). Trimmed only below what every consumer group has
//!   acknowledged (a plain `MAXLEN` trim ignores the PEL and would drop
//!   unprocessed work).
//! - `{p}:notifications`: stream, every creation and status change of the
//!   partition's events: `id` (16 bytes) and `change`, what the change
//!   left in the record's head (status, updated_at, traceparent; 34 bytes);
//!   the feed reads the rest from the record (an event removed since is
//!   skipped), and only for the statuses some subscriber wants: the entry
//!   tells the status without the record. Entries refer to
//!   the record instead of copying it, so an event's bytes are stored once.
//!   Tailed by each logger for live subscribers; trimmed to about
//!   `--notifications-max-len` entries (nobody acknowledges it) and, by a
//!   periodic trim, to entries younger than the retention age.
//! - `{p}:idx:{user|session|category|type|status}:{value}`: sorted sets of
//!   event ids (their 16 bytes) scored by occurred_at (microseconds), the
//!   query indexes;
//!   written by the same scripts as the records (the status index follows
//!   every status change). Ties sort by id, as ListEvents orders. There is no
//!   index of every event: the six status indexes together are one, merged
//!   by a query without equality filters, and retention walks the settled
//!   ones only (PENDING events are never removed).
//! - The index of a status events stay in (PROCESSED, OPENED, FAILED,
//!   CANCELLED; see `keys::bucketed`) is not one sorted set but buckets of
//!   at most 128 entries, which Redis keeps as listpacks (about 33 bytes an
//!   entry against a skip list's 125; BENCHMARKS.md §38):
//!   `{p}:idx:status:{status}:dir`, a sorted set of the buckets' starts,
//!   and `{p}:idx:status:{status}:{start}`, the bucket holding the scores
//!   from its start to the next one's. The status scripts split a full
//!   bucket before adding to it: at the new entry when it is past every
//!   entry (the newest event: nothing moves), else at its middle score
//!   (`lua/buckets.lua`); readers walk the buckets in order. Their sizes are counted in
//!   `{p}:counts` (hash: status name to count, written by the same
//!   scripts); PENDING's and SCHEDULED's (statuses events leave; PENDING's
//!   is written by creates, which are plain commands) are one sorted set
//!   each, sized with `ZCARD`. So GetStats reads a count per status, and
//!   nothing else is counted per event.
//! - `{p}:request:{sha256}`: string, the id (16 bytes) of the event created
//!   for an idempotency key; expires after the request-id window. Named by
//!   the SHA-256 of the client id, the user id and the request id (each
//!   length-prefixed), it lives in the partition of the event it creates
//!   (its user's): a request id is scoped per client and user.
//! - `{p}:dead`: stream, dead letters: the event whole (`record`, its
//!   record's bytes as delivered, so a dead letter outlives its record)
//!   plus `reason`, `deliveries` and `entry_id`.
//! - `{p}:dead:index`: hash, event id to the ids of its dead letters, written
//!   with each dead letter and read by a redrive, which removes both.
//! - `{p}:recipient:{user}`: hash, the user's recipient record, in the
//!   user's partition: `contact` (email, name, locale, time zone,
//!   attributes) and `preferences` (the opt-outs), each protobuf bytes with
//!   the time it was written; each written apart (see `recipients`), both
//!   erased with the key.
//! - `{p}:digests:member`, `{p}:digests:open`, `{p}:digests:due`: hash of
//!   each digested event's digest, hash of the digest collecting each
//!   digest key now, zset of digests by when they are due; and per digest
//!   `{p}:digest:{id}` (hash: `key`, `opened`, `takes`) with its
//!   `:members` (list of event ids) and `:took` (set of channel names).
//!   All written by the scripts of `digests`.
//! - `{p}:attempts:{id}`: list, the event's newest delivery attempts (each
//!   protobuf bytes), appended by the processors' channels, only while the
//!   record exists, and removed with it by retention. A channel's success
//!   also appends its name to the record (a repeated protobuf field, which
//!   the record's protobuf part ends with), in the same script: a
//!   redelivered event skips the channels that took it.
//!
//! Every write that must be atomic is one Lua script: the record with its queue
//! and notification entries on creation, and the status with its notification
//! (and, entering PENDING, queue) entry on a change. These two run once per
//! event, so they read their arguments by place and build no Lua tables per
//! event (a status script builds one per bucket it looks up, mostly once a
//! run); the Rust side computes the index keys but for the status buckets,
//! which the scripts find. Blocking reads use
//! connections of their own, never the shared multiplexed one.
//!
//! On a Redis Cluster (`--redis-cluster`) nothing changes but the
//! connection: no command or pipeline spans two partitions, and readers
//! poll each partition instead of one blocking read over all of them.
//!
//! The code, by concern: `connection` is the one connection type over a
//! node or a cluster; `keys` names every key; `lua/` holds the scripts
//! (loaded with `include_str!`); `record` encodes and reads event records
//! and stream entries, and `stream` takes the entries out of stream
//! replies; `store` is the EventStore, `list` its ListEvents (`buckets` its walk
//! over a status index in buckets), `upgrade` its layout upgrade and
//! `split` how its batches are split by partition;
//! `queue` is the WorkQueue and `consumer` a member of its group; `feed` is
//! the NotificationFeed; `attempts` is the DeliveryLog; `recipients` the
//! RecipientStore; `digests` the DigestStore.

mod attempts;
mod buckets;
mod connection;
mod consumer;
mod dead_letters;
mod digests;
mod feed;
mod keys;
mod list;
mod queue;
mod recipients;
mod record;
mod replicas;
mod split;
mod store;
mod stream;
mod upgrade;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use ::redis::{
    AsyncCommands, AsyncConnectionConfig, Client, ErrorKind, FromRedisValue, RedisError, Script,
    ScriptInvocation, aio::MultiplexedConnection,
};
use futures_util::future::try_join_all;
use tokio::sync::{Mutex, OnceCell};
use tracing::warn;
use uuid::Uuid;

use super::{FeedRead, Partitioned, StoreOptions};
use herald::{
    cursor::Cursor,
    domain::Event,
    error::{Error, Result},
    partition::{Partition, Partitions},
};

pub use connection::RedisTarget;
use connection::{CONNECT_TIMEOUT, Conn, RESPONSE_TIMEOUT};
pub use keys::Keys;
use record::EntryRef;
use replicas::{Replicated, Replication};
use upgrade::PREVIOUS_LAYOUT;

/// How long a reader of a cluster waits between two reads that found
/// nothing, at most (blocking reads cannot span the slots of several
/// partitions, so on a cluster the readers poll, sooner while busy).
const MAX_POLL: Duration = Duration::from_millis(50);

/// Creates a batch of events, atomically (see the script for its arguments).
const CREATE_MANY: &str = include_str!("lua/create_many.lua");
/// Lua shared by the scripts that keep a status index in buckets.
const BUCKETS: &str = include_str!("lua/buckets.lua");
/// Lua shared by the status scripts: one status change (after [`BUCKETS`]).
const CHANGE_STATUS: &str = include_str!("lua/change_status.lua");
/// Applies a batch of status changes, each on its own.
const UPDATE_STATUS_MANY: &str = include_str!("lua/update_status_many.lua");
/// Redrives events: back to PENDING, their dead letters removed.
const REDRIVE_MANY: &str = include_str!("lua/redrive_many.lua");
/// Moves a queue entry to the dead letters, noted under its event.
const DEAD_LETTER: &str = include_str!("lua/dead_letter.lua");
/// One slice of retention.
const REMOVE_OLDER_THAN: &str = include_str!("lua/remove_older_than.lua");
/// Records delivery attempts, and the channels that took their events.
const RECORD_ATTEMPTS: &str = include_str!("lua/record_attempts.lua");
/// Where a resumed ListEvents page starts in a query index.
const LIST_FROM: &str = include_str!("lua/list_from.lua");
/// Trims the work queue below what every consumer group has acknowledged.
const TRIM_ACKNOWLEDGED: &str = include_str!("lua/trim_acknowledged.lua");
/// Queues a partition's due scheduled events, under its lease.
const RELEASE_DUE: &str = include_str!("lua/release_due.lua");
/// One slice of the upgrade of a status index from layout 4.
const UPGRADE_STATUS_INDEX: &str = include_str!("lua/upgrade_status_index.lua");

/// The refusal of a process started with `--partitions count` where
/// `meta` records `stored`.
pub(super) fn other_partitions(meta: &str, stored: Option<String>, count: &str) -> Error {
    Error::Misconfigured(format!(
        "this deployment has {} partitions (recorded in {meta}) but this process was \
         started with --partitions {count}; start it with --partitions {0}",
        stored.unwrap_or_default()
    ))
}

/// Maps a Redis error: anything about reaching the server is UNAVAILABLE,
/// also when it is the reason a transaction was aborted (a command queued
/// inside `MULTI` answered `LOADING`, so `EXEC` answered `EXECABORT`).
fn redis_error(err: RedisError) -> Error {
    // A failover's passing states: a node gone or loading, slots moving
    // (MOVED and ASK left after the retries), the cluster's map of them
    // changing under a request.
    let transient_code = |code: &str| {
        matches!(
            code,
            "LOADING"
                | "TRYAGAIN"
                | "MASTERDOWN"
                | "READONLY"
                | "BUSY"
                | "CLUSTERDOWN"
                | "MOVED"
                | "ASK"
        )
    };
    let transient = err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_timeout()
        || err.kind() == ErrorKind::ClusterConnectionNotFound
        || err.code().is_some_and(transient_code)
        || err
            .clone()
            .into_server_errors()
            .is_some_and(|inner| inner.iter().any(|(_, e)| transient_code(e.code())));
    if transient {
        Error::Unavailable(err.to_string())
    } else {
        tracing::debug!(error = %err, kind = ?err.kind(), "a Redis error taken for a bug");
        Error::Internal(format!("redis: {err}"))
    }
}

/// 32 bytes from 64 hex digits.
fn parse_key(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// Calls `read` until it reads past `cursor` or `block` has passed,
/// waiting a little longer after each empty read (up to [`MAX_POLL`]): how
/// the feed waits for new entries on a cluster.
async fn poll<F, Fut>(block: Duration, cursor: &Cursor, mut read: F) -> Result<FeedRead>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<FeedRead>>,
{
    let deadline = tokio::time::Instant::now() + block;
    let mut wait = Duration::from_millis(2);
    loop {
        let got = read().await?;
        let now = tokio::time::Instant::now();
        if got.through != *cursor || now >= deadline {
            return Ok(got);
        }
        tokio::time::sleep(wait.min(deadline - now)).await;
        wait = (wait * 2).min(MAX_POLL);
    }
}

/// The records of events `ids` of partition `p`, read with one `MGET`
/// (the keys of a partition share a slot); a gone record reads as `None`.
async fn read_records(
    conn: &Conn,
    keys: &Keys,
    p: Partition,
    ids: impl IntoIterator<Item = Uuid>,
) -> Result<Vec<Option<Vec<u8>>>> {
    let keys: Vec<String> = ids.into_iter().map(|id| keys.event(p, id)).collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    ::redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut conn.clone())
        .await
        .map_err(redis_error)
}

/// The events that entries of partition `p` refer to, as of each entry,
/// read from their records with one round trip; `None` for an event whose
/// record is gone (removed by retention).
async fn events_of(
    conn: &Conn,
    keys: &Keys,
    p: Partition,
    refs: &[EntryRef],
) -> Result<Vec<Option<Event>>> {
    let records = read_records(conn, keys, p, refs.iter().map(|r| r.id)).await?;
    refs.iter()
        .zip(&records)
        .map(|(r, record)| r.event(record.as_deref()))
        .collect()
}

/// Opens a connection of its own for blocking reads, with a response timeout
/// above the block time (redis-rs's default of 500 ms would cut every `BLOCK`).
async fn blocking_connection(client: &Client, block: Duration) -> Result<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(block + RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(redis_error)
}

/// Herald on Redis; see the module docs for the layout.
pub struct RedisBackend {
    /// Makes the blocking readers' connections; `None` on a cluster, whose
    /// readers poll instead.
    client: Option<Client>,
    conn: Conn,
    keys: Keys,
    create: Arc<Script>,
    update_status: Arc<Script>,
    redrive: Script,
    dead_letter: Script,
    remove_older_than: Script,
    trim_acknowledged: Script,
    record_attempts: Script,
    list_from: Script,
    release_due: Script,
    upgrade_status_index: Script,
    /// The feed's own connection for blocking `XREAD`s, made on first use.
    feed_conn: Mutex<Option<MultiplexedConnection>>,
    /// How long idempotency keys are kept.
    request_id_window: Duration,
    /// Longest each partition's notification log grows.
    notifications_max_len: usize,
    partitions: Partitions,
    /// With `--redis-wait-replicas`: the replicated writes.
    replication: Option<Replication>,
    /// Set once the layout in Redis is known to be this deployment's: the
    /// deployment's page-token key, read (or made) then.
    layout: OnceCell<[u8; 32]>,
    /// Whether the deployment uses ordering (field `ordering` of the meta
    /// hash), and when that was last read.
    ordering: std::sync::Mutex<(bool, Option<std::time::Instant>)>,
}

/// The version of the key layout `{prefix}:meta` records.
pub(super) const LAYOUT: &str = "5";

impl Partitioned for RedisBackend {
    fn partitions(&self) -> Partitions {
        self.partitions
    }
}

impl RedisBackend {
    /// `reply` of a command on `key` that fails when the key is missing
    /// (XINFO): `None` for a missing key. Redis answers that with a plain
    /// ERR, so it is told apart from other errors by whether the key exists,
    /// never by the message's words.
    async fn unless_missing<T>(
        &self,
        key: &str,
        reply: std::result::Result<T, RedisError>,
    ) -> Result<Option<T>> {
        match reply {
            Ok(value) => Ok(Some(value)),
            Err(err) if err.code() == Some("ERR") => {
                let exists: bool = self.conn.clone().exists(key).await.map_err(redis_error)?;
                if exists {
                    Err(redis_error(err))
                } else {
                    Ok(None)
                }
            }
            Err(err) => Err(redis_error(err)),
        }
    }

    /// Removes the entries of stream `key` added before `cutoff` (entry ids
    /// are the times, in ms, they were added); returns how many went. Only
    /// for streams nobody acknowledges (the work queue has its own rule).
    async fn trim_before(&self, key: &str, cutoff: SystemTime) -> Result<u64> {
        let min_ms = cutoff
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        ::redis::cmd("XTRIM")
            .arg(key)
            .arg("MINID")
            .arg(format!("{min_ms}-0"))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }

    /// Runs a write script on partition `p`'s keys and answers once it is
    /// applied and, with `--redis-wait-replicas N`, once N replicas of its
    /// node have it (see `replicas`). A write that reaches fewer replicas
    /// in time is UNAVAILABLE: it is applied on the master but could be
    /// lost with it, and a retry with the same request id finds it.
    async fn write<T: FromRedisValue>(
        &self,
        p: Partition,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T> {
        match self.write_replicated(p, invocation).await? {
            Replicated::Yes(value) => Ok(value),
            Replicated::Short(_, replicas) => Err(self.short_error(replicas, "the write")),
        }
    }

    /// [`Self::write`], saying whether the write reached the replicas
    /// asked for rather than failing when it did not.
    async fn write_replicated<T: FromRedisValue>(
        &self,
        p: Partition,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<Replicated<T>> {
        match &self.replication {
            None => invocation
                .invoke_async(&mut self.conn.clone())
                .await
                .map(Replicated::Yes)
                .map_err(redis_error),
            Some(replication) => {
                replication
                    .write(p, self.keys.events(p), &self.conn, invocation)
                    .await
            }
        }
    }

    /// The error of a write (`what`) that reached `replicas` replicas only.
    fn short_error(&self, replicas: u32, what: &str) -> Error {
        match &self.replication {
            Some(replication) => replication.short_error(replicas, what),
            None => Error::Internal("a write without replicas asked came back short".into()),
        }
    }

    /// Runs `each` for every partition at once; the answers in partition order.
    async fn each_partition<T, F, Fut>(&self, each: F) -> Result<Vec<T>>
    where
        F: Fn(Partition) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.checked().await?;
        try_join_all(self.partitions.all().map(each)).await
    }

    /// Checks the layout once (see [`crate::EventStore::prepare`]).
    async fn checked(&self) -> Result<()> {
        self.page_token_key().await.map(|_| ())
    }

    /// Whether creates index their events among their users' PENDING
    /// ones: the meta hash's `ordering`, read again once
    /// [`crate::ORDERING_REFRESH`] has passed (a failed read keeps what
    /// was known).
    pub(super) async fn ordering(&self) -> bool {
        let (known, read) = *self.ordering.lock().expect("ordering lock");
        if known || read.is_some_and(|at| at.elapsed() < crate::ORDERING_REFRESH) {
            return known;
        }
        let now = self
            .conn
            .clone()
            .hget::<_, _, Option<String>>(self.keys.meta(), "ordering")
            .await
            .map(|v| v.is_some())
            .unwrap_or(known);
        *self.ordering.lock().expect("ordering lock") = (now, Some(std::time::Instant::now()));
        now
    }

    /// The deployment's page-token key, once the layout is checked.
    pub(super) async fn page_token_key(&self) -> Result<[u8; 32]> {
        self.layout
            .get_or_try_init(|| self.check_layout())
            .await
            .copied()
    }

    /// Records this deployment's layout if Redis holds none, and refuses a
    /// Redis that holds another one; returns the deployment's page-token
    /// key, made by the first process to get here (32 random bytes, hex).
    async fn check_layout(&self) -> Result<[u8; 32]> {
        let mut conn = self.conn.clone();
        for key in self.keys.legacy() {
            let exists: bool = conn.exists(&key).await.map_err(redis_error)?;
            if exists {
                return Err(Error::Misconfigured(format!(
                    "Redis holds data in Herald's first, unpartitioned layout (key {key}); \
                     this version cannot read it: use another Redis (or --redis-prefix), \
                     or remove the old keys"
                )));
            }
        }
        let meta = self.keys.meta();
        let count = self.partitions.count().to_string();
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| Error::Internal(format!("no randomness for the page-token key: {e}")))?;
        let fresh: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
        let (_, _, _, layout, stored, key): (
            (),
            (),
            (),
            Option<String>,
            Option<String>,
            Option<String>,
        ) = ::redis::pipe()
            .hset_nx(&meta, "layout", LAYOUT)
            .hset_nx(&meta, "partitions", &count)
            .hset_nx(&meta, "page-token-key", &fresh)
            .hget(&meta, "layout")
            .hget(&meta, "partitions")
            .hget(&meta, "page-token-key")
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        if layout.as_deref() == Some(PREVIOUS_LAYOUT) {
            return Err(Error::Misconfigured(format!(
                "Redis key {meta} records layout {PREVIOUS_LAYOUT}, the previous version's; this \
                 version reads and writes layout {LAYOUT}: stop every Herald process and run \
                 herald-logger --upgrade-storage once, with the same storage flags, to upgrade \
                 it in place"
            )));
        }
        if layout.as_deref() != Some(LAYOUT) {
            return Err(Error::Misconfigured(format!(
                "Redis key {meta} records layout {}; this version reads and writes layout \
                 {LAYOUT} only: use another Redis (or --redis-prefix)",
                layout.as_deref().unwrap_or("none")
            )));
        }
        if stored.as_deref() != Some(count.as_str()) {
            return Err(other_partitions(&meta, stored, &count));
        }
        let key = key.as_deref().and_then(parse_key).ok_or_else(|| {
            Error::Misconfigured(format!(
                "Redis key {meta} holds a page-token-key that is not 64 hex digits; remove that field"
            ))
        })?;
        self.warn_of_foreign_keys().await;
        Ok(key)
    }

    /// Warns when the database Herald uses on one Redis node also holds
    /// keys that are not under its prefix (another application's, or a
    /// Redis someone else runs on the default port): a sample of the
    /// keyspace is looked at once (one `SCAN`), and no key is named.
    async fn warn_of_foreign_keys(&self) {
        if !matches!(self.conn, Conn::Node(_)) {
            return;
        }
        // Keys are bytes: another application's need not be UTF-8.
        let sample: std::result::Result<(u64, Vec<Vec<u8>>), RedisError> = ::redis::cmd("SCAN")
            .arg(0)
            .arg("COUNT")
            .arg(256)
            .query_async(&mut self.conn.clone())
            .await;
        let Ok((_, keys)) = sample else {
            return;
        };
        let ours = format!("{}:", self.keys.prefix());
        let foreign = keys
            .iter()
            .filter(|k| !k.starts_with(ours.as_bytes()))
            .count();
        if foreign > 0 {
            warn!(
                foreign,
                sampled = keys.len(),
                prefix = self.keys.prefix(),
                "this Redis database also holds keys that are not Herald's: give Herald a Redis \
                 server or database of its own (redis://host:port/1), or a --redis-prefix nothing else uses"
            );
        }
    }

    /// Prepares a backend; connections are made on first use, so this works
    /// while Redis is down. Fails only on a malformed URL.
    pub fn open(target: &RedisTarget, keys: Keys, options: &StoreOptions) -> Result<Self> {
        let (conn, client) = connection::connect(target)?;
        Ok(Self {
            client,
            conn,
            keys,
            create: Arc::new(Script::new(CREATE_MANY)),
            update_status: Arc::new(Script::new(&format!(
                "{BUCKETS}{CHANGE_STATUS}{UPDATE_STATUS_MANY}"
            ))),
            redrive: Script::new(&format!("{BUCKETS}{CHANGE_STATUS}{REDRIVE_MANY}")),
            dead_letter: Script::new(DEAD_LETTER),
            remove_older_than: Script::new(&format!("{BUCKETS}{REMOVE_OLDER_THAN}")),
            trim_acknowledged: Script::new(TRIM_ACKNOWLEDGED),
            record_attempts: Script::new(RECORD_ATTEMPTS),
            list_from: Script::new(LIST_FROM),
            upgrade_status_index: Script::new(&format!("{BUCKETS}{UPGRADE_STATUS_INDEX}")),
            release_due: Script::new(&format!("{BUCKETS}{CHANGE_STATUS}{RELEASE_DUE}")),
            feed_conn: Mutex::new(None),
            request_id_window: options.request_id_window,
            notifications_max_len: options.notifications_max_len.max(1),
            partitions: options.partitions,
            replication: match options.wait_replicas {
                0 => None,
                wanted => Some(Replication::new(target, options.partitions, wanted)?),
            },
            layout: OnceCell::new(),
            ordering: std::sync::Mutex::new((false, None)),
        })
    }
}
