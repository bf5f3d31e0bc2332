//! The one error type of the service, rendered as RFC 7807 `application/problem+json` with
//! a stable `code`. Details of server-side failures are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tessera_limiter::LimiterError;
use tessera_store::StoreError;

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The token is unknown, expired, consumed, of another kind or its challenge is wrong.
    #[error("invalid or expired token")]
    InvalidOrExpiredToken,
    /// The store (database or Redis) cannot be reached.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// Anything else that is the server's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidOrExpired => AppError::InvalidOrExpiredToken,
            StoreError::Unavailable(m) => AppError::StoreUnavailable(m),
            StoreError::Backend(m) => AppError::Internal(m),
        }
    }
}

impl From<LimiterError> for AppError {
    fn from(e: LimiterError) -> Self {
        match e {
            LimiterError::Unavailable(m) => AppError::StoreUnavailable(m),
            other => AppError::Internal(other.to_string()),
        }
    }
}

/// The body of a problem response.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` where none is defined).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A short summary.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for a person.
    pub detail: String,
    /// The stable machine-readable code clients branch on.
    pub code: &'static str,
}

impl AppError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        match self {
            AppError::InvalidOrExpiredToken => (
                StatusCode::NOT_FOUND,
                "invalid_or_expired_token",
                "Invalid or expired token",
                "the token is unknown, expired, already used, or not valid here".into(),
            ),
            AppError::StoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "Store unavailable",
                "the token store cannot be reached; try again shortly".into(),
            ),
            AppError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Internal error",
                "the server failed to answer; the failure is logged".into(),
            ),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, title, detail) = self.parts();
        if status.is_server_error() {
            // The cause stays in the log; the client gets the stable code only.
            tracing::error!(code, error = %self, "request failed");
        }
        let body = Problem {
            kind: "about:blank",
            title,
            status: status.as_u16(),
            detail,
            code,
        };
        let mut res = (status, axum::Json(body)).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        res
    }
}
