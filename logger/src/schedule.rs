//! The scheduler: every logger moves the due SCHEDULED events of each
//! partition to the work queue, a few times a second. On Redis, the one that
//! holds a partition's lease moves its events (the others leave that
//! partition alone until the lease would have lapsed), and each move is a
//! status change from SCHEDULED in one atomic script, so no event moves
//! twice, and none is both cancelled and queued, whoever runs it.
//!
//! A backlog (a logger stopped for an hour) goes out earliest due first, at
//! most [`BATCH`] events per partition per tick, so the queue keeps taking
//! new events in between.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use herald::partition::Partition;
use herald_storage::EventStore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::EventMetrics;

/// How often each partition's schedule is looked at: due events are
/// queued within this (plus the write) of their time.
pub const TICK: Duration = Duration::from_millis(200);
/// How long a partition's lease lasts; its holder renews it every tick.
pub const LEASE: Duration = Duration::from_secs(2);
/// Most events one partition moves in one tick.
pub const BATCH: usize = 500;

/// Moves due events until `shutdown`; `owner` names this logger in the
/// leases (unique per process).
pub async fn run(
    store: Arc<dyn EventStore>,
    metrics: EventMetrics,
    owner: String,
    shutdown: CancellationToken,
) {
    let partitions: Vec<Partition> = store.partitions().all().collect();
    // Partitions another logger holds, left alone until their lease lapses.
    let mut elsewhere: Vec<Option<Instant>> = vec![None; partitions.len()];
    let mut failing = false;
    loop {
        for (p, skip) in partitions.iter().zip(elsewhere.iter_mut()) {
            if skip.is_some_and(|until| Instant::now() < until) {
                continue;
            }
            *skip = None;
            let now = SystemTime::now();
            match store.release_due(*p, now, BATCH, &owner, LEASE).await {
                Ok(None) => *skip = Some(Instant::now() + LEASE / 2),
                Ok(Some(moved)) => {
                    failing = false;
                    for released in &moved {
                        let late = now.duration_since(released.due).unwrap_or_default();
                        metrics.scheduled_released(late);
                    }
                    if !moved.is_empty() {
                        debug!(partition = %p, events = moved.len(), "queued due events");
                    }
                }
                Err(err) => {
                    // Once per outage, not once per partition and tick.
                    if !failing {
                        warn!(error = %err, "cannot queue due events; retrying");
                    }
                    failing = true;
                    break;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
