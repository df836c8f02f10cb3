//! `herald.v1.Notifier`: live notifications.
//!
//! One tail of the notification log per logger process ([`Fanout::tail`])
//! feeds every local subscriber through a bounded queue of its own. A
//! subscriber whose queue is full is cut off with RESOURCE_EXHAUSTED (never
//! skipped silently); on shutdown every stream ends with UNAVAILABLE so clients
//! reconnect elsewhere.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::Stream;
use herald::{
    backend::{Notification, NotificationFeed},
    domain::SubscriptionFilter,
    pb::{self, notifier_server::Notifier},
};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

/// How a subscription ended, when the server ended it.
const OPEN: u8 = 0;
const LAGGED: u8 = 1;
const CLOSED: u8 = 2;

struct Subscriber {
    filter: SubscriptionFilter,
    tx: mpsc::Sender<pb::SubscribeResponse>,
    end: Arc<AtomicU8>,
}

/// The local subscribers of one logger, by user id.
pub struct Fanout {
    subscribers: Mutex<HashMap<String, HashMap<u64, Subscriber>>>,
    next_id: AtomicU64,
    buffer: usize,
}

impl Fanout {
    /// A fan-out with `buffer` messages of room per subscriber.
    pub fn new(buffer: usize) -> Arc<Self> {
        Arc::new(Self {
            subscribers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            buffer,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<u64, Subscriber>>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subscribe(self: &Arc<Self>, filter: SubscriptionFilter) -> Subscription {
        let (tx, rx) = mpsc::channel(self.buffer);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let end = Arc::new(AtomicU8::new(OPEN));
        let user = filter.user_id.clone();
        self.lock().entry(user.clone()).or_default().insert(
            id,
            Subscriber {
                filter,
                tx,
                end: end.clone(),
            },
        );
        Subscription {
            _slot: None,
            rx,
            end,
            cursor: String::new(),
            _guard: Guard {
                fanout: self.clone(),
                user,
                id,
            },
        }
    }

    fn remove(&self, user: &str, id: u64) {
        let mut subscribers = self.lock();
        if let Some(of_user) = subscribers.get_mut(user) {
            of_user.remove(&id);
            if of_user.is_empty() {
                subscribers.remove(user);
            }
        }
    }

    /// Hands one logged change to the subscribers it concerns.
    pub fn publish(&self, notification: &Notification) {
        let mut subscribers = self.lock();
        let Some(of_user) = subscribers.get_mut(&notification.event.user_id) else {
            return;
        };
        let message = pb::SubscribeResponse {
            event: Some(notification.event.clone().into()),
            cursor: notification.cursor.clone(),
        };
        of_user.retain(|_, sub| {
            if !sub.filter.matches(&notification.event) {
                return true;
            }
            match sub.tx.try_send(message.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    sub.end.store(LAGGED, Ordering::Release);
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
        if of_user.is_empty() {
            subscribers.remove(&notification.event.user_id);
        }
    }

    /// Ends every subscription with UNAVAILABLE.
    fn close_all(&self) {
        for (_, of_user) in self.lock().drain() {
            for (_, sub) in of_user {
                sub.end.store(CLOSED, Ordering::Release);
            }
        }
    }

    /// Tails the notification log from its current end and publishes every
    /// entry, until `shutdown`; then ends every subscription.
    pub async fn tail(
        self: Arc<Self>,
        feed: Arc<dyn NotificationFeed>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        let mut cursor = None;
        loop {
            let step = async {
                let current = match cursor.clone() {
                    Some(c) => c,
                    None => feed.latest_cursor().await?,
                };
                let batch = feed
                    .read_after(&current, 1_000, Duration::from_secs(5))
                    .await?;
                Ok::<_, herald::Error>((current, batch))
            };
            let result = tokio::select! {
                result = step => result,
                () = shutdown.cancelled() => break,
            };
            match result {
                Ok((current, batch)) => {
                    backoff = Duration::from_millis(100);
                    cursor = Some(batch.last().map_or(current, |n| n.cursor.clone()));
                    for notification in &batch {
                        self.publish(notification);
                    }
                }
                Err(err) => {
                    warn!(error = %err, retry_in = ?backoff, "cannot read the notification log");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        debug!("notification tail stopped");
        self.close_all();
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

struct Subscription {
    rx: mpsc::Receiver<pb::SubscribeResponse>,
    end: Arc<AtomicU8>,
    /// The cursor of the last message sent, to tell a cut-off client where to resume.
    cursor: String,
    _guard: Guard,
    /// Counts this stream against its client's limit while it is open.
    _slot: Option<StreamSlot>,
}

/// The response stream of Subscribe.
pub type SubscribeStream =
    Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

/// The Notifier service over a [`Fanout`].
pub struct NotifierService {
    fanout: Arc<Fanout>,
    shutdown: CancellationToken,
    streams: Arc<StreamCounts>,
}

impl NotifierService {
    /// The service; its streams end with UNAVAILABLE when `shutdown` is
    /// cancelled, and each client (or user) may hold `max_streams` at once.
    pub fn new(fanout: Arc<Fanout>, shutdown: CancellationToken, max_streams: usize) -> Self {
        let streams = Arc::new(StreamCounts {
            max: max_streams,
            open: Mutex::new(HashMap::new()),
        });
        Self {
            fanout,
            shutdown,
            streams,
        }
    }
}

/// Open Subscribe streams per client id (or user, for user tokens).
struct StreamCounts {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

impl StreamCounts {
    /// A place for one more stream of `client`, held until the guard drops.
    fn acquire(self: &Arc<Self>, client: String) -> Result<StreamSlot, Status> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(client.clone()).or_default();
        if *count >= self.max {
            let who = if client.is_empty() {
                "anonymous callers"
            } else {
                client.as_str()
            };
            return Err(Status::resource_exhausted(format!(
                "too many open Subscribe streams for {who} (at most {})",
                self.max
            )));
        }
        *count += 1;
        Ok(StreamSlot {
            counts: self.clone(),
            client,
        })
    }
}

/// One open stream's place in [`StreamCounts`].
struct StreamSlot {
    counts: Arc<StreamCounts>,
    client: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[tonic::async_trait]
impl Notifier for NotifierService {
    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let user = crate::service::user_of(&request);
        let client = match &user {
            Some(user) => format!("user:{user}"),
            None => crate::service::source_of(&request),
        };
        let filter = SubscriptionFilter::try_from(request.into_inner())?;
        if user.is_some_and(|user| user != filter.user_id) {
            return Err(Status::permission_denied(
                "user tokens may only subscribe to their own notifications",
            ));
        }
        if self.shutdown.is_cancelled() {
            return Err(Status::unavailable("server is shutting down"));
        }
        let slot = self.streams.acquire(client)?;
        info!(user_id = %filter.user_id, "subscriber connected");
        let mut subscription = self.fanout.subscribe(filter);
        subscription._slot = Some(slot);
        let shutdown = self.shutdown.clone();
        let stream = futures_util::stream::unfold(Some(subscription), move |state| {
            let shutdown = shutdown.clone();
            async move {
                let mut sub = state?;
                tokio::select! {
                    biased;
                    message = sub.rx.recv() => match message {
                        Some(message) => {
                            sub.cursor.clone_from(&message.cursor);
                            Some((Ok(message), Some(sub)))
                        }
                        None => Some((Err(end_status(&sub)), None)),
                    },
                    () = shutdown.cancelled() => Some((Err(shutting_down()), None)),
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn shutting_down() -> Status {
    Status::unavailable("server is shutting down; reconnect to another logger")
}

fn end_status(sub: &Subscription) -> Status {
    match sub.end.load(Ordering::Acquire) {
        LAGGED => Status::resource_exhausted(format!(
            "subscriber fell too far behind; last cursor delivered: {:?}",
            sub.cursor
        )),
        _ => shutting_down(),
    }
}
