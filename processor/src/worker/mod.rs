//! The worker loop: receive, deliver through the chosen channels, mark
//! PROCESSED, ack.
//!
//! Events are delivered concurrently (up to `--concurrency` in flight). The
//! routes choose an event's channels; those that already took it (its
//! record says, after a redelivery or a redrive) are skipped, and the rest
//! are tried at once, each retrying on its own schedule. Every attempt is
//! recorded; a success is recorded (in the event's record) before the
//! event moves on, so a channel that took an event never gets it again.
//! Once every chosen channel took it, the event goes to the settler, which
//! marks events PROCESSED in batches (one BatchUpdateStatus call each) and
//! acknowledges the batch's entries with one XACK: an entry is acknowledged
//! only after its event's status change succeeded.
//!
//! A channel that exhausts its attempts, or refuses the event for good,
//! makes the event FAILED and its entry a dead letter naming the channels
//! and their last errors. A channel that cannot try now (an open breaker,
//! a wait longer than half the claim idle time) leaves the entry pending:
//! it is delivered again after `--claim-idle`, and once the deliveries
//! pass `--max-deliveries` the event is given up.
//!
//! An event an ordered route matches waits for its turn: until no earlier
//! event of its user (by id, so by creation) is still PENDING. Waiting,
//! it gives its place among the events in flight back, and keeps its entry
//! from being reclaimed by touching it; it takes a place again when its
//! turn comes. Events received and not yet settled, waiting or not, are
//! at most `MAX_WAITING` per place (`--concurrency`): past that, no more
//! are received. Among this worker's waiting events of one user, only the
//! earliest reads storage; the others wait for it. The earliest PENDING
//! event of a user never waits, so a user's queue moves as long as that
//! one is delivered, given up (dead-lettered after `--max-deliveries`) or
//! otherwise settled.
//!
//! An event a digest route matches goes to that route's channels in a
//! digest (see `digests`): once its other channels took it, it joins its
//! digest and its entry is acknowledged; the event stays PENDING until the
//! digest is sent.
//!
//! Each delivery is a span of the event's trace (W3C trace context, from
//! the queue entry): its log lines carry the `trace_id`, and the status change
//! that settles it carries the span's `traceparent` back to the logger.
//!
//! Here: the loop and the handling of each event; `send` sends an event
//! through its channels and records the attempts; `settle` marks delivered
//! events PROCESSED and acknowledges them; `turns` holds an ordered event
//! until its turn; `digests` joins events to digests and sends the due
//! ones.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use herald::{EventStatus, domain::StatusChange, random::SplitMix64, trace::TraceParent};
use herald_client::Client;
use herald_storage::{
    Backend, Consumer, ConsumerOptions, DeadLetters, Delivery, DeliveryLog, DigestStore,
    EventStore, RecipientStore, WorkQueue, run_batches,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::{Instrument, debug, info, info_span, warn};
use uuid::Uuid;

use herald_runtime::{otel, process::Backoff};

mod digests;
mod send;
mod settle;
mod turns;

use crate::{
    channels::{Channel, Channels, ChannelsError},
    config::WorkerArgs,
    metrics::WorkerMetrics,
};
use send::{Recorder, send};
use settle::{settle_batch, settle_error};
use turns::{use_ordering, wait_turn, wake};

/// Most events one BatchUpdateStatus call settles.
const SETTLE_BATCH: usize = 256;
/// Settle calls under way at once.
const SETTLES_IN_FLIGHT: usize = 4;
/// Events received and not yet settled (sending, or waiting for their
/// turn without a place in flight), per place (`--concurrency`).
const MAX_WAITING: usize = 16;
/// Longest pause between two looks at whether an ordered event's turn has
/// come.
const MAX_TURN_POLL: Duration = Duration::from_millis(100);

/// What to do with an entry after handling it.
#[derive(Debug)]
enum Outcome {
    /// Done: acknowledge it.
    Ack,
    /// Give up: move it to the dead letters.
    DeadLetter(String),
    /// Leave it pending; it is reclaimed after the idle time and tried again.
    Retry(String),
}

/// A delivered event waiting to be marked PROCESSED, with when it was
/// received; its permit is a place among the events in flight, returned once
/// it is settled.
type Delivered = (Delivery, Instant, OwnedSemaphorePermit);

struct Context {
    consumer: Arc<dyn Consumer>,
    /// Where an ordered event reads whether its turn has come.
    store: Arc<dyn EventStore>,
    /// Places among the events in flight.
    permits: Arc<Semaphore>,
    /// Places among the events received and not yet settled (see
    /// `MAX_WAITING`).
    received: Arc<Semaphore>,
    /// Set once the deployment is known to use ordering (this worker
    /// recorded it).
    ordering: std::sync::atomic::AtomicBool,
    /// This worker's ordered events waiting for their turn, by user, each
    /// with what wakes it: the earliest of a user is woken when this worker
    /// settles one of the user's events or the one before leaves (events
    /// settled by other workers are seen by polling).
    waiting: Mutex<HashMap<String, BTreeMap<Uuid, Arc<Notify>>>>,
    /// Where given-up entries go.
    dead_letters: Arc<dyn DeadLetters>,
    /// Where recipients' preferences are read, before each channel.
    recipients: Arc<dyn RecipientStore>,
    /// Where digests are kept.
    digests: Arc<dyn DigestStore>,
    client: Client,
    channels: Arc<Channels>,
    recorder: Recorder,
    config: WorkerArgs,
    metrics: WorkerMetrics,
    shutdown: CancellationToken,
    /// Jitter of retry waits.
    rng: Mutex<SplitMix64>,
}

/// A worker, ready to run: its channels loaded.
pub struct Worker {
    queue: Arc<dyn WorkQueue>,
    store: Arc<dyn EventStore>,
    deliveries: Arc<dyn DeliveryLog>,
    dead_letters: Arc<dyn DeadLetters>,
    recipients: Arc<dyn RecipientStore>,
    digests: Arc<dyn DigestStore>,
    client: Client,
    channels: Arc<Channels>,
    config: WorkerArgs,
    metrics: WorkerMetrics,
}

impl Worker {
    /// A worker on `backend`'s queue that settles events through `client`,
    /// delivering through the channels of `config` (`line` is where line
    /// channels write). A bad channels file is an error here, before
    /// anything runs.
    pub fn new(
        backend: &Backend,
        client: Client,
        line: Arc<dyn Channel>,
        config: &WorkerArgs,
        metrics: WorkerMetrics,
    ) -> Result<Self, ChannelsError> {
        let channels = Arc::new(Channels::load(config, line, metrics.clone())?);
        Ok(Self {
            queue: backend.queue.clone(),
            store: backend.store.clone(),
            deliveries: backend.deliveries.clone(),
            dead_letters: backend.dead_letters.clone(),
            recipients: backend.recipients.clone(),
            digests: backend.digests.clone(),
            client,
            channels,
            config: config.clone(),
            metrics,
        })
    }

    /// Consumes the queue as one member of the group until `shutdown` is
    /// cancelled, with up to `--concurrency` events in flight; then waits
    /// (at most the grace time) for those to be settled. With a channels
    /// file, a SIGHUP reloads it meanwhile.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.config.channels.is_some() {
            tokio::spawn(self.channels.clone().reload_on_hangup(shutdown.clone()));
        }
        let consumer = self.queue.consumer(ConsumerOptions {
            name: self.config.consumer_name.clone(),
            claim_idle: self.config.claim_idle,
            block: self.config.block,
        });
        let concurrency = self.config.concurrency as usize;
        let context = Arc::new(Context {
            consumer,
            store: self.store,
            permits: Arc::new(Semaphore::new(concurrency)),
            received: Arc::new(Semaphore::new(concurrency * MAX_WAITING)),
            waiting: Mutex::default(),
            ordering: Default::default(),
            dead_letters: self.dead_letters,
            recipients: self.recipients,
            digests: self.digests,
            client: self.client,
            channels: self.channels,
            recorder: Recorder::start(self.deliveries),
            config: self.config,
            metrics: self.metrics,
            shutdown: shutdown.clone(),
            rng: Mutex::new(SplitMix64::from_time()),
        });
        run(context, shutdown).await;
    }
}

/// The loop of [`Worker::run`].
async fn run(context: Arc<Context>, shutdown: CancellationToken) {
    use_ordering(&context).await;
    let config = context.config.clone();
    let (settle, settle_queue) = mpsc::channel::<Delivered>(config.concurrency as usize);
    let settler = {
        let context = context.clone();
        tokio::spawn(run_batches(
            settle_queue,
            SETTLE_BATCH,
            SETTLES_IN_FLIGHT,
            move |batch| settle_batch(context.clone(), batch),
        ))
    };
    let digests = tokio::spawn(digests::run(context.clone(), shutdown.clone()));
    let permits = context.permits.clone();
    let mut backoff = Backoff::up_to(Duration::from_secs(5));
    loop {
        let Some(first) = places(&context, &shutdown).await else {
            break;
        };
        let room = 1 + permits
            .available_permits()
            .min(context.received.available_permits());
        let received = tokio::select! {
            received = context.consumer.receive(room) => received,
            () = shutdown.cancelled() => break,
        };
        let batch = match received {
            Ok(batch) => {
                backoff.reset();
                batch
            }
            Err(err) => {
                warn!(error = %err, retry_in = ?backoff.next_wait(), "cannot read the queue");
                if !backoff.sleep(&shutdown).await {
                    break;
                }
                continue;
            }
        };
        let mut first = Some(first);
        for delivery in batch {
            // receive() returned no more than there was room for, but a
            // waiting event may have taken a place back meanwhile.
            let next = match first.take() {
                Some(places) => Some(places),
                None => places(&context, &shutdown).await,
            };
            let Some((permit, slot)) = next else {
                // Stopping: the rest stay pending for another consumer.
                break;
            };
            let (context, settle) = (context.clone(), settle.clone());
            let (received, started) = (Instant::now(), std::time::SystemTime::now());
            // This delivery is a span of the event's trace (a new trace for
            // an entry queued without one).
            let mut delivery = delivery;
            let parent = delivery.event.traceparent;
            let trace = parent.map_or_else(TraceParent::new_root, |t| t.child());
            delivery.event.traceparent = Some(trace);
            let (event_id, deliveries) = (delivery.event.id, delivery.deliveries);
            let span =
                info_span!("deliver", event_id = %delivery.event.id, trace_id = %trace.trace_id());
            tokio::spawn(
                async move {
                    let _slot = slot;
                    debug!(deliveries, "delivering");
                    let Some(permit) = wait_turn(&context, &delivery, permit).await else {
                        // Stopping: the entry stays pending for another consumer.
                        return;
                    };
                    let delivered = deliver(&context, delivery).await;
                    otel::record(|| otel::Step {
                        name: "deliver",
                        context: trace,
                        parent,
                        start: started,
                        attributes: vec![
                            ("herald.event_id", event_id.to_string()),
                            ("herald.deliveries", deliveries.to_string()),
                        ],
                    });
                    if let Some(delivery) = delivered {
                        // The settler outlives every sender, so this cannot fail
                        // but at shutdown, when the entry simply stays pending.
                        let _ = settle.send((delivery, received, permit)).await;
                    }
                }
                .instrument(span),
            );
        }
    }
    drop(settle);
    let in_flight = config.concurrency as usize - permits.available_permits();
    if in_flight > 0 {
        info!(in_flight, "finishing events in flight");
    }
    let all = permits.acquire_many(config.concurrency);
    if tokio::time::timeout(config.worker_grace, all)
        .await
        .is_err()
    {
        warn!("grace time over; unsettled entries stay pending for another consumer");
    }
    settler.abort();
    digests.abort();
}

/// A place in flight and a place among the received events, or `None`
/// if the worker stops first.
async fn places(
    context: &Context,
    shutdown: &CancellationToken,
) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
    let both = async {
        let slot = context.received.clone().acquire_owned().await.ok()?;
        let permit = context.permits.clone().acquire_owned().await.ok()?;
        Some((permit, slot))
    };
    tokio::select! {
        both = both => both,
        () = shutdown.cancelled() => None,
    }
}

/// Delivers one event through its channels; returns it if it is now to be
/// marked PROCESSED, or settles it here (redelivered and already done,
/// given up, or left for later).
async fn deliver(context: &Context, delivery: Delivery) -> Option<Delivery> {
    let outcome = match check_redelivery(context, &delivery).await {
        Some(outcome) => outcome,
        None => match send(context, &delivery).await {
            Ok(()) => match digests::join(context, &delivery).await {
                None => return Some(delivery),
                Some(outcome) => outcome,
            },
            Err(outcome) => outcome,
        },
    };
    apply(context, &delivery, outcome).await;
    None
}

/// Marks the event FAILED, then its entry is dead-lettered.
async fn give_up(context: &Context, event: &herald::Event, reason: String) -> Outcome {
    let change = StatusChange::new(event.id, EventStatus::Failed).in_trace(event.traceparent);
    match context.client.apply(change).await {
        Ok(_) => Outcome::DeadLetter(reason),
        Err(err) => settle_error(err),
    }
}

/// For an entry delivered before: settles it if it needs no (more) sending.
async fn check_redelivery(context: &Context, delivery: &Delivery) -> Option<Outcome> {
    let event = &delivery.event;
    if delivery.deliveries > context.config.max_deliveries {
        let reason = format!("delivered {} times without success", delivery.deliveries);
        return Some(give_up(context, event, reason).await);
    }
    if delivery.deliveries > 1 {
        // An earlier attempt may have finished all but the ack.
        match context.client.get_event(event.id).await {
            Ok(current) if current.status != EventStatus::Pending => {
                debug!(event_id = %event.id, status = %current.status, "already settled");
                return Some(Outcome::Ack);
            }
            Err(err) if err.code() == Code::NotFound => {
                return Some(Outcome::DeadLetter("event not found".into()));
            }
            _ => {}
        }
    }
    None
}

/// Carries out an outcome for one entry.
async fn apply(context: &Context, delivery: &Delivery, outcome: Outcome) {
    let id = delivery.event.id;
    let result = match &outcome {
        Outcome::Ack => context.consumer.ack(&[delivery.entry_id]).await,
        Outcome::DeadLetter(reason) => {
            warn!(event_id = %id, deliveries = delivery.deliveries, %reason, "dead-lettering event");
            let result = context.dead_letters.dead_letter(delivery, reason).await;
            if result.is_ok() {
                context.metrics.dead_lettered();
            }
            result
        }
        Outcome::Retry(reason) => {
            warn!(event_id = %id, deliveries = delivery.deliveries, %reason, "delivery failed; will retry");
            Ok(())
        }
    };
    wake(context, &delivery.event.user_id);
    if let Err(err) = result {
        warn!(event_id = %id, error = %err, ?outcome, "cannot settle queue entry");
    }
}
