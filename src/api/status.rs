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
        ServiceError::Internal(detail) => {
            tracing::error!(error = %detail, "internal error");
            Status::internal("internal error")
        }
    }
}
