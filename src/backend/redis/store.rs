//! The EventStore on Redis: records, query indexes, counts, dead letters.

use std::{collections::HashMap, time::SystemTime};

use ::redis::{AsyncCommands, Value, streams::StreamRangeReply};
use async_trait::async_trait;
use tracing::instrument;
use uuid::Uuid;

use super::{
    RedisBackend,
    record::{RECORD_FIELDS, entry_json, parse_record, record, status_outcome, string},
    redis_error,
};
use crate::backend::{DeadLetter, Delivery, EventStore, StatusCounts, Sweep};
use crate::{
    domain::{Event, EventStatus, NewEvent, StatusChange, now, to_micros},
    error::{Error, Result},
    query::{ListQuery, Page, Position},
};

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
            .arg(self.keys.prefix());
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
            .arg(self.keys.prefix());
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
            .arg(self.keys.prefix())
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
