//! Single-use tickets: what a browser's `EventSource`, which cannot send
//! headers, presents in a URL instead of the user's token.
//!
//! A ticket is `<payload>.<mac>` in unpadded base64url: the payload is when
//! it expires (milliseconds since the epoch, 8 bytes), a random nonce (16
//! bytes) and the user id; the mac is its HMAC-SHA256 under a key derived
//! from `--user-token-secret`, so every logger sharing the secret can check
//! a ticket any of them issued. A ticket is checked first
//! ([`Tickets::check`]) and spent only once its stream is open
//! ([`Tickets::spend`]), so a request refused for another reason leaves it
//! usable; a spent ticket's nonce is kept until the ticket expires, so it
//! opens one stream only (on this logger: see [`Tickets::spend`]).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tonic::Status;

/// The nonce of a ticket.
type Nonce = [u8; 16];

/// Bytes of the payload before the user id: expiry and nonce.
const HEAD: usize = 8 + 16;

/// The longest ticket accepted, in characters (a user id is at most 256
/// bytes): anything longer is refused before it is decoded.
const MAX_TICKET_CHARS: usize = 1024;

/// Issues and redeems tickets.
pub struct Tickets {
    key: [u8; 32],
    ttl: Duration,
    /// Nonces of redeemed tickets, with when each ticket expires.
    redeemed: Mutex<Redeemed>,
}

#[derive(Default)]
struct Redeemed {
    nonces: HashMap<Nonce, SystemTime>,
    /// The size at which expired nonces are next swept out.
    sweep_at: usize,
}

/// What a checked ticket stands for, until it is spent.
#[derive(Debug)]
pub struct Claim {
    nonce: Nonce,
    expires: SystemTime,
    /// The user it opens a stream of.
    pub user: String,
}

/// Why a ticket used before opens nothing.
fn used() -> Status {
    Status::unauthenticated(
        "ticket: already used: a ticket opens one stream; get a new one with POST /v1/tickets",
    )
}

/// A ticket just issued.
#[derive(Debug)]
pub struct Issued {
    /// The ticket, for a URL's query string.
    pub ticket: String,
    /// How long it stays valid.
    pub expires_in: Duration,
}

impl Tickets {
    /// Tickets signed with a key derived from `secret` (the user-token
    /// secret), each valid for `ttl`.
    pub fn new(secret: &str, ttl: Duration) -> Self {
        let key = Sha256::new()
            .chain_update(b"herald event-stream ticket v1\0")
            .chain_update(secret.as_bytes())
            .finalize()
            .into();
        Self {
            key,
            ttl,
            redeemed: Mutex::new(Redeemed {
                sweep_at: 1024,
                ..Redeemed::default()
            }),
        }
    }

    /// A fresh ticket for `user`.
    pub fn issue(&self, user: &str) -> Result<Issued, Status> {
        let expires = SystemTime::now() + self.ttl;
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| Status::internal(format!("no randomness: {e}")))?;
        let mut payload = Vec::with_capacity(HEAD + user.len());
        payload.extend_from_slice(&millis(expires).to_be_bytes());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(user.as_bytes());
        let mac = self.mac(&payload).finalize().into_bytes();
        Ok(Issued {
            ticket: format!("{}.{}", B64.encode(&payload), B64.encode(mac)),
            expires_in: self.ttl,
        })
    }

    /// What `ticket` claims, if it is one this deployment issued, unexpired
    /// and not redeemed before. Nothing is spent: a request refused for
    /// another reason leaves its ticket usable; [`Self::spend`] redeems it.
    pub fn check(&self, ticket: &str) -> Result<Claim, Status> {
        let invalid = |why: &str| Status::unauthenticated(format!("ticket: {why}"));
        if ticket.len() > MAX_TICKET_CHARS {
            return Err(invalid("too long to be a ticket"));
        }
        let (payload, mac) = ticket
            .split_once('.')
            .and_then(|(p, m)| Some((B64.decode(p).ok()?, B64.decode(m).ok()?)))
            .ok_or_else(|| invalid("not a ticket (get one with POST /v1/tickets)"))?;
        self.mac(&payload)
            .verify_slice(&mac)
            .map_err(|_| invalid("not issued by this deployment"))?;
        if payload.len() <= HEAD {
            return Err(invalid("not a ticket"));
        }
        let expires = UNIX_EPOCH
            + Duration::from_millis(u64::from_be_bytes(
                payload[..8].try_into().expect("8 bytes"),
            ));
        if expires <= SystemTime::now() {
            return Err(invalid("expired; get a new one with POST /v1/tickets"));
        }
        let claim = Claim {
            nonce: payload[8..HEAD].try_into().expect("16 bytes"),
            expires,
            user: String::from_utf8(payload[HEAD..].to_vec())
                .map_err(|_| invalid("not a ticket"))?,
        };
        if self.lock().nonces.contains_key(&claim.nonce) {
            return Err(used());
        }
        Ok(claim)
    }

    /// Redeems a checked ticket: it cannot be redeemed again. A nonce is
    /// remembered by this logger only: behind a balancer, a ticket seen in
    /// transit could open one stream on each other logger within its
    /// seconds of life (keep `--ticket-ttl` short).
    pub fn spend(&self, claim: &Claim) -> Result<(), Status> {
        let mut redeemed = self.lock();
        if redeemed.nonces.insert(claim.nonce, claim.expires).is_some() {
            return Err(used());
        }
        if redeemed.nonces.len() >= redeemed.sweep_at {
            let now = SystemTime::now();
            redeemed.nonces.retain(|_, expires| *expires > now);
            redeemed.sweep_at = (redeemed.nonces.len() * 2).max(1024);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Redeemed> {
        self.redeemed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(payload);
        mac
    }
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Tickets {
        /// Checks and spends `ticket` at once.
        fn redeem(&self, ticket: &str) -> Result<String, Status> {
            let claim = self.check(ticket)?;
            self.spend(&claim)?;
            Ok(claim.user)
        }
    }

    #[test]
    fn a_ticket_opens_once_for_its_user_only() {
        let tickets = Tickets::new("a secret of sixteen bytes", Duration::from_secs(30));
        let issued = tickets.issue("ann").expect("issued");
        assert_eq!(issued.expires_in, Duration::from_secs(30));
        assert_eq!(tickets.redeem(&issued.ticket).expect("valid"), "ann");
        let again = tickets.redeem(&issued.ticket).expect_err("used");
        assert_eq!(again.code(), tonic::Code::Unauthenticated);
        assert!(again.message().contains("already used"), "{again:?}");
        // Checked but not spent: still good, and only one spend wins.
        let issued = tickets.issue("bob").expect("issued");
        let (one, two) = (
            tickets.check(&issued.ticket).expect("checked"),
            tickets.check(&issued.ticket).expect("checked again"),
        );
        tickets.spend(&one).expect("spent");
        assert!(tickets.spend(&two).is_err(), "spent once only");
    }

    #[test]
    fn forged_foreign_expired_and_malformed_tickets_are_refused() {
        let tickets = Tickets::new("a secret of sixteen bytes", Duration::from_secs(30));
        let other = Tickets::new("another secret, also long", Duration::from_secs(30));
        let foreign = other.issue("ann").expect("issued").ticket;
        let refused = |ticket: &str| {
            tickets
                .redeem(ticket)
                .expect_err(ticket)
                .message()
                .to_owned()
        };
        assert!(refused(&foreign).contains("not issued"));
        // The user swapped: the mac no longer matches.
        let issued = tickets.issue("ann").expect("issued").ticket;
        let (payload, mac) = issued.split_once('.').expect("two parts");
        let mut bytes = B64.decode(payload).expect("base64");
        let last = bytes.len() - 1;
        bytes[last] = b'x';
        assert!(refused(&format!("{}.{mac}", B64.encode(&bytes))).contains("not issued"));
        for junk in ["", ".", "abc", "a.b.c", "%%%.%%%", &"a".repeat(5000)] {
            refused(junk);
        }
        let expired = Tickets::new("a secret of sixteen bytes", Duration::ZERO)
            .issue("ann")
            .expect("issued")
            .ticket;
        assert!(refused(&expired).contains("expired"));
    }

    #[test]
    fn redeemed_nonces_are_forgotten_once_expired() {
        let tickets = Tickets::new("a secret of sixteen bytes", Duration::from_millis(20));
        for _ in 0..1100 {
            let ticket = tickets.issue("ann").expect("issued").ticket;
            tickets.redeem(&ticket).expect("valid");
        }
        std::thread::sleep(Duration::from_millis(30));
        for _ in 0..1100 {
            let ticket = tickets.issue("ann").expect("issued").ticket;
            tickets.redeem(&ticket).expect("valid");
        }
        let kept = tickets.redeemed.lock().expect("lock").nonces.len();
        assert!(kept < 2200, "expired nonces were swept: {kept} kept");
    }
}
