//! The one purge, the same for the background task, `/v1/admin/purge` and `tessera purge`.

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use tessera_entity::{email_otp_codes, sessions, totp_usage};
use tessera_limiter::Limiter;
use tessera_store::Tokens;

use crate::error::AuthError;
use crate::factors::totp::TOTP_USAGE_RETENTION;
use crate::settings::now;

/// What one purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    /// Expired tokens.
    pub tokens: u64,
    /// Rate-limit events older than the longest window.
    pub events: u64,
    /// Expired sessions and mailed codes, and used TOTP windows past their retention.
    pub login_rows: u64,
}

/// Expired tokens and stale events in bounded batches that skip rows another worker is
/// deleting (so every worker may run it at once), then the login flows' expired rows.
pub async fn purge(
    db: &DatabaseConnection,
    tokens: &Tokens,
    limiter: &Limiter,
) -> Result<Purged, AuthError> {
    Ok(Purged {
        tokens: tokens.purge().await?,
        events: limiter.purge(tokens.purge_batch()).await?,
        login_rows: login_rows(db).await?,
    })
}

/// Deletes expired sessions, mailed codes, and TOTP windows past their retention.
async fn login_rows(db: &DatabaseConnection) -> Result<u64, AuthError> {
    let s = sessions::Entity::delete_many()
        .filter(sessions::Column::ExpiresAt.lte(now()))
        .exec(db)
        .await?;
    let c = email_otp_codes::Entity::delete_many()
        .filter(email_otp_codes::Column::ExpiresAt.lte(now()))
        .exec(db)
        .await?;
    let cutoff = now() - chrono::Duration::from_std(TOTP_USAGE_RETENTION).unwrap_or_default();
    let t = totp_usage::Entity::delete_many()
        .filter(totp_usage::Column::UsedAt.lt(cutoff))
        .exec(db)
        .await?;
    Ok(s.rows_affected + c.rows_affected + t.rows_affected)
}
