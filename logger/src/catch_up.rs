//! A resuming subscriber's catch-up from the notification log: a task of
//! its own reads the log after the subscriber's cursor a page at a time
//! into a queue counted against the client's budget, only when the queue
//! has room for the most one read can give, with at most
//! `CATCH_UP_READS` such reads in flight on the whole logger; then it
//! joins the live feed and reads the log once more for what came
//! meanwhile. A reader that takes nothing from a full queue for the stall
//! time is cut off.

use std::{sync::Arc, time::Duration};

use herald::{
    cursor::{Cursor, EntryId},
    partition::Partition,
    pb::{self, subscribe_response::Kind},
    subscription::SubscriptionFilter,
};
use herald_storage::NotificationFeed;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    encoded::Encoded,
    fanout::{Fanout, Live, event_message},
    notifier::shutting_down,
    queue::{Budget, Ended, Published, Queue},
};

/// Entries read from the log per page while a subscriber catches up (about
/// this many in all when every partition is read), and at most half its
/// queue.
const CATCH_UP_PAGE: usize = 500;

/// Catch-up reads of the log in flight at once, all streams together: the
/// storage connection stays free for other calls and the health check
/// however many subscribers resume at once (they wait their turn, in order).
pub(crate) const CATCH_UP_READS: usize = 8;

/// What one subscriber's catch-up from the log works with.
pub(crate) struct CatchUp {
    pub(crate) feed: Arc<dyn NotificationFeed>,
    pub(crate) fanout: Arc<Fanout>,
    pub(crate) reads: Arc<Semaphore>,
    /// The client's budget, for the live subscription it joins.
    pub(crate) budget: Arc<Budget>,
    pub(crate) filter: SubscriptionFilter,
    pub(crate) requested: Cursor,
    /// Where the messages go; ended as [`Ended::Filled`] when done.
    pub(crate) queue: Arc<Queue>,
    /// How long the reader may take nothing from a full queue.
    pub(crate) stall: Duration,
    /// Cancelled when the stream is dropped or the server stops.
    pub(crate) stop: CancellationToken,
}

/// Why a catch-up stopped before it had caught up.
pub(crate) enum Stopped {
    /// The reader fell behind and was cut off (its queue says so).
    Lagged,
    /// The log could not be read (or the cursor was refused).
    Failed(Status),
}

/// Reads the log after `requested` into the queue, a page at a time and
/// only when the queue has room for a page, then joins the live feed and
/// reads the log once more for what came meanwhile: returns the live
/// subscription and the cursor the reader has had everything up to. A gap
/// notice goes first when the log no longer holds all that was asked for.
/// One user's changes are all in that user's partition.
pub(crate) async fn catch_up(job: CatchUp) -> Result<(Live, Cursor), Stopped> {
    let filled = tokio::select! {
        filled = fill(&job) => filled,
        () = job.stop.cancelled() => Err(Stopped::Failed(shutting_down())),
    };
    job.queue.end(Ended::Filled);
    filled
}

async fn fill(job: &CatchUp) -> Result<(Live, Cursor), Stopped> {
    let CatchUp {
        feed,
        fanout,
        reads,
        budget,
        filter,
        requested,
        queue,
        stall,
        stop: _,
    } = job;
    let partitions = feed.partitions();
    let only = filter.user_id.as_ref().map(|user| partitions.of_user(user));
    let page = (fanout.buffer() / 2).clamp(1, CATCH_UP_PAGE);
    let per_partition = match only {
        Some(_) => page,
        None => page.div_ceil(partitions.count()).max(1),
    };
    // The most one read can give, which the queue always has room for
    // (the bytes are bounded by the client's budget whatever this is).
    let most = if only.is_some() {
        page
    } else {
        per_partition * partitions.count()
    };
    let max = fanout.buffer().max(most);
    let push = |message: pb::SubscribeResponse, partition, entry, cursor: &Cursor| {
        let published = Published {
            partition,
            entry,
            cursor: Arc::new(cursor.clone()),
            message: Encoded::new(&message),
        };
        let bytes = published.message.len();
        queue.push(&published, bytes, max)
    };
    let (mut cursor, gap) = in_turn(reads, history_start(feed.as_ref(), requested)).await?;
    if let Some(gap) = gap
        && !push(gap, Partition::default(), EntryId::default(), &cursor)
    {
        return Err(Stopped::Lagged);
    }
    let mut live = None;
    loop {
        if !queue.wait_for_room(max - most, *stall).await {
            return Err(Stopped::Lagged);
        }
        let notifications = in_turn(reads, async {
            feed.read_range(&cursor, only, per_partition)
                .await
                .map_err(Status::from)
        })
        .await?;
        for notification in &notifications {
            cursor.advance(notification.partition, notification.entry);
            if filter.matches(&notification.event)
                && !push(
                    event_message(notification, &cursor),
                    notification.partition,
                    notification.entry,
                    &cursor,
                )
            {
                return Err(Stopped::Lagged);
            }
        }
        if !notifications.is_empty() {
            continue;
        }
        if let Some(live) = live {
            return Ok((live, cursor));
        }
        live = Some(fanout.subscribe(filter.clone(), budget.clone()).0);
    }
}

/// `read` once one of the catch-up reads' places is free.
async fn in_turn<T>(
    reads: &Semaphore,
    read: impl Future<Output = Result<T, Status>>,
) -> Result<T, Stopped> {
    let _place = reads
        .acquire()
        .await
        .map_err(|_| Stopped::Failed(shutting_down()))?;
    read.await.map_err(Stopped::Failed)
}

/// Where reading after `requested` starts, with a gap notice when the log no
/// longer holds everything after it in some partition (trimmed, or reset
/// since): there it starts at the oldest entry kept.
async fn history_start(
    feed: &dyn NotificationFeed,
    requested: &Cursor,
) -> Result<(Cursor, Option<pb::SubscribeResponse>), Status> {
    requested.check(feed.partitions(), "after_cursor")?;
    let history = feed.history().await?;
    let mut start = requested.clone();
    let (mut reset, mut trimmed) = (Vec::new(), Vec::new());
    for p in feed.partitions().all() {
        let at = requested.get(p);
        if at > history.last.get(p) {
            reset.push(p.to_string());
        } else if at < history.trimmed_through.get(p) {
            trimmed.push(p.to_string());
        } else {
            continue;
        }
        start.set(p, history.trimmed_through.get(p));
    }
    let reason = match (reset.is_empty(), trimmed.is_empty()) {
        (true, true) => return Ok((start, None)),
        (false, _) => format!(
            "the cursor is ahead of the notification log of partitions {}, which was reset since; changes after it may be lost",
            reset.join(",")
        ),
        (true, false) => format!(
            "history of partitions {} before the oldest kept cursor was trimmed by retention; changes after the requested cursor may be lost",
            trimmed.join(",")
        ),
    };
    let oldest = start.to_string();
    let gap = pb::SubscribeResponse {
        kind: Some(Kind::HistoryGap(pb::HistoryGap {
            requested_cursor: requested.to_string(),
            oldest_cursor: oldest.clone(),
            reason,
        })),
        cursor: oldest,
        unread_count: None,
    };
    Ok((start, Some(gap)))
}
