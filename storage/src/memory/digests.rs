//! The memory backend's digests: the same state as the Redis scripts
//! keep (membership, open digests by key, digests by due time), under the
//! one lock.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use uuid::Uuid;

use super::MemoryBackend;
use crate::digests::{Digest, DigestKey, DigestStore, Join};
use herald::{
    error::{Error, Result},
    partition::Partition,
};

/// Every digest of the process.
#[derive(Default)]
pub(super) struct Digests {
    /// The digest each digested event joined, while it lasts.
    member: HashMap<Uuid, Uuid>,
    /// The digest collecting each key now.
    open: HashMap<DigestKey, Uuid>,
    /// Digests by when they are due.
    due: BTreeSet<(SystemTime, Uuid)>,
    digests: HashMap<Uuid, Kept>,
}

/// One digest.
struct Kept {
    key: DigestKey,
    opened_at: SystemTime,
    due: SystemTime,
    members: Vec<Uuid>,
    delivered: Vec<String>,
    takes: u64,
}

impl Digests {
    fn set_due(&mut self, id: Uuid, due: SystemTime) {
        if let Some(kept) = self.digests.get_mut(&id) {
            self.due.remove(&(kept.due, id));
            kept.due = due;
            self.due.insert((due, id));
        }
    }

    /// Seals digest `id`: later events of its key open another.
    fn seal(&mut self, id: Uuid) {
        if let Some(kept) = self.digests.get(&id)
            && self.open.get(&kept.key) == Some(&id)
        {
            self.open.remove(&kept.key);
        }
    }
}

#[async_trait]
impl DigestStore for MemoryBackend {
    async fn join_digest(&self, join: &Join) -> Result<Uuid> {
        let mut state = self.lock();
        if let Some(id) = state.digests.member.get(&join.event) {
            return Ok(*id);
        }
        if !state.events.contains_key(&join.event) {
            return Err(Error::NotFound(join.event));
        }
        let digests = &mut state.digests;
        let id = match digests.open.get(&join.key) {
            Some(id) => *id,
            None => {
                let id = join.new_digest;
                let due = join.now + join.window;
                digests.open.insert(join.key.clone(), id);
                digests.due.insert((due, id));
                digests.digests.insert(
                    id,
                    Kept {
                        key: join.key.clone(),
                        opened_at: join.now,
                        due,
                        members: Vec::new(),
                        delivered: Vec::new(),
                        takes: 0,
                    },
                );
                id
            }
        };
        let kept = digests
            .digests
            .get_mut(&id)
            .expect("an open digest is kept");
        kept.members.push(join.event);
        let full = kept.members.len() >= join.max_events.max(1) as usize;
        digests.member.insert(join.event, id);
        if full {
            digests.seal(id);
            digests.set_due(id, join.now);
        }
        state.unqueue(&join.key.user, join.event);
        Ok(id)
    }

    async fn take_due_digests(
        &self,
        partition: Partition,
        now: SystemTime,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Digest>> {
        let mut state = self.lock();
        let partitions = self.partitions;
        let digests = &mut state.digests;
        let due: Vec<Uuid> = digests
            .due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .filter(|id| partitions.of_id(*id) == Some(partition))
            .take(max.max(1))
            .collect();
        let mut taken = Vec::with_capacity(due.len());
        for id in due {
            digests.seal(id);
            digests.set_due(id, now + lease);
            let kept = digests.digests.get_mut(&id).expect("a due digest is kept");
            kept.takes += 1;
            taken.push(Digest {
                id,
                key: kept.key.clone(),
                opened_at: kept.opened_at,
                members: kept.members.clone(),
                delivered: kept.delivered.clone(),
                takes: kept.takes,
            });
        }
        Ok(taken)
    }

    async fn digest_took(&self, id: Uuid, channel: &str) -> Result<()> {
        let mut state = self.lock();
        if let Some(kept) = state.digests.digests.get_mut(&id)
            && !kept.delivered.iter().any(|c| c == channel)
        {
            kept.delivered.push(channel.to_owned());
        }
        Ok(())
    }

    async fn finish_digest(&self, id: Uuid) -> Result<()> {
        let mut state = self.lock();
        let digests = &mut state.digests;
        digests.seal(id);
        if let Some(kept) = digests.digests.remove(&id) {
            digests.due.remove(&(kept.due, id));
            for member in kept.members {
                if digests.member.get(&member) == Some(&id) {
                    digests.member.remove(&member);
                }
            }
        }
        Ok(())
    }
}
