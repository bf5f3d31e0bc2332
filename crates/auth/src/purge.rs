//! The one purge, the same for the background task, `/v1/admin/purge` and `tessera purge`:
//! the explicit ones run at full speed; the background one runs on one worker at a time,
//! paced ([`Pace::BACKGROUND`]), so that it never takes the database from the requests.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, Statement, TransactionTrait,
};
use tessera_backend::pace::Pace;
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
/// deleting (so every worker may run it at once), then the login flows' expired rows; at
/// full speed.
pub async fn purge(
    db: &DatabaseConnection,
    tokens: &Tokens,
    limiter: &Limiter,
) -> Result<Purged, AuthError> {
    run(db, tokens, limiter, Pace::FULL).await
}

/// The background purge: the same, paced, unless another worker's background purge is
/// running (on PostgreSQL), in which case `None`: several workers deleting at once go no
/// faster than one, since they share the database's disk and cores, and skipping each
/// other's rows only costs them more.
pub async fn purge_in_background(
    db: &DatabaseConnection,
    tokens: &Tokens,
    limiter: &Limiter,
) -> Result<Option<Purged>, AuthError> {
    let Some(lease) = Lease::take(db).await? else {
        return Ok(None);
    };
    let purged = run(db, tokens, limiter, Pace::BACKGROUND).await;
    lease.give_back().await;
    purged.map(Some)
}

async fn run(
    db: &DatabaseConnection,
    tokens: &Tokens,
    limiter: &Limiter,
    pace: Pace,
) -> Result<Purged, AuthError> {
    Ok(Purged {
        tokens: tokens.purge(pace).await?,
        events: limiter.purge(tokens.purge_batch(), pace).await?,
        login_rows: login_rows(db).await?,
    })
}

/// The background purge's turn across workers: on PostgreSQL a transaction-level advisory
/// lock held by an otherwise idle transaction (it writes nothing and, read committed,
/// holds no snapshot between statements, so it keeps no row from being vacuumed), given
/// back when the transaction ends, however it ends; elsewhere nothing.
struct Lease(Option<DatabaseTransaction>);

/// The lock's key, in the two-key space of advisory locks, which the limiter's one-key
/// locks never meet.
const LEASE_LOCK: &str = "SELECT pg_try_advisory_xact_lock(1953719155, 1) AS taken";

impl Lease {
    async fn take(db: &DatabaseConnection) -> Result<Option<Lease>, AuthError> {
        if db.get_database_backend() != DbBackend::Postgres {
            return Ok(Some(Lease(None)));
        }
        let txn = db.begin().await?;
        let taken = txn
            .query_one_raw(Statement::from_string(DbBackend::Postgres, LEASE_LOCK))
            .await?
            .map(|row| row.try_get::<bool>("", "taken"))
            .transpose()?
            .unwrap_or(false);
        if taken {
            Ok(Some(Lease(Some(txn))))
        } else {
            txn.rollback().await.ok();
            Ok(None)
        }
    }

    async fn give_back(self) {
        if let Some(txn) = self.0 {
            // A failure here (the connection broke) ends the transaction just the same.
            txn.rollback().await.ok();
        }
    }
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
