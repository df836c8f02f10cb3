//! `herald.v1.Inbox`: each user's notifications as an in-app inbox shows
//! them, read from the storage (a walk of the user's events in the view's
//! statuses, and an unread count kept with every status change), for API
//! keys with the scopes and for a user's own token. The end users'
//! listener serves the same calls as JSON for the `<herald-inbox>` element
//! ([`crate::web`]).
//!
//! Read means OPENED: marking read is a status change like UpdateStatus's,
//! logged (with the new unread count) and counted as one.

use std::sync::Arc;

use herald::{
    Error, Event, EventStatus,
    domain::{FieldViolation, MAX_BATCH_CHANGES, StatusChange, parse_event_id},
    pb::{self, inbox_server::Inbox},
    query::{InboxView, ListQuery, MAX_PAGE_SIZE, PageTokens},
};
use herald_storage::{Backend, EventStore};
use tonic::{Request, Response, Status};

use crate::{
    auth::{only_own, require_user_id, user_of},
    metrics::EventMetrics,
    observe::{Write, WriteObserver},
    service::page_within,
};

/// The Inbox service over an [`EventStore`].
pub struct InboxService {
    store: Arc<dyn EventStore>,
    counters: WriteObserver,
    /// Largest response message: every page is built to fit it.
    message_limit: usize,
}

impl InboxService {
    /// The service over `backend`'s store, counting its status changes in
    /// `metrics`, answering with messages of at most `message_limit` bytes.
    pub fn new(backend: &Backend, metrics: EventMetrics, message_limit: usize) -> Self {
        Self {
            store: backend.store.clone(),
            counters: WriteObserver::new(metrics),
            message_limit,
        }
    }

    /// ListInbox for `caller` (a user token's user, if the call came with
    /// one).
    pub async fn list(
        &self,
        caller: Option<&str>,
        request: pb::ListInboxRequest,
    ) -> Result<pb::ListInboxResponse, Status> {
        only_own(caller, &request.user_id, "inbox")?;
        let tokens = PageTokens::new(self.store.page_token_key().await?);
        let query = ListQuery::parse_inbox(request, &tokens)?;
        let user = query.user_id.as_deref().unwrap_or_default();
        let unread_count = self.store.unread_count(user).await?;
        // The unread view walks the user's events: with none unread, there
        // is nothing to walk past (the badge's usual case).
        if query.inbox == Some(InboxView::Unread) && unread_count == 0 {
            return Ok(pb::ListInboxResponse {
                unread_count,
                ..pb::ListInboxResponse::default()
            });
        }
        let (notifications, next_page_token) =
            page_within(self.store.as_ref(), &query, &tokens, self.message_limit).await?;
        Ok(pb::ListInboxResponse {
            notifications,
            next_page_token,
            unread_count,
        })
    }

    /// GetUnreadCount for `caller`.
    pub async fn unread(
        &self,
        caller: Option<&str>,
        request: pb::GetUnreadCountRequest,
    ) -> Result<pb::GetUnreadCountResponse, Status> {
        only_own(caller, &request.user_id, "inbox")?;
        require_user_id(&request.user_id)?;
        Ok(pb::GetUnreadCountResponse {
            unread_count: self.store.unread_count(&request.user_id).await?,
        })
    }

    /// MarkRead for `caller`: the ids given (each checked to be one of the
    /// user's notifications before any is marked), or every notification
    /// unread when the call starts, a page at a time as a walk finds them.
    pub async fn mark_read(
        &self,
        caller: Option<&str>,
        request: pb::MarkReadRequest,
    ) -> Result<pb::MarkReadResponse, Status> {
        only_own(caller, &request.user_id, "inbox")?;
        require_user_id(&request.user_id)?;
        let user = request.user_id.as_str();
        let marked = match (request.all, request.event_ids.is_empty()) {
            (true, false) => {
                return Err(invalid("all", "give event_ids or all, not both"));
            }
            (false, true) => {
                return Err(invalid(
                    "event_ids",
                    "give the notifications to mark read, or all",
                ));
            }
            (true, true) => self.mark_all(user).await?,
            (false, false) => {
                let ids = self.notification_ids(user, &request.event_ids).await?;
                self.mark(&ids).await?
            }
        };
        Ok(pb::MarkReadResponse {
            marked: u32::try_from(marked).unwrap_or(u32::MAX),
            unread_count: self.store.unread_count(user).await?,
        })
    }

    /// Marks event `id` of `user` OPENED if it is a PROCESSED one of
    /// theirs (an email's open pixel): whether it was.
    pub async fn open(&self, id: uuid::Uuid, user: &str) -> Result<bool, Error> {
        let event = match self.store.get(id).await {
            Ok(event) => event,
            Err(Error::NotFound(_)) => return Ok(false),
            Err(err) => return Err(err),
        };
        if event.user_id != user || event.status != EventStatus::Processed {
            return Ok(false);
        }
        let marked = self
            .mark(&[(id, event.status)])
            .await
            .map_err(|status| Error::Unavailable(status.message().to_owned()))?;
        Ok(marked == 1)
    }

    /// The events `ids` name, each checked to be a notification of `user`
    /// (unknown ids answer as another user's do, so nobody can probe for
    /// ids), with the status each had.
    async fn notification_ids(
        &self,
        user: &str,
        ids: &[String],
    ) -> Result<Vec<(uuid::Uuid, EventStatus)>, Status> {
        if ids.len() > MAX_BATCH_CHANGES {
            return Err(invalid(
                "event_ids",
                &format!("at most {MAX_BATCH_CHANGES} per call, got {}", ids.len()),
            ));
        }
        let mut parsed = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            parsed.push(parse_event_id(id, &format!("event_ids[{i}]"))?);
        }
        let events = futures_util::future::join_all(parsed.iter().map(|id| self.store.get(*id)));
        let mut out = Vec::with_capacity(parsed.len());
        for (i, (id, event)) in parsed.into_iter().zip(events.await).enumerate() {
            let status = match event {
                Ok(Event {
                    user_id, status, ..
                }) if user_id == user && InboxView::All.holds(status) => status,
                Ok(_) | Err(Error::NotFound(_)) => {
                    return Err(invalid(
                        &format!("event_ids[{i}]"),
                        &format!(
                            "is not a notification of user {}",
                            herald::error::quote(user)
                        ),
                    ));
                }
                Err(err) => return Err(err.into()),
            };
            out.push((id, status));
        }
        Ok(out)
    }

    /// Marks `ids` read, a batch at a time: how many went from unread to
    /// read (each id comes with the status it had).
    async fn mark(&self, ids: &[(uuid::Uuid, EventStatus)]) -> Result<usize, Status> {
        let mut marked = 0;
        for chunk in ids.chunks(MAX_BATCH_CHANGES) {
            let changes: Vec<StatusChange> = chunk
                .iter()
                .map(|(id, _)| StatusChange::new(*id, EventStatus::Opened))
                .collect();
            let since = herald::domain::now();
            let outcomes = self.store.update_status_many(&changes).await?;
            self.counters.record(&outcomes, since, Write::Change);
            marked += chunk
                .iter()
                .zip(&outcomes)
                .filter(|((_, was), outcome)| *was == EventStatus::Processed && outcome.is_ok())
                .count();
        }
        Ok(marked)
    }

    /// Marks read every notification of `user` unread when the call
    /// starts, a page at a time as the walk finds them (so the call holds
    /// one page, however many there are): newest first, since unread ones
    /// are mostly the newest and read ones are passed over, until as many
    /// as the unread count said. Ones sent after the call began (updated
    /// since) are passed over, so they stay unread.
    async fn mark_all(&self, user: &str) -> Result<usize, Status> {
        let started = herald::domain::now();
        let count = usize::try_from(self.store.unread_count(user).await?).unwrap_or(usize::MAX);
        let mut query = ListQuery {
            user_id: Some(user.to_owned()),
            inbox: Some(InboxView::Unread),
            page_size: MAX_PAGE_SIZE,
            descending: true,
            ..ListQuery::default()
        };
        let (mut found, mut marked) = (0, 0);
        while found < count {
            let page = self.store.list(&query).await?;
            let ids: Vec<_> = page
                .events
                .iter()
                .filter(|e| e.updated_at <= started)
                .take(count - found)
                .map(|e| (e.id, e.status))
                .collect();
            found += ids.len();
            marked += self.mark(&ids).await?;
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        Ok(marked)
    }
}

/// INVALID_ARGUMENT on `field`.
fn invalid(field: &str, description: &str) -> Status {
    Error::InvalidArgument(vec![FieldViolation::new(field, description)]).into()
}

#[tonic::async_trait]
impl Inbox for InboxService {
    async fn list_inbox(
        &self,
        request: Request<pb::ListInboxRequest>,
    ) -> Result<Response<pb::ListInboxResponse>, Status> {
        let caller = user_of(&request);
        self.list(caller.as_deref(), request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_unread_count(
        &self,
        request: Request<pb::GetUnreadCountRequest>,
    ) -> Result<Response<pb::GetUnreadCountResponse>, Status> {
        let caller = user_of(&request);
        self.unread(caller.as_deref(), request.into_inner())
            .await
            .map(Response::new)
    }

    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Result<Response<pb::MarkReadResponse>, Status> {
        let caller = user_of(&request);
        InboxService::mark_read(self, caller.as_deref(), request.into_inner())
            .await
            .map(Response::new)
    }
}
