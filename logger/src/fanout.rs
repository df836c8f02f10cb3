//! The fan-out of one logger process: its local subscribers, in shards by
//! user, and the one tail of the notification log ([`Fanout::tail`]) that
//! feeds them, each through a bounded queue of its own ([`crate::queue`]).
//! Each change is encoded once, when a first subscriber wants it, and every
//! queue holds the same bytes ([`crate::encoded`]); publishing locks one
//! shard at a time and never waits on a subscriber (a full queue is cut
//! off).
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
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use herald::{
    EventStatus,
    cursor::Cursor,
    domain::Statuses,
    pb::{self, subscribe_response::Kind},
    subscription::SubscriptionFilter,
};
use herald_runtime::process::Backoff;
use herald_storage::{FeedRead, Notification, NotificationFeed};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    encoded::Encoded,
    queue::{Budget, Ended, Published, Queue},
};

/// Longest the tail naps while no subscriber wants anything. Each nap
/// ends with a read of the log's end (one command per partition), so this
/// is what an idle logger costs Redis; a subscriber arriving cuts the nap
/// short, and joining reads the log's end itself while the tail trails.
const IDLE_NAP: Duration = Duration::from_secs(1);

/// Shards of the subscribers: shard 0 holds those of every user's changes,
/// the others those of one user each, by a hash of the user id.
const SHARDS: usize = 64;

struct Subscriber {
    filter: SubscriptionFilter,
    queue: Arc<Queue>,
}

/// The local subscribers of one logger, sharded by user id (every user's in
/// shard 0): publishing locks one shard at a time, so subscribers coming
/// and going in other shards never wait for it.
pub struct Fanout {
    shards: Vec<Mutex<Shard>>,
    /// How many subscribers want each status (in [`EventStatus::ALL`]'s
    /// order): the tail reads the events of these statuses only. Counted up
    /// before a subscriber enters its shard, so a publication that finds it
    /// there sees its statuses counted.
    wanting: [AtomicUsize; EventStatus::ALL.len()],
    /// Subscribers registered in every shard.
    subscribers: AtomicUsize,
    /// The newest cursor offered to every subscriber (each shard's position
    /// is at or past it).
    position: Mutex<Cursor>,
    next_id: AtomicU64,
    buffer: usize,
    /// Woken when a subscriber registers (the tail naps while nobody wants
    /// anything).
    arrived: Notify,
}

/// Whose changes a group of subscribers follows.
#[derive(Clone, Copy, Debug)]
enum Whose<'a> {
    /// Every user's (in shard 0).
    Everyone,
    /// One user's.
    User(&'a str),
}

impl<'a> Whose<'a> {
    /// One user's changes, or (`None`) every user's.
    fn of(user: Option<&'a str>) -> Self {
        user.map_or(Self::Everyone, Self::User)
    }
}

/// One shard: its subscribers (by user id, and those of every user), and
/// how far it has been offered the log.
#[derive(Default)]
struct Shard {
    by_user: HashMap<String, HashMap<u64, Subscriber>>,
    /// Subscribers of every user's changes (shard 0 only).
    everyone: HashMap<u64, Subscriber>,
    /// Every change up to here was offered to this shard's subscribers:
    /// moved with each publication under the shard's lock, so a new
    /// subscriber's starting point is exact.
    position: Cursor,
}

/// One change of a read, as published: built (and measured) once, when a
/// first subscriber wants it.
struct Change<'a> {
    notification: &'a Notification,
    /// Every partition's position once this change is published (shared
    /// with every queue that gets it).
    position: Arc<Cursor>,
    message: OnceLock<(Published, usize)>,
}

impl Change<'_> {
    fn message(&self) -> &(Published, usize) {
        self.message.get_or_init(|| {
            let message = published(self.notification, &self.position);
            let bytes = message.message.len();
            (message, bytes)
        })
    }
}

impl Shard {
    /// The subscribers of `whose` changes, if any.
    fn group(&mut self, whose: Whose<'_>) -> Option<&mut HashMap<u64, Subscriber>> {
        match whose {
            Whose::Everyone => Some(&mut self.everyone),
            Whose::User(user) => self.by_user.get_mut(user),
        }
    }

    /// Hands `change` to the subscribers of `whose` changes whose filters it
    /// matches (`buffer` messages of room each); returns the statuses of
    /// those cut off for want of room.
    fn publish(
        &mut self,
        whose: Whose<'_>,
        change: &Change<'_>,
        buffer: usize,
    ) -> Vec<Vec<EventStatus>> {
        let mut cut_off = Vec::new();
        let Some(group) = self.group(whose) else {
            return cut_off;
        };
        group.retain(|_, sub| {
            if !sub.filter.matches(&change.notification.event) {
                return true;
            }
            let (message, bytes) = change.message();
            let kept = sub.queue.push(message, *bytes, buffer);
            if !kept {
                cut_off.push(sub.filter.statuses.clone());
            }
            kept
        });
        if group.is_empty() {
            self.forget(whose);
        }
        cut_off
    }

    /// Drops the group of one user's subscribers (it has none left).
    fn forget(&mut self, whose: Whose<'_>) {
        if let Whose::User(user) = whose {
            self.by_user.remove(user);
        }
    }
}

impl Fanout {
    /// A fan-out with `buffer` messages of room per subscriber.
    pub fn new(buffer: usize) -> Arc<Self> {
        Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            wanting: Default::default(),
            subscribers: AtomicUsize::new(0),
            position: Mutex::default(),
            next_id: AtomicU64::new(0),
            buffer,
            arrived: Notify::new(),
        })
    }

    /// Messages of room in each subscriber's queue (`--subscriber-buffer`).
    pub(crate) fn buffer(&self) -> usize {
        self.buffer
    }

    /// The shard of the subscribers of `whose` changes.
    fn shard_of(whose: Whose<'_>) -> usize {
        let Whose::User(user) = whose else {
            return 0;
        };
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(user, &mut hasher);
        1 + (std::hash::Hasher::finish(&hasher) % (SHARDS as u64 - 1)) as usize
    }

    fn shard(&self, index: usize) -> MutexGuard<'_, Shard> {
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn global_position(&self) -> MutexGuard<'_, Cursor> {
        self.position.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest cursor offered to every subscriber.
    pub(crate) fn position(&self) -> Cursor {
        self.global_position().clone()
    }

    /// Whether the position may trail the log's end: no subscriber is
    /// registered (the tail then naps), or the tail has not started.
    pub(crate) fn trails_log(&self) -> bool {
        self.subscribers.load(Ordering::SeqCst) == 0 || self.global_position().is_start()
    }

    fn set_position(&self, cursor: &Cursor) {
        for index in 0..SHARDS {
            self.shard(index).position.clone_from(cursor);
        }
        self.global_position().clone_from(cursor);
    }

    /// The statuses some subscriber wants.
    fn wanted(&self) -> Statuses {
        EventStatus::ALL
            .into_iter()
            .zip(&self.wanting)
            .filter(|(_, n)| n.load(Ordering::SeqCst) > 0)
            .map(|(s, _)| s)
            .collect()
    }

    /// Counts `statuses` in (`up`) or out of [`Self::wanting`].
    fn count_statuses(&self, statuses: &[EventStatus], up: bool) {
        let statuses: Statuses = statuses.iter().copied().collect();
        for (status, n) in EventStatus::ALL.into_iter().zip(&self.wanting) {
            if statuses.contains(status) {
                if up {
                    n.fetch_add(1, Ordering::SeqCst);
                } else {
                    let _ =
                        n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1));
                }
            }
        }
    }

    /// Registers a subscriber; returns its queue and its shard's position at
    /// that moment (everything after it reaches the queue).
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        filter: SubscriptionFilter,
        budget: Arc<Budget>,
    ) -> (Live, Cursor) {
        let queue = Queue::shared(budget);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let user = filter.user_id.clone();
        let shard = Self::shard_of(Whose::of(filter.user_id.as_deref()));
        self.count_statuses(&filter.statuses, true);
        let mut subscribers = self.shard(shard);
        let subscriber = Subscriber {
            filter,
            queue: queue.clone(),
        };
        match &user {
            None => subscribers.everyone.insert(id, subscriber),
            Some(user) => subscribers
                .by_user
                .entry(user.clone())
                .or_default()
                .insert(id, subscriber),
        };
        let position = subscribers.position.clone();
        drop(subscribers);
        self.subscribers.fetch_add(1, Ordering::SeqCst);
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

    fn remove(&self, whose: Whose<'_>, id: u64) {
        let mut shard = self.shard(Self::shard_of(whose));
        let Some(group) = shard.group(whose) else {
            return;
        };
        let removed = group.remove(&id);
        if group.is_empty() {
            shard.forget(whose);
        }
        drop(shard);
        if let Some(sub) = removed {
            self.subscribers.fetch_sub(1, Ordering::SeqCst);
            self.count_statuses(&sub.filter.statuses, false);
        }
    }

    /// Hands what the tail read to the subscribers whose filters each
    /// change matches, shard by shard, and moves every position through the
    /// read; each message is built (and measured) once, and only if someone
    /// wants it. The read passed over the statuses outside `wanted`: if a
    /// subscriber wanting one of them joined since, the publication stops
    /// and `false` says to read again (else that subscriber would miss
    /// them; the shards already given the read skip what they had, by
    /// cursor).
    fn publish_all(&self, read: &FeedRead, wanted: Statuses) -> bool {
        let mut position = self.position();
        let changes: Vec<Change<'_>> = read
            .notifications
            .iter()
            .map(|notification| {
                position.advance(notification.partition, notification.entry);
                Change {
                    notification,
                    position: Arc::new(position.clone()),
                    message: OnceLock::new(),
                }
            })
            .collect();
        position.join(&read.through);
        let mut by_shard: Vec<Vec<&Change<'_>>> = vec![Vec::new(); SHARDS];
        for change in &changes {
            let user = change.notification.event.user_id.as_str();
            by_shard[Self::shard_of(Whose::User(user))].push(change);
        }
        let mut cut_off = Vec::new();
        let mut complete = true;
        for (index, mine) in by_shard.iter().enumerate() {
            let mut shard = self.shard(index);
            if !wanted.covers(self.wanted()) {
                complete = false;
                break;
            }
            if index == 0 {
                for change in &changes {
                    cut_off.extend(shard.publish(Whose::Everyone, change, self.buffer));
                }
            } else {
                for change in mine {
                    let user = change.notification.event.user_id.as_str();
                    cut_off.extend(shard.publish(Whose::User(user), change, self.buffer));
                }
            }
            shard.position.clone_from(&position);
        }
        if complete {
            *self.global_position() = position;
        }
        let cut = cut_off.len();
        for statuses in cut_off {
            self.count_statuses(&statuses, false);
        }
        self.subscribers.fetch_sub(cut, Ordering::SeqCst);
        complete
    }

    /// Ends every subscription with UNAVAILABLE.
    fn close_all(&self) {
        for index in 0..SHARDS {
            let mut shard = self.shard(index);
            let mut drained: Vec<Subscriber> = shard.everyone.drain().map(|(_, sub)| sub).collect();
            drained.extend(
                shard
                    .by_user
                    .drain()
                    .flat_map(|(_, group)| group.into_values()),
            );
            drop(shard);
            for sub in drained {
                self.subscribers.fetch_sub(1, Ordering::SeqCst);
                self.count_statuses(&sub.filter.statuses, false);
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
                let wanted = self.wanted();
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
        unread_count: notification.unread,
    }
}

/// One logged change as the fan-out hands it out, published at `position`.
fn published(notification: &Notification, position: &Arc<Cursor>) -> Published {
    Published {
        partition: notification.partition,
        entry: notification.entry,
        cursor: position.clone(),
        message: Encoded::new(&event_message(notification, position)),
    }
}

/// Unregisters a subscriber when its stream is dropped (the client went away).
struct Guard {
    fanout: Arc<Fanout>,
    /// Whose changes the subscriber follows (`None`: every user's).
    user: Option<String>,
    id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.fanout.remove(Whose::of(self.user.as_deref()), self.id);
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
        fanout.wanted()
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
            unread: None,
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

    #[tokio::test]
    async fn every_shard_gets_its_users_changes_and_shard_zero_all_of_them() {
        let fanout = Fanout::new(1_000);
        let budget = Arc::new(Budget::new(1 << 24));
        let users: Vec<String> = (0..200).map(|u| format!("user-{u}")).collect();
        let lives: Vec<Live> = users
            .iter()
            .map(|u| {
                fanout
                    .subscribe(SubscriptionFilter::user(u.as_str()), budget.clone())
                    .0
            })
            .collect();
        let (everyone, _) = fanout.subscribe(SubscriptionFilter::everyone(), budget.clone());
        let used: std::collections::HashSet<usize> = users
            .iter()
            .map(|u| Fanout::shard_of(Whose::User(u)))
            .collect();
        assert!(
            used.len() > 40,
            "users spread over the shards: {}",
            used.len()
        );
        let read = FeedRead {
            notifications: (0..200)
                .map(|i| change(&users[i], EventStatus::Processed, i as u64 + 1))
                .collect(),
            through: Cursor::start(Partitions::default()),
        };
        assert!(fanout.publish_all(&read, Statuses::ALL));
        for (user, live) in users.iter().zip(&lives) {
            let got = live.queue.pop().await.expect("a message");
            let event = match got.message.decode().kind {
                Some(Kind::Event(event)) => event,
                other => panic!("{other:?}"),
            };
            assert_eq!(&event.user_id, user);
        }
        for i in 0..200u64 {
            let got = everyone.queue.pop().await.expect("a message");
            assert_eq!(got.entry.seq, i + 1, "in the log's order");
        }
        assert_eq!(budget.used(), 0, "every queue drained");
        drop(lives);
        drop(everyone);
        assert!(fanout.trails_log(), "nobody left");
    }
}
