//! Dead letters: queue entries given up after too many failed deliveries,
//! kept for an operator to read, redrive or let retention trim. One trait,
//! [`DeadLetters`], holds every operation on them, from giving an entry up
//! to redriving it; [`redrive_oldest`] redrives a page of the oldest.

use std::{collections::HashSet, time::SystemTime};

use async_trait::async_trait;
use herald::{
    cursor::{Cursor, PartitionEntry},
    domain::{Event, EventStatus, StatusChange},
    error::Result,
    trace::TraceParent,
};

use crate::{Delivery, Partitioned};

/// A queue entry given up after too many failed deliveries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Where it is among the dead letters: its partition and entry id.
    pub id: PartitionEntry,
    /// The entry as it was last delivered.
    pub delivery: Delivery,
    /// Why it was given up.
    pub reason: String,
}

/// The dead letters of a deployment.
#[async_trait]
pub trait DeadLetters: Partitioned {
    /// Gives a queue entry up: moves it to the dead letters with a reason,
    /// and acknowledges it in the consumer group, atomically.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()>;
    /// Up to `max` dead letters past `after` in every partition, oldest
    /// first (by the time they were given up).
    async fn dead_letters(&self, after: &Cursor, max: usize) -> Result<Vec<DeadLetter>>;
    /// Redrives events: each change (to PENDING) is applied on its own, as
    /// [`crate::EventStore::update_status_many`] does (FAILED events go back
    /// on the queue), and each event that is PENDING after it loses its dead
    /// letters; atomically per partition.
    async fn redrive_many(&self, changes: &[StatusChange]) -> Result<Vec<Result<Event>>>;
    /// Removes the dead letters given up before `cutoff`; returns how many.
    async fn trim_dead_letters(&self, cutoff: SystemTime) -> Result<u64>;
}

/// Redrives the events of the oldest dead letters, at most `max` of them
/// (see [`DeadLetters::redrive_many`]), in `trace`; reads only the dead
/// letters it needs. Also says whether dead letters of other events remain.
pub async fn redrive_oldest(
    dead: &dyn DeadLetters,
    trace: Option<TraceParent>,
    max: usize,
) -> Result<(Vec<Result<Event>>, bool)> {
    let page_size = max.clamp(1, 1_000);
    let (mut ids, mut seen) = (Vec::new(), HashSet::new());
    let mut cursor = Cursor::start(dead.partitions());
    let mut more = false;
    'pages: loop {
        let page = dead.dead_letters(&cursor, page_size).await?;
        for letter in &page {
            cursor.advance(letter.id.partition, letter.id.id);
            let id = letter.delivery.event.id;
            if !seen.contains(&id) {
                if ids.len() == max {
                    more = true;
                    break 'pages;
                }
                seen.insert(id);
                ids.push(id);
            }
        }
        if page.len() < page_size {
            break;
        }
    }
    let changes: Vec<StatusChange> = ids
        .into_iter()
        .map(|id| StatusChange::new(id, EventStatus::Pending).in_trace(trace))
        .collect();
    Ok((dead.redrive_many(&changes).await?, more))
}
