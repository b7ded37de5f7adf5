//! The one place where errors become HTTP responses: a status and a JSON
//! body `{"success": false, "code": …, "message": …}`, the shape the
//! Segment SDKs read. Internal details are logged, not sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::service::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("send the write key as the HTTP Basic user name, or `Authorization: Bearer <token>`")]
    MissingCredentials,
    #[error("invalid write key or token")]
    InvalidCredentials,
    #[error("the token lacks scope {0}")]
    MissingScope(&'static str),
    #[error("{0}")]
    Invalid(ServiceError),
    #[error("{0}")]
    NotFound(String),
    #[error("server overloaded: too many calls in flight; retry with backoff")]
    Overloaded,
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl HttpError {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        HttpError::Invalid(ServiceError::invalid(field, description))
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            HttpError::MissingCredentials | HttpError::InvalidCredentials => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            HttpError::MissingScope(_) => (StatusCode::FORBIDDEN, "forbidden"),
            HttpError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            HttpError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            HttpError::Overloaded => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            HttpError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            HttpError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<ServiceError> for HttpError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::InvalidArgument(_) | ServiceError::FailedPrecondition(_) => {
                HttpError::Invalid(error)
            }
            ServiceError::NotFound(message) => HttpError::NotFound(message),
            ServiceError::Unavailable(message) => HttpError::Unavailable(message),
            ServiceError::ResourceExhausted(_) => HttpError::Overloaded,
            ServiceError::Internal(detail) | ServiceError::DataLoss(detail) => {
                HttpError::Internal(detail)
            }
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if let HttpError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let (status, code) = self.status_and_code();
        let body = json!({"success": false, "code": code, "message": self.to_string()});
        let mut response = json_response(status, &body);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sightline\""),
            );
        }
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}
