//! `herald.v1.Notifier`: live notifications, filtered, resumable.
//!
//! One tail of the notification log per logger process feeds every local
//! subscriber through a bounded queue of its own ([`crate::fanout`]); each
//! stream is a `Subscription` ([`crate::subscription`]). A subscriber that
//! resumes after a cursor first catches up from the log
//! ([`crate::catch_up`]): a task of its own reads the log a page at a time
//! into a queue like the live ones, only when that queue has room for a
//! page, with at most 8 such reads in flight on the whole logger; then it joins
//! the live feed, and cursors drop what it already had, so the switch has no
//! gap and no duplicate. A subscriber whose queue is full is cut off (a
//! Lagged message, then RESOURCE_EXHAUSTED), never skipped silently; so is
//! one catching up that takes nothing for two heartbeat intervals while its
//! queue is full. Idle streams get heartbeats; on shutdown every stream ends
//! with UNAVAILABLE so clients reconnect elsewhere.
//!
//! What a client can make the logger hold is bounded twice, catching up or
//! live: each queue by `--subscriber-buffer` messages, and all the queues of
//! one client (or user) together by `--max-buffered-bytes-per-client` (see
//! [`crate::queue`]). A cut-off queue is freed at once, read or not.

use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use futures_util::Stream;
use herald::{
    cursor::Cursor,
    pb::{self, subscribe_response::Kind},
    subscription::SubscribeRequest,
};
use herald_storage::NotificationFeed;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::{
    catch_up::CATCH_UP_READS,
    encoded::Encoded,
    fanout::Fanout,
    limits::{ActiveStreams, StreamCounts},
    subscription::{Subscription, SubscriptionParts},
};

/// Keeps the notification log within `max_age`, trimming it every minute
/// (or every half of `max_age`, if shorter) until `shutdown`.
pub async fn retain(
    feed: Arc<dyn NotificationFeed>,
    max_age: Duration,
    shutdown: CancellationToken,
) {
    let every = (max_age / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        if let Err(err) = feed.trim_older_than(max_age).await {
            warn!(error = %err, "cannot trim the notification log");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => break,
        }
    }
}

/// The response stream of Subscribe: messages encoded once for every stream.
pub type SubscribeStream = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send>>;

/// How the Notifier treats its streams.
#[derive(Clone, Copy, Debug)]
pub struct NotifierOptions {
    /// Subscribe streams one client (or user) may hold at once.
    pub max_streams: usize,
    /// Encoded bytes all the queues of one client (or user) may hold.
    pub max_buffered_bytes: usize,
    /// Idle time after which a stream gets a heartbeat.
    pub heartbeat: Duration,
}

/// The Notifier service over a [`Fanout`] and the log it tails.
pub struct NotifierService {
    fanout: Arc<Fanout>,
    feed: Arc<dyn NotificationFeed>,
    /// Places for catch-up reads of the log (see [`CATCH_UP_READS`]).
    catch_up_reads: Arc<Semaphore>,
    shutdown: CancellationToken,
    streams: Arc<StreamCounts>,
    heartbeat: Duration,
}

impl NotifierService {
    /// The service; its streams end with UNAVAILABLE when `shutdown` is cancelled.
    pub fn new(
        fanout: Arc<Fanout>,
        feed: Arc<dyn NotificationFeed>,
        shutdown: CancellationToken,
        options: NotifierOptions,
    ) -> Self {
        let streams = Arc::new(StreamCounts::new(
            options.max_streams,
            options.max_buffered_bytes,
        ));
        Self {
            fanout,
            feed,
            catch_up_reads: Arc::new(Semaphore::new(CATCH_UP_READS)),
            shutdown,
            streams,
            heartbeat: options.heartbeat,
        }
    }
}

impl NotifierService {
    /// The count of its open streams, for stats.
    pub fn active_streams(&self) -> ActiveStreams {
        ActiveStreams::of(&self.streams)
    }
}

impl NotifierService {
    /// Notifier.Subscribe: the changes a request asks for, from where it
    /// asks, as a stream (served by [`crate::encoded::NotifierServer`]).
    pub async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<SubscribeStream>, Status> {
        let caller = Caller::new(
            request.extensions().get::<crate::auth::Identity>(),
            request.remote_addr(),
        );
        self.open(caller, request.into_inner()).map(Response::new)
    }

    /// Opens the stream `request` asks for on behalf of `caller`, over any
    /// transport (gRPC and gRPC-Web through [`Self::subscribe`], Server-Sent
    /// Events in [`crate::web`]): the same checks, limits and budget.
    pub fn open(
        &self,
        caller: Caller,
        request: pb::SubscribeRequest,
    ) -> Result<SubscribeStream, Status> {
        let SubscribeRequest { filter, after } = request.try_into()?;
        if caller
            .user
            .is_some_and(|user| filter.user_id.as_ref() != Some(&user))
        {
            return Err(Status::permission_denied(
                "user tokens may only subscribe to their own notifications",
            ));
        }
        if self.shutdown.is_cancelled() {
            return Err(shutting_down());
        }
        let slot = self.streams.acquire(caller.client)?;
        debug!(user_id = filter.user_id.as_deref().unwrap_or("(every user)"), after = ?after.as_ref().map(ToString::to_string), "subscriber connected");
        let subscription = Subscription::new(
            SubscriptionParts {
                fanout: self.fanout.clone(),
                feed: self.feed.clone(),
                reads: self.catch_up_reads.clone(),
                shutdown: self.shutdown.clone(),
                heartbeat: self.heartbeat,
                slot,
            },
            filter,
            after,
        );
        Ok(Box::pin(subscription.into_stream()))
    }
}

/// Who opens a stream: the end user a token speaks for, if any, and the
/// client whose limits (streams, buffered bytes) the stream counts against.
#[derive(Clone, Debug)]
pub struct Caller {
    user: Option<String>,
    client: String,
}

impl Caller {
    /// The caller of `identity` (none: no credentials were checked) from
    /// `peer`.
    pub fn new(identity: Option<&crate::auth::Identity>, peer: Option<SocketAddr>) -> Self {
        let user = identity.and_then(|identity| identity.user.clone());
        let source = identity.map_or_else(String::new, |identity| identity.client_id.clone());
        let client = match (&user, source) {
            (Some(user), _) => format!("user:{user}"),
            // Open mode: every caller is anonymous, so each connection
            // counts as a client of its own (its streams and their budget),
            // and slow subscribers on one never cut off those on another.
            (None, source) if source.is_empty() => peer
                .map(|peer| format!("connection:{peer}"))
                .unwrap_or_default(),
            (None, source) => source,
        };
        Self { user, client }
    }
}

/// A heartbeat: the subscriber has had everything up to `cursor`.
pub(crate) fn heartbeat(cursor: &Cursor) -> pb::SubscribeResponse {
    pb::SubscribeResponse {
        kind: Some(Kind::Heartbeat(pb::Heartbeat {
            // Microseconds, as every time Herald sends.
            sent_at: Some(herald::domain::now().into()),
        })),
        cursor: cursor.to_string(),
        unread_count: None,
    }
}

/// Why a stream ends while the server stops.
pub(crate) fn shutting_down() -> Status {
    Status::unavailable("server is shutting down; reconnect to another logger")
}
