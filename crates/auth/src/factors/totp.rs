//! TOTP: a setup in progress as a `totp_setup` token bound to its caller, the secret sealed
//! at rest once confirmed, and single-use codes (a used window is a unique row).

use base64::Engine;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set, SqlErr,
    TransactionTrait,
};
use std::time::Duration;
use tessera_entity::{AuthEphemeralToken, Challenge, TokenType, totp_usage, users};
use tessera_store::{Tokens, UserToken};

use super::backup::store_backup_codes;
use super::codes;
use crate::accounts::username_of;
use crate::error::AuthError;
use crate::error::{Conflict, token_error};
use crate::hashing;
use crate::settings::AuthSettings;
use crate::settings::now;

/// How long a used TOTP window is remembered. It must outlive the accepted skew,
/// (2·1+1)·30 s = 90 s; a shorter life would let a code be replayed.
pub const TOTP_USAGE_RETENTION: Duration = Duration::from_secs(10 * 60);

/// The associated data a TOTP secret is sealed to: its row.
pub fn totp_place(user_id: i64) -> String {
    format!("totp:{user_id}")
}

/// The user's TOTP secret, opened.
pub fn totp_secret(
    settings: &AuthSettings,
    user: &users::Model,
) -> Result<Option<Vec<u8>>, AuthError> {
    user.totp_secret
        .as_deref()
        .map(|sealed| {
            settings
                .keys
                .open(&totp_place(user.id), sealed)
                .map_err(|e| AuthError::internal(format!("TOTP secret of user {}: {e}", user.id)))
        })
        .transpose()
}

/// A TOTP setup in progress: what the authenticator app and the person were shown.
pub struct PendingTotp {
    /// The new secret.
    pub secret: Vec<u8>,
    /// The backup codes shown with it (hashed only when the setup is confirmed).
    pub backup_codes: Vec<String>,
}

/// Starts a TOTP setup for `user`, or continues the one `presented` holds: a `totp_setup`
/// token bound to `challenge` (the caller's session or enforcement cookie), carrying the
/// secret and backup codes sealed. Repeated calls from the same caller get the same secret;
/// anyone else (another session, another enforcement login) gets a fresh one, so a secret
/// is never shared between whoever asks first and the account's owner. Costs no argon2
/// work: the codes are hashed at confirmation.
pub async fn start_totp_setup(
    tokens: &Tokens,
    user: &users::Model,
    challenge: &Challenge,
    presented: Option<&str>,
) -> Result<(String, PendingTotp), AuthError> {
    if let Some(token) = presented
        && let Ok(pending) = open_totp_setup(tokens, user, token, challenge).await
    {
        return Ok((token.to_owned(), pending));
    }
    let secret = codes::new_secret();
    let backup_codes: Vec<String> = (0..codes::BACKUP_CODES)
        .map(|_| codes::new_backup_code())
        .collect();
    let data = serde_json::json!({
        "secret": base64::engine::general_purpose::STANDARD.encode(&secret),
        "backup_codes": backup_codes,
    });
    let issued = tokens
        .issue(AuthEphemeralToken::new_totp_setup(
            username_of(user)?,
            challenge.clone(),
            data,
        ))
        .await?;
    Ok((
        issued.token.expose().to_owned(),
        PendingTotp {
            secret,
            backup_codes,
        },
    ))
}

/// The setup `presented` holds, if it is `user`'s and bound to `challenge`; 409
/// `totp_not_set_up` otherwise.
pub async fn open_totp_setup(
    tokens: &Tokens,
    user: &users::Model,
    presented: &str,
    challenge: &Challenge,
) -> Result<PendingTotp, AuthError> {
    let not_set_up = || {
        AuthError::conflict(
            Conflict::TotpNotSetUp,
            "no TOTP setup in progress for this session: call /auth/totp/setup first",
        )
    };
    let pending = tokens
        .peek(TokenType::TotpSetup, presented, Some(challenge))
        .await
        .and_then(UserToken::try_from)
        .map_err(|e| token_error(e, not_set_up()))?;
    if pending.username.as_str() != user.username {
        return Err(not_set_up());
    }
    let data = pending.payload.data.unwrap_or_default();
    let secret = data["secret"]
        .as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(|| AuthError::internal("a totp_setup token without its secret"))?;
    let backup_codes = data["backup_codes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(PendingTotp {
        secret,
        backup_codes,
    })
}

/// Finishes a confirmed setup: spends the setup token (one of several concurrent
/// confirmations wins), stores the secret sealed and the backup codes hashed, and turns
/// TOTP on.
pub async fn finish_totp_setup(
    db: &DatabaseConnection,
    settings: &AuthSettings,
    tokens: &Tokens,
    user: &users::Model,
    presented: &str,
    challenge: &Challenge,
    pending: PendingTotp,
) -> Result<(), AuthError> {
    tokens
        .consume(TokenType::TotpSetup, presented, Some(challenge))
        .await
        .map_err(|e| token_error(e, AuthError::InvalidCode))?;
    let hashes = hashing::hash_codes(pending.backup_codes).await?;
    let txn = db.begin().await?;
    let enabled = users::Entity::update_many()
        .col_expr(
            users::Column::TotpSecret,
            Expr::value(Some(
                settings.keys.seal(&totp_place(user.id), &pending.secret),
            )),
        )
        .col_expr(users::Column::TotpEnabled, Expr::value(true))
        .col_expr(users::Column::MfaEnforcePending, Expr::value(false))
        .filter(users::Column::Id.eq(user.id))
        .filter(users::Column::TotpEnabled.eq(false))
        .exec(&txn)
        .await?;
    if enabled.rows_affected != 1 {
        return Err(AuthError::conflict(
            Conflict::TotpAlreadyEnabled,
            "TOTP is already enabled",
        ));
    }
    store_backup_codes(&txn, user.id, hashes).await?;
    txn.commit().await?;
    Ok(())
}

/// Checks a TOTP code against the user's secret and records the window it matched. The
/// unique (user, window) row makes the check single-use: of two requests with the same
/// code, on any workers, one insert wins and the other is a replay.
pub async fn check_totp(
    db: &DatabaseConnection,
    settings: &AuthSettings,
    user: &users::Model,
    code: &str,
) -> Result<bool, AuthError> {
    match totp_secret(settings, user)? {
        Some(secret) => check_totp_with(db, settings, user.id, &secret, code).await,
        None => Ok(false),
    }
}

/// [`check_totp`] against `secret` (a setup being confirmed). The used code is recorded as
/// a keyed hash, never in clear.
pub async fn check_totp_with(
    db: &DatabaseConnection,
    settings: &AuthSettings,
    user_id: i64,
    secret: &[u8],
    code: &str,
) -> Result<bool, AuthError> {
    let unix = settings.now().timestamp().max(0) as u64;
    let Some(step) = codes::matching_step(secret, code, unix) else {
        return Ok(false);
    };
    let used = totp_usage::ActiveModel {
        user_id: Set(user_id),
        code: Set(settings.keys.mac(
            &format!("totp_usage:{user_id}:{step}"),
            code.trim().as_bytes(),
        )),
        time_step: Set(step as i64),
        used_at: Set(now()),
        ..Default::default()
    }
    .insert(db)
    .await;
    match used {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            tracing::info!(user_id, "TOTP code replayed");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_outlives_the_accepted_skew() {
        let accepted = (2 * codes::SKEW + 1) * codes::STEP;
        assert!(TOTP_USAGE_RETENTION.as_secs() >= accepted);
    }
}
