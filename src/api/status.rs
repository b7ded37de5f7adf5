use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::service::ServiceError;

/// The one place where errors become gRPC status codes. Internal details are
/// logged, not sent: a caller learns that something failed, not how.
pub fn to_status(error: ServiceError) -> Status {
    match error {
        ServiceError::InvalidArgument(violation) => Status::with_error_details(
            Code::InvalidArgument,
            format!("{}: {}", violation.field, violation.description),
            ErrorDetails::with_bad_request_violation(violation.field, violation.description),
        ),
        ServiceError::NotFound(message) => Status::not_found(message),
        ServiceError::Unavailable(message) => Status::unavailable(message),
        ServiceError::FailedPrecondition(message) => Status::failed_precondition(message),
        ServiceError::ResourceExhausted(message) => Status::resource_exhausted(message),
        ServiceError::DataLoss(message) => {
            tracing::error!(error = %message, "unreadable data");
            Status::data_loss(message)
        }
        ServiceError::Internal(detail) => {
            tracing::error!(error = %detail, "internal error");
            Status::internal("internal error")
        }
    }
}

/// Why the layers in front of the handlers ended a call before (or
/// instead of) its handler's answer.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("missing bearer token: send `authorization: Bearer <token>`")]
    MissingToken,
    #[error("invalid token")]
    InvalidToken,
    /// The scopes the method needs, for the message.
    #[error("the token lacks scope {0}")]
    MissingScope(String),
    #[error("server overloaded: too many calls in flight; retry with backoff")]
    Overloaded,
    #[error("the call took longer than the server allows (limits.call_timeout_ms)")]
    TooSlow,
    /// The panic itself is logged; its message may quote request data.
    #[error("internal error")]
    Panicked,
    #[error(
        "the request cannot be decoded: it is malformed, or nested too deeply \
         for the decoder"
    )]
    Undecodable,
}

pub fn refusal_status(refusal: Refusal) -> Status {
    let code = match refusal {
        Refusal::MissingToken | Refusal::InvalidToken => Code::Unauthenticated,
        Refusal::MissingScope(_) => Code::PermissionDenied,
        Refusal::Overloaded => Code::ResourceExhausted,
        Refusal::TooSlow => Code::DeadlineExceeded,
        Refusal::Panicked => Code::Internal,
        Refusal::Undecodable => Code::InvalidArgument,
    };
    Status::new(code, refusal.to_string())
}

/// The names gRPC itself gives the codes, as other exporters label them.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
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
