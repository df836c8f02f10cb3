//! End users' tokens: what an application's back end gives each of its users
//! so that the user's app may follow that user's notifications (and mark
//! them OPENED) without an API key.
//!
//! A token is a JWT signed with HS256 under the secret the logger was given
//! as `--user-token-secret`, with `sub` the user id and `exp` its expiry; the
//! logger refuses it for anything but its own user. The app sends it where an
//! API key would go: `authorization: Bearer <token>`, or
//! [`Client::with_api_key`](crate::Client::with_api_key).
//!
//! ```
//! use std::time::Duration;
//!
//! let token = herald_client::tokens::user_token(
//!     "a-secret-of-at-least-16-bytes",
//!     "alice",
//!     Duration::from_secs(3600),
//! )
//! .expect("a long enough secret and a valid user id");
//! assert_eq!(token.token.split('.').count(), 3);
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Error;

/// A signed token for one user, and when it stops being accepted.
#[derive(Clone, Debug)]
pub struct UserToken {
    /// The JWT, to send as `authorization: Bearer <token>`.
    pub token: String,
    /// Its `exp`, to the second.
    pub expires_at: SystemTime,
}

/// Signs a token for `user_id`, valid for `ttl` from now, with `secret` (the
/// logger's `--user-token-secret`). Refuses, as [`Error::Setup`], a secret
/// the logger would refuse and a user id no event could carry.
pub fn user_token(secret: &str, user_id: &str, ttl: Duration) -> Result<UserToken, Error> {
    herald::auth::check_user_token_secret(secret)
        .map_err(|why| Error::Setup(format!("user token secret {why}")))?;
    if let Some(v) = herald::domain::check_user_id("user_id", user_id) {
        return Err(Error::Setup(format!("{}: {}", v.field, v.description)));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::Setup("the clock is before 1970".into()))?
        .as_secs();
    let exp = now.saturating_add(ttl.as_secs().max(1));
    let claims = serde_json::json!({ "sub": user_id, "iat": now, "exp": exp });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(UserToken {
        token: format!("{signing_input}.{signature}"),
        expires_at: UNIX_EPOCH + Duration::from_secs(exp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-of-enough-length";

    fn claims(token: &str) -> serde_json::Value {
        let part = token.split('.').nth(1).expect("three parts");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
    }

    #[test]
    fn names_the_user_and_expires_after_the_ttl() {
        let token = user_token(SECRET, "alice", Duration::from_secs(3600)).expect("token");
        let claims = claims(&token.token);
        assert_eq!(claims["sub"], "alice");
        let (iat, exp) = (
            claims["iat"].as_u64().expect("a number"),
            claims["exp"].as_u64().expect("a number"),
        );
        assert_eq!(exp - iat, 3600);
        assert_eq!(
            token.expires_at,
            UNIX_EPOCH + Duration::from_secs(exp),
            "expires_at is the exp claim"
        );
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_header_and_claims() {
        let token = user_token(SECRET, "alice", Duration::from_secs(60)).expect("token");
        let (input, signature) = token.token.rsplit_once('.').expect("three parts");
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key");
        mac.update(input.as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).expect("base64url"))
            .expect("signed with the secret");
        let other = user_token("another-secret-of-length", "alice", Duration::from_secs(60));
        assert_ne!(
            other
                .expect("token")
                .token
                .rsplit_once('.')
                .expect("three parts")
                .1,
            signature
        );
    }

    #[test]
    fn refuses_what_the_logger_would_refuse() {
        let short = user_token("too-short", "alice", Duration::from_secs(60)).expect_err("refused");
        assert_eq!(
            short.to_string(),
            "user token secret must be at least 16 bytes, got 9"
        );
        let blank = user_token(SECRET, " ", Duration::from_secs(60)).expect_err("refused");
        assert_eq!(
            blank.to_string(),
            "user_id: is required and must not be blank"
        );
        let long =
            user_token(SECRET, &"u".repeat(257), Duration::from_secs(60)).expect_err("refused");
        assert!(
            long.to_string()
                .starts_with("user_id: must be at most 256 bytes")
        );
    }
}
