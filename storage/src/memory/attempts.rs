//! The memory backend as the delivery log: each event's attempts and the
//! channels that took it.

use async_trait::async_trait;
use uuid::Uuid;

use super::MemoryBackend;
use crate::DeliveryLog;
use herald::{
    domain::{DeliveryAttempt, MAX_ATTEMPTS_KEPT},
    error::{Error, Result},
};

#[async_trait]
impl DeliveryLog for MemoryBackend {
    async fn record_attempts(&self, attempts: &[DeliveryAttempt]) -> Result<()> {
        let mut state = self.lock();
        for attempt in attempts {
            if !state.events.contains_key(&attempt.event_id) {
                continue;
            }
            let kept = state.deliveries.entry(attempt.event_id).or_default();
            if kept.attempts.len() == MAX_ATTEMPTS_KEPT {
                kept.attempts.pop_front();
            }
            kept.attempts.push_back(attempt.clone());
            if attempt.succeeded && !kept.delivered.contains(&attempt.channel) {
                kept.delivered.push(attempt.channel.clone());
            }
        }
        Ok(())
    }

    async fn attempts(&self, id: Uuid) -> Result<Vec<DeliveryAttempt>> {
        let state = self.lock();
        if !state.events.contains_key(&id) {
            return Err(Error::NotFound(id));
        }
        Ok(state
            .deliveries
            .get(&id)
            .map(|d| d.attempts.iter().cloned().collect())
            .unwrap_or_default())
    }
}
