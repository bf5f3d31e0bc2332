//! What every `/v1` route can answer besides its own body, and the namespace of what `/v1`
//! creates.

use crate::error::Problem;

/// The namespace of what `/v1` creates: tokens, and the prefix of rate-limit keys (the
/// `/auth` flows count under `auth:`).
pub const APP_NAMESPACE: &str = "app";

/// The error answers every `/v1` route can give.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ServiceErrors {
    /// No valid service key, or none configured: `unauthorized`.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The store cannot be reached (`store_unavailable`) or the request took too long
    /// (`timeout`).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The error answers of every `/v1` route that takes a JSON body.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum BodyErrors {
    /// The body is not JSON: `malformed_json`.
    #[response(status = 400, content_type = "application/problem+json")]
    MalformedJson(Problem),
    /// No valid service key, or none configured: `unauthorized`.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The body is over the size limit: `body_too_large`.
    #[response(status = 413, content_type = "application/problem+json")]
    BodyTooLarge(Problem),
    /// The body is not sent as JSON: `unsupported_media_type`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// A field is missing, unknown or invalid (named in `field`): `validation_failed`.
    #[response(status = 422, content_type = "application/problem+json")]
    Validation(Problem),
    /// The store cannot be reached (`store_unavailable`) or the request took too long
    /// (`timeout`).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}
