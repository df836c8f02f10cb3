//! Who may call what: the scopes of API keys, and how keys are stored.
//!
//! A client authenticates with `authorization: Bearer <key>`. Herald never
//! stores a key, only its SHA-256 (hex), in the keys file next to the client id
//! and the client's scopes.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::pb::Rpc;

/// What a credential allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// CreateEvent, CreateEvents, CancelEvent (of the client's own
    /// events).
    EventsWrite,
    /// GetEvent, ListEvents, GetStats, ListDeliveryAttempts, ListInbox,
    /// GetUnreadCount.
    EventsRead,
    /// UpdateStatus and BatchUpdateStatus to any status, ListDeadLetters,
    /// RedriveEvents, MarkRead.
    EventsProcess,
    /// Subscribe, to one user's notifications or everyone's (an API key
    /// needs it for any subscription).
    NotificationsSubscribe,
    /// GetRecipient, GetPreferences.
    RecipientsRead,
    /// PutRecipient, PutRecipients, DeleteRecipient, SetPreferences.
    RecipientsWrite,
    /// Everything.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 7] = [
        Self::EventsWrite,
        Self::EventsRead,
        Self::EventsProcess,
        Self::NotificationsSubscribe,
        Self::RecipientsRead,
        Self::RecipientsWrite,
        Self::Admin,
    ];

    /// The scope's name in keys files and errors (`events:write`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventsWrite => "events:write",
            Self::EventsRead => "events:read",
            Self::EventsProcess => "events:process",
            Self::NotificationsSubscribe => "notifications:subscribe",
            Self::RecipientsRead => "recipients:read",
            Self::RecipientsWrite => "recipients:write",
            Self::Admin => "admin",
        }
    }

    /// Parses a scope name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Who may call a gRPC method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health checks and reflection.
    Open,
    /// A credential holding this scope (or `admin`).
    Needs(Scope),
}

/// The scope an RPC needs. The match is exhaustive: an RPC the contract
/// gains does not compile until it is given its scope here, so none is ever
/// open, or read-scoped, by default.
pub fn scope_for(rpc: Rpc) -> Scope {
    match rpc {
        Rpc::CreateEvent | Rpc::CreateEvents | Rpc::CancelEvent => Scope::EventsWrite,
        Rpc::GetEvent
        | Rpc::ListEvents
        | Rpc::GetStats
        | Rpc::ListDeliveryAttempts
        | Rpc::ListInbox
        | Rpc::GetUnreadCount => Scope::EventsRead,
        Rpc::UpdateStatus
        | Rpc::BatchUpdateStatus
        | Rpc::ListDeadLetters
        | Rpc::RedriveEvents
        | Rpc::MarkRead => Scope::EventsProcess,
        Rpc::Subscribe => Scope::NotificationsSubscribe,
        Rpc::GetRecipient | Rpc::GetPreferences => Scope::RecipientsRead,
        Rpc::PutRecipient | Rpc::PutRecipients | Rpc::DeleteRecipient | Rpc::SetPreferences => {
            Scope::RecipientsWrite
        }
    }
}

/// The services open to all, by path prefix.
const OPEN_SERVICES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Who may call the gRPC method at `path`
/// (`/herald.v1.EventLogger/CreateEvent`); `None` for a method Herald does
/// not serve, which is refused whatever the credential.
pub fn access_for(path: &str) -> Option<Access> {
    if OPEN_SERVICES.iter().any(|open| {
        path.strip_prefix(open)
            .is_some_and(|method| !method.is_empty() && !method.contains('/'))
    }) {
        return Some(Access::Open);
    }
    Rpc::from_path(path).map(|rpc| Access::Needs(scope_for(rpc)))
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
    fn every_rpc_of_the_contract_has_a_scope_and_others_are_refused() {
        for rpc in Rpc::ALL {
            assert_eq!(Rpc::from_path(rpc.path()), Some(rpc));
            assert_eq!(access_for(rpc.path()), Some(Access::Needs(scope_for(rpc))));
        }
        let cases = [
            (
                "/herald.v1.EventLogger/CreateEvents",
                Some(Access::Needs(Scope::EventsWrite)),
            ),
            (
                "/herald.v1.EventLogger/GetEvent",
                Some(Access::Needs(Scope::EventsRead)),
            ),
            (
                "/herald.v1.EventLogger/RedriveEvents",
                Some(Access::Needs(Scope::EventsProcess)),
            ),
            (
                "/herald.v1.Notifier/Subscribe",
                Some(Access::Needs(Scope::NotificationsSubscribe)),
            ),
            ("/grpc.health.v1.Health/Check", Some(Access::Open)),
            (
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                Some(Access::Open),
            ),
            // What the contract does not have is unknown, not read-only.
            ("/herald.v1.EventLogger/DeleteEvent", None),
            ("/herald.v1.EventLogger/GetEvent/", None),
            ("/grpc.health.v1.Health/", None),
            ("/grpc.health.v1.Health/a/b", None),
            ("/other.Service/Method", None),
            ("", None),
        ];
        for (path, access) in cases {
            assert_eq!(access_for(path), access, "{path}");
        }
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn the_readme_scope_table_is_the_code_s_list() {
        let readme = include_str!("../README.md");
        let name = |path: &str| path.rsplit('/').next().unwrap_or_default().to_owned();
        let every: Vec<String> = Rpc::ALL.iter().map(|rpc| name(rpc.path())).collect();
        for scope in Scope::ALL.into_iter().filter(|s| *s != Scope::Admin) {
            let prefix = format!("| `{}` | ", scope.as_str());
            let row = readme
                .lines()
                .find(|line| line.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no README row for {scope}"));
            let mut listed: Vec<String> = row
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|word| every.iter().any(|m| m == word))
                .map(str::to_owned)
                .collect();
            listed.sort();
            listed.dedup();
            let mut wanted: Vec<String> = Rpc::ALL
                .into_iter()
                .filter(|rpc| scope_for(*rpc) == scope)
                .map(|rpc| name(rpc.path()))
                .collect();
            wanted.sort();
            assert_eq!(listed, wanted, "README row of {scope}: {row}");
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
