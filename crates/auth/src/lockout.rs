//! Second-factor failures and the lock they set: counted before each check, in one
//! statement that every backend runs atomically, so no number of workers multiplies the
//! guesses an attacker gets.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use tessera_entity::users;

use crate::error::AuthError;
use crate::settings::AuthSettings;

/// Seconds left on the account's lock, if it is locked.
pub fn lock_remaining(settings: &AuthSettings, user: &users::Model) -> Option<u64> {
    let until = user.locked_until?;
    let left = (until - settings.now()).num_milliseconds();
    // Rounded up: a lock with 300 ms left still says "1 s", never "0 s".
    (left > 0).then(|| (left as u64).div_ceil(1000))
}

/// Refuses a locked account with 423.
pub fn ensure_unlocked(settings: &AuthSettings, user: &users::Model) -> Result<(), AuthError> {
    match lock_remaining(settings, user) {
        Some(seconds) => Err(AuthError::Locked { seconds }),
        None => Ok(()),
    }
}

/// Counts a second-factor attempt *before* it is checked, and refuses it with 423 when the
/// account is locked. Counting first (one conditional `UPDATE`, atomic on every backend)
/// means that of any number of attempts racing on any number of workers, at most
/// `lockout_threshold` are checked before the lock that the last of them sets: the lock is
/// written by the same statement that counts the attempt which reaches the threshold.
///
/// The count is not reset by a correct password, only by a complete sign-in
/// ([`record_success`]) or a password reset, so logging in again does not buy new
/// guesses; each threshold reached locks for longer ([`AuthSettings::lock_for`]).
pub async fn second_factor_attempt(
    db: &DatabaseConnection,
    settings: &AuthSettings,
    user: &users::Model,
) -> Result<(), AuthError> {
    // Scoped: the trait's blanket `max`/`min` would shadow the integer ones elsewhere.
    use sea_orm::sea_query::{CaseStatement, ExprTrait as _};
    let t = Ord::max(settings.lockout_threshold, 1) as i32;
    let now = settings.now();
    let count = || Expr::col(users::Column::FailedLoginCount).add(1);
    let lock = |n: u32| {
        Expr::value(Some(
            now + chrono::Duration::from_std(settings.lock_for(n * t as u32).unwrap_or_default())
                .unwrap_or(chrono::Duration::MAX),
        ))
    };
    let until = CaseStatement::new()
        .case(count().eq(t), lock(1))
        .case(count().eq(2 * t), lock(2))
        .case(count().gte(3 * t).and(count().modulo(t).eq(0)), lock(3))
        .finally(Expr::col(users::Column::LockedUntil));
    let counted = users::Entity::update_many()
        .col_expr(users::Column::FailedLoginCount, count())
        .col_expr(users::Column::LockedUntil, Into::<Expr>::into(until))
        .filter(users::Column::Id.eq(user.id))
        .filter(
            users::Column::LockedUntil
                .is_null()
                .or(users::Column::LockedUntil.lte(now)),
        )
        .exec(db)
        .await?;
    if counted.rows_affected == 1 {
        return Ok(());
    }
    let current = users::Entity::find_by_id(user.id)
        .one(db)
        .await?
        .ok_or(AuthError::PendingLoginExpired)?;
    ensure_unlocked(settings, &current)?;
    // Unlocked between the statement and the read: refuse this once rather than loop.
    Err(AuthError::Locked { seconds: 1 })
}

/// After a failed second-factor check (already counted): logs when it locked the account.
pub async fn second_factor_failed(
    db: &DatabaseConnection,
    settings: &AuthSettings,
    user: &users::Model,
) -> Result<(), AuthError> {
    metrics::counter!("tessera_second_factor_failures_total").increment(1);
    if let Some(u) = users::Entity::find_by_id(user.id).one(db).await?
        && let Some(seconds) = lock_remaining(settings, &u)
        && u.locked_until != user.locked_until
    {
        tracing::warn!(
            user_id = user.id,
            failures = u.failed_login_count,
            seconds,
            "account locked after repeated second-factor failures"
        );
        crate::audit::record(
            crate::audit::Event::Lock,
            crate::audit::Outcome::Success,
            &u.username,
        );
    }
    Ok(())
}

/// A complete sign-in (second factor passed), a password reset or an admin's unlock: the
/// second-factor failure count starts again from zero and any lock ends.
pub async fn record_success(db: &DatabaseConnection, user_id: i64) -> Result<(), AuthError> {
    users::Entity::update_many()
        .col_expr(users::Column::FailedLoginCount, Expr::value(0))
        .col_expr(
            users::Column::LockedUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(users::Column::Id.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}
