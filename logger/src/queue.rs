//! Subscriber queues: what a Subscribe stream has been handed and not yet
//! sent, and the byte budget all the queues of one client share.
//!
//! A queue is filled by the fan-out (or a subscriber's catch-up) and
//! drained by its stream. Past its length bound it ends as lagged; past its
//! client's budget, the client's queue whose messages have waited longest
//! does (see [`Budget`]). A queue that ends is emptied at once, whether or
//! not its stream is being read: a subscriber that stops reading holds
//! nothing after its cut-off.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicUsize, Ordering},
    },
};

use herald::{
    cursor::{Cursor, EntryId},
    partition::Partition,
};
use tokio::{sync::Notify, time::Instant};

use crate::encoded::Encoded;

/// How a queue ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Its subscriber fell too far behind and was cut off.
    Lagged,
    /// The server is shutting down.
    Closed,
    /// Its filler is done: a subscriber's catch-up from the log has read
    /// all there was (or failed; the filler says which).
    Filled,
}

/// The bytes (encoded messages) one client's queues hold together, and
/// their bound. Past it, the queue whose reader has left messages waiting
/// longest without taking one is cut off, not necessarily the one the
/// message was for: a subscriber that keeps up is never cut off because
/// others of its client are slow.
pub struct Budget {
    used: AtomicUsize,
    max: usize,
    /// The queues that share it (those gone are dropped as they are met).
    queues: Mutex<Vec<Weak<Queue>>>,
}

impl Budget {
    /// An empty budget of `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            max,
            queues: Mutex::new(Vec::new()),
        }
    }

    /// Cuts off the queue of this budget, other than `except`, whose reader
    /// has left messages waiting longest without taking one, if since
    /// before `stalled_since`: true if one was cut (and its bytes given
    /// back).
    fn cut_the_stalest(&self, except: &Queue, stalled_since: Instant) -> bool {
        let stalest = {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            queues.retain(|q| q.strong_count() > 0);
            queues
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|q| !std::ptr::eq(Arc::as_ptr(q), except))
                .filter_map(|q| {
                    let state = q.lock();
                    let at = state.stalled_since.filter(|_| state.ended.is_none());
                    drop(state);
                    Some((at?, q))
                })
                .min_by_key(|(at, _)| *at)
        };
        match stalest {
            Some((at, queue)) if at < stalled_since => {
                queue.end(Ended::Lagged);
                true
            }
            _ => false,
        }
    }

    /// The bytes the queues hold now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget, if that many are left.
    fn take(&self, bytes: usize) -> bool {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.max {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// One subscriber's queue.
pub struct Queue {
    state: Mutex<State>,
    /// A message came, or the queue ended.
    ready: Notify,
    /// A message was taken, or the queue ended.
    drained: Notify,
    budget: Arc<Budget>,
}

/// One logged change as published to subscribers: the message, and where
/// it is (its partition's entry, and the fan-out's cursor after it).
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// The partition whose log holds the change.
    pub partition: Partition,
    /// Its entry in that log.
    pub entry: EntryId,
    /// Every partition's position once this change was published.
    pub cursor: Arc<Cursor>,
    /// The message, encoded once for every subscriber, its `cursor` field
    /// already `cursor` as text.
    pub message: Encoded,
}

struct State {
    messages: VecDeque<(Published, usize)>,
    /// Since when messages have waited without the reader taking one: set
    /// when the first comes to an empty queue, moved on by each one taken,
    /// `None` while empty.
    stalled_since: Option<Instant>,
    /// Encoded bytes of `messages`, taken from the budget.
    bytes: usize,
    /// How it ended, and how many messages it held then.
    ended: Option<(Ended, usize)>,
}

impl Queue {
    /// An empty queue whose messages count against `budget`, known to the
    /// budget (which may cut it off when another queue's message would not
    /// fit).
    pub fn shared(budget: Arc<Budget>) -> Arc<Self> {
        let queue = Arc::new(Self::new(budget.clone()));
        let mut queues = budget.queues.lock().unwrap_or_else(|p| p.into_inner());
        // Those gone go whenever the list has doubled, so it holds at most
        // about twice the open queues however many came and went.
        if queues.len() >= 16 && queues.len().is_power_of_two() {
            queues.retain(|q| q.strong_count() > 0);
        }
        queues.push(Arc::downgrade(&queue));
        drop(queues);
        queue
    }

    /// An empty queue whose messages count against `budget`.
    fn new(budget: Arc<Budget>) -> Self {
        Self {
            state: Mutex::new(State {
                messages: VecDeque::new(),
                stalled_since: None,
                bytes: 0,
                ended: None,
            }),
            ready: Notify::new(),
            drained: Notify::new(),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `message` (of `bytes`, encoded), or, past `max` messages or
    /// the budget, ends the queue as lagged and frees what it held; false
    /// once the queue has ended.
    pub fn push(&self, message: &Published, bytes: usize, max: usize) -> bool {
        let mut state = self.lock();
        if state.ended.is_some() {
            return false;
        }
        if state.messages.len() >= max {
            drop(state);
            self.end(Ended::Lagged);
            return false;
        }
        if !self.budget.take(bytes) {
            // Past the budget: the client's stalest queue goes (this one,
            // if no other has waited longer), so a subscriber that keeps up
            // stays.
            let stalled_since = state.stalled_since.unwrap_or_else(Instant::now);
            drop(state);
            if !(self.budget.cut_the_stalest(self, stalled_since) && self.budget.take(bytes)) {
                self.end(Ended::Lagged);
                return false;
            }
            state = self.lock();
            if state.ended.is_some() {
                drop(state);
                self.budget.give_back(bytes);
                return false;
            }
        }
        state.messages.push_back((message.clone(), bytes));
        state.stalled_since.get_or_insert_with(Instant::now);
        state.bytes += bytes;
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Ends the queue: cut off or closed, it frees every message in it;
    /// filled, what it holds is still read first.
    pub fn end(&self, how: Ended) {
        let mut state = self.lock();
        if state.ended.is_none() {
            state.ended = Some((how, state.messages.len()));
        }
        if how == Ended::Filled {
            drop(state);
            self.ready.notify_one();
            return;
        }
        let freed = std::mem::take(&mut state.messages);
        state.stalled_since = None;
        self.budget.give_back(std::mem::take(&mut state.bytes));
        drop(state);
        drop(freed);
        self.ready.notify_one();
        self.drained.notify_one();
    }

    /// Waits until the queue holds at most `at_most` messages: true then,
    /// false if it ended. A reader that takes nothing for `stall` while the
    /// queue is fuller than that is cut off: the queue ends as lagged (and
    /// frees what it held), as when a live message finds it full.
    pub async fn wait_for_room(&self, at_most: usize, stall: std::time::Duration) -> bool {
        loop {
            {
                let state = self.lock();
                if state.ended.is_some() {
                    return false;
                }
                if state.messages.len() <= at_most {
                    return true;
                }
            }
            if tokio::time::timeout(stall, self.drained.notified())
                .await
                .is_err()
            {
                self.end(Ended::Lagged);
                return false;
            }
        }
    }

    /// The next message, or how the queue ended and how many messages it
    /// held then.
    pub async fn pop(&self) -> Result<Published, (Ended, usize)> {
        loop {
            {
                let mut state = self.lock();
                if let Some((message, bytes)) = state.messages.pop_front() {
                    state.bytes -= bytes;
                    state.stalled_since = (!state.messages.is_empty()).then(Instant::now);
                    self.budget.give_back(bytes);
                    drop(state);
                    self.drained.notify_one();
                    return Ok(message);
                }
                if let Some(ended) = state.ended {
                    return Err(ended);
                }
            }
            self.ready.notified().await;
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let bytes = self.lock().bytes;
        self.budget.give_back(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use herald::pb;

    fn message(n: u64) -> Published {
        Published {
            partition: Partition::default(),
            entry: EntryId { ms: 0, seq: n },
            cursor: Arc::default(),
            message: Encoded::new(&pb::SubscribeResponse {
                kind: None,
                cursor: n.to_string(),
                unread_count: None,
            }),
        }
    }

    #[tokio::test]
    async fn a_full_queue_ends_lagged_and_frees_its_bytes() {
        let budget = Arc::new(Budget::new(1000));
        let queue = Queue::shared(budget.clone());
        assert!(queue.push(&message(1), 100, 2));
        assert!(queue.push(&message(2), 100, 2));
        assert_eq!(budget.used(), 200);
        assert!(!queue.push(&message(3), 100, 2), "past the length bound");
        assert_eq!(budget.used(), 0, "emptied at the cut-off, unread");
        assert_eq!(queue.pop().await, Err((Ended::Lagged, 2)));
        assert!(!queue.push(&message(4), 1, 2), "ended for good");
    }

    #[test]
    fn a_queued_message_costs_a_small_fixed_size_beside_the_shared_bytes() {
        // What a full queue holds per message on top of the message's bytes,
        // which every queue shares: the documented per-stream figure.
        let entry = std::mem::size_of::<(Published, usize)>();
        assert!(entry <= 128, "{entry} bytes per queued message");
        let queue = Queue::shared(Arc::new(Budget::new(1)));
        assert_eq!(queue.lock().messages.capacity(), 0, "allocated as it fills");
    }

    #[tokio::test]
    async fn a_filler_waits_for_room_and_cuts_off_a_reader_that_takes_nothing() {
        let budget = Arc::new(Budget::new(10_000));
        let queue = Queue::shared(budget.clone());
        for n in 0..4 {
            assert!(queue.push(&message(n), 100, 4));
        }
        let stall = std::time::Duration::from_millis(200);
        // A reader that takes two lets the filler on.
        let reader = {
            let queue = queue.clone();
            tokio::spawn(async move {
                queue.pop().await.expect("first");
                queue.pop().await.expect("second");
            })
        };
        assert!(queue.wait_for_room(2, stall).await);
        reader.await.expect("reader");
        // One that takes nothing more is cut off, and its bytes freed.
        assert!(!queue.wait_for_room(0, stall).await);
        assert_eq!(budget.used(), 0);
        assert_eq!(queue.pop().await, Err((Ended::Lagged, 2)));
    }

    #[tokio::test]
    async fn past_the_budget_the_stalest_queue_is_cut_not_the_one_that_keeps_up() {
        let budget = Arc::new(Budget::new(350));
        let (slow, fast) = (Queue::shared(budget.clone()), Queue::shared(budget.clone()));
        for n in 0..3 {
            assert!(slow.push(&message(n), 100, 10));
        }
        // slow's messages have waited since before fast's first came: past
        // the budget, the slow one goes.
        assert!(fast.push(&message(0), 100, 10), "the one keeping up stays");
        assert_eq!(slow.pop().await, Err((Ended::Lagged, 3)));
        assert_eq!(budget.used(), 100);
        // Alone, the stalest is itself.
        assert!(fast.push(&message(4), 100, 10));
        assert!(fast.push(&message(5), 100, 10));
        assert!(
            !fast.push(&message(6), 100, 10),
            "past the budget on its own"
        );
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_budget_forgets_queues_that_are_gone() {
        let budget = Arc::new(Budget::new(1000));
        let kept = Queue::shared(budget.clone());
        for _ in 0..10_000 {
            drop(Queue::shared(budget.clone()));
        }
        let listed = budget.queues.lock().expect("lock").len();
        assert!(listed <= 64, "{listed} queues listed");
        drop(kept);
    }

    #[tokio::test]
    async fn queues_of_one_client_share_the_budget() {
        let budget = Arc::new(Budget::new(250));
        let (a, b) = (Queue::shared(budget.clone()), Queue::shared(budget.clone()));
        assert!(a.push(&message(1), 100, 10));
        assert!(b.push(&message(1), 100, 10));
        // b's reader takes its message; a's leaves its own waiting: past the
        // shared budget, a goes and b's message fits.
        assert_eq!(
            b.pop().await.map(|m| m.message.decode().cursor),
            Ok("1".into())
        );
        assert!(b.push(&message(2), 100, 10));
        assert!(b.push(&message(3), 100, 10), "a is cut to make room");
        assert_eq!(a.pop().await, Err((Ended::Lagged, 1)));
        assert_eq!(budget.used(), 200, "only b's two messages are left");
        assert!(
            !b.push(&message(4), 100, 10),
            "past the shared budget alone"
        );
        assert_eq!(budget.used(), 0);
        let (a, b) = (Queue::shared(budget.clone()), Queue::shared(budget.clone()));
        assert!(a.push(&message(1), 100, 10));
        assert!(b.push(&message(1), 100, 10));
        assert_eq!(budget.used(), 200);
        drop(a);
        assert_eq!(budget.used(), 100, "a dropped queue gives its bytes back");
    }
}
