//! `herald.v1.Notifier`: live notifications, filtered, resumable.
//!
//! One tail of the notification log per logger process feeds every local
//! subscriber through a bounded queue of its own ([`crate::fanout`]). A
//! subscriber that resumes after a cursor first catches up from the log: a
//! task of its own reads the log a page at a time into a queue like the live
//! ones, only when that queue has room for a page, with at most
//! `CATCH_UP_READS` (8) such reads in flight on the whole logger; then it joins
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

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::Stream;
use herald::{
    cursor::{Cursor, EntryId},
    partition::Partition,
    pb::{self, subscribe_response::Kind},
    subscription::{SubscribeRequest, SubscriptionFilter},
};
use herald_storage::NotificationFeed;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::{
    encoded::Encoded,
    fanout::{Fanout, Live, event_message},
    limits::{ActiveStreams, StreamCounts, StreamSlot},
    queue::{Budget, Ended, Published, Queue},
};

/// Entries read from the log per page while a subscriber catches up (about
/// this many in all when every partition is read), and at most half its
/// queue.
const CATCH_UP_PAGE: usize = 500;

/// Catch-up reads of the log in flight at once, all streams together: the
/// storage connection stays free for other calls and the health check
/// however many subscribers resume at once (they wait their turn, in order).
const CATCH_UP_READS: usize = 8;

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
        let user = crate::auth::user_of(&request);
        let client = match (&user, crate::auth::source_of(&request)) {
            (Some(user), _) => format!("user:{user}"),
            // Open mode: every caller is anonymous, so each connection
            // counts as a client of its own (its streams and their budget),
            // and slow subscribers on one never cut off those on another.
            (None, source) if source.is_empty() => match request.remote_addr() {
                Some(peer) => format!("connection:{peer}"),
                None => String::new(),
            },
            (None, source) => source,
        };
        let SubscribeRequest { filter, after } = request.into_inner().try_into()?;
        if user.is_some_and(|user| user != filter.user_id) {
            return Err(Status::permission_denied(
                "user tokens may only subscribe to their own notifications",
            ));
        }
        if self.shutdown.is_cancelled() {
            return Err(shutting_down());
        }
        let slot = self.streams.acquire(client)?;
        debug!(user_id = %filter.user_id, after = ?after.as_ref().map(ToString::to_string), "subscriber connected");
        let stream = subscription(
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
        Ok(Response::new(Box::pin(stream)))
    }
}

/// What one subscription stream holds on to.
struct SubscriptionParts {
    fanout: Arc<Fanout>,
    feed: Arc<dyn NotificationFeed>,
    /// Places for catch-up reads of the log, shared by every stream.
    reads: Arc<Semaphore>,
    shutdown: CancellationToken,
    heartbeat: Duration,
    /// Counts this stream against its client's limit while it is open.
    slot: StreamSlot,
}

/// The messages of one subscription: a gap notice if history was lost, what
/// was logged after `after` (if given), then live changes with heartbeats.
fn subscription(
    parts: SubscriptionParts,
    filter: SubscriptionFilter,
    after: Option<Cursor>,
) -> impl Stream<Item = Result<Encoded, Status>> + Send {
    async_stream::stream! {
        let SubscriptionParts { fanout, feed, reads, shutdown, heartbeat: idle, slot } = parts;
        // Where this subscriber is in every partition: it has had (or
        // skipped as filtered out) everything up to here.
        let mut last;
        let live = match after {
            Some(requested) => {
                // A task of its own reads the log into a queue counted
                // against the client's budget, as live messages are, while
                // this stream sends what the queue holds: a reader that
                // stops reading is cut off, its queue freed, and no page
                // is ever held for it across a yield.
                let queue = Queue::shared(slot.budget.clone());
                let stop = shutdown.child_token();
                let _stop_on_drop = stop.clone().drop_guard();
                // What the reader has had: where it resumes if cut off.
                let mut had = Arc::new(requested.clone());
                let filled = tokio::spawn(catch_up(CatchUp {
                    feed,
                    fanout: fanout.clone(),
                    reads,
                    budget: slot.budget.clone(),
                    filter: filter.clone(),
                    requested,
                    queue: queue.clone(),
                    stall: 2 * idle,
                    stop,
                }));
                loop {
                    let next = tokio::select! {
                        biased;
                        next = queue.pop() => next,
                        () = shutdown.cancelled() => {
                            yield Err(shutting_down());
                            return;
                        }
                    };
                    match next {
                        Ok(published) => {
                            had = published.cursor;
                            yield Ok(published.message);
                        }
                        Err((Ended::Filled, _)) => break,
                        Err((Ended::Lagged, held)) => {
                            for message in lagged(&had.to_string(), held) {
                                yield message;
                            }
                            return;
                        }
                        Err((Ended::Closed, _)) => {
                            yield Err(shutting_down());
                            return;
                        }
                    }
                }
                match filled.await {
                    Ok(Ok((live, cursor))) => {
                        last = cursor;
                        live
                    }
                    Ok(Err(Stopped::Failed(status))) => {
                        yield Err(status);
                        return;
                    }
                    Ok(Err(Stopped::Lagged)) | Err(_) => {
                        yield Err(shutting_down());
                        return;
                    }
                }
            }
            None => {
                // Everything up to the fan-out's position when this subscriber
                // joined was published before; everything after reaches its
                // queue. A live-only stream gets that cursor at once, so a
                // client that loses the connection before any change resumes
                // from here.
                // While the fan-out trails the log (no subscriber: the tail
                // naps; or the tail has not started), the log's end, read
                // before joining, is where this one starts: all before it
                // was logged before it joined.
                let end = if fanout.trails_log() {
                    match feed.latest_cursor().await {
                        Ok(latest) => Some(latest),
                        Err(err) => {
                            yield Err(Status::from(err));
                            return;
                        }
                    }
                } else {
                    None
                };
                let (live, mut joined_at) = fanout.subscribe(filter.clone(), slot.budget.clone());
                if let Some(end) = &end {
                    joined_at.join(end);
                }
                yield Ok(Encoded::new(&heartbeat(&joined_at)));
                last = joined_at;
                live
            }
        };
        // One timer per stream (not one per message): a tick that finds
        // nothing sent since the last one sends a heartbeat, so an idle
        // stream hears from the server every `idle` to twice that.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent = false;
        loop {
            tokio::select! {
                biased;
                published = live.queue.pop() => match published {
                    Ok(Published { partition, entry, cursor, message }) => {
                        // Already sent while catching up from the log.
                        if last.has(partition, entry) {
                            continue;
                        }
                        // Everything up to the fan-out's cursor was offered to
                        // this subscriber, live or from the log; where it read
                        // the log further, its cursor says so.
                        last.join(&cursor);
                        sent = true;
                        if last == *cursor {
                            yield Ok(message);
                        } else {
                            yield Ok(message.with_cursor(&last.to_string()));
                        }
                    }
                    Err((Ended::Lagged, held)) => {
                        for message in lagged(&last.to_string(), held) {
                            yield message;
                        }
                        return;
                    }
                    Err(_) => {
                        yield Err(shutting_down());
                        return;
                    }
                },
                () = shutdown.cancelled() => {
                    yield Err(shutting_down());
                    return;
                }
                _ = ticks.tick() => {
                    if std::mem::take(&mut sent) {
                        continue;
                    }
                    // Idle: everything up to the fan-out's position was offered to
                    // this subscriber and its queue is empty, so it has had it all.
                    last.join(&fanout.position());
                    yield Ok(Encoded::new(&heartbeat(&last)));
                }
            }
        }
    }
}

/// The end of a stream whose queue was cut off: a Lagged message saying
/// how many messages it held and where to resume, then RESOURCE_EXHAUSTED.
fn lagged(resume: &str, held: usize) -> [Result<Encoded, Status>; 2] {
    [
        Ok(Encoded::new(&pb::SubscribeResponse {
            kind: Some(Kind::Lagged(pb::Lagged {
                buffered: u32::try_from(held).unwrap_or(u32::MAX),
            })),
            cursor: resume.to_owned(),
        })),
        Err(Status::resource_exhausted(format!(
            "subscriber fell too far behind; resume after cursor {resume:?}"
        ))),
    ]
}

/// What one subscriber's catch-up from the log works with.
struct CatchUp {
    feed: Arc<dyn NotificationFeed>,
    fanout: Arc<Fanout>,
    reads: Arc<Semaphore>,
    /// The client's budget, for the live subscription it joins.
    budget: Arc<Budget>,
    filter: SubscriptionFilter,
    requested: Cursor,
    /// Where the messages go; ended as [`Ended::Filled`] when done.
    queue: Arc<Queue>,
    /// How long the reader may take nothing from a full queue.
    stall: Duration,
    /// Cancelled when the stream is dropped or the server stops.
    stop: CancellationToken,
}

/// Why a catch-up stopped before it had caught up.
enum Stopped {
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
async fn catch_up(job: CatchUp) -> Result<(Live, Cursor), Stopped> {
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
    let only = (!filter.user_id.is_empty()).then(|| partitions.of_user(&filter.user_id));
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

/// A heartbeat: the subscriber has had everything up to `cursor`.
fn heartbeat(cursor: &Cursor) -> pb::SubscribeResponse {
    pb::SubscribeResponse {
        kind: Some(Kind::Heartbeat(pb::Heartbeat {
            // Microseconds, as every time Herald sends.
            sent_at: Some(herald::domain::now().into()),
        })),
        cursor: cursor.to_string(),
    }
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
    };
    Ok((start, Some(gap)))
}

fn shutting_down() -> Status {
    Status::unavailable("server is shutting down; reconnect to another logger")
}
