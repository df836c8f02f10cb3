//! The publisher's background task: batches out of the queue, each sent
//! (and retried) on a task of its own, and the outcome of every event.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use herald::{pb, random::SplitMix64};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinSet,
    time::Instant,
};
use tonic::Code;

use crate::{Client, Error, client::item_parts};

use super::{Item, Outcome, Queued, Shared};

/// The background task: gathers batches from the queue and sends them,
/// `in_flight` at a time, until the queue is closed and everything is sent,
/// or until close stops it (then what is held is counted as dropped).
pub(super) async fn dispatch(
    client: Client,
    shared: Arc<Shared>,
    mut items: mpsc::UnboundedReceiver<Item>,
) {
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

/// Longest wait a server's `RetryInfo` can impose before the next attempt.
const MAX_ASKED_WAIT: Duration = Duration::from_secs(60);

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
        // A server's hint is honoured up to a bound, so that no answer can
        // park the buffer for long.
        let wait = asked_wait
            .map(|w| w.min(MAX_ASKED_WAIT))
            .unwrap_or_else(|| {
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
