//! Retention: a background task that removes events older than `--retention`
//! (with their index entries and counts), dead letters as old, and the work
//! queue's entries that every consumer group has acknowledged.
//!
//! It works in bounded slices (`--retention-slice` events per Redis script),
//! so it never holds Redis for long, and it never removes an event still
//! PENDING: unsettled work stays until it is settled, whatever its age.

use std::time::{Duration, SystemTime};

use herald_storage::Backend;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How retention runs.
#[derive(Clone, Copy, Debug)]
pub struct RetentionOptions {
    /// Events older than this go; `None` keeps them forever.
    pub max_age: Option<Duration>,
    /// Time between two sweeps.
    pub interval: Duration,
    /// Most events one slice looks at.
    pub slice: usize,
}

/// What one sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Events removed.
    pub events: u64,
    /// Dead letters removed.
    pub dead_letters: u64,
    /// Acknowledged queue entries removed.
    pub queue_entries: u64,
}

/// Sweeps every `interval` until `shutdown` is cancelled; a failed sweep is
/// logged and tried again at the next interval.
pub async fn run(backend: Backend, options: RetentionOptions, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(options.interval) => {}
            () = shutdown.cancelled() => return,
        }
        let sweep = tokio::select! {
            sweep = sweep(&backend, &options) => sweep,
            () = shutdown.cancelled() => return,
        };
        match sweep {
            Ok(swept) if swept != Swept::default() => info!(
                events = swept.events,
                dead_letters = swept.dead_letters,
                queue_entries = swept.queue_entries,
                "retention removed old data"
            ),
            Ok(_) => debug!("retention found nothing to remove"),
            Err(err) => warn!(error = %err, "retention sweep failed; trying again later"),
        }
    }
}

/// One sweep: the queue's acknowledged entries, then (with a maximum age)
/// the old events, slice by slice, and the old dead letters.
pub async fn sweep(backend: &Backend, options: &RetentionOptions) -> herald::Result<Swept> {
    let mut swept = Swept {
        queue_entries: backend.queue.trim_acknowledged().await?,
        ..Swept::default()
    };
    let Some(max_age) = options.max_age else {
        return Ok(swept);
    };
    let cutoff = SystemTime::now()
        .checked_sub(max_age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let store = backend.store.as_ref();
    swept.events = herald_storage::sweep(store, cutoff, options.slice).await?.0;
    swept.dead_letters = backend.dead_letters.trim_dead_letters(cutoff).await?;
    Ok(swept)
}
