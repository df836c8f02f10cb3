//! ListEvents queries: filters, order, page size and opaque page tokens.
//!
//! Pages are keyset-paginated on (occurred_at, event_id): a page token holds
//! the position of the last event returned, so events added later never shift
//! the pages (they appear where they sort, on a later page or not at all),
//! and nothing is repeated or skipped.

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
/// The page size of a ListInbox request that gives none.
pub const DEFAULT_INBOX_PAGE_SIZE: usize = 50;
/// Most index entries one ListEvents call looks at (in one partition)
/// before it returns a short page, resumed from the last one looked at.
pub const LIST_SCAN_LIMIT: usize = 10_000;

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
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListQuery {
    /// Only this user's events (`None`: any).
    pub user_id: Option<String>,
    /// Only this session's events (`None`: any).
    pub session_id: Option<String>,
    /// Only this category (`None`: any).
    pub category: Option<String>,
    /// Only this type (`None`: any).
    pub event_type: Option<String>,
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
    /// Walk this view of `user_id`'s inbox (ListInbox), not the events.
    pub inbox: Option<InboxView>,
}

/// Which notifications of a user's inbox a ListInbox page walks: the
/// user's events in the view's statuses (the others passed over).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InboxView {
    /// Every notification: events that reached PROCESSED (OPENED: read).
    All,
    /// The unread ones: PROCESSED, not yet OPENED.
    Unread,
}

impl InboxView {
    /// Whether an event in `status` is in this view.
    pub fn holds(self, status: EventStatus) -> bool {
        match self {
            Self::All => matches!(status, EventStatus::Processed | EventStatus::Opened),
            Self::Unread => status == EventStatus::Processed,
        }
    }

    /// The name of its index kind (`inbox`, `unread`), per user.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "inbox",
            Self::Unread => "unread",
        }
    }
}

impl ListQuery {
    /// Whether `event` passes every filter (the order and page aside).
    pub fn matches(&self, event: &Event) -> bool {
        let micros = to_micros(event.occurred_at);
        let is =
            |wanted: &Option<String>, value: &String| wanted.as_ref().is_none_or(|w| w == value);
        is(&self.user_id, &event.user_id)
            && is(&self.session_id, &event.session_id)
            && is(&self.category, &event.category)
            && is(&self.event_type, &event.event_type)
            && self.status.is_none_or(|s| event.status == s)
            && self.after_micros.is_none_or(|a| micros >= a)
            && self.before_micros.is_none_or(|b| micros < b)
            && self.inbox.is_none_or(|view| view.holds(event.status))
    }

    /// Whether `position` comes after the page token's position, in this order.
    pub fn is_past_cursor(&self, position: Position) -> bool {
        match self.after {
            None => true,
            Some(cursor) if self.descending => position < cursor,
            Some(cursor) => position > cursor,
        }
    }
}

/// Page tokens, signed so that a caller can neither forge a position nor
/// carry a token over to other filters or another order: a token is the
/// position of the last event of a page (occurred_at and id) and an
/// HMAC-SHA256 (cut to 16 bytes) of that position with the query's filters
/// and order, under a key the storage keeps for the whole deployment
/// (`EventStore::page_token_key` of the `backend` feature), so any logger reads
/// another's tokens. A token that does not verify is INVALID_ARGUMENT.
#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

/// The first byte of a token: its version.
const TOKEN_VERSION: u8 = 2;
/// Bytes of a token: the version, occurred_at (8), the id (16), the MAC (16).
const TOKEN_BYTES: usize = 1 + 8 + 16 + 16;

impl PageTokens {
    /// Tokens signed with `key`.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The token of the page of `query` after one that ended at `last`.
    pub fn sign(&self, query: &ListQuery, last: Position) -> String {
        let mut bytes = Vec::with_capacity(TOKEN_BYTES);
        bytes.push(TOKEN_VERSION);
        bytes.extend_from_slice(&last.occurred_micros.to_be_bytes());
        bytes.extend_from_slice(last.id.as_bytes());
        bytes.extend_from_slice(&self.mac(query, last));
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The position `token` holds, if it is a token of `query` signed with
    /// this key.
    pub fn read(&self, query: &ListQuery, token: &str) -> Option<Position> {
        if token.len() != 2 * TOKEN_BYTES {
            return None;
        }
        let bytes: Vec<u8> = (0..token.len())
            .step_by(2)
            .map(|i| {
                token
                    .get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect::<Option<_>>()?;
        if bytes[0] != TOKEN_VERSION {
            return None;
        }
        let position = Position {
            occurred_micros: i64::from_be_bytes(bytes[1..9].try_into().ok()?),
            id: Uuid::from_slice(&bytes[9..25]).ok()?,
        };
        let expected = self.mac(query, position);
        // Constant time: a forger learns nothing from how long it took.
        let diff = expected
            .iter()
            .zip(&bytes[25..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then_some(position)
    }

    /// The MAC of `position` within `query`'s filters and order, each field
    /// length-prefixed so that no two queries share an encoding.
    fn mac(&self, query: &ListQuery, position: Position) -> [u8; 16] {
        use hmac::{Hmac, Mac};
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(&[TOKEN_VERSION]);
        // No filter is encoded as an empty one, as tokens always were.
        for text in [
            &query.user_id,
            &query.session_id,
            &query.category,
            &query.event_type,
        ]
        .map(|filter| filter.as_deref().unwrap_or_default())
        {
            mac.update(&(text.len() as u64).to_be_bytes());
            mac.update(text.as_bytes());
        }
        mac.update(&[query.status.map_or(0xff, |s| s.index() as u8)]);
        for bound in [query.after_micros, query.before_micros] {
            match bound {
                Some(micros) => {
                    mac.update(&[1]);
                    mac.update(&micros.to_be_bytes());
                }
                None => mac.update(&[0]),
            }
        }
        mac.update(&[u8::from(query.descending)]);
        // Nothing for ListEvents' queries, as their tokens always were.
        if let Some(view) = query.inbox {
            mac.update(view.as_str().as_bytes());
        }
        mac.update(&position.occurred_micros.to_be_bytes());
        mac.update(position.id.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }
}

impl ListQuery {
    /// Validates a ListEvents request; its page token must be one `tokens`
    /// signed for the same filters and order.
    pub fn parse(r: pb::ListEventsRequest, tokens: &PageTokens) -> Result<Self, Error> {
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
            user_id: given(r.user_id),
            session_id: given(r.session_id),
            category: given(r.category),
            event_type: given(r.r#type),
            status,
            after_micros,
            before_micros,
            descending,
            page_size,
            after: None,
            inbox: None,
        };
        read_token(&mut query, &r.page_token, tokens, &mut violations);
        if violations.is_empty() {
            Ok(query)
        } else {
            Err(Error::InvalidArgument(violations))
        }
    }

    /// Validates a ListInbox request: a page of one user's inbox, newest
    /// first; its page token must be one `tokens` signed for the same
    /// request.
    pub fn parse_inbox(r: pb::ListInboxRequest, tokens: &PageTokens) -> Result<Self, Error> {
        let mut violations = Vec::new();
        violations.extend(crate::domain::check_user_id("user_id", &r.user_id));
        let page_size = match r.page_size {
            0 => DEFAULT_INBOX_PAGE_SIZE,
            n if n < 0 => {
                violations.push(FieldViolation::new("page_size", "must not be negative"));
                DEFAULT_INBOX_PAGE_SIZE
            }
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        let mut query = ListQuery {
            user_id: Some(r.user_id),
            descending: true,
            page_size,
            inbox: Some(if r.unread_only {
                InboxView::Unread
            } else {
                InboxView::All
            }),
            ..ListQuery::default()
        };
        read_token(&mut query, &r.page_token, tokens, &mut violations);
        if violations.is_empty() {
            Ok(query)
        } else {
            Err(Error::InvalidArgument(violations))
        }
    }
}

/// Sets `query`'s position from `token` (none if empty), or says why not.
fn read_token(
    query: &mut ListQuery,
    token: &str,
    tokens: &PageTokens,
    violations: &mut Vec<FieldViolation>,
) {
    if token.is_empty() {
        return;
    }
    match tokens.read(query, token) {
        Some(position) => query.after = Some(position),
        None => violations.push(FieldViolation::new(
            "page_token",
            "is not a page token of this query: it was altered, or the filters or \
             order changed (they must stay the same)",
        )),
    }
}

/// A filter's value, `None` when the request left it empty (any).
fn given(value: String) -> Option<String> {
    Some(value).filter(|v| !v.is_empty())
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

    fn tokens() -> PageTokens {
        PageTokens::new([7; 32])
    }

    fn parse(r: pb::ListEventsRequest) -> Result<ListQuery, Error> {
        ListQuery::parse(r, &tokens())
    }

    fn fields(err: Error) -> Vec<String> {
        err.into_violations().into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn defaults_and_limits() {
        let q = parse(request()).expect("valid");
        assert_eq!(
            (q.page_size, q.descending, q.status),
            (DEFAULT_PAGE_SIZE, false, None)
        );
        let big = parse(pb::ListEventsRequest {
            page_size: 5000,
            ..request()
        })
        .expect("coerced");
        assert_eq!(big.page_size, MAX_PAGE_SIZE);
        let desc = parse(pb::ListEventsRequest {
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
            fields(parse(bad).expect_err("invalid")),
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
        let q = parse(pb::ListEventsRequest {
            user_id: "ada".into(),
            ..request()
        })
        .expect("valid");
        let position = Position {
            occurred_micros: 1_700_000_000_000_000,
            id: Uuid::now_v7(),
        };
        let token = tokens().sign(&q, position);
        let next = parse(pb::ListEventsRequest {
            user_id: "ada".into(),
            page_token: token.clone(),
            ..request()
        })
        .expect("same filters");
        assert_eq!(next.after, Some(position));
        let other = pb::ListEventsRequest {
            user_id: "bob".into(),
            page_token: token.clone(),
            ..request()
        };
        assert_eq!(
            fields(parse(other).expect_err("other filters")),
            ["page_token"]
        );
        // A token changed anywhere, made for another order, or signed with
        // another key is refused.
        let mut forged = token.clone().into_bytes();
        forged[10] = if forged[10] == b'0' { b'1' } else { b'0' };
        let forged = String::from_utf8(forged).expect("hex");
        let desc = ListQuery {
            descending: true,
            ..q.clone()
        };
        let other_key = PageTokens::new([8; 32]).sign(&q, position);
        for (token, query) in [
            (&forged, &q),
            (&token, &desc),
            (&other_key, &q),
            (&format!("{token}00"), &q),
        ] {
            assert_eq!(tokens().read(query, token), None, "{token}");
        }
        // The old, unsigned form is refused too.
        let plain: String = format!("v1|{}|{}|0", position.occurred_micros, position.id)
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(tokens().read(&q, &plain), None);
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
        let q = parse(pb::ListEventsRequest {
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
