//! `/v1/once`: set-if-absent for an app's own replay guards (a TOTP code used once per
//! user and window: `once` on `user:window:code`), atomic on every backend.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

use super::answers::ServiceErrors;
use super::tokens::app_tokens;
use crate::error::{AppError, BodyProblems, Problem};
use crate::http::extract::ApiJson;
use crate::state::AppState;

/// A key to claim, and for how long.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OnceRequest {
    /// Any string of 1 to 512 characters; only its hash is stored.
    pub key: String,
    /// How long the claim holds, in seconds (1 to 2592000).
    pub ttl_seconds: u64,
}

/// The claim was this request's.
#[derive(Debug, Serialize, ToSchema)]
pub struct Claimed {
    /// Always true.
    pub claimed: bool,
}

/// Claim `key` for `ttl_seconds`: 201 for the first claim, 409 `already_claimed` while it
/// holds; of concurrent claims on any workers exactly one wins.
#[utoipa::path(post, path = "/v1/once", tag = "tokens", request_body = OnceRequest,
    security(("service_key" = [])), responses((status = 201, description = "Claimed", body = Claimed),
        (status = 409, description = "`already_claimed`", body = Problem, content_type = "application/problem+json"),
        ServiceErrors, BodyProblems))]
pub async fn once(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<OnceRequest>,
) -> Result<(StatusCode, Json<Claimed>), AppError> {
    if req.key.is_empty() || req.key.chars().count() > 512 {
        return Err(AppError::field("key", "1 to 512 characters"));
    }
    if !(1..=30 * 24 * 60 * 60).contains(&req.ttl_seconds) {
        return Err(AppError::field("ttl_seconds", "1 to 2592000 seconds"));
    }
    let ttl = Duration::from_secs(req.ttl_seconds);
    if app_tokens(&state).claim_once(&req.key, ttl).await? {
        Ok((StatusCode::CREATED, Json(Claimed { claimed: true })))
    } else {
        Err(AppError::AlreadyClaimed)
    }
}
