//! The signed links an email carries: unsubscribe (RFC 8058 one-click: an
//! opt-out of that channel for the event's category) and the open pixel
//! (its first fetch marks the event OPENED). A processor's email channel
//! signs them and the logger's end users' listener checks them, with one
//! secret both are given; nothing else about them is stored, and a link
//! cannot be altered to name another user, event or opt-out.
//!
//! A token is hex: a version byte, the kind, each field length-prefixed,
//! then the first 16 bytes of an HMAC-SHA256 of all that.

use hmac::{Hmac, Mac};
use uuid::Uuid;

use crate::domain::OptOut;

/// The tokens' format.
const VERSION: u8 = 1;
/// What a link does.
const UNSUBSCRIBE: u8 = b'u';
const OPEN: u8 = b'o';
/// Bytes of the MAC kept in a token.
const MAC_BYTES: usize = 16;
/// Longest token accepted, in hex digits (a user id and three
/// identifiers at their longest).
pub const MAX_TOKEN_CHARS: usize = 2 * (2 + 4 * (2 + 256) + MAC_BYTES);

/// What a checked link asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Add this opt-out to `user`'s preferences.
    Unsubscribe {
        /// Whose.
        user: String,
        /// What they opt out of.
        opt_out: OptOut,
    },
    /// `user` opened the message of event `event_id`.
    Open {
        /// The event.
        event_id: Uuid,
        /// Its user.
        user: String,
    },
}

/// Signs and checks links with one secret.
#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner(..)")
    }
}

impl LinkSigner {
    /// A signer with `secret` (see [`crate::auth::check_user_token_secret`]
    /// for how long it must be).
    pub fn new(secret: &str) -> Self {
        Self {
            key: secret.as_bytes().to_vec(),
        }
    }

    /// The token of `link`.
    pub fn sign(&self, link: &Link) -> String {
        let mut bytes = vec![VERSION];
        match link {
            Link::Unsubscribe { user, opt_out } => {
                bytes.push(UNSUBSCRIBE);
                for field in [
                    user,
                    &opt_out.channel,
                    &opt_out.category,
                    &opt_out.event_type,
                ] {
                    push_field(&mut bytes, field.as_bytes());
                }
            }
            Link::Open { event_id, user } => {
                bytes.push(OPEN);
                push_field(&mut bytes, event_id.as_bytes());
                push_field(&mut bytes, user.as_bytes());
            }
        }
        let mac = self.mac(&bytes);
        bytes.extend_from_slice(&mac);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The link `token` stands for, if this secret signed it unaltered.
    pub fn verify(&self, token: &str) -> Option<Link> {
        if token.len() > MAX_TOKEN_CHARS || !token.len().is_multiple_of(2) {
            return None;
        }
        let bytes: Vec<u8> = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        let (body, mac) = bytes.split_at(bytes.len().checked_sub(MAC_BYTES)?);
        let expected = self.mac(body);
        // Constant time: a forger learns nothing from how long it took.
        let diff = expected
            .iter()
            .zip(mac)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 || body.first() != Some(&VERSION) {
            return None;
        }
        let mut fields = Fields(body.get(2..)?);
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).ok();
        let link = match *body.get(1)? {
            UNSUBSCRIBE => Link::Unsubscribe {
                user: text(fields.next()?)?,
                opt_out: OptOut {
                    channel: text(fields.next()?)?,
                    category: text(fields.next()?)?,
                    event_type: text(fields.next()?)?,
                },
            },
            OPEN => Link::Open {
                event_id: Uuid::from_slice(fields.next()?).ok()?,
                user: text(fields.next()?)?,
            },
            _ => return None,
        };
        fields.0.is_empty().then_some(link)
    }

    fn mac(&self, bytes: &[u8]) -> [u8; MAC_BYTES] {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key).expect("any key");
        mac.update(b"herald-link");
        mac.update(bytes);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_BYTES];
        out.copy_from_slice(&full[..MAC_BYTES]);
        out
    }
}

/// Appends `field`, prefixed with its length (two bytes).
fn push_field(bytes: &mut Vec<u8>, field: &[u8]) {
    let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(&field[..usize::from(len)]);
}

/// The length-prefixed fields of a token, in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(u16::from_be_bytes(self.0.get(..2)?.try_into().ok()?));
        let field = self.0.get(2..2 + len)?;
        self.0 = &self.0[2 + len..];
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_and_any_change_breaks_them() {
        let signer = LinkSigner::new("a-secret-of-some-length");
        let links = [
            Link::Unsubscribe {
                user: "ann".into(),
                opt_out: OptOut {
                    channel: "email".into(),
                    category: "marketing".into(),
                    ..OptOut::default()
                },
            },
            Link::Open {
                event_id: Uuid::now_v7(),
                user: "ann".into(),
            },
        ];
        for link in links {
            let token = signer.sign(&link);
            assert_eq!(signer.verify(&token), Some(link.clone()));
            assert_eq!(
                LinkSigner::new("another-secret-entirely").verify(&token),
                None
            );
            // Flip each hex digit in turn: no altered token passes.
            for i in 0..token.len() {
                let mut altered = token.clone().into_bytes();
                altered[i] = if altered[i] == b'0' { b'1' } else { b'0' };
                let altered = String::from_utf8(altered).expect("hex");
                assert_eq!(signer.verify(&altered), None, "digit {i}");
            }
        }
        for junk in ["", "zz", "01", &"ab".repeat(MAX_TOKEN_CHARS)] {
            assert_eq!(signer.verify(junk), None);
        }
    }
}
