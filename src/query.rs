//! ListEvents queries: filters, order, page size and opaque page tokens.
//!
//! Pages are keyset-paginated on (occurred_at, event_id): a page token holds
//! the position of the last event returned, so events added later never shift
//! the pages (they appear where they sort, on a later page or not at all),
//! and nothing is repeated or skipped.

use std::hash::{DefaultHasher, Hash, Hasher};

use uuid::Uuid;

use crate::{
    domain::{Event, EventStatus, FieldViolation, parse_timestamp, to_micros},
    error::Error,
    pb,
};

/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page; larger asks get this many.
pub const MAX_PAGE_SIZE: usize = 1000;

/// A position in the (occurred_at, event_id) order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// occurred_at, in microseconds since the epoch.
    pub occurred_micros: i64,
    /// The event id, which breaks ties.
    pub id: Uuid,
}

impl Position {
    /// The position of an event.
    pub fn of(event: &Event) -> Self {
        Self {
            occurred_micros: to_micros(event.occurred_at),
            id: event.id,
        }
    }
}

/// A validated ListEvents request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListQuery {
    /// Only this user's events (empty: any).
    pub user_id: String,
    /// Only this session's events (empty: any).
    pub session_id: String,
    /// Only this category (empty: any).
    pub category: String,
    /// Only this type (empty: any).
    pub event_type: String,
    /// Only this status.
    pub status: Option<EventStatus>,
    /// occurred_at at or after this many microseconds.
    pub after_micros: Option<i64>,
    /// occurred_at before this many microseconds.
    pub before_micros: Option<i64>,
    /// Newest first instead of oldest first.
    pub descending: bool,
    /// Most events in the page.
    pub page_size: usize,
    /// Continue after this position (from the page token).
    pub after: Option<Position>,
}

impl ListQuery {
    /// Whether `event` passes every filter (the order and page aside).
    pub fn matches(&self, event: &Event) -> bool {
        let micros = to_micros(event.occurred_at);
        (self.user_id.is_empty() || event.user_id == self.user_id)
            && (self.session_id.is_empty() || event.session_id == self.session_id)
            && (self.category.is_empty() || event.category == self.category)
            && (self.event_type.is_empty() || event.event_type == self.event_type)
            && self.status.is_none_or(|s| event.status == s)
            && self.after_micros.is_none_or(|a| micros >= a)
            && self.before_micros.is_none_or(|b| micros < b)
    }

    /// Whether `position` comes after the page token's position, in this order.
    pub fn is_past_cursor(&self, position: Position) -> bool {
        match self.after {
            None => true,
            Some(cursor) if self.descending => position < cursor,
            Some(cursor) => position > cursor,
        }
    }

    /// The token of the page after one that ended at `last`.
    pub fn next_page_token(&self, last: Position) -> String {
        let text = format!(
            "v1|{}|{}|{:x}",
            last.occurred_micros,
            last.id,
            self.filter_hash()
        );
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// A fingerprint of the filters and order, so a token is refused with others.
    fn filter_hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        (
            &self.user_id,
            &self.session_id,
            &self.category,
            &self.event_type,
        )
            .hash(&mut h);
        (
            self.status.map(EventStatus::as_str),
            self.after_micros,
            self.before_micros,
        )
            .hash(&mut h);
        self.descending.hash(&mut h);
        h.finish()
    }

    fn read_token(&self, token: &str) -> Option<Position> {
        let bytes: Option<Vec<u8>> = (0..token.len())
            .step_by(2)
            .map(|i| {
                token
                    .get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect();
        let text = String::from_utf8(bytes?).ok()?;
        let mut parts = text.split('|');
        if parts.next()? != "v1" {
            return None;
        }
        let occurred_micros = parts.next()?.parse().ok()?;
        let id = Uuid::try_parse(parts.next()?).ok()?;
        let hash = u64::from_str_radix(parts.next()?, 16).ok()?;
        (parts.next().is_none() && hash == self.filter_hash()).then_some(Position {
            occurred_micros,
            id,
        })
    }
}

impl TryFrom<pb::ListEventsRequest> for ListQuery {
    type Error = Error;

    fn try_from(r: pb::ListEventsRequest) -> Result<Self, Error> {
        let mut violations = Vec::new();
        let status = match r.status {
            0 => None,
            value => EventStatus::from_pb(value, "status")
                .map_err(|e| violations.extend(e.into_violations()))
                .ok(),
        };
        let mut time =
            |t: Option<prost_types::Timestamp>, field: &str| match parse_timestamp(t?, field) {
                Ok(t) => Some(to_micros(t)),
                Err(err) => {
                    violations.extend(err.into_violations());
                    None
                }
            };
        let after_micros = time(r.occurred_after, "occurred_after");
        let before_micros = time(r.occurred_before, "occurred_before");
        if let (Some(a), Some(b)) = (after_micros, before_micros)
            && a >= b
        {
            violations.push(FieldViolation::new(
                "occurred_before",
                "must be later than occurred_after",
            ));
        }
        let page_size = match r.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => {
                violations.push(FieldViolation::new("page_size", "must not be negative"));
                DEFAULT_PAGE_SIZE
            }
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        let descending = match r.order_by.trim() {
            "" | "occurred_at" | "occurred_at asc" => false,
            "occurred_at desc" => true,
            other => {
                violations.push(FieldViolation::new(
                    "order_by",
                    format!(
                        "must be \"occurred_at\" or \"occurred_at desc\", got {}",
                        crate::error::quote(other)
                    ),
                ));
                false
            }
        };
        let mut query = ListQuery {
            user_id: r.user_id,
            session_id: r.session_id,
            category: r.category,
            event_type: r.r#type,
            status,
            after_micros,
            before_micros,
            descending,
            page_size,
            after: None,
        };
        if !r.page_token.is_empty() {
            match query.read_token(&r.page_token) {
                Some(position) => query.after = Some(position),
                None => violations.push(FieldViolation::new(
                    "page_token",
                    "is not a token of this query (filters and order must stay the same)",
                )),
            }
        }
        if violations.is_empty() {
            Ok(query)
        } else {
            Err(Error::InvalidArgument(violations))
        }
    }
}

/// One page of results.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// The events, in the query's order.
    pub events: Vec<Event>,
    /// Where the next page starts, if there may be one.
    pub next: Option<Position>,
}

/// Sorts events in the query's order and keeps the page after its cursor: the
/// reference semantics every backend must match.
pub fn page_of(query: &ListQuery, mut events: Vec<Event>) -> Page {
    events.retain(|e| query.matches(e) && query.is_past_cursor(Position::of(e)));
    events.sort_by_key(Position::of);
    if query.descending {
        events.reverse();
    }
    let more = events.len() > query.page_size;
    events.truncate(query.page_size);
    let next = if more {
        events.last().map(Position::of)
    } else {
        None
    };
    Page { events, next }
}

/// Merges the pages that several partitions gave for one query into the
/// page of the whole: in the query's order, up to the furthest position
/// every partition covered (a partition's page that ended early covers only
/// up to its next position), so that the next page misses nothing.
pub fn merge_pages(query: &ListQuery, pages: Vec<Page>) -> Page {
    let first = |a: Position, b: Position| if query.descending { a.max(b) } else { a.min(b) };
    let bound = pages.iter().filter_map(|p| p.next).reduce(first);
    let covered = |p: Position| bound.is_none_or(|b| first(p, b) == p);
    let events: Vec<Event> = pages
        .into_iter()
        .flat_map(|p| p.events)
        .filter(|e| covered(Position::of(e)))
        .collect();
    let mut page = page_of(query, events);
    if page.next.is_none() {
        page.next = bound;
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::ListEventsRequest {
        pb::ListEventsRequest::default()
    }

    fn fields(err: Error) -> Vec<String> {
        err.into_violations().into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn defaults_and_limits() {
        let q = ListQuery::try_from(request()).expect("valid");
        assert_eq!(
            (q.page_size, q.descending, q.status),
            (DEFAULT_PAGE_SIZE, false, None)
        );
        let big = ListQuery::try_from(pb::ListEventsRequest {
            page_size: 5000,
            ..request()
        })
        .expect("coerced");
        assert_eq!(big.page_size, MAX_PAGE_SIZE);
        let desc = ListQuery::try_from(pb::ListEventsRequest {
            order_by: "occurred_at desc".into(),
            ..request()
        });
        assert!(desc.expect("valid").descending);
    }

    #[test]
    fn bad_requests_name_their_fields() {
        let t = |s: i64| {
            Some(prost_types::Timestamp {
                seconds: s,
                nanos: 0,
            })
        };
        let bad = pb::ListEventsRequest {
            page_size: -1,
            order_by: "user_id".into(),
            status: 9,
            occurred_after: t(100),
            occurred_before: t(100),
            page_token: "zz".into(),
            ..request()
        };
        assert_eq!(
            fields(ListQuery::try_from(bad).expect_err("invalid")),
            [
                "status",
                "occurred_before",
                "page_size",
                "order_by",
                "page_token"
            ]
        );
    }

    #[test]
    fn tokens_round_trip_only_with_the_same_filters() {
        let q = ListQuery::try_from(pb::ListEventsRequest {
            user_id: "ada".into(),
            ..request()
        })
        .expect("valid");
        let position = Position {
            occurred_micros: 1_700_000_000_000_000,
            id: Uuid::now_v7(),
        };
        let token = q.next_page_token(position);
        let next = ListQuery::try_from(pb::ListEventsRequest {
            user_id: "ada".into(),
            page_token: token.clone(),
            ..request()
        })
        .expect("same filters");
        assert_eq!(next.after, Some(position));
        let other = pb::ListEventsRequest {
            user_id: "bob".into(),
            page_token: token,
            ..request()
        };
        assert_eq!(
            fields(ListQuery::try_from(other).expect_err("other filters")),
            ["page_token"]
        );
    }

    #[test]
    fn merged_pages_stop_where_every_partition_has_been_read() {
        let at = |micros: i64| {
            let mut event = crate::NewEvent::new("u", "d")
                .expect("valid")
                .into_event(crate::partition::Partitions::default());
            event.occurred_at = crate::domain::from_micros(micros);
            event
        };
        let q = ListQuery::try_from(pb::ListEventsRequest {
            page_size: 3,
            ..request()
        })
        .expect("valid");
        // One partition read everything; another stopped early at 20 (its
        // scan bound), so nothing past 20 can be trusted complete.
        let whole = Page {
            events: vec![at(10), at(25), at(30)],
            next: None,
        };
        let (five, twenty) = (at(5), at(20));
        let cut_at = Some(Position::of(&twenty));
        let cut = Page {
            events: vec![five, twenty],
            next: cut_at,
        };
        let page = merge_pages(&q, vec![whole.clone(), cut.clone()]);
        let micros: Vec<i64> = page
            .events
            .iter()
            .map(|e| to_micros(e.occurred_at))
            .collect();
        assert_eq!(micros, [5, 10, 20]);
        assert_eq!(page.next, Some(Position::of(&page.events[2])));
        // A smaller page ends at its own last event.
        let two = ListQuery {
            page_size: 2,
            ..q.clone()
        };
        let page = merge_pages(&two, vec![whole.clone(), cut.clone()]);
        assert_eq!(page.next, Some(Position::of(&page.events[1])));
        // A larger one ends at the bound, with no event past it.
        let ten = ListQuery { page_size: 10, ..q };
        let page = merge_pages(&ten, vec![whole, cut]);
        assert_eq!(page.events.len(), 3);
        assert_eq!(page.next, cut_at);
    }
}
