use crate::store::StoreError;

/// One offending field of a request: where, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, e.g. `identifiers[1].value`.
    pub field: String,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{}: {}", .0.field, .0.description)]
    InvalidArgument(FieldViolation),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// Stored data that cannot be opened (a damaged data key): the reads
    /// of that one person fail, saying so.
    #[error("{0}")]
    DataLoss(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ServiceError::InvalidArgument(FieldViolation {
            field: field.into(),
            description: description.into(),
        })
    }

    /// The same violation, with its field path under `prefix` (e.g. the
    /// `identify.` of an `Ingest` item).
    pub fn within(self, prefix: &str) -> Self {
        match self {
            ServiceError::InvalidArgument(violation) => {
                ServiceError::InvalidArgument(FieldViolation {
                    field: format!("{prefix}{}", violation.field),
                    description: violation.description,
                })
            }
            other => other,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Closed => {
                ServiceError::Unavailable("the server is shutting down".to_owned())
            }
            StoreError::Unavailable(reason) => ServiceError::Unavailable(reason),
            conflict @ StoreError::Conflict(_) => ServiceError::Unavailable(conflict.to_string()),
            StoreError::NotFound(message) => ServiceError::NotFound(message),
            StoreError::Invalid { field, description } => ServiceError::invalid(field, description),
            StoreError::Precondition(message) => ServiceError::FailedPrecondition(message),
            unreadable @ StoreError::Database(_) if unreadable.is_unreadable() => {
                ServiceError::DataLoss(format!("stored data cannot be opened: {unreadable}"))
            }
            other => ServiceError::Internal(other.to_string()),
        }
    }
}
