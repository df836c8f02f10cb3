//! The EventStore on Redis: records, counts, dead letters, retention (the
//! queries are in `list`).

use std::{
    borrow::Cow,
    collections::HashMap,
    time::{Duration, SystemTime},
};

use ::redis::{AsyncCommands, Value};
use async_trait::async_trait;
use futures_util::future::join;
use tracing::instrument;
use uuid::Uuid;

use super::{
    RedisBackend, Replicated,
    connection::Conn,
    keys, read_records,
    record::{
        NewRecord, change_of, code, entry_id_of, micros_bytes, parse_record,
        parse_record_delivered, record, source_codes, status_outcome, trace_arg,
    },
    redis_error,
    split::{by_partition, gather, run_groups},
    stream::range_reply,
};
use crate::{DeadLetter, Delivery, EventStore, Released, RetentionSlice, StatusCounts, Sweep};
use herald::{
    cursor::{Cursor, PartitionEntry},
    domain::{Event, EventStatus, NewEvent, StatusChange, from_micros, now, to_micros},
    error::{Error, Result},
    partition::Partition,
    query::{ListQuery, Page},
};

impl RedisBackend {
    /// Whether creates without an idempotency key (nor a schedule) may go as plain commands
    /// in one transaction ([`Self::create_plain`]): on one Redis node (a
    /// cluster's connection makes no transactions) and without
    /// `--redis-wait-replicas` (whose `WAIT` follows the script's write).
    fn plain_creates(&self) -> bool {
        matches!(self.conn, Conn::Node(_)) && self.replication.is_none()
    }

    /// The status index a create writes an event in `status` to: a new
    /// event is PENDING or SCHEDULED, whose indexes are one sorted set each
    /// (the creates add plain entries; buckets are the status scripts').
    fn created_index(&self, p: Partition, status: EventStatus) -> Result<&str> {
        if keys::bucketed(status) {
            return Err(Error::Internal(format!(
                "a new event cannot be {}",
                status.as_str()
            )));
        }
        Ok(self.keys.status(p, status))
    }

    /// Creates events of one partition with one script (each with its
    /// idempotency key, or none). A write that reached fewer replicas than
    /// `--redis-wait-replicas` asks for fails each event, naming the event
    /// stored (on the master only) for it.
    async fn create_in(
        &self,
        p: Partition,
        events: Vec<(Event, String)>,
        ordering: bool,
    ) -> Result<Vec<Result<Event>>> {
        let mut invocation = self.create.prepare_invoke();
        invocation
            .key(self.keys.events(p))
            .key(self.keys.notifications(p))
            .arg(self.notifications_max_len)
            .arg(self.request_id_window.as_secs().max(1))
            .arg(self.keys.scheduled(p));
        for (event, request_key) in &events {
            let NewRecord { value, indexes } = record(event)?;
            let due = match (event.status, event.deliver_at) {
                (EventStatus::Scheduled, Some(due)) => to_micros(due).to_string(),
                _ => String::new(),
            };
            invocation
                .key(self.keys.event(p, event.id))
                .arg(request_key)
                .arg(event.id.as_bytes())
                .arg(value)
                .arg(to_micros(event.occurred_at))
                .arg(due)
                .arg(if ordering {
                    self.keys.queued(p, &event.user_id)
                } else {
                    String::new()
                })
                .arg(1 + indexes.len())
                .arg(self.created_index(p, event.status)?);
            for (kind, value) in &indexes {
                invocation.arg(self.keys.index(p, kind, value));
            }
        }
        let priors: Vec<Vec<u8>> = match self.write_replicated(p, &invocation).await? {
            Replicated::Yes(priors) => priors,
            Replicated::Short(priors, replicas) => {
                let stored = events.iter().zip(priors).map(|((event, _), prior)| {
                    let id = Uuid::from_slice(&prior).unwrap_or(event.id);
                    Err(self.short_error(replicas, &format!("the write of event {id}")))
                });
                return Ok(stored.collect());
            }
        };
        // Repeated requests answer with the events that first took their
        // keys (in the same partition), all read in one round trip.
        let repeated = priors
            .iter()
            .filter(|prior| !prior.is_empty())
            .map(|prior| {
                Uuid::from_slice(prior)
                    .map_err(|_| Error::Internal(format!("idempotency key holds {prior:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut firsts = read_records(&self.conn, &self.keys, p, repeated.iter().copied())
            .await?
            .into_iter()
            .zip(&repeated);
        events
            .into_iter()
            .zip(priors)
            .map(|((event, _), prior)| {
                if prior.is_empty() {
                    return Ok(event);
                }
                match firsts.next() {
                    Some((Some(record), id)) => parse_record(*id, &record, None),
                    Some((None, id)) => Err(Error::Internal(format!(
                        "the event {id} of a repeated request id is gone"
                    ))),
                    None => Err(Error::Internal(
                        "fewer records than repeated request ids".into(),
                    )),
                }
            })
            .map(Ok)
            .collect()
    }

    /// Writes what `create_many.lua` writes for events without an
    /// idempotency key (record, index entries, queue and notification
    /// entries), as plain commands in one `MULTI`/`EXEC`: as atomic, and
    /// about half of Redis's time per create, which in the script went to
    /// Lua itself. The events may be of several partitions (one node holds
    /// them all, so a batch's creates without idempotency keys are one
    /// transaction instead of one per partition). The records go in one
    /// `MSET` and each index key's entries in one `ZADD`, so a batch takes
    /// two commands per event (its stream entries) and a few besides. Only
    /// where [`Self::plain_creates`] says so. The script claims each record
    /// key with `SET NX` first; here the ids are fresh UUID v7s, made for
    /// these events. Like the script, the transaction fails as one: a command
    /// Redis refuses at `EXEC` (only a key of the wrong type, which Herald
    /// never writes) fails every event of the batch, and the records come
    /// first, so no entry ever points at a record that was not written.
    async fn create_plain(
        &self,
        events: Vec<(Partition, Event)>,
        ordering: bool,
    ) -> Result<Vec<Event>> {
        let mut records = ::redis::Cmd::with_capacity(1 + 2 * events.len(), 160 * events.len());
        records.arg("MSET");
        // One ZADD per index key, its entries added as the events come.
        let mut zadds: HashMap<Cow<'_, str>, ::redis::Cmd> = HashMap::new();
        let mut entries = Vec::with_capacity(2 * events.len());
        for (p, event) in &events {
            let p = *p;
            let NewRecord { value, indexes } = record(event)?;
            let id = event.id.as_bytes();
            let score = to_micros(event.occurred_at);
            let (queue, notifications) = (self.keys.events(p), self.keys.notifications(p));
            // The status index's name is Keys' own; the others are made here.
            let status = Cow::Borrowed(self.created_index(p, event.status)?);
            let others = indexes
                .iter()
                .map(|(kind, v)| Cow::Owned(self.keys.index(p, kind, v)));
            // The user's queued index too (with ordering), scored 0 (by id).
            let queued = ordering.then(|| (Cow::Owned(self.keys.queued(p, &event.user_id)), 0));
            let scored = std::iter::once(status)
                .chain(others)
                .map(|key| (key, score))
                .chain(queued);
            for (key, score) in scored {
                zadds
                    .entry(key)
                    .or_insert_with_key(|key| {
                        let mut zadd = ::redis::cmd("ZADD");
                        zadd.arg(key);
                        zadd
                    })
                    .arg(score)
                    .arg(id);
            }
            let mut queued = ::redis::Cmd::with_capacity(5, queue.len() + 20);
            queued.arg("XADD").arg(queue).arg("*").arg("id").arg(id);
            let mut logged = ::redis::Cmd::with_capacity(11, notifications.len() + 80);
            logged
                .arg("XADD")
                .arg(notifications)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.notifications_max_len)
                .arg("*")
                .arg("id")
                .arg(id)
                .arg("change")
                .arg(change_of(&value));
            entries.extend([queued, logged]);
            records.arg(self.keys.event(p, event.id)).arg(value);
        }
        let mut pipe = ::redis::Pipeline::with_capacity(1 + zadds.len() + entries.len());
        pipe.atomic().add_command(records);
        for command in zadds.into_values().chain(entries) {
            pipe.add_command(command);
        }
        // Every reply is dropped unread (a command's error still fails the
        // call); not marking each command ignored spares a set of them.
        pipe.exec_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(events.into_iter().map(|(_, event)| event).collect())
    }

    /// Applies status changes of one partition with one script.
    async fn update_in(
        &self,
        p: Partition,
        changes: &[StatusChange],
    ) -> Result<Vec<Result<Event>>> {
        let mut invocation = self.update_status.prepare_invoke();
        invocation
            .key(self.keys.events(p))
            .key(self.keys.notifications(p))
            .arg(&micros_bytes(now()))
            .arg(self.notifications_max_len)
            .arg(self.keys.tag(p));
        for change in changes {
            invocation
                .key(self.keys.event(p, change.id))
                .arg(&[code(change.status)])
                .arg(if change.status.enqueues() { "1" } else { "0" })
                .arg(source_codes(change.status))
                .arg(trace_arg(change.trace))
                .arg(change.id.as_bytes());
        }
        let outcomes: Vec<(String, Value)> = self.write(p, &invocation).await?;
        outcomes_of(changes, outcomes)
    }

    /// Up to `max` dead letters of partition `p` past `after`.
    pub(super) async fn dead_letters_in(
        &self,
        p: Partition,
        after: &Cursor,
        max: usize,
    ) -> Result<Vec<DeadLetter>> {
        let reply: Value = self
            .conn
            .clone()
            .xrange_count(self.keys.dead(p), format!("({}", after.get(p)), "+", max)
            .await
            .map_err(redis_error)?;
        range_reply(reply)?
            .into_iter()
            .map(|mut entry| {
                let mut take = |name: &str| {
                    String::from_utf8_lossy(&entry.take(name).unwrap_or_default()).into_owned()
                };
                let reason = take("reason");
                let deliveries = take("deliveries").parse().unwrap_or(0);
                let entry_id = PartitionEntry {
                    partition: p,
                    id: take("entry_id").parse().unwrap_or_default(),
                };
                let (record, event_id) = (entry.take("record"), entry.take("id"));
                let (record, id) = (record.unwrap_or_default(), entry.id);
                let event_id = Uuid::from_slice(&event_id.unwrap_or_default())
                    .map_err(|_| Error::Internal(format!("dead letter {id} has no event id")))?;
                let (event, delivered) = parse_record_delivered(event_id, &record, None)?;
                Ok(DeadLetter {
                    delivery: Delivery {
                        entry_id,
                        event,
                        deliveries,
                        delivered,
                    },
                    id: PartitionEntry {
                        partition: p,
                        id: entry_id_of(&id)?,
                    },
                    reason,
                })
            })
            .collect()
    }

    /// Redrives events of one partition with one script.
    pub(super) async fn redrive_in(
        &self,
        p: Partition,
        changes: &[StatusChange],
    ) -> Result<Vec<Result<Event>>> {
        let mut invocation = self.redrive.prepare_invoke();
        invocation
            .key(self.keys.events(p))
            .key(self.keys.notifications(p))
            .key(self.keys.dead(p))
            .key(self.keys.dead_index(p))
            .arg(&micros_bytes(now()))
            .arg(self.notifications_max_len)
            .arg(self.keys.tag(p))
            .arg(source_codes(EventStatus::Pending));
        for change in changes {
            invocation
                .key(self.keys.event(p, change.id))
                .arg(change.id.to_string())
                .arg(change.id.as_bytes())
                .arg(trace_arg(change.trace));
        }
        let outcomes: Vec<(String, Value)> = self.write(p, &invocation).await?;
        outcomes_of(changes, outcomes)
    }
}

/// The outcome of each change, from a status script's answers.
fn outcomes_of(
    changes: &[StatusChange],
    outcomes: Vec<(String, Value)>,
) -> Result<Vec<Result<Event>>> {
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

#[async_trait]
impl EventStore for RedisBackend {
    async fn prepare(&self) -> Result<()> {
        self.checked().await
    }

    async fn upgrade(&self) -> Result<Option<crate::Upgraded>> {
        self.upgrade_layout().await
    }

    #[instrument(skip_all, fields(n = events.len()))]
    async fn create_many(&self, events: Vec<NewEvent>) -> Result<Vec<Result<Event>>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.checked().await?;
        // Where plain commands may write them, the events without an
        // idempotency key go in one transaction whatever their partitions;
        // the others go by script, one per partition.
        let plain_creates = self.plain_creates();
        let ordering = self.ordering().await;
        let len = events.len();
        let (mut plain, mut scripted) = (Vec::new(), Vec::new());
        for (place, new) in events.into_iter().enumerate() {
            let p = self.partitions.of_user(new.user_id());
            let request_key = match new.request_id() {
                "" => String::new(),
                request_id => self
                    .keys
                    .request(p, new.source(), new.user_id(), request_id),
            };
            let event = new.into_event(self.partitions);
            if plain_creates && request_key.is_empty() && event.status != EventStatus::Scheduled {
                plain.push((place, (p, event)));
            } else {
                scripted.push((place, p, (event, request_key)));
            }
        }
        // The plain transaction and the partitions' scripts go out at once.
        let plain_write = async {
            if plain.is_empty() {
                return None;
            }
            let (places, events): (Vec<usize>, Vec<_>) = plain.into_iter().unzip();
            let outcome = self.create_plain(events, ordering).await;
            Some((
                places,
                outcome.map(|events| events.into_iter().map(Ok).collect()),
            ))
        };
        let scripted_writes = run_groups(
            by_partition(self.partitions, scripted),
            |p, events| async move { self.create_in(p, events, ordering).await },
        );
        let (plain_written, scripted_written) = join(plain_write, scripted_writes).await;
        let out = (0..len).map(|_| None).collect();
        Ok(gather(
            out,
            scripted_written.into_iter().chain(plain_written),
        ))
    }

    #[instrument(skip_all)]
    async fn get(&self, id: Uuid) -> Result<Event> {
        let p = self.partitions.of_id(id).ok_or(Error::NotFound(id))?;
        self.checked().await?;
        let records = read_records(&self.conn, &self.keys, p, [id]).await?;
        match records.into_iter().next().flatten() {
            Some(record) => parse_record(id, &record, None),
            None => Err(Error::NotFound(id)),
        }
    }

    #[instrument(skip_all, fields(n = changes.len()))]
    async fn update_status_many(&self, changes: &[StatusChange]) -> Result<Vec<Result<Event>>> {
        self.by_partition_of_id(changes, |p, changes| async move {
            self.update_in(p, &changes).await
        })
        .await
    }

    async fn page_token_key(&self) -> Result<[u8; 32]> {
        RedisBackend::page_token_key(self).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        self.list_events(query).await
    }

    async fn unwritable_partitions(&self) -> Result<Vec<(Partition, String)>> {
        self.checked().await?;
        let short = self
            .replication
            .as_ref()
            .map(|r| r.short(self.partitions))
            .unwrap_or_default();
        let short = &short;
        let probes = self.partitions.all().map(|p| async move {
            if let Some((_, why)) = short.iter().find(|(s, _)| *s == p) {
                return Some((p, why.clone()));
            }
            // A read of the partition's own key reaches its master.
            let answered: std::result::Result<bool, _> =
                self.conn.clone().exists(self.keys.events(p)).await;
            answered.err().map(|err| (p, redis_error(err).to_string()))
        });
        Ok(futures_util::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect())
    }

    async fn ping(&self) -> Result<()> {
        let _: String = ::redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn remove_older_than(&self, slice: RetentionSlice) -> Result<Sweep> {
        if slice.status == EventStatus::Pending {
            return Ok(Sweep::default());
        }
        self.checked().await?;
        let (p, status) = (slice.partition, slice.status);
        let (index, bucketed) = if keys::bucketed(status) {
            (self.keys.status_directory(p, status), status.as_str())
        } else {
            (self.keys.status(p, status).to_owned(), "")
        };
        let (removed, kept, scanned): (u64, u64, u64) = self
            .remove_older_than
            .key(index)
            .arg(self.keys.tag(p))
            .arg(to_micros(slice.cutoff))
            .arg(slice.skip)
            .arg(slice.max.max(1))
            .arg(bucketed)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(Sweep {
            removed,
            kept,
            scanned,
        })
    }

    async fn unread_count(&self, user: &str) -> Result<u64> {
        self.checked().await?;
        let p = self.partitions.of_user(user);
        let count: Option<u64> = self
            .conn
            .clone()
            .hget(self.keys.unread(p), user)
            .await
            .map_err(redis_error)?;
        Ok(count.unwrap_or(0))
    }

    async fn use_ordering(&self) -> Result<()> {
        self.checked().await?;
        self.conn
            .clone()
            .hset::<_, _, _, ()>(self.keys.meta(), "ordering", "1")
            .await
            .map_err(redis_error)?;
        *self.ordering.lock().expect("ordering lock") = (true, Some(std::time::Instant::now()));
        Ok(())
    }

    async fn first_queued(&self, user: &str) -> Result<Option<Uuid>> {
        self.checked().await?;
        let p = self.partitions.of_user(user);
        let first: Vec<Vec<u8>> = self
            .conn
            .clone()
            .zrange(self.keys.queued(p, user), 0, 0)
            .await
            .map_err(redis_error)?;
        first
            .first()
            .map(|id| {
                Uuid::from_slice(id)
                    .map_err(|_| Error::Internal(format!("a queued index holds {id:?}")))
            })
            .transpose()
    }

    async fn release_due(
        &self,
        p: Partition,
        due_by: SystemTime,
        max: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Vec<Released>>> {
        self.checked().await?;
        let mut invocation = self.release_due.prepare_invoke();
        invocation
            .key(self.keys.events(p))
            .key(self.keys.notifications(p))
            .key(self.keys.scheduled(p))
            .key(self.keys.scheduler(p))
            .arg(to_micros(due_by))
            .arg(max)
            .arg(owner)
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg(&micros_bytes(now()))
            .arg(self.notifications_max_len)
            .arg(self.keys.tag(p));
        let moved: Option<Vec<Vec<u8>>> = self.write(p, &invocation).await?;
        let Some(moved) = moved else {
            return Ok(None);
        };
        moved
            .chunks(2)
            .map(|pair| {
                let bad = || Error::Internal(format!("release_due answered {pair:?}"));
                let [id, score] = pair else {
                    return Err(bad());
                };
                let id = Uuid::from_slice(id).map_err(|_| bad())?;
                let micros: i64 = std::str::from_utf8(score)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(bad)?;
                Ok(Released {
                    id,
                    due: from_micros(micros),
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    async fn status_counts(&self) -> Result<StatusCounts> {
        // Every event is in exactly one status index: the counts are their
        // sizes, kept apart for the bucketed ones.
        let stored = self
            .each_partition(|p| async move { self.status_sizes(p, &EventStatus::ALL).await })
            .await?;
        let mut counts = StatusCounts::default();
        for partition in stored {
            for (status, n) in EventStatus::ALL.into_iter().zip(partition) {
                *counts.slot(status) += n;
            }
        }
        Ok(counts)
    }
}
