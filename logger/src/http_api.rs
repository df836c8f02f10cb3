//! What Herald's HTTP endpoints (the console's API, the end users'
//! endpoints) share: [`ApiError`], the JSON every failed call answers
//! (`{"code", "message", "field"}` with the HTTP status of the gRPC code),
//! how gRPC statuses, client errors and bad requests become one, and
//! `read_whole`, which reads a request's body within bounds.

use axum::{
    Json,
    extract::rejection::{JsonRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use herald::{EventStatus, error::truncate};
use herald_client::Error;
use serde_json::json;
use tonic::Code;

/// Longest error message sent to the page.
const MAX_MESSAGE: usize = 1_024;

/// An error as the page receives it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    field: Option<String>,
}

impl ApiError {
    /// An error with `status` and its own `message`; its `code` is the
    /// gRPC code name nearest the status, as every other answer carries.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code_name(code_of(status)),
            message: message.into(),
            field: None,
        }
    }

    /// NOT_FOUND with `message`.
    pub fn not_found(message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// INVALID_ARGUMENT on `field`.
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_owned()),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                format!("{field}: {}", message.into()),
            )
        }
    }
}

/// The gRPC code nearest an HTTP status: the console's own refusals carry
/// it too, so a script reads one `code` vocabulary whoever refused its call.
fn code_of(status: StatusCode) -> Code {
    match status {
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        // A foreign Origin, or a name the open console does not answer to.
        StatusCode::FORBIDDEN | StatusCode::MISDIRECTED_REQUEST => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::CONFLICT => Code::FailedPrecondition,
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        _ => Code::Internal,
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let code = err.code();
        let status = match code {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let (message, field) = match err {
            Error::Rpc { violations, .. } if !violations.is_empty() => {
                let field = violations.first().map(|v| v.field.clone());
                let text = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                (text, field)
            }
            Error::Rpc { message, .. } => (message, None),
            other => (other.to_string(), None),
        };
        Self {
            status,
            code: code_name(code),
            message,
            field,
        }
    }
}

/// The canonical name of a gRPC code (`INVALID_ARGUMENT`), as gRPC
/// tools print it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "code": self.code,
            "message": truncate(&self.message, MAX_MESSAGE),
            "field": self.field,
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Error::from(status).into()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

/// The status named `name` (as [`EventStatus::parse`] reads it), or
/// INVALID_ARGUMENT on `field` listing every status.
pub(crate) fn parse_status(field: &str, name: &str) -> Result<EventStatus, ApiError> {
    let name = name.trim();
    EventStatus::parse(name).ok_or_else(|| {
        let names: Vec<&str> = EventStatus::ALL.iter().map(|s| s.as_str()).collect();
        let (last, others) = names.split_last().expect("statuses");
        ApiError::invalid(
            field,
            format!(
                "is not a status: {} ({} or {last})",
                herald::error::quote(name),
                others.join(", ")
            ),
        )
    })
}

/// The request with its body read whole (GET and HEAD requests, which
/// carry none, as they are): at most `max_bytes`, within `timeout`, so a
/// client that trickles a body or never ends it holds a connection and its
/// bytes for no longer than that.
pub(crate) async fn read_whole(
    request: axum::extract::Request,
    max_bytes: usize,
    timeout: std::time::Duration,
) -> Result<axum::extract::Request, ApiError> {
    use http_body_util::BodyExt;
    if request.method() == http::Method::GET || request.method() == http::Method::HEAD {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, max_bytes);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(axum::extract::Request::from_parts(
            parts,
            axum::body::Body::from(collected.to_bytes()),
        )),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {} KiB", max_bytes / 1024),
        )),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the request body broke off",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive whole within {} (--body-timeout)",
                humantime::format_duration(timeout)
            ),
        )),
    }
}

/// The notification log could not be read.
pub(crate) fn storage_error(err: herald::Error) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("notification log: {err}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(code: Code) -> ApiError {
        ApiError::from(Error::Rpc {
            code,
            message: "refused".into(),
            violations: Vec::new(),
            retry_after: None,
        })
    }

    #[test]
    fn every_code_keeps_its_name_and_an_http_status_near_it() {
        let out_of_range = rpc(Code::OutOfRange);
        assert_eq!(
            (out_of_range.status, out_of_range.code),
            (StatusCode::BAD_REQUEST, "OUT_OF_RANGE")
        );
        let exists = rpc(Code::AlreadyExists);
        assert_eq!(
            (exists.status, exists.code),
            (StatusCode::CONFLICT, "ALREADY_EXISTS")
        );
        assert_eq!(rpc(Code::Aborted).code, "ABORTED");
        assert_eq!(rpc(Code::Unimplemented).code, "UNIMPLEMENTED");
        // The console's own refusals name the nearest code.
        assert_eq!(
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "big").code,
            "RESOURCE_EXHAUSTED"
        );
    }
}
