//! Settling delivered events: marking them PROCESSED in batches (one
//! BatchUpdateStatus call each, repeated while the logger or its storage
//! is unavailable, the entries kept meanwhile) and acknowledging the
//! entries whose change succeeded with one XACK.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use herald::{EventStatus, cursor::PartitionEntry, domain::StatusChange};
use herald_client::Error as ClientError;
use herald_runtime::process::Backoff;
use tonic::Code;
use tracing::warn;

use super::{Context, Delivered, Outcome, apply, turns::wake};

/// Marks a batch of delivered events PROCESSED with one call, then
/// acknowledges the entries whose change succeeded with one XACK.
pub(super) async fn settle_batch(context: Arc<Context>, batch: Vec<Delivered>) {
    let changes: Vec<_> = batch
        .iter()
        .map(|(d, _, _)| {
            StatusChange::new(d.event.id, EventStatus::Processed).in_trace(d.event.traceparent)
        })
        .collect();
    let entries: Vec<PartitionEntry> = batch.iter().map(|(d, _, _)| d.entry_id).collect();
    let outcomes: Vec<Outcome> = match settle_call(&context, &changes, &entries).await {
        Ok(results) => results
            .into_iter()
            .map(|r| r.map_or_else(settle_error, |_| Outcome::Ack))
            .collect(),
        Err(err) => {
            let reason = format!("BatchUpdateStatus failed: {err}");
            batch
                .iter()
                .map(|_| Outcome::Retry(reason.clone()))
                .collect()
        }
    };
    let mut acks = Vec::with_capacity(batch.len());
    let mut received = Vec::with_capacity(batch.len());
    for ((delivery, at, _), outcome) in batch.iter().zip(outcomes) {
        match outcome {
            Outcome::Ack => {
                acks.push(delivery.entry_id);
                received.push(*at);
            }
            other => apply(&context, delivery, other).await,
        }
    }
    for (delivery, _, _) in &batch {
        wake(&context, &delivery.event.user_id);
    }
    match context.consumer.ack(&acks).await {
        Ok(()) => received
            .into_iter()
            .for_each(|at| context.metrics.processed(at)),
        // The entries stay pending and are reclaimed later: at least once.
        Err(err) => warn!(error = %err, entries = acks.len(), "cannot acknowledge entries"),
    }
}

/// The BatchUpdateStatus call of a settle, its changes repeated while the
/// logger (or the storage of their partition) is unavailable, until they
/// are answered or the worker stops: the changes are idempotent, and the
/// events settle within about a second of the storage's return instead of
/// waiting to be reclaimed. Meanwhile the queue `entries` of the events
/// (in the order of `changes`) are touched every third of the claim idle
/// time, so no processor takes them back and delivers the events again
/// while their settle is pending (their notifications went out).
pub(super) async fn settle_call(
    context: &Context,
    changes: &[StatusChange],
    entries: &[PartitionEntry],
) -> Result<Vec<Result<(), ClientError>>, ClientError> {
    let mut results: Vec<Option<Result<(), ClientError>>> = changes.iter().map(|_| None).collect();
    let mut todo: Vec<usize> = (0..changes.len()).collect();
    let mut backoff = Backoff::up_to(Duration::from_secs(1));
    let touch_every = context.config.claim_idle / 3;
    let mut touched = Instant::now();
    loop {
        let batch: Vec<StatusChange> = todo.iter().map(|&i| changes[i]).collect();
        let why = match context.client.batch_update_status_outcomes(&batch).await {
            Ok(outcomes) => {
                let mut again = Vec::new();
                let mut why = None;
                for (&i, outcome) in todo.iter().zip(outcomes) {
                    if let Err(err) = &outcome
                        && retry_settle(err.code())
                    {
                        again.push(i);
                        why = Some(err.to_string());
                    }
                    results[i] = Some(outcome);
                }
                todo = again;
                match why {
                    None => break,
                    Some(why) => why,
                }
            }
            Err(err) if retry_settle(err.code()) && !context.shutdown.is_cancelled() => {
                err.to_string()
            }
            Err(err) => return Err(err),
        };
        if context.shutdown.is_cancelled() {
            break;
        }
        warn!(error = %why, retry_in = ?backoff.next_wait(), events = todo.len(), "cannot settle; retrying");
        let pending: Vec<PartitionEntry> = todo
            .iter()
            .filter_map(|&i| entries.get(i).copied())
            .collect();
        if !pending.is_empty() && touched.elapsed() >= touch_every {
            if let Err(err) = context.consumer.touch(&pending).await {
                warn!(error = %err, entries = pending.len(), "cannot keep entries whose settle is pending; another processor may deliver them again");
            }
            touched = Instant::now();
        }
        if !backoff.sleep(&context.shutdown).await {
            break;
        }
    }
    let unanswered = || {
        Err(ClientError::from(tonic::Status::unavailable(
            "the worker is stopping",
        )))
    };
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(unanswered))
        .collect())
}

/// Whether a settle that failed with `code` is tried again: the logger or
/// its storage is unavailable, or did not answer in time (the change is
/// idempotent, and the notification went out).
fn retry_settle(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded)
}

/// What a status-change error means for the entry.
pub(super) fn settle_error(err: ClientError) -> Outcome {
    match err.code() {
        // The event moved on without us (e.g. already PROCESSED): nothing left to do.
        Code::FailedPrecondition => Outcome::Ack,
        Code::NotFound => Outcome::DeadLetter("event not found".into()),
        _ => Outcome::Retry(format!("status change failed: {err}")),
    }
}
