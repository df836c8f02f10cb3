//! Sending one event through the channels its routes choose, each with
//! its own retries, past the channels its recipient opted out of, and the
//! [`Recorder`] that writes every attempt to the delivery log.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use herald::{
    Event,
    domain::{DeliveryAttempt, Recipient, now},
};
use herald_storage::{Delivery, DeliveryLog, recipient, run_batches};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::{Context, Outcome, give_up};
use crate::channels::{Named, Next};

/// Most attempts one write of the delivery log records.
const RECORD_BATCH: usize = 256;

/// How one channel ended with an event.
enum Sending {
    /// It took the event.
    Took,
    /// It cannot take the event: why.
    Failed(String),
    /// It could not try now: why.
    Later(String),
}

/// Sends the event through every chosen channel that has not taken it yet,
/// all at once, but for the channels its recipient opted out of (read
/// from the recipient's record now, so a change applies to the next
/// event): those are skipped, recorded as such, unless a required route
/// chose them. The first channel that fails for good gives the event up
/// (FAILED, dead-lettered, naming the failed channels), once the others
/// are done; a channel that could not try leaves the entry for later, as
/// does a record that cannot be read.
pub(super) async fn send(context: &Context, delivery: &Delivery) -> Result<(), Outcome> {
    let set = context.channels.current();
    let chosen = set.choose(&delivery.event);
    if chosen.is_empty() {
        context.metrics.unrouted();
        debug!(event_id = %delivery.event.id, "no route chose a channel");
        return Ok(());
    }
    let todo: Vec<(&Named, bool)> = chosen
        .into_iter()
        .filter(|(c, _)| !delivery.delivered.contains(&c.name))
        .collect();
    let recipient = recipient_for(context, &delivery.event, &todo).await?;
    let recipient = recipient.as_ref();
    let ended = join_all(todo.iter().map(|&(named, required)| {
        let opted_out = recipient
            .filter(|_| !required && named.recorded)
            .and_then(|r| r.preferences.opted_out(&named.name, &delivery.event));
        async move {
            match opted_out {
                Some(opt_out) => {
                    let why = format!("opted out: {opt_out}");
                    skip(context, &delivery.event, named, why).await
                }
                None => send_through(context, delivery, named, recipient).await,
            }
        }
    }))
    .await;
    let (mut failed, mut later) = (Vec::new(), Vec::new());
    for ((channel, _), ended) in todo.iter().zip(ended) {
        match ended {
            Sending::Took => {}
            Sending::Failed(why) => failed.push(format!("channel {}: {why}", channel.name)),
            Sending::Later(why) => later.push(format!("channel {}: {why}", channel.name)),
        }
    }
    if !failed.is_empty() {
        return Err(give_up(context, &delivery.event, failed.join("; ")).await);
    }
    if !later.is_empty() {
        return Err(Outcome::Retry(later.join("; ")));
    }
    Ok(())
}

/// `event`'s recipient record (its preferences, its address), read when
/// `todo` holds a channel of a channels file; none without one (the
/// notification line alone reads nothing), and none for a user without a
/// record.
async fn recipient_for(
    context: &Context,
    event: &Event,
    todo: &[(&Named, bool)],
) -> Result<Option<Recipient>, Outcome> {
    if !todo.iter().any(|(named, _)| named.recorded) {
        return Ok(None);
    }
    recipient(context.recipients.as_ref(), &event.user_id)
        .await
        .map_err(|err| Outcome::Retry(format!("cannot read the recipient's record: {err}")))
}

/// Skips `named` for `event` (the recipient opted out, or has no address
/// for it: `why`): counted, and recorded as a skipped attempt; the channel
/// is done with it.
async fn skip(context: &Context, event: &Event, named: &Named, why: String) -> Sending {
    debug!(event_id = %event.id, channel = %named.name, %why, "skipped");
    context.metrics.skipped(&named.name);
    let mut attempt = attempt_of(event, named, now(), Duration::ZERO);
    attempt.error = why;
    attempt.skipped = true;
    context.recorder.note(attempt.bounded()).await;
    Sending::Took
}

/// An attempt of `event` through `named` that started `at` and took
/// `latency`: not (yet) a success, nor skipped.
fn attempt_of(
    event: &Event,
    named: &Named,
    at: std::time::SystemTime,
    latency: Duration,
) -> DeliveryAttempt {
    DeliveryAttempt {
        event_id: event.id,
        channel: named.name.clone(),
        kind: named.channel.kind(),
        target: named.channel.target(),
        attempted_at: at,
        latency,
        succeeded: false,
        http_status: None,
        error: String::new(),
        skipped: false,
    }
}

/// Sends through one channel, retrying failed attempts after the channel's
/// wait; its attempts are counted from the entry's delivery count, so
/// redeliveries do not start over. On shutdown the entry is left pending.
async fn send_through(
    context: &Context,
    delivery: &Delivery,
    named: &Named,
    recipient: Option<&Recipient>,
) -> Sending {
    let event = &delivery.event;
    let name = named.name.as_str();
    let mut attempt = delivery.deliveries.max(1);
    loop {
        let (at, started) = (now(), Instant::now());
        let result = named.channel.send(event, recipient).await;
        let latency = started.elapsed();
        let record = |succeeded: bool, http_status: Option<u16>, error: String| {
            DeliveryAttempt {
                succeeded,
                http_status,
                error,
                ..attempt_of(event, named, at, latency)
            }
            .bounded()
        };
        let failure = match result {
            Ok(sent) => {
                context.metrics.attempted(name, latency);
                context.metrics.sent(name);
                // Recorded before the event moves on: a redelivery skips it.
                if !named.recorded {
                    return Sending::Took;
                }
                if let Err(err) = context
                    .recorder
                    .record(record(true, sent.http_status, String::new()))
                    .await
                {
                    warn!(event_id = %event.id, channel = name, error = %err, "cannot record a delivery; a redelivery would repeat it");
                }
                return Sending::Took;
            }
            Err(failure) => failure,
        };
        if failure.next == Next::Skip {
            return skip(context, event, named, failure.error).await;
        }
        context.metrics.failed(name, failure.reason.as_str());
        if failure.attempted {
            context.metrics.attempted(name, latency);
        }
        if failure.attempted && named.recorded {
            context
                .recorder
                .note(record(false, failure.http_status, failure.error.clone()))
                .await;
        }
        let error = failure.error;
        let wait = match failure.next {
            Next::Skip | Next::GiveUp => return Sending::Failed(error),
            Next::Later => return Sending::Later(error),
            Next::Retry(_) if attempt >= named.retry.attempts => {
                return Sending::Failed(format!(
                    "{attempt} attempts failed, the last with: {error}"
                ));
            }
            Next::Retry(after) => after.unwrap_or_else(|| {
                let mut rng = context.rng.lock().unwrap_or_else(|p| p.into_inner());
                named.retry.wait(attempt, &mut rng)
            }),
        };
        // A long wait would hold a place among the events in flight; the
        // entry comes back after the claim idle time instead.
        if wait > context.config.claim_idle / 2 {
            return Sending::Later(format!(
                "{error}; next attempt in {} or later",
                humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
            ));
        }
        debug!(event_id = %event.id, channel = name, attempt, %error, "attempt failed; retrying");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = context.shutdown.cancelled() => return Sending::Later(error),
        }
        attempt += 1;
    }
}

/// One attempt to record, and who waits for it being written.
type Record = (DeliveryAttempt, Option<oneshot::Sender<herald::Result<()>>>);

/// Writes attempts to the delivery log in batches (one write per
/// partition each), from a task of its own.
pub(super) struct Recorder {
    queue: mpsc::Sender<Record>,
}

impl Recorder {
    /// Starts the writing task; it ends when the recorder is dropped.
    pub(super) fn start(log: Arc<dyn DeliveryLog>) -> Self {
        let (queue, records) = mpsc::channel::<Record>(4 * RECORD_BATCH);
        tokio::spawn(run_batches(records, RECORD_BATCH, 4, move |batch| {
            let log = log.clone();
            async move {
                let (attempts, waiting): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let written = log.record_attempts(&attempts).await;
                if let Err(err) = &written {
                    warn!(error = %err, attempts = attempts.len(), "cannot record delivery attempts");
                }
                for reply in waiting.into_iter().flatten() {
                    let _ = reply.send(written.clone());
                }
            }
        }));
        Self { queue }
    }

    /// Records `attempt`, and answers once it is written.
    async fn record(&self, attempt: DeliveryAttempt) -> herald::Result<()> {
        let (reply, written) = oneshot::channel();
        let gone = || herald::Error::Unavailable("the delivery log writer stopped".into());
        self.queue
            .send((attempt, Some(reply)))
            .await
            .map_err(|_| gone())?;
        written.await.map_err(|_| gone())?
    }

    /// Records `attempt` without waiting for the write.
    async fn note(&self, attempt: DeliveryAttempt) {
        let _ = self.queue.send((attempt, None)).await;
    }
}
