//! Digests: an event a digest route matches joins the open digest of its
//! user, type and route (see `herald_storage::digests`) once the channels
//! of its other routes took it, and its entry is acknowledged while the
//! event stays PENDING. A loop takes the digests that are due (their window
//! closed, or full) and sends each as one notification through its route's
//! channels: an event whose payload lists the members (`digest.events`)
//! and their count. Every attempt is recorded for every member, naming the
//! digest; once every channel took it, the members go PROCESSED together
//! (one BatchUpdateStatus call per 256) and the digest is finished. A
//! channel that fails for good makes the members FAILED; one that cannot
//! try now leaves the digest to be taken again once its lease
//! (`--claim-idle`) runs out, skipping the channels that took it; after
//! `--max-deliveries` takes it is given up (members FAILED).

use std::{sync::Arc, time::Duration};

use futures_util::future::join_all;
use herald::{
    Event, EventStatus,
    cursor::{EntryId, PartitionEntry},
    domain::{StatusChange, now, rfc3339},
    partition::new_id,
};
use herald_runtime::process::Backoff;
use herald_storage::{Delivery, Digest, Join};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::{Context, Outcome, SETTLE_BATCH, send::send_to, settle::settle_call};
use crate::channels::Named;

/// How often the due digests are looked for.
const DIGEST_POLL: Duration = Duration::from_millis(200);
/// Most digests of one partition taken at once.
const TAKE_MAX: usize = 16;
/// Most bytes of its events' payloads (as JSON) one digest carries: past
/// them, the later events are listed without their payloads (a digest of
/// 1,000 events of 32 KiB each would be a 32 MB request).
const MAX_DIGEST_PAYLOADS: usize = 1024 * 1024;

/// Puts the event of `delivery` in its digest, if a digest route matches
/// it: what to do with its entry then (acknowledge it: the digest holds the
/// event now); `None` when no digest route matches.
pub(super) async fn join(context: &Context, delivery: &Delivery) -> Option<Outcome> {
    let (digesting, key) = context.channels.current().digest(&delivery.event)?;
    let join = Join {
        event: delivery.event.id,
        new_digest: new_id(context.store.partitions().of_user(&key.user)),
        key,
        window: digesting.window,
        max_events: digesting.max_events,
        now: now(),
    };
    Some(match context.digests.join_digest(&join).await {
        Ok(digest) => {
            debug!(event_id = %delivery.event.id, %digest, "in a digest");
            Outcome::Ack
        }
        Err(herald::Error::NotFound(_)) => Outcome::DeadLetter("event not found".into()),
        Err(err) => Outcome::Retry(format!("cannot join the event's digest: {err}")),
    })
}

/// Takes and sends the due digests of every partition until `shutdown`,
/// while the channels in use have a digest route. Each digest sent takes a
/// place among the events in flight. While storage fails, the looks back
/// off (up to 5 s), with one warning each.
pub(super) async fn run(context: Arc<Context>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(DIGEST_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::up_to(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if !context.channels.current().has_digests() {
            continue;
        }
        match take_and_send(&context, &shutdown).await {
            Ok(()) => backoff.reset(),
            Err(err) => {
                warn!(error = %err, retry_in = ?backoff.next_wait(), "cannot take the due digests");
                if !backoff.sleep(&shutdown).await {
                    return;
                }
            }
        }
    }
}

/// One look at every partition: takes its due digests and sends each from
/// a task of its own. The partitions that answer are served; the error is
/// the last of those that did not.
async fn take_and_send(context: &Arc<Context>, shutdown: &CancellationToken) -> herald::Result<()> {
    let mut failed = Ok(());
    for partition in context.store.partitions().all() {
        let lease = context.config.claim_idle;
        let taken = context
            .digests
            .take_due_digests(partition, now(), TAKE_MAX, lease)
            .await;
        let digests = match taken {
            Ok(digests) => digests,
            Err(err) => {
                failed = Err(err);
                continue;
            }
        };
        for digest in digests {
            let permit = tokio::select! {
                permit = context.permits.clone().acquire_owned() => permit,
                () = shutdown.cancelled() => return Ok(()),
            };
            let Ok(permit) = permit else { return Ok(()) };
            let context = context.clone();
            tokio::spawn(async move {
                let _permit = permit;
                send_digest(&context, digest).await;
            });
        }
    }
    failed
}

/// Sends one taken digest and settles its members, or leaves it to be
/// taken again.
async fn send_digest(context: &Context, digest: Digest) {
    let id = digest.id;
    let members = match read_members(context, &digest.members).await {
        Ok(members) => members,
        Err(err) => {
            warn!(digest_id = %id, error = %err, "cannot read a digest's events; it is taken again later");
            return;
        }
    };
    if members.is_empty() {
        finish(context, id).await;
        return;
    }
    if digest.takes > context.config.max_deliveries {
        let reason = format!("taken {} times without success", digest.takes);
        settle(context, &digest, &members, EventStatus::Failed, &reason).await;
        return;
    }
    let set = context.channels.current();
    let mut todo: Vec<(&Named, bool)> = Vec::new();
    for name in &digest.key.channels {
        if digest.delivered.contains(name) {
            continue;
        }
        match set.named(name) {
            Some(named) => todo.push((named, digest.key.required)),
            None => {
                warn!(digest_id = %id, channel = %name, "the digest's channel is no longer in the channels file; not sent there")
            }
        }
    }
    let ids: Vec<Uuid> = members.iter().map(|e| e.id).collect();
    let delivery = Delivery {
        entry_id: PartitionEntry {
            partition: context.store.partitions().of_user(&digest.key.user),
            id: EntryId::START,
        },
        event: digest_event(&digest, &members),
        deliveries: digest.takes,
        delivered: digest.delivered.clone(),
    };
    let ended = match send_to(context, &delivery, &todo, Some(&ids)).await {
        Ok(ended) => ended,
        Err(why) => {
            warn!(digest_id = %id, %why, "digest not sent; it is taken again later");
            return;
        }
    };
    for channel in &ended.took {
        if let Err(err) = context.digests.digest_took(id, channel).await {
            warn!(digest_id = %id, %channel, error = %err, "cannot record that a channel took a digest; taken again, it would repeat it");
        }
    }
    if !ended.failed.is_empty() {
        let reason = ended.failed.join("; ");
        settle(context, &digest, &members, EventStatus::Failed, &reason).await;
    } else if !ended.later.is_empty() {
        let reason = ended.later.join("; ");
        warn!(digest_id = %id, %reason, "digest not sent yet; it is taken again later");
    } else {
        settle(context, &digest, &members, EventStatus::Processed, "").await;
    }
}

/// The digest's events still stored, in the order they were made (by id:
/// they are one user's, of one partition).
async fn read_members(context: &Context, ids: &[Uuid]) -> herald::Result<Vec<Event>> {
    let read = join_all(ids.iter().map(|&id| context.store.get(id))).await;
    let mut members = Vec::with_capacity(ids.len());
    for result in read {
        match result {
            Ok(event) => members.push(event),
            Err(herald::Error::NotFound(_)) => {}
            Err(err) => return Err(err),
        }
    }
    members.sort_by_key(|e| e.id);
    Ok(members)
}

/// The one notification of a digest: its id, user and type, the category
/// of its first event, a description with the count and the latest
/// event's, and a payload listing the events (`digest.events`, each with
/// its id, description, category, session, occurred_at and payload) with
/// `digest.id`, `digest.count` and `digest.opened_at`. The events'
/// payloads take at most [`MAX_DIGEST_PAYLOADS`] bytes in all: the events
/// past them are listed with a null payload, and
/// `digest.payloads_omitted` says how many.
fn digest_event(digest: &Digest, members: &[Event]) -> Event {
    let (first, last) = (&members[0], &members[members.len() - 1]);
    let (mut budget, mut omitted) = (MAX_DIGEST_PAYLOADS, 0);
    let events: Vec<serde_json::Value> = members
        .iter()
        .map(|e| {
            let size = e
                .payload
                .as_ref()
                .map_or(0, |p| serde_json::to_vec(p).map_or(usize::MAX, |b| b.len()));
            let payload = match budget.checked_sub(size) {
                Some(left) => {
                    budget = left;
                    e.payload.as_ref()
                }
                None => {
                    omitted += 1;
                    None
                }
            };
            json!({
                "event_id": e.id.to_string(),
                "description": e.description,
                "category": e.category,
                "session_id": e.session_id,
                "occurred_at": rfc3339(e.occurred_at),
                "payload": payload,
            })
        })
        .collect();
    let payload = json!({
        "digest": {
            "id": digest.id.to_string(),
            "count": members.len(),
            "opened_at": rfc3339(digest.opened_at),
            "payloads_omitted": omitted,
            "events": events,
        }
    });
    let at = now();
    Event {
        id: digest.id,
        user_id: digest.key.user.clone(),
        description: format!(
            "{} notifications, the latest: {}",
            members.len(),
            last.description
        ),
        status: EventStatus::Pending,
        created_at: at,
        updated_at: at,
        category: first.category.clone(),
        event_type: digest.key.event_type.clone(),
        session_id: String::new(),
        payload: payload.as_object().cloned(),
        occurred_at: last.occurred_at,
        request_id: String::new(),
        source: first.source.clone(),
        traceparent: None,
        deliver_at: None,
    }
}

/// Moves the digest's members to `status` (PROCESSED once sent, FAILED
/// given up, for `reason`), then finishes the digest; a change that
/// cannot be made now leaves the digest to be taken again.
async fn settle(
    context: &Context,
    digest: &Digest,
    members: &[Event],
    status: EventStatus,
    reason: &str,
) {
    let id = digest.id;
    if status == EventStatus::Failed {
        warn!(digest_id = %id, events = members.len(), %reason, "giving a digest up; its events are FAILED");
    }
    for chunk in members.chunks(SETTLE_BATCH) {
        let changes: Vec<StatusChange> = chunk
            .iter()
            .map(|e| StatusChange::new(e.id, status).in_trace(e.traceparent))
            .collect();
        let settled = match settle_call(context, &changes, &[]).await {
            // An event that moved on, or is gone, needs nothing more.
            Ok(results) => results.iter().all(|r| {
                r.as_ref().err().is_none_or(|err| {
                    matches!(err.code(), Code::FailedPrecondition | Code::NotFound)
                })
            }),
            Err(_) => false,
        };
        if !settled {
            warn!(digest_id = %id, "cannot settle a digest's events; it is taken again later");
            return;
        }
    }
    finish(context, id).await;
    if status == EventStatus::Processed {
        info!(digest_id = %id, user_id = %digest.key.user, events = members.len(), "digest sent");
        context.metrics.digest_sent(members.len());
    }
}

/// Ends digest `id` (its events are settled).
async fn finish(context: &Context, id: Uuid) {
    if let Err(err) = context.digests.finish_digest(id).await {
        warn!(digest_id = %id, error = %err, "cannot finish a digest; it is taken again later and finished then");
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use herald::{NewEvent, partition::Partitions};
    use herald_storage::DigestKey;

    use super::*;

    #[test]
    fn a_digest_of_big_payloads_stays_within_its_budget() {
        let big: serde_json::Map<String, serde_json::Value> =
            serde_json::from_value(json!({"text": "x".repeat(30 * 1024)})).expect("object");
        let members: Vec<Event> = (0..100)
            .map(|i| {
                let mut e = NewEvent::new("ann", format!("#{i}"))
                    .expect("valid")
                    .into_event(Partitions::default());
                e.payload = Some(big.clone());
                e
            })
            .collect();
        let digest = Digest {
            id: Uuid::now_v7(),
            key: DigestKey {
                user: "ann".into(),
                event_type: "comment.created".into(),
                channels: vec!["hooks".into()],
                required: false,
            },
            opened_at: SystemTime::now(),
            members: members.iter().map(|e| e.id).collect(),
            delivered: vec![],
            takes: 1,
        };
        let event = digest_event(&digest, &members);
        let payload = serde_json::Value::Object(event.payload.expect("payload"));
        let size = serde_json::to_vec(&payload).expect("json").len();
        assert!(size < MAX_DIGEST_PAYLOADS + 64 * 1024, "{size} bytes");
        let listed = payload["digest"]["events"].as_array().expect("events");
        assert_eq!(listed.len(), 100, "every event is listed");
        let kept = listed.iter().filter(|e| !e["payload"].is_null()).count();
        assert_eq!(kept, MAX_DIGEST_PAYLOADS / (30 * 1024 + 11), "{kept}");
        assert_eq!(payload["digest"]["payloads_omitted"], 100 - kept);
        assert_eq!(event.description, "100 notifications, the latest: #99");
    }
}
