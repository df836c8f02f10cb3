//! ListEvents over a status index in buckets (see `lua/buckets.lua`): its
//! directory read a few starts at a time, each bucket walked as a sorted
//! set, in the query's order.

use std::collections::VecDeque;

use super::{RedisBackend, list::Walk, redis_error};
use herald::{
    domain::EventStatus,
    error::Result,
    partition::Partition,
    query::{LIST_SCAN_LIMIT, ListQuery, Page, Position},
};

/// How many bucket starts one read of a directory takes.
const STARTS_PER_READ: isize = 32;

impl RedisBackend {
    /// One page of `query` from the bucketed index of `status` in
    /// partition `p`: its buckets in the walk's order, from the one
    /// holding where the page starts (the page token's score, else the
    /// time bound the walk starts from), each walked as a sorted set, until
    /// the page is full, the time range ends or the scan limit is reached.
    pub(super) async fn list_buckets(
        &self,
        p: Partition,
        status: EventStatus,
        query: &ListQuery,
    ) -> Result<Page> {
        let directory = self.keys.status_directory(p, status);
        let from = query
            .after
            .map(|cursor| cursor.occurred_micros)
            .or(if query.descending {
                query.before_micros
            } else {
                query.after_micros
            });
        let mut starts = self
            .bucket_starts(&directory, from, query.descending)
            .await?;
        let (mut events, mut walk) = (Vec::with_capacity(query.page_size + 1), Walk::default());
        let mut sub = query.clone();
        while let Some(start) = starts.pop_front() {
            let remaining = query.page_size - events.len();
            if walk.scanned >= LIST_SCAN_LIMIT {
                // Bound one call's work: a short page, resumed from here.
                return Ok(Page {
                    events,
                    next: walk.last_scanned,
                });
            }
            let bound = start.parse::<f64>().unwrap_or(f64::NEG_INFINITY);
            // A bucket holds scores from its start on: one starting at or past
            // the end of an oldest-first walk holds none of the range.
            if !query.descending && query.before_micros.is_some_and(|b| bound >= b as f64) {
                break;
            }
            sub.page_size = remaining.max(1);
            let key = self.keys.status_bucket(p, status, &start);
            let page = self.list_set(&key, p, &sub, &mut walk).await?;
            if remaining == 0 {
                // The page was full: is anything past it?
                if !page.events.is_empty() {
                    return Ok(Page {
                        next: events.last().map(Position::of),
                        events,
                    });
                }
            } else {
                events.extend(page.events);
                if page.next.is_some() {
                    return Ok(Page {
                        events,
                        next: page.next,
                    });
                }
            }
            // Every bucket past the page token is wholly past it.
            sub.after = None;
            // In a newest-first walk, the buckets before one starting at or
            // before the range's start hold nothing of it.
            if query.descending && query.after_micros.is_some_and(|a| bound <= a as f64) {
                break;
            }
            if starts.is_empty() {
                starts = self
                    .bucket_starts_past(&directory, &start, query.descending)
                    .await?;
            }
        }
        Ok(Page { events, next: None })
    }

    /// The starts of the buckets a walk from score `from` (its first
    /// bound, `None` for the index's end) reads first, in its order: the
    /// bucket holding `from`, and a few past it.
    async fn bucket_starts(
        &self,
        directory: &str,
        from: Option<i64>,
        descending: bool,
    ) -> Result<VecDeque<String>> {
        let from = from.map_or(
            if descending {
                "+inf".to_owned()
            } else {
                "-inf".to_owned()
            },
            |f| f.to_string(),
        );
        if descending {
            return self.directory_range(directory, &from, "-inf").await;
        }
        let mut first = self
            .directory_range_limit(directory, &from, "-inf", 1)
            .await?;
        first.extend(
            self.directory_range(directory, &format!("({from}"), "+inf")
                .await?,
        );
        Ok(first)
    }

    /// The starts of the next few buckets after the one starting at
    /// `start`, in the walk's order.
    async fn bucket_starts_past(
        &self,
        directory: &str,
        start: &str,
        descending: bool,
    ) -> Result<VecDeque<String>> {
        let end = if descending { "-inf" } else { "+inf" };
        self.directory_range(directory, &format!("({start}"), end)
            .await
    }

    /// Up to [`STARTS_PER_READ`] bucket starts of `directory` between
    /// scores `from` and `to` (a walk from `from`: downwards if `to` is
    /// below it).
    async fn directory_range(
        &self,
        directory: &str,
        from: &str,
        to: &str,
    ) -> Result<VecDeque<String>> {
        self.directory_range_limit(directory, from, to, STARTS_PER_READ)
            .await
    }

    /// [`Self::directory_range`], up to `count` starts.
    async fn directory_range_limit(
        &self,
        directory: &str,
        from: &str,
        to: &str,
        count: isize,
    ) -> Result<VecDeque<String>> {
        let downwards = to == "-inf";
        let mut range = ::redis::cmd("ZRANGE");
        range.arg(directory).arg(from).arg(to).arg("BYSCORE");
        if downwards {
            range.arg("REV");
        }
        range.arg("LIMIT").arg(0).arg(count);
        let starts: Vec<String> = range
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(starts.into())
    }
}
