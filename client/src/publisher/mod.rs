//! [`Publisher`]: publishing events from inside a request handler without
//! ever failing, or slowing, that request because Herald is slow or down.
//!
//! [`Publisher::publish`] puts the event in a bounded buffer and returns. A
//! background task takes events from the buffer in batches (up to
//! [`PublisherOptions::batch_size`] events or [`PublisherOptions::max_batch_bytes`],
//! waiting at most [`PublisherOptions::linger`] for a batch to fill) and sends
//! each through CreateEvents, several batches at once.
//!
//! - Every event gets a `request_id` when it is queued (unless it has one),
//!   and an `occurred_at` (unless it has one): a retry never creates a
//!   duplicate, and an event sent late still says when it happened.
//! - UNAVAILABLE (a logger that is down, restarting or unreachable),
//!   DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED are retried, for the whole batch
//!   or for the events that got them, after an exponential backoff with
//!   jitter, or after the wait the server asked for (`google.rpc.RetryInfo`,
//!   at most a minute).
//!   Retries go on until the event is stored or the publisher is closed.
//! - Any other refusal (an invalid event, a key without the scope) is counted
//!   as refused and logged, never retried.
//! - A full buffer drops the newest event and counts it (or, with
//!   [`WhenFull::Wait`], the caller waits up to a deadline for room).
//!
//! The buffer counts an event from [`Publisher::publish`] until it is
//! stored or refused, so [`PublisherOptions::capacity`] bounds the memory the
//! publisher holds, batches being retried included.
//!
//! # Layout
//! - `options.rs`: [`PublisherOptions`], [`WhenFull`], [`Observer`] and
//!   [`Outcome`], and what calls answer: [`Publish`], [`PublisherStats`],
//!   [`Unflushed`].
//! - `mod.rs`: the [`Publisher`] handle: the buffer, `publish`, `stats`,
//!   `flush`, `close`.
//! - `send.rs`: the background task: batches out of the queue, sends,
//!   retries and the outcome of each event.

mod options;
mod send;

pub use options::{
    Observer, Outcome, Publish, PublisherOptions, PublisherStats, Unflushed, WhenFull,
};

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use herald::{domain::EventInput, pb};
use prost::Message as _;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch},
    task::JoinHandle,
};
use uuid::Uuid;

use crate::{Client, client::create_request};

/// Publishes events in the background: [`Publisher::publish`] never fails and
/// never waits for the logger. Cheap to clone; clones share the buffer.
///
/// ```no_run
/// # async fn demo() -> Result<(), herald_client::Error> {
/// use std::time::Duration;
/// use herald_client::{Client, EventInput, Publisher, PublisherOptions};
///
/// let client = Client::connect_lazy("http://127.0.0.1:50051")?;
/// let publisher = Publisher::new(client, PublisherOptions::default());
/// publisher
///     .publish(EventInput {
///         user_id: "alice".into(),
///         description: "Welcome aboard".into(),
///         event_type: "user.created".into(),
///         ..EventInput::default()
///     })
///     .await;
/// // At shutdown: send what is buffered, for at most five seconds.
/// let stats = publisher.close(Duration::from_secs(5)).await;
/// println!("{} published, {} dropped", stats.published, stats.dropped);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Item>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// What the publisher's handles and its background task share.
pub(super) struct Shared {
    options: PublisherOptions,
    /// One permit per event the buffer can still take.
    room: Arc<Semaphore>,
    closed: AtomicBool,
    /// Set while a full buffer has been reported, so a burst of drops logs once.
    full_reported: AtomicBool,
    published: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    retried: AtomicU64,
    /// Set by close: the tasks stop and count what they hold as dropped.
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What goes through the queue to the background task.
// Nearly every item is an event: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub(super) enum Item {
    Event(Queued),
    /// Answer once every event queued before this is settled.
    Flush(oneshot::Sender<()>),
}

/// An event in the buffer, holding its place until it is settled.
pub(super) struct Queued {
    request: pb::CreateEventRequest,
    bytes: usize,
    _room: OwnedSemaphorePermit,
}

impl Publisher {
    /// A publisher sending through `client`; its background task runs on the
    /// current Tokio runtime until the publisher is closed, or dropped and
    /// emptied.
    pub fn new(client: Client, options: PublisherOptions) -> Self {
        let options = PublisherOptions {
            capacity: options.capacity.clamp(1, Semaphore::MAX_PERMITS),
            batch_size: options.batch_size.clamp(1, 1_000),
            in_flight: options.in_flight.max(1),
            ..options
        };
        let shared = Arc::new(Shared {
            room: Arc::new(Semaphore::new(options.capacity)),
            options,
            closed: AtomicBool::new(false),
            full_reported: AtomicBool::new(false),
            published: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            stop: watch::Sender::new(false),
            task: Mutex::new(None),
        });
        let (queue, items) = mpsc::unbounded_channel();
        let task = tokio::spawn(send::dispatch(client, shared.clone(), items));
        if let Ok(mut slot) = shared.task.lock() {
            *slot = Some(task);
        }
        Self { shared, queue }
    }

    /// Queues `event` to be created; returns without waiting for the logger
    /// (with [`WhenFull::Wait`], it may wait for room up to that deadline).
    /// Never fails: an event that cannot be kept is counted as dropped.
    pub async fn publish(&self, event: EventInput) -> Publish {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return self.drop_one(&event, "the publisher is closed");
        }
        let room = match shared.room.clone().try_acquire_owned() {
            Ok(room) => room,
            Err(_) => match shared.options.when_full {
                WhenFull::DropNewest => return self.drop_one(&event, "the buffer is full"),
                WhenFull::Wait(deadline) => {
                    match tokio::time::timeout(deadline, shared.room.clone().acquire_owned()).await
                    {
                        Ok(Ok(room)) => room,
                        _ => return self.drop_one(&event, "the buffer stayed full"),
                    }
                }
            },
        };
        let request = create_request(stamped(event));
        let bytes = request.encoded_len();
        if bytes > shared.options.max_batch_bytes {
            tracing::warn!(
                bytes,
                max_batch_bytes = shared.options.max_batch_bytes,
                user_id = %request.user_id,
                "event dropped: larger than a batch may be"
            );
            shared.settle(Outcome::Dropped, &request.r#type);
            return Publish::Dropped;
        }
        if shared.full_reported.load(Ordering::Relaxed) {
            shared.full_reported.store(false, Ordering::Relaxed);
        }
        let queued = Queued {
            request,
            bytes,
            _room: room,
        };
        match self.queue.send(Item::Event(queued)) {
            Ok(()) => Publish::Queued,
            Err(mpsc::error::SendError(Item::Event(queued))) => {
                shared.settle(Outcome::Dropped, &queued.request.r#type);
                Publish::Dropped
            }
            Err(_) => unreachable!("an event was sent"),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> PublisherStats {
        let shared = &self.shared;
        PublisherStats {
            published: shared.published.load(Ordering::Relaxed),
            refused: shared.refused.load(Ordering::Relaxed),
            dropped: shared.dropped.load(Ordering::Relaxed),
            retried: shared.retried.load(Ordering::Relaxed),
            buffered: shared.buffered(),
        }
    }

    /// Waits until every event published before this call is stored or
    /// refused, for at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), Unflushed> {
        let (done, settled) = oneshot::channel();
        let unflushed = || Unflushed {
            buffered: self.shared.buffered(),
        };
        if self.queue.send(Item::Flush(done)).is_err() {
            return match self.shared.buffered() {
                0 => Ok(()),
                _ => Err(unflushed()),
            };
        }
        match tokio::time::timeout(timeout, settled).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(unflushed()),
        }
    }

    /// Stops taking events (later publishes are dropped), sends what is
    /// buffered for at most `timeout`, then stops the background task; events
    /// still held then are counted as dropped (a batch whose answer had not
    /// come may still have been stored). Returns the final counts.
    pub async fn close(&self, timeout: Duration) -> PublisherStats {
        self.shared.closed.store(true, Ordering::Release);
        if let Err(unflushed) = self.flush(timeout).await {
            tracing::warn!(
                buffered = unflushed.buffered,
                "publisher closed with events unsent"
            );
        }
        self.shared.stop.send_replace(true);
        let task = self.shared.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            // The tasks count what they hold as dropped and give its room back.
            let _ = task.await;
        }
        self.stats()
    }

    /// Counts `event`, not kept, as dropped, logging the first of a burst.
    fn drop_one(&self, event: &EventInput, why: &'static str) -> Publish {
        let shared = &self.shared;
        shared.settle(Outcome::Dropped, &event.event_type);
        if !shared.full_reported.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                capacity = shared.options.capacity,
                "events dropped: {why} (counted in the publisher's stats)"
            );
        }
        Publish::Dropped
    }
}

impl Shared {
    /// Counts an event of `event_type` as settled with `outcome`, and tells the observer.
    pub(super) fn settle(&self, outcome: Outcome, event_type: &str) {
        let counter = match outcome {
            Outcome::Published => &self.published,
            Outcome::Refused => &self.refused,
            Outcome::Dropped => &self.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(Observer(observe)) = &self.options.observer {
            observe(outcome, event_type);
        }
    }

    /// Completes once close has stopped the publisher.
    pub(super) async fn stopped(&self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|stopped| *stopped).await;
    }

    /// Events held now.
    fn buffered(&self) -> u64 {
        let free = self.room.available_permits();
        self.options.capacity.saturating_sub(free) as u64
    }
}

/// `event` with the fields a publisher fills in when it queues it: a request
/// id (so retries never duplicate it) and the time it occurred.
fn stamped(mut event: EventInput) -> EventInput {
    if event.request_id.is_empty() {
        event.request_id = Uuid::now_v7().to_string();
    }
    event.occurred_at.get_or_insert_with(SystemTime::now);
    event
}
