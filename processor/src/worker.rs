//! The worker loop: receive, deliver through the sink, mark PROCESSED, ack.

use std::{sync::Arc, time::Duration};

use herald::{
    EventStatus,
    backend::{Consumer, ConsumerConfig, Delivery, WorkQueue},
};
use herald_client::{Client, Error as ClientError};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::{debug, info, warn};

use crate::{config::WorkerConfig, sink::Sink};

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

struct Context {
    consumer: Arc<dyn Consumer>,
    client: Client,
    sink: Arc<dyn Sink>,
    max_deliveries: u64,
}

/// Consumes the queue as one member of the group until `shutdown` is
/// cancelled, with up to `concurrency` events in flight; then waits (at most
/// the grace time) for those to finish.
pub async fn run_worker(
    queue: &dyn WorkQueue,
    client: Client,
    sink: Arc<dyn Sink>,
    config: &WorkerConfig,
    shutdown: CancellationToken,
) {
    let consumer = queue.consumer(ConsumerConfig {
        name: config.consumer_name.clone(),
        claim_idle: config.claim_idle(),
        block: config.block(),
    });
    let context = Arc::new(Context {
        consumer,
        client,
        sink,
        max_deliveries: config.max_deliveries,
    });
    let permits = Arc::new(Semaphore::new(config.concurrency as usize));
    let mut tasks = JoinSet::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        while tasks.try_join_next().is_some() {}
        let first = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let room = 1 + permits.available_permits();
        let received = tokio::select! {
            received = context.consumer.receive(room) => received,
            () = shutdown.cancelled() => break,
        };
        let batch = match received {
            Ok(batch) => {
                backoff = Duration::from_millis(100);
                batch
            }
            Err(err) => {
                warn!(error = %err, retry_in = ?backoff, "cannot read the queue");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut first = Some(first);
        for delivery in batch {
            let permit = match first.take() {
                Some(permit) => permit,
                None => match permits.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    // receive() returned no more than there was room for.
                    Err(_) => break,
                },
            };
            let context = context.clone();
            tasks.spawn(async move {
                handle(&context, delivery).await;
                drop(permit);
            });
        }
    }
    let in_flight = tasks.len();
    if in_flight > 0 {
        info!(in_flight, "finishing events in flight");
        if tokio::time::timeout(config.grace(), async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            warn!(
                left = tasks.len(),
                "grace time over; unfinished entries stay pending for another consumer"
            );
        }
    }
}

async fn handle(context: &Context, delivery: Delivery) {
    let outcome = process(context, &delivery).await;
    let id = delivery.event.id;
    let result = match &outcome {
        Outcome::Ack => {
            context
                .consumer
                .ack(std::slice::from_ref(&delivery.entry_id))
                .await
        }
        Outcome::DeadLetter(reason) => {
            warn!(event_id = %id, deliveries = delivery.deliveries, %reason, "dead-lettering event");
            context.consumer.dead_letter(&delivery, reason).await
        }
        Outcome::Retry(reason) => {
            warn!(event_id = %id, deliveries = delivery.deliveries, %reason, "delivery failed; will retry");
            Ok(())
        }
    };
    if let Err(err) = result {
        // The entry stays pending and is reclaimed later: at least once.
        warn!(event_id = %id, error = %err, ?outcome, "cannot settle queue entry");
    }
}

async fn process(context: &Context, delivery: &Delivery) -> Outcome {
    let event = &delivery.event;
    if delivery.deliveries > context.max_deliveries {
        let reason = format!("delivered {} times without success", delivery.deliveries);
        return give_up(context, delivery, reason).await;
    }
    if delivery.deliveries > 1 {
        // Redelivered: an earlier attempt may have finished all but the ack.
        match context.client.get_event(event.id).await {
            Ok(current) if current.status != EventStatus::Pending => {
                debug!(event_id = %event.id, status = %current.status, "already settled");
                return Outcome::Ack;
            }
            Err(err) if err.code() == Code::NotFound => {
                return Outcome::DeadLetter("event not found".into());
            }
            _ => {}
        }
    }
    if let Err(err) = context.sink.deliver(event).await {
        return Outcome::Retry(format!("sink failed: {err:#}"));
    }
    match context
        .client
        .update_status(event.id, EventStatus::Processed)
        .await
    {
        Ok(_) => Outcome::Ack,
        Err(err) => settle_error(err),
    }
}

/// Marks the event FAILED, then dead-letters the entry.
async fn give_up(context: &Context, delivery: &Delivery, reason: String) -> Outcome {
    match context
        .client
        .update_status(delivery.event.id, EventStatus::Failed)
        .await
    {
        Ok(_) => Outcome::DeadLetter(reason),
        Err(err) => settle_error(err),
    }
}

/// What an UpdateStatus error means for the entry.
fn settle_error(err: ClientError) -> Outcome {
    match err.code() {
        // The event moved on without us (e.g. already PROCESSED): nothing left to do.
        Code::FailedPrecondition => Outcome::Ack,
        Code::NotFound => Outcome::DeadLetter("event not found".into()),
        _ => Outcome::Retry(format!("UpdateStatus failed: {err}")),
    }
}
