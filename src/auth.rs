//! Who may call what: the scopes of API keys, and how keys are stored.
//!
//! A client authenticates with `authorization: Bearer <key>`. Herald never
//! stores a key, only its SHA-256 (hex), in the keys file next to the client id
//! and the client's scopes.

use std::fmt;

use sha2::{Digest, Sha256};

/// What a credential allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// CreateEvent, CreateEvents.
    EventsWrite,
    /// GetEvent, ListEvents.
    EventsRead,
    /// UpdateStatus and BatchUpdateStatus to any status.
    EventsProcess,
    /// Subscribe to anyone's notifications.
    NotificationsSubscribe,
    /// Everything.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 5] = [
        Self::EventsWrite,
        Self::EventsRead,
        Self::EventsProcess,
        Self::NotificationsSubscribe,
        Self::Admin,
    ];

    /// The scope's name in keys files and errors (`events:write`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventsWrite => "events:write",
            Self::EventsRead => "events:read",
            Self::EventsProcess => "events:process",
            Self::NotificationsSubscribe => "notifications:subscribe",
            Self::Admin => "admin",
        }
    }

    /// Parses a scope name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The scope a gRPC method (`/herald.v1.EventLogger/CreateEvent`) needs;
    /// `None` for methods open to all (health checks, reflection).
    pub fn required_for(path: &str) -> Option<Self> {
        let method = path.rsplit('/').next().unwrap_or_default();
        if path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") {
            return None;
        }
        Some(match method {
            "CreateEvent" | "CreateEvents" => Self::EventsWrite,
            "UpdateStatus" | "BatchUpdateStatus" | "ListDeadLetters" | "RedriveEvents" => {
                Self::EventsProcess
            }
            "Subscribe" => Self::NotificationsSubscribe,
            // Reads, and anything unknown, need at least the read scope.
            _ if path.starts_with("/herald.") => Self::EventsRead,
            _ => Self::Admin,
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shortest secret end users' tokens may be signed with
/// (`--user-token-secret`), in bytes: HS256 is only as strong as its key.
pub const MIN_USER_TOKEN_SECRET_BYTES: usize = 16;

/// Whether `secret` may sign end users' tokens; the error says why not.
pub fn check_user_token_secret(secret: &str) -> Result<(), String> {
    if secret.len() < MIN_USER_TOKEN_SECRET_BYTES {
        return Err(format!(
            "must be at least {MIN_USER_TOKEN_SECRET_BYTES} bytes, got {}",
            secret.len()
        ));
    }
    Ok(())
}

/// A fresh random API key: `hk_` and 64 hex digits (256 bits from the OS).
pub fn generate_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "hk_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// The SHA-256 of a key, as the keys file holds it (64 lowercase hex digits).
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_scopes() {
        let cases = [
            (
                "/herald.v1.EventLogger/CreateEvent",
                Some(Scope::EventsWrite),
            ),
            (
                "/herald.v1.EventLogger/CreateEvents",
                Some(Scope::EventsWrite),
            ),
            ("/herald.v1.EventLogger/GetEvent", Some(Scope::EventsRead)),
            ("/herald.v1.EventLogger/ListEvents", Some(Scope::EventsRead)),
            (
                "/herald.v1.EventLogger/ListDeliveryAttempts",
                Some(Scope::EventsRead),
            ),
            (
                "/herald.v1.EventLogger/UpdateStatus",
                Some(Scope::EventsProcess),
            ),
            (
                "/herald.v1.EventLogger/BatchUpdateStatus",
                Some(Scope::EventsProcess),
            ),
            (
                "/herald.v1.Notifier/Subscribe",
                Some(Scope::NotificationsSubscribe),
            ),
            ("/grpc.health.v1.Health/Check", None),
            (
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                None,
            ),
            ("/other.Service/Method", Some(Scope::Admin)),
        ];
        for (path, scope) in cases {
            assert_eq!(Scope::required_for(path), scope, "{path}");
        }
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn generated_keys_are_fresh() {
        let (a, b) = (
            generate_key().expect("random"),
            generate_key().expect("random"),
        );
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
        assert!(a.starts_with("hk_"));
    }

    #[test]
    fn keys_hash_to_sha256_hex() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
