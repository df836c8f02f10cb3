//! Ordered delivery: an event an ordered route matches waits for its turn
//! (no earlier event of its user PENDING), as the worker's module docs
//! tell; here the wait itself, the list of this worker's waiting events by
//! user and what wakes them, and recording that the deployment uses
//! ordering.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use herald_storage::Delivery;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tracing::{debug, warn};
use uuid::Uuid;

use super::{Context, MAX_TURN_POLL};

/// Records that the deployment uses ordering, once, if the routes of this
/// worker have an ordered one (at start, and after a reload added one).
pub(super) async fn use_ordering(context: &Context) {
    use std::sync::atomic::Ordering;
    if context.ordering.load(Ordering::Relaxed) || !context.channels.current().has_ordered() {
        return;
    }
    match context.store.use_ordering().await {
        Ok(()) => context.ordering.store(true, Ordering::Relaxed),
        Err(err) => warn!(error = %err, "cannot record that this deployment uses ordered routes"),
    }
}

/// Wakes the earliest of `user`'s events waiting here, if any: its turn
/// may have come.
pub(super) fn wake(context: &Context, user: &str) {
    let waiting = context.waiting.lock().expect("waiting lock");
    if let Some((_, woken)) = waiting.get(user).and_then(|w| w.first_key_value()) {
        woken.notify_one();
    }
}

/// This worker's waiting event `id` of `user`, listed while it waits.
struct Waiting<'a> {
    context: &'a Context,
    user: &'a str,
    id: Uuid,
    /// What wakes it.
    woken: Arc<Notify>,
}

impl<'a> Waiting<'a> {
    fn new(context: &'a Context, user: &'a str, id: Uuid) -> Self {
        let woken = Arc::new(Notify::new());
        let mut waiting = context.waiting.lock().expect("waiting lock");
        waiting
            .entry(user.to_owned())
            .or_default()
            .insert(id, woken.clone());
        Self {
            context,
            user,
            id,
            woken,
        }
    }

    /// Whether it is the earliest of its user's waiting events here.
    fn earliest(&self) -> bool {
        let waiting = self.context.waiting.lock().expect("waiting lock");
        waiting
            .get(self.user)
            .and_then(|w| w.first_key_value())
            .is_none_or(|(first, _)| *first == self.id)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = self.context.waiting.lock().expect("waiting lock");
        if let Some(ids) = waiting.get_mut(self.user) {
            ids.remove(&self.id);
            if ids.is_empty() {
                waiting.remove(self.user);
            }
        }
        drop(waiting);
        // The next of the user's waiting events reads storage now.
        wake(self.context, self.user);
    }
}

/// For an event an ordered route matches: waits until no earlier event of
/// its user is PENDING (see the module docs), giving `permit` back
/// meanwhile; returns a place in flight, or `None` if the worker stops
/// first.
pub(super) async fn wait_turn(
    context: &Context,
    delivery: &Delivery,
    permit: OwnedSemaphorePermit,
) -> Option<OwnedSemaphorePermit> {
    let event = &delivery.event;
    if !context.channels.current().ordered(event) {
        return Some(permit);
    }
    use_ordering(context).await;
    let mut permit = Some(permit);
    let mut pause = Duration::from_millis(5);
    let mut touched = Instant::now();
    let mut counted = false;
    let waiting = Waiting::new(context, &event.user_id, event.id);
    loop {
        let woken = waiting.woken.notified();
        // An earlier waiting event of the user here goes first: only the
        // earliest reads storage (and polls it, for events other workers
        // settle); the others sleep until the one before them leaves.
        let earliest = waiting.earliest();
        if earliest {
            match context.store.first_queued(&event.user_id).await {
                // The first (or no longer queued: settled meanwhile).
                Ok(first) if first.is_none_or(|first| first >= event.id) => break,
                Ok(_) => {}
                Err(err) => {
                    debug!(event_id = %event.id, error = %err, "cannot read whose turn it is");
                }
            }
        }
        if !counted {
            context.metrics.ordered_wait();
            counted = true;
        }
        permit = None;
        if touched.elapsed() >= context.config.claim_idle / 3 {
            if let Err(err) = context.consumer.touch(&[delivery.entry_id]).await {
                warn!(event_id = %event.id, error = %err, "cannot keep a waiting entry");
            }
            touched = Instant::now();
        }
        let nap = if earliest {
            pause
        } else {
            (context.config.claim_idle / 3).saturating_sub(touched.elapsed())
        };
        tokio::select! {
            () = tokio::time::sleep(nap) => {
                if earliest {
                    pause = (pause * 2).min(MAX_TURN_POLL);
                }
            }
            () = woken => {}
            () = context.shutdown.cancelled() => return None,
        }
    }
    drop(waiting);
    match permit {
        Some(permit) => Some(permit),
        None => tokio::select! {
            permit = context.permits.clone().acquire_owned() => permit.ok(),
            () = context.shutdown.cancelled() => None,
        },
    }
}
