//! ListEvents on Redis: which query index to walk, one page of it, and
//! pages of several indexes or partitions merged in the query's order
//! (the walk over a status index in buckets is `buckets`).

use futures_util::future::try_join_all;
use tracing::instrument;
use uuid::Uuid;

use super::{RedisBackend, keys, read_records, record::parse_record, redis_error};
use herald::{
    domain::EventStatus,
    error::Result,
    partition::Partition,
    query::{LIST_SCAN_LIMIT, ListQuery, Page, Position, merge_pages},
};

/// A query index of one partition: one sorted set, or a status index in
/// buckets (see `lua/buckets.lua`).
enum Index {
    /// A sorted set of ids scored by occurred_at.
    Set(String),
    /// The index of a [`keys::bucketed`] status.
    Buckets(EventStatus),
}

/// How far one ListEvents call has walked: entries looked at, the last of
/// them (a short page resumes after it), across the sorted sets it read.
#[derive(Default)]
pub(super) struct Walk {
    pub(super) scanned: usize,
    pub(super) last_scanned: Option<Position>,
}

impl RedisBackend {
    /// The index of `status` in partition `p`.
    fn status_index(&self, p: Partition, status: EventStatus) -> Index {
        if keys::bucketed(status) {
            Index::Buckets(status)
        } else {
            Index::Set(self.keys.status(p, status).to_owned())
        }
    }

    /// The sizes of `indexes` of partition `p`, in one round trip: a
    /// sorted set's `ZCARD`, a bucketed index's count.
    async fn index_sizes(&self, p: Partition, indexes: &[Index]) -> Result<Vec<u64>> {
        let mut sizes = ::redis::pipe();
        for index in indexes {
            match index {
                Index::Set(key) => sizes.zcard(key),
                Index::Buckets(status) => sizes.hget(self.keys.counts(p), status.as_str()),
            };
        }
        let sizes: Vec<Option<i64>> = sizes
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(sizes
            .into_iter()
            .map(|n| u64::try_from(n.unwrap_or(0)).unwrap_or(0))
            .collect())
    }

    /// How many events of partition `p` are in each of `statuses`.
    pub(super) async fn status_sizes(
        &self,
        p: Partition,
        statuses: &[EventStatus],
    ) -> Result<Vec<u64>> {
        let indexes: Vec<Index> = statuses.iter().map(|s| self.status_index(p, *s)).collect();
        self.index_sizes(p, &indexes).await
    }

    /// The index to walk for `query`: its user's if it lists an inbox view
    /// (the view's notifications are the user's events in its statuses,
    /// the others passed over), else the smallest of those its equality
    /// filters name (so a query never scans every event when it has one);
    /// `None` when it names none.
    async fn most_selective_index(&self, p: Partition, query: &ListQuery) -> Result<Option<Index>> {
        if let (Some(_), Some(user)) = (query.inbox, &query.user_id) {
            return Ok(Some(Index::Set(self.keys.index(p, "user", user))));
        }
        let mut candidates = Vec::new();
        for (kind, value) in [
            ("user", query.user_id.as_deref()),
            ("session", query.session_id.as_deref()),
            ("category", query.category.as_deref()),
            ("type", query.event_type.as_deref()),
        ] {
            if let Some(value) = value {
                candidates.push(Index::Set(self.keys.index(p, kind, value)));
            }
        }
        candidates.extend(query.status.map(|status| self.status_index(p, status)));
        if candidates.len() < 2 {
            return Ok(candidates.pop());
        }
        let sizes = self.index_sizes(p, &candidates).await?;
        let smallest = sizes
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| **n)
            .map_or(0, |(i, _)| i);
        Ok(Some(candidates.swap_remove(smallest)))
    }

    /// ListEvents: one page of `query`, from the user's partition or from
    /// every partition, merged.
    #[instrument(skip_all)]
    pub(super) async fn list_events(&self, query: &ListQuery) -> Result<Page> {
        self.checked().await?;
        if let Some(user) = &query.user_id {
            // A user's events are all in one partition.
            return self.list_in(self.partitions.of_user(user), query).await;
        }
        let pages = self.each_partition(|p| self.list_in(p, query)).await?;
        Ok(merge_pages(query, pages))
    }

    /// One page of `query` within partition `p`: from its most selective
    /// index or, with no equality filter, from the status indexes (which
    /// together hold every event), merged.
    async fn list_in(&self, p: Partition, query: &ListQuery) -> Result<Page> {
        if let Some(index) = self.most_selective_index(p, query).await? {
            return self.list_index(&index, p, query).await;
        }
        let pages = try_join_all(EventStatus::ALL.map(|status| {
            let index = self.status_index(p, status);
            async move { self.list_index(&index, p, query).await }
        }))
        .await?;
        Ok(merge_pages(query, pages))
    }

    /// One page of `query` from `index`, a query index of partition `p`.
    async fn list_index(&self, index: &Index, p: Partition, query: &ListQuery) -> Result<Page> {
        match index {
            Index::Set(key) => self.list_set(key, p, query, &mut Walk::default()).await,
            Index::Buckets(status) => self.list_buckets(p, *status, query).await,
        }
    }

    /// One page of `query` from the sorted set `index` of partition `p`: a
    /// first page by score from its time bound, a resumed one by rank from
    /// where `list_from.lua` finds the page token (in O(log n), ties
    /// included), chunk after chunk until the page is full; `walk` counts
    /// what it looked at (the scan limit is the walk's, across sets).
    pub(super) async fn list_set(
        &self,
        index: &str,
        p: Partition,
        query: &ListQuery,
        walk: &mut Walk,
    ) -> Result<Page> {
        let chunk = (query.page_size + 1).clamp(64, 1000);
        let mut events = Vec::with_capacity(query.page_size + 1);
        // Where the next chunk starts: an offset into the score range of a
        // first page, or a rank (in the walk's order) of a resumed one.
        let mut offset = 0;
        let mut first = match query.after {
            Some(cursor) => {
                let (start, members) = self
                    .list_from(index, cursor, query.descending, chunk)
                    .await?;
                offset = start;
                Some(members)
            }
            None => None,
        };
        let by_rank = first.is_some();
        loop {
            let members = match first.take() {
                Some(members) => members,
                None if by_rank => {
                    self.range_by_rank(index, offset, chunk, query.descending)
                        .await?
                }
                None => self.range_by_score(index, query, offset, chunk).await?,
            };
            let mut exhausted = members.len() < chunk;
            offset += members.len();
            let mut positions = Vec::with_capacity(members.len());
            for (id, score) in members {
                let Ok(id) = Uuid::from_slice(&id) else {
                    continue;
                };
                let at = Position {
                    occurred_micros: score as i64,
                    id,
                };
                // A walk by rank ends where the query's time range does.
                let beyond = if query.descending {
                    query.after_micros.is_some_and(|a| at.occurred_micros < a)
                } else {
                    query.before_micros.is_some_and(|b| at.occurred_micros >= b)
                };
                if beyond {
                    exhausted = true;
                    break;
                }
                if query.is_past_cursor(at) {
                    positions.push(at);
                }
            }
            walk.scanned += positions.len();
            walk.last_scanned = positions.last().copied().or(walk.last_scanned);
            let records =
                read_records(&self.conn, &self.keys, p, positions.iter().map(|at| at.id)).await?;
            for (at, record) in positions.iter().zip(&records) {
                // A record removed since the index was read is skipped.
                let Some(record) = record else {
                    continue;
                };
                let event = parse_record(at.id, record, None)?;
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
            if walk.scanned >= LIST_SCAN_LIMIT {
                // Bound one call's work: a short page, resumed from here.
                return Ok(Page {
                    events,
                    next: walk.last_scanned,
                });
            }
        }
    }

    /// `list_from.lua` on `index`: the rank of the first entry past
    /// `cursor` in the walk's order, and up to `count` entries from there.
    async fn list_from(
        &self,
        index: &str,
        cursor: Position,
        descending: bool,
        count: usize,
    ) -> Result<(usize, Vec<(Vec<u8>, f64)>)> {
        let mut invocation = self.list_from.prepare_invoke();
        invocation
            .key(index)
            .arg(cursor.occurred_micros)
            .arg(cursor.id.as_bytes())
            .arg(if descending { "1" } else { "0" })
            .arg(count);
        let (start, flat): (usize, Vec<Vec<u8>>) = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok((start, scored(flat)?))
    }

    /// Entries `offset` to `offset + count - 1` of `index` by rank, in the
    /// walk's order, with their scores.
    async fn range_by_rank(
        &self,
        index: &str,
        offset: usize,
        count: usize,
        descending: bool,
    ) -> Result<Vec<(Vec<u8>, f64)>> {
        let mut range = ::redis::cmd("ZRANGE");
        range.arg(index).arg(offset).arg(offset + count - 1);
        if descending {
            range.arg("REV");
        }
        range.arg("WITHSCORES");
        range
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }

    /// Up to `count` entries of `index` within `query`'s time range, from
    /// `offset` on, in the walk's order, with their scores.
    async fn range_by_score(
        &self,
        index: &str,
        query: &ListQuery,
        offset: usize,
        count: usize,
    ) -> Result<Vec<(Vec<u8>, f64)>> {
        let min = query
            .after_micros
            .map_or("-inf".to_owned(), |a| a.to_string());
        let max = query
            .before_micros
            .map_or("+inf".to_owned(), |b| format!("({b}"));
        let mut range = ::redis::cmd("ZRANGE");
        range.arg(index);
        if query.descending {
            range.arg(&max).arg(&min).arg("BYSCORE").arg("REV");
        } else {
            range.arg(&min).arg(&max).arg("BYSCORE");
        }
        range.arg("LIMIT").arg(offset).arg(count).arg("WITHSCORES");
        range
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }
}

/// A script's flat `member, score, ...` reply as pairs.
fn scored(flat: Vec<Vec<u8>>) -> Result<Vec<(Vec<u8>, f64)>> {
    let mut pairs = Vec::with_capacity(flat.len() / 2);
    let mut items = flat.into_iter();
    while let (Some(member), Some(score)) = (items.next(), items.next()) {
        let score = std::str::from_utf8(&score)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                herald::error::Error::Internal("redis reply: a score that is not a number".into())
            })?;
        pairs.push((member, score));
    }
    Ok(pairs)
}
