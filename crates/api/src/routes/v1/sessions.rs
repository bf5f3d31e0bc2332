//! `/v1/sessions/introspect`: a backend that received a session cookie asks whose it is.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tessera_auth::AuthError;
use utoipa::ToSchema;

use super::answers::ServiceErrors;
use crate::error::{AppError, BodyProblems};
use crate::http::extract::ApiJson;
use crate::state::AppState;

/// A session cookie's value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectRequest {
    /// The value of the `tessera_session` cookie.
    pub session: String,
}

/// Whose a session is (RFC 7662 style: an unknown one is `{active: false}`, never a 404).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Introspection {
    /// A live session.
    pub active: bool,
    /// The account's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The account's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The session's public id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// When it began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// When it ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// It was opened with a second factor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub second_factor: Option<bool>,
}

/// Whose a session cookie is.
#[utoipa::path(post, path = "/v1/sessions/introspect", tag = "sessions", request_body = IntrospectRequest,
    security(("service_key" = [])),
    responses(
        (status = 200, description = "`{active: true, ...}` or `{active: false}`", body = Introspection),
        ServiceErrors, BodyProblems,
    ))]
pub async fn introspect(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<IntrospectRequest>,
) -> Result<Json<Introspection>, AppError> {
    let s = match state.auth.check_session(Some(&req.session)).await {
        Ok(s) => s,
        Err(AuthError::NotSignedIn) => return Ok(Json(Introspection::default())),
        Err(e) => return Err(e.into()),
    };
    Ok(Json(Introspection {
        active: true,
        username: Some(s.username),
        email: s.email,
        session_id: Some(s.session_id),
        created_at: Some(s.created_at),
        expires_at: Some(s.expires_at),
        second_factor: Some(s.second_factor),
    }))
}
