//! The client's error type.

use std::time::Duration;

use herald::FieldViolation;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// What a call through [`crate::Client`] can fail with.
///
/// ```no_run
/// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
/// use herald_client::EventInput;
/// use tonic::Code;
///
/// match client.create(EventInput::default()).await {
///     Err(err) if err.code() == Code::InvalidArgument => {
///         for v in err.violations() {
///             println!("{}: {}", v.field, v.description);
///         }
///     }
///     other => println!("{other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status.
    #[error("{code:?}: {message}")]
    Rpc {
        /// The gRPC status code.
        code: Code,
        /// The server's message.
        message: String,
        /// For INVALID_ARGUMENT: which fields were wrong and why.
        violations: Vec<FieldViolation>,
        /// When the server said to try again (its `google.rpc.RetryInfo`,
        /// sent with RESOURCE_EXHAUSTED by the rate limits).
        retry_after: Option<Duration>,
    },
    /// The server could not be reached at all (bad URL, connection refused).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The server URL.
        url: String,
        /// Why not.
        reason: String,
    },
    /// The server sent something this client cannot read.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The client's own settings are unusable (a key a header cannot carry,
    /// an unreadable certificate file).
    #[error("{0}")]
    Setup(String),
}

impl Error {
    /// The gRPC code: the server's, UNAVAILABLE when it could not be reached,
    /// INTERNAL for an unreadable response, INVALID_ARGUMENT for unusable
    /// settings.
    pub fn code(&self) -> Code {
        match self {
            Self::Rpc { code, .. } => *code,
            Self::Connect { .. } => Code::Unavailable,
            Self::InvalidResponse(_) => Code::Internal,
            Self::Setup(_) => Code::InvalidArgument,
        }
    }

    /// How long the server asked to wait before trying again, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Rpc { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The field violations of an INVALID_ARGUMENT error (empty otherwise).
    pub fn violations(&self) -> &[FieldViolation] {
        match self {
            Self::Rpc { violations, .. } => violations,
            _ => &[],
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        let details = status.get_error_details();
        let retry_after = details.retry_info().and_then(|info| info.retry_delay);
        let violations = details
            .bad_request()
            .map(|br| {
                br.field_violations
                    .iter()
                    .map(|v| FieldViolation::new(v.field.clone(), v.description.clone()))
                    .collect()
            })
            .unwrap_or_default();
        // A transport failure ("transport error") says why only in its
        // sources: a refused TLS handshake, a reset connection.
        let mut message = status.message().to_owned();
        if let Some(source) = std::error::Error::source(&status) {
            let chain = crate::client::error_chain(source);
            message = if chain.contains(&message) {
                chain
            } else {
                format!("{message}: {chain}")
            };
        }
        let lost = connection_lost(&status);
        Self::Rpc {
            code: if lost {
                Code::Unavailable
            } else {
                status.code()
            },
            // Only this side's own reports get a hint, never a server's words.
            message: if lost || status.code() == Code::Internal {
                crate::client::with_hint(message)
            } else {
                message
            },
            violations,
            retry_after,
        }
    }
}

/// Whether `status` is this side's report of a connection that broke during
/// the call (the server went away): such a status has a transport error as
/// its source, which a status sent by the server never has. The call may or
/// may not have been carried out, as with UNAVAILABLE; idempotent calls are
/// retried.
pub(crate) fn connection_lost(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unknown | Code::Internal | Code::Cancelled | Code::Unavailable
    ) && std::error::Error::source(status).is_some()
}

impl From<herald::Error> for Error {
    fn from(err: herald::Error) -> Self {
        match err {
            herald::Error::InvalidArgument(violations) => Self::Rpc {
                code: Code::InvalidArgument,
                message: herald::Error::InvalidArgument(violations.clone()).to_string(),
                violations,
                retry_after: None,
            },
            other => Self::InvalidResponse(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_lost_during_a_call_reads_as_unavailable() {
        let broken = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        let status = Status::from_error(Box::new(broken));
        assert_eq!(status.code(), Code::Unknown);
        assert_eq!(Error::from(status).code(), Code::Unavailable);
        // The server's own UNKNOWN or INTERNAL stays what it is.
        assert_eq!(Error::from(Status::internal("bug")).code(), Code::Internal);
        assert_eq!(Error::from(Status::unknown("odd")).code(), Code::Unknown);
    }
}
