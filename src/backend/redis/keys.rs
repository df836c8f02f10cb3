//! The names of every key of one deployment.

use uuid::Uuid;

use crate::partition::{Partition, Partitions};

/// The keys of one Herald deployment: a few global keys under the prefix,
/// and per partition keys that all share the partition's hash tag
/// (`{prefix}:{p07}:…`), so that a partition lives in one Redis Cluster slot.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    /// `{prefix}:{pNN}` of each partition, made once.
    tags: Vec<String>,
}

impl Keys {
    /// Keys under `prefix` (`herald` in production) for `partitions`.
    pub fn new(prefix: &str, partitions: Partitions) -> Self {
        Self {
            prefix: prefix.to_owned(),
            tags: partitions
                .all()
                .map(|p| format!("{prefix}:{{{p}}}"))
                .collect(),
        }
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix of every key of `partition`, `{prefix}:{pNN}` (the scripts
    /// build index keys from it).
    pub fn tag(&self, partition: Partition) -> &str {
        &self.tags[partition.index()]
    }

    /// The hash recording the deployment's layout: its version and its
    /// number of partitions, written once.
    pub fn meta(&self) -> String {
        format!("{}:meta", self.prefix)
    }

    /// Keys that only the first, unpartitioned layout wrote: their presence
    /// means data Herald no longer reads.
    pub fn legacy(&self) -> [String; 3] {
        [
            format!("{}:events", self.prefix),
            format!("{}:stats", self.prefix),
            format!("{}:idx:all", self.prefix),
        ]
    }

    /// The string holding one event record, named by the id's 32 hex
    /// digits (no dashes: shorter keys, and a key is stored per event).
    pub fn event(&self, partition: Partition, id: Uuid) -> String {
        format!("{}:event:{}", self.tag(partition), id.simple())
    }

    /// The partition's work-queue stream.
    pub fn events(&self, partition: Partition) -> String {
        format!("{}:events", self.tag(partition))
    }

    /// The partition's notification-log stream.
    pub fn notifications(&self, partition: Partition) -> String {
        format!("{}:notifications", self.tag(partition))
    }

    /// The idempotency key of `request_id` sent by client `source` for an
    /// event of `partition`; it holds the id of the event created for it.
    pub fn request(&self, partition: Partition, source: &str, request_id: &str) -> String {
        format!("{}:request:{source}:{request_id}", self.tag(partition))
    }

    /// The partition's query index of events whose `kind` (user, session,
    /// category, type, status) is `value`.
    pub fn index(&self, partition: Partition, kind: &str, value: &str) -> String {
        format!("{}:idx:{kind}:{value}", self.tag(partition))
    }

    /// The partition's dead-letter stream.
    pub fn dead(&self, partition: Partition) -> String {
        format!("{}:dead", self.tag(partition))
    }

    /// The list of event `id`'s delivery attempts, named like its record.
    pub fn attempts(&self, partition: Partition, id: Uuid) -> String {
        format!("{}:attempts:{}", self.tag(partition), id.simple())
    }

    /// The partition's dead-letter index: a hash from an event id to the ids
    /// of its dead letters (space-separated), so a redrive finds them
    /// without reading the stream.
    pub fn dead_index(&self, partition: Partition) -> String {
        format!("{}:dead:index", self.tag(partition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_partition_shares_its_hash_tag() {
        let partitions = Partitions::new(16).expect("16");
        let keys = Keys::new("herald", partitions);
        let p = partitions.get(7).expect("7");
        let id = Uuid::nil();
        for key in [
            keys.event(p, id),
            keys.events(p),
            keys.notifications(p),
            keys.request(p, "billing", "r1"),
            keys.index(p, "user", "ann"),
            keys.dead(p),
            keys.dead_index(p),
            keys.attempts(p, id),
        ] {
            assert!(key.starts_with("herald:{p07}:"), "{key}");
        }
    }
}
