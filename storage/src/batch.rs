//! Opportunistic batching of single creates and status changes.
//!
//! Concurrent `create` and `update_status` calls are queued, and a background
//! task hands whatever is queued to the backend's batch method as one write (one
//! Lua script in Redis): under load, many calls share one round trip and one
//! script run; when idle, a call goes alone, without waiting for company. Each
//! item keeps its own outcome, and a batch is atomic, so no guarantee weakens.
//!
//! On a Redis Cluster each partition has queues and batches of its own,
//! with their own limit of batches under way: a partition whose master is
//! slow or gone (a failover) holds up its own calls only, never another
//! partition's. On one Redis node (or in memory), where every partition
//! lives on the one server, one set of queues serves them all, and a batch
//! of creates may be one transaction across partitions.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::{EventStore, Partitioned, Released, RetentionSlice, StatusCounts, Sweep};
use herald::{
    domain::{Event, NewEvent, StatusChange},
    error::{Error, Result},
    partition::{Partition, Partitions},
    query::{ListQuery, Page},
};

/// Most items in one batch.
pub const MAX_BATCH: usize = 256;
/// Batches under way at once with one set of queues for every partition;
/// more calls wait, and grow the next batch.
const SHARED_IN_FLIGHT: usize = 8;
/// Calls queued, with one set of queues, before callers wait for room.
const SHARED_QUEUE: usize = 4 * MAX_BATCH;
/// Batches of one partition under way at once, with queues per partition.
const PARTITION_IN_FLIGHT: usize = 4;
/// Calls of one partition queued, with queues per partition, before
/// callers wait for room.
const PARTITION_QUEUE: usize = MAX_BATCH;

type Job<T> = (T, oneshot::Sender<Result<Event>>);

/// An [`EventStore`] that batches single calls into the inner store's batch
/// methods: with one set of queues, or a set per partition.
pub struct Batching {
    inner: Arc<dyn EventStore>,
    partitions: Partitions,
    /// The queues of creates: one, or one per partition (by index).
    creates: Vec<mpsc::Sender<Job<NewEvent>>>,
    /// The queues of status changes, likewise.
    changes: Vec<mpsc::Sender<Job<StatusChange>>>,
}

impl Batching {
    /// Wraps `inner` with one set of queues for every partition (one Redis
    /// node, memory); spawns the batching tasks, so it needs a Tokio
    /// runtime. The tasks end when this is dropped.
    pub fn new(inner: Arc<dyn EventStore>) -> Self {
        let queues = Self::spawn_queues(&inner, SHARED_IN_FLIGHT, SHARED_QUEUE);
        let (creates, changes) = (vec![queues.0], vec![queues.1]);
        Self {
            partitions: inner.partitions(),
            inner,
            creates,
            changes,
        }
    }

    /// [`Batching::new`] with a set of queues per partition (a Redis
    /// Cluster, whose partitions are on several masters).
    pub fn per_partition(inner: Arc<dyn EventStore>) -> Self {
        let partitions = inner.partitions();
        let (creates, changes) = partitions
            .all()
            .map(|_| Self::spawn_queues(&inner, PARTITION_IN_FLIGHT, PARTITION_QUEUE))
            .unzip();
        Self {
            inner,
            partitions,
            creates,
            changes,
        }
    }

    /// The place of partition `p`'s queues.
    fn lane(&self, p: Partition) -> usize {
        if self.creates.len() == 1 {
            0
        } else {
            p.index()
        }
    }

    /// A set of queues of creates and changes, with their tasks: up to
    /// `in_flight` batches of each under way, `queue` calls waiting.
    fn spawn_queues(
        inner: &Arc<dyn EventStore>,
        in_flight: usize,
        queue: usize,
    ) -> (mpsc::Sender<Job<NewEvent>>, mpsc::Sender<Job<StatusChange>>) {
        let (creates, create_rx) = mpsc::channel(queue);
        let (changes, change_rx) = mpsc::channel(queue);
        let store = inner.clone();
        tokio::spawn(run_batches(create_rx, MAX_BATCH, in_flight, move |jobs| {
            let store = store.clone();
            answer(jobs, async move |events: Vec<NewEvent>| {
                let n = events.len();
                match store.create_many(events).await {
                    Ok(results) => results,
                    Err(err) => vec![Err(err); n],
                }
            })
        }));
        let store = inner.clone();
        tokio::spawn(run_batches(change_rx, MAX_BATCH, in_flight, move |jobs| {
            let store = store.clone();
            answer(jobs, async move |changes: Vec<StatusChange>| {
                match store.update_status_many(&changes).await {
                    Ok(results) => results,
                    Err(err) => vec![Err(err); changes.len()],
                }
            })
        }));
        (creates, changes)
    }

    async fn submit<T>(queue: &mpsc::Sender<Job<T>>, item: T) -> Result<Event> {
        let (reply, answer) = oneshot::channel();
        let gone = || Error::Unavailable("store is shutting down".into());
        queue.send((item, reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Feeds what `queue` holds to `run`, in batches of up to `max_batch` items,
/// with at most `max_in_flight` batches under way: a batch never waits for
/// more items, but items that arrive while batches are under way join the
/// next one. Ends when every sender is gone and the batches under way are done.
pub async fn run_batches<T, F, Fut>(
    mut queue: mpsc::Receiver<T>,
    max_batch: usize,
    max_in_flight: usize,
    run: F,
) where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let max_in_flight = max_in_flight.max(1);
    let slots = Arc::new(Semaphore::new(max_in_flight));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let work = run(batch);
        tokio::spawn(async move {
            work.await;
            drop(slot);
        });
    }
    let _ = slots.acquire_many(max_in_flight as u32).await;
}

/// Runs a batch of jobs with `run` and hands each caller its result.
async fn answer<T>(jobs: Vec<Job<T>>, run: impl AsyncFnOnce(Vec<T>) -> Vec<Result<Event>>) {
    let (items, replies): (Vec<T>, Vec<_>) = jobs.into_iter().unzip();
    let mut results = run(items).await.into_iter();
    for reply in replies {
        let result = results
            .next()
            .unwrap_or_else(|| Err(Error::Internal("batch answered too few results".into())));
        // The caller may have gone; the write stands either way.
        let _ = reply.send(result);
    }
}

impl Partitioned for Batching {
    fn partitions(&self) -> Partitions {
        self.partitions
    }
}

#[async_trait]
impl EventStore for Batching {
    async fn prepare(&self) -> Result<()> {
        self.inner.prepare().await
    }

    async fn upgrade(&self) -> Result<Option<crate::Upgraded>> {
        self.inner.upgrade().await
    }

    async fn create_many(&self, events: Vec<NewEvent>) -> Result<Vec<Result<Event>>> {
        self.inner.create_many(events).await
    }

    async fn update_status_many(&self, changes: &[StatusChange]) -> Result<Vec<Result<Event>>> {
        self.inner.update_status_many(changes).await
    }

    async fn get(&self, id: Uuid) -> Result<Event> {
        self.inner.get(id).await
    }

    async fn page_token_key(&self) -> Result<[u8; 32]> {
        self.inner.page_token_key().await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        self.inner.list(query).await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    async fn unread_count(&self, user: &str) -> Result<u64> {
        self.inner.unread_count(user).await
    }

    async fn status_counts(&self) -> Result<StatusCounts> {
        self.inner.status_counts().await
    }

    async fn remove_older_than(&self, slice: RetentionSlice) -> Result<Sweep> {
        self.inner.remove_older_than(slice).await
    }

    async fn first_queued(&self, user: &str) -> Result<Option<Uuid>> {
        self.inner.first_queued(user).await
    }

    async fn use_ordering(&self) -> Result<()> {
        self.inner.use_ordering().await
    }

    async fn unwritable_partitions(&self) -> Result<Vec<(Partition, String)>> {
        self.inner.unwritable_partitions().await
    }

    async fn release_due(
        &self,
        partition: Partition,
        now: SystemTime,
        max: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Vec<Released>>> {
        self.inner
            .release_due(partition, now, max, owner, lease)
            .await
    }

    async fn create(&self, event: NewEvent) -> Result<Event> {
        let p = self.partitions.of_user(event.user_id());
        Self::submit(&self.creates[self.lane(p)], event).await
    }

    async fn apply(&self, change: StatusChange) -> Result<Event> {
        match self.partitions.of_id(change.id) {
            Some(p) => Self::submit(&self.changes[self.lane(p)], change).await,
            // No event of this deployment: the store says so.
            None => self.inner.apply(change).await,
        }
    }
}
