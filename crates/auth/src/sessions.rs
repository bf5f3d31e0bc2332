//! Sessions (only the SHA-256 of a session cookie is stored) and the device cookie that
//! lets an account's own browser past the per-username password throttle.

use base64::Engine;
use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use std::time::Duration;
use tessera_entity::{AccountName, sessions, users};

use crate::error::AuthError;
use crate::settings::AuthSettings;
use crate::settings::{after, now};

/// Prefix of session cookie values, so a leaked one is recognisable.
const SESSION_PREFIX: &str = "tsr_se_";

/// How long a device cookie keeps its device out of the per-username password throttle.
pub const DEVICE_TTL: Duration = Duration::from_secs(180 * 24 * 60 * 60);

const DEVICE_PLACE: &str = "device";

/// The value of the device cookie for `username`: the name and the time, sealed under the
/// service key, so it cannot be made for another account or read.
pub fn device_token(settings: &AuthSettings, username: &str) -> String {
    let plain = format!("{}\n{username}", settings.now().timestamp());
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(settings.keys.seal(DEVICE_PLACE, plain.as_bytes()))
}

/// Whether `value` is a live device cookie of the account `name` (any spelling of it).
pub fn is_device_of(settings: &AuthSettings, value: &str, name: &AccountName) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(sealed) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value) else {
        return false;
    };
    let Ok(plain) = settings.keys.open(DEVICE_PLACE, &sealed) else {
        return false;
    };
    let Some((issued, stored)) = std::str::from_utf8(&plain)
        .ok()
        .and_then(|p| p.split_once('\n'))
    else {
        return false;
    };
    let fresh = issued
        .parse::<i64>()
        .is_ok_and(|t| settings.now().timestamp() - t < DEVICE_TTL.as_secs() as i64);
    let Ok(stored) = AccountName::parse(stored) else {
        return false;
    };
    fresh && bool::from(stored.key().as_bytes().ct_eq(name.key().as_bytes()))
}

/// Starts a session for `user_id`, opened with a second factor or not; answers the cookie
/// value (only its hash is stored).
pub async fn start_session(
    db: &DatabaseConnection,
    settings: &AuthSettings,
    user_id: i64,
    second_factor: bool,
    (ip, user_agent): (Option<String>, Option<String>),
) -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::internal(e.to_string()))?;
    let value = format!(
        "{SESSION_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    sessions::ActiveModel {
        id_hash: Set(sha256(value.as_bytes())),
        user_id: Set(user_id),
        expires_at: Set(after(settings.session_ttl)),
        created_at: Set(now()),
        ip: Set(ip),
        user_agent: Set(user_agent.map(|ua| ua.chars().take(512).collect())),
        second_factor: Set(second_factor),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(value)
}

/// The user of a live session cookie; 401 `not_authenticated` otherwise.
pub async fn session_user(
    db: &DatabaseConnection,
    cookie: Option<&str>,
) -> Result<users::Model, AuthError> {
    Ok(session_of(db, cookie).await?.1)
}

/// Whether a cookie's value has the shape of a session's (worth a lookup).
pub fn may_be_session(value: &str) -> bool {
    value.starts_with(SESSION_PREFIX) && value.len() < 128
}

/// The live session of a cookie's value and its (usable) account; `not_signed_in`
/// otherwise.
pub async fn session_of(
    db: &DatabaseConnection,
    cookie: Option<&str>,
) -> Result<(sessions::Model, users::Model), AuthError> {
    let value = cookie
        .filter(|v| may_be_session(v))
        .ok_or(AuthError::NotSignedIn)?;
    // One round trip: the session and its user together.
    let (session, user) = sessions::Entity::find()
        .find_also_related(users::Entity)
        .filter(sessions::Column::IdHash.eq(sha256(value.as_bytes())))
        .filter(sessions::Column::ExpiresAt.gt(now()))
        .one(db)
        .await?
        .ok_or(AuthError::NotSignedIn)?;
    let user = user.filter(|u| !u.disabled).ok_or(AuthError::NotSignedIn)?;
    Ok((session, user))
}

/// How often a session's `last_seen_at` is written at most.
const SEEN_EVERY: i64 = 60;

/// Records that `session` was seen now, unless that was written less than a minute ago:
/// checking a session stays a read.
pub async fn touch(db: &DatabaseConnection, session: &sessions::Model) -> Result<(), AuthError> {
    let now = now();
    if session
        .last_seen_at
        .is_some_and(|t| (now - t).num_seconds() < SEEN_EVERY)
    {
        return Ok(());
    }
    sessions::Entity::update_many()
        .col_expr(
            sessions::Column::LastSeenAt,
            sea_orm::sea_query::Expr::value(Some(now)),
        )
        .filter(sessions::Column::Id.eq(session.id))
        .exec(db)
        .await?;
    Ok(())
}

/// The public id of a session: derived from its stored hash, so it names the session
/// without being the cookie or its hash.
pub fn public_id(session: &sessions::Model) -> String {
    let mut input = b"tessera session id\n".to_vec();
    input.extend_from_slice(&session.id_hash);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&sha256(&input)[..16])
}

/// The live sessions of `user_id`, oldest first.
pub async fn live_sessions(
    db: &DatabaseConnection,
    user_id: i64,
) -> Result<Vec<sessions::Model>, AuthError> {
    use sea_orm::QueryOrder;
    Ok(sessions::Entity::find()
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::ExpiresAt.gt(now()))
        .order_by_asc(sessions::Column::CreatedAt)
        .all(db)
        .await?)
}

/// Ends the session of a cookie (no error when there is none).
pub async fn end_session(db: &DatabaseConnection, cookie: &str) -> Result<(), AuthError> {
    sessions::Entity::delete_many()
        .filter(sessions::Column::IdHash.eq(sha256(cookie.as_bytes())))
        .exec(db)
        .await?;
    Ok(())
}

/// Ends every session of a user (password reset).
pub async fn end_all_sessions(db: &DatabaseConnection, user_id: i64) -> Result<u64, AuthError> {
    end_other_sessions(db, user_id, None).await
}

/// Ends every session of a user but the one of the cookie `keep` (a password change).
pub async fn end_other_sessions(
    db: &DatabaseConnection,
    user_id: i64,
    keep: Option<&str>,
) -> Result<u64, AuthError> {
    let mut ending = sessions::Entity::delete_many().filter(sessions::Column::UserId.eq(user_id));
    if let Some(cookie) = keep {
        ending = ending.filter(sessions::Column::IdHash.ne(sha256(cookie.as_bytes())));
    }
    Ok(ending.exec(db).await?.rows_affected)
}

/// SHA-256 of `bytes`: what is stored of a session cookie, and how counters name a token.
pub(crate) fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).to_vec()
}

/// A live session and whose it is.
#[derive(Debug, Clone)]
pub struct SessionCheck {
    /// The account's name.
    pub username: String,
    /// The account's address.
    pub email: Option<String>,
    /// The session's public id.
    pub session_id: String,
    /// When it began.
    pub created_at: DateTime<Utc>,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
    /// It was opened with a second factor.
    pub second_factor: bool,
}

/// What a shared session lookup found, for every check that waited on it
/// ([`crate::shared`]).
#[derive(Clone)]
pub enum Found {
    Live(SessionCheck),
    NotSignedIn,
    /// The store failed: each check then asks on its own, to answer its own error.
    Failed,
}
