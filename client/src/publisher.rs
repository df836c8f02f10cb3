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
//!   jitter, or after the wait the server asked for (`google.rpc.RetryInfo`).
//!   Retries go on until the event is stored or the publisher is closed.
//! - Any other refusal (an invalid event, a key without the scope) is counted
//!   as refused and logged, never retried.
//! - A full buffer drops the newest event and counts it (or, with
//!   [`WhenFull::Wait`], the caller waits up to a deadline for room).
//!
//! The buffer counts an event from [`Publisher::publish`] until it is
//! stored or refused, so [`PublisherOptions::capacity`] bounds the memory the
//! publisher holds, batches being retried included.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use herald::{domain::EventInput, pb, random::SplitMix64};
use prost::Message as _;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch},
    task::{JoinHandle, JoinSet},
    time::Instant,
};
use tonic::Code;
use uuid::Uuid;

use crate::{
    Client, Error,
    client::{create_request, item_parts},
};

/// What [`Publisher::publish`] does when the buffer is full.
///
/// ```
/// use std::time::Duration;
/// use herald_client::{PublisherOptions, WhenFull};
///
/// // A batch job would rather wait a little than lose an event.
/// let options = PublisherOptions { when_full: WhenFull::Wait(Duration::from_millis(250)), ..Default::default() };
/// assert_ne!(options.when_full, WhenFull::DropNewest);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Drop the event being published, count it, and return at once.
    #[default]
    DropNewest,
    /// Wait up to this long for room, then drop the event and count it.
    Wait(Duration),
}

/// How a [`Publisher`] buffers, batches and retries.
///
/// ```
/// use std::time::Duration;
/// use herald_client::{PublisherOptions, WhenFull};
///
/// let options = PublisherOptions {
///     capacity: 50_000,
///     when_full: WhenFull::Wait(Duration::from_millis(20)),
///     ..PublisherOptions::default()
/// };
/// assert_eq!(options.batch_size, 100);
/// ```
#[derive(Clone, Debug)]
pub struct PublisherOptions {
    /// Events held at most: queued, being sent or waiting for a retry.
    pub capacity: usize,
    /// What a publish into a full buffer does.
    pub when_full: WhenFull,
    /// Events per CreateEvents call, at most (1 to 1,000).
    pub batch_size: usize,
    /// Encoded bytes per CreateEvents call, at most (keep it under the
    /// logger's `--max-message-bytes`); a single event larger than this is
    /// refused when published.
    pub max_batch_bytes: usize,
    /// Longest wait for a batch to fill once its first event is there.
    pub linger: Duration,
    /// Batches sent at once.
    pub in_flight: usize,
    /// Longest wait for one CreateEvents answer (then DEADLINE_EXCEEDED, retried).
    pub call_timeout: Duration,
    /// Wait before the first retry of a batch; doubles with each retry.
    pub initial_backoff: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
    /// Told of each event's outcome, with its type (for counts by type).
    pub observer: Option<Observer>,
}

/// What became of a published event, in the end.
///
/// ```
/// use herald_client::Outcome;
///
/// assert_eq!(Outcome::Refused.as_str(), "refused");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The logger stored it.
    Published,
    /// The logger refused it (invalid, not allowed).
    Refused,
    /// It was never sent: the buffer was full, it was too large, or the
    /// publisher closed first.
    Dropped,
}

impl Outcome {
    /// `published`, `refused` or `dropped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Refused => "refused",
            Self::Dropped => "dropped",
        }
    }
}

/// A function told of each event's [`Outcome`] and its type; it runs on
/// the publisher's tasks, so it should be quick (count, not block).
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
/// use herald_client::{Observer, Outcome, PublisherOptions};
///
/// let refused = Arc::new(AtomicU64::new(0));
/// let seen = refused.clone();
/// let options = PublisherOptions {
///     observer: Some(Observer::new(move |outcome, _event_type| {
///         if outcome == Outcome::Refused {
///             seen.fetch_add(1, Ordering::Relaxed);
///         }
///     })),
///     ..PublisherOptions::default()
/// };
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct Observer(Arc<ObserveFn>);

/// What an [`Observer`] calls.
type ObserveFn = dyn Fn(Outcome, &str) + Send + Sync;

impl Observer {
    /// An observer calling `f` with each outcome and the event's type.
    pub fn new(f: impl Fn(Outcome, &str) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl Default for PublisherOptions {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            when_full: WhenFull::DropNewest,
            batch_size: 100,
            max_batch_bytes: 1 << 20,
            linger: Duration::from_millis(5),
            in_flight: 4,
            call_timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            observer: None,
        }
    }
}

/// What became of one [`Publisher::publish`].
///
/// ```no_run
/// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
/// use herald_client::{EventInput, Publish, Publisher, PublisherOptions};
///
/// let publisher = Publisher::new(client, PublisherOptions::default());
/// let event = EventInput { user_id: "alice".into(), description: "Hi".into(), ..EventInput::default() };
/// if publisher.publish(event).await == Publish::Dropped {
///     // Counted in publisher.stats().dropped; the request goes on.
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// In the buffer; it will be sent (and retried) in the background.
    Queued,
    /// Not kept: the buffer was full, the event was larger than a batch may
    /// be, or the publisher is closed. Counted in [`PublisherStats`].
    Dropped,
}

/// The publisher's counts since it was made.
///
/// ```no_run
/// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
/// use herald_client::{Publisher, PublisherOptions};
///
/// let publisher = Publisher::new(client, PublisherOptions::default());
/// let stats = publisher.stats();
/// println!("published {} refused {} dropped {} buffered {}", stats.published, stats.refused, stats.dropped, stats.buffered);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Events the logger stored.
    pub published: u64,
    /// Events the logger refused (invalid, not allowed): logged, not retried.
    pub refused: u64,
    /// Events never sent: the buffer was full, the event too large, or the
    /// publisher closed before they went out.
    pub dropped: u64,
    /// Sends of an event again after a retryable failure (one per event per retry).
    pub retried: u64,
    /// Events held now: queued, being sent or waiting for a retry.
    pub buffered: u64,
}

/// [`Publisher::flush`] ran out of time with events still held.
///
/// ```no_run
/// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
/// use std::time::Duration;
/// use herald_client::{Publisher, PublisherOptions};
///
/// let publisher = Publisher::new(client, PublisherOptions::default());
/// if let Err(unflushed) = publisher.flush(Duration::from_secs(2)).await {
///     eprintln!("Herald is slow: {} events still waiting", unflushed.buffered);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{buffered} events still buffered")]
pub struct Unflushed {
    /// Events still held when the time ran out.
    pub buffered: u64,
}

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
struct Shared {
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
enum Item {
    Event(Queued),
    /// Answer once every event queued before this is settled.
    Flush(oneshot::Sender<()>),
}

/// An event in the buffer, holding its place until it is settled.
struct Queued {
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
        let task = tokio::spawn(dispatch(client, shared.clone(), items));
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
        shared.full_reported.store(false, Ordering::Relaxed);
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
    fn settle(&self, outcome: Outcome, event_type: &str) {
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
    async fn stopped(&self) {
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

/// The background task: gathers batches from the queue and sends them,
/// `in_flight` at a time, until the queue is closed and everything is sent,
/// or until close stops it (then what is held is counted as dropped).
async fn dispatch(client: Client, shared: Arc<Shared>, mut items: mpsc::UnboundedReceiver<Item>) {
    let mut sending = JoinSet::new();
    tokio::select! {
        () = send_all(&client, &shared, &mut items, &mut sending) => {}
        () = shared.stopped() => {
            items.close();
            while let Ok(item) = items.try_recv() {
                match item {
                    Item::Event(event) => shared.settle(Outcome::Dropped, &event.request.r#type),
                    Item::Flush(done) => drop(done),
                }
            }
            // Each send sees the stop too, and counts what it holds.
            while sending.join_next().await.is_some() {}
        }
    }
}

/// [`dispatch`]'s work: batches out of `items`, each sent on a task of `sending`.
async fn send_all(
    client: &Client,
    shared: &Arc<Shared>,
    items: &mut mpsc::UnboundedReceiver<Item>,
    sending: &mut JoinSet<()>,
) {
    let options = &shared.options;
    let mut seeds = SplitMix64::from_time();
    let mut spawn = |sending: &mut JoinSet<()>, batch| {
        sending.spawn(send(
            client.clone(),
            shared.clone(),
            batch,
            seeds.next_u64(),
        ));
    };
    let mut flush: Option<oneshot::Sender<()>> = None;
    loop {
        if let Some(done) = flush.take() {
            while sending.join_next().await.is_some() {}
            let _ = done.send(());
        }
        while sending.len() >= options.in_flight {
            sending.join_next().await;
        }
        let Some(first) = items.recv().await else {
            break;
        };
        let mut batch = match first {
            Item::Event(event) => Batch::of(event),
            Item::Flush(done) => {
                flush = Some(done);
                continue;
            }
        };
        let until = Instant::now() + options.linger;
        while batch.events.len() < options.batch_size {
            let next = match items.try_recv() {
                Ok(item) => item,
                Err(_) => match tokio::time::timeout_at(until, items.recv()).await {
                    Ok(Some(item)) => item,
                    Ok(None) | Err(_) => break,
                },
            };
            match next {
                Item::Event(event) if batch.bytes + event.bytes <= options.max_batch_bytes => {
                    batch.push(event);
                }
                Item::Event(event) => {
                    spawn(sending, std::mem::replace(&mut batch, Batch::of(event)))
                }
                Item::Flush(done) => {
                    flush = Some(done);
                    break;
                }
            }
        }
        spawn(sending, batch);
    }
    while sending.join_next().await.is_some() {}
}

/// Events sent in one call.
struct Batch {
    events: Vec<Queued>,
    bytes: usize,
}

impl Batch {
    fn of(event: Queued) -> Self {
        Self {
            bytes: event.bytes,
            events: vec![event],
        }
    }

    fn push(&mut self, event: Queued) {
        self.bytes += event.bytes;
        self.events.push(event);
    }
}

/// Whether a failure with `code` may succeed if tried again.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
    )
}

/// Sends `batch` until each of its events is stored or refused.
async fn send(client: Client, shared: Arc<Shared>, batch: Batch, seed: u64) {
    let options = &shared.options;
    let mut jitter = SplitMix64::new(seed);
    let mut backoff = options.initial_backoff;
    let mut events = batch.events;
    loop {
        let request = pb::CreateEventsRequest {
            requests: events.iter().map(|e| e.request.clone()).collect(),
        };
        let call = tokio::time::timeout(options.call_timeout, client.create_batch(request, false));
        let answer = tokio::select! {
            answer = call => answer.unwrap_or_else(|_| {
                Err(Error::from(tonic::Status::deadline_exceeded(
                    "no answer to CreateEvents in time",
                )))
            }),
            () = shared.stopped() => return give_up(&shared, &events),
        };
        let mut asked_wait = None;
        match answer {
            Ok(results) => {
                let mut again = Vec::new();
                for (event, result) in events.into_iter().zip(results) {
                    match item_parts(result) {
                        Ok(_) => shared.settle(Outcome::Published, &event.request.r#type),
                        Err(err) if retryable(err.code()) => {
                            asked_wait = asked_wait.max(err.retry_after());
                            again.push(event);
                        }
                        Err(err) => refuse(&shared, &event, &err),
                    }
                }
                events = again;
            }
            Err(err) if retryable(err.code()) => {
                tracing::debug!(error = %err, events = events.len(), "CreateEvents failed; retrying");
                asked_wait = err.retry_after();
            }
            Err(err) => {
                for event in &events {
                    refuse(&shared, event, &err);
                }
                events.clear();
            }
        }
        if events.is_empty() {
            return;
        }
        shared
            .retried
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let wait = asked_wait.unwrap_or_else(|| {
            // Between half the backoff and all of it.
            let half = backoff / 2;
            half + half.mul_f64(jitter.next_f64())
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.stopped() => return give_up(&shared, &events),
        }
        backoff = (backoff * 2).min(options.max_backoff);
    }
}

/// Counts what a send held when the publisher was closed as dropped.
fn give_up(shared: &Shared, events: &[Queued]) {
    for event in events {
        shared.settle(Outcome::Dropped, &event.request.r#type);
    }
}

/// Counts and logs an event the logger refused.
fn refuse(shared: &Shared, event: &Queued, err: &Error) {
    shared.settle(Outcome::Refused, &event.request.r#type);
    tracing::warn!(
        error = %err,
        user_id = %event.request.user_id,
        event_type = %event.request.r#type,
        request_id = %event.request.request_id,
        "event refused by the logger; not retried"
    );
}
