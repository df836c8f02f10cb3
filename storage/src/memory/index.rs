//! The memory backend's query indexes: every event's position in the
//! (occurred_at, event_id) order, overall and per user, session, category
//! and type, as Redis keeps them. A ListEvents page walks the smallest
//! index its filters name from its page token on, so it costs about what
//! the page holds, not a scan of every event.

use std::{
    collections::{BTreeSet, HashMap},
    ops::Bound,
};

use uuid::Uuid;

use herald::{
    domain::{Event, EventStatus},
    query::{InboxView, LIST_SCAN_LIMIT, ListQuery, Page, Position},
};

/// A field with an index of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Field {
    User,
    Session,
    Category,
    Type,
}

/// Each event's position, overall and by the value of each indexed field.
#[derive(Default)]
pub(super) struct Indexes {
    all: BTreeSet<Position>,
    by: HashMap<(Field, String), BTreeSet<Position>>,
    /// Each user's unread notifications (PROCESSED), kept with status
    /// changes; a user with none has no entry. The inbox itself is the
    /// user's index, walked with the view as a filter, as on Redis.
    unread: HashMap<String, u64>,
}

/// The indexed fields of `event` that it has (none is not indexed).
fn fields(event: &Event) -> impl Iterator<Item = (Field, &str)> {
    [
        (Field::User, event.user_id.as_str()),
        (Field::Session, event.session_id.as_str()),
        (Field::Category, event.category.as_str()),
        (Field::Type, event.event_type.as_str()),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_empty())
}

impl Indexes {
    /// Indexes a new event.
    pub(super) fn insert(&mut self, event: &Event) {
        let at = Position::of(event);
        self.all.insert(at);
        for (field, value) in fields(event) {
            self.by
                .entry((field, value.to_owned()))
                .or_default()
                .insert(at);
        }
    }

    /// Counts `event`'s change (to its status now, from `from`) in its
    /// user's unread count; returns the count if the change moved it.
    pub(super) fn status_changed(&mut self, event: &Event, from: EventStatus) -> Option<u64> {
        let unread = InboxView::Unread;
        match (unread.holds(from), unread.holds(event.status)) {
            (false, true) => *self.unread.entry(event.user_id.clone()).or_default() += 1,
            (true, false) => self.read_one(&event.user_id),
            _ => return None,
        }
        Some(self.unread(&event.user_id))
    }

    /// How many unread notifications `user` has.
    pub(super) fn unread(&self, user: &str) -> u64 {
        self.unread.get(user).copied().unwrap_or(0)
    }

    /// Takes one off `user`'s unread count, dropping it at zero.
    fn read_one(&mut self, user: &str) {
        if let Some(count) = self.unread.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.unread.remove(user);
            }
        }
    }

    /// Forgets a removed event.
    pub(super) fn remove(&mut self, event: &Event) {
        let at = Position::of(event);
        if InboxView::Unread.holds(event.status) {
            self.read_one(&event.user_id);
        }
        self.all.remove(&at);
        for (field, value) in fields(event) {
            let key = (field, value.to_owned());
            if let Some(index) = self.by.get_mut(&key) {
                index.remove(&at);
                if index.is_empty() {
                    self.by.remove(&key);
                }
            }
        }
    }

    /// The index to walk for `query`: the smallest its equality filters
    /// name, or every event; `None` when a filter's value has no event.
    fn walk(&self, query: &ListQuery) -> Option<&BTreeSet<Position>> {
        let named = [
            (Field::User, &query.user_id),
            (Field::Session, &query.session_id),
            (Field::Category, &query.category),
            (Field::Type, &query.event_type),
        ];
        let mut smallest = &self.all;
        for (field, value) in named {
            let Some(value) = value else {
                continue;
            };
            let index = self.by.get(&(field, value.clone()))?;
            if index.len() < smallest.len() {
                smallest = index;
            }
        }
        Some(smallest)
    }

    /// One page of `query` over `events`, walked from its page token (or
    /// its time bound) in its order: at most [`LIST_SCAN_LIMIT`] positions
    /// are looked at, after which a short page resumes from the last one.
    pub(super) fn page(&self, query: &ListQuery, events: &HashMap<Uuid, Event>) -> Page {
        let Some(index) = self.walk(query) else {
            return Page::default();
        };
        let at = |micros: i64| Position {
            occurred_micros: micros,
            id: Uuid::nil(),
        };
        let (from, to) = if query.descending {
            let from = match (query.after, query.after_micros) {
                (Some(cursor), _) => Bound::Excluded(cursor),
                _ => query
                    .before_micros
                    .map_or(Bound::Unbounded, |b| Bound::Excluded(at(b))),
            };
            let to = query
                .after_micros
                .map_or(Bound::Unbounded, |a| Bound::Included(at(a)));
            (to, from)
        } else {
            let from = match query.after {
                Some(cursor) => Bound::Excluded(cursor),
                None => query
                    .after_micros
                    .map_or(Bound::Unbounded, |a| Bound::Included(at(a))),
            };
            let to = query
                .before_micros
                .map_or(Bound::Unbounded, |b| Bound::Excluded(at(b)));
            (from, to)
        };
        if bounds_cross(&from, &to) {
            return Page::default();
        }
        let range = index.range((from, to));
        let walked: Box<dyn Iterator<Item = &Position>> = if query.descending {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut page = Vec::new();
        let mut seen = None;
        for (scanned, position) in walked.enumerate() {
            if scanned == LIST_SCAN_LIMIT {
                return Page {
                    events: page,
                    next: seen,
                };
            }
            seen = Some(*position);
            let Some(event) = events.get(&position.id) else {
                continue;
            };
            if !query.matches(event) || !query.is_past_cursor(*position) {
                continue;
            }
            if page.len() == query.page_size {
                let next = page.last().map(Position::of);
                return Page { events: page, next };
            }
            page.push(event.clone());
        }
        Page {
            events: page,
            next: None,
        }
    }
}

/// Whether a range from `from` to `to` would be empty for being upside
/// down (`BTreeSet::range` panics on those).
fn bounds_cross(from: &Bound<Position>, to: &Bound<Position>) -> bool {
    match (from, to) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
        _ => false,
    }
}
