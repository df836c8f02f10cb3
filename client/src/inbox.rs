//! Each user's inbox: [`ListInbox`], a page of it, [`InboxPage`], its
//! answer, [`MarkRead`] and [`MarkedRead`], and the [`Client`] calls that
//! read it, count its unread notifications and mark them read. Callable
//! with an API key (scopes `events:read`, and `events:process` to mark
//! read) or with the user's own token ([`Client::with_api_key`] takes
//! either).

use futures_util::Stream;
use herald::{Event, pb};
use uuid::Uuid;

use crate::{Client, Error, Page, client::event_of, query::every_page_of};

/// A ListInbox query: one user's notifications, newest first, all of them
/// or the unread ones, a page at a time.
///
/// ```
/// use herald_client::ListInbox;
///
/// let query = ListInbox::new("alice").unread_only().page_size(20);
/// # let _ = query;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListInbox {
    user_id: String,
    unread_only: bool,
    page_size: i32,
    page_token: String,
}

impl ListInbox {
    /// `user_id`'s inbox, every notification, the server's page size.
    pub fn new(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            ..Self::default()
        }
    }

    /// Only the unread notifications (PROCESSED, not yet OPENED).
    pub fn unread_only(mut self) -> Self {
        self.unread_only = true;
        self
    }

    /// At most `n` notifications a page (the server's default if 0; at
    /// most 1,000).
    pub fn page_size(mut self, n: i32) -> Self {
        self.page_size = n;
        self
    }

    /// Continue from a previous page's [`InboxPage::page`]`.next`.
    pub fn page_token(mut self, token: impl Into<String>) -> Self {
        self.page_token = token.into();
        self
    }

    fn to_request(&self) -> pb::ListInboxRequest {
        pb::ListInboxRequest {
            user_id: self.user_id.clone(),
            unread_only: self.unread_only,
            page_size: self.page_size,
            page_token: self.page_token.clone(),
        }
    }
}

/// One page of an inbox, and the user's unread count when it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct InboxPage {
    /// The notifications, newest first (read ones are OPENED), and the
    /// token of the next page. A page may hold fewer than asked for even
    /// when more follow.
    pub page: Page<Event>,
    /// The user's unread notifications.
    pub unread_count: u64,
}

/// Which notifications [`Client::mark_read`] marks read (OPENED).
///
/// ```
/// use herald_client::MarkRead;
/// use uuid::Uuid;
///
/// assert_ne!(MarkRead::Ids(vec![Uuid::nil()]), MarkRead::All);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarkRead {
    /// These (1 to 1,000), each one of the user's notifications, or the
    /// call is refused naming it and nothing is marked.
    Ids(Vec<Uuid>),
    /// Every notification unread when the call starts.
    All,
}

/// What [`Client::mark_read`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkedRead {
    /// How many went from unread to read (marking a read one again does
    /// nothing).
    pub marked: u32,
    /// The user's unread notifications after the call.
    pub unread_count: u64,
}

impl Client {
    /// One page of a user's inbox; retried while the logger is unavailable.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use herald_client::ListInbox;
    ///
    /// let inbox = client.list_inbox(ListInbox::new("alice").unread_only()).await?;
    /// println!("{} unread", inbox.unread_count);
    /// for event in &inbox.page.items {
    ///     println!("{} {}", event.id, event.description);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_inbox(&self, query: ListInbox) -> Result<InboxPage, Error> {
        let request = query.to_request();
        let response = self
            .retrying_on(&self.inbox, |mut inbox| {
                let request = request.clone();
                async move { inbox.list_inbox(request).await }
            })
            .await?;
        let events = response
            .notifications
            .into_iter()
            .map(|e| event_of(Some(e)))
            .collect::<Result<_, _>>()?;
        Ok(InboxPage {
            page: Page::new(events, response.next_page_token),
            unread_count: response.unread_count,
        })
    }

    /// Every notification `query` asks for, page after page, as a stream
    /// that reads the next page when it needs it; it ends after the first
    /// error.
    pub fn inbox(
        &self,
        query: ListInbox,
    ) -> impl Stream<Item = Result<Event, Error>> + Send + 'static {
        every_page_of(
            self,
            query,
            ListInbox::page_token,
            |client, query| async move { Ok(client.list_inbox(query).await?.page) },
        )
    }

    /// How many of `user_id`'s notifications are unread; retried.
    pub async fn unread_count(&self, user_id: &str) -> Result<u64, Error> {
        let request = pb::GetUnreadCountRequest {
            user_id: user_id.to_owned(),
        };
        let response = self
            .retrying_on(&self.inbox, |mut inbox| {
                let request = request.clone();
                async move { inbox.get_unread_count(request).await }
            })
            .await?;
        Ok(response.unread_count)
    }

    /// Marks notifications of `user_id` read; retried, since marking a
    /// read one again changes nothing.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use herald_client::MarkRead;
    ///
    /// let done = client.mark_read("alice", MarkRead::All).await?;
    /// println!("{} marked read, {} unread", done.marked, done.unread_count);
    /// # Ok(()) }
    /// ```
    pub async fn mark_read(&self, user_id: &str, which: MarkRead) -> Result<MarkedRead, Error> {
        let request = pb::MarkReadRequest {
            user_id: user_id.to_owned(),
            event_ids: match &which {
                MarkRead::Ids(ids) => ids.iter().map(Uuid::to_string).collect(),
                MarkRead::All => Vec::new(),
            },
            all: which == MarkRead::All,
        };
        let response = self
            .retrying_on(&self.inbox, |mut inbox| {
                let request = request.clone();
                async move { inbox.mark_read(request).await }
            })
            .await?;
        Ok(MarkedRead {
            marked: response.marked,
            unread_count: response.unread_count,
        })
    }
}
