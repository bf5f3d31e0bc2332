//! Accounts: finding one by any spelling of its name, what a second factor it offers,
//! what ends when its state changes, and administration (`tessera user ...`).

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, Set, SqlErr,
};
use serde::Serialize;
use tessera_entity::users::{self, Column, Entity as Users};
use tessera_entity::{AccountName, Username};

use crate::error::AuthError;
use crate::error::Conflict;
use crate::hashing::{self as password, Password};
use tessera_entity::TokenType;
use tessera_store::{Tokens, UserToken};

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
) -> Result<UserSummary, AuthError> {
    if let Some(e) = &email
        && (e.len() > 320 || !e.contains('@'))
    {
        return Err(AuthError::invalid("email", "not a mail address"));
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
        address_has_room(db, e).await?;
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

/// Refuses an address that already has its share of accounts.
pub async fn address_has_room(db: &DatabaseConnection, email: &str) -> Result<(), AuthError> {
    let sharing = Users::find()
        .filter(Column::Email.eq(email))
        .count(db)
        .await?;
    if sharing >= ACCOUNTS_PER_ADDRESS {
        return Err(AuthError::conflict(
            Conflict::TooManyAccountsForAddress,
            format!("an address may belong to at most {ACCOUNTS_PER_ADDRESS} accounts"),
        ));
    }
    Ok(())
}

/// Accounts one mail address may have.
pub const ACCOUNTS_PER_ADDRESS: u64 = 5;

fn username_taken(username: &AccountName) -> AuthError {
    AuthError::conflict(
        Conflict::UsernameTaken,
        format!("the user `{username}` exists already"),
    )
}

/// Every account, by name.
pub async fn list(db: &DatabaseConnection) -> Result<Vec<UserSummary>, AuthError> {
    let all = Users::find().order_by_asc(Column::Username).all(db).await?;
    Ok(all.into_iter().map(UserSummary::from).collect())
}

/// What an admin can change about an account.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// Refuse every login.
    Disable,
    /// Accept logins again.
    Enable,
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
) -> Result<Username, AuthError> {
    let found = named(db, username).await?;
    let update = Users::update_many().filter(Column::Id.eq(found.id));
    match change {
        Change::Disable | Change::Enable => {
            update
                .col_expr(
                    Column::Disabled,
                    Expr::value(matches!(change, Change::Disable)),
                )
                .exec(db)
                .await?;
        }
        Change::Unlock => crate::lockout::record_success(db, found.id).await?,
        Change::EnforceMfa => {
            update
                .col_expr(Column::MfaEnforcePending, Expr::value(true))
                .exec(db)
                .await?;
        }
    }
    Username::parse(found.username)
        .map_err(|e| AuthError::internal(format!("stored username: {e}")))
}

/// The account named `username`, or a refusal naming the field `username`.
async fn named(db: &DatabaseConnection, username: &AccountName) -> Result<users::Model, AuthError> {
    Users::find()
        .filter(Column::UsernameKey.eq(username.key()))
        .one(db)
        .await?
        .ok_or_else(|| AuthError::invalid("username", format!("no user `{username}`")))
}

/// Sets the password of `username` as an admin does: see [`replace_password`].
pub async fn set_password(
    db: &DatabaseConnection,
    tokens: &Tokens,
    username: &AccountName,
    password: Password,
) -> Result<(Username, u64), AuthError> {
    let user = named(db, username).await?;
    let hash = password::hash(password).await?;
    let ended = replace_password(db, tokens, &user, hash, None).await?;
    Ok((username_of(&user)?, ended))
}

/// Gives `user` the password `hash`, and ends what the old password opened: the failure
/// count and lock, the reset links, the logins in flight and every session but the one of
/// the cookie `keep`. Answers how many sessions ended.
pub async fn replace_password(
    db: &DatabaseConnection,
    tokens: &Tokens,
    user: &users::Model,
    hash: String,
    keep: Option<&str>,
) -> Result<u64, AuthError> {
    Users::update_many()
        .col_expr(Column::PasswordHash, Expr::value(Some(hash)))
        .filter(Column::Id.eq(user.id))
        .exec(db)
        .await?;
    crate::lockout::record_success(db, user.id).await?;
    let username = username_of(user)?;
    tokens.revoke(TokenType::PasswordReset, &username).await?;
    revoke_pending(tokens, &username).await?;
    crate::sessions::end_other_sessions(db, user.id, keep).await
}

/// What deleting an account removed.
#[derive(Debug, Serialize)]
pub struct Deleted {
    /// The login name it had.
    pub username: String,
    /// Its sessions that ended.
    pub sessions: u64,
    /// Tokens issued for it (pending logins, links, setups) that were revoked.
    pub tokens: u64,
}

/// Deletes the account of `username` with everything that hangs on it: every token issued
/// for it first (so no login in flight completes), then the row, whose sessions, codes and
/// OIDC links the database deletes with it.
pub async fn delete(
    db: &DatabaseConnection,
    tokens: &Tokens,
    username: &AccountName,
) -> Result<Deleted, AuthError> {
    delete_user(db, tokens, named(db, username).await?).await
}

/// Deletes `user`: see [`delete`].
pub async fn delete_user(
    db: &DatabaseConnection,
    tokens: &Tokens,
    user: users::Model,
) -> Result<Deleted, AuthError> {
    let name = username_of(&user)?;
    let mut revoked = 0;
    for kind in TokenType::BUILTIN {
        revoked += tokens.revoke(kind, &name).await?;
    }
    let sessions = tessera_entity::sessions::Entity::find()
        .filter(tessera_entity::sessions::Column::UserId.eq(user.id))
        .count(db)
        .await?;
    Users::delete_by_id(user.id).exec(db).await?;
    Ok(Deleted {
        username: user.username,
        sessions,
        tokens: revoked,
    })
}

/// The account named `username` (in any spelling of it: see [`AccountName`]).
pub async fn find_user(
    db: &DatabaseConnection,
    username: &str,
) -> Result<Option<users::Model>, AuthError> {
    match AccountName::parse(username) {
        Ok(name) => find_account(db, &name).await,
        Err(_) => Ok(None),
    }
}

/// The account a token speaks for, if it still exists.
pub async fn token_user(
    db: &DatabaseConnection,
    token: &UserToken,
) -> Result<Option<users::Model>, AuthError> {
    find_user(db, token.username.as_str()).await
}

/// The account of `name`, found by its key.
pub async fn find_account(
    db: &DatabaseConnection,
    name: &AccountName,
) -> Result<Option<users::Model>, AuthError> {
    Ok(users::Entity::find()
        .filter(users::Column::UsernameKey.eq(name.key()))
        .one(db)
        .await?)
}

/// The [`Username`](tessera_entity::Username) of a stored account (checked at creation).
pub fn username_of(user: &users::Model) -> Result<tessera_entity::Username, AuthError> {
    tessera_entity::Username::parse(user.username.clone())
        .map_err(|e| AuthError::internal(format!("stored username: {e}")))
}

/// What `/auth/login` offers a user with a second factor: `totp`, `backup_code`,
/// `email_otp`.
pub fn methods(user: &users::Model) -> Vec<&'static str> {
    let mut m = Vec::new();
    if user.totp_enabled {
        m.push("totp");
        m.push("backup_code");
    }
    if user.email_otp_enabled && user.email.is_some() {
        m.push("email_otp");
    }
    m
}

/// The kinds of token that carry a login in progress or a factor being set up: what a
/// password reset, a password change, disabling the account or turning a factor off must
/// end, since each was obtained under the state that just changed.
pub const PENDING_KINDS: [TokenType; 6] = [
    TokenType::PreAuth,
    TokenType::Webauthn,
    TokenType::MfaEnforce,
    TokenType::OidcExchange,
    TokenType::EmailOtpSetup,
    TokenType::TotpSetup,
];

/// Revokes every pending login and setup of `username` ([`PENDING_KINDS`]).
pub async fn revoke_pending(tokens: &Tokens, username: &Username) -> Result<u64, AuthError> {
    let mut revoked = 0;
    for kind in PENDING_KINDS {
        revoked += tokens.revoke(kind, username).await?;
    }
    Ok(revoked)
}
