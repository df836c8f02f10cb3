//! The work queue on Redis: a stream per partition, each read by the
//! consumer group; its sizes, and its trimming below what was acknowledged.
//! The group's members are in `consumer`.

use std::{collections::HashMap, sync::Arc};

use ::redis::Value;
use async_trait::async_trait;

use super::{RedisBackend, consumer::RedisConsumer, redis_error};
use crate::{Consumer, ConsumerOptions, GROUP, QueueStats, WorkQueue};
use herald::{error::Result, partition::Partition};

#[async_trait]
impl WorkQueue for RedisBackend {
    async fn trim_acknowledged(&self) -> Result<u64> {
        let trimmed = self
            .each_partition(|p| async move {
                self.trim_acknowledged
                    .key(self.keys.events(p))
                    .invoke_async::<u64>(&mut self.conn.clone())
                    .await
                    .map_err(redis_error)
            })
            .await?;
        Ok(trimmed.into_iter().sum())
    }

    async fn stats(&self) -> Result<QueueStats> {
        let per_partition = self.each_partition(|p| self.stats_in(p)).await?;
        Ok(per_partition.into_iter().fold(
            QueueStats {
                lag: Some(0),
                ..QueueStats::default()
            },
            |sum, s| QueueStats {
                length: sum.length + s.length,
                pending: sum.pending + s.pending,
                lag: sum.lag.zip(s.lag).map(|(a, b)| a + b),
                dead_letters: sum.dead_letters + s.dead_letters,
            },
        ))
    }

    fn consumer(&self, config: ConsumerOptions) -> Arc<dyn Consumer> {
        Arc::new(RedisConsumer::new(self, config))
    }
}

impl RedisBackend {
    /// The queue sizes of partition `p`.
    async fn stats_in(&self, p: Partition) -> Result<QueueStats> {
        let (length, dead_letters): (u64, u64) = ::redis::pipe()
            .xlen(self.keys.events(p))
            .xlen(self.keys.dead(p))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        let key = self.keys.events(p);
        let groups = ::redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await;
        // No queue yet: nothing waits.
        let groups: Vec<HashMap<String, Value>> =
            self.unless_missing(key, groups).await?.unwrap_or_default();
        let group = groups.iter().find(
            |g| matches!(g.get("name"), Some(Value::BulkString(name)) if name == GROUP.as_bytes()),
        );
        let int = |name: &str| match group.and_then(|g| g.get(name)) {
            Some(Value::Int(n)) => u64::try_from(*n).ok(),
            _ => None,
        };
        Ok(QueueStats {
            length,
            pending: int("pending").unwrap_or(0),
            // Without the group, every entry waits.
            lag: if group.is_some() {
                int("lag")
            } else {
                Some(length)
            },
            dead_letters,
        })
    }
}
