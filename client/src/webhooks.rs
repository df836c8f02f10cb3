//! Signed webhooks, the Standard Webhooks way: what a processor's webhook
//! channel sends, and what a receiver checks.
//!
//! Each delivery carries three headers: `webhook-id` (the same on every
//! retry of one event to one endpoint: receivers drop repeats by it),
//! `webhook-timestamp` (Unix seconds when it was sent) and
//! `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of
//! `{id}.{timestamp}.{body}`, keyed with the secret's bytes (a secret is
//! `whsec_` and their base64). While a secret is rotated the header holds
//! one signature per secret, separated by spaces; any one that matches will
//! do.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use herald_client::webhooks::{self, Secret};
//!
//! let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let body = br#"{"event_id":"..."}"#;
//! let now = SystemTime::now();
//! let headers = webhooks::headers("msg_1", now, &[secret], body);
//! webhooks::verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &headers, body, Duration::from_secs(300))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;

/// The header naming the message: stable across retries of one event to one endpoint.
pub const ID: &str = "webhook-id";
/// The header holding when the message was sent, in Unix seconds.
pub const TIMESTAMP: &str = "webhook-timestamp";
/// The header holding the signatures, `v1,<base64>` separated by spaces.
pub const SIGNATURE: &str = "webhook-signature";
/// How far a receiver lets a message's timestamp be from its own clock,
/// unless it says otherwise (the Standard Webhooks default).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// The prefix of every secret.
const SECRET_PREFIX: &str = "whsec_";

/// Why a secret or a message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The secret is not `whsec_` and base64.
    #[error("a webhook secret is `whsec_` followed by base64 (of at least 16 bytes)")]
    BadSecret,
    /// A header is missing or not text.
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not a whole number of seconds.
    #[error("header webhook-timestamp is not Unix seconds")]
    BadTimestamp,
    /// The message was sent too long ago, or too far in the future.
    #[error("the message's timestamp is {0} s away from now, past the tolerance")]
    OutsideTolerance(u64),
    /// No signature in `webhook-signature` matches the body.
    #[error("no signature matches")]
    NoMatch,
}

/// A webhook secret: the key bytes behind `whsec_...`.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Reads `whsec_` and base64 (at least 16 bytes of key).
    ///
    /// ```
    /// assert!(herald_client::webhooks::Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
    /// assert!(herald_client::webhooks::Secret::parse("hunter2").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, WebhookError> {
        let key = text
            .strip_prefix(SECRET_PREFIX)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .filter(|key| key.len() >= 16)
            .ok_or(WebhookError::BadSecret)?;
        Ok(Self(key))
    }

    /// The signature of a message, `v1,` and base64.
    ///
    /// ```
    /// use herald_client::webhooks::Secret;
    /// // The Standard Webhooks specification's own example.
    /// let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    /// assert_eq!(
    ///     secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#),
    ///     "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    /// );
    /// ```
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            STANDARD.encode(self.mac(id, timestamp, body).finalize().into_bytes())
        )
    }

    fn mac(&self, id: &str, timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// Whether `signature` (`v1,` and base64) signs the message with this
    /// secret, compared in constant time.
    fn signs(&self, signature: &str, id: &str, timestamp: u64, body: &[u8]) -> bool {
        signature
            .strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .is_some_and(|bytes| self.mac(id, timestamp, body).verify_slice(&bytes).is_ok())
    }
}

/// Unix seconds of `at` (0 before 1970).
fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The three headers of message `id` sent at `at`, signed with each of
/// `secrets` (more than one while a secret is rotated).
pub fn headers(id: &str, at: SystemTime, secrets: &[Secret], body: &[u8]) -> HeaderMap {
    let timestamp = unix_seconds(at);
    let signatures: Vec<String> = secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect();
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (ID, id.to_owned()),
        (TIMESTAMP, timestamp.to_string()),
        (SIGNATURE, signatures.join(" ")),
    ] {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
    headers
}

/// Checks a received message: its timestamp is within `tolerance` of now,
/// and one of its signatures is `secret`'s (`whsec_...`) of its id,
/// timestamp and `body` (the raw bytes received, before any parsing).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use herald_client::webhooks::{self, Secret, WebhookError};
///
/// let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// let headers = webhooks::headers("msg_1", SystemTime::now(), &[Secret::parse(secret)?], b"{}");
/// assert_eq!(webhooks::verify(secret, &headers, b"{}", Duration::from_secs(300)), Ok(()));
/// assert_eq!(webhooks::verify(secret, &headers, b"{ }", Duration::from_secs(300)), Err(WebhookError::NoMatch));
/// # Ok::<(), WebhookError>(())
/// ```
pub fn verify(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    tolerance: Duration,
) -> Result<(), WebhookError> {
    let secret = Secret::parse(secret)?;
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(WebhookError::MissingHeader(name))
    };
    let (id, timestamp, signatures) = (header(ID)?, header(TIMESTAMP)?, header(SIGNATURE)?);
    let timestamp: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookError::BadTimestamp)?;
    let now = unix_seconds(SystemTime::now());
    let away = now.abs_diff(timestamp);
    if away > tolerance.as_secs() {
        return Err(WebhookError::OutsideTolerance(away));
    }
    if signatures
        .split(' ')
        .any(|s| secret.signs(s, id, timestamp, body))
    {
        Ok(())
    } else {
        Err(WebhookError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn rotated_secrets_each_verify_and_stale_or_tampered_messages_do_not() {
        let old = Secret::parse(SECRET).expect("secret");
        let new_text = format!("whsec_{}", STANDARD.encode([7u8; 32]));
        let new = Secret::parse(&new_text).expect("secret");
        let now = SystemTime::now();
        let both = headers("msg_x", now, &[new, old], b"body");
        let tolerance = DEFAULT_TOLERANCE;
        assert_eq!(verify(SECRET, &both, b"body", tolerance), Ok(()));
        assert_eq!(verify(&new_text, &both, b"body", tolerance), Ok(()));
        let other = format!("whsec_{}", STANDARD.encode([8u8; 32]));
        assert_eq!(
            verify(&other, &both, b"body", tolerance),
            Err(WebhookError::NoMatch)
        );
        assert_eq!(
            verify(SECRET, &both, b"bodY", tolerance),
            Err(WebhookError::NoMatch)
        );

        let old_secret = Secret::parse(SECRET).expect("secret");
        let stale = headers(
            "msg_x",
            now - Duration::from_secs(301),
            std::slice::from_ref(&old_secret),
            b"b",
        );
        assert!(matches!(
            verify(SECRET, &stale, b"b", tolerance),
            Err(WebhookError::OutsideTolerance(301..=303))
        ));
        let future = headers("msg_x", now + Duration::from_secs(400), &[old_secret], b"b");
        assert!(matches!(
            verify(SECRET, &future, b"b", tolerance),
            Err(WebhookError::OutsideTolerance(_))
        ));

        let mut missing = both.clone();
        missing.remove(SIGNATURE);
        assert_eq!(
            verify(SECRET, &missing, b"body", tolerance),
            Err(WebhookError::MissingHeader(SIGNATURE))
        );
        let mut garbled = both;
        garbled.insert(TIMESTAMP, HeaderValue::from_static("soon"));
        assert_eq!(
            verify(SECRET, &garbled, b"body", tolerance),
            Err(WebhookError::BadTimestamp)
        );
        assert_eq!(
            verify("whsec_", &garbled, b"body", tolerance),
            Err(WebhookError::BadSecret)
        );
        assert!(
            Secret::parse("whsec_c2hvcnQ=").is_err(),
            "5 bytes of key is too short"
        );
    }
}
