//! `/auth`: the end-user login flows — password, second factor (TOTP, backup code, mailed
//! code), MFA enforcement, password reset, sessions.
//!
//! Every step may land on a different worker: what one step hands to the next is a token
//! in the store (`pre_auth`, `mfa_enforce`, `email_otp_setup`, `password_reset`) bound to
//! an HttpOnly cookie where a script could otherwise steal it, never worker memory.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tessera_entity::{
    AccountName, AuthEphemeralToken, Challenge, EventType, TokenType, backup_codes, users,
};
use utoipa::ToSchema;

use crate::client_ip::ClientIp;
use crate::error::Problem;
use crate::extract::{ApiJson, is_json};
use crate::login::{self, AuthSettings};
use crate::password::{self, Password};
use crate::{AppError, AppState, mfa};

/// The error answers every `/auth` POST can give besides its own: a body that is not
/// JSON or not sent as JSON, a bad field, a cross-site request, an oversized body, a store
/// that cannot be reached or a full hashing queue.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum AuthErrors {
    /// The body is not JSON: `malformed_json`.
    #[response(status = 400, content_type = "application/problem+json")]
    MalformedJson(Problem),
    /// A cross-site request: `csrf_rejected`.
    #[response(status = 403, content_type = "application/problem+json")]
    CsrfRejected(Problem),
    /// A state that does not allow this now: `totp_already_enabled`, `totp_not_set_up`,
    /// `totp_not_enabled`, `email_otp_not_enabled`, `email_missing`, `username_taken`,
    /// `too_many_accounts_for_address`.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// The body is over the size limit: `body_too_large`.
    #[response(status = 413, content_type = "application/problem+json")]
    BodyTooLarge(Problem),
    /// The body is not sent as JSON: `unsupported_media_type`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// A field is missing, unknown or invalid (named in `field`): `validation_failed`.
    #[response(status = 422, content_type = "application/problem+json")]
    Validation(Problem),
    /// Throttled: `rate_limited`, with `Retry-After`.
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
    /// The store cannot be reached (`store_unavailable`), the request took too long
    /// (`timeout`), the hashing queue is full (`overloaded`) or mail failed
    /// (`mail_unavailable`).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The session cookie.
pub const SESSION_COOKIE: &str = "tessera_session";
/// The cookie that binds an `mfa_token` to the browser it was issued to.
pub const CHALLENGE_COOKIE: &str = "tessera_challenge";
/// The cookie that carries an email-OTP setup token.
pub const EMAIL_OTP_COOKIE: &str = "tessera_email_otp";
/// The cookie that carries a TOTP setup in progress (a `totp_setup` token).
pub const TOTP_SETUP_COOKIE: &str = "tessera_totp_setup";
/// The cookie a complete sign-in leaves: this device may try passwords for that account
/// beyond the per-username throttle that strangers share.
pub const DEVICE_COOKIE: &str = "tessera_device";

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
        .route("/auth/2fa/verify", post(verify))
        .route("/auth/2fa/email/send", post(email_send))
        .route("/auth/totp/setup", post(totp_setup))
        .route("/auth/totp/confirm", post(totp_confirm))
        .route("/auth/totp/status", get(totp_status))
        .route("/auth/totp/disable", post(totp_disable))
        .route(
            "/auth/totp/backup-codes/regenerate",
            post(regenerate_backup_codes),
        )
        .route("/auth/totp/enforce-setup", post(enforce_setup))
        .route("/auth/totp/enforce-confirm", post(enforce_confirm))
        .route("/auth/email-otp/enable", post(email_otp_enable))
        .route("/auth/email-otp/confirm", post(email_otp_confirm))
        .route("/auth/password-reset/request", post(reset_request))
        .route("/auth/password-reset/confirm", post(reset_confirm))
        .route("/auth/me", get(me))
        .route("/auth/logout", post(logout))
        .route("/auth/oidc/exchange", post(super::oidc::exchange))
        .route_layer(middleware::from_fn_with_state(state, csrf))
}

/// Refuses cross-site state changes: a POST must come from the public origin when it names
/// one, and must be JSON (a cross-site form cannot send JSON without a CORS preflight,
/// which Tessera never grants).
async fn csrf(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let same = origin
                .to_str()
                .map(|o| o.eq_ignore_ascii_case(&state.auth.public_origin))
                .unwrap_or(false);
            if !same {
                return AppError::CsrfRejected.into_response();
            }
        }
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return AppError::UnsupportedMediaType.into_response();
        }
    }
    next.run(req).await
}

fn cookie(
    settings: &AuthSettings,
    name: &'static str,
    value: String,
    max_age: Duration,
) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(settings.secure_cookies)
        .path("/")
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        ))
        .build()
}

/// The device cookie of `user` ([`DEVICE_COOKIE`]).
fn device_cookie(settings: &AuthSettings, user: &users::Model) -> Cookie<'static> {
    cookie(
        settings,
        DEVICE_COOKIE,
        login::device_token(settings, &user.username),
        login::DEVICE_TTL,
    )
}

fn removal(name: &'static str) -> Cookie<'static> {
    Cookie::build((name, "")).path("/").build()
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn challenge_of(jar: &CookieJar) -> Result<Challenge, AppError> {
    jar.get(CHALLENGE_COOKIE)
        .map(|c| Challenge::new(c.value()))
        .ok_or(AppError::MfaSessionExpired)
}

/// Answer of a step that can sign in.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Signed in: the session cookie is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<bool>,
    /// The signed-in user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A second factor is needed: send it to `/auth/2fa/verify` with `mfa_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa_required: Option<bool>,
    /// An admin requires a second factor: set one up with `/auth/totp/enforce-setup`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa_setup_required: Option<bool>,
    /// The second factors on offer: `totp`, `backup_code`, `email_otp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<&'static str>>,
    /// The pending login, usable only with the challenge cookie set beside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa_token: Option<String>,
}

/// Signs `user` in: a session row and its cookie.
pub(crate) async fn signed_in(
    state: &AppState,
    jar: CookieJar,
    user: &users::Model,
    ip: &ClientIp,
    headers: &HeaderMap,
) -> Result<(CookieJar, Json<LoginResponse>), AppError> {
    let value = login::start_session(
        &state.db,
        &state.auth,
        user.id,
        ip.addr.map(|i| i.to_string()),
        user_agent(headers),
    )
    .await?;
    metrics::counter!("tessera_logins_total", "outcome" => "session").increment(1);
    let jar = jar
        .add(cookie(
            &state.auth,
            SESSION_COOKIE,
            value,
            state.auth.session_ttl,
        ))
        .add(device_cookie(&state.auth, user))
        .remove(removal(CHALLENGE_COOKIE));
    Ok((
        jar,
        Json(LoginResponse {
            authenticated: Some(true),
            username: Some(user.username.clone()),
            ..Default::default()
        }),
    ))
}

/// After a correct password (or any first step): a session, the second-factor step, or the
/// enforced setup.
pub(crate) async fn after_first_factor(
    state: &AppState,
    jar: CookieJar,
    user: &users::Model,
    ip: &ClientIp,
    headers: &HeaderMap,
) -> Result<(CookieJar, Json<LoginResponse>), AppError> {
    let methods = login::methods(user);
    let username = login::username_of(user)?;
    let (token, body) = if !methods.is_empty() {
        let challenge = Challenge::generate();
        let issued = state
            .tokens
            .issue(AuthEphemeralToken::new_pre_auth(
                username,
                Some(challenge.clone()),
            ))
            .await?;
        (
            (challenge, issued),
            LoginResponse {
                mfa_required: Some(true),
                methods: Some(methods),
                ..Default::default()
            },
        )
    } else if user.mfa_enforce_pending {
        let challenge = Challenge::generate();
        let issued = state
            .tokens
            .issue(AuthEphemeralToken::new_mfa_enforce(
                username,
                challenge.clone(),
            ))
            .await?;
        (
            (challenge, issued),
            LoginResponse {
                mfa_setup_required: Some(true),
                ..Default::default()
            },
        )
    } else {
        return signed_in(state, jar, user, ip, headers).await;
    };
    let (challenge, issued) = token;
    let ttl = Duration::from_secs(TokenType::PreAuth.default_ttl_seconds());
    let jar = jar.add(cookie(
        &state.auth,
        CHALLENGE_COOKIE,
        challenge.expose().to_owned(),
        ttl,
    ));
    metrics::counter!("tessera_logins_total", "outcome" => "second_factor").increment(1);
    Ok((
        jar,
        Json(LoginResponse {
            mfa_token: Some(issued.token.expose().to_owned()),
            ..body
        }),
    ))
}

/// A new account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 1 to 255 characters.
    pub username: String,
    /// Where codes and reset links go.
    pub email: String,
    /// 8 to 1024 characters.
    pub password: String,
}

/// The created account.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterResponse {
    /// The login name.
    pub username: String,
    /// The mail address.
    pub email: Option<String>,
}

/// Create an account (sign in next with `/auth/login`).
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, description = "Success", body = RegisterResponse),
        (status = 403, description = "registration_disabled", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "username_taken", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn register(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), AppError> {
    if !state.auth.registration {
        return Err(AppError::Forbidden {
            code: "registration_disabled",
            detail: "registration is switched off (TESSERA_REGISTRATION=false)".into(),
        });
    }
    let username = AccountName::parse(&req.username)
        .map_err(|e| AppError::field("username", e.to_string()))?;
    let password = Password::parse(req.password)?;
    // As at login: the hashing place first, so an overloaded worker writes nothing.
    let place = password::reserve(password::Priority::Anyone)?;
    login::throttle(&state.limiter, EventType::LoginIp, &ip.key()).await?;
    let user =
        crate::users::create(&state.db, username, Some(req.email), password, Some(place)).await?;
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            username: user.username,
            email: user.email,
        }),
    ))
}

/// A password step.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The login name.
    pub username: String,
    /// The password.
    pub password: String,
}

/// Sign in with a password: a session, or the second-factor step.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, description = "Success", body = LoginResponse),
        (status = 401, description = "invalid_credentials", body = Problem, content_type = "application/problem+json"),
        (status = 423, description = "account_locked", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<(CookieJar, Json<LoginResponse>), AppError> {
    let account = AccountName::parse(&req.username).ok();
    // A device that completed a sign-in to this name before: its sealed cookie names it.
    let own_device = account.as_ref().is_some_and(|a| {
        jar.get(DEVICE_COOKIE)
            .is_some_and(|c| login::is_device_of(&state.auth, c.value(), a))
    });
    // A place in the hashing queue first, before any other work: an overloaded worker
    // refuses at once, without a database write. Known devices have a lane of their own,
    // so a flood cannot queue in front of them.
    let place = password::reserve(if own_device {
        password::Priority::KnownDevice
    } else {
        password::Priority::Anyone
    })?;
    login::throttle(&state.limiter, EventType::LoginIp, &ip.key()).await?;
    let user = match &account {
        Some(a) => login::find_account(&state.db, a).await?,
        None => None,
    };
    // Wrong passwords are throttled, never locked, and the same way for a name that exists
    // and one that does not: per username (except from the owner's own device, so a
    // stranger cannot keep the owner out), per username and address, per address (above).
    // Counted by the name's key, so no spelling of it has a budget of its own.
    let user_ip = account
        .as_ref()
        .map(|a| format!("{}|{}", a.key(), ip.key()));
    if let (Some(a), Some(user_ip)) = (&account, &user_ip) {
        if !own_device {
            login::throttle(&state.limiter, EventType::LoginAttempt, a.key()).await?;
        }
        login::throttle(&state.limiter, EventType::LoginUserIp, user_ip).await?;
    }
    // An unknown user costs one argon2id check too (against a decoy), like a wrong password.
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let good = password::verify(place, req.password, stored).await?;
    let (user, account, user_ip) = match (user, account, user_ip) {
        (Some(u), Some(a), Some(k)) if good && !u.disabled => (u, a, k),
        _ => {
            metrics::counter!("tessera_logins_total", "outcome" => "failure").increment(1);
            return Err(AppError::InvalidCredentials);
        }
    };
    // Only now, after the right password, may the answer say the account is locked.
    login::ensure_unlocked(&state.auth, &user)?;
    login::clear(&state.limiter, EventType::LoginAttempt, account.key()).await?;
    login::clear(&state.limiter, EventType::LoginUserIp, &user_ip).await?;
    after_first_factor(&state, jar, &user, &ip, &headers).await
}

/// A second factor: exactly one of `code`, `backup_code`, `email_code`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The token from `/auth/login`.
    pub mfa_token: String,
    /// A TOTP code.
    pub code: Option<String>,
    /// A backup code (`K7QD-M2XA`; case, spaces and the dash do not matter).
    pub backup_code: Option<String>,
    /// A code from `/auth/2fa/email/send`.
    pub email_code: Option<String>,
}

/// The pending user of an mfa_token and its cookie, usable (not disabled) and unlocked.
async fn pending_user(
    state: &AppState,
    kind: TokenType,
    mfa_token: &str,
    jar: &CookieJar,
) -> Result<users::Model, AppError> {
    let challenge = challenge_of(jar)?;
    let pending = state
        .tokens
        .peek(kind, mfa_token, Some(&challenge))
        .await
        .map_err(expired)?;
    let user = login::token_user(&state.db, &pending)
        .await?
        .filter(|u| !u.disabled)
        .ok_or(AppError::MfaSessionExpired)?;
    login::ensure_unlocked(&state.auth, &user)?;
    Ok(user)
}

/// One attempt on a pending login: of all attempts on one `mfa_token`, on any workers, at
/// most the `mfa_token_attempt` limit are checked; the one past it spends the token.
async fn pending_attempt(
    state: &AppState,
    kind: TokenType,
    mfa_token: &str,
    jar: &CookieJar,
) -> Result<bool, AppError> {
    let key = login::token_key(mfa_token);
    let event = login::event_of(EventType::MfaTokenAttempt);
    let decision = login::hit(&state.limiter, &event, &key).await?;
    if !decision.allowed {
        spend_pending(state, kind, mfa_token, jar).await.ok();
        return Err(AppError::MfaSessionExpired);
    }
    Ok(decision.remaining == 0)
}

/// Checks one second factor of `user`, wherever it is asked for (sign-in, enforced setup,
/// turning a factor on, re-authentication): throttled per user, counted toward the lockout
/// before it is checked ([`login::second_factor_attempt`]), `invalid_code` when `check`
/// answers false.
async fn second_factor(
    state: &AppState,
    user: &users::Model,
    check: impl std::future::Future<Output = Result<bool, AppError>>,
) -> Result<(), AppError> {
    login::throttle(&state.limiter, EventType::TwoFaAttempt, &user.username).await?;
    login::second_factor_attempt(&state.db, &state.auth, user).await?;
    if check.await? {
        // A factor the account holder controls was proven: the failures were theirs.
        login::record_success(&state.db, user.id).await?;
        login::clear(&state.limiter, EventType::TwoFaAttempt, &user.username).await?;
        Ok(())
    } else {
        login::second_factor_failed(&state.db, &state.auth, user).await?;
        metrics::counter!("tessera_logins_total", "outcome" => "failure").increment(1);
        Err(AppError::InvalidCode)
    }
}

/// `attempt` (a second-factor check) on a pending login: at most the `mfa_token_attempt`
/// limit of them per `mfa_token`; a wrong code that reaches it spends the token.
async fn on_pending<T>(
    state: &AppState,
    kind: TokenType,
    mfa_token: &str,
    jar: &CookieJar,
    attempt: impl std::future::Future<Output = Result<T, AppError>>,
) -> Result<T, AppError> {
    let last = pending_attempt(state, kind, mfa_token, jar).await?;
    let result = attempt.await;
    if last && matches!(result, Err(AppError::InvalidCode)) {
        spend_pending(state, kind, mfa_token, jar).await.ok();
    }
    result
}

/// Spends a pending login (`pre_auth` or `mfa_enforce`) with its cookie, on success only;
/// a concurrent success that spent it first leaves `mfa_session_expired`.
async fn spend_pending(
    state: &AppState,
    kind: TokenType,
    mfa_token: &str,
    jar: &CookieJar,
) -> Result<(), AppError> {
    let challenge = challenge_of(jar)?;
    state
        .tokens
        .consume(kind, mfa_token, Some(&challenge))
        .await
        .map_err(expired)?;
    Ok(())
}

fn expired(e: tessera_store::StoreError) -> AppError {
    login::token_error(e, AppError::MfaSessionExpired)
}

/// Complete a login with a second factor.
#[utoipa::path(post, path = "/auth/2fa/verify", tag = "auth", request_body = VerifyRequest,
    responses((status = 200, description = "Success", body = LoginResponse),
        (status = 401, description = "invalid_code or mfa_session_expired", body = Problem, content_type = "application/problem+json"),
        (status = 423, description = "account_locked", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn verify(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<(CookieJar, Json<LoginResponse>), AppError> {
    let given = [&req.code, &req.backup_code, &req.email_code]
        .iter()
        .filter(|c| c.is_some())
        .count();
    if given != 1 {
        return Err(AppError::field(
            "code",
            "send exactly one of `code`, `backup_code`, `email_code`",
        ));
    }
    let user = pending_user(&state, TokenType::PreAuth, &req.mfa_token, &jar).await?;
    let check = async {
        Ok(if let Some(code) = &req.code {
            user.totp_enabled && login::check_totp(&state.db, &state.auth, &user, code).await?
        } else if let Some(code) = &req.backup_code {
            user.totp_enabled && login::use_backup_code(&state.db, user.id, code).await?
        } else if let Some(code) = &req.email_code {
            user.email_otp_enabled && login::use_login_code(&state.db, user.id, code).await?
        } else {
            false
        })
    };
    let attempt = second_factor(&state, &user, check);
    on_pending(&state, TokenType::PreAuth, &req.mfa_token, &jar, attempt).await?;
    // The pending login is spent only now, on success; a concurrent success already spent
    // it.
    spend_pending(&state, TokenType::PreAuth, &req.mfa_token, &jar).await?;
    signed_in(&state, jar, &user, &ip, &headers).await
}

/// A pending login.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaTokenRequest {
    /// The token from `/auth/login`.
    pub mfa_token: String,
}

/// A mail was sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct SentResponse {
    /// Always true.
    pub sent: bool,
}

/// Mail a 6-digit sign-in code to the pending user.
#[utoipa::path(post, path = "/auth/2fa/email/send", tag = "auth", request_body = MfaTokenRequest,
    responses((status = 202, description = "Success", body = SentResponse),
        (status = 401, description = "mfa_session_expired", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn email_send(
    State(state): State<AppState>,
    jar: CookieJar,
    ApiJson(req): ApiJson<MfaTokenRequest>,
) -> Result<(StatusCode, Json<SentResponse>), AppError> {
    let user = pending_user(&state, TokenType::PreAuth, &req.mfa_token, &jar).await?;
    if !user.email_otp_enabled {
        return Err(AppError::Conflict {
            code: "email_otp_not_enabled",
            detail: "email codes are not enabled for this account".into(),
        });
    }
    login::throttle(&state.limiter, EventType::EmailSend, &user.username).await?;
    login::send_login_code(&state.db, &state.limiter, &state.auth, &user).await?;
    Ok((StatusCode::ACCEPTED, Json(SentResponse { sent: true })))
}

/// What an authenticator app needs, and the backup codes (shown once).
#[derive(Serialize, ToSchema)]
pub struct SetupResponse {
    /// The secret in base32.
    pub secret: String,
    /// `otpauth://totp/...`.
    pub otpauth_uri: String,
    /// The URI as a QR code: a PNG, base64.
    pub qr_png_base64: String,
    /// 10 single-use backup codes.
    pub backup_codes: Vec<String>,
}

/// Starts (or, for the same caller, repeats) a TOTP setup bound to `challenge`; the setup
/// token travels in the `tessera_totp_setup` cookie.
async fn setup_for(
    state: &AppState,
    jar: CookieJar,
    user: &users::Model,
    challenge: &Challenge,
) -> Result<(CookieJar, Json<SetupResponse>), AppError> {
    if user.totp_enabled {
        return Err(AppError::Conflict {
            code: "totp_already_enabled",
            detail: "TOTP is already enabled; disable it first".into(),
        });
    }
    let presented = jar.get(TOTP_SETUP_COOKIE).map(|c| c.value());
    let (token, pending) =
        login::start_totp_setup(&state.tokens, user, challenge, presented).await?;
    let e = mfa::enrolment(&pending.secret, &state.auth.totp_issuer, &user.username)
        .map_err(AppError::Internal)?;
    let ttl = Duration::from_secs(TokenType::TotpSetup.default_ttl_seconds());
    Ok((
        jar.add(cookie(&state.auth, TOTP_SETUP_COOKIE, token, ttl)),
        Json(SetupResponse {
            secret: e.secret,
            otpauth_uri: e.otpauth_uri,
            qr_png_base64: e.qr_png_base64,
            backup_codes: pending.backup_codes,
        }),
    ))
}

/// The challenge a TOTP setup of a signed-in user is bound to: the session cookie itself.
fn session_challenge(jar: &CookieJar) -> Result<Challenge, AppError> {
    session_of(jar)
        .map(Challenge::new)
        .ok_or(AppError::NotAuthenticated)
}

fn session_of(jar: &CookieJar) -> Option<&str> {
    jar.get(SESSION_COOKIE).map(|c| c.value())
}

/// Start TOTP setup for the signed-in user; repeated calls from the same session give the
/// same secret and backup codes until it is confirmed, another session gets its own.
#[utoipa::path(post, path = "/auth/totp/setup", tag = "auth",
    responses((status = 200, description = "Success", body = SetupResponse),
        (status = 401, description = "not_authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "totp_already_enabled", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn totp_setup(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<(CookieJar, Json<SetupResponse>), AppError> {
    let user = login::session_user(&state.db, session_of(&jar)).await?;
    let challenge = session_challenge(&jar)?;
    setup_for(&state, jar, &user, &challenge).await
}

/// A code.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// A TOTP code.
    pub code: String,
}

/// TOTP state of the signed-in user.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpStatus {
    /// TOTP is required at sign-in.
    pub enabled: bool,
    /// Unused backup codes.
    pub backup_codes_remaining: u64,
}

/// Confirms the caller's setup (the `tessera_totp_setup` cookie, bound to `challenge`)
/// with a code of its secret: a second-factor check like any other, then TOTP is on.
async fn enable_totp(
    state: &AppState,
    jar: &CookieJar,
    user: &users::Model,
    challenge: &Challenge,
    code: &str,
) -> Result<(), AppError> {
    if user.totp_enabled {
        return Err(AppError::Conflict {
            code: "totp_already_enabled",
            detail: "TOTP is already enabled".into(),
        });
    }
    let presented = jar
        .get(TOTP_SETUP_COOKIE)
        .map(|c| c.value())
        .unwrap_or_default();
    let pending = login::open_totp_setup(&state.tokens, user, presented, challenge).await?;
    let check = login::check_totp_with(&state.db, &state.auth, user.id, &pending.secret, code);
    second_factor(state, user, check).await?;
    login::finish_totp_setup(
        &state.db,
        &state.auth,
        &state.tokens,
        user,
        presented,
        challenge,
        pending,
    )
    .await
}

/// Confirm TOTP setup with a current code: TOTP is then required at sign-in.
#[utoipa::path(post, path = "/auth/totp/confirm", tag = "auth", request_body = CodeRequest,
    responses((status = 200, description = "Success", body = TotpStatus),
        (status = 401, description = "invalid_code", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    jar: CookieJar,
    ApiJson(req): ApiJson<CodeRequest>,
) -> Result<(CookieJar, Json<TotpStatus>), AppError> {
    let user = login::session_user(&state.db, session_of(&jar)).await?;
    let challenge = session_challenge(&jar)?;
    enable_totp(&state, &jar, &user, &challenge, &req.code).await?;
    let status = status_of(&state, user.id, true).await?;
    Ok((jar.remove(removal(TOTP_SETUP_COOKIE)), status))
}

async fn status_of(
    state: &AppState,
    user_id: i64,
    enabled: bool,
) -> Result<Json<TotpStatus>, AppError> {
    Ok(Json(TotpStatus {
        enabled,
        backup_codes_remaining: if enabled {
            login::backup_codes_remaining(&state.db, user_id).await?
        } else {
            0
        },
    }))
}

/// TOTP state of the signed-in user.
#[utoipa::path(get, path = "/auth/totp/status", tag = "auth",
    responses((status = 200, description = "Success", body = TotpStatus),
        (status = 401, description = "not_authenticated", body = Problem, content_type = "application/problem+json")))]
pub async fn totp_status(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<Json<TotpStatus>, AppError> {
    let user = login::session_user(&state.db, session_of(&jar)).await?;
    status_of(&state, user.id, user.totp_enabled).await
}

/// The password and a current TOTP code.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordCodeRequest {
    /// The account's password. Left out for an account that has none (one created by an
    /// OIDC login): the code alone proves it.
    #[serde(default)]
    pub password: Option<String>,
    /// A current TOTP code.
    pub code: String,
}

/// Checks the password and a TOTP code of the signed-in user (for disable / regenerate).
/// An account with a password must send it; an account without one (created by an OIDC
/// login) must not, and proves itself with the code.
async fn reauthenticate(
    state: &AppState,
    jar: &CookieJar,
    req: PasswordCodeRequest,
) -> Result<users::Model, AppError> {
    let user = login::session_user(&state.db, session_of(jar)).await?;
    if !user.totp_enabled {
        return Err(AppError::Conflict {
            code: "totp_not_enabled",
            detail: "TOTP is not enabled".into(),
        });
    }
    // Password and code are one attempt, counted toward the lockout like a sign-in's.
    let check = async {
        let password_ok = match (req.password, &user.password_hash) {
            (Some(given), Some(_)) => {
                let place = password::reserve(password::Priority::Anyone)?;
                password::verify(place, given, user.password_hash.clone()).await?
            }
            (None, None) => true,
            _ => false,
        };
        if !password_ok {
            return Err(AppError::InvalidCredentials);
        }
        login::check_totp(&state.db, &state.auth, &user, &req.code).await
    };
    second_factor(state, &user, check).await?;
    Ok(user)
}

/// Turn TOTP off (and drop the backup codes).
#[utoipa::path(post, path = "/auth/totp/disable", tag = "auth", request_body = PasswordCodeRequest,
    responses((status = 200, description = "Success", body = TotpStatus),
        (status = 401, description = "invalid_credentials or invalid_code", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn totp_disable(
    State(state): State<AppState>,
    jar: CookieJar,
    ApiJson(req): ApiJson<PasswordCodeRequest>,
) -> Result<Json<TotpStatus>, AppError> {
    let user = reauthenticate(&state, &jar, req).await?;
    users::Entity::update_many()
        .col_expr(users::Column::TotpEnabled, Expr::value(false))
        .col_expr(
            users::Column::TotpSecret,
            Expr::value(Option::<Vec<u8>>::None),
        )
        .filter(users::Column::Id.eq(user.id))
        .exec(&state.db)
        .await?;
    backup_codes::Entity::delete_many()
        .filter(backup_codes::Column::UserId.eq(user.id))
        .exec(&state.db)
        .await?;
    login::revoke_pending(&state.tokens, &login::username_of(&user)?).await?;
    status_of(&state, user.id, false).await
}

/// New backup codes.
#[derive(Serialize, ToSchema)]
pub struct BackupCodesResponse {
    /// 10 single-use codes; the previous ones no longer work.
    pub backup_codes: Vec<String>,
}

/// Replace the backup codes.
#[utoipa::path(post, path = "/auth/totp/backup-codes/regenerate", tag = "auth", request_body = PasswordCodeRequest,
    responses((status = 200, description = "Success", body = BackupCodesResponse),
        (status = 401, description = "invalid_credentials or invalid_code", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn regenerate_backup_codes(
    State(state): State<AppState>,
    jar: CookieJar,
    ApiJson(req): ApiJson<PasswordCodeRequest>,
) -> Result<Json<BackupCodesResponse>, AppError> {
    let user = reauthenticate(&state, &jar, req).await?;
    let backup_codes = login::replace_backup_codes(&state.db, user.id).await?;
    Ok(Json(BackupCodesResponse { backup_codes }))
}

/// Set up TOTP with an enforcement token (an admin requires a second factor).
#[utoipa::path(post, path = "/auth/totp/enforce-setup", tag = "auth", request_body = MfaTokenRequest,
    responses((status = 200, description = "Success", body = SetupResponse),
        (status = 401, description = "mfa_session_expired", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn enforce_setup(
    State(state): State<AppState>,
    jar: CookieJar,
    ApiJson(req): ApiJson<MfaTokenRequest>,
) -> Result<(CookieJar, Json<SetupResponse>), AppError> {
    let user = pending_user(&state, TokenType::MfaEnforce, &req.mfa_token, &jar).await?;
    let challenge = challenge_of(&jar)?;
    setup_for(&state, jar, &user, &challenge).await
}

/// An enforcement token and a TOTP code.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnforceConfirmRequest {
    /// The token from `/auth/login` (`mfa_setup_required`).
    pub mfa_token: String,
    /// A current TOTP code of the new secret.
    pub code: String,
}

/// Confirm the enforced TOTP setup: TOTP is enabled and the user signed in.
#[utoipa::path(post, path = "/auth/totp/enforce-confirm", tag = "auth", request_body = EnforceConfirmRequest,
    responses((status = 200, description = "Success", body = LoginResponse),
        (status = 401, description = "invalid_code or mfa_session_expired", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn enforce_confirm(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    ApiJson(req): ApiJson<EnforceConfirmRequest>,
) -> Result<(CookieJar, Json<LoginResponse>), AppError> {
    let user = pending_user(&state, TokenType::MfaEnforce, &req.mfa_token, &jar).await?;
    let challenge = challenge_of(&jar)?;
    let attempt = enable_totp(&state, &jar, &user, &challenge, &req.code);
    on_pending(&state, TokenType::MfaEnforce, &req.mfa_token, &jar, attempt).await?;
    spend_pending(&state, TokenType::MfaEnforce, &req.mfa_token, &jar).await?;
    let jar = jar.remove(removal(TOTP_SETUP_COOKIE));
    signed_in(&state, jar, &user, &ip, &headers).await
}

/// An email-OTP setup in progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct SetupTokenResponse {
    /// The `email_otp_setup` token (also set as the `tessera_email_otp` cookie).
    pub setup_token: String,
}

/// Mail a code to the signed-in user's address to turn email codes on.
#[utoipa::path(post, path = "/auth/email-otp/enable", tag = "auth",
    responses((status = 200, description = "Success", body = SetupTokenResponse),
        (status = 401, description = "not_authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn email_otp_enable(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<(CookieJar, Json<SetupTokenResponse>), AppError> {
    let user = login::session_user(&state.db, session_of(&jar)).await?;
    let to = login::mail_address(&user)?.to_owned();
    login::throttle(&state.limiter, EventType::EmailSend, &user.username).await?;
    login::mail_slot(&state.limiter, &to).await?;
    let code = mfa::new_email_code();
    let hash = password::hash_code(code.clone()).await?;
    let username = login::username_of(&user)?;
    let issued = state
        .tokens
        .issue(AuthEphemeralToken::new_email_otp_setup(username, hash))
        .await?;
    state
        .auth
        .mailer
        .send(
            &to,
            "Confirm email sign-in codes",
            login::code_mail(&code, "turn on email sign-in codes"),
        )
        .await?;
    let token = issued.token.expose().to_owned();
    let ttl = Duration::from_secs(TokenType::EmailOtpSetup.default_ttl_seconds());
    Ok((
        jar.add(cookie(&state.auth, EMAIL_OTP_COOKIE, token.clone(), ttl)),
        Json(SetupTokenResponse { setup_token: token }),
    ))
}

/// The mailed code, with the setup token from the cookie or the body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailConfirmRequest {
    /// The mailed code.
    pub code: String,
    /// The setup token, when the cookie is not sent.
    pub setup_token: Option<String>,
}

/// Email-OTP state.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmailOtpStatus {
    /// Email codes are offered at sign-in.
    pub email_otp_enabled: bool,
}

/// Confirm the mailed code: email codes become a second factor.
#[utoipa::path(post, path = "/auth/email-otp/confirm", tag = "auth", request_body = EmailConfirmRequest,
    responses((status = 200, description = "Success", body = EmailOtpStatus),
        (status = 401, description = "invalid_code", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn email_otp_confirm(
    State(state): State<AppState>,
    jar: CookieJar,
    ApiJson(req): ApiJson<EmailConfirmRequest>,
) -> Result<(CookieJar, Json<EmailOtpStatus>), AppError> {
    let user = login::session_user(&state.db, session_of(&jar)).await?;
    let token = req
        .setup_token
        .clone()
        .or_else(|| jar.get(EMAIL_OTP_COOKIE).map(|c| c.value().to_owned()))
        .ok_or(AppError::InvalidCode)?;
    let check = async {
        let pending = state
            .tokens
            .peek(TokenType::EmailOtpSetup, &token, None)
            .await
            .map_err(|e| login::token_error(e, AppError::InvalidCode))?;
        let hash = pending.payload.code_hash.clone().unwrap_or_default();
        let matches = pending.username.as_deref() == Some(user.username.as_str())
            && mfa::is_email_code(&req.code)
            && password::code_matches(req.code.trim().to_owned(), hash).await?;
        // Spent by exactly one of several concurrent right answers.
        Ok(matches
            && state
                .tokens
                .consume(TokenType::EmailOtpSetup, &token, None)
                .await
                .is_ok())
    };
    second_factor(&state, &user, check).await?;
    login::enable_factor(&state.db, user.id, users::Column::EmailOtpEnabled).await?;
    Ok((
        jar.remove(removal(EMAIL_OTP_COOKIE)),
        Json(EmailOtpStatus {
            email_otp_enabled: true,
        }),
    ))
}

/// A reset request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The account's mail address.
    pub email: String,
}

/// Accepted (whether or not an account has that address).
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedResponse {
    /// Always true.
    pub accepted: bool,
}

/// Mail a reset link to the accounts with this address. Always 202: the answer says
/// nothing about whether an account exists, and its timing neither, because the lookup and
/// the mail happen after the answer.
#[utoipa::path(post, path = "/auth/password-reset/request", tag = "auth", request_body = ResetRequest,
    responses((status = 202, description = "Success", body = AcceptedResponse),
        (status = 429, description = "rate_limited (per client IP)", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn reset_request(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<ResetRequest>,
) -> Result<(StatusCode, Json<AcceptedResponse>), AppError> {
    if req.email.len() > 320 || !req.email.contains('@') {
        return Err(AppError::field("email", "not a mail address"));
    }
    login::throttle(&state.limiter, EventType::PasswordResetIp, &ip.key()).await?;
    let task_state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = send_reset_links(&task_state, &req.email).await {
            tracing::warn!(error = %e, "password reset mail not sent");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(AcceptedResponse { accepted: true }),
    ))
}

async fn send_reset_links(state: &AppState, email: &str) -> Result<(), AppError> {
    let accounts = users::Entity::find()
        .filter(users::Column::Email.eq(email))
        .filter(users::Column::Disabled.eq(false))
        .all(&state.db)
        .await?;
    for user in accounts {
        // The per-user limit never shows: over it, the answer was 202 all the same and
        // no mail goes out.
        if let Err(e) =
            login::throttle(&state.limiter, EventType::PasswordResetSend, &user.username).await
        {
            tracing::info!(error = %e, "password reset mail withheld");
            continue;
        }
        if let Err(e) = login::mail_slot(&state.limiter, email).await {
            tracing::info!(error = %e, "password reset mail withheld: the address had its share");
            continue;
        }
        let username = login::username_of(&user)?;
        let issued = state
            .tokens
            .issue(AuthEphemeralToken::new_password_reset(username))
            .await?;
        let link = format!(
            "{}/reset-password#token={}",
            state.auth.public_url,
            issued.token.expose()
        );
        let body = format!(
            "Someone asked to reset the password of the account `{}`.\n\nTo choose a new \
             password, open:\n{link}\n\nThe link works once, within an hour. The token, for \
             apps: {}\n\nIf it was not you, ignore this mail.\n",
            user.username,
            issued.token.expose()
        );
        state
            .auth
            .mailer
            .send(email, "Reset your password", body)
            .await?;
    }
    Ok(())
}

/// A reset token and the new password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirm {
    /// The token from the mail.
    pub token: String,
    /// 8 to 1024 characters.
    pub new_password: String,
}

/// The password was changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordChanged {
    /// Always true.
    pub password_changed: bool,
    /// Sessions ended.
    pub sessions_ended: u64,
}

/// Set a new password with a reset token: the token is used up, the user's other reset
/// tokens are revoked and every session of theirs ends.
#[utoipa::path(post, path = "/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirm,
    responses((status = 200, description = "Success", body = PasswordChanged),
        (status = 400, description = "invalid_or_expired_token", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn reset_confirm(
    State(state): State<AppState>,
    ip: ClientIp,
    jar: CookieJar,
    ApiJson(req): ApiJson<ResetConfirm>,
) -> Result<(CookieJar, Json<PasswordChanged>), AppError> {
    // Checked before the token is spent, so a too-short password does not burn the link.
    let password = Password::parse(req.new_password)
        .map_err(|_| AppError::field("new_password", "a password is 8 to 1024 characters"))?;
    login::throttle(&state.limiter, EventType::PasswordResetIp, &ip.key()).await?;
    // The cheap checks first: no argon2 work for a token that is not live.
    state
        .tokens
        .peek(TokenType::PasswordReset, &req.token, None)
        .await
        .map_err(|e| login::token_error(e, AppError::TokenRejected))?;
    let hash = password::hash(password).await?;
    let consumed = state
        .tokens
        .consume(TokenType::PasswordReset, &req.token, None)
        .await
        .map_err(|e| login::token_error(e, AppError::TokenRejected))?;
    let user = login::token_user(&state.db, &consumed)
        .await?
        .ok_or(AppError::TokenRejected)?;
    users::Entity::update_many()
        .col_expr(users::Column::PasswordHash, Expr::value(Some(hash)))
        .filter(users::Column::Id.eq(user.id))
        .exec(&state.db)
        .await?;
    // The mailbox's owner is back in: the lock and the failure count end, and this browser
    // may sign in beyond the per-username throttle that strangers may have filled.
    login::record_success(&state.db, user.id).await?;
    // Whoever failed the second factor before the reset no longer has the password: their
    // throttled attempts do not hold the owner back either.
    login::clear(&state.limiter, EventType::TwoFaAttempt, &user.username).await?;
    let username = login::username_of(&user)?;
    state
        .tokens
        .revoke(TokenType::PasswordReset, &username)
        .await?;
    login::revoke_pending(&state.tokens, &username).await?;
    let sessions_ended = login::end_all_sessions(&state.db, user.id).await?;
    Ok((
        jar.add(device_cookie(&state.auth, &user)),
        Json(PasswordChanged {
            password_changed: true,
            sessions_ended,
        }),
    ))
}

/// The signed-in user.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The login name.
    pub username: String,
    /// The mail address.
    pub email: Option<String>,
    /// TOTP is enabled.
    pub totp_enabled: bool,
    /// Email codes are enabled.
    pub email_otp_enabled: bool,
}

/// The signed-in user.
#[utoipa::path(get, path = "/auth/me", tag = "auth",
    responses((status = 200, description = "Success", body = Me),
        (status = 401, description = "not_authenticated", body = Problem, content_type = "application/problem+json")))]
pub async fn me(State(state): State<AppState>, jar: CookieJar) -> Result<Json<Me>, AppError> {
    let user = login::session_user(&state.db, session_of(&jar)).await?;
    Ok(Json(Me {
        username: user.username,
        email: user.email,
        totp_enabled: user.totp_enabled,
        email_otp_enabled: user.email_otp_enabled,
    }))
}

/// End the session.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses((status = 204, description = "Signed out; the session cookie is cleared"),
        AuthErrors))]
pub async fn logout(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<(CookieJar, StatusCode), AppError> {
    if let Some(value) = session_of(&jar) {
        login::end_session(&state.db, value).await?;
    }
    Ok((jar.remove(removal(SESSION_COOKIE)), StatusCode::NO_CONTENT))
}
