//! [`ListEvents`]: a ListEvents query built step by step, and [`Page`], one
//! page of its answer. [`Client::events`](crate::Client::events) follows the
//! pages by itself.

use std::time::SystemTime;

use herald::{EventStatus, pb};

/// Which events to list, in which order, how many per page.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use herald_client::{EventStatus, ListEvents};
///
/// let day_ago = SystemTime::now() - Duration::from_secs(86_400);
/// let query = ListEvents::new()
///     .user("alice")
///     .status(EventStatus::Processed)
///     .since(day_ago)
///     .newest_first()
///     .page_size(50);
/// # let _ = query;
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListEvents {
    request: pb::ListEventsRequest,
}

impl ListEvents {
    /// Every event, oldest first, at the server's default page size.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only this user's events (read from one partition).
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.request.user_id = user_id.into();
        self
    }

    /// Only this session's events.
    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.request.session_id = session_id.into();
        self
    }

    /// Only this category.
    pub fn category(mut self, category: impl Into<String>) -> Self {
        self.request.category = category.into();
        self
    }

    /// Only this type.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.request.r#type = event_type.into();
        self
    }

    /// Only events in this status now.
    pub fn status(mut self, status: EventStatus) -> Self {
        self.request.status = status.to_pb() as i32;
        self
    }

    /// Only events that occurred at or after `time`.
    pub fn since(mut self, time: SystemTime) -> Self {
        self.request.occurred_after = Some(time.into());
        self
    }

    /// Only events that occurred before `time`.
    pub fn until(mut self, time: SystemTime) -> Self {
        self.request.occurred_before = Some(time.into());
        self
    }

    /// Newest first (by occurred_at, then id) instead of oldest first.
    pub fn newest_first(mut self) -> Self {
        self.request.order_by = "occurred_at desc".into();
        self
    }

    /// At most this many events per page (the server allows 1 to 1,000).
    pub fn page_size(mut self, size: u32) -> Self {
        self.request.page_size = i32::try_from(size).unwrap_or(i32::MAX);
        self
    }

    /// Starts at the page this token names (a [`Page::next`] of the same query).
    pub fn page_token(mut self, token: impl Into<String>) -> Self {
        self.request.page_token = token.into();
        self
    }

    /// The request these settings make.
    pub fn to_request(&self) -> pb::ListEventsRequest {
        self.request.clone()
    }
}

/// One page of a listing, and where the next one starts.
///
/// ```no_run
/// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
/// use herald_client::ListEvents;
///
/// let query = ListEvents::new().user("alice").page_size(100);
/// let mut page = client.list_events(query.clone()).await?;
/// loop {
///     for event in &page.items {
///         println!("{}", event.description);
///     }
///     match page.next {
///         Some(token) => page = client.list_events(query.clone().page_token(token)).await?,
///         None => break,
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// What this page holds, in the query's order.
    pub items: Vec<T>,
    /// The token of the next page ([`ListEvents::page_token`]); `None` on the last page.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page of `items`, followed by the page of `next_page_token` (empty: none).
    pub(crate) fn new(items: Vec<T>, next_page_token: String) -> Self {
        Self {
            items,
            next: Some(next_page_token).filter(|t| !t.is_empty()),
        }
    }
}
