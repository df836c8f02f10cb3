//! What operators read and do, as domain types: [`DeadLetter`]s and
//! [`Redrive`], the logger's [`Stats`] and its [`Health`].

use std::time::{Duration, SystemTime};

use futures_util::Stream;
use herald::{Event, pb};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use uuid::Uuid;

use crate::{
    Client, Error, Page,
    client::{event_of, item_result},
    query::every_page,
};

/// An event given up after too many delivery attempts (it is FAILED).
///
/// ```no_run
/// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
/// use futures_util::TryStreamExt;
///
/// let dead: Vec<herald_client::DeadLetter> = client.dead_letters(100).try_collect().await?;
/// for letter in dead {
///     println!("{} ({} deliveries): {}", letter.event.id, letter.deliveries, letter.reason);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// Its id among the dead letters.
    pub id: String,
    /// The event as it was last delivered.
    pub event: Event,
    /// Why it was given up.
    pub reason: String,
    /// How many times its queue entry had been delivered.
    pub deliveries: u64,
}

impl TryFrom<pb::DeadLetter> for DeadLetter {
    type Error = Error;

    fn try_from(dead: pb::DeadLetter) -> Result<Self, Error> {
        Ok(Self {
            id: dead.dead_letter_id,
            event: event_of(dead.event)?,
            reason: dead.reason,
            deliveries: u64::try_from(dead.deliveries).unwrap_or_default(),
        })
    }
}

/// Which FAILED events [`Client::redrive`](crate::Client::redrive) puts back
/// in the queue.
///
/// ```
/// use herald_client::Redrive;
/// use uuid::Uuid;
///
/// let some = Redrive::Ids(vec![Uuid::nil()]);
/// assert_ne!(some, Redrive::All);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redrive {
    /// These events (1 to 1,000), each with its own result.
    Ids(Vec<Uuid>),
    /// The event of every dead letter.
    All,
}

impl Redrive {
    /// The request that asks for this.
    pub(crate) fn to_request(&self) -> pb::RedriveEventsRequest {
        match self {
            Self::Ids(ids) => pb::RedriveEventsRequest {
                event_ids: ids.iter().map(Uuid::to_string).collect(),
                all: false,
            },
            Self::All => pb::RedriveEventsRequest {
                event_ids: Vec::new(),
                all: true,
            },
        }
    }
}

/// The logger's counts ([`Client::stats`](crate::Client::stats)): events
/// stored by status, and this logger process's own activity.
///
/// ```no_run
/// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
/// let stats = client.stats().await?;
/// println!("{} PENDING of {}, up {:?}", stats.pending_events, stats.total_events, stats.uptime);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events stored, every status.
    pub total_events: u64,
    /// Events PENDING.
    pub pending_events: u64,
    /// Events PROCESSED (not yet opened).
    pub processed_events: u64,
    /// Events OPENED.
    pub opened_events: u64,
    /// Events FAILED.
    pub failed_events: u64,
    /// Events SCHEDULED (waiting for their deliver_at).
    pub scheduled_events: u64,
    /// Events CANCELLED.
    pub cancelled_events: u64,
    /// Events this logger process created.
    pub events_created: u64,
    /// Status changes this logger process made.
    pub status_updates: u64,
    /// Events this logger process queued for the processors (created, or
    /// set back to PENDING).
    pub events_published: u64,
    /// Writes this logger process could not make (storage errors).
    pub publish_failures: u64,
    /// Subscribe streams open on this logger now.
    pub active_subscribers: u64,
    /// When this logger process started.
    pub started_at: Option<SystemTime>,
    /// How long it has been running.
    pub uptime: Duration,
}

impl From<pb::GetStatsResponse> for Stats {
    fn from(r: pb::GetStatsResponse) -> Self {
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        Self {
            total_events: count(r.total_events),
            pending_events: count(r.pending_events),
            processed_events: count(r.processed_events),
            opened_events: count(r.opened_events),
            failed_events: count(r.failed_events),
            scheduled_events: count(r.scheduled_events),
            cancelled_events: count(r.cancelled_events),
            events_created: count(r.events_created),
            status_updates: count(r.status_updates),
            events_published: count(r.events_published),
            publish_failures: count(r.publish_failures),
            active_subscribers: count(r.active_subscribers),
            started_at: r.started_at.and_then(|t| SystemTime::try_from(t).ok()),
            uptime: r
                .uptime
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or_default(),
        }
    }
}

/// A service's gRPC health ([`Client::health`](crate::Client::health)).
///
/// ```
/// use herald_client::Health;
///
/// assert_eq!(Health::NotServing.as_str(), "NOT_SERVING");
/// assert_eq!(Health::Serving.to_string(), "SERVING");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// It answers calls.
    Serving,
    /// It does not (starting, stopping, or its storage is unreachable).
    NotServing,
    /// The server does not know.
    Unknown,
    /// The server has no such service.
    ServiceUnknown,
}

impl Health {
    /// The standard name: `SERVING`, `NOT_SERVING`, `UNKNOWN`, `SERVICE_UNKNOWN`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "SERVING",
            Self::NotServing => "NOT_SERVING",
            Self::Unknown => "UNKNOWN",
            Self::ServiceUnknown => "SERVICE_UNKNOWN",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ServingStatus> for Health {
    fn from(status: ServingStatus) -> Self {
        match status {
            ServingStatus::Serving => Self::Serving,
            ServingStatus::NotServing => Self::NotServing,
            ServingStatus::ServiceUnknown => Self::ServiceUnknown,
            ServingStatus::Unknown => Self::Unknown,
        }
    }
}

/// The calls operators make: dead letters, redrives, stats and health.
impl Client {
    /// One page of dead letters (oldest first) of at most `page_size` (0:
    /// the server's default), starting at `page_token` (a [`Page::next`]; `""`
    /// for the first page).
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// let page = client.list_dead_letters(100, "").await?;
    /// for dead in &page.items {
    ///     println!("{} {}", dead.event.id, dead.reason);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_dead_letters(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<DeadLetter>, Error> {
        let request = pb::ListDeadLettersRequest {
            page_size: i32::try_from(page_size).unwrap_or(i32::MAX),
            page_token: page_token.to_owned(),
        };
        let response = self
            .retrying(|mut logger| {
                let request = request.clone();
                async move { logger.list_dead_letters(request).await }
            })
            .await?;
        let dead = response
            .dead_letters
            .into_iter()
            .map(DeadLetter::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Page::new(dead, response.next_page_token))
    }

    /// Every dead letter, oldest first, read `page_size` at a time as the
    /// stream needs them. The stream ends after the first error.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use futures_util::TryStreamExt;
    ///
    /// let dead: Vec<_> = client.dead_letters(100).try_collect().await?;
    /// for letter in &dead {
    ///     println!("{} failed after {}: {}", letter.event.id, letter.deliveries, letter.reason);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn dead_letters(
        &self,
        page_size: u32,
    ) -> impl Stream<Item = Result<DeadLetter, Error>> + Send + 'static {
        let client = self.clone();
        every_page(move |token| {
            let client = client.clone();
            async move {
                let token = token.unwrap_or_default();
                client.list_dead_letters(page_size, &token).await
            }
        })
    }

    /// Puts FAILED events back in the queue (as PENDING) and removes their
    /// dead letters, in as many calls as the answers need. Each event has
    /// its own result (NOT_FOUND for an id that is not dead-lettered);
    /// retried while unavailable, since putting back twice changes nothing
    /// more.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use herald_client::Redrive;
    ///
    /// let results = client.redrive(Redrive::All).await?;
    /// println!("{} put back", results.iter().filter(|r| r.is_ok()).count());
    /// # Ok(()) }
    /// ```
    pub async fn redrive(&self, which: Redrive) -> Result<Vec<Result<Event, Error>>, Error> {
        let request = which.to_request();
        let mut results = Vec::new();
        loop {
            let response = self
                .retrying(|mut logger| {
                    let request = request.clone();
                    async move { logger.redrive_events(request).await }
                })
                .await?;
            // Stop when a call put nothing back: its dead letters stay, and
            // the next call would meet them again.
            let before = results.len();
            results.extend(response.results.into_iter().map(item_result));
            if !response.more || results[before..].iter().all(Result::is_err) {
                return Ok(results);
            }
        }
    }

    /// The logger's counts: events by status, and its own activity.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// let stats = client.stats().await?;
    /// println!("{} events, {} pending", stats.total_events, stats.pending_events);
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self) -> Result<Stats, Error> {
        self.retrying(|mut logger| async move { logger.get_stats(pb::GetStatsRequest {}).await })
            .await
            .map(Stats::from)
    }

    /// The gRPC health of `service` (`""` for the whole server).
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use herald_client::Health;
    ///
    /// assert_eq!(client.health("").await?, Health::Serving);
    /// # Ok(()) }
    /// ```
    pub async fn health(&self, service: &str) -> Result<Health, Error> {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let status = self
            .health
            .clone()
            .check(request)
            .await?
            .into_inner()
            .status();
        Ok(Health::from(status))
    }
}
