//! The layout upgrade (`herald-logger --upgrade-storage`): layout 4's
//! indexes of the bucketed statuses, one sorted set each, moved into the
//! buckets of layout 5, a slice at a time.

use ::redis::AsyncCommands;

use super::{LAYOUT, RedisBackend, keys, other_partitions, redis_error};
use herald::{
    domain::EventStatus,
    error::{Error, Result},
};

/// The layout before, which [`RedisBackend::upgrade_layout`] upgrades: the
/// same but for the indexes of the bucketed statuses, one sorted set each,
/// and no counts.
pub(super) const PREVIOUS_LAYOUT: &str = "4";
/// How many index entries one slice of the upgrade moves.
const UPGRADE_SLICE: usize = 1000;

impl RedisBackend {
    /// [`crate::EventStore::upgrade`]: from [`PREVIOUS_LAYOUT`], moves
    /// each partition's indexes of the bucketed statuses into buckets, a
    /// slice at a time (each slice one script: an interrupted upgrade
    /// resumes where it stopped), then records [`LAYOUT`].
    pub(super) async fn upgrade_layout(&self) -> Result<Option<crate::Upgraded>> {
        let meta = self.keys.meta();
        let mut conn = self.conn.clone();
        let (layout, partitions): (Option<String>, Option<String>) = ::redis::pipe()
            .hget(&meta, "layout")
            .hget(&meta, "partitions")
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        match layout.as_deref() {
            None | Some(LAYOUT) => return Ok(None),
            Some(PREVIOUS_LAYOUT) => {}
            Some(other) => {
                return Err(Error::Misconfigured(format!(
                    "Redis key {meta} records layout {other}; this version upgrades layout \
                     {PREVIOUS_LAYOUT} only"
                )));
            }
        }
        let count = self.partitions.count().to_string();
        if partitions.as_deref() != Some(count.as_str()) {
            return Err(other_partitions(&meta, partitions, &count));
        }
        let mut entries = 0;
        for p in self.partitions.all() {
            for status in EventStatus::ALL.into_iter().filter(|s| keys::bucketed(*s)) {
                loop {
                    let moved: u64 = self
                        .upgrade_status_index
                        .key(self.keys.status(p, status))
                        .key(self.keys.counts(p))
                        .arg(status.as_str())
                        .arg(UPGRADE_SLICE)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(redis_error)?;
                    entries += moved;
                    if moved == 0 {
                        break;
                    }
                }
            }
        }
        let () = conn
            .hset(&meta, "layout", LAYOUT)
            .await
            .map_err(redis_error)?;
        Ok(Some(crate::Upgraded {
            from: PREVIOUS_LAYOUT.to_owned(),
            to: LAYOUT.to_owned(),
            entries,
        }))
    }
}
