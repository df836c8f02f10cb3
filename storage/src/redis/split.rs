//! Batches split by partition: each partition's part is one atomic write of
//! its own, all run at once, and every item gets its own outcome back in its
//! place.

use std::future::Future;

use futures_util::future::join_all;

use super::RedisBackend;
use herald::{
    domain::{Event, StatusChange},
    error::{Error, Result},
    partition::{Partition, Partitions},
};

impl RedisBackend {
    /// Runs `apply` once per partition on that partition's changes, all at
    /// once, and puts the outcomes back in the changes' order. An id that
    /// names no partition of this deployment is no event of it.
    pub(super) async fn by_partition_of_id<F, Fut>(
        &self,
        changes: &[StatusChange],
        apply: F,
    ) -> Result<Vec<Result<Event>>>
    where
        F: Fn(Partition, Vec<StatusChange>) -> Fut,
        Fut: Future<Output = Result<Vec<Result<Event>>>>,
    {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        self.checked().await?;
        let unknown = changes.iter().map(|c| {
            self.partitions
                .of_id(c.id)
                .is_none()
                .then_some(Err(Error::NotFound(c.id)))
        });
        let known = changes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, self.partitions.of_id(c.id)?, *c)));
        let groups = by_partition(self.partitions, known);
        Ok(per_partition(unknown.collect(), groups, apply).await)
    }
}

/// Splits `items` (each with its place and partition) by partition: per
/// partition, its items and their places.
pub(super) fn by_partition<T>(
    partitions: Partitions,
    items: impl IntoIterator<Item = (usize, Partition, T)>,
) -> Vec<(Partition, Vec<usize>, Vec<T>)> {
    let mut groups: Vec<(Partition, Vec<usize>, Vec<T>)> = Vec::new();
    let mut slot = vec![usize::MAX; partitions.count()];
    for (place, p, item) in items {
        if slot[p.index()] == usize::MAX {
            slot[p.index()] = groups.len();
            groups.push((p, Vec::new(), Vec::new()));
        }
        let group = &mut groups[slot[p.index()]];
        group.1.push(place);
        group.2.push(item);
    }
    groups
}

/// Runs `apply` on every partition's group of items at once and puts each
/// outcome in its item's place in `out` (which may hold some outcomes
/// already). Each partition's write is atomic and stands on its own: a group
/// whose call failed gives each of its items that error, and the others
/// keep theirs, so no caller is told of a failure its write did not have.
pub(super) async fn per_partition<T, F, Fut>(
    out: Vec<Option<Result<Event>>>,
    groups: Vec<(Partition, Vec<usize>, Vec<T>)>,
    apply: F,
) -> Vec<Result<Event>>
where
    F: Fn(Partition, Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<Result<Event>>>>,
{
    gather(out, run_groups(groups, apply).await)
}

/// One atomic write's items (their places) and its outcome.
pub(super) type Written = (Vec<usize>, Result<Vec<Result<Event>>>);

/// Runs `apply` on every partition's group of items at once: each group's
/// places with its write's outcome.
pub(super) async fn run_groups<T, F, Fut>(
    groups: Vec<(Partition, Vec<usize>, Vec<T>)>,
    apply: F,
) -> Vec<Written>
where
    F: Fn(Partition, Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<Result<Event>>>>,
{
    join_all(groups.into_iter().map(|(p, places, items)| {
        let run = apply(p, items);
        async move { (places, run.await) }
    }))
    .await
}

/// Puts every write's outcome in its items' places of `out` (see [`put`]);
/// a place no write answered is our own bug.
pub(super) fn gather(
    mut out: Vec<Option<Result<Event>>>,
    written: impl IntoIterator<Item = Written>,
) -> Vec<Result<Event>> {
    for (places, outcome) in written {
        put(&mut out, places, outcome);
    }
    out.into_iter()
        .map(|o| {
            o.unwrap_or_else(|| Err(Error::Internal("a partition answered too little".into())))
        })
        .collect()
}

/// Puts the outcome of one atomic write in its items' `places` of `out`:
/// each item's own result, or, when the write failed, its error for every
/// item.
fn put(out: &mut [Option<Result<Event>>], places: Vec<usize>, outcome: Result<Vec<Result<Event>>>) {
    match outcome {
        Ok(results) => {
            for (place, result) in places.into_iter().zip(results) {
                out[place] = Some(result);
            }
        }
        Err(err) => {
            for place in places {
                out[place] = Some(Err(err.clone()));
            }
        }
    }
}
