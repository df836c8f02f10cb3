//! Recipients: each user's contact data and preferences, kept in the
//! user's partition. The two halves are written apart (an import replaces
//! contact data and leaves the preferences a user chose; a user's own
//! SetPreferences leaves the contact data), each change atomic, and read
//! together.

use async_trait::async_trait;
use herald::{
    domain::{OptOut, Preferences, Recipient, RecipientUpdate},
    error::Result,
};

/// Where recipients are kept.
#[async_trait]
pub trait RecipientStore: Send + Sync + 'static {
    /// Stores each update on its own, in order: its contact data replaced,
    /// its preferences replaced when it has them (else they stay); returns
    /// each record as stored.
    async fn put_recipients(&self, updates: &[RecipientUpdate]) -> Result<Vec<Recipient>>;
    /// The records of `users`, in order; `None` for a user with nothing
    /// stored.
    async fn recipients(&self, users: &[&str]) -> Result<Vec<Option<Recipient>>>;
    /// Erases `user`'s record, contact data and preferences; whether there
    /// was one.
    async fn delete_recipient(&self, user: &str) -> Result<bool>;
    /// Replaces `user`'s preferences (a record of preferences alone if
    /// there was none); returns the record as stored.
    async fn set_preferences(&self, user: &str, preferences: &Preferences) -> Result<Recipient>;
    /// Adds `opt_out` to `user`'s preferences (see [`Preferences::with`]:
    /// refused, changing nothing, when they are full), atomically against
    /// any other change of them; `None`, changing nothing, when `user` has
    /// no record (an unsubscribe link of an erased recipient).
    async fn add_opt_out(&self, user: &str, opt_out: &OptOut) -> Result<Option<Recipient>>;
}

/// The record of `user`, if one is stored: one [`RecipientStore::recipients`].
pub async fn recipient(store: &dyn RecipientStore, user: &str) -> Result<Option<Recipient>> {
    Ok(store.recipients(&[user]).await?.pop().flatten())
}
