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
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                let message = format!("invalid argument: {}", join(&violations));
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound(_) => Status::not_found(err.to_string()),
            Error::InvalidTransition { .. } => Status::failed_precondition(err.to_string()),
            Error::Unavailable(_) => Status::unavailable(err.to_string()),
            Error::Internal(details) => {
                tracing::error!(%details, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
