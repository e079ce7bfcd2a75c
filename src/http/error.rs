//! The one place where errors become HTTP statuses and InfluxDB's JSON
//! `{"error": "…"}` bodies.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::storage::StorageError;

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The client's mistake (400), with InfluxDB's text.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("http: request body too large")]
    PayloadTooLarge,
    /// Our failure (500): logged, and the text is passed on.
    #[error("{0}")]
    Internal(String),
    /// Not enough replicas answered (503): the client may retry.
    #[error("{0}")]
    Unavailable(String),
}

impl From<crate::cluster::WriteFailure> for ApiError {
    fn from(error: crate::cluster::WriteFailure) -> Self {
        match error {
            crate::cluster::WriteFailure::Consistency(text) => ApiError::Unavailable(text),
            crate::cluster::WriteFailure::Storage(error) => error.into(),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::DatabaseNotFound(name) => {
                ApiError::NotFound(format!("database not found: {name:?}"))
            }
            // InfluxDB 1.6.7 answers a write to an unknown retention policy
            // with 500 (clients retry it as a server error); so do we.
            StorageError::RetentionPolicyNotFound(_) => ApiError::Internal(error.to_string()),
            StorageError::Invalid(_) | StorageError::WriteRejected(_) => {
                ApiError::BadRequest(error.to_string())
            }
            StorageError::Engine(_) => ApiError::Internal(error.to_string()),
            StorageError::Overloaded => ApiError::Unavailable(error.to_string()),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(error: actix_web::error::BlockingError) -> Self {
        ApiError::Internal(format!("blocking task failed: {error}"))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let text = self.to_string();
        match self {
            ApiError::Internal(_) => tracing::error!(error = %text, "request failed"),
            ApiError::Unavailable(_) => tracing::warn!(error = %text, "request failed"),
            _ => {}
        }
        // InfluxDB's JSON encoder ends the body with a newline.
        let mut body = serde_json::json!({ "error": text }).to_string();
        body.push('\n');
        let mut response = HttpResponse::build(self.status_code());
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&text.replace('\n', " "))
        {
            response.insert_header(("X-Influxdb-Error", value));
        }
        response.content_type("application/json").body(body)
    }
}

/// Unknown paths: 404 with InfluxDB's plain text body.
pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("404 page not found\n")
}
