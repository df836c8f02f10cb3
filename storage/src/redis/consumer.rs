//! A member of the consumer group on Redis: it reads every partition's queue
//! at once (its own pending entries first after a start, then entries idle
//! too long with anyone, then new ones), buffers what one read brought
//! beyond a batch, and acknowledges and dead-letters per partition.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::Duration,
};

use ::redis::{
    AsyncCommands, Client, RedisError, Value,
    aio::MultiplexedConnection,
    streams::{StreamAutoClaimOptions, StreamPendingCountReply, StreamReadOptions},
};
use async_trait::async_trait;
use futures_util::future::try_join_all;
use tokio::{sync::Mutex, time::Instant};
use tracing::{info, instrument, warn};

use super::{
    Conn, Keys, MAX_POLL, RedisBackend, blocking_connection, read_records,
    record::{EntryRef, entry_id_of, from_value},
    redis_error,
    stream::{Entry, autoclaim_reply, read_reply},
};
use crate::{Consumer, ConsumerOptions, Delivery, GROUP};
use herald::{
    cursor::{EntryId, PartitionEntry},
    error::{Error, Result},
    partition::{Partition, Partitions},
};

/// Time between two scans for idle entries once the pending list was read
/// through: a tenth of the idle time, between 100 ms and 1 s (one XAUTOCLAIM
/// of at most a batch of entries each).
fn claim_scan_interval(claim_idle: Duration) -> Duration {
    (claim_idle / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

fn is_nogroup(err: &RedisError) -> bool {
    err.code() == Some("NOGROUP")
}

/// One member of the group on every partition's queue.
/// Claims entries again for the consumer that holds them (KEYS: the
/// stream; ARGV: the group, the consumer, the entry ids), leaving those
/// another consumer holds now.
static TOUCH: std::sync::LazyLock<::redis::Script> = std::sync::LazyLock::new(|| {
    ::redis::Script::new(
        "for i = 3, #ARGV do \
           if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2]) > 0 then \
             redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID') \
           end \
         end \
         return 0",
    )
});

pub(super) struct RedisConsumer {
    /// Makes the blocking reader's connection; `None` on a cluster.
    client: Option<Client>,
    conn: Conn,
    keys: Keys,
    partitions: Partitions,
    config: ConsumerOptions,
    /// Held across the blocking read: one consumer reads from one task.
    state: Mutex<ConsumerState>,
}

struct ConsumerState {
    /// The connection for blocking reads; dropped after an error and remade.
    reader: Option<MultiplexedConnection>,
    /// Per partition, where the scan of this consumer's own pending entries
    /// is (`None` once done there); `None` once done everywhere.
    own: Option<Vec<Option<EntryId>>>,
    /// Per partition, where its `XAUTOCLAIM` scan is.
    claim: Vec<EntryId>,
    /// The partition the next scan for idle entries starts at.
    claim_from: usize,
    /// When to scan for idle entries again.
    next_claim: Instant,
    /// Whether the groups are known to exist.
    group_ready: bool,
    /// Entries read beyond what the last receive asked for, handed out
    /// first (they are this consumer's, pending, already).
    buffer: VecDeque<Delivery>,
    /// How many partitions had new entries at the last read: each is asked
    /// for a share of the batch, so that one read takes about a batch and
    /// every busy partition gets its turn.
    busy: usize,
}

impl RedisConsumer {
    /// A member of the group named by `config`, reading every partition of
    /// `backend`.
    pub(super) fn new(backend: &RedisBackend, config: ConsumerOptions) -> Self {
        let count = backend.partitions.count();
        RedisConsumer {
            client: backend.client.clone(),
            conn: backend.conn.clone(),
            keys: backend.keys.clone(),
            partitions: backend.partitions,
            config,
            state: Mutex::new(ConsumerState {
                reader: None,
                own: Some(vec![Some(EntryId::START); count]),
                claim: vec![EntryId::START; count],
                claim_from: 0,
                next_claim: Instant::now(),
                group_ready: false,
                buffer: VecDeque::new(),
                busy: 1,
            }),
        }
    }

    async fn ensure_group(&self, state: &mut ConsumerState) -> Result<()> {
        if state.group_ready {
            return Ok(());
        }
        let mut created = 0;
        for stream in self.partitions.all().map(|p| self.keys.events(p)) {
            let made: Result<(), RedisError> = self
                .conn
                .clone()
                .xgroup_create_mkstream(stream, GROUP, "0")
                .await;
            match made {
                Ok(()) => created += 1,
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(redis_error(e)),
            }
        }
        // One line for all the partitions' queues, not one each.
        if created > 0 {
            info!(
                group = GROUP,
                created,
                partitions = self.partitions.count(),
                "created the consumer group"
            );
        }
        state.group_ready = true;
        Ok(())
    }

    /// The partition of a stream key in a reply.
    fn partition_of(&self, stream: &str) -> Result<Partition> {
        self.keys
            .partition_of_stream(stream)
            .ok_or_else(|| Error::Internal(format!("redis answered for stream {stream:?}")))
    }

    /// Deliveries of entries of partition `p`, with their delivery counts,
    /// their events read from the records. An entry whose record is gone
    /// (its event settled and removed by retention) has nothing left to
    /// deliver: it is acknowledged.
    async fn deliveries(
        &self,
        p: Partition,
        entries: Vec<Entry>,
        count: impl Fn(&str) -> u64,
    ) -> Result<Vec<Delivery>> {
        let counts: Vec<u64> = entries.iter().map(|e| count(&e.id)).collect();
        let refs = entries
            .into_iter()
            .map(EntryRef::of)
            .collect::<Result<Vec<_>>>()?;
        let records = read_records(&self.conn, &self.keys, p, refs.iter().map(|r| r.id)).await?;
        let mut out = Vec::with_capacity(refs.len());
        let mut gone = Vec::new();
        for ((r, record), deliveries) in refs.iter().zip(records).zip(counts) {
            let entry_id = PartitionEntry {
                partition: p,
                id: r.entry,
            };
            match r.event_delivered(record.as_deref())? {
                Some((event, delivered)) => out.push(Delivery {
                    entry_id,
                    event,
                    deliveries,
                    delivered,
                }),
                None => gone.push(entry_id),
            }
        }
        if !gone.is_empty() {
            warn!(
                entries = gone.len(),
                "queue entries of removed events acknowledged"
            );
            self.ack(&gone).await?;
        }
        Ok(out)
    }

    /// Adds delivery counts (from `XPENDING`) to entries of partition `p`
    /// just handed to us.
    async fn with_counts(&self, p: Partition, entries: Vec<Entry>) -> Result<Vec<Delivery>> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        let pending: StreamPendingCountReply = self
            .conn
            .clone()
            .xpending_consumer_count(
                self.keys.events(p),
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
        self.deliveries(p, entries, |id| counts.get(id).copied().unwrap_or(1))
            .await
    }

    /// One `XREADGROUP` over the partitions `from` names (with the id to
    /// read after in each); per partition, the entries read.
    async fn read_group(
        &self,
        state: &mut ConsumerState,
        from: &[(Partition, String)],
        count: usize,
        block: bool,
    ) -> Result<Vec<(Partition, Vec<Entry>)>> {
        let mut options = StreamReadOptions::default()
            .group(GROUP, &self.config.name)
            .count(count.max(1));
        if block {
            options = options.block(self.config.block.as_millis() as usize);
        }
        let keys: Vec<&str> = from.iter().map(|(p, _)| self.keys.events(*p)).collect();
        let ids: Vec<&str> = from.iter().map(|(_, id)| id.as_str()).collect();
        let client = match (&self.client, block) {
            (Some(client), true) => Some(client),
            (Some(_), false) => None,
            // A cluster: one command per partition (each in its own slot),
            // all at once, never blocking.
            (None, _) => return self.read_each(state, from, count).await,
        };
        let reply: Result<Value, RedisError> = if let Some(client) = client {
            if state.reader.is_none() {
                state.reader = Some(blocking_connection(client, self.config.block).await?);
            }
            let reader = state
                .reader
                .as_mut()
                .ok_or_else(|| Error::Internal("no reader".into()))?;
            reader.xread_options(&keys, &ids, &options).await
        } else {
            self.conn.clone().xread_options(&keys, &ids, &options).await
        };
        match reply {
            Ok(reply) => read_reply(reply)?
                .into_iter()
                .filter(|(_, entries)| !entries.is_empty())
                .map(|(key, entries)| Ok((self.partition_of(&key)?, entries)))
                .collect(),
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

    /// [`RedisConsumer::read_group`] on a cluster: one non-blocking
    /// `XREADGROUP` per partition, all at once.
    async fn read_each(
        &self,
        state: &mut ConsumerState,
        from: &[(Partition, String)],
        count: usize,
    ) -> Result<Vec<(Partition, Vec<Entry>)>> {
        let reads = from.iter().map(|(p, id)| {
            let options = StreamReadOptions::default()
                .group(GROUP, &self.config.name)
                .count(count.max(1));
            async move {
                let reply: Value = self
                    .conn
                    .clone()
                    .xread_options(&[self.keys.events(*p)], &[id], &options)
                    .await?;
                Ok::<_, RedisError>((*p, reply))
            }
        });
        match try_join_all(reads).await {
            Ok(replies) => {
                let mut read = Vec::new();
                for (p, reply) in replies {
                    let entries: Vec<Entry> = read_reply(reply)?
                        .into_iter()
                        .flat_map(|(_, entries)| entries)
                        .collect();
                    if !entries.is_empty() {
                        read.push((p, entries));
                    }
                }
                Ok(read)
            }
            Err(e) => {
                if is_nogroup(&e) {
                    warn!(group = GROUP, "consumer group missing, recreating it");
                    state.group_ready = false;
                }
                Err(redis_error(e))
            }
        }
    }

    /// This consumer's own pending entries (left by an earlier run under
    /// its name), once after start.
    async fn own_pending(&self, state: &mut ConsumerState, max: usize) -> Result<Vec<Delivery>> {
        let Some(own) = state.own.clone() else {
            return Ok(Vec::new());
        };
        let from: Vec<(Partition, String)> = self
            .partitions
            .all()
            .zip(&own)
            .filter_map(|(p, at)| at.map(|at| (p, at.to_string())))
            .collect();
        let read = self.read_group(state, &from, max, false).await?;
        let mut next: Vec<Option<EntryId>> = vec![None; own.len()];
        for (p, entries) in &read {
            if let Some(last) = entries.last() {
                next[p.index()] = Some(entry_id_of(&last.id)?);
            }
        }
        let out = try_join_all(
            read.into_iter()
                .map(|(p, entries)| self.with_counts(p, entries)),
        )
        .await?;
        state.own = next.iter().any(Option::is_some).then_some(next);
        Ok(out.into_iter().flatten().collect())
    }

    /// Entries idle longer than the claim time with any consumer, looked
    /// for partition after partition from where the last scan left off.
    async fn claim_idle(&self, state: &mut ConsumerState, max: usize) -> Result<Vec<Delivery>> {
        let count = self.partitions.count();
        for i in 0..count {
            let index = (state.claim_from + i) % count;
            let Some(p) = self.partitions.get(index) else {
                continue;
            };
            let options = StreamAutoClaimOptions::default().count(max);
            let reply: Result<Value, RedisError> = self
                .conn
                .clone()
                .xautoclaim_options(
                    self.keys.events(p),
                    GROUP,
                    &self.config.name,
                    self.config.claim_idle.as_millis() as u64,
                    state.claim[index].to_string(),
                    options,
                )
                .await;
            let reply = reply.map_err(|e| {
                if is_nogroup(&e) {
                    state.group_ready = false;
                }
                redis_error(e)
            })?;
            let (next, claimed) = autoclaim_reply(reply)?;
            state.claim[index] = entry_id_of(&next)?;
            if !claimed.is_empty() {
                state.claim_from = index;
                return self.with_counts(p, claimed).await;
            }
        }
        // Scanned every partition: look again soon, so that an entry is
        // reclaimed within about a second (plus a blocking read) of
        // reaching the idle time.
        state.next_claim = Instant::now() + claim_scan_interval(self.config.claim_idle);
        Ok(Vec::new())
    }

    /// New entries of every partition, waiting up to the block time.
    async fn new_entries(&self, state: &mut ConsumerState, max: usize) -> Result<Vec<Delivery>> {
        let from: Vec<(Partition, String)> =
            self.partitions.all().map(|p| (p, ">".to_owned())).collect();
        let share = max.div_ceil(state.busy.max(1));
        let read = if self.client.is_some() {
            self.read_group(state, &from, share, true).await?
        } else {
            // A cluster: poll until something comes or the block time ends.
            let deadline = Instant::now() + self.config.block;
            let mut wait = Duration::from_millis(2);
            loop {
                let read = self.read_group(state, &from, share, false).await?;
                let now = Instant::now();
                if !read.is_empty() || now >= deadline {
                    break read;
                }
                tokio::time::sleep(wait.min(deadline - now)).await;
                wait = (wait * 2).min(MAX_POLL);
            }
        };
        if !read.is_empty() {
            state.busy = read.len();
        }
        // Every partition's records at once.
        let out = try_join_all(
            read.into_iter()
                .map(|(p, entries)| self.deliveries(p, entries, |_| 1)),
        )
        .await?;
        Ok(out.into_iter().flatten().collect())
    }

    async fn receive_once(&self, state: &mut ConsumerState, max: usize) -> Result<Vec<Delivery>> {
        let mut got = self.own_pending(state, max).await?;
        if got.is_empty() && Instant::now() >= state.next_claim {
            got = self.claim_idle(state, max).await?;
        }
        if got.is_empty() {
            got = self.new_entries(state, max).await?;
        }
        Ok(got)
    }
}

#[async_trait]
impl Consumer for RedisConsumer {
    #[instrument(skip_all, fields(consumer = %self.config.name))]
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>> {
        let max = max.max(1);
        let mut state = self.state.lock().await;
        if state.buffer.is_empty() {
            self.ensure_group(&mut state).await?;
            let got = match self.receive_once(&mut state, max).await {
                // The group vanished (Redis restarted without its data): recreate it and go on.
                Err(_) if !state.group_ready => {
                    self.ensure_group(&mut state).await?;
                    self.receive_once(&mut state, max).await
                }
                result => result,
            }?;
            state.buffer.extend(got);
        }
        let n = max.min(state.buffer.len());
        Ok(state.buffer.drain(..n).collect())
    }

    #[instrument(skip_all)]
    async fn ack(&self, entry_ids: &[PartitionEntry]) -> Result<()> {
        // One XACK per partition (each in its own slot), all at once.
        let acks = self.by_partition(entry_ids).map(|(p, ids)| async move {
            self.conn
                .clone()
                .xack::<_, _, _, i64>(self.keys.events(p), GROUP, &ids)
                .await
                .map_err(redis_error)
        });
        try_join_all(acks).await?;
        Ok(())
    }

    async fn touch(&self, entry_ids: &[PartitionEntry]) -> Result<()> {
        // Each entry still this consumer's is claimed again by it with
        // JUSTID: its idle time starts again and its delivery count stays.
        // One script per partition, all at once.
        let claims = self.by_partition(entry_ids).map(|(p, ids)| async move {
            let mut invocation = TOUCH.prepare_invoke();
            invocation
                .key(self.keys.events(p))
                .arg(GROUP)
                .arg(&self.config.name)
                .arg(&ids);
            invocation
                .invoke_async::<Value>(&mut self.conn.clone())
                .await
                .map_err(redis_error)
        });
        try_join_all(claims).await?;
        Ok(())
    }

    async fn pending_by_consumer(&self) -> Result<Vec<(String, u64)>> {
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        let per_stream = try_join_all(
            self.partitions
                .all()
                .map(|p| self.pending_in(self.keys.events(p))),
        )
        .await?;
        for (name, count) in per_stream.into_iter().flatten() {
            *totals.entry(name).or_default() += count;
        }
        Ok(totals.into_iter().collect())
    }
}

impl RedisConsumer {
    /// `entry_ids` by partition: each partition that has some, with their
    /// ids as Redis writes them.
    fn by_partition<'a>(
        &self,
        entry_ids: &'a [PartitionEntry],
    ) -> impl Iterator<Item = (Partition, Vec<String>)> + 'a {
        self.partitions.all().filter_map(move |p| {
            let ids: Vec<String> = entry_ids
                .iter()
                .filter(|e| e.partition == p)
                .map(|e| e.id.to_string())
                .collect();
            (!ids.is_empty()).then_some((p, ids))
        })
    }

    /// Pending entries per consumer in one partition's queue.
    async fn pending_in(&self, stream: &str) -> Result<Vec<(String, u64)>> {
        let reply: Value = ::redis::cmd("XPENDING")
            .arg(stream)
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
            other => from_value(other)?,
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
