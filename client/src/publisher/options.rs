//! How a [`super::Publisher`] is set up, and what its calls answer.

use std::{sync::Arc, time::Duration};

#[cfg(doc)]
use super::Publisher;

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
pub struct Observer(pub(super) Arc<ObserveFn>);

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
