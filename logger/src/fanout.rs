//! The fan-out of one logger process: its local subscribers, by user, and
//! the one tail of the notification log ([`Fanout::tail`]) that feeds them,
//! each through a bounded queue of its own ([`crate::queue`]).
//!
//! The tail reads the events of the statuses some local subscriber wants
//! only (counted as subscribers come, go or are cut off), and while nobody
//! is subscribed it does not read the log at all: it moves to the log's end
//! every 100 ms, and at once when a subscriber comes. A subscriber starts
//! from the fan-out's position when it registers; everything after reaches
//! its queue.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use herald::{
    EventStatus,
    backend::{FeedRead, Notification, NotificationFeed},
    cursor::Cursor,
    domain::Statuses,
    pb::{self, subscribe_response::Kind},
    subscription::SubscriptionFilter,
};
use herald_runtime::process::Backoff;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    encoded::Encoded,
    queue::{Budget, Ended, Published, Queue},
};

/// Longest the tail naps while no subscriber wants anything.
const IDLE_NAP: Duration = Duration::from_millis(100);

/// Subscribers of every user's changes are filed under this key.
const EVERY_USER: &str = "";

struct Subscriber {
    filter: SubscriptionFilter,
    queue: Arc<Queue>,
}

/// The local subscribers of one logger, by user id (every user's under "").
pub struct Fanout {
    subscribers: Mutex<Subscribers>,
    next_id: AtomicU64,
    buffer: usize,
    /// Woken when a subscriber registers (the tail naps while nobody wants
    /// anything).
    arrived: Notify,
}

/// What the fan-out's lock guards.
#[derive(Default)]
struct Subscribers {
    by_user: HashMap<String, HashMap<u64, Subscriber>>,
    /// The newest cursor offered to every subscriber: an idle subscriber has
    /// had everything up to it. Moved with each publication, under the same
    /// lock as the subscribers, so a new subscriber's starting point is
    /// exact.
    position: Cursor,
    /// How many subscribers want each status (in [`EventStatus::ALL`]'s
    /// order): the tail reads the events of these statuses only.
    wanting: [usize; 4],
}

impl Subscribers {
    /// Hands one logged change to the subscribers whose filters it matches
    /// (`buffer` messages of room each) and moves the position past it.
    fn publish(&mut self, notification: &Notification, buffer: usize) {
        self.position
            .advance(notification.partition, notification.entry);
        let mut message = None;
        let mut cut_off = Vec::new();
        for user in [notification.event.user_id.as_str(), EVERY_USER] {
            let Some(group) = self.by_user.get_mut(user) else {
                continue;
            };
            group.retain(|_, sub| {
                if !sub.filter.matches(&notification.event) {
                    return true;
                }
                let (message, bytes) = message.get_or_insert_with(|| {
                    let message = published(notification, &self.position);
                    let bytes = message.message.len();
                    (message, bytes)
                });
                let kept = sub.queue.push(message, *bytes, buffer);
                if !kept {
                    cut_off.push(sub.filter.statuses.clone());
                }
                kept
            });
            if group.is_empty() {
                self.by_user.remove(user);
            }
        }
        for statuses in cut_off {
            self.count_statuses(&statuses, false);
        }
    }

    /// The statuses some subscriber wants.
    fn wanted(&self) -> Statuses {
        EventStatus::ALL
            .into_iter()
            .zip(self.wanting)
            .filter(|(_, n)| *n > 0)
            .map(|(s, _)| s)
            .collect()
    }

    /// Counts `statuses` in (`up`) or out of [`Self::wanting`].
    fn count_statuses(&mut self, statuses: &[EventStatus], up: bool) {
        let statuses: Statuses = statuses.iter().copied().collect();
        for (status, n) in EventStatus::ALL.into_iter().zip(&mut self.wanting) {
            if statuses.contains(status) {
                *n = if up { *n + 1 } else { n.saturating_sub(1) };
            }
        }
    }
}

impl Fanout {
    /// A fan-out with `buffer` messages of room per subscriber.
    pub fn new(buffer: usize) -> Arc<Self> {
        Arc::new(Self {
            subscribers: Mutex::default(),
            next_id: AtomicU64::new(0),
            buffer,
            arrived: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Subscribers> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest cursor offered to every subscriber.
    pub(crate) fn position(&self) -> Cursor {
        self.lock().position.clone()
    }

    /// Whether the position may trail the log's end: no subscriber is
    /// registered (the tail then naps), or the tail has not started.
    pub(crate) fn trails_log(&self) -> bool {
        let subscribers = self.lock();
        subscribers.by_user.is_empty() || subscribers.position.is_start()
    }

    fn set_position(&self, cursor: &Cursor) {
        self.lock().position.clone_from(cursor);
    }

    /// Registers a subscriber; returns its queue and the fan-out's position
    /// at that moment (everything after it reaches the queue).
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        filter: SubscriptionFilter,
        budget: Arc<Budget>,
    ) -> (Live, Cursor) {
        let queue = Arc::new(Queue::new(budget));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let user = filter.user_id.clone();
        let mut subscribers = self.lock();
        subscribers.count_statuses(&filter.statuses, true);
        subscribers.by_user.entry(user.clone()).or_default().insert(
            id,
            Subscriber {
                filter,
                queue: queue.clone(),
            },
        );
        let position = subscribers.position.clone();
        drop(subscribers);
        self.arrived.notify_one();
        let live = Live {
            queue,
            _guard: Guard {
                fanout: self.clone(),
                user,
                id,
            },
        };
        (live, position)
    }

    fn remove(&self, user: &str, id: u64) {
        let mut subscribers = self.lock();
        let Some(of_user) = subscribers.by_user.get_mut(user) else {
            return;
        };
        let removed = of_user.remove(&id);
        if of_user.is_empty() {
            subscribers.by_user.remove(user);
        }
        if let Some(sub) = removed {
            subscribers.count_statuses(&sub.filter.statuses, false);
        }
    }

    /// Hands what the tail read to the subscribers whose filters each
    /// change matches, and moves the fan-out's position through the read;
    /// each message is built (and measured) once, and only if someone wants
    /// it. The read passed over the statuses outside `wanted`: if a
    /// subscriber wanting one of them joined since, nothing is handed out
    /// and `false` says to read again (else that subscriber would miss them).
    fn publish_all(&self, read: &FeedRead, wanted: Statuses) -> bool {
        let mut guard = self.lock();
        let subscribers = &mut *guard;
        if !wanted.covers(subscribers.wanted()) {
            return false;
        }
        for notification in &read.notifications {
            subscribers.publish(notification, self.buffer);
        }
        subscribers.position.join(&read.through);
        true
    }

    /// Ends every subscription with UNAVAILABLE.
    fn close_all(&self) {
        let mut subscribers = self.lock();
        subscribers.wanting = [0; 4];
        for (_, group) in subscribers.by_user.drain() {
            for (_, sub) in group {
                sub.queue.end(Ended::Closed);
            }
        }
    }

    /// While no subscriber wants anything: a read that passes over all that
    /// was logged after `current` without reading it, returned after a nap
    /// of up to [`IDLE_NAP`] (cut short when a subscriber registers, whose
    /// wants then make the tail read again from `current`).
    async fn pass_over(
        &self,
        feed: &dyn NotificationFeed,
        current: &Cursor,
    ) -> herald::Result<FeedRead> {
        let mut through = feed.latest_cursor().await?;
        through.join(current);
        let _ = tokio::time::timeout(IDLE_NAP, self.arrived.notified()).await;
        Ok(FeedRead {
            notifications: Vec::new(),
            through,
        })
    }

    /// Tails the notification log from its current end and publishes every
    /// entry, until `shutdown`; then ends every subscription.
    pub async fn tail(
        self: Arc<Self>,
        feed: Arc<dyn NotificationFeed>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Backoff::up_to(Duration::from_secs(5));
        let mut cursor = None;
        loop {
            let step = async {
                let current = match cursor.clone() {
                    Some(c) => c,
                    None => {
                        let latest = feed.latest_cursor().await?;
                        self.set_position(&latest);
                        latest
                    }
                };
                let wanted = self.lock().wanted();
                let read = if wanted == Statuses::NONE {
                    self.pass_over(feed.as_ref(), &current).await?
                } else {
                    feed.read_after(&current, 1_000, Duration::from_secs(5), wanted)
                        .await?
                };
                Ok::<_, herald::Error>((current, read, wanted))
            };
            let result = tokio::select! {
                result = step => result,
                () = shutdown.cancelled() => break,
            };
            match result {
                Ok((current, read, wanted)) => {
                    backoff.reset();
                    cursor = Some(if self.publish_all(&read, wanted) {
                        read.through
                    } else {
                        current
                    });
                }
                Err(err) => {
                    warn!(error = %err, retry_in = ?backoff.next_wait(), "cannot read the notification log");
                    if !backoff.sleep(&shutdown).await {
                        break;
                    }
                }
            }
        }
        debug!("notification tail stopped");
        self.close_all();
    }
}

/// The message of one logged change, `cursor` being where a reader is
/// once it has had it.
pub(crate) fn event_message(notification: &Notification, cursor: &Cursor) -> pb::SubscribeResponse {
    pb::SubscribeResponse {
        kind: Some(Kind::Event(notification.event.clone().into())),
        cursor: cursor.to_string(),
    }
}

/// One logged change as the fan-out hands it out, published at `position`.
fn published(notification: &Notification, position: &Cursor) -> Published {
    Published {
        partition: notification.partition,
        entry: notification.entry,
        cursor: Arc::new(position.clone()),
        message: Encoded::new(&event_message(notification, position)),
    }
}

/// Unregisters a subscriber when its stream is dropped (the client went away).
struct Guard {
    fanout: Arc<Fanout>,
    user: String,
    id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.fanout.remove(&self.user, self.id);
    }
}

/// A subscriber's place in the live feed.
pub(crate) struct Live {
    /// Where the fan-out puts the subscriber's messages.
    pub(crate) queue: Arc<Queue>,
    _guard: Guard,
}

#[cfg(test)]
mod tests {
    use herald::{NewEvent, partition::Partitions};

    use super::*;

    fn wanted(fanout: &Fanout) -> Statuses {
        fanout.lock().wanted()
    }

    fn change(user: &str, status: EventStatus, seq: u64) -> Notification {
        let partitions = Partitions::default();
        let mut event = NewEvent::new(user, "x")
            .expect("valid")
            .into_event(partitions);
        event.status = status;
        Notification {
            partition: partitions.of_user(user),
            entry: format!("1-{seq}").parse().expect("entry id"),
            event,
        }
    }

    #[test]
    fn the_tail_reads_what_some_subscriber_wants() {
        use EventStatus::{Failed, Processed};
        let fanout = Fanout::new(1);
        let budget = Arc::new(Budget::new(1 << 20));
        assert_eq!(wanted(&fanout), Statuses::NONE);
        let (ann, _) = fanout.subscribe(SubscriptionFilter::user("ann"), budget.clone());
        let mut failures = SubscriptionFilter::user("bob");
        failures.statuses = vec![Failed, Failed];
        let (bob, _) = fanout.subscribe(failures, budget);
        assert_eq!(wanted(&fanout), [Processed, Failed].into_iter().collect());

        // A read that passed over FAILED changes is not handed out: bob
        // wants them.
        let read = FeedRead {
            notifications: vec![change("ann", Processed, 1)],
            through: Cursor::start(Partitions::default()),
        };
        assert!(!fanout.publish_all(&read, [Processed].into_iter().collect()));
        assert!(fanout.publish_all(&read, Statuses::ALL));

        drop(bob);
        assert_eq!(wanted(&fanout), [Processed].into_iter().collect());
        // Cut off (its queue holds one message), ann is no longer counted.
        let read = FeedRead {
            notifications: vec![change("ann", Processed, 2)],
            through: Cursor::start(Partitions::default()),
        };
        assert!(fanout.publish_all(&read, Statuses::ALL));
        assert_eq!(wanted(&fanout), Statuses::NONE);
        drop(ann);
        assert_eq!(wanted(&fanout), Statuses::NONE);
    }
}
