//! `/v1/ratelimit`: sliding-window limits for other services, under keys of their own.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tessera_limiter::{Decision, Event};
use utoipa::ToSchema;

use super::answers::{APP_NAMESPACE, ServiceErrors};
use crate::error::{AppError, BodyProblems};
use crate::http::extract::ApiJson;
use crate::state::AppState;

/// A rate-limited event for a key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HitRequest {
    /// The event: one of Tessera's (`2fa_attempt`, `login_ip`, ...) or one configured with
    /// `TESSERA_RATE_LIMITS`.
    pub event: String,
    /// The subject: a username, an IP, any string of 1 to 255 characters.
    pub key: String,
    /// Units this hit counts for (1 to the limit); 1 by default.
    pub cost: Option<u32>,
}

/// An event and key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitKeyRequest {
    /// The event.
    pub event: String,
    /// The key.
    pub key: String,
}

/// A rate-limit decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionResponse {
    /// Whether the hit was admitted (peek: whether a hit of cost 1 would be).
    pub allowed: bool,
    /// The policy's limit per window.
    pub limit: u32,
    /// Units still available now.
    pub remaining: u32,
    /// Milliseconds until the full limit is available again.
    pub reset_after_ms: u64,
    /// Milliseconds until the same hit would be admitted; 0 when it was.
    pub retry_after_ms: u64,
}

/// A caller's rate-limit key in `/v1`'s namespace: 1 to 255 characters, no control
/// characters.
fn app_key(key: &str) -> Result<String, AppError> {
    let n = key.chars().count();
    if !(1..=255).contains(&n) || key.chars().any(char::is_control) {
        return Err(AppError::field(
            "key",
            "a rate-limit key is 1 to 255 characters without control characters",
        ));
    }
    Ok(format!("{APP_NAMESPACE}:{key}"))
}

fn event(name: &str) -> Result<Event, AppError> {
    name.parse()
        .map_err(|e: tessera_limiter::InvalidEvent| AppError::field("event", e.to_string()))
}

fn decision_response(state: &AppState, event: &Event, d: Decision) -> Result<Response, AppError> {
    let window = state.auth.limiter.policy(event)?.window;
    let mut headers = HeaderMap::new();
    let name = event.as_str();
    let value =
        |s: String| HeaderValue::from_str(&s).map_err(|e| AppError::Internal(e.to_string()));
    headers.insert("ratelimit-policy", value(d.policy_header(name, window))?);
    headers.insert("ratelimit", value(d.ratelimit_header(name))?);
    if let Some(r) = d.retry_after_header() {
        headers.insert("retry-after", value(r)?);
    }
    let body = DecisionResponse {
        allowed: d.allowed,
        limit: d.limit,
        remaining: d.remaining,
        reset_after_ms: d.reset_after.as_millis() as u64,
        retry_after_ms: d.retry_after.as_millis() as u64,
    };
    Ok((headers, Json(body)).into_response())
}

/// Check and record a hit. A denial is an answer too: 200 with `allowed: false`.
#[utoipa::path(post, path = "/v1/ratelimit/hit", tag = "ratelimit", request_body = HitRequest,
    security(("service_key" = [])),
    responses(
        (status = 200, description = "The decision, with RateLimit-Policy, RateLimit and (when denied) Retry-After headers", body = DecisionResponse),
        ServiceErrors, BodyProblems,
    ))]
pub async fn hit(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<HitRequest>,
) -> Result<Response, AppError> {
    let ev = event(&req.event)?;
    let d = state
        .auth
        .limiter
        .hit(&ev, &app_key(&req.key)?, req.cost.unwrap_or(1))
        .await?;
    metrics::counter!("tessera_ratelimit_decisions_total", "event" => ev.as_str().to_owned(), "allowed" => if d.allowed { "true" } else { "false" })
        .increment(1);
    decision_response(&state, &ev, d)
}

/// The current state of a key, recording nothing.
#[utoipa::path(post, path = "/v1/ratelimit/peek", tag = "ratelimit", request_body = LimitKeyRequest,
    security(("service_key" = [])),
    responses(
        (status = 200, description = "The state now", body = DecisionResponse),
        ServiceErrors, BodyProblems,
    ))]
pub async fn ratelimit_peek(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LimitKeyRequest>,
) -> Result<Response, AppError> {
    let ev = event(&req.event)?;
    let d = state.auth.limiter.peek(&ev, &app_key(&req.key)?).await?;
    decision_response(&state, &ev, d)
}

/// Forget a key's events.
#[utoipa::path(post, path = "/v1/ratelimit/reset", tag = "ratelimit", request_body = LimitKeyRequest,
    security(("service_key" = [])),
    responses(
        (status = 204, description = "Reset"),
        ServiceErrors, BodyProblems,
    ))]
pub async fn reset(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LimitKeyRequest>,
) -> Result<StatusCode, AppError> {
    let ev = event(&req.event)?;
    state.auth.limiter.reset(&ev, &app_key(&req.key)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
