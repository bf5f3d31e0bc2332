//! `/v1`: the token store ([`tokens`]) and the rate limiter ([`ratelimit`]) as a service
//! for other services, and maintenance ([`admin`]), behind a service key.

pub mod admin;
pub mod ratelimit;
pub mod tokens;

use axum::routing::post;
use axum::{Router, middleware};

use crate::AppState;
use crate::error::Problem;
use crate::http::service_key::require_service_key;

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/tokens", post(tokens::issue))
        .route("/v1/tokens/consume", post(tokens::consume))
        .route("/v1/tokens/peek", post(tokens::peek))
        .route("/v1/tokens/revoke", post(tokens::revoke))
        .route("/v1/ratelimit/hit", post(ratelimit::hit))
        .route("/v1/ratelimit/peek", post(ratelimit::ratelimit_peek))
        .route("/v1/ratelimit/reset", post(ratelimit::reset))
        .route("/v1/admin/purge", post(admin::purge))
        .route_layer(middleware::from_fn_with_state(state, require_service_key))
}

/// The namespace of what `/v1` creates: tokens, and the prefix of rate-limit keys (the
/// `/auth` flows count under `auth:`).
const APP_NAMESPACE: &str = "app";

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
