//! One Subscribe stream as a small state machine: catching up from the log,
//! joining the live feed, live, ended.
//!
//! - **Catching up** (a cursor was given): a task of its own
//!   ([`crate::catch_up`]) reads the log after the cursor into a queue
//!   counted against the client's budget, as live messages are, while the
//!   stream sends what the queue holds; once the task has caught up it hands
//!   over a live subscription and the stream goes **live**.
//! - **Joining** (no cursor): the stream joins the live feed and says at
//!   once where it starts (a heartbeat with its cursor), then goes **live**.
//! - **Live**: changes from the fan-out, each past what the stream already
//!   had (cursors drop what catching up sent), with a heartbeat after an
//!   idle interval.
//! - **Ended**: after a Lagged message and RESOURCE_EXHAUSTED (the queue
//!   was cut off), UNAVAILABLE (the server stops), or a storage error.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use futures_util::Stream;
use herald::{cursor::Cursor, pb, subscription::SubscriptionFilter};
use herald_storage::NotificationFeed;
use tokio::{sync::Semaphore, task::JoinHandle, time::Interval};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::Status;

use crate::{
    catch_up::{CatchUp, Stopped, catch_up},
    encoded::Encoded,
    fanout::{Fanout, Live},
    limits::StreamSlot,
    notifier::{heartbeat, shutting_down},
    queue::{Ended, Published, Queue},
};

/// What one subscription stream holds on to.
pub(crate) struct SubscriptionParts {
    pub(crate) fanout: Arc<Fanout>,
    pub(crate) feed: Arc<dyn NotificationFeed>,
    /// Places for catch-up reads of the log, shared by every stream.
    pub(crate) reads: Arc<Semaphore>,
    pub(crate) shutdown: CancellationToken,
    /// Idle time after which a live stream gets a heartbeat.
    pub(crate) heartbeat: Duration,
    /// Counts this stream against its client's limit while it is open.
    pub(crate) slot: StreamSlot,
}

/// Where a subscription stands.
enum State {
    /// Sending what the catch-up task put in its queue.
    CatchingUp {
        queue: Arc<Queue>,
        /// What the reader has had: where it resumes if cut off.
        had: Arc<Cursor>,
        filled: JoinHandle<Result<(Live, Cursor), Stopped>>,
        /// Stops the catch-up task when the stream is dropped.
        _stop: DropGuard,
    },
    /// About to join the live feed.
    Joining,
    /// Sending live changes.
    Live {
        live: Live,
        /// Where this subscriber is in every partition: it has had (or
        /// skipped as filtered out) everything up to here.
        last: Cursor,
        /// One timer per stream: a tick that finds nothing sent since the
        /// last one sends a heartbeat.
        ticks: Interval,
        sent: bool,
    },
    /// Nothing more to send.
    Ended,
}

/// One subscription: [`Subscription::next`] gives its messages in order.
pub(crate) struct Subscription {
    state: State,
    parts: SubscriptionParts,
    filter: SubscriptionFilter,
    /// Messages decided but not yet given (an end sends two).
    pending: VecDeque<Result<Encoded, Status>>,
}

impl Subscription {
    /// A subscription to what `filter` matches, after `after` (catching up
    /// from the log) or from now.
    pub(crate) fn new(
        parts: SubscriptionParts,
        filter: SubscriptionFilter,
        after: Option<Cursor>,
    ) -> Self {
        let state = match after {
            Some(requested) => catching_up(&parts, &filter, requested),
            None => State::Joining,
        };
        Self {
            state,
            parts,
            filter,
            pending: VecDeque::new(),
        }
    }

    /// The subscription as the stream Subscribe answers with.
    pub(crate) fn into_stream(self) -> impl Stream<Item = Result<Encoded, Status>> + Send {
        futures_util::stream::unfold(self, |mut subscription| async move {
            let next = subscription.next().await?;
            Some((next, subscription))
        })
    }

    /// The next message; `None` once the subscription has ended.
    pub(crate) async fn next(&mut self) -> Option<Result<Encoded, Status>> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Some(message);
            }
            match &mut self.state {
                State::Ended => return None,
                State::CatchingUp { .. } => self.catch_up_step().await,
                State::Joining => self.join().await,
                State::Live { .. } => self.live_step().await,
            }
        }
    }

    /// Ends the subscription with `messages` as its last.
    fn end(&mut self, messages: impl IntoIterator<Item = Result<Encoded, Status>>) {
        self.pending.extend(messages);
        self.state = State::Ended;
    }

    /// One message from the catch-up queue, or the move to live once the
    /// catch-up task has filled it.
    async fn catch_up_step(&mut self) {
        let State::CatchingUp { queue, had, .. } = &mut self.state else {
            return;
        };
        let next = tokio::select! {
            biased;
            next = queue.pop() => next,
            () = self.parts.shutdown.cancelled() => Err((Ended::Closed, 0)),
        };
        match next {
            Ok(published) => {
                *had = published.cursor;
                self.pending.push_back(Ok(published.message));
            }
            Err((Ended::Filled, _)) => {
                let State::CatchingUp { filled, .. } =
                    std::mem::replace(&mut self.state, State::Ended)
                else {
                    return;
                };
                match filled.await {
                    Ok(Ok((live, cursor))) => self.state = self.live(live, cursor),
                    Ok(Err(Stopped::Failed(status))) => self.end([Err(status)]),
                    Ok(Err(Stopped::Lagged)) | Err(_) => self.end([Err(shutting_down())]),
                }
            }
            Err((Ended::Lagged, held)) => {
                let resume = had.to_string();
                self.end(lagged(&resume, held));
            }
            Err((Ended::Closed, _)) => self.end([Err(shutting_down())]),
        }
    }

    /// Joins the live feed and says where this subscriber starts.
    async fn join(&mut self) {
        let fanout = &self.parts.fanout;
        // Everything up to the fan-out's position when this subscriber
        // joined was published before; everything after reaches its queue.
        // While the fan-out trails the log (no subscriber: the tail naps;
        // or the tail has not started), the log's end, read before joining,
        // is where this one starts: all before it was logged before it
        // joined.
        let end = if fanout.trails_log() {
            match self.parts.feed.latest_cursor().await {
                Ok(latest) => Some(latest),
                Err(err) => return self.end([Err(Status::from(err))]),
            }
        } else {
            None
        };
        let budget = self.parts.slot.budget.clone();
        let (live, mut joined_at) = fanout.subscribe(self.filter.clone(), budget);
        if let Some(end) = &end {
            joined_at.join(end);
        }
        // A live-only stream gets its cursor at once, so a client that
        // loses the connection before any change resumes from here.
        self.pending
            .push_back(Ok(Encoded::new(&heartbeat(&joined_at))));
        self.state = self.live(live, joined_at);
    }

    /// The live state from `last` on.
    fn live(&self, live: Live, last: Cursor) -> State {
        let idle = self.parts.heartbeat;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        State::Live {
            live,
            last,
            ticks,
            sent: false,
        }
    }

    /// One live change, a heartbeat, or the end.
    async fn live_step(&mut self) {
        let State::Live {
            live,
            last,
            ticks,
            sent,
        } = &mut self.state
        else {
            return;
        };
        tokio::select! {
            biased;
            published = live.queue.pop() => match published {
                Ok(Published { partition, entry, cursor, message }) => {
                    // Already sent while catching up from the log.
                    if last.has(partition, entry) {
                        return;
                    }
                    // Everything up to the fan-out's cursor was offered to
                    // this subscriber, live or from the log; where it read
                    // the log further, its cursor says so.
                    last.join(&cursor);
                    *sent = true;
                    let message = if *last == *cursor {
                        message
                    } else {
                        message.with_cursor(&last.to_string())
                    };
                    self.pending.push_back(Ok(message));
                }
                Err((Ended::Lagged, held)) => {
                    let resume = last.to_string();
                    self.end(lagged(&resume, held));
                }
                Err(_) => self.end([Err(shutting_down())]),
            },
            () = self.parts.shutdown.cancelled() => self.end([Err(shutting_down())]),
            _ = ticks.tick() => {
                if std::mem::take(sent) {
                    return;
                }
                // Idle: everything up to the fan-out's position was offered
                // to this subscriber and its queue is empty, so it has had it all.
                last.join(&self.parts.fanout.position());
                self.pending.push_back(Ok(Encoded::new(&heartbeat(last))));
            }
        }
    }
}

/// The catching-up state: the catch-up task started, reading after
/// `requested` into a queue of its own.
fn catching_up(parts: &SubscriptionParts, filter: &SubscriptionFilter, requested: Cursor) -> State {
    let queue = Queue::shared(parts.slot.budget.clone());
    let stop = parts.shutdown.child_token();
    let had = Arc::new(requested.clone());
    let filled = tokio::spawn(catch_up(CatchUp {
        feed: parts.feed.clone(),
        fanout: parts.fanout.clone(),
        reads: parts.reads.clone(),
        budget: parts.slot.budget.clone(),
        filter: filter.clone(),
        requested,
        queue: queue.clone(),
        stall: 2 * parts.heartbeat,
        stop: stop.clone(),
    }));
    State::CatchingUp {
        queue,
        had,
        filled,
        _stop: stop.drop_guard(),
    }
}

/// The end of a stream whose queue was cut off: a Lagged message saying
/// how many messages it held and where to resume, then RESOURCE_EXHAUSTED.
fn lagged(resume: &str, held: usize) -> [Result<Encoded, Status>; 2] {
    [
        Ok(Encoded::new(&pb::SubscribeResponse {
            kind: Some(pb::subscribe_response::Kind::Lagged(pb::Lagged {
                buffered: u32::try_from(held).unwrap_or(u32::MAX),
            })),
            cursor: resume.to_owned(),
            unread_count: None,
        })),
        Err(Status::resource_exhausted(format!(
            "subscriber fell too far behind; resume after cursor {resume:?}"
        ))),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use herald::{EventStatus, NewEvent, domain::StatusChange, pb::subscribe_response::Kind};
    use herald_storage::{Backend, BackendTarget};
    use uuid::Uuid;

    use super::*;
    use crate::limits::StreamCounts;

    /// A memory backend with a fan-out tailing its log.
    struct Setup {
        backend: Backend,
        fanout: Arc<Fanout>,
        shutdown: CancellationToken,
        streams: Arc<StreamCounts>,
    }

    impl Setup {
        fn new(buffer: usize) -> Self {
            let backend = herald_storage::open(&BackendTarget::Memory).expect("memory");
            let fanout = Fanout::new(buffer);
            let shutdown = CancellationToken::new();
            tokio::spawn(fanout.clone().tail(backend.feed.clone(), shutdown.clone()));
            Self {
                backend,
                fanout,
                shutdown,
                streams: Arc::new(StreamCounts::new(100, 1 << 24)),
            }
        }

        fn subscribe(&self, after: Option<Cursor>, heartbeat: Duration) -> Subscription {
            let parts = SubscriptionParts {
                fanout: self.fanout.clone(),
                feed: self.backend.feed.clone(),
                reads: Arc::new(Semaphore::new(8)),
                shutdown: self.shutdown.clone(),
                heartbeat,
                slot: self.streams.acquire("test".into()).expect("a slot"),
            };
            Subscription::new(parts, SubscriptionFilter::user("ann"), after)
        }

        /// An event of ann's, created and PROCESSED (a notification).
        async fn notify(&self) -> Uuid {
            let event = NewEvent::new("ann", "hello").expect("valid");
            let created = self.backend.store.create(event).await.expect("created");
            let change = StatusChange::new(created.id, EventStatus::Processed);
            self.backend.store.apply(change).await.expect("processed");
            created.id
        }

        /// Waits until the fan-out has read the whole log.
        async fn settled(&self) {
            let latest = self.backend.feed.latest_cursor().await.expect("latest");
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.fanout.position() != latest && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// What a message is: `event <id>`, `heartbeat`, `lagged`, or the code.
    async fn next(subscription: &mut Subscription) -> String {
        let message = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("a message in time");
        match message {
            None => "ended".into(),
            Some(Err(status)) => format!("{:?}", status.code()),
            Some(Ok(encoded)) => match encoded.decode().kind {
                Some(Kind::Event(event)) => format!("event {}", event.event_id),
                Some(Kind::Heartbeat(_)) => "heartbeat".into(),
                Some(Kind::Lagged(_)) => "lagged".into(),
                other => format!("{other:?}"),
            },
        }
    }

    const QUIET: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_live_stream_says_where_it_starts_then_sends_changes_and_ends_on_shutdown() {
        let setup = Setup::new(100);
        let mut subscription = setup.subscribe(None, QUIET);
        assert!(matches!(subscription.state, State::Joining));
        assert_eq!(next(&mut subscription).await, "heartbeat");
        assert!(matches!(subscription.state, State::Live { .. }));
        let id = setup.notify().await;
        assert_eq!(next(&mut subscription).await, format!("event {id}"));
        setup.shutdown.cancel();
        assert_eq!(next(&mut subscription).await, "Unavailable");
        assert!(matches!(subscription.state, State::Ended));
        assert_eq!(next(&mut subscription).await, "ended");
    }

    #[tokio::test]
    async fn a_resumed_stream_catches_up_then_goes_live_without_repeats() {
        let setup = Setup::new(100);
        let mut before = Vec::new();
        for _ in 0..3 {
            before.push(setup.notify().await);
        }
        let start = Cursor::start(setup.backend.feed.partitions());
        let mut subscription = setup.subscribe(Some(start), QUIET);
        assert!(matches!(subscription.state, State::CatchingUp { .. }));
        for id in &before {
            assert_eq!(next(&mut subscription).await, format!("event {id}"));
        }
        let after = setup.notify().await;
        assert_eq!(next(&mut subscription).await, format!("event {after}"));
        assert!(matches!(subscription.state, State::Live { .. }));
    }

    #[tokio::test]
    async fn an_idle_live_stream_gets_heartbeats() {
        let setup = Setup::new(100);
        let mut subscription = setup.subscribe(None, Duration::from_millis(50));
        assert_eq!(next(&mut subscription).await, "heartbeat");
        assert_eq!(next(&mut subscription).await, "heartbeat");
        assert!(matches!(subscription.state, State::Live { .. }));
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_ends_with_lagged_then_resource_exhausted() {
        let setup = Setup::new(2);
        let mut subscription = setup.subscribe(None, QUIET);
        assert_eq!(next(&mut subscription).await, "heartbeat");
        for _ in 0..5 {
            setup.notify().await;
        }
        setup.settled().await;
        assert_eq!(next(&mut subscription).await, "lagged");
        assert_eq!(next(&mut subscription).await, "ResourceExhausted");
        assert_eq!(next(&mut subscription).await, "ended");
    }

    #[tokio::test]
    async fn a_cursor_of_another_layout_ends_the_stream_naming_it() {
        let setup = Setup::new(100);
        let other = herald::partition::Partitions::new(4).expect("4 partitions");
        let mut subscription = setup.subscribe(Some(Cursor::start(other)), QUIET);
        assert_eq!(next(&mut subscription).await, "InvalidArgument");
        assert_eq!(next(&mut subscription).await, "ended");
    }
}
