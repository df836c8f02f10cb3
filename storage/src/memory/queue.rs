//! The memory backend as the work queue: consumers in one group, pending
//! entries, reclaiming and dead-lettering.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::time::Instant;

use super::{MemoryBackend, Pending, entry_id};
use crate::{Consumer, ConsumerOptions, Delivery, QueueStats, WorkQueue};
use herald::{cursor::PartitionEntry, error::Result};

#[async_trait]
impl WorkQueue for MemoryBackend {
    fn consumer(&self, config: ConsumerOptions) -> Arc<dyn Consumer> {
        Arc::new(MemoryConsumer {
            backend: MemoryBackend {
                state: self.state.clone(),
                token_key: self.token_key.clone(),
                queued: self.queued.clone(),
                notified: self.notified.clone(),
                request_id_window: self.request_id_window,
                partitions: self.partitions,
            },
            config,
            drained_own: Mutex::new(false),
        })
    }

    async fn trim_acknowledged(&self) -> Result<u64> {
        // An acknowledged entry is dropped at once here.
        Ok(0)
    }

    async fn stats(&self) -> Result<QueueStats> {
        let state = self.lock();
        Ok(QueueStats {
            length: (state.queued() + state.pending.len()) as u64,
            pending: state.pending.len() as u64,
            lag: Some(state.queued() as u64),
            dead_letters: state.dead.len() as u64,
        })
    }
}

struct MemoryConsumer {
    backend: MemoryBackend,
    config: ConsumerOptions,
    drained_own: Mutex<bool>,
}

impl MemoryConsumer {
    /// Takes what is available now, following the order of [`Consumer::receive`].
    fn take(&self, max: usize) -> Vec<Delivery> {
        let mut state = self.backend.lock();
        let now = Instant::now();
        let name = &self.config.name;
        let mut drained = self.drained_own.lock().unwrap_or_else(|p| p.into_inner());
        let claimable: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, p)| {
                (!*drained && p.consumer == *name)
                    || now.duration_since(p.delivered_at) >= self.config.claim_idle
            })
            .map(|(seq, _)| *seq)
            .take(max)
            .collect();
        *drained = true;
        let mut out = Vec::new();
        for seq in claimable {
            let Some(id) = state.pending.get(&seq).map(|p| p.event.id) else {
                continue;
            };
            let delivered = state.delivered(id);
            if let Some(p) = state.pending.get_mut(&seq) {
                p.consumer.clone_from(name);
                p.delivered_at = now;
                p.deliveries += 1;
                out.push(Delivery {
                    entry_id: PartitionEntry {
                        partition: p.partition,
                        id: entry_id(seq),
                    },
                    event: p.event.clone(),
                    deliveries: p.deliveries,
                    delivered,
                });
            }
        }
        while out.len() < max {
            let Some((entry, event)) = state.next_queued() else {
                break;
            };
            state.pending.insert(
                entry.id.seq,
                Pending {
                    partition: entry.partition,
                    event: event.clone(),
                    consumer: name.clone(),
                    delivered_at: now,
                    deliveries: 1,
                },
            );
            out.push(Delivery {
                entry_id: entry,
                delivered: state.delivered(event.id),
                event,
                deliveries: 1,
            });
        }
        out
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + self.config.block;
        loop {
            let queued = self.backend.queued.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            let batch = self.take(max.max(1));
            if !batch.is_empty() {
                return Ok(batch);
            }
            // Wake for new entries, or in time to reclaim idle ones.
            let wake = deadline
                .min(Instant::now() + self.config.claim_idle.max(Duration::from_millis(10)));
            if tokio::time::timeout_at(wake, queued).await.is_err() && Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, entry_ids: &[PartitionEntry]) -> Result<()> {
        let mut state = self.backend.lock();
        for entry in entry_ids {
            state.pending.remove(&entry.id.seq);
        }
        Ok(())
    }

    async fn touch(&self, entry_ids: &[PartitionEntry]) -> Result<()> {
        let mut state = self.backend.lock();
        let now = Instant::now();
        for entry in entry_ids {
            if let Some(pending) = state.pending.get_mut(&entry.id.seq)
                && pending.consumer == self.config.name
            {
                pending.delivered_at = now;
            }
        }
        Ok(())
    }

    async fn pending_by_consumer(&self) -> Result<Vec<(String, u64)>> {
        let state = self.backend.lock();
        let mut counts = BTreeMap::<String, u64>::new();
        for p in state.pending.values() {
            *counts.entry(p.consumer.clone()).or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }
}
