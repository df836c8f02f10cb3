//! The [`RecipientStore`] on Redis: a hash per user in the user's
//! partition (`{p}:recipient:{user}`), whose field `contact` holds the
//! contact data and `preferences` the preferences, each a protobuf
//! `Recipient` with only its half and the time it was written. Each half is
//! written with one `HSET` in a transaction that reads the other back, so
//! a write never loses the other half and answers the whole record.

use async_trait::async_trait;
use futures_util::future::try_join_all;
use prost::Message;

use super::{RedisBackend, redis_error};
use crate::RecipientStore;
use herald::{
    domain::{Contact, OptOut, Preferences, Recipient, RecipientUpdate, json_to_struct, now},
    error::{Error, Result},
    pb,
};

/// The hash field of the contact data.
const CONTACT: &str = "contact";
/// The hash field of the preferences.
const PREFERENCES: &str = "preferences";
/// How often [`RecipientStore::add_opt_out`] reads again after another
/// change of the preferences came between its read and its write.
const MAX_RACES: usize = 16;

/// Sets a hash field only if it still holds what was read.
static SET_FIELD_IF: std::sync::LazyLock<::redis::Script> =
    std::sync::LazyLock::new(|| ::redis::Script::new(include_str!("lua/set_field_if.lua")));

#[async_trait]
impl RecipientStore for RedisBackend {
    async fn put_recipients(&self, updates: &[RecipientUpdate]) -> Result<Vec<Recipient>> {
        self.checked().await?;
        try_join_all(updates.iter().map(|update| async move {
            let at = now();
            let contact = contact_bytes(&update.contact, at);
            let mut fields = vec![(CONTACT, contact.clone())];
            if let Some(preferences) = &update.preferences {
                fields.push((PREFERENCES, preferences_bytes(preferences, at)));
            }
            let (other,): (Option<Vec<u8>>,) = ::redis::pipe()
                .atomic()
                .hset_multiple(self.recipient_key(&update.user_id), &fields)
                .ignore()
                .hget(self.recipient_key(&update.user_id), PREFERENCES)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            decode(&update.user_id, Some(&contact), other.as_deref())?
                .ok_or_else(|| Error::Internal("a recipient written is not there".into()))
        }))
        .await
    }

    async fn recipients(&self, users: &[&str]) -> Result<Vec<Option<Recipient>>> {
        self.checked().await?;
        try_join_all(users.iter().map(|user| async move {
            let (contact, preferences): (Option<Vec<u8>>, Option<Vec<u8>>) = ::redis::cmd("HMGET")
                .arg(self.recipient_key(user))
                .arg(CONTACT)
                .arg(PREFERENCES)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            decode(user, contact.as_deref(), preferences.as_deref())
        }))
        .await
    }

    async fn delete_recipient(&self, user: &str) -> Result<bool> {
        self.checked().await?;
        let removed: u64 = ::redis::cmd("DEL")
            .arg(self.recipient_key(user))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(removed > 0)
    }

    async fn set_preferences(&self, user: &str, preferences: &Preferences) -> Result<Recipient> {
        self.checked().await?;
        let bytes = preferences_bytes(preferences, now());
        let (contact,): (Option<Vec<u8>>,) = ::redis::pipe()
            .atomic()
            .hset(self.recipient_key(user), PREFERENCES, &bytes)
            .ignore()
            .hget(self.recipient_key(user), CONTACT)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        decode(user, contact.as_deref(), Some(&bytes))?
            .ok_or_else(|| Error::Internal("preferences written are not there".into()))
    }

    async fn add_opt_out(&self, user: &str, opt_out: &OptOut) -> Result<Option<Recipient>> {
        self.checked().await?;
        let key = self.recipient_key(user);
        for _ in 0..MAX_RACES {
            let (contact, read): (Option<Vec<u8>>, Option<Vec<u8>>) = ::redis::cmd("HMGET")
                .arg(&key)
                .arg(CONTACT)
                .arg(PREFERENCES)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            let Some(record) = decode(user, contact.as_deref(), read.as_deref())? else {
                return Ok(None);
            };
            let preferences = record.preferences.clone().with(opt_out.clone())?;
            if preferences == record.preferences {
                return Ok(Some(record));
            }
            let bytes = preferences_bytes(&preferences, now());
            let set: i64 = SET_FIELD_IF
                .key(&key)
                .arg(PREFERENCES)
                .arg(read.unwrap_or_default())
                .arg(&bytes)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            match set {
                1 => return decode(user, contact.as_deref(), Some(&bytes)),
                -1 => return Ok(None),
                _ => continue,
            }
        }
        Err(Error::Unavailable(format!(
            "the preferences of {user:?} kept changing; try again"
        )))
    }
}

impl RedisBackend {
    /// The hash of `user`'s record, in the user's partition.
    fn recipient_key(&self, user: &str) -> String {
        self.keys.recipient(self.partitions.of_user(user), user)
    }
}

/// The contact half as stored, written at `at`.
fn contact_bytes(contact: &Contact, at: std::time::SystemTime) -> Vec<u8> {
    pb::Recipient {
        email: contact.email.clone(),
        name: contact.name.clone(),
        locale: contact.locale.clone(),
        time_zone: contact.time_zone.clone(),
        attributes: contact.attributes.as_ref().map(json_to_struct),
        updated_at: Some(at.into()),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The preferences half as stored, written at `at`.
fn preferences_bytes(preferences: &Preferences, at: std::time::SystemTime) -> Vec<u8> {
    pb::Recipient {
        preferences: Some(preferences.clone().into()),
        updated_at: Some(at.into()),
        ..Default::default()
    }
    .encode_to_vec()
}

/// `user`'s record from its stored halves (`None` when neither is);
/// updated when the newer half was written.
fn decode(
    user: &str,
    contact: Option<&[u8]>,
    preferences: Option<&[u8]>,
) -> Result<Option<Recipient>> {
    let read = |bytes: Option<&[u8]>| -> Result<Option<pb::Recipient>> {
        bytes
            .map(|b| {
                pb::Recipient::decode(b)
                    .map_err(|e| Error::Internal(format!("malformed recipient of {user:?}: {e}")))
            })
            .transpose()
    };
    let (contact, preferences) = (read(contact)?, read(preferences)?);
    let updated_at = [&contact, &preferences]
        .into_iter()
        .flatten()
        .filter_map(|half| half.updated_at.and_then(|t| t.try_into().ok()))
        .max();
    let Some(updated_at) = updated_at else {
        return Ok(None);
    };
    let mut record = Recipient::from_pb(contact.unwrap_or_default());
    record.user_id = user.to_owned();
    record.preferences = preferences
        .and_then(|p| p.preferences)
        .map(Into::into)
        .unwrap_or_default();
    record.updated_at = updated_at;
    Ok(Some(record))
}
