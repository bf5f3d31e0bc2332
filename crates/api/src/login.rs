//! The login flows' state and rules, apart from HTTP: accounts, failure counting and
//! lockout, throttling, sessions, and checking each second factor.
//!
//! Nothing here lives in a worker's memory: pending logins are `pre_auth` tokens in the
//! token store, attempt counts are limiter events, used TOTP windows, backup codes,
//! mailed codes and sessions are rows. Any worker can take any step.

use base64::Engine;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    Set, SqlErr, TransactionTrait,
};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::Duration;
use tessera_entity::{
    AccountName, AuthEphemeralToken, Challenge, EventType, TokenType, Username, backup_codes,
    email_otp_codes, sessions, totp_usage, users,
};
use tessera_limiter::{Event, Limiter};
use tessera_store::Tokens;

use crate::config::AuthArgs;
use crate::mail::Mailer;
use crate::secrets::KeyRing;
use crate::{AppError, mfa, password};

/// Prefix of session cookie values, so a leaked one is recognisable.
const SESSION_PREFIX: &str = "tsr_se_";
/// How long a mailed login code is accepted.
pub const EMAIL_CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// How long a used TOTP window is remembered. It must outlive the accepted skew,
/// (2·1+1)·30 s = 90 s; a shorter life would let a code be replayed.
pub const TOTP_USAGE_RETENTION: Duration = Duration::from_secs(10 * 60);

/// Settings of the login flows.
pub struct AuthSettings {
    /// Encrypts TOTP secrets at rest.
    pub keys: KeyRing,
    /// Sends codes and reset links.
    pub mailer: Mailer,
    /// The URL users reach the service at, without a trailing slash.
    pub public_url: String,
    /// The origin of `public_url` (`scheme://host[:port]`), the only `Origin` accepted.
    pub public_origin: String,
    /// Cookies carry `Secure` (the public URL is https).
    pub secure_cookies: bool,
    /// `POST /auth/register` is open.
    pub registration: bool,
    /// How long a session lasts.
    pub session_ttl: Duration,
    /// Second-factor failures that lock an account (each further this many lock again).
    pub lockout_threshold: u32,
    /// How long the first lock lasts; the second lasts twice as long, every later one
    /// [`LONG_LOCK`].
    pub lockout_duration: Duration,
    /// Where "now" comes from for locks, sessions and TOTP windows: the process's clock, or
    /// a manual one that tests advance together with the limiter's.
    pub clock: tessera_limiter::Clock,
    /// Issuer shown by authenticator apps.
    pub totp_issuer: String,
    /// Where OIDC callbacks send the browser.
    pub oidc_return_url: String,
    /// OIDC logins of unknown subjects create accounts.
    pub oidc_create_users: bool,
    /// Discovery documents and key sets of the OpenID providers, and their HTTP client.
    pub oidc: crate::oidc::OidcClients,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("public_url", &self.public_url)
            .field("mailer", &self.mailer)
            .finish_non_exhaustive()
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL, lowercased.
pub fn origin_of(url: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not an absolute URL"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("`{url}` is not an http or https URL"));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    Ok(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

impl AuthSettings {
    /// Settings from the command line, with `keys` and `listen` (for the default public
    /// URL).
    pub fn from_args(args: &AuthArgs, keys: KeyRing, listen: SocketAddr) -> Result<Self, String> {
        let public_url = args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        let public_url = public_url.trim_end_matches('/').to_owned();
        let public_origin =
            origin_of(&public_url).map_err(|e| format!("TESSERA_PUBLIC_URL: {e}"))?;
        let mailer = Mailer::new(
            args.smtp_url.as_deref(),
            args.outbox_dir.clone(),
            &args.mail_from,
        )
        .map_err(|e| format!("mail: {e}"))?;
        let oidc_return_url = args
            .oidc_return_url
            .clone()
            .unwrap_or_else(|| format!("{public_url}/"));
        origin_of(&oidc_return_url).map_err(|e| format!("TESSERA_OIDC_RETURN_URL: {e}"))?;
        Ok(AuthSettings {
            keys,
            mailer,
            oidc_return_url,
            oidc_create_users: args.oidc_create_users,
            oidc: Default::default(),
            secure_cookies: public_origin.starts_with("https://"),
            public_url,
            public_origin,
            registration: args.registration,
            session_ttl: Duration::from_secs(args.session_ttl.max(60)),
            lockout_threshold: args.lockout_threshold.max(1),
            lockout_duration: Duration::from_secs(args.lockout_minutes.max(1) * 60),
            clock: Default::default(),
            totp_issuer: args.totp_issuer.clone(),
        })
    }

    /// Defaults for a service without a socket (router tests): a throwaway key, mail to
    /// `outbox`, the public URL `http://localhost`.
    pub fn ephemeral(outbox: std::path::PathBuf) -> Self {
        AuthSettings {
            keys: KeyRing::ephemeral(),
            mailer: Mailer::outbox(outbox),
            public_url: "http://localhost".into(),
            public_origin: "http://localhost".into(),
            secure_cookies: false,
            registration: true,
            session_ttl: Duration::from_secs(12 * 60 * 60),
            lockout_threshold: 10,
            lockout_duration: Duration::from_secs(30 * 60),
            clock: Default::default(),
            totp_issuer: "Tessera".into(),
            oidc_return_url: "http://localhost/".into(),
            oidc_create_users: true,
            oidc: Default::default(),
        }
    }
}

impl AuthSettings {
    /// The current time by [`AuthSettings::clock`].
    pub fn now(&self) -> DateTime<Utc> {
        match self.clock.manual_ms() {
            Some(ms) => DateTime::from_timestamp_millis(ms).unwrap_or_default(),
            None => Utc::now(),
        }
    }

    /// How long the lock that the `failures`-th second-factor failure sets lasts, if it sets
    /// one: every `lockout_threshold`-th failure locks, the first time for
    /// `lockout_duration`, the second for twice that, from the third on for [`LONG_LOCK`].
    /// So at most three thresholds' worth of guesses fit in any 24 hours.
    pub fn lock_for(&self, failures: u32) -> Option<Duration> {
        let t = self.lockout_threshold.max(1);
        if failures == 0 || !failures.is_multiple_of(t) {
            return None;
        }
        Some(match failures / t {
            1 => self.lockout_duration,
            2 => self.lockout_duration * 2,
            _ => LONG_LOCK.max(self.lockout_duration * 2),
        })
    }
}

/// The process's clock, for what no test needs to move: session and mailed-code expiry,
/// purges.
fn now() -> DateTime<Utc> {
    Utc::now()
}

fn after(d: Duration) -> DateTime<Utc> {
    now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The lock from the third on: a day, so that no 24 hours hold more than three
/// thresholds of second-factor guesses.
pub const LONG_LOCK: Duration = Duration::from_secs(24 * 60 * 60);

/// The account named `username` (in any spelling of it: see [`AccountName`]).
pub async fn find_user(
    db: &DatabaseConnection,
    username: &str,
) -> Result<Option<users::Model>, AppError> {
    match AccountName::parse(username) {
        Ok(name) => find_account(db, &name).await,
        Err(_) => Ok(None),
    }
}

/// The account a consumed or peeked token speaks for, if it names one that exists.
pub async fn token_user(
    db: &DatabaseConnection,
    token: &tessera_store::ConsumedToken,
) -> Result<Option<users::Model>, AppError> {
    match token.username.as_deref() {
        Some(name) => find_user(db, name).await,
        None => Ok(None),
    }
}

/// The account of `name`, found by its key.
pub async fn find_account(
    db: &DatabaseConnection,
    name: &AccountName,
) -> Result<Option<users::Model>, AppError> {
    Ok(users::Entity::find()
        .filter(users::Column::UsernameKey.eq(name.key()))
        .one(db)
        .await?)
}

/// Seconds left on the account's lock, if it is locked.
pub fn lock_remaining(settings: &AuthSettings, user: &users::Model) -> Option<u64> {
    let until = user.locked_until?;
    let left = (until - settings.now()).num_milliseconds();
    // Rounded up: a lock with 300 ms left still says "1 s", never "0 s".
    (left > 0).then(|| (left as u64).div_ceil(1000))
}

/// Refuses a locked account with 423.
pub fn ensure_unlocked(settings: &AuthSettings, user: &users::Model) -> Result<(), AppError> {
    match lock_remaining(settings, user) {
        Some(seconds) => Err(AppError::AccountLocked { seconds }),
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
) -> Result<(), AppError> {
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
        .ok_or(AppError::MfaSessionExpired)?;
    ensure_unlocked(settings, &current)?;
    // Unlocked between the statement and the read: refuse this once rather than loop.
    Err(AppError::AccountLocked { seconds: 1 })
}

/// After a failed second-factor check (already counted): logs when it locked the account.
pub async fn second_factor_failed(
    db: &DatabaseConnection,
    settings: &AuthSettings,
    user: &users::Model,
) -> Result<(), AppError> {
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
    }
    Ok(())
}

/// A complete sign-in (second factor passed) or a password reset: the second-factor
/// failure count starts again from zero and any lock ends.
pub async fn record_success(db: &DatabaseConnection, user_id: i64) -> Result<(), AppError> {
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

/// Records one `event` for `key` and refuses with 429 when the policy is exhausted. The
/// hit is recorded before the attempt it guards, so concurrent attempts on any number of
/// workers can never get past the limit; a successful attempt clears the key again
/// ([`clear`]), so what stays counted are the failures. An unreachable store fails closed
/// (503).
pub async fn throttle(limiter: &Limiter, event: EventType, key: &str) -> Result<(), AppError> {
    let event = event_of(event);
    let decision = hit(limiter, &event, key).await?;
    if decision.allowed {
        Ok(())
    } else {
        let window = limiter.policy(&event)?.window;
        Err(AppError::RateLimited {
            event: event.as_str().to_owned(),
            decision,
            window,
        })
    }
}

/// Records one `event` for `key` in the login flows' own namespace of counters, which
/// `/v1` (keys under `app:`) can neither read nor reset.
pub async fn hit(
    limiter: &Limiter,
    event: &Event,
    key: &str,
) -> Result<tessera_limiter::Decision, AppError> {
    Ok(limiter.hit(event, &auth_key(key), 1).await?)
}

/// The limiter's name of one of the login flows' events.
pub fn event_of(event: EventType) -> Event {
    Event::from_static(event.into()).expect("every EventType name is a valid event name")
}

/// The login flows' policies: the 2FA limit (5) stays below the lockout threshold (10), so
/// throttling answers before locking does.
pub fn default_policies() -> tessera_limiter::Policies {
    use tessera_limiter::Policy;
    let mut p = tessera_limiter::Policies::empty();
    for (event, policy) in [
        (EventType::TwoFaAttempt, Policy::per_seconds(5, 5 * 60)),
        (EventType::EmailSend, Policy::per_seconds(3, 10 * 60)),
        (EventType::LoginAttempt, Policy::per_seconds(10, 15 * 60)),
        (EventType::LoginIp, Policy::per_seconds(50, 15 * 60)),
        (
            EventType::PasswordResetSend,
            Policy::per_seconds(3, 60 * 60),
        ),
        (EventType::PasswordResetIp, Policy::per_seconds(10, 60 * 60)),
        (EventType::LoginUserIp, Policy::per_seconds(5, 15 * 60)),
        // The window outlives a pending login (5 minutes), so the limit is per token.
        (EventType::MfaTokenAttempt, Policy::per_seconds(5, 10 * 60)),
        (EventType::MailToAddress, Policy::per_seconds(10, 60 * 60)),
        (EventType::OidcStartIp, Policy::per_seconds(50, 15 * 60)),
    ] {
        p.set(event_of(event), policy);
    }
    p
}

fn auth_key(key: &str) -> String {
    format!("auth:{key}")
}

/// The [`Username`](tessera_entity::Username) of a stored account (checked at creation).
pub fn username_of(user: &users::Model) -> Result<tessera_entity::Username, AppError> {
    tessera_entity::Username::parse(user.username.clone())
        .map_err(|e| AppError::Internal(format!("stored username: {e}")))
}

/// A token store error where "invalid or expired" means `instead` to this route.
pub fn token_error(e: tessera_store::StoreError, instead: AppError) -> AppError {
    match AppError::from(e) {
        AppError::InvalidOrExpiredToken => instead,
        other => other,
    }
}

/// Forgets the recorded `event`s of `key` (after a success).
pub async fn clear(limiter: &Limiter, event: EventType, key: &str) -> Result<(), AppError> {
    Ok(limiter.reset(&event_of(event), &auth_key(key)).await?)
}

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

/// The limiter key of a presented token (its SHA-256, hex): counters about a token never
/// hold the token itself.
pub fn token_key(presented: &str) -> String {
    sha256(presented.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// Starts a session for `user_id`; answers the cookie value (only its hash is stored).
pub async fn start_session(
    db: &DatabaseConnection,
    settings: &AuthSettings,
    user_id: i64,
    ip: Option<String>,
    user_agent: Option<String>,
) -> Result<String, AppError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AppError::Internal(e.to_string()))?;
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
) -> Result<users::Model, AppError> {
    let value = cookie
        .filter(|v| v.starts_with(SESSION_PREFIX) && v.len() < 128)
        .ok_or(AppError::NotAuthenticated)?;
    let session = sessions::Entity::find()
        .filter(sessions::Column::IdHash.eq(sha256(value.as_bytes())))
        .filter(sessions::Column::ExpiresAt.gt(now()))
        .one(db)
        .await?
        .ok_or(AppError::NotAuthenticated)?;
    let user = users::Entity::find_by_id(session.user_id)
        .one(db)
        .await?
        .filter(|u| !u.disabled)
        .ok_or(AppError::NotAuthenticated)?;
    Ok(user)
}

/// Ends the session of a cookie (no error when there is none).
pub async fn end_session(db: &DatabaseConnection, cookie: &str) -> Result<(), AppError> {
    sessions::Entity::delete_many()
        .filter(sessions::Column::IdHash.eq(sha256(cookie.as_bytes())))
        .exec(db)
        .await?;
    Ok(())
}

/// Ends every session of a user (password reset).
pub async fn end_all_sessions(db: &DatabaseConnection, user_id: i64) -> Result<u64, AppError> {
    Ok(sessions::Entity::delete_many()
        .filter(sessions::Column::UserId.eq(user_id))
        .exec(db)
        .await?
        .rows_affected)
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

/// The associated data a TOTP secret is sealed to: its row.
pub fn totp_place(user_id: i64) -> String {
    format!("totp:{user_id}")
}

/// The user's TOTP secret, opened.
pub fn totp_secret(
    settings: &AuthSettings,
    user: &users::Model,
) -> Result<Option<Vec<u8>>, AppError> {
    user.totp_secret
        .as_deref()
        .map(|sealed| {
            settings
                .keys
                .open(&totp_place(user.id), sealed)
                .map_err(|e| AppError::Internal(format!("TOTP secret of user {}: {e}", user.id)))
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
) -> Result<(String, PendingTotp), AppError> {
    if let Some(token) = presented
        && let Ok(pending) = open_totp_setup(tokens, user, token, challenge).await
    {
        return Ok((token.to_owned(), pending));
    }
    let secret = mfa::new_secret();
    let backup_codes: Vec<String> = (0..mfa::BACKUP_CODES)
        .map(|_| mfa::new_backup_code())
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
) -> Result<PendingTotp, AppError> {
    let not_set_up = || AppError::Conflict {
        code: "totp_not_set_up",
        detail: "no TOTP setup in progress for this session: call /auth/totp/setup first".into(),
    };
    let pending = tokens
        .peek(TokenType::TotpSetup, presented, Some(challenge))
        .await
        .map_err(|e| token_error(e, not_set_up()))?;
    if pending.username.as_deref() != Some(user.username.as_str()) {
        return Err(not_set_up());
    }
    let data = pending.payload.data.unwrap_or_default();
    let secret = data["secret"]
        .as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(|| AppError::Internal("a totp_setup token without its secret".into()))?;
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
) -> Result<(), AppError> {
    tokens
        .consume(TokenType::TotpSetup, presented, Some(challenge))
        .await
        .map_err(|e| token_error(e, AppError::InvalidCode))?;
    let hashes = password::hash_codes(pending.backup_codes).await?;
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
        return Err(AppError::Conflict {
            code: "totp_already_enabled",
            detail: "TOTP is already enabled".into(),
        });
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
) -> Result<bool, AppError> {
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
) -> Result<bool, AppError> {
    let unix = settings.now().timestamp().max(0) as u64;
    let Some(step) = mfa::matching_step(secret, code, unix) else {
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

/// Replaces the user's backup codes with 10 new ones; answers them (shown once).
pub async fn replace_backup_codes(
    db: &DatabaseConnection,
    user_id: i64,
) -> Result<Vec<String>, AppError> {
    let codes: Vec<String> = (0..mfa::BACKUP_CODES)
        .map(|_| mfa::new_backup_code())
        .collect();
    let hashes = password::hash_codes(codes.clone()).await?;
    let txn = db.begin().await?;
    store_backup_codes(&txn, user_id, hashes).await?;
    txn.commit().await?;
    Ok(codes)
}

/// Replaces the user's backup codes by `hashes`, inside the caller's transaction.
async fn store_backup_codes(
    txn: &sea_orm::DatabaseTransaction,
    user_id: i64,
    hashes: Vec<String>,
) -> Result<(), AppError> {
    backup_codes::Entity::delete_many()
        .filter(backup_codes::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    backup_codes::Entity::insert_many(hashes.into_iter().map(|h| backup_codes::ActiveModel {
        user_id: Set(user_id),
        code_hash: Set(h),
        used_at: Set(None),
        created_at: Set(now()),
        ..Default::default()
    }))
    .exec(txn)
    .await?;
    Ok(())
}

/// Unused backup codes of a user.
pub async fn backup_codes_remaining(
    db: &DatabaseConnection,
    user_id: i64,
) -> Result<u64, AppError> {
    Ok(backup_codes::Entity::find()
        .filter(backup_codes::Column::UserId.eq(user_id))
        .filter(backup_codes::Column::UsedAt.is_null())
        .count(db)
        .await?)
}

/// Uses a backup code: true when it matched an unused code and this call marked it used.
/// Marking is one conditional update, so of two concurrent uses of one code one wins.
pub async fn use_backup_code(
    db: &DatabaseConnection,
    user_id: i64,
    input: &str,
) -> Result<bool, AppError> {
    let Some(code) = mfa::normalize_backup_code(input) else {
        return Ok(false);
    };
    let unused: Vec<(i64, String)> = backup_codes::Entity::find()
        .filter(backup_codes::Column::UserId.eq(user_id))
        .filter(backup_codes::Column::UsedAt.is_null())
        .all(db)
        .await?
        .into_iter()
        .map(|c| (c.id, c.code_hash))
        .collect();
    let Some(id) = password::first_match(code, unused).await? else {
        return Ok(false);
    };
    let marked = backup_codes::Entity::update_many()
        .col_expr(backup_codes::Column::UsedAt, Expr::value(Some(now())))
        .filter(backup_codes::Column::Id.eq(id))
        .filter(backup_codes::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    Ok(marked.rows_affected == 1)
}

/// The account's mail address; 409 `email_missing` without one.
pub fn mail_address(user: &users::Model) -> Result<&str, AppError> {
    user.email.as_deref().ok_or_else(|| AppError::Conflict {
        code: "email_missing",
        detail: "the account has no mail address".into(),
    })
}

/// Turns a second factor on (`totp_enabled` or `email_otp_enabled`); an enforced setup is
/// then satisfied.
pub async fn enable_factor(
    db: &DatabaseConnection,
    user_id: i64,
    factor: users::Column,
) -> Result<(), AppError> {
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
) -> Result<(), AppError> {
    let to = mail_address(user)?;
    mail_slot(limiter, to).await?;
    let code = mfa::new_email_code();
    let hash = password::hash_code(code.clone()).await?;
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
        .send(to, "Your sign-in code", code_mail(&code, "sign in"))
        .await?;
    Ok(())
}

/// Takes one mail's place in the `mail_to_address` limit of `to`, before any work for the
/// mail is done. Every mail Tessera sends goes through here: several accounts may share
/// an address, so only a limit on the address bounds what reaches one mailbox.
pub async fn mail_slot(limiter: &Limiter, to: &str) -> Result<(), AppError> {
    throttle(limiter, EventType::MailToAddress, &to.trim().to_lowercase()).await
}

/// The body of a mail carrying `code`.
pub fn code_mail(code: &str, purpose: &str) -> String {
    format!(
        "Your code to {purpose} is: {code}\n\nIt expires in 10 minutes. If you did not ask \
         for it, someone knows your password: change it.\n"
    )
}

/// Checks a mailed login code; a match is used up (deleted) by exactly one caller.
pub async fn use_login_code(
    db: &DatabaseConnection,
    user_id: i64,
    input: &str,
) -> Result<bool, AppError> {
    if !mfa::is_email_code(input) {
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
    if !password::code_matches(input.trim().to_owned(), hash.clone()).await? {
        return Ok(false);
    }
    let taken = email_otp_codes::Entity::delete_many()
        .filter(email_otp_codes::Column::UserId.eq(user_id))
        .filter(email_otp_codes::Column::CodeHash.eq(hash))
        .exec(db)
        .await?;
    Ok(taken.rows_affected == 1)
}

/// The kinds of token that carry a login in progress or a factor being set up: what a
/// password reset, a password change, disabling the account or turning a factor off must
/// end, since each was obtained under the state that just changed.
pub const PENDING_KINDS: [TokenType; 5] = [
    TokenType::PreAuth,
    TokenType::MfaEnforce,
    TokenType::OidcExchange,
    TokenType::EmailOtpSetup,
    TokenType::TotpSetup,
];

/// Revokes every pending login and setup of `username` ([`PENDING_KINDS`]).
pub async fn revoke_pending(tokens: &Tokens, username: &Username) -> Result<u64, AppError> {
    let mut revoked = 0;
    for kind in PENDING_KINDS {
        revoked += tokens.revoke(kind, username).await?;
    }
    Ok(revoked)
}

/// Deletes expired sessions, mailed codes, and TOTP windows past their retention.
pub async fn purge(db: &DatabaseConnection) -> Result<u64, AppError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://Auth.Example.com/app/").unwrap(),
            "https://auth.example.com"
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(origin_of("ftp://x").is_err());
        assert!(origin_of("/relative").is_err());
        assert!(origin_of("http://").is_err());
    }

    #[test]
    fn usage_outlives_the_accepted_skew() {
        let accepted = (2 * mfa::SKEW + 1) * mfa::STEP;
        assert!(TOTP_USAGE_RETENTION.as_secs() >= accepted);
    }
}
