//! `/v1`: the token store ([`tokens`]) and the rate limiter ([`ratelimit`]) as a service
//! for other services, and maintenance ([`admin`]), behind a service key.

pub mod admin;
pub mod answers;
pub mod once;
pub mod ratelimit;
pub mod sessions;
pub mod tokens;

use axum::routing::post;
use axum::{Router, middleware};

use crate::http::service_key::require_service_key;
use crate::state::AppState;

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/tokens", post(tokens::issue))
        .route("/v1/tokens/consume", post(tokens::consume))
        .route("/v1/tokens/peek", post(tokens::peek))
        .route("/v1/tokens/revoke", post(tokens::revoke))
        .route("/v1/ratelimit/hit", post(ratelimit::hit))
        .route("/v1/ratelimit/peek", post(ratelimit::ratelimit_peek))
        .route("/v1/ratelimit/reset", post(ratelimit::reset))
        .route("/v1/once", post(once::once))
        .route("/v1/admin/purge", post(admin::purge))
        .route("/v1/sessions/introspect", post(sessions::introspect))
        .route_layer(middleware::from_fn_with_state(
            state.api_keys.clone(),
            require_service_key,
        ))
}
