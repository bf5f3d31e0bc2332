//! Account administration: what `tessera user ...` does.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
    SqlErr,
};
use serde::Serialize;
use tessera_entity::Username;
use tessera_entity::users::{self, Column, Entity as Users};

use crate::AppError;
use crate::password::{self, Password};

/// An account as `tessera user list` shows it (no secrets).
#[derive(Debug, Serialize)]
pub struct UserSummary {
    /// The login name.
    pub username: String,
    /// The mail address.
    pub email: Option<String>,
    /// Whether the account has a local password.
    pub has_password: bool,
    /// TOTP enabled.
    pub totp_enabled: bool,
    /// Email OTP enabled.
    pub email_otp_enabled: bool,
    /// A second factor is required before the next login completes.
    pub mfa_enforce_pending: bool,
    /// Refused at every login.
    pub disabled: bool,
    /// Failed checks since the last success.
    pub failed_login_count: i32,
    /// Locked until then.
    pub locked_until: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<users::Model> for UserSummary {
    fn from(u: users::Model) -> Self {
        UserSummary {
            username: u.username,
            email: u.email,
            has_password: u.password_hash.is_some(),
            totp_enabled: u.totp_enabled,
            email_otp_enabled: u.email_otp_enabled,
            mfa_enforce_pending: u.mfa_enforce_pending,
            disabled: u.disabled,
            failed_login_count: u.failed_login_count,
            locked_until: u.locked_until,
        }
    }
}

fn db_err(e: sea_orm::DbErr) -> AppError {
    if tessera_entity::db::is_unreachable(&e) {
        AppError::StoreUnavailable(e.to_string())
    } else {
        AppError::Internal(e.to_string())
    }
}

/// Creates an account with a password (hashed with argon2id).
pub async fn create(
    db: &DatabaseConnection,
    username: Username,
    email: Option<String>,
    password: Password,
) -> Result<UserSummary, AppError> {
    if let Some(e) = &email
        && (e.len() > 320 || !e.contains('@'))
    {
        return Err(AppError::field("email", "not a mail address"));
    }
    let hash = password::hash(password).await?;
    let row = users::ActiveModel {
        username: Set(username.as_str().to_owned()),
        email: Set(email),
        password_hash: Set(Some(hash)),
        ..Default::default()
    };
    match row.insert(db).await {
        Ok(model) => Ok(model.into()),
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => Err(
            AppError::field("username", format!("the user `{username}` exists already")),
        ),
        Err(e) => Err(db_err(e)),
    }
}

/// Every account, by name.
pub async fn list(db: &DatabaseConnection) -> Result<Vec<UserSummary>, AppError> {
    let all = Users::find()
        .order_by_asc(Column::Username)
        .all(db)
        .await
        .map_err(db_err)?;
    Ok(all.into_iter().map(UserSummary::from).collect())
}

/// What an admin can change about an account.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// Refuse every login.
    Disable,
    /// Clear the failure count and any lock.
    Unlock,
    /// Require a second factor before the next login completes.
    EnforceMfa,
}

/// Applies `change` to `username`.
pub async fn change(
    db: &DatabaseConnection,
    username: &Username,
    change: Change,
) -> Result<(), AppError> {
    let update = Users::update_many().filter(Column::Username.eq(username.as_str()));
    let update = match change {
        Change::Disable => update.col_expr(Column::Disabled, Expr::value(true)),
        Change::Unlock => update
            .col_expr(Column::FailedLoginCount, Expr::value(0))
            .col_expr(
                Column::LockedUntil,
                Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
            ),
        Change::EnforceMfa => update.col_expr(Column::MfaEnforcePending, Expr::value(true)),
    };
    let done = update.exec(db).await.map_err(db_err)?;
    if done.rows_affected == 0 {
        return Err(AppError::field("username", format!("no user `{username}`")));
    }
    Ok(())
}
