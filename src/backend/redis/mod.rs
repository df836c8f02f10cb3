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
//! Keys (all under a prefix, `herald` by default, that tests vary):
//! - `{prefix}:event:{id}`: hash, the event record: `id`, `user_id`,
//!   `description`, `status`, `created_at`, `updated_at`, `occurred_at` (the
//!   times in microseconds), `category`, `type`, `session_id`, `payload` (JSON,
//!   empty if none), `request_id`, `source` and `traceparent` (of the last
//!   change that carried one).
//! - `{prefix}:events`: stream, the work queue read by the group `processors`;
//!   each entry has one field, `event`: the record's fields as one JSON object.
//!   Trimmed only below what every consumer group has acknowledged (a plain
//!   `MAXLEN` trim ignores the PEL and would drop unprocessed work).
//! - `{prefix}:notifications`: stream, every creation and status change (entries
//!   like the work queue's), tailed by each logger for live subscribers; trimmed
//!   to about
//!   `--notifications-max-len` entries (nobody acknowledges it) and, by a
//!   periodic trim, to entries younger than the retention age.
//! - `{prefix}:idx:all`, `{prefix}:idx:{user|session|category|type|status}:{value}`:
//!   sorted sets of event ids scored by occurred_at (microseconds), the query
//!   indexes; written by the same scripts as the records (the status index
//!   follows every status change). Ties sort by id, as ListEvents orders.
//! - `{prefix}:stats`: hash, events per status (`PENDING`, `PROCESSED`, ...),
//!   counted by the create and status scripts with their writes.
//! - `{prefix}:request:{source}:{request_id}`: string, the id of the event
//!   created for that idempotency key; expires after the request-id window.
//! - `{prefix}:events:dead`: stream, dead letters: the entry's fields plus
//!   `reason`, `deliveries` and `entry_id`.
//!
//! Every write that must be atomic is one Lua script: the record with its queue
//! and notification entries on creation, and the status with its notification
//! (and, entering PENDING, queue) entry on a change. Blocking reads use
//! connections of their own, never the shared multiplexed one.
//!
//! The code, by concern: `keys` names every key; `lua/` holds the scripts
//! (loaded with `include_str!`); `record` reads and writes event records and
//! stream entries; `store` is the EventStore, `queue` the WorkQueue and its
//! consumers, `feed` the NotificationFeed.

mod feed;
mod keys;
mod queue;
mod record;
mod store;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use ::redis::{
    AsyncCommands, AsyncConnectionConfig, Client, IntoConnectionInfo, RedisError, Script,
    aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    io::tcp::TcpSettings,
};
use tokio::sync::Mutex;

use super::StoreOptions;
use crate::error::{Error, Result};

pub use keys::Keys;

/// How long one command may take before the shared connection gives up on it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Lua shared by the scripts: a record's fields by name, and the query
/// indexes an event belongs in.
const INDEX_FUNCTIONS: &str = include_str!("lua/index_functions.lua");
/// Creates a batch of events, atomically (see the script for its arguments).
const CREATE_MANY: &str = include_str!("lua/create_many.lua");
/// Applies a batch of status changes, each on its own.
const UPDATE_STATUS_MANY: &str = include_str!("lua/update_status_many.lua");
/// One slice of retention.
const REMOVE_OLDER_THAN: &str = include_str!("lua/remove_older_than.lua");
/// Trims the work queue below what every consumer group has acknowledged.
const TRIM_ACKNOWLEDGED: &str = include_str!("lua/trim_acknowledged.lua");

/// Maps a Redis error: anything about reaching the server is UNAVAILABLE.
fn redis_error(err: RedisError) -> Error {
    let transient = err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_timeout()
        || matches!(
            err.code(),
            Some("LOADING" | "TRYAGAIN" | "MASTERDOWN" | "READONLY" | "BUSY")
        );
    if transient {
        Error::Unavailable(err.to_string())
    } else {
        Error::Internal(format!("redis: {err}"))
    }
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
    client: Client,
    conn: ConnectionManager,
    keys: Keys,
    create: Arc<Script>,
    update_status: Arc<Script>,
    remove_older_than: Script,
    trim_acknowledged: Script,
    /// The feed's own connection for blocking `XREAD`s, made on first use.
    feed_conn: Mutex<Option<MultiplexedConnection>>,
    /// How long idempotency keys are kept.
    request_id_window: Duration,
    notifications_max_len: usize,
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

    /// Prepares a backend; connections are made on first use, so this works
    /// while Redis is down. Fails only on a malformed URL.
    pub fn open(url: &str, keys: Keys, options: &StoreOptions) -> Result<Self> {
        let invalid = |e: RedisError| Error::Internal(format!("invalid Redis URL: {e}"));
        // Commands are small and pipelined: without TCP_NODELAY, Nagle's
        // algorithm holds them back for the server's delayed ACK.
        let info = url
            .into_connection_info()
            .map_err(invalid)?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = Client::open(info).map_err(invalid)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(redis_error)?;
        Ok(Self {
            client,
            conn,
            keys,
            create: Arc::new(Script::new(&format!("{INDEX_FUNCTIONS}{CREATE_MANY}"))),
            update_status: Arc::new(Script::new(&format!(
                "{INDEX_FUNCTIONS}{UPDATE_STATUS_MANY}"
            ))),
            remove_older_than: Script::new(&format!("{INDEX_FUNCTIONS}{REMOVE_OLDER_THAN}")),
            trim_acknowledged: Script::new(TRIM_ACKNOWLEDGED),
            feed_conn: Mutex::new(None),
            request_id_window: options.request_id_window,
            notifications_max_len: options.notifications_max_len,
        })
    }
}
