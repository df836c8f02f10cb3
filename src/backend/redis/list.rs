//! ListEvents on Redis: which query index to walk, one page of it, and
//! pages of several indexes or partitions merged in the query's order.

use futures_util::future::try_join_all;
use tracing::instrument;
use uuid::Uuid;

use super::{RedisBackend, read_records, record::parse_record, redis_error};
use crate::{
    domain::EventStatus,
    error::Result,
    partition::Partition,
    query::{ListQuery, Page, Position, merge_pages},
};

/// Most index entries one ListEvents call reads before it returns a short page.
const LIST_SCAN_LIMIT: usize = 10_000;

impl RedisBackend {
    /// The index to walk for `query`: the smallest of those its equality
    /// filters name (so a query never scans every event when it has one);
    /// `None` when it names none.
    async fn most_selective_index(
        &self,
        p: Partition,
        query: &ListQuery,
    ) -> Result<Option<String>> {
        let mut candidates = Vec::new();
        for (kind, value) in [
            ("user", query.user_id.as_str()),
            ("session", query.session_id.as_str()),
            ("category", query.category.as_str()),
            ("type", query.event_type.as_str()),
            ("status", query.status.map_or("", EventStatus::as_str)),
        ] {
            if !value.is_empty() {
                candidates.push(self.keys.index(p, kind, value));
            }
        }
        if candidates.len() < 2 {
            return Ok(candidates.pop());
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
        Ok(Some(candidates.swap_remove(smallest)))
    }

    /// ListEvents: one page of `query`, from the user's partition or from
    /// every partition, merged.
    #[instrument(skip_all)]
    pub(super) async fn list_events(&self, query: &ListQuery) -> Result<Page> {
        self.checked().await?;
        if !query.user_id.is_empty() {
            // A user's events are all in one partition.
            return self
                .list_in(self.partitions.of_user(&query.user_id), query)
                .await;
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
            let index = self.keys.status(p, status);
            async move { self.list_index(index, p, query).await }
        }))
        .await?;
        Ok(merge_pages(query, pages))
    }

    /// One page of `query` from `index`, a query index of partition `p`.
    async fn list_index(&self, index: &str, p: Partition, query: &ListQuery) -> Result<Page> {
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
            range.arg(index);
            if query.descending {
                range.arg(&max).arg(&min).arg("BYSCORE").arg("REV");
            } else {
                range.arg(&min).arg(&max).arg("BYSCORE");
            }
            range.arg("LIMIT").arg(offset).arg(chunk).arg("WITHSCORES");
            let members: Vec<(Vec<u8>, f64)> = range
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
                        id: Uuid::from_slice(&id).ok()?,
                    })
                })
                .filter(|p| query.is_past_cursor(*p))
                .collect();
            scanned += positions.len();
            last_scanned = positions.last().copied().or(last_scanned);
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
            if scanned >= LIST_SCAN_LIMIT {
                // Bound one call's work: a short page, resumed from here.
                return Ok(Page {
                    events,
                    next: last_scanned,
                });
            }
        }
    }
}
