//! Retention: old settled events removed a slice at a time
//! ([`crate::EventStore::remove_older_than`] does one slice atomically),
//! and [`sweep`], which runs every slice up to a cutoff.

use std::time::SystemTime;

use herald::{domain::EventStatus, error::Result, partition::Partition};

use crate::EventStore;

/// One slice of retention: up to `max` of one partition's events in one
/// settled status that occurred before `cutoff`, oldest first, after the
/// `skip` oldest (kept by an earlier slice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionSlice {
    /// The partition whose events it looks at.
    pub partition: Partition,
    /// The status whose events it looks at.
    pub status: EventStatus,
    /// Events that occurred and were created before this go.
    pub cutoff: SystemTime,
    /// How many of the oldest candidates it passes over.
    pub skip: usize,
    /// The most candidates it looks at.
    pub max: usize,
}

/// What one slice of retention did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Events removed.
    pub removed: u64,
    /// Events looked at and kept (PENDING, or created after the cutoff): the
    /// next slice skips them.
    pub kept: u64,
    /// Events looked at; fewer than asked for means the slice reached the cutoff.
    pub scanned: u64,
}

/// All of retention up to `cutoff`: every partition's settled events,
/// slice after slice of at most `slice`, letting other work run in between.
/// Returns how many events went and how many were kept (created after
/// `cutoff`).
pub async fn sweep(store: &dyn EventStore, cutoff: SystemTime, slice: usize) -> Result<(u64, u64)> {
    let slice = slice.max(1);
    let settled = [
        EventStatus::Processed,
        EventStatus::Opened,
        EventStatus::Failed,
        EventStatus::Cancelled,
    ];
    let (mut removed, mut kept) = (0, 0);
    for partition in store.partitions().all() {
        for status in settled {
            // Kept events stay where they are, oldest first: the next
            // slice skips them.
            let mut skip = 0;
            loop {
                let done = store
                    .remove_older_than(RetentionSlice {
                        partition,
                        status,
                        cutoff,
                        skip,
                        max: slice,
                    })
                    .await?;
                removed += done.removed;
                skip += done.kept as usize;
                if (done.scanned as usize) < slice {
                    break;
                }
                tokio::task::yield_now().await;
            }
            kept += skip as u64;
        }
    }
    Ok((removed, kept))
}
