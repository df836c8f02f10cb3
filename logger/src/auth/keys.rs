//! The keys file and end users' tokens: who a credential is, and what it
//! may call ([`KeyRing::check`]).

use std::path::Path;

use herald::auth::{Access, Scope, access_for, generate_key, hash_key};
use serde_json::Value;
use tonic::Status;

use crate::loading::LoadError;

use crate::limits::Rate;

use super::Identity;

struct KeyEntry {
    hash: [u8; 32],
    identity: Identity,
}

/// What is wrong with a keys file.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The text is not JSON.
    #[error("not valid JSON")]
    NotJson(#[from] serde_json::Error),
    /// The JSON is not `{"keys": [...]}`.
    #[error("expected an object with a \"keys\" array")]
    Shape,
    /// An entry has no client id.
    #[error("keys[{index}]: client_id is required")]
    NoClientId {
        /// The entry's place in the list.
        index: usize,
    },
    /// An entry is wrong in another way.
    #[error("keys[{index}] ({client_id}): {problem}")]
    Entry {
        /// The entry's place in the list.
        index: usize,
        /// Its client id.
        client_id: String,
        /// What is wrong.
        problem: KeyProblem,
    },
    /// The list is empty.
    #[error("no keys: remove --keys-file to run in open mode")]
    Empty,
}

/// What is wrong with one entry of a keys file.
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    /// `key_sha256` is missing or not 64 hex digits.
    #[error("key_sha256 must be 64 hex digits")]
    Hash,
    /// `scopes` is missing or not a list.
    #[error("scopes must be a list")]
    ScopesNotAList,
    /// A scope is not one Herald knows (as written in the file).
    #[error("unknown scope {0}; known: {known}", known = Scope::ALL.map(Scope::as_str).join(", "))]
    UnknownScope(String),
    /// `rate_per_sec` or `burst` is not a positive number.
    #[error("rate_per_sec (and burst) must be positive numbers")]
    Rate,
}

/// The configured keys, or none (open mode).
pub struct KeyRing {
    entries: Option<Vec<KeyEntry>>,
    /// Verifies end users' tokens (HS256), when configured.
    user_secret: Option<UserTokens>,
}

/// How end users' tokens are checked: the key, and the rules (HS256; `exp`
/// and `sub` required; `exp` and `nbf` checked with an explicit leeway).
struct UserTokens {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

impl KeyRing {
    /// No keys: every call is anonymous and allowed.
    pub fn open() -> Self {
        Self {
            entries: None,
            user_secret: None,
        }
    }

    /// Whether calls are checked.
    pub fn is_open(&self) -> bool {
        self.entries.is_none()
    }

    /// Loads a keys file; the error names the file and the problem.
    pub fn load(path: &Path) -> Result<Self, LoadError<KeysError>> {
        crate::loading::load(path, Self::parse)
    }

    /// Reads `{"keys": [{"client_id": "...", "key_sha256": "<hex>", "scopes": [...]}]}`.
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        let root: Value = serde_json::from_str(text)?;
        let keys = root
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(KeysError::Shape)?;
        let mut entries = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            let field = |name: &str| key.get(name).and_then(Value::as_str);
            let client_id = field("client_id")
                .filter(|c| !c.trim().is_empty())
                .ok_or(KeysError::NoClientId { index })?;
            let wrong = |problem: KeyProblem| KeysError::Entry {
                index,
                client_id: client_id.to_owned(),
                problem,
            };
            let hash = field("key_sha256")
                .and_then(parse_hash)
                .ok_or_else(|| wrong(KeyProblem::Hash))?;
            let scopes = key
                .get("scopes")
                .and_then(Value::as_array)
                .ok_or_else(|| wrong(KeyProblem::ScopesNotAList))?
                .iter()
                .map(|s| {
                    s.as_str()
                        .and_then(Scope::parse)
                        .ok_or_else(|| wrong(KeyProblem::UnknownScope(s.to_string())))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let number = |name: &str| key.get(name).map(|v| v.as_f64().filter(|n| *n > 0.0));
            let rate = match (number("rate_per_sec"), number("burst")) {
                (None, None) => None,
                (Some(Some(per_sec)), burst) => Some(Rate {
                    per_sec,
                    burst: burst.flatten().unwrap_or(per_sec).max(1.0),
                }),
                _ => return Err(wrong(KeyProblem::Rate)),
            };
            entries.push(KeyEntry {
                hash,
                identity: Identity {
                    client_id: client_id.to_owned(),
                    scopes,
                    rate,
                    user: None,
                },
            });
        }
        if entries.is_empty() {
            return Err(KeysError::Empty);
        }
        Ok(Self {
            entries: Some(entries),
            user_secret: None,
        })
    }

    /// The same ring, also accepting end users' tokens signed (HS256) with
    /// `secret`, whose `exp` and `nbf` may be off by at most `leeway` (clock
    /// skew between the signer and this server).
    pub fn with_user_secret(mut self, secret: &str, leeway: std::time::Duration) -> Self {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        self.user_secret = Some(UserTokens {
            key: jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
            validation,
        });
        self
    }

    /// The user a token names (`sub`), if it is a valid, unexpired token
    /// signed with the user-token secret.
    fn user_of(&self, token: &str) -> Result<Option<String>, Status> {
        let Some(tokens) = &self.user_secret else {
            return Ok(None);
        };
        if token.split('.').count() != 3 {
            return Ok(None);
        }
        let data =
            jsonwebtoken::decode::<Value>(token, &tokens.key, &tokens.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                Status::unauthenticated(match e.kind() {
                    ErrorKind::ExpiredSignature => "expired user token".to_owned(),
                    ErrorKind::ImmatureSignature => "user token not valid yet (nbf)".to_owned(),
                    ErrorKind::InvalidSignature => {
                        "invalid user token: its signature does not match (was it signed with \
                         the logger's --user-token-secret?)"
                            .to_owned()
                    }
                    ErrorKind::InvalidAlgorithm => {
                        "invalid user token: it must be signed with HS256".to_owned()
                    }
                    ErrorKind::MissingRequiredClaim(claim) => {
                        format!(
                            "invalid user token: it has no {} claim",
                            claim.escape_debug()
                        )
                    }
                    _ => "invalid user token: not a well-formed JWT".to_owned(),
                })
            })?;
        match data.claims.get("sub").and_then(Value::as_str) {
            Some(user) if !user.is_empty() => Ok(Some(user.to_owned())),
            _ => Err(Status::unauthenticated("user token without a sub claim")),
        }
    }

    /// A ring holding one fresh key only, for a component inside this process
    /// (the embedded worker), and that key.
    pub fn internal(
        client_id: &str,
        scopes: Vec<Scope>,
    ) -> Result<(Self, String), getrandom::Error> {
        let key = generate_key()?;
        let hash = parse_hash(&hash_key(&key)).expect("hash_key gives 64 hex digits");
        let entry = KeyEntry {
            hash,
            identity: Identity {
                client_id: client_id.to_owned(),
                scopes,
                rate: None,
                user: None,
            },
        };
        let ring = Self {
            entries: Some(vec![entry]),
            user_secret: None,
        };
        Ok((ring, key))
    }

    /// The identity of a presented key. Every entry is compared, in constant
    /// time, so timing tells nothing about which hashes exist.
    fn identify(&self, key: &str) -> Option<Identity> {
        let presented = parse_hash(&hash_key(key))?;
        let mut found = None;
        for entry in self.entries.as_deref().unwrap_or_default() {
            let diff = entry
                .hash
                .iter()
                .zip(presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(entry.identity.clone());
            }
        }
        found
    }

    /// Who is calling the gRPC method `path` with these headers, if
    /// allowed: the same decision the auth layer makes (rate limits aside),
    /// for callers that are not gRPC calls (the console's routes).
    pub(crate) fn check(&self, path: &str, headers: &http::HeaderMap) -> Result<Identity, Status> {
        self.check_access(path, access_for(path), headers)
    }

    /// Who is calling `path`, a method anyone may call or one that needs a
    /// scope (`None`: a method Herald does not serve, refused).
    pub(super) fn check_access(
        &self,
        path: &str,
        access: Option<Access>,
        headers: &http::HeaderMap,
    ) -> Result<Identity, Status> {
        let scope = match access {
            None => return Err(Status::unimplemented("no such method")),
            Some(Access::Open) if !self.is_open() => {
                return Ok(Identity::anonymous(Vec::new()));
            }
            Some(Access::Open) => return self.authenticate(headers),
            Some(Access::Needs(scope)) => scope,
        };
        if self.is_open() {
            return self.authenticate(headers);
        }
        let identity = self.authenticate(headers)?;
        if let Some(user) = identity.user {
            return user_may_call(user, path, scope);
        }
        if identity.allows(scope) {
            Ok(identity)
        } else {
            Err(Status::permission_denied(format!(
                "client {} lacks the scope {scope}",
                identity.client_id
            )))
        }
    }

    /// Who presents these headers, whatever they may call: in open mode an
    /// anonymous caller allowed everything; otherwise the identity of the
    /// `authorization: Bearer` key, or of an end user's token (no scopes,
    /// its user set).
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<Identity, Status> {
        if self.is_open() {
            return Ok(Identity::anonymous(vec![Scope::Admin]));
        }
        let key = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("missing credentials: send authorization: Bearer <key>")
            })?;
        let key = key.trim();
        match self.identify(key) {
            Some(identity) => Ok(identity),
            None => match self.user_of(key)? {
                Some(user) => Ok(Identity::end_user(user)),
                None => Err(Status::unauthenticated("unknown API key")),
            },
        }
    }
}

/// An end user may only Subscribe, UpdateStatus, use the Inbox and read
/// and set their preferences (named methods, not scopes, so a new method
/// is closed to them until allowed here), and the handlers then hold them
/// to their own notifications, inbox and preferences, and to marking their
/// own events OPENED.
fn user_may_call(user: String, path: &str, scope: Scope) -> Result<Identity, Status> {
    use herald::pb::Rpc;
    match Rpc::from_path(path) {
        Some(
            Rpc::Subscribe
            | Rpc::UpdateStatus
            | Rpc::ListInbox
            | Rpc::GetUnreadCount
            | Rpc::MarkRead
            | Rpc::GetPreferences
            | Rpc::SetPreferences,
        ) => Ok(Identity::end_user(user)),
        _ => Err(Status::permission_denied(format!(
            "user tokens may only subscribe to their own notifications, read their own inbox, \
             mark their own events opened and read and set their own preferences; this call \
             needs the scope {scope}"
        ))),
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
