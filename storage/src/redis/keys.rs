//! The names of every key of one deployment.

use uuid::Uuid;

use herald::{
    domain::EventStatus,
    partition::{Partition, Partitions},
};

/// The keys of one Herald deployment: a few global keys under the prefix,
/// and per partition keys that all share the partition's hash tag
/// (`{prefix}:{p07}:…`), so that a partition lives in one Redis Cluster slot.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    layout: Partitions,
    /// The names every write or read of a partition uses, made once for
    /// each partition.
    partitions: Vec<PartitionKeys>,
}

/// The names of one partition's keys that are not named by an event or a
/// value.
#[derive(Clone, Debug)]
struct PartitionKeys {
    /// `{prefix}:{pNN}`.
    tag: String,
    /// The work-queue stream.
    events: String,
    /// The notification-log stream.
    notifications: String,
    /// The status indexes, in [`EventStatus::ALL`]'s order.
    statuses: [String; EventStatus::ALL.len()],
}

impl Keys {
    /// Keys under `prefix` (`herald` in production) for `partitions`.
    pub fn new(prefix: &str, partitions: Partitions) -> Self {
        let partition = |p: Partition| {
            let tag = format!("{prefix}:{{{p}}}");
            PartitionKeys {
                events: format!("{tag}:events"),
                notifications: format!("{tag}:notifications"),
                statuses: EventStatus::ALL.map(|s| index_key(&tag, "status", s.as_str())),
                tag,
            }
        };
        Self {
            prefix: prefix.to_owned(),
            layout: partitions,
            partitions: partitions.all().map(partition).collect(),
        }
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix of every key of `partition`, `{prefix}:{pNN}` (the scripts
    /// build index keys from it).
    pub fn tag(&self, partition: Partition) -> &str {
        &self.partitions[partition.index()].tag
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
    pub fn events(&self, partition: Partition) -> &str {
        &self.partitions[partition.index()].events
    }

    /// The partition's notification-log stream.
    pub fn notifications(&self, partition: Partition) -> &str {
        &self.partitions[partition.index()].notifications
    }

    /// The partition whose work-queue or notification-log stream `key` is
    /// (a stream key in a read's reply).
    pub fn partition_of_stream(&self, key: &str) -> Option<Partition> {
        let at = self
            .partitions
            .iter()
            .position(|k| k.events == key || k.notifications == key)?;
        self.layout.get(at)
    }

    /// The idempotency key of `request_id` sent by client `source` for an
    /// event of `user` (whose partition is `partition`); it holds the id of
    /// the event created for it. Its name is the SHA-256 of the three parts,
    /// each length-prefixed, so no two (client, user, request id) share a
    /// key however their text runs together (client `shop` with `eu:1` and
    /// client `shop:eu` with `1` were one key when they were joined by
    /// colons), and its length is fixed whatever the parts' lengths.
    pub fn request(
        &self,
        partition: Partition,
        source: &str,
        user: &str,
        request_id: &str,
    ) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for part in [source, user, request_id] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let digest: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:request:{digest}", self.tag(partition))
    }

    /// The partition's query index of events whose `kind` (user, session,
    /// category, type, status) is `value`.
    pub fn index(&self, partition: Partition, kind: &str, value: &str) -> String {
        index_key(self.tag(partition), kind, value)
    }

    /// The partition's index of the events in `status` ([`Keys::index`]
    /// of kind `status`, made once): one sorted set, or, for a status
    /// whose index is in buckets (PROCESSED, OPENED, FAILED, CANCELLED:
    /// see `bucketed`), the name its directory and buckets extend.
    pub fn status(&self, partition: Partition, status: EventStatus) -> &str {
        &self.partitions[partition.index()].statuses[status.index()]
    }

    /// The directory of a status index in buckets: a sorted set of its
    /// buckets' starts (see `lua/buckets.lua`).
    pub fn status_directory(&self, partition: Partition, status: EventStatus) -> String {
        format!("{}:dir", self.status(partition, status))
    }

    /// The bucket of a status index in buckets that starts at `start` (a
    /// member of its directory).
    pub fn status_bucket(&self, partition: Partition, status: EventStatus, start: &str) -> String {
        format!("{}:{start}", self.status(partition, status))
    }

    /// The partition's counts of events per status whose index is in
    /// buckets: a hash from the status's name to the size of its index.
    pub fn counts(&self, partition: Partition) -> String {
        format!("{}:counts", self.tag(partition))
    }

    /// The partition's unread counts: a hash from a user id to how many of
    /// the user's notifications are PROCESSED (a user with none has no
    /// field). A ListInbox walks the user's index.
    pub fn unread(&self, partition: Partition) -> String {
        format!("{}:unread", self.tag(partition))
    }

    /// The hash of `user`'s recipient record (fields `contact` and
    /// `preferences`), in the user's partition.
    pub fn recipient(&self, partition: Partition, user: &str) -> String {
        format!("{}:recipient:{user}", self.tag(partition))
    }

    /// `user`'s PENDING events (those created since the deployment uses
    /// ordering, and every one queued again): a sorted set of their ids'
    /// 16 bytes, all scored 0, so in id (creation) order; gone when empty.
    pub fn queued(&self, partition: Partition, user: &str) -> String {
        format!("{}:queued:{user}", self.tag(partition))
    }

    /// The partition's schedule: a sorted set of the SCHEDULED events' ids
    /// (16 bytes) scored by their deliver_at (micros).
    pub fn scheduled(&self, partition: Partition) -> String {
        format!("{}:scheduled", self.tag(partition))
    }

    /// The partition's scheduler lease: the name of the mover that moves
    /// its due events for now, expiring on its own.
    pub fn scheduler(&self, partition: Partition) -> String {
        format!("{}:scheduler", self.tag(partition))
    }

    /// The partition's digest membership: a hash from an event id (16
    /// bytes) to the id of the digest it joined (32 hex digits), while
    /// the digest lasts.
    pub fn digest_members(&self, partition: Partition) -> String {
        format!("{}:digests:member", self.tag(partition))
    }

    /// The partition's open digests: a hash from a digest key (see
    /// `DigestKey::encode`) to the id of the digest collecting it now.
    pub fn digests_open(&self, partition: Partition) -> String {
        format!("{}:digests:open", self.tag(partition))
    }

    /// The partition's digests by when they are due (micros): open ones
    /// at their window's end, sealed ones at once, taken ones a lease on.
    pub fn digests_due(&self, partition: Partition) -> String {
        format!("{}:digests:due", self.tag(partition))
    }

    /// Digest `id`'s hash (fields `key`, `opened`, `takes`); its members
    /// are the list under the same name and `:members`, the channels that
    /// took it the set under `:took`.
    pub fn digest(&self, partition: Partition, id: Uuid) -> String {
        format!("{}:digest:{}", self.tag(partition), id.simple())
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

/// Whether `status`'s index is in buckets of at most 128 entries (with a
/// count apart) rather than one sorted set: the statuses events stay in.
/// PENDING and SCHEDULED, which events leave, are one sorted set each.
pub fn bucketed(status: EventStatus) -> bool {
    !matches!(status, EventStatus::Pending | EventStatus::Scheduled)
}

/// The name of a query index under a partition's `tag`.
fn index_key(tag: &str, kind: &str, value: &str) -> String {
    format!("{tag}:idx:{kind}:{value}")
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
        for status in EventStatus::ALL {
            assert_eq!(
                keys.status(p, status),
                keys.index(p, "status", status.as_str())
            );
        }
        for key in [
            keys.event(p, id),
            keys.events(p).to_owned(),
            keys.notifications(p).to_owned(),
            keys.request(p, "billing", "ann", "r1"),
            keys.index(p, "user", "ann"),
            keys.dead(p),
            keys.dead_index(p),
            keys.unread(p),
            keys.attempts(p, id),
            keys.recipient(p, "ann"),
            keys.scheduled(p),
            keys.scheduler(p),
            keys.queued(p, "ann"),
            keys.digest_members(p),
            keys.digests_open(p),
            keys.digests_due(p),
            keys.digest(p, id),
            keys.counts(p),
            keys.status_directory(p, EventStatus::Processed),
            keys.status_bucket(p, EventStatus::Processed, "-inf"),
        ] {
            assert!(key.starts_with("herald:{p07}:"), "{key}");
        }
    }

    #[test]
    fn request_keys_keep_client_user_and_id_apart() {
        let keys = Keys::new("herald", Partitions::new(16).expect("16"));
        let p = Partitions::new(16).expect("16").get(3).expect("3");
        let key = |source, user, id| keys.request(p, source, user, id);
        let all = [
            key("shop", "ann", "eu:1"),
            key("shop:eu", "ann", "1"),
            key("shop", "ann:eu", "1"),
            key("shop", "bob", "eu:1"),
            key("", "shopann", "eu:1"),
        ];
        let distinct: std::collections::HashSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
        assert_eq!(
            key("shop", "ann", "eu:1"),
            all[0],
            "the same parts, the same key"
        );
        assert!(all.iter().all(|k| k.len() == all[0].len()));
    }

    #[test]
    fn a_stream_key_names_its_partition() {
        let partitions = Partitions::new(16).expect("16");
        let keys = Keys::new("herald", partitions);
        for p in partitions.all() {
            assert_eq!(keys.partition_of_stream(keys.events(p)), Some(p));
            assert_eq!(keys.partition_of_stream(keys.notifications(p)), Some(p));
        }
        let p = partitions.get(7).expect("7");
        assert_eq!(keys.partition_of_stream(&keys.dead(p)), None);
        assert_eq!(keys.partition_of_stream("herald:{p99}:events"), None);
    }
}
