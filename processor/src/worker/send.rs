//! Sending one event (or a digest of events) through the channels its
//! routes choose, each with its own retries, past the channels its
//! recipient opted out of, and the [`Recorder`] that writes every attempt
//! to the delivery log.

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
use uuid::Uuid;

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

/// Sends the event through every chosen channel that has not taken it yet
/// (see [`send_to`]). The first channel that fails for good gives the
/// event up (FAILED, dead-lettered, naming the failed channels), once the
/// others are done; a channel that could not try leaves the entry for
/// later, as does a record that cannot be read.
pub(super) async fn send(context: &Context, delivery: &Delivery) -> Result<(), Outcome> {
    let set = context.channels.current();
    let chosen = set.choose(&delivery.event);
    if chosen.is_empty() {
        if set.digest(&delivery.event).is_none() {
            context.metrics.unrouted();
            debug!(event_id = %delivery.event.id, "no route chose a channel");
        }
        return Ok(());
    }
    let todo: Vec<(&Named, bool)> = chosen
        .into_iter()
        .filter(|(c, _)| !delivery.delivered.contains(&c.name))
        .collect();
    let ended = send_to(context, delivery, &todo, None)
        .await
        .map_err(Outcome::Retry)?;
    if !ended.failed.is_empty() {
        return Err(give_up(context, &delivery.event, ended.failed.join("; ")).await);
    }
    if !ended.later.is_empty() {
        return Err(Outcome::Retry(ended.later.join("; ")));
    }
    Ok(())
}

/// How the channels of one send ended.
#[derive(Debug, Default)]
pub(super) struct Ended {
    /// The channels done with it: they took it, or skipped it.
    pub took: Vec<String>,
    /// `channel NAME: why`, for each channel that cannot take it.
    pub failed: Vec<String>,
    /// `channel NAME: why`, for each channel that could not try now.
    pub later: Vec<String>,
}

/// Sends through the channels of `todo` (each with whether a required
/// route chose it) all at once, but for those the recipient opted out of
/// (read from the recipient's record now, so a change applies to the next
/// event): those are skipped, recorded as such, unless required. For a
/// digest, `members` are its events: each attempt is recorded for each of
/// them, naming the digest (the delivery's event). An error is why the
/// recipient's record could not be read (nothing was sent).
pub(super) async fn send_to(
    context: &Context,
    delivery: &Delivery,
    todo: &[(&Named, bool)],
    members: Option<&[Uuid]>,
) -> Result<Ended, String> {
    let recipient = recipient_for(context, &delivery.event, todo).await?;
    let recipient = recipient.as_ref();
    let sending = join_all(todo.iter().map(|&(named, required)| {
        let opted_out = recipient
            .filter(|_| !required && named.recorded)
            .and_then(|r| r.preferences.opted_out(&named.name, &delivery.event));
        async move {
            match opted_out {
                Some(opt_out) => {
                    let why = format!("opted out: {opt_out}");
                    skip(context, &delivery.event, named, why, members).await
                }
                None => send_through(context, delivery, named, recipient, members).await,
            }
        }
    }))
    .await;
    let mut ended = Ended::default();
    for ((channel, _), sending) in todo.iter().zip(sending) {
        match sending {
            Sending::Took => ended.took.push(channel.name.clone()),
            Sending::Failed(why) => ended
                .failed
                .push(format!("channel {}: {why}", channel.name)),
            Sending::Later(why) => ended.later.push(format!("channel {}: {why}", channel.name)),
        }
    }
    Ok(ended)
}

/// `event`'s recipient record (its preferences, its address), read when
/// `todo` holds a channel of a channels file; none without one (the
/// notification line alone reads nothing), and none for a user without a
/// record.
async fn recipient_for(
    context: &Context,
    event: &Event,
    todo: &[(&Named, bool)],
) -> Result<Option<Recipient>, String> {
    if !todo.iter().any(|(named, _)| named.recorded) {
        return Ok(None);
    }
    recipient(context.recipients.as_ref(), &event.user_id)
        .await
        .map_err(|err| format!("cannot read the recipient's record: {err}"))
}

/// Skips `named` for `event` (the recipient opted out, or has no address
/// for it: `why`): counted, and recorded as a skipped attempt; the channel
/// is done with it. For a digest, recorded for each of its `members`.
async fn skip(
    context: &Context,
    event: &Event,
    named: &Named,
    why: String,
    members: Option<&[Uuid]>,
) -> Sending {
    debug!(event_id = %event.id, channel = %named.name, %why, "skipped");
    context.metrics.skipped(&named.name);
    let mut attempt = attempt_of(event, named, now(), Duration::ZERO);
    attempt.error = why;
    attempt.skipped = true;
    context.recorder.note(each(attempt, members)).await;
    Sending::Took
}

/// The records of `attempt`: itself, or for a digest one for each of its
/// `members`, naming the digest (the attempt's event).
fn each(attempt: DeliveryAttempt, members: Option<&[Uuid]>) -> Vec<DeliveryAttempt> {
    let attempt = attempt.bounded();
    match members {
        None => vec![attempt],
        Some(members) => members
            .iter()
            .map(|&event_id| DeliveryAttempt {
                event_id,
                digest_id: Some(attempt.event_id),
                ..attempt.clone()
            })
            .collect(),
    }
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
        digest_id: None,
    }
}

/// Sends through one channel, retrying failed attempts after the channel's
/// wait; its attempts are counted from the entry's delivery count, so
/// redeliveries do not start over. On shutdown the entry is left pending.
/// Attempts of a digest are recorded for each of its `members`.
async fn send_through(
    context: &Context,
    delivery: &Delivery,
    named: &Named,
    recipient: Option<&Recipient>,
    members: Option<&[Uuid]>,
) -> Sending {
    let event = &delivery.event;
    let name = named.name.as_str();
    let mut attempt = delivery.deliveries.max(1);
    loop {
        let (at, started) = (now(), Instant::now());
        let result = named.channel.send(event, recipient).await;
        let latency = started.elapsed();
        let record = |succeeded: bool, http_status: Option<u16>, error: String| {
            let attempt = DeliveryAttempt {
                succeeded,
                http_status,
                error,
                ..attempt_of(event, named, at, latency)
            };
            each(attempt, members)
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
            return skip(context, event, named, failure.error, members).await;
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

/// Attempts to record, and who waits for them being written.
type Record = (
    Vec<DeliveryAttempt>,
    Option<oneshot::Sender<herald::Result<()>>>,
);

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
                let (attempts, waiting): (Vec<Vec<_>>, Vec<_>) = batch.into_iter().unzip();
                let attempts: Vec<DeliveryAttempt> = attempts.into_iter().flatten().collect();
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

    /// Records `attempts`, and answers once they are written.
    async fn record(&self, attempts: Vec<DeliveryAttempt>) -> herald::Result<()> {
        let (reply, written) = oneshot::channel();
        let gone = || herald::Error::Unavailable("the delivery log writer stopped".into());
        self.queue
            .send((attempts, Some(reply)))
            .await
            .map_err(|_| gone())?;
        written.await.map_err(|_| gone())?
    }

    /// Records `attempts` without waiting for the write.
    async fn note(&self, attempts: Vec<DeliveryAttempt>) {
        let _ = self.queue.send((attempts, None)).await;
    }
}
