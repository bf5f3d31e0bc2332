//! `/v1/admin`: maintenance.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::answers::ServiceErrors;
use crate::error::AppError;
use crate::state::AppState;

/// What one purge deleted.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Purged)]
pub struct PurgeResponse {
    /// Expired tokens.
    pub tokens: u64,
    /// Rate-limit events older than the longest window.
    pub events: u64,
    /// Expired sessions and mailed codes, and used TOTP windows past their retention.
    pub login_rows: u64,
}

/// Delete expired tokens, stale events and expired login rows now.
///
/// The same purge as the background task's and `tessera purge`.
#[utoipa::path(post, path = "/v1/admin/purge", tag = "admin",
    security(("service_key" = [])),
    responses(
        (status = 200, description = "Deleted", body = PurgeResponse),
        ServiceErrors,
    ))]
pub async fn purge(State(state): State<AppState>) -> Result<Json<PurgeResponse>, AppError> {
    let p = state.auth.purge().await?;
    Ok(Json(PurgeResponse {
        tokens: p.tokens,
        events: p.events,
        login_rows: p.login_rows,
    }))
}
