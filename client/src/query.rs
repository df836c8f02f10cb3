//! [`ListEvents`]: a ListEvents query built step by step, and [`Page`], one
//! page of its answer. [`Client::events`](crate::Client::events) follows the
//! pages by itself, as every listing does, through `every_page`.

use std::time::SystemTime;

use futures_util::{Stream, TryStreamExt, stream};
use herald::{EventStatus, pb};

use crate::{Client, Error};

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

/// Every item of `query`'s pages, as [`every_page`] reads them: `fetch`
/// reads the page of `query` with the token `resume` sets (none: the first).
pub(crate) fn every_page_of<Q, T, R, F, Fut>(
    client: &Client,
    query: Q,
    resume: R,
    fetch: F,
) -> impl Stream<Item = Result<T, Error>> + Send + 'static
where
    Q: Clone + Send + 'static,
    T: Send + 'static,
    R: Fn(Q, String) -> Q + Send + 'static,
    F: Fn(Client, Q) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T>, Error>> + Send + 'static,
{
    let client = client.clone();
    every_page(move |token| {
        let query = match token {
            Some(token) => resume(query.clone(), token),
            None => query.clone(),
        };
        fetch(client.clone(), query)
    })
}

/// Every item of a listing, page after page: `fetch` reads the page a token
/// names (`None`: the first), and the stream asks for the next page only when
/// it needs it. The stream ends after the first error, and with an error if
/// the server names the page just read as the next one.
pub(crate) fn every_page<T, F, Fut>(
    fetch: F,
) -> impl Stream<Item = Result<T, Error>> + Send + 'static
where
    T: Send + 'static,
    F: Fn(Option<String>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T>, Error>> + Send + 'static,
{
    stream::try_unfold(Some(None), move |token: Option<Option<String>>| {
        let page = token.clone().map(&fetch);
        async move {
            let Some(page) = page else {
                return Ok::<_, Error>(None);
            };
            let page = page.await?;
            // A server that names the page just read as the next would make
            // the stream go round forever.
            if page.next.is_some() && page.next == token.flatten() {
                return Err(Error::InvalidResponse(
                    "the next page token is the one just read".into(),
                ));
            }
            Ok(Some((
                stream::iter(page.items.into_iter().map(Ok)),
                page.next.map(Some),
            )))
        }
    })
    .try_flatten()
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn pages_are_followed_and_a_token_that_repeats_ends_the_stream() {
        // Three pages: "" → "b" → "c" → end.
        let pages = every_page(|token: Option<String>| async move {
            let (items, next) = match token.as_deref() {
                None => (vec![1, 2], "b"),
                Some("b") => (vec![3], "c"),
                _ => (vec![4], ""),
            };
            Ok(Page::new(items, next.into()))
        });
        let all: Vec<u32> = pages.try_collect().await.expect("every page");
        assert_eq!(all, [1, 2, 3, 4]);

        // A server naming the same page again.
        let stuck =
            every_page(|_token: Option<String>| async { Ok(Page::new(vec![7], "same".into())) });
        let seen: Vec<Result<u32, Error>> = stuck.collect().await;
        assert_eq!(seen.len(), 2, "the first page, then the error");
        assert!(matches!(seen[1], Err(Error::InvalidResponse(_))));
    }
}
