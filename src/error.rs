//! The one error type of Herald's core, and how it maps onto gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

use crate::domain::{EventStatus, FieldViolation};

/// Result with Herald's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in Herald's core.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: one violation per problem, each naming its field.
    #[error("invalid argument: {}", join(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// No event with this id.
    #[error("event {0} not found")]
    NotFound(Uuid),
    /// The lifecycle forbids this status change.
    #[error("event cannot move from {from} to {to}")]
    InvalidTransition {
        /// The status the event has.
        from: EventStatus,
        /// The status that was asked for.
        to: EventStatus,
    },
    /// The storage backend cannot be reached; retrying later may work.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The storage holds another deployment's layout (another number of
    /// partitions, an older layout): this process must not use it.
    #[error("storage refused: {0}")]
    Misconfigured(String),
    /// A bug or an unexpected state; details are logged, never sent to clients.
    #[error("internal error: {0}")]
    Internal(String),
}

fn join(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// An INVALID_ARGUMENT error with a single field violation.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The field violations of an INVALID_ARGUMENT error (empty for others).
    pub fn into_violations(self) -> Vec<FieldViolation> {
        match self {
            Self::InvalidArgument(v) => v,
            _ => Vec::new(),
        }
    }
}

impl Error {
    /// This error as a `google.rpc.Status` message, as batch responses carry
    /// it per item (with the same code, message and field violations).
    pub fn into_rpc_status(self) -> tonic_types::pb::Status {
        use prost::Message;
        let status = Status::from(self);
        let plain = || tonic_types::pb::Status {
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: Vec::new(),
        };
        // With details, tonic's status carries exactly this message, encoded.
        match status.details() {
            [] => plain(),
            details => tonic_types::pb::Status::decode(details).unwrap_or_else(|_| plain()),
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(violations) => {
                let (kept, dropped) = bounded(violations);
                let mut details = ErrorDetails::new();
                for v in &kept {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                let mut message = format!("invalid argument: {}", join(&kept));
                if dropped > 0 {
                    message.push_str(&format!(" (and {dropped} more)"));
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound(_) => Status::not_found(err.to_string()),
            Error::InvalidTransition { .. } => Status::failed_precondition(err.to_string()),
            Error::Unavailable(_) => Status::unavailable(truncate(&err.to_string(), MAX_TEXT)),
            Error::Misconfigured(_) => {
                Status::failed_precondition(truncate(&err.to_string(), MAX_TEXT))
            }
            Error::Internal(details) => {
                tracing::error!(%details, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// Most bytes of field names and descriptions one error carries in all; the
/// rest of its violations are counted, not sent. With the message repeating
/// them, an encoded error stays under [`MAX_ERROR_BYTES`].
const MAX_VIOLATION_BYTES: usize = 320;
/// Longest field name sent in a violation.
const MAX_FIELD: usize = 96;
/// Longest description sent in a violation, or message of another error.
const MAX_TEXT: usize = 192;

/// Most bytes one error takes as an encoded `google.rpc.Status` (message and
/// details); batch responses count on it to fit every item's result.
pub const MAX_ERROR_BYTES: usize = 960;

/// The violations an error sends, each shortened, while they fit in
/// [`MAX_VIOLATION_BYTES`]; and how many were left out.
fn bounded(violations: Vec<FieldViolation>) -> (Vec<FieldViolation>, usize) {
    let total = violations.len();
    let mut used = 0;
    let kept: Vec<FieldViolation> = violations
        .into_iter()
        .map(|v| FieldViolation {
            field: truncate(&v.field, MAX_FIELD),
            description: truncate(&v.description, MAX_TEXT),
        })
        .take_while(|v| {
            used += v.field.len() + v.description.len() + 2;
            used <= MAX_VIOLATION_BYTES
        })
        .collect();
    let dropped = total - kept.len();
    (kept, dropped)
}

/// `text` cut to at most `max` bytes (at a character boundary), marked with
/// an ellipsis where it was cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A client's value, quoted for an error message: escaped, and no more than
/// a short prefix of it (with its length) when it is long, so that errors
/// stay small whatever was sent.
pub fn quote(value: &str) -> String {
    const PREFIX_CHARS: usize = 40;
    let escaped: String = value
        .chars()
        .take(PREFIX_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().nth(PREFIX_CHARS).is_some() {
        format!("\"{escaped}…\" ({} bytes)", value.len())
    } else {
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn quotes_are_short_and_escaped() {
        assert_eq!(quote("abc"), "\"abc\"");
        assert_eq!(quote("a\nb\u{202e}"), "\"a\\nb\\u{202e}\"");
        let long = "x".repeat(1_000_000);
        let quoted = quote(&long);
        assert!(quoted.len() < 80, "{quoted}");
        assert!(quoted.ends_with("(1000000 bytes)"), "{quoted}");
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 100), "héllo");
        let cut = truncate(&"é".repeat(100), 11);
        assert!(cut.len() <= 11 && cut.ends_with('…'), "{cut}");
    }

    #[test]
    fn any_invalid_argument_encodes_under_the_error_bound() {
        for (n, field, description) in [
            (1, 10_000, 10_000),
            (5_000, 3, 3),
            (300, 200, 500),
            (2, 95, 191),
        ] {
            let violations = (0..n)
                .map(|i| {
                    FieldViolation::new(
                        format!("{i}{}", "f".repeat(field)),
                        "é".repeat(description),
                    )
                })
                .collect();
            let status = Error::InvalidArgument(violations).into_rpc_status();
            let size = status.encoded_len();
            assert!(size <= MAX_ERROR_BYTES, "{n} violations: {size} bytes");
            assert!(status.message.starts_with("invalid argument: "));
        }
    }
}
