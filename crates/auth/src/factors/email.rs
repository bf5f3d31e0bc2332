//! Mailed sign-in codes: one live code per account, stored as an argon2id hash, used up by
//! exactly one caller.

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use std::time::Duration;
use tessera_entity::{email_otp_codes, users};
use tessera_limiter::Limiter;

use super::codes;
use crate::error::AuthError;
use crate::error::Conflict;
use crate::hashing;
use crate::mail;
use crate::settings::AuthSettings;
use crate::settings::{after, now};
use crate::throttle::mail_slot;

/// How long a mailed login code is accepted.
pub const EMAIL_CODE_TTL: Duration = Duration::from_secs(10 * 60);

/// The account's mail address; 409 `email_missing` without one.
pub fn mail_address(user: &users::Model) -> Result<&str, AuthError> {
    user.email.as_deref().ok_or_else(|| {
        AuthError::conflict(Conflict::EmailMissing, "the account has no mail address")
    })
}

/// Turns a second factor on (`totp_enabled` or `email_otp_enabled`); an enforced setup is
/// then satisfied.
pub async fn enable_factor(
    db: &DatabaseConnection,
    user_id: i64,
    factor: users::Column,
) -> Result<(), AuthError> {
    users::Entity::update_many()
        .col_expr(factor, Expr::value(true))
        .col_expr(users::Column::MfaEnforcePending, Expr::value(false))
        .filter(users::Column::Id.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Mails a fresh 6-digit login code to the user, replacing any earlier one.
pub async fn send_login_code(
    db: &DatabaseConnection,
    limiter: &Limiter,
    settings: &AuthSettings,
    user: &users::Model,
) -> Result<(), AuthError> {
    let to = mail_address(user)?;
    mail_slot(limiter, to).await?;
    let code = codes::new_email_code();
    let hash = hashing::hash_code(code.clone()).await?;
    email_otp_codes::Entity::insert(email_otp_codes::ActiveModel {
        user_id: Set(user.id),
        code_hash: Set(hash),
        expires_at: Set(after(EMAIL_CODE_TTL)),
    })
    .on_conflict(
        OnConflict::column(email_otp_codes::Column::UserId)
            .update_columns([
                email_otp_codes::Column::CodeHash,
                email_otp_codes::Column::ExpiresAt,
            ])
            .to_owned(),
    )
    .exec(db)
    .await?;
    settings
        .mailer
        .send(
            to,
            "Your sign-in code",
            mail::messages::code(&code, "sign in"),
        )
        .await?;
    Ok(())
}

/// Checks a mailed login code; a match is used up (deleted) by exactly one caller.
pub async fn use_login_code(
    db: &DatabaseConnection,
    user_id: i64,
    input: &str,
) -> Result<bool, AuthError> {
    if !codes::is_email_code(input) {
        return Ok(false);
    }
    let Some(row) = email_otp_codes::Entity::find_by_id(user_id)
        .filter(email_otp_codes::Column::ExpiresAt.gt(now()))
        .one(db)
        .await?
    else {
        return Ok(false);
    };
    let hash = row.code_hash.clone();
    if !hashing::code_matches(input.trim().to_owned(), hash.clone()).await? {
        return Ok(false);
    }
    let taken = email_otp_codes::Entity::delete_many()
        .filter(email_otp_codes::Column::UserId.eq(user_id))
        .filter(email_otp_codes::Column::CodeHash.eq(hash))
        .exec(db)
        .await?;
    Ok(taken.rows_affected == 1)
}
