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

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use ::redis::{
    AsyncCommands, AsyncConnectionConfig, Client, IntoConnectionInfo, RedisError, Script, Value,
    aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    io::tcp::TcpSettings,
    streams::{
        StreamAutoClaimOptions, StreamId, StreamPendingCountReply, StreamRangeReply,
        StreamReadOptions, StreamReadReply,
    },
};
use async_trait::async_trait;
use tokio::{sync::Mutex, time::Instant};
use tracing::{info, instrument, warn};
use uuid::Uuid;

use super::{
    Consumer, ConsumerConfig, DeadLetter, Delivery, EventStore, GROUP, History, Notification,
    NotificationFeed, QueueStats, StatusCounts, StoreOptions, Sweep, WorkQueue,
};
use crate::{
    domain::{Event, EventStatus, NewEvent, StatusChange, from_micros, now, to_micros},
    error::{Error, Result},
    query::{ListQuery, Page, Position},
    subscription::Cursor,
    trace::TraceParent,
};

/// How long one command may take before the shared connection gives up on it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The keys of one Herald deployment.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (`herald` in production).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The hash holding one event record.
    pub fn event(&self, id: Uuid) -> String {
        format!("{}:event:{id}", self.prefix)
    }

    /// The work-queue stream.
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// Events per status: a hash kept by the create and status scripts.
    pub fn stats(&self) -> String {
        format!("{}:stats", self.prefix)
    }

    /// The notification-log stream.
    pub fn notifications(&self) -> String {
        format!("{}:notifications", self.prefix)
    }

    /// The idempotency key of `request_id` sent by client `source`; it holds
    /// the id of the event created for it.
    pub fn request(&self, source: &str, request_id: &str) -> String {
        format!("{}:request:{source}:{request_id}", self.prefix)
    }

    /// The query index of events whose `kind` (user, session, category, type,
    /// status) is `value`.
    pub fn index(&self, kind: &str, value: &str) -> String {
        format!("{}:idx:{kind}:{value}", self.prefix)
    }

    /// The query index of every event.
    pub fn index_all(&self) -> String {
        format!("{}:idx:all", self.prefix)
    }

    /// The dead-letter stream.
    pub fn dead(&self) -> String {
        format!("{}:events:dead", self.prefix)
    }
}

/// Lua shared by the scripts: a record's fields by name, and the query
/// indexes (sorted sets scored by occurred_at) an event belongs in.
const INDEX_FUNCTIONS: &str = r"
local function fields_of(record)
  local f = {}
  for j = 1, #record, 2 do f[record[j]] = record[j + 1] end
  return f
end
local function index_keys(prefix, f)
  local keys = {prefix .. ':idx:all', prefix .. ':idx:user:' .. f.user_id,
                prefix .. ':idx:status:' .. f.status}
  if f.session_id ~= '' then keys[#keys + 1] = prefix .. ':idx:session:' .. f.session_id end
  if f.category ~= '' then keys[#keys + 1] = prefix .. ':idx:category:' .. f.category end
  if f.type ~= '' then keys[#keys + 1] = prefix .. ':idx:type:' .. f.type end
  return keys
end
";

/// Creates a batch of events. KEYS: queue, notifications, then one record key
/// per event. ARGV: notifications max length, the number of field/value
/// arguments per record, the idempotency window in seconds, the key prefix
/// (for the query indexes), then per event its idempotency key ('' for none),
/// its stream entry (the record as one JSON object) and its record's
/// field/value pairs. Checks
/// every id first, so the batch is written whole or not at all; an event whose
/// idempotency key is already taken is not written, and its slot of the reply
/// holds the id of the event that took the key ('' for events written).
const CREATE_MANY: &str = r"
local n = tonumber(ARGV[2])
local prefix = ARGV[4]
local stride = n + 2
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return redis.error_reply('HERALD_EXISTS event id already taken')
  end
end
local out = {}
for i = 3, #KEYS do
  local first = 5 + (i - 3) * stride
  local request_key = ARGV[first]
  local entry = ARGV[first + 1]
  local record = {unpack(ARGV, first + 2, first + n + 1)}
  local prior = false
  if request_key ~= '' then
    prior = redis.call('GET', request_key)
  end
  if prior then
    out[#out + 1] = prior
  else
    if request_key ~= '' then
      redis.call('SET', request_key, record[2], 'EX', ARGV[3])
    end
    redis.call('HSET', KEYS[i], unpack(record))
    redis.call('HINCRBY', prefix .. ':stats', 'PENDING', 1)
    local f = fields_of(record)
    for _, index in ipairs(index_keys(prefix, f)) do
      redis.call('ZADD', index, f.occurred_at, f.id)
    end
    redis.call('XADD', KEYS[1], '*', 'event', entry)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'event', entry)
    out[#out + 1] = ''
  end
end
return out
";

/// Applies a batch of status changes, each on its own. KEYS: queue,
/// notifications, then one record key per change. ARGV: updated_at (micros),
/// notifications max length, the key prefix (for the status index), then per
/// change: new status, '1' to enqueue, the statuses it may come from joined
/// by commas, and its traceparent ('' keeps the record's). Returns per change
/// {outcome, record or current status}.
const UPDATE_STATUS_MANY: &str = r"
local out = {}
local prefix = ARGV[3]
for i = 3, #KEYS do
  local a = 4 + (i - 3) * 4
  local target, enqueue, sources = ARGV[a], ARGV[a + 1], ',' .. ARGV[a + 2] .. ','
  local trace = ARGV[a + 3]
  local current = redis.call('HGET', KEYS[i], 'status')
  if not current then
    out[#out + 1] = {'missing', ''}
  elseif current == target then
    out[#out + 1] = {'same', redis.call('HGETALL', KEYS[i])}
  elseif not string.find(sources, ',' .. current .. ',', 1, true) then
    out[#out + 1] = {'forbidden', current}
  else
    redis.call('HSET', KEYS[i], 'status', target, 'updated_at', ARGV[1])
    if trace ~= '' then redis.call('HSET', KEYS[i], 'traceparent', trace) end
    redis.call('HINCRBY', prefix .. ':stats', current, -1)
    redis.call('HINCRBY', prefix .. ':stats', target, 1)
    local record = redis.call('HGETALL', KEYS[i])
    local f = fields_of(record)
    redis.call('ZREM', prefix .. ':idx:status:' .. current, f.id)
    redis.call('ZADD', prefix .. ':idx:status:' .. target, f.occurred_at, f.id)
    local entry = cjson.encode(f)
    if enqueue == '1' then redis.call('XADD', KEYS[1], '*', 'event', entry) end
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', entry)
    out[#out + 1] = {'changed', record}
  end
end
return out
";

/// One slice of retention. ARGV: the key prefix, the cutoff (micros), how
/// many of the oldest candidates to skip, the most to look at. Looks at the
/// events that occurred before the cutoff, oldest first, and removes each that
/// was also created before it and is not PENDING: its record, its index
/// entries and its count. An index entry whose record is gone goes too.
/// Returns {removed, kept, scanned}.
const REMOVE_OLDER_THAN: &str = r"
local prefix, cutoff = ARGV[1], tonumber(ARGV[2])
local all = prefix .. ':idx:all'
local ids = redis.call('ZRANGE', all, '-inf', '(' .. ARGV[2], 'BYSCORE', 'LIMIT', ARGV[3], ARGV[4])
local removed, kept = 0, 0
for _, id in ipairs(ids) do
  local record = redis.call('HGETALL', prefix .. ':event:' .. id)
  if #record == 0 then
    redis.call('ZREM', all, id)
  else
    local f = fields_of(record)
    if f.status == 'PENDING' or tonumber(f.created_at) >= cutoff then
      kept = kept + 1
    else
      for _, index in ipairs(index_keys(prefix, f)) do redis.call('ZREM', index, id) end
      redis.call('DEL', prefix .. ':event:' .. id)
      redis.call('HINCRBY', prefix .. ':stats', f.status, -1)
      removed = removed + 1
    end
  end
end
return {removed, kept, #ids}
";

/// Trims the work queue below what every consumer group has acknowledged.
/// KEYS: the queue. A group's bound is its oldest pending entry or, with
/// none pending, its last delivered entry (kept, so the bound is never past
/// it); the queue keeps everything from the lowest bound on. With no group,
/// nothing is trimmed. Returns how many entries went.
const TRIM_ACKNOWLEDGED: &str = r"
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) ~= 'table' or groups.err or #groups == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local lowest, lms, lseq = nil, nil, nil
for _, g in ipairs(groups) do
  local f = {}
  for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
  local bound = f['last-delivered-id']
  if tonumber(f['pending']) > 0 then
    bound = redis.call('XPENDING', KEYS[1], f['name'])[2]
  end
  local ms, seq = parse(bound)
  if lowest == nil or ms < lms or (ms == lms and seq < lseq) then
    lowest, lms, lseq = bound, ms, seq
  end
end
if lms == 0 and lseq == 0 then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', lowest)
";

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

/// Time between two scans for idle entries once the pending list was read
/// through: a tenth of the idle time, between 100 ms and 1 s (one XAUTOCLAIM
/// of at most a batch of entries each).
fn claim_scan_interval(claim_idle: Duration) -> Duration {
    (claim_idle / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

fn is_nogroup(err: &RedisError) -> bool {
    err.code() == Some("NOGROUP")
}

/// How many fields a record has.
const RECORD_FIELDS: usize = 14;

/// The record's fields as written to the hash and the streams. An absent
/// payload is an empty string; a present one is its JSON.
fn record(event: &Event) -> [(&'static str, String); RECORD_FIELDS] {
    let payload = event
        .payload
        .as_ref()
        .map(|p| serde_json::Value::Object(p.clone()).to_string())
        .unwrap_or_default();
    [
        ("id", event.id.to_string()),
        ("user_id", event.user_id.clone()),
        ("description", event.description.clone()),
        ("status", event.status.as_str().to_owned()),
        ("created_at", to_micros(event.created_at).to_string()),
        ("updated_at", to_micros(event.updated_at).to_string()),
        ("category", event.category.clone()),
        ("type", event.event_type.clone()),
        ("session_id", event.session_id.clone()),
        ("payload", payload),
        ("occurred_at", to_micros(event.occurred_at).to_string()),
        ("request_id", event.request_id.clone()),
        ("source", event.source.clone()),
        (
            "traceparent",
            event.traceparent.map(|t| t.to_string()).unwrap_or_default(),
        ),
    ]
}

/// The result of one change of the status script.
fn status_outcome(change: StatusChange, outcome: &str, detail: Value) -> Result<Event> {
    match outcome {
        "missing" => Err(Error::NotFound(change.id)),
        "forbidden" => {
            let current = string(detail)?;
            let from = EventStatus::parse(&current)
                .ok_or_else(|| Error::Internal(format!("stored status {current:?} is unknown")))?;
            Err(Error::InvalidTransition {
                from,
                to: change.status,
            })
        }
        "same" | "changed" => parse_record(&flat_map(detail)?),
        other => Err(Error::Internal(format!(
            "unexpected script outcome {other:?}"
        ))),
    }
}

/// Reads a record back from its fields.
fn parse_record(fields: &HashMap<String, String>) -> Result<Event> {
    let get = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| Error::Internal(format!("stored event lacks field {name}")))
    };
    let bad = |name: &str| Error::Internal(format!("stored event has a malformed {name}"));
    let micros = |name: &str| {
        get(name)?
            .parse::<i64>()
            .map(from_micros)
            .map_err(|_| bad(name))
    };
    let optional = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let payload = match fields.get("payload").map(String::as_str) {
        None | Some("") => None,
        Some(json) => match serde_json::from_str(json) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            _ => return Err(bad("payload")),
        },
    };
    let created_at = micros("created_at")?;
    Ok(Event {
        id: Uuid::try_parse(get("id")?).map_err(|_| bad("id"))?,
        user_id: get("user_id")?.clone(),
        description: get("description")?.clone(),
        status: EventStatus::parse(get("status")?).ok_or_else(|| bad("status"))?,
        created_at,
        updated_at: micros("updated_at")?,
        occurred_at: if fields.contains_key("occurred_at") {
            micros("occurred_at")?
        } else {
            created_at
        },
        category: optional("category"),
        event_type: optional("type"),
        session_id: optional("session_id"),
        payload,
        request_id: optional("request_id"),
        source: optional("source"),
        traceparent: fields
            .get("traceparent")
            .and_then(|t| TraceParent::parse(t)),
    })
}

fn string(value: Value) -> Result<String> {
    ::redis::from_redis_value(value).map_err(|e| Error::Internal(format!("redis reply: {e}")))
}

/// Reads a flat `[field, value, ...]` array (HGETALL in a script) into a map.
fn flat_map(value: Value) -> Result<HashMap<String, String>> {
    let Value::Array(items) = value else {
        return Err(Error::Internal("redis reply: expected an array".into()));
    };
    let mut items = items.into_iter();
    let mut map = HashMap::new();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        map.insert(string(k)?, string(v)?);
    }
    Ok(map)
}

/// A stream entry's single field: the record's fields as one JSON object.
/// One field instead of thirteen keeps XADD and XREAD cheap for Redis.
fn entry_json(fields: &[(&'static str, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn stream_entry_event(entry: StreamId) -> Result<(String, Event)> {
    let json = entry
        .map
        .get("event")
        .cloned()
        .ok_or_else(|| Error::Internal(format!("stream entry {} has no event", entry.id)))?;
    let fields: HashMap<String, String> = serde_json::from_str(&string(json)?)
        .map_err(|e| Error::Internal(format!("stream entry {}: {e}", entry.id)))?;
    Ok((entry.id, parse_record(&fields)?))
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

/// Most index entries one ListEvents call reads before it returns a short page.
const LIST_SCAN_LIMIT: usize = 10_000;

impl RedisBackend {
    /// The index to walk for `query`: the smallest of those its equality
    /// filters name (so a query never scans every event when it has one).
    async fn most_selective_index(&self, query: &ListQuery) -> Result<String> {
        let mut candidates = Vec::new();
        for (kind, value) in [
            ("user", query.user_id.as_str()),
            ("session", query.session_id.as_str()),
            ("category", query.category.as_str()),
            ("type", query.event_type.as_str()),
            ("status", query.status.map_or("", EventStatus::as_str)),
        ] {
            if !value.is_empty() {
                candidates.push(self.keys.index(kind, value));
            }
        }
        if candidates.len() < 2 {
            return Ok(candidates.pop().unwrap_or_else(|| self.keys.index_all()));
        }
        let mut sizes = ::redis::pipe();
        for key in &candidates {
            sizes.zcard(key);
        }
        let sizes: Vec<u64> = sizes
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        let smallest = sizes
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| **n)
            .map_or(0, |(i, _)| i);
        Ok(candidates.swap_remove(smallest))
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

#[async_trait]
impl EventStore for RedisBackend {
    #[instrument(skip_all, fields(n = events.len()))]
    async fn create_many(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = events
            .iter()
            .map(|e| match e.request_id() {
                "" => String::new(),
                request_id => self.keys.request(e.source(), request_id),
            })
            .collect();
        let events: Vec<Event> = events.into_iter().map(NewEvent::into_event).collect();
        let mut invocation = self.create.prepare_invoke();
        invocation
            .key(self.keys.events())
            .key(self.keys.notifications())
            .arg(self.notifications_max_len)
            .arg(RECORD_FIELDS * 2)
            .arg(self.request_id_window.as_secs().max(1))
            .arg(&self.keys.prefix);
        for (event, request_key) in events.iter().zip(&keys) {
            let fields = record(event);
            invocation
                .key(self.keys.event(event.id))
                .arg(request_key)
                .arg(entry_json(&fields));
            for (field, value) in fields {
                invocation.arg(field).arg(value);
            }
        }
        let priors: Vec<String> = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        // Repeated requests answer with the events that first took their
        // keys, all read in one round trip.
        let mut repeats = ::redis::pipe();
        let mut repeated = 0;
        for prior in priors.iter().filter(|p| !p.is_empty()) {
            let id = Uuid::try_parse(prior)
                .map_err(|_| Error::Internal(format!("idempotency key holds {prior:?}")))?;
            repeats.hgetall(self.keys.event(id));
            repeated += 1;
        }
        let firsts: Vec<HashMap<String, String>> = if repeated == 0 {
            Vec::new()
        } else {
            repeats
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?
        };
        let mut firsts = firsts.into_iter();
        events
            .into_iter()
            .zip(priors)
            .map(|(event, prior)| {
                if prior.is_empty() {
                    return Ok(event);
                }
                match firsts.next() {
                    Some(fields) if !fields.is_empty() => parse_record(&fields),
                    _ => Err(Error::Internal(format!(
                        "the event {prior} of a repeated request id is gone"
                    ))),
                }
            })
            .collect()
    }

    #[instrument(skip_all)]
    async fn get(&self, id: Uuid) -> Result<Event> {
        let fields: HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(self.keys.event(id))
            .await
            .map_err(redis_error)?;
        if fields.is_empty() {
            return Err(Error::NotFound(id));
        }
        parse_record(&fields)
    }

    #[instrument(skip_all, fields(n = changes.len()))]
    async fn update_status_many(&self, changes: &[StatusChange]) -> Result<Vec<Result<Event>>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.update_status.prepare_invoke();
        invocation
            .key(self.keys.events())
            .key(self.keys.notifications())
            .arg(to_micros(now()))
            .arg(self.notifications_max_len)
            .arg(&self.keys.prefix);
        for change in changes {
            let sources: Vec<&str> = change.status.sources().map(EventStatus::as_str).collect();
            invocation
                .key(self.keys.event(change.id))
                .arg(change.status.as_str())
                .arg(if change.status.enqueues() { "1" } else { "0" })
                .arg(sources.join(","))
                .arg(change.trace.map(|t| t.to_string()).unwrap_or_default());
        }
        let outcomes: Vec<(String, Value)> = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        if outcomes.len() != changes.len() {
            return Err(Error::Internal(format!(
                "status script answered {} outcomes for {} changes",
                outcomes.len(),
                changes.len()
            )));
        }
        Ok(changes
            .iter()
            .zip(outcomes)
            .map(|(change, (outcome, detail))| status_outcome(*change, &outcome, detail))
            .collect())
    }

    #[instrument(skip_all)]
    async fn list(&self, query: &ListQuery) -> Result<Page> {
        let index = self.most_selective_index(query).await?;
        let (mut min, mut max) = (
            query
                .after_micros
                .map_or("-inf".to_owned(), |a| a.to_string()),
            query
                .before_micros
                .map_or("+inf".to_owned(), |b| format!("({b}")),
        );
        // Resume at the cursor's score; ties before it are skipped below.
        if let Some(cursor) = query.after {
            let at = cursor.occurred_micros.to_string();
            match query.descending {
                false
                    if query
                        .after_micros
                        .is_none_or(|a| a <= cursor.occurred_micros) =>
                {
                    min = at
                }
                true if query
                    .before_micros
                    .is_none_or(|b| b > cursor.occurred_micros) =>
                {
                    max = at
                }
                _ => {}
            }
        }
        let chunk = (query.page_size + 1).clamp(64, 1000);
        let mut events = Vec::with_capacity(query.page_size + 1);
        let (mut offset, mut scanned, mut last_scanned) = (0, 0, None);
        loop {
            let mut range = ::redis::cmd("ZRANGE");
            range.arg(&index);
            if query.descending {
                range.arg(&max).arg(&min).arg("BYSCORE").arg("REV");
            } else {
                range.arg(&min).arg(&max).arg("BYSCORE");
            }
            range.arg("LIMIT").arg(offset).arg(chunk).arg("WITHSCORES");
            let members: Vec<(String, f64)> = range
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            let exhausted = members.len() < chunk;
            offset += members.len();
            let positions: Vec<Position> = members
                .into_iter()
                .filter_map(|(id, score)| {
                    Some(Position {
                        occurred_micros: score as i64,
                        id: Uuid::try_parse(&id).ok()?,
                    })
                })
                .filter(|p| query.is_past_cursor(*p))
                .collect();
            scanned += positions.len();
            last_scanned = positions.last().copied().or(last_scanned);
            let mut records: Vec<HashMap<String, String>> = Vec::new();
            if !positions.is_empty() {
                let mut fetch = ::redis::pipe();
                for p in &positions {
                    fetch.hgetall(self.keys.event(p.id));
                }
                records = fetch
                    .query_async(&mut self.conn.clone())
                    .await
                    .map_err(redis_error)?;
            }
            for record in records.iter().filter(|r| !r.is_empty()) {
                let event = parse_record(record)?;
                if query.matches(&event) {
                    events.push(event);
                    if events.len() > query.page_size {
                        events.truncate(query.page_size);
                        let next = events.last().map(Position::of);
                        return Ok(Page { events, next });
                    }
                }
            }
            if exhausted {
                return Ok(Page { events, next: None });
            }
            if scanned >= LIST_SCAN_LIMIT {
                // Bound one call's work: a short page, resumed from here.
                return Ok(Page {
                    events,
                    next: last_scanned,
                });
            }
        }
    }

    async fn ping(&self) -> Result<()> {
        let _: String = ::redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn dead_letters(&self, cursor: &str, max: usize) -> Result<Vec<DeadLetter>> {
        let reply: StreamRangeReply = self
            .conn
            .clone()
            .xrange_count(self.keys.dead(), format!("({cursor}"), "+", max.max(1))
            .await
            .map_err(redis_error)?;
        reply
            .ids
            .into_iter()
            .map(|entry| {
                let mut fields = HashMap::new();
                for (name, value) in entry.map {
                    fields.insert(name, string(value)?);
                }
                let take = |fields: &mut HashMap<String, String>, name: &str| {
                    fields.remove(name).unwrap_or_default()
                };
                let reason = take(&mut fields, "reason");
                let deliveries = take(&mut fields, "deliveries").parse().unwrap_or(0);
                let entry_id = take(&mut fields, "entry_id");
                Ok(DeadLetter {
                    delivery: Delivery {
                        entry_id,
                        event: parse_record(&fields)?,
                        deliveries,
                    },
                    id: entry.id,
                    reason,
                })
            })
            .collect()
    }

    async fn remove_dead_letters(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let _: u64 = self
            .conn
            .clone()
            .xdel(self.keys.dead(), ids)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn remove_older_than(
        &self,
        cutoff: SystemTime,
        skip: usize,
        max: usize,
    ) -> Result<Sweep> {
        let (removed, kept, scanned): (u64, u64, u64) = self
            .remove_older_than
            .arg(&self.keys.prefix)
            .arg(to_micros(cutoff))
            .arg(skip)
            .arg(max.max(1))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(Sweep {
            removed,
            kept,
            scanned,
        })
    }

    async fn trim_dead_letters(&self, cutoff: SystemTime) -> Result<u64> {
        self.trim_before(&self.keys.dead(), cutoff).await
    }

    async fn status_counts(&self) -> Result<StatusCounts> {
        let stored: HashMap<String, i64> = self
            .conn
            .clone()
            .hgetall(self.keys.stats())
            .await
            .map_err(redis_error)?;
        let mut counts = StatusCounts::default();
        for status in EventStatus::ALL {
            let n = stored.get(status.as_str()).copied().unwrap_or(0);
            *counts.slot(status) = u64::try_from(n).unwrap_or(0);
        }
        Ok(counts)
    }
}

#[async_trait]
impl WorkQueue for RedisBackend {
    async fn trim_acknowledged(&self) -> Result<u64> {
        self.trim_acknowledged
            .key(self.keys.events())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }

    async fn stats(&self) -> Result<QueueStats> {
        let (length, dead_letters): (u64, u64) = ::redis::pipe()
            .xlen(self.keys.events())
            .xlen(self.keys.dead())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        let groups: Result<Vec<HashMap<String, Value>>, RedisError> = ::redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(self.keys.events())
            .query_async(&mut self.conn.clone())
            .await;
        let groups = match groups {
            Ok(groups) => groups,
            // No queue yet: nothing waits.
            Err(e) if e.to_string().contains("no such key") => Vec::new(),
            Err(e) => return Err(redis_error(e)),
        };
        let group = groups.iter().find(
            |g| matches!(g.get("name"), Some(Value::BulkString(name)) if name == GROUP.as_bytes()),
        );
        let int = |name: &str| match group.and_then(|g| g.get(name)) {
            Some(Value::Int(n)) => u64::try_from(*n).ok(),
            _ => None,
        };
        Ok(QueueStats {
            length,
            pending: int("pending").unwrap_or(0),
            // Without the group, every entry waits.
            lag: if group.is_some() {
                int("lag")
            } else {
                Some(length)
            },
            dead_letters,
        })
    }

    fn consumer(&self, config: ConsumerConfig) -> Arc<dyn Consumer> {
        Arc::new(RedisConsumer {
            client: self.client.clone(),
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            config,
            state: Mutex::new(ConsumerState {
                reader: None,
                own_cursor: Some("0".into()),
                claim_cursor: "0-0".into(),
                next_claim: Instant::now(),
                group_ready: false,
            }),
        })
    }
}

struct RedisConsumer {
    client: Client,
    conn: ConnectionManager,
    keys: Keys,
    config: ConsumerConfig,
    /// Held across the blocking read: one consumer reads from one task.
    state: Mutex<ConsumerState>,
}

struct ConsumerState {
    /// The connection for blocking reads; dropped after an error and remade.
    reader: Option<MultiplexedConnection>,
    /// Where the scan of this consumer's own pending entries is; `None` once done.
    own_cursor: Option<String>,
    /// Where the `XAUTOCLAIM` scan is.
    claim_cursor: String,
    /// When to scan for idle entries again.
    next_claim: Instant,
    /// Whether the group is known to exist.
    group_ready: bool,
}

impl RedisConsumer {
    async fn ensure_group(&self, state: &mut ConsumerState) -> Result<()> {
        if state.group_ready {
            return Ok(());
        }
        let created: Result<(), RedisError> = self
            .conn
            .clone()
            .xgroup_create_mkstream(self.keys.events(), GROUP, "0")
            .await;
        match created {
            Ok(()) => info!(group = GROUP, stream = %self.keys.events(), "created consumer group"),
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(redis_error(e)),
        }
        state.group_ready = true;
        Ok(())
    }

    /// Adds delivery counts (from `XPENDING`) to entries just handed to us.
    async fn with_counts(&self, entries: Vec<StreamId>) -> Result<Vec<Delivery>> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        let pending: StreamPendingCountReply = self
            .conn
            .clone()
            .xpending_consumer_count(
                self.keys.events(),
                GROUP,
                &first.id,
                &last.id,
                // Other entries of ours may lie in the same id range.
                entries.len() * 4 + 100,
                &self.config.name,
            )
            .await
            .map_err(redis_error)?;
        let counts: HashMap<String, u64> = pending
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered as u64))
            .collect();
        self.deliveries(entries, |id| counts.get(id).copied().unwrap_or(1))
    }

    fn deliveries(
        &self,
        entries: Vec<StreamId>,
        count: impl Fn(&str) -> u64,
    ) -> Result<Vec<Delivery>> {
        entries
            .into_iter()
            .map(|entry| {
                let deliveries = count(&entry.id);
                let (entry_id, event) = stream_entry_event(entry)?;
                Ok(Delivery {
                    entry_id,
                    event,
                    deliveries,
                })
            })
            .collect()
    }

    async fn read_group(
        &self,
        state: &mut ConsumerState,
        id: &str,
        max: usize,
        block: bool,
    ) -> Result<Vec<StreamId>> {
        let mut options = StreamReadOptions::default()
            .group(GROUP, &self.config.name)
            .count(max);
        if block {
            options = options.block(self.config.block.as_millis() as usize);
        }
        let reply: Result<Option<StreamReadReply>, RedisError> = if block {
            if state.reader.is_none() {
                state.reader = Some(blocking_connection(&self.client, self.config.block).await?);
            }
            let reader = state
                .reader
                .as_mut()
                .ok_or_else(|| Error::Internal("no reader".into()))?;
            reader
                .xread_options(&[self.keys.events()], &[id], &options)
                .await
        } else {
            self.conn
                .clone()
                .xread_options(&[self.keys.events()], &[id], &options)
                .await
        };
        match reply {
            Ok(reply) => Ok(reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .collect()),
            Err(e) => {
                if is_nogroup(&e) {
                    warn!(group = GROUP, "consumer group missing, recreating it");
                    state.group_ready = false;
                } else if block {
                    state.reader = None;
                }
                Err(redis_error(e))
            }
        }
    }

    async fn receive_once(&self, state: &mut ConsumerState, max: usize) -> Result<Vec<Delivery>> {
        if let Some(cursor) = state.own_cursor.clone() {
            let entries = self.read_group(state, &cursor, max, false).await?;
            match entries.last() {
                Some(last) => {
                    state.own_cursor = Some(last.id.clone());
                    return self.with_counts(entries).await;
                }
                None => state.own_cursor = None,
            }
        }
        if Instant::now() >= state.next_claim {
            let claimed = self.claim_idle(state, max).await?;
            if !claimed.is_empty() {
                return self.with_counts(claimed).await;
            }
        }
        let entries = self.read_group(state, ">", max, true).await?;
        self.deliveries(entries, |_| 1)
    }

    async fn claim_idle(&self, state: &mut ConsumerState, max: usize) -> Result<Vec<StreamId>> {
        let options = StreamAutoClaimOptions::default().count(max);
        let reply: Result<::redis::streams::StreamAutoClaimReply, RedisError> = self
            .conn
            .clone()
            .xautoclaim_options(
                self.keys.events(),
                GROUP,
                &self.config.name,
                self.config.claim_idle.as_millis() as u64,
                &state.claim_cursor,
                options,
            )
            .await;
        let reply = reply.map_err(|e| {
            if is_nogroup(&e) {
                state.group_ready = false;
            }
            redis_error(e)
        })?;
        if reply.next_stream_id == "0-0" {
            // Scanned the whole PEL: look again soon, so that an entry is
            // reclaimed within about a second (plus a blocking read) of
            // reaching the idle time.
            state.next_claim = Instant::now() + claim_scan_interval(self.config.claim_idle);
        }
        state.claim_cursor = reply.next_stream_id;
        Ok(reply.claimed)
    }
}

#[async_trait]
impl Consumer for RedisConsumer {
    #[instrument(skip_all, fields(consumer = %self.config.name))]
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>> {
        let mut state = self.state.lock().await;
        self.ensure_group(&mut state).await?;
        match self.receive_once(&mut state, max.max(1)).await {
            // The group vanished (Redis restarted without its data): recreate it and go on.
            Err(_) if !state.group_ready => {
                self.ensure_group(&mut state).await?;
                self.receive_once(&mut state, max.max(1)).await
            }
            result => result,
        }
    }

    #[instrument(skip_all)]
    async fn ack(&self, entry_ids: &[String]) -> Result<()> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let _: i64 = self
            .conn
            .clone()
            .xack(self.keys.events(), GROUP, entry_ids)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let mut fields = record(&delivery.event).to_vec();
        fields.push(("reason", reason.to_owned()));
        fields.push(("deliveries", delivery.deliveries.to_string()));
        fields.push(("entry_id", delivery.entry_id.clone()));
        let _: () = ::redis::pipe()
            .atomic()
            .xadd(self.keys.dead(), "*", &fields)
            .ignore()
            .xack(self.keys.events(), GROUP, &[&delivery.entry_id])
            .ignore()
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn pending_by_consumer(&self) -> Result<Vec<(String, u64)>> {
        let reply: Value = ::redis::cmd("XPENDING")
            .arg(self.keys.events())
            .arg(GROUP)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        // [count, first, last, [[consumer, count], ...] or nil]
        let Value::Array(mut parts) = reply else {
            return Err(Error::Internal(
                "redis reply: XPENDING is not an array".into(),
            ));
        };
        let consumers = if parts.len() == 4 {
            parts.swap_remove(3)
        } else {
            Value::Nil
        };
        let pairs: Vec<(String, String)> = match consumers {
            Value::Nil => Vec::new(),
            other => ::redis::from_redis_value(other)
                .map_err(|e| Error::Internal(format!("redis reply: {e}")))?,
        };
        pairs
            .into_iter()
            .map(|(name, count)| {
                let count = count
                    .parse()
                    .map_err(|_| Error::Internal("redis reply: bad pending count".into()))?;
                Ok((name, count))
            })
            .collect()
    }
}

#[async_trait]
impl NotificationFeed for RedisBackend {
    async fn latest_cursor(&self) -> Result<String> {
        let newest: Vec<(String, HashMap<String, Value>)> = ::redis::cmd("XREVRANGE")
            .arg(self.keys.notifications())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(newest
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id))
    }

    #[instrument(skip_all)]
    async fn read_after(
        &self,
        cursor: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Notification>> {
        let mut guard = self.feed_conn.lock().await;
        if guard.is_none() {
            *guard = Some(blocking_connection(&self.client, block).await?);
        }
        let conn = guard
            .as_mut()
            .ok_or_else(|| Error::Internal("no feed connection".into()))?;
        let options = StreamReadOptions::default()
            .count(max.max(1))
            .block(block.as_millis() as usize);
        let reply: Result<Option<StreamReadReply>, RedisError> = conn
            .xread_options(&[self.keys.notifications()], &[cursor], &options)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                *guard = None;
                return Err(redis_error(e));
            }
        };
        notifications(reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids))
    }

    async fn read_range(&self, cursor: &str, max: usize) -> Result<Vec<Notification>> {
        let reply: StreamRangeReply = self
            .conn
            .clone()
            .xrange_count(
                self.keys.notifications(),
                format!("({cursor}"),
                "+",
                max.max(1),
            )
            .await
            .map_err(redis_error)?;
        notifications(reply.ids)
    }

    async fn history(&self) -> Result<History> {
        let info: Result<HashMap<String, Value>, RedisError> = ::redis::cmd("XINFO")
            .arg("STREAM")
            .arg(self.keys.notifications())
            .query_async(&mut self.conn.clone())
            .await;
        let info = match info {
            Ok(info) => info,
            // No log yet: nothing was ever trimmed.
            Err(e) if e.to_string().contains("no such key") => HashMap::new(),
            Err(e) => return Err(redis_error(e)),
        };
        let text = |name: &str| match info.get(name) {
            Some(Value::BulkString(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            Some(Value::SimpleString(text)) => Some(text.clone()),
            _ => None,
        };
        let int = |name: &str| match info.get(name) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let first = match info.get("first-entry") {
            Some(Value::Array(entry)) => match entry.first() {
                Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).parse().ok(),
                _ => None,
            },
            _ => None,
        };
        let last = text("last-generated-id").unwrap_or_else(|| "0-0".to_owned());
        // Trimming does not move Redis's max-deleted-entry-id: what is gone is
        // told by how many entries were ever added against how many are left
        // (Redis 7; before it, anything before the first entry counts as gone).
        let length = int("length").unwrap_or(0);
        let trimmed_through = match (int("entries-added"), first) {
            (Some(added), _) if added == length => "0-0".to_owned(),
            (_, Some(first)) => Cursor::predecessor(first).to_string(),
            (Some(_), None) => last.clone(),
            (None, None) => "0-0".to_owned(),
        };
        Ok(History {
            trimmed_through,
            last,
        })
    }

    async fn trim_older_than(&self, age: Duration) -> Result<()> {
        let cutoff = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(std::time::UNIX_EPOCH);
        self.trim_before(&self.keys.notifications(), cutoff).await?;
        Ok(())
    }
}

/// The notifications of stream entries.
fn notifications(entries: impl IntoIterator<Item = StreamId>) -> Result<Vec<Notification>> {
    entries
        .into_iter()
        .map(|entry| {
            let (cursor, event) = stream_entry_event(entry)?;
            Ok(Notification { cursor, event })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_entries_are_looked_for_often_enough_to_be_reclaimed_on_time() {
        assert_eq!(
            claim_scan_interval(Duration::from_secs(30)),
            Duration::from_secs(1)
        );
        assert_eq!(
            claim_scan_interval(Duration::from_secs(5)),
            Duration::from_millis(500)
        );
        assert_eq!(
            claim_scan_interval(Duration::from_millis(200)),
            Duration::from_millis(100)
        );
    }
}
