//! The names of every key of one deployment.

use uuid::Uuid;

/// The keys of one Herald deployment.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (`herald` in production).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix of every key (the scripts build index keys from it).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The hash holding one event record.
    pub fn event(&self, id: Uuid) -> String {
        format!("{}:event:{id}", self.prefix)
    }

    /// The work-queue stream.
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// Events per status: a hash kept by the create and status scripts.
    pub fn stats(&self) -> String {
        format!("{}:stats", self.prefix)
    }

    /// The notification-log stream.
    pub fn notifications(&self) -> String {
        format!("{}:notifications", self.prefix)
    }

    /// The idempotency key of `request_id` sent by client `source`; it holds
    /// the id of the event created for it.
    pub fn request(&self, source: &str, request_id: &str) -> String {
        format!("{}:request:{source}:{request_id}", self.prefix)
    }

    /// The query index of events whose `kind` (user, session, category, type,
    /// status) is `value`.
    pub fn index(&self, kind: &str, value: &str) -> String {
        format!("{}:idx:{kind}:{value}", self.prefix)
    }

    /// The query index of every event.
    pub fn index_all(&self) -> String {
        format!("{}:idx:all", self.prefix)
    }

    /// The dead-letter stream.
    pub fn dead(&self) -> String {
        format!("{}:events:dead", self.prefix)
    }
}
