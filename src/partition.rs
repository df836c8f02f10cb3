//! Partitions: how the keyspace is split, which partition holds an event, and
//! how an event id tells its partition.
//!
//! A deployment has P partitions (`--partitions`, 16 by default, fixed when the
//! deployment is first used). Each event belongs to the partition of its user:
//! `fnv1a64(user_id) mod P`, where `fnv1a64` is the 64-bit FNV-1a hash of the
//! user id's UTF-8 bytes (offset basis `0xcbf29ce484222325`, prime
//! `0x100000001b3`). All of one user's events, and their notifications, are in
//! one partition.
//!
//! The partition is written into the event id, a UUID v7: the 14 bits that
//! follow the variant (the low 6 bits of byte 8, then byte 9, big-endian) hold
//! it, the other 60 random bits stay random. So a status change, a lookup or a
//! redrive finds the event's partition from its id alone.

use std::fmt;

use uuid::Uuid;

use crate::error::{Error, Result};

/// Most partitions a deployment may have.
pub const MAX_PARTITIONS: u16 = 1024;
/// Partitions of a deployment unless configured otherwise.
pub const DEFAULT_PARTITIONS: u16 = 16;

/// One partition: a number below the deployment's partition count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Partition(u16);

impl Partition {
    /// The partition's number.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for Partition {
    /// `p07`: two digits at least, as in the partition's Redis hash tag.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{:02}", self.0)
    }
}

/// How many partitions a deployment has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partitions(u16);

impl Default for Partitions {
    fn default() -> Self {
        Self(DEFAULT_PARTITIONS)
    }
}

impl Partitions {
    /// `count` partitions; between 1 and [`MAX_PARTITIONS`].
    pub fn new(count: u16) -> Result<Self> {
        if (1..=MAX_PARTITIONS).contains(&count) {
            Ok(Self(count))
        } else {
            Err(Error::invalid(
                "partitions",
                format!("must be between 1 and {MAX_PARTITIONS}, got {count}"),
            ))
        }
    }

    /// The number of partitions.
    pub fn count(self) -> usize {
        usize::from(self.0)
    }

    /// Every partition, in order.
    pub fn all(self) -> impl DoubleEndedIterator<Item = Partition> + ExactSizeIterator + Clone {
        (0..self.0).map(Partition)
    }

    /// The partition of `user_id`'s events (see the module docs).
    pub fn of_user(self, user_id: &str) -> Partition {
        let hash = user_id.bytes().fold(FNV_OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
        });
        Partition((hash % u64::from(self.0)) as u16)
    }

    /// The partition an id was made in, if this deployment has it.
    pub fn of_id(self, id: Uuid) -> Option<Partition> {
        let bytes = id.as_bytes();
        let n = (u16::from(bytes[8] & 0x3f) << 8) | u16::from(bytes[9]);
        (n < self.0).then_some(Partition(n))
    }

    /// A partition by number, if this deployment has it.
    pub fn get(self, index: usize) -> Option<Partition> {
        u16::try_from(index)
            .ok()
            .filter(|n| *n < self.0)
            .map(Partition)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A fresh UUID v7 (time-ordered) that carries `partition`, greater than
/// every id this process made before for the partition: the partition's
/// bits replace two bytes of the UUID's own counter, so an id that would
/// not be greater (a carry lost with them, within one millisecond) is the
/// previous one plus one in its last six bytes. Ids of one partition, and
/// so of one user, sort in the order this process made them.
pub fn new_id(partition: Partition) -> Uuid {
    static LAST: std::sync::Mutex<Vec<u128>> = std::sync::Mutex::new(Vec::new());
    let mut bytes = *Uuid::now_v7().as_bytes();
    bytes[8] = 0x80 | ((partition.0 >> 8) as u8 & 0x3f);
    bytes[9] = partition.0 as u8;
    let mut id = u128::from_be_bytes(bytes);
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let at = usize::from(partition.0);
    if last.len() <= at {
        last.resize(at + 1, 0);
    }
    if id <= last[at] {
        id = last[at] + 1;
    }
    last[at] = id;
    Uuid::from_u128(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_a_partition_ascend_in_the_order_they_are_made() {
        let p = Partition(5);
        let ids: Vec<Uuid> = (0..100_000).map(|_| new_id(p)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(
            ids.iter()
                .all(|id| Partitions::new(16).expect("16").of_id(*id) == Some(p))
        );
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
    }

    #[test]
    fn a_users_partition_is_the_documented_hash() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (the published test vector).
        let p = Partitions::new(MAX_PARTITIONS).expect("max");
        assert_eq!(
            p.of_user("a").index() as u64,
            0xaf63_dc4c_8601_ec8c % u64::from(MAX_PARTITIONS)
        );
        // The empty string hashes to the offset basis.
        assert_eq!(p.of_user("").index() as u64, FNV_OFFSET % 1024);
        assert_eq!(
            Partitions::new(1).expect("1").of_user("anyone"),
            Partition(0)
        );
    }

    #[test]
    fn users_spread_over_partitions() {
        let p = Partitions::default();
        let mut seen = [0u32; 16];
        for i in 0..1600 {
            seen[p.of_user(&format!("user-{i}")).index()] += 1;
        }
        assert!(seen.iter().all(|n| (50..=150).contains(n)), "{seen:?}");
    }

    #[test]
    fn an_id_carries_its_partition_and_stays_a_v7_uuid() {
        let p = Partitions::new(MAX_PARTITIONS).expect("max");
        for n in [0, 1, 7, 255, 256, MAX_PARTITIONS - 1] {
            let id = new_id(Partition(n));
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(p.of_id(id), Some(Partition(n)));
        }
        // An id from a partition this deployment lacks is told.
        let small = Partitions::new(4).expect("4");
        assert_eq!(small.of_id(new_id(Partition(9))), None);
    }

    #[test]
    fn partition_counts_are_bounded() {
        assert!(Partitions::new(0).is_err());
        assert!(Partitions::new(MAX_PARTITIONS + 1).is_err());
        assert_eq!(Partitions::new(3).expect("3").all().count(), 3);
        assert_eq!(Partition(7).to_string(), "p07");
    }
}
