//! Positions in partitioned logs: [`EntryId`], one stream entry of one
//! partition, and [`Cursor`], a position in every partition at once (the
//! notification log, the dead letters).
//!
//! A cursor is opaque to clients and versioned: `2:{P}:{base}:{entries}`,
//! where `base` is the newest entry's milliseconds and `entries` lists, per
//! partition, `{base - ms}.{seq}` (`{base - ms}` alone when `seq` is 0, empty
//! before the first entry). `start` is before every entry of any deployment.
//! Cursors of one deployment compare partition by partition: one is at or
//! past another when it is in every partition.

use std::{cmp::Ordering, fmt, str::FromStr};

use crate::{
    error::{Error, Result, quote},
    partition::{Partition, Partitions},
};

/// A stream entry id `{ms}-{seq}` within one partition; ids order as the
/// stream does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct EntryId {
    /// Milliseconds part (0 on the memory backend).
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EntryId {
    /// The position before every entry.
    pub const START: EntryId = EntryId { ms: 0, seq: 0 };

    /// The position just before this one.
    pub fn predecessor(self) -> EntryId {
        match self {
            EntryId { ms, seq: 0 } => EntryId {
                ms: ms.saturating_sub(1),
                seq: if ms == 0 { 0 } else { u64::MAX },
            },
            EntryId { ms, seq } => EntryId { ms, seq: seq - 1 },
        }
    }
}

impl FromStr for EntryId {
    type Err = Error;

    /// Parses `{ms}-{seq}`; anything else is INVALID_ARGUMENT on `entry_id`.
    fn from_str(text: &str) -> Result<Self> {
        text.split_once('-')
            .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)))
            .map(|(ms, seq)| EntryId { ms, seq })
            .ok_or_else(|| {
                Error::invalid(
                    "entry_id",
                    format!("is not a stream entry id: {}", quote(text)),
                )
            })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// An entry of one partition's stream: where a queue entry or dead letter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionEntry {
    /// The partition whose stream holds the entry.
    pub partition: Partition,
    /// The entry's id in that stream.
    pub id: EntryId,
}

impl fmt::Display for PartitionEntry {
    /// `{partition}-{ms}-{seq}`, for example `3-1732581234567-0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.partition.index(), self.id)
    }
}

impl PartitionEntry {
    /// Parses what [`PartitionEntry`]'s `Display` wrote, for a deployment of
    /// `partitions`; errors name `field`.
    pub fn parse(text: &str, partitions: Partitions, field: &str) -> Result<Self> {
        let bad = || Error::invalid(field, format!("is not an entry id: {}", quote(text)));
        let (partition, id) = text.split_once('-').ok_or_else(bad)?;
        let partition = partition
            .parse::<usize>()
            .ok()
            .and_then(|n| partitions.get(n))
            .ok_or_else(bad)?;
        let id = id.parse().map_err(|_| bad())?;
        Ok(Self { partition, id })
    }
}

/// Where a reader is in every partition's log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// One position per partition, by partition number; a missing one is
    /// [`EntryId::START`].
    positions: Vec<EntryId>,
}

/// The version tag of today's cursors.
const VERSION: &str = "2";

impl Cursor {
    /// Before every entry of every partition.
    pub fn start(partitions: Partitions) -> Self {
        Self {
            positions: vec![EntryId::START; partitions.count()],
        }
    }

    /// The position in `partition`.
    pub fn get(&self, partition: Partition) -> EntryId {
        self.positions
            .get(partition.index())
            .copied()
            .unwrap_or_default()
    }

    /// The position in partition number `i`, made (at the start) if the
    /// cursor has none there yet.
    fn position_mut(&mut self, i: usize) -> &mut EntryId {
        if self.positions.len() <= i {
            self.positions.resize(i + 1, EntryId::START);
        }
        &mut self.positions[i]
    }

    /// Moves the position in `partition` to `id` if that is further on.
    pub fn advance(&mut self, partition: Partition, id: EntryId) {
        let at = self.position_mut(partition.index());
        *at = (*at).max(id);
    }

    /// Sets the position in `partition`, forward or back.
    pub fn set(&mut self, partition: Partition, id: EntryId) {
        *self.position_mut(partition.index()) = id;
    }

    /// Moves to the further position of the two, partition by partition.
    pub fn join(&mut self, other: &Cursor) {
        for (i, id) in other.positions.iter().enumerate() {
            let at = self.position_mut(i);
            *at = (*at).max(*id);
        }
    }

    /// Whether this cursor is at or past `id` in `partition`.
    pub fn has(&self, partition: Partition, id: EntryId) -> bool {
        self.get(partition) >= id
    }

    /// Whether the cursor is before every entry.
    pub fn is_start(&self) -> bool {
        self.positions.iter().all(|id| *id == EntryId::START)
    }

    /// Checks that the cursor belongs to a deployment of `partitions` (or is
    /// `start`); the error names `field`.
    pub fn check(&self, partitions: Partitions, field: &str) -> Result<()> {
        if self.positions.is_empty() || self.positions.len() == partitions.count() {
            Ok(())
        } else {
            Err(Error::invalid(
                field,
                format!(
                    "is a cursor of {} partitions; this deployment has {}",
                    self.positions.len(),
                    partitions.count()
                ),
            ))
        }
    }
}

impl PartialOrd for Cursor {
    /// Partition by partition: `a <= b` when `b` is at or past `a` in every
    /// partition; cursors ahead in different partitions do not compare.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let n = self.positions.len().max(other.positions.len());
        let mut order = Ordering::Equal;
        for i in 0..n {
            let a = self.positions.get(i).copied().unwrap_or_default();
            let b = other.positions.get(i).copied().unwrap_or_default();
            match (order, a.cmp(&b)) {
                (_, Ordering::Equal) => {}
                (Ordering::Equal, o) => order = o,
                (o, p) if o != p => return None,
                _ => {}
            }
        }
        Some(order)
    }
}

/// The text of the cursor before every entry, whatever the partitions.
const START: &str = "start";

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.positions.is_empty() {
            return f.write_str(START);
        }
        let base = self.positions.iter().map(|id| id.ms).max().unwrap_or(0);
        write!(f, "{VERSION}:{}:{base}:", self.positions.len())?;
        for (i, id) in self.positions.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match *id {
                EntryId::START => {}
                EntryId { ms, seq: 0 } => write!(f, "{}", base - ms)?,
                EntryId { ms, seq } => write!(f, "{}.{seq}", base - ms)?,
            }
        }
        Ok(())
    }
}

impl FromStr for Cursor {
    type Err = Error;

    /// Parses what `Display` wrote; anything else is INVALID_ARGUMENT on
    /// `cursor`.
    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(
                "cursor",
                format!("is not a cursor of this server ({why}): {}", quote(text)),
            )
        };
        if text == START {
            return Ok(Self::default());
        }
        let mut parts = text.splitn(4, ':');
        let (Some(version), Some(count), Some(base), Some(entries)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("malformed"));
        };
        if version != VERSION {
            return Err(bad("an unknown version"));
        }
        let count: u16 = count.parse().map_err(|_| bad("malformed"))?;
        let count = Partitions::new(count).map_err(|_| bad("bad partition count"))?;
        let base: u64 = base.parse().map_err(|_| bad("malformed"))?;
        let mut positions = Vec::with_capacity(count.count());
        for entry in entries.split(',') {
            // Never hold more than the count it claims, however long the text.
            if positions.len() == count.count() {
                return Err(bad("wrong number of partitions"));
            }
            if entry.is_empty() {
                positions.push(EntryId::START);
                continue;
            }
            let (delta, seq) = entry.split_once('.').unwrap_or((entry, "0"));
            let delta: u64 = delta.parse().map_err(|_| bad("malformed"))?;
            positions.push(EntryId {
                ms: base.checked_sub(delta).ok_or_else(|| bad("malformed"))?,
                seq: seq.parse().map_err(|_| bad("malformed"))?,
            });
        }
        if positions.len() != count.count() {
            return Err(bad("wrong number of partitions"));
        }
        Ok(Self { positions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partitions(n: u16) -> Partitions {
        Partitions::new(n).expect("partitions")
    }

    #[test]
    fn entry_ids_parse_print_and_order_like_the_stream() {
        let a: EntryId = "1700000000000-0".parse().expect("id");
        let b: EntryId = "1700000000000-1".parse().expect("id");
        let c: EntryId = "1700000000001-0".parse().expect("id");
        assert!(a < b && b < c && EntryId::START < a);
        assert_eq!(
            c.predecessor(),
            EntryId {
                ms: 1700000000000,
                seq: u64::MAX
            }
        );
        assert_eq!(b.predecessor(), a);
        for bad in ["", "12", "a-b", "1-", "-1"] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cursors_round_trip_and_stay_short() {
        let p = partitions(4);
        let mut cursor = Cursor::start(p);
        assert_eq!(cursor.to_string().parse::<Cursor>().expect("start"), cursor);
        cursor.advance(
            p.get(0).expect("0"),
            EntryId {
                ms: 1_732_581_234_567,
                seq: 0,
            },
        );
        cursor.advance(
            p.get(2).expect("2"),
            EntryId {
                ms: 1_732_581_234_500,
                seq: 3,
            },
        );
        let text = cursor.to_string();
        assert_eq!(text, "2:4:1732581234567:0,,67.3,");
        assert_eq!(text.parse::<Cursor>().expect("parse"), cursor);
        // Memory-backend ids have no milliseconds.
        let mut memory = Cursor::start(p);
        memory.advance(p.get(3).expect("3"), EntryId { ms: 0, seq: 12 });
        assert_eq!(memory.to_string().parse::<Cursor>().expect("parse"), memory);
        // `start` is before everything, in a deployment of any size.
        let start: Cursor = "start".parse().expect("start");
        assert!(start.is_start() && start <= memory);
        assert_eq!(start.to_string(), "start");
        assert!(start.check(p, "after_cursor").is_ok());
    }

    #[test]
    fn cursors_compare_partition_by_partition() {
        let p = partitions(2);
        let (p0, p1) = (p.get(0).expect("0"), p.get(1).expect("1"));
        let start = Cursor::start(p);
        let mut a = start.clone();
        a.advance(p0, EntryId { ms: 5, seq: 0 });
        let mut b = start.clone();
        b.advance(p1, EntryId { ms: 3, seq: 0 });
        assert!(start < a && start < b);
        assert_eq!(a.partial_cmp(&b), None);
        let mut both = a.clone();
        both.join(&b);
        assert!(a < both && b < both);
        assert!(
            both.has(p0, EntryId { ms: 5, seq: 0 }) && !both.has(p1, EntryId { ms: 4, seq: 0 })
        );
    }

    #[test]
    fn foreign_and_broken_cursors_are_refused_naming_the_field() {
        for bad in [
            "",
            "1700000000000-0",
            "2:2:5:1",
            "2:2:5:9,",
            "3:1:0:",
            "2:0:0:",
            "2:2:x:,",
        ] {
            let err = bad.parse::<Cursor>().expect_err(bad);
            assert!(err.to_string().contains("cursor"), "{bad:?}: {err}");
        }
        // A long run of entries is refused at the count it claims.
        let long = format!("2:2:0:{}", ",".repeat(100_000));
        assert!(long.parse::<Cursor>().is_err());
        let four = Cursor::start(partitions(4));
        let err = four.check(partitions(16), "after_cursor").expect_err("16");
        assert!(err.to_string().contains("4 partitions"), "{err}");
    }

    #[test]
    fn partition_entries_name_their_partition() {
        let p = partitions(8);
        let entry = PartitionEntry::parse("3-1700-2", p, "dead_letter_id").expect("parse");
        assert_eq!(entry.partition.index(), 3);
        assert_eq!(entry.to_string(), "3-1700-2");
        for bad in ["8-1-0", "x-1-0", "3-1", "3"] {
            assert!(
                PartitionEntry::parse(bad, p, "dead_letter_id").is_err(),
                "{bad:?}"
            );
        }
    }
}
