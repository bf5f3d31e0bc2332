//! The one error type of the service, rendered as RFC 7807 `application/problem+json` with
//! a stable `code`. Details of server-side failures are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tessera_auth::{AuthError, Conflict};
use tessera_limiter::LimiterError;
use tessera_store::StoreError;
use utoipa::ToSchema;

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The token is unknown, expired, consumed, of another kind or its challenge is wrong.
    #[error("invalid or expired token")]
    InvalidOrExpiredToken,
    /// The store (database or Redis) cannot be reached.
    #[error("store unavailable: {0}")]
    StoreUnavailable(#[source] tessera_backend::BackendError),
    /// No valid service key (or none configured).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A well-formed body with a missing, unknown or invalid field.
    #[error("invalid field `{field}`: {detail}")]
    Validation {
        /// The first field, as a JSON path (`cost`, `data.return_to`).
        field: String,
        /// What is wrong with it.
        detail: String,
        /// The other offending fields, if any.
        more: Vec<FieldError>,
    },
    /// A body that is not JSON at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A body whose content type is not JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// A body over the size limit.
    #[error("body too large")]
    BodyTooLarge,
    /// No such route.
    #[error("not found")]
    NotFound,
    /// `/v1/once`: the key is claimed already.
    #[error("already claimed")]
    AlreadyClaimed,
    /// No live session, where a proxy asks (`/auth/verify`).
    #[error("unauthenticated")]
    Unauthenticated,
    /// The route does not answer this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request took longer than the configured timeout.
    #[error("request timed out")]
    Timeout,
    /// Anything else that is the server's fault.
    #[error("internal error: {0}")]
    Internal(String),
    /// A cross-site request to a cookie-authorized route.
    #[error("cross-site request refused")]
    CsrfRejected,
    /// The login domain refused.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl AppError {
    /// A validation error on `field`.
    pub fn field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        AppError::Validation {
            field: field.into(),
            detail: detail.into(),
            more: Vec::new(),
        }
    }

    /// A validation error on each of `errors` (at least one).
    pub fn fields(mut errors: Vec<FieldError>) -> Self {
        let first = errors.remove(0);
        AppError::Validation {
            field: first.field,
            detail: first.detail,
            more: errors,
        }
    }
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

impl From<sea_orm::DbErr> for AppError {
    fn from(e: sea_orm::DbErr) -> Self {
        match tessera_backend::BackendError::from(e) {
            e if e.is_unreachable() => AppError::StoreUnavailable(e),
            e => AppError::Internal(e.to_string()),
        }
    }
}

impl From<LimiterError> for AppError {
    fn from(e: LimiterError) -> Self {
        match e {
            LimiterError::Unavailable(m) => AppError::StoreUnavailable(m),
            LimiterError::UnknownEvent(ev) => {
                AppError::field("event", format!("no rate-limit policy for `{ev}`"))
            }
            e @ LimiterError::InvalidCost { .. } => AppError::field("cost", e.to_string()),
            e @ LimiterError::InvalidKey => AppError::field("key", e.to_string()),
            LimiterError::Backend(m) => AppError::Internal(m),
        }
    }
}

/// What is wrong with one field of a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, as a JSON path (`cost`, `data.return_to`).
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

/// The body of a problem response (RFC 7807).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank`: the status says it).
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub kind: &'static str,
    /// A short summary.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for a person.
    pub detail: String,
    /// The stable machine-readable code clients branch on.
    #[schema(example = "invalid_or_expired_token")]
    pub code: &'static str,
    /// The offending field, for `validation_failed`: the first, when there are several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every offending field, for `validation_failed`, `field` first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// The answers of every route that takes a JSON body, to a body it cannot take.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum BodyProblems {
    /// The body is not JSON: `malformed_json`.
    #[response(status = 400, content_type = "application/problem+json")]
    MalformedJson(Problem),
    /// The body is over the size limit: `body_too_large`.
    #[response(status = 413, content_type = "application/problem+json")]
    BodyTooLarge(Problem),
    /// The body is not sent as JSON: `unsupported_media_type`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// A field is missing, unknown or invalid (named in `field`): `validation_failed`.
    #[response(status = 422, content_type = "application/problem+json")]
    Validation(Problem),
}

impl AppError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        use AppError as E;
        match self {
            E::InvalidOrExpiredToken => (
                StatusCode::NOT_FOUND,
                "invalid_or_expired_token",
                "Invalid or expired token",
                "the token is unknown, expired, already used, or not valid here".into(),
            ),
            E::StoreUnavailable(_) => store_unavailable(),
            E::Unauthorized(detail) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                detail.clone(),
            ),
            E::Validation { detail, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "Invalid request",
                detail.clone(),
            ),
            E::MalformedJson(detail) => (
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "Malformed JSON",
                detail.clone(),
            ),
            E::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
                "the body must be JSON, sent with Content-Type: application/json".into(),
            ),
            E::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "Body too large",
                "the request body is over the size limit".into(),
            ),
            E::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "Not found",
                "no such route".into(),
            ),
            E::AlreadyClaimed => (
                StatusCode::CONFLICT,
                "already_claimed",
                "Already claimed",
                "this key is claimed and its claim has not expired".into(),
            ),
            E::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Unauthenticated",
                "no valid session: sign in at /login".into(),
            ),
            E::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                "this route does not answer this method; `Allow` lists those it does".into(),
            ),
            E::Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Timeout",
                "the request took too long; try again".into(),
            ),
            E::Internal(_) => internal(),
            E::CsrfRejected => (
                StatusCode::FORBIDDEN,
                "csrf_rejected",
                "Cross-site request refused",
                "the request's Origin is not this service's public URL".into(),
            ),
            E::Auth(e) => auth_parts(e),
        }
    }
}

/// The login domain's answers: status, stable code, title, detail.
fn auth_parts(e: &AuthError) -> (StatusCode, &'static str, &'static str, String) {
    use AuthError as A;
    match e {
        A::InvalidCredentials => (
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "Invalid credentials",
            "the username or the password is wrong".into(),
        ),
        A::InvalidCode => (
            StatusCode::UNAUTHORIZED,
            "invalid_code",
            "Invalid code",
            "the code is wrong, expired or already used".into(),
        ),
        A::PendingLoginExpired => (
            StatusCode::UNAUTHORIZED,
            "mfa_session_expired",
            "Second-factor session expired",
            "the mfa_token is unknown, expired or used, or its cookie is missing; sign in again"
                .into(),
        ),
        A::CeremonyExpired => (
            StatusCode::BAD_REQUEST,
            "ceremony_expired",
            "Passkey ceremony expired",
            "the passkey ceremony is unknown, expired or finished, or its cookie is missing; \
             start again"
                .into(),
        ),
        A::UnknownPasskey => (
            StatusCode::NOT_FOUND,
            "passkey_not_found",
            "Passkey not found",
            "this account has no passkey of that id".into(),
        ),
        A::NotSignedIn => (
            StatusCode::UNAUTHORIZED,
            "not_authenticated",
            "Not signed in",
            "no valid session; sign in first".into(),
        ),
        A::Locked { seconds } => (
            StatusCode::LOCKED,
            "account_locked",
            "Account locked",
            format!(
                "too many failed attempts: the account is locked for another {} minute(s)",
                seconds.div_ceil(60).max(1)
            ),
        ),
        A::RateLimited {
            event, decision, ..
        } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many requests",
            format!(
                "too many `{event}` attempts; retry in {} s",
                decision.retry_after.as_secs().max(1)
            ),
        ),
        A::RegistrationDisabled => (
            StatusCode::FORBIDDEN,
            "registration_disabled",
            "Forbidden",
            e.to_string(),
        ),
        A::MagicLinksDisabled => (
            StatusCode::FORBIDDEN,
            "magic_links_disabled",
            "Forbidden",
            e.to_string(),
        ),
        A::Conflict { kind, detail } => (
            StatusCode::CONFLICT,
            Conflict::code(*kind),
            "Conflict",
            detail.clone(),
        ),
        A::Invalid { detail, .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "Invalid request",
            detail.clone(),
        ),
        A::TokenRejected => (
            StatusCode::BAD_REQUEST,
            "invalid_or_expired_token",
            "Invalid or expired token",
            "the token is unknown, expired or already used; start again".into(),
        ),
        A::UnknownProvider => (
            StatusCode::NOT_FOUND,
            "unknown_provider",
            "Unknown provider",
            "no OpenID provider of that name is configured".into(),
        ),
        A::MailUnavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "mail_unavailable",
            "Mail unavailable",
            "the mail could not be sent; try again shortly".into(),
        ),
        A::Overloaded => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Overloaded",
            "too many password checks are waiting; retry in a second".into(),
        ),
        A::Unavailable(_) => store_unavailable(),
        A::Internal(_) => internal(),
    }
}

fn store_unavailable() -> (StatusCode, &'static str, &'static str, String) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "Store unavailable",
        "the store cannot be reached; try again shortly".into(),
    )
}

fn internal() -> (StatusCode, &'static str, &'static str, String) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "Internal error",
        "the server failed to answer; the failure is logged".into(),
    )
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, title, detail) = self.parts();
        if status.is_server_error() {
            // The cause stays in the log (with the request's span and id); the client gets
            // the stable code only.
            tracing::error!(code, error = %self, "request failed");
        }
        let errors = match &self {
            AppError::Validation { field, more, .. } => {
                let first = FieldError {
                    field: field.clone(),
                    detail: detail.clone(),
                };
                Some([vec![first], more.clone()].concat())
            }
            AppError::Auth(AuthError::Invalid { field, .. }) => Some(vec![FieldError {
                field: (*field).to_owned(),
                detail: detail.clone(),
            }]),
            _ => None,
        };
        let body = Problem {
            kind: "about:blank",
            title,
            status: status.as_u16(),
            detail,
            code,
            field: errors.as_ref().map(|e| e[0].field.clone()),
            errors,
        };
        let mut res = (status, axum::Json(body)).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        let headers = res.headers_mut();
        match &self {
            AppError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            AppError::Auth(AuthError::Locked { seconds }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from((*seconds).max(1)));
            }
            AppError::Auth(AuthError::Overloaded) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            AppError::Auth(AuthError::RateLimited {
                event,
                decision,
                window,
            }) => {
                let mut put = |name: &'static str, value: Option<String>| {
                    if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                        headers.insert(name, v);
                    }
                };
                put(
                    "ratelimit-policy",
                    Some(decision.policy_header(event, *window)),
                );
                put("ratelimit", Some(decision.ratelimit_header(event)));
                put("retry-after", decision.retry_after_header());
            }
            _ => {}
        }
        res
    }
}
