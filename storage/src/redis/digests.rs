//! The [`DigestStore`] on Redis: in each partition a membership hash
//! (`{p}:digests:member`), the open digests by key (`{p}:digests:open`)
//! and the digests by due time (`{p}:digests:due`); per digest a hash
//! (`{p}:digest:{id}`) with its member list and the set of channels that
//! took it. Joining, taking and finishing are one script each.

use std::{
    sync::LazyLock,
    time::{Duration, SystemTime},
};

use ::redis::{Script, Value};
use async_trait::async_trait;
use uuid::Uuid;

use super::RedisBackend;
use crate::digests::{Digest, DigestKey, DigestStore, Join};
use herald::{
    domain::{from_micros, to_micros},
    error::{Error, Result},
    partition::Partition,
};

static JOIN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/digest_join.lua")));
static TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/digest_take.lua")));
static FINISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/digest_finish.lua")));
/// Adds a channel to a digest's `took` set while the digest exists.
static TOOK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('SADD', KEYS[2], ARGV[1]) end",
    )
});

impl RedisBackend {
    /// The partition of digest (or event) `id`, if it is of this deployment.
    fn partition_of_digest(&self, id: Uuid) -> Result<Partition> {
        self.partitions.of_id(id).ok_or_else(|| {
            Error::invalid("digest_id", format!("{id} is no digest of this deployment"))
        })
    }
}

#[async_trait]
impl DigestStore for RedisBackend {
    async fn join_digest(&self, join: &Join) -> Result<Uuid> {
        self.checked().await?;
        let p = self.partitions.of_user(&join.key.user);
        let mut invocation = JOIN.prepare_invoke();
        invocation
            .key(self.keys.digest_members(p))
            .key(self.keys.digests_open(p))
            .key(self.keys.digests_due(p))
            .key(self.keys.event(p, join.event))
            .key(self.keys.queued(p, &join.key.user))
            .arg(join.event.as_bytes().as_slice())
            .arg(join.key.encode())
            .arg(join.new_digest.simple().to_string())
            .arg(to_micros(join.now))
            .arg(i64::try_from(join.window.as_micros()).unwrap_or(i64::MAX / 4))
            .arg(join.max_events.max(1))
            .arg(self.keys.tag(p));
        let id: Option<String> = self.write(p, &invocation).await?;
        let id = id.ok_or(Error::NotFound(join.event))?;
        Uuid::parse_str(&id).map_err(|_| Error::Internal(format!("a digest is named {id:?}")))
    }

    async fn take_due_digests(
        &self,
        p: Partition,
        now: SystemTime,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Digest>> {
        self.checked().await?;
        let mut invocation = TAKE.prepare_invoke();
        invocation
            .key(self.keys.digests_due(p))
            .key(self.keys.digests_open(p))
            .arg(to_micros(now))
            .arg(max.max(1))
            .arg(to_micros(now + lease))
            .arg(self.keys.tag(p));
        let taken: Vec<Vec<Value>> = self.write(p, &invocation).await?;
        taken.into_iter().map(|fields| digest_of(&fields)).collect()
    }

    async fn digest_took(&self, id: Uuid, channel: &str) -> Result<()> {
        self.checked().await?;
        let p = self.partition_of_digest(id)?;
        let key = self.keys.digest(p, id);
        let mut invocation = TOOK.prepare_invoke();
        invocation.key(&key).key(format!("{key}:took")).arg(channel);
        self.write::<()>(p, &invocation).await
    }

    async fn finish_digest(&self, id: Uuid) -> Result<()> {
        self.checked().await?;
        let p = self.partition_of_digest(id)?;
        let key = self.keys.digest(p, id);
        let mut invocation = FINISH.prepare_invoke();
        invocation
            .key(self.keys.digest_members(p))
            .key(self.keys.digests_due(p))
            .key(self.keys.digests_open(p))
            .key(&key)
            .key(format!("{key}:members"))
            .key(format!("{key}:took"))
            .arg(id.simple().to_string());
        self.write::<u64>(p, &invocation).await.map(|_| ())
    }
}

/// One digest as the take script returns it.
fn digest_of(fields: &[Value]) -> Result<Digest> {
    let bad = || Error::Internal("malformed digest from the take script".into());
    let bytes = |i: usize| match fields.get(i) {
        Some(Value::BulkString(b)) => Ok(b.as_slice()),
        _ => Err(bad()),
    };
    let text = |i: usize| std::str::from_utf8(bytes(i)?).map_err(|_| bad());
    let id = Uuid::parse_str(text(0)?).map_err(|_| bad())?;
    let key = DigestKey::decode(text(1)?).ok_or_else(bad)?;
    let opened: i64 = text(2)?.parse().map_err(|_| bad())?;
    let takes = match fields.get(3) {
        Some(Value::Int(n)) => u64::try_from(*n).map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    let members = bytes(4)?
        .chunks(16)
        .map(|c| Uuid::from_slice(c).map_err(|_| bad()))
        .collect::<Result<Vec<_>>>()?;
    let delivered = text(5)?
        .split(',')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(Digest {
        id,
        key,
        opened_at: from_micros(opened),
        members,
        delivered,
        takes,
    })
}
