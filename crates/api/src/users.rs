//! Account administration: what `tessera user ...` does.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, Set, SqlErr,
};
use serde::Serialize;
use tessera_entity::users::{self, Column, Entity as Users};
use tessera_entity::{AccountName, Username};

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

/// Creates an account with a password (hashed with argon2id).
pub async fn create(
    db: &DatabaseConnection,
    username: AccountName,
    email: Option<String>,
    password: Password,
    place: Option<password::Place>,
) -> Result<UserSummary, AppError> {
    if let Some(e) = &email
        && (e.len() > 320 || !e.contains('@'))
    {
        return Err(AppError::field("email", "not a mail address"));
    }
    // The cheap checks before any argon2 work: a taken name, and an address that already
    // has its share of accounts (every account can be sent mail, so an address collecting
    // accounts would multiply what one request can make Tessera send to it).
    let taken = Users::find()
        .filter(Column::UsernameKey.eq(username.key()))
        .count(db)
        .await?;
    if taken > 0 {
        return Err(username_taken(&username));
    }
    if let Some(e) = &email {
        let sharing = Users::find()
            .filter(Column::Email.eq(e.as_str()))
            .count(db)
            .await?;
        if sharing >= ACCOUNTS_PER_ADDRESS {
            return Err(AppError::Conflict {
                code: "too_many_accounts_for_address",
                detail: format!("an address may belong to at most {ACCOUNTS_PER_ADDRESS} accounts"),
            });
        }
    }
    let hash = match place {
        Some(place) => password::hash_in(place, password).await?,
        None => password::hash(password).await?,
    };
    let row = users::ActiveModel {
        username: Set(username.as_str().to_owned()),
        username_key: Set(Some(username.key().to_owned())),
        email: Set(email),
        password_hash: Set(Some(hash)),
        ..Default::default()
    };
    match row.insert(db).await {
        Ok(model) => Ok(model.into()),
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            Err(username_taken(&username))
        }
        Err(e) => Err(e.into()),
    }
}

/// Accounts one mail address may have.
pub const ACCOUNTS_PER_ADDRESS: u64 = 5;

fn username_taken(username: &AccountName) -> AppError {
    AppError::Conflict {
        code: "username_taken",
        detail: format!("the user `{username}` exists already"),
    }
}

/// Every account, by name.
pub async fn list(db: &DatabaseConnection) -> Result<Vec<UserSummary>, AppError> {
    let all = Users::find().order_by_asc(Column::Username).all(db).await?;
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

/// Applies `change` to the account of `username` (any spelling of it); answers its name
/// as stored.
pub async fn change(
    db: &DatabaseConnection,
    username: &AccountName,
    change: Change,
) -> Result<Username, AppError> {
    let found = Users::find()
        .filter(Column::UsernameKey.eq(username.key()))
        .one(db)
        .await?
        .ok_or_else(|| AppError::field("username", format!("no user `{username}`")))?;
    let update = Users::update_many().filter(Column::Id.eq(found.id));
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
    update.exec(db).await?;
    Username::parse(found.username).map_err(|e| AppError::Internal(format!("stored username: {e}")))
}

/// What `tessera keys rotate` did.
#[derive(Debug, Default, Serialize)]
pub struct RotateReport {
    /// Secrets re-encrypted under the current key.
    pub rotated: u64,
    /// Secrets that were under the current key already.
    pub current: u64,
}

/// Re-encrypts every TOTP secret and OIDC client secret under the ring's current key. Each row is rewritten only
/// if it still holds the ciphertext that was read, so a concurrent setup is never
/// overwritten with an older secret.
pub async fn rotate_secrets(
    db: &DatabaseConnection,
    ring: &crate::secrets::KeyRing,
) -> Result<RotateReport, AppError> {
    use tessera_entity::oidc_providers as p;
    let mut report = RotateReport::default();
    for user in Users::find()
        .filter(Column::TotpSecret.is_not_null())
        .all(db)
        .await?
    {
        let place = crate::login::totp_place(user.id);
        let what = format!("user `{}`", user.username);
        if let Some(Resealed { old, new }) =
            reseal(ring, &place, user.totp_secret, &what, &mut report)?
        {
            Users::update_many()
                .col_expr(Column::TotpSecret, Expr::value(Some(new)))
                .filter(Column::Id.eq(user.id))
                .filter(Column::TotpSecret.eq(old))
                .exec(db)
                .await?;
        }
    }
    for provider in p::Entity::find()
        .filter(p::Column::ClientSecret.is_not_null())
        .all(db)
        .await?
    {
        let place = crate::oidc::secret_place(&provider.name);
        let what = format!("provider `{}`", provider.name);
        if let Some(Resealed { old, new }) =
            reseal(ring, &place, provider.client_secret, &what, &mut report)?
        {
            p::Entity::update_many()
                .col_expr(p::Column::ClientSecret, Expr::value(Some(new)))
                .filter(p::Column::Id.eq(provider.id))
                .filter(p::Column::ClientSecret.eq(old))
                .exec(db)
                .await?;
        }
    }
    Ok(report)
}

/// A ciphertext as read, and the same secret sealed under the current key.
struct Resealed {
    old: Vec<u8>,
    new: Vec<u8>,
}

/// The ciphertext `sealed` (at `place`) and its re-sealing under the current key, or
/// `None` when it is under the current key already; counts either way.
fn reseal(
    ring: &crate::secrets::KeyRing,
    place: &str,
    sealed: Option<Vec<u8>>,
    what: &str,
    report: &mut RotateReport,
) -> Result<Option<Resealed>, AppError> {
    let Some(old) = sealed else { return Ok(None) };
    if ring.is_current(&old) {
        report.current += 1;
        return Ok(None);
    }
    let plain = ring
        .open(place, &old)
        .map_err(|e| AppError::Internal(format!("{what}: {e}")))?;
    report.rotated += 1;
    let new = ring.seal(place, &plain);
    Ok(Some(Resealed { old, new }))
}
