//! The memory backend's recipients: a map from user to record, under the
//! one lock.

use async_trait::async_trait;
use herald::{
    domain::{Contact, OptOut, Preferences, Recipient, RecipientUpdate, now},
    error::Result,
};

use super::MemoryBackend;
use crate::RecipientStore;

#[async_trait]
impl RecipientStore for MemoryBackend {
    async fn put_recipients(&self, updates: &[RecipientUpdate]) -> Result<Vec<Recipient>> {
        let mut state = self.lock();
        Ok(updates
            .iter()
            .map(|update| {
                let record = state
                    .recipients
                    .entry(update.user_id.clone())
                    .or_insert_with(|| empty(&update.user_id));
                record.contact = update.contact.clone();
                if let Some(preferences) = &update.preferences {
                    record.preferences = preferences.clone();
                }
                record.updated_at = now();
                record.clone()
            })
            .collect())
    }

    async fn recipients(&self, users: &[&str]) -> Result<Vec<Option<Recipient>>> {
        let state = self.lock();
        Ok(users
            .iter()
            .map(|user| state.recipients.get(*user).cloned())
            .collect())
    }

    async fn delete_recipient(&self, user: &str) -> Result<bool> {
        Ok(self.lock().recipients.remove(user).is_some())
    }

    async fn set_preferences(&self, user: &str, preferences: &Preferences) -> Result<Recipient> {
        let mut state = self.lock();
        let record = state
            .recipients
            .entry(user.to_owned())
            .or_insert_with(|| empty(user));
        record.preferences = preferences.clone();
        record.updated_at = now();
        Ok(record.clone())
    }

    async fn add_opt_out(&self, user: &str, opt_out: &OptOut) -> Result<Option<Recipient>> {
        let mut state = self.lock();
        let Some(record) = state.recipients.get_mut(user) else {
            return Ok(None);
        };
        let preferences = record.preferences.clone().with(opt_out.clone())?;
        if preferences != record.preferences {
            record.preferences = preferences;
            record.updated_at = now();
        }
        Ok(Some(record.clone()))
    }
}

/// A record of `user` with nothing in it yet.
fn empty(user: &str) -> Recipient {
    Recipient {
        user_id: user.to_owned(),
        contact: Contact::default(),
        preferences: Preferences::default(),
        updated_at: now(),
    }
}
