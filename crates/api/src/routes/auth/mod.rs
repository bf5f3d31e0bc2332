//! `/auth`: the end-user login flows over HTTP. Each handler extracts the body and the
//! cookies, makes one call into tessera-auth, and answers its outcome as JSON and cookies.

pub mod email_otp;
pub mod login;
pub mod oidc;
pub mod reset;
pub mod totp;

use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};
use tessera_auth::{AuthSettings, LoginOutcome, SignedIn};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::Problem;
use crate::http::cookies;

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/auth/register", post(login::register))
        .route("/auth/login", post(login::login))
        .route("/auth/2fa/verify", post(login::verify))
        .route("/auth/2fa/email/send", post(login::email_send))
        .route("/auth/totp/setup", post(totp::totp_setup))
        .route("/auth/totp/confirm", post(totp::totp_confirm))
        .route("/auth/totp/status", get(totp::totp_status))
        .route("/auth/totp/disable", post(totp::totp_disable))
        .route(
            "/auth/totp/backup-codes/regenerate",
            post(totp::regenerate_backup_codes),
        )
        .route("/auth/totp/enforce-setup", post(totp::enforce_setup))
        .route("/auth/totp/enforce-confirm", post(totp::enforce_confirm))
        .route("/auth/email-otp/enable", post(email_otp::email_otp_enable))
        .route(
            "/auth/email-otp/confirm",
            post(email_otp::email_otp_confirm),
        )
        .route("/auth/password-reset/request", post(reset::reset_request))
        .route("/auth/password-reset/confirm", post(reset::reset_confirm))
        .route("/auth/me", get(login::me))
        .route("/auth/logout", post(login::logout))
        .route("/auth/oidc/exchange", post(oidc::exchange))
        .route_layer(middleware::from_fn_with_state(state, cookies::csrf))
        .route("/auth/oidc/{name}/start", get(oidc::start))
        .route("/auth/oidc/{name}/callback", get(oidc::callback))
}

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

/// A pending login.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaTokenRequest {
    /// The token from `/auth/login`.
    pub mfa_token: String,
}

/// The cookies and body of a complete sign-in.
pub fn signed_in(
    settings: &AuthSettings,
    jar: CookieJar,
    s: SignedIn,
) -> (CookieJar, Json<LoginResponse>) {
    let jar = cookies::signed_in(settings, jar, &s);
    (
        jar,
        Json(LoginResponse {
            authenticated: Some(true),
            username: Some(s.username),
            ..Default::default()
        }),
    )
}

/// The cookies and body of where a first step led.
pub fn outcome(
    settings: &AuthSettings,
    jar: CookieJar,
    outcome: LoginOutcome,
) -> (CookieJar, Json<LoginResponse>) {
    let (pending, body) = match outcome {
        LoginOutcome::Session(s) => return signed_in(settings, jar, s),
        LoginOutcome::SecondFactor { pending, methods } => (
            pending,
            LoginResponse {
                mfa_required: Some(true),
                methods: Some(methods),
                ..Default::default()
            },
        ),
        LoginOutcome::EnforceSetup { pending } => (
            pending,
            LoginResponse {
                mfa_setup_required: Some(true),
                ..Default::default()
            },
        ),
    };
    let jar = cookies::pending(settings, jar, &pending);
    (
        jar,
        Json(LoginResponse {
            mfa_token: Some(pending.mfa_token),
            ..body
        }),
    )
}
