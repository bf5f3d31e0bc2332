//! What `/auth` routes answer besides their own bodies: the problem set of every POST, the
//! answer of a step that can sign in, and the cookies that go with it.

use axum::Json;
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};
use tessera_auth::{LoginOutcome, SignedIn};
use utoipa::ToSchema;

use super::call::Call;
use crate::error::{AppError, Problem};
use crate::http::cookies;

/// The error answers every `/auth` POST can give besides its own and
/// [`BodyProblems`](crate::error::BodyProblems): a cross-site request, a state that does not allow the
/// step, a throttle, a store that cannot be reached or a full hashing queue.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum AuthErrors {
    /// A cross-site request: `csrf_rejected`.
    #[response(status = 403, content_type = "application/problem+json")]
    CsrfRejected(Problem),
    /// A state that does not allow this now: `totp_already_enabled`, `totp_not_set_up`,
    /// `totp_not_enabled`, `email_otp_not_enabled`, `email_missing`, `username_taken`,
    /// `too_many_accounts_for_address`, `magic_link_not_allowed`.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// Throttled: `rate_limited`, with `Retry-After`.
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
    /// The store cannot be reached (`store_unavailable`), the request took too long
    /// (`timeout`), the hashing queue is full (`overloaded`) or mail failed
    /// (`mail_unavailable`).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// What a step that checks a password or a factor, and can sign in, answers besides its
/// own refusals, [`AuthErrors`] and [`BodyProblems`](crate::error::BodyProblems).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum SignInStep {
    /// Signed in, or on to the next step: see [`LoginResponse`].
    #[response(status = 200, description = "Success")]
    Success(LoginResponse),
    /// Too many second-factor failures: `account_locked`, with `Retry-After`.
    #[response(status = 423, content_type = "application/problem+json")]
    AccountLocked(Problem),
}

/// The answer of a step that can sign in: the cookies and [`LoginResponse`].
pub type SignIn = Result<(CookieJar, Json<LoginResponse>), AppError>;

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

/// A mail was sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct SentResponse {
    /// Always true.
    pub sent: bool,
}

/// The password was changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordChanged {
    /// Always true.
    pub password_changed: bool,
    /// Sessions ended.
    pub sessions_ended: u64,
}

/// Accepted (whether or not an account has that address).
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedResponse {
    /// Always true.
    pub accepted: bool,
}

/// A pending login.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaTokenRequest {
    /// The token from `/auth/login`.
    pub mfa_token: String,
}

/// The cookies and body of a complete sign-in.
pub fn signed_in(call: Call, s: SignedIn) -> SignIn {
    let jar = cookies::signed_in(&call.state.auth.settings, call.jar, &s);
    Ok((
        jar,
        Json(LoginResponse {
            authenticated: Some(true),
            username: Some(s.username),
            ..Default::default()
        }),
    ))
}

/// The cookies and body of where a first step led.
pub fn outcome(call: Call, outcome: LoginOutcome) -> SignIn {
    let (pending, body) = match outcome {
        LoginOutcome::Session(s) => return signed_in(call, s),
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
    let jar = cookies::pending(&call.state.auth.settings, call.jar, &pending);
    Ok((
        jar,
        Json(LoginResponse {
            mfa_token: Some(pending.mfa_token),
            ..body
        }),
    ))
}
