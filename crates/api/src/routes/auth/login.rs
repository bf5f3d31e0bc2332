//! Registration, the password step, the second-factor step, the signed-in user, signing
//! out.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};
use tessera_auth::flows::Factor;
use utoipa::ToSchema;

use super::answers::{self, AuthErrors, Locked, LoginResponse, MfaTokenRequest};
use crate::error::AppError;
use crate::error::{BodyProblems, Problem};
use crate::http::client_ip::Caller;
use crate::http::cookies::{self, CHALLENGE, DEVICE, SESSION};
use crate::http::extract::ApiJson;
use crate::state::AppState;

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
        AuthErrors, BodyProblems))]
pub async fn register(
    State(state): State<AppState>,
    Caller(client): Caller,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), AppError> {
    let user = state
        .auth
        .register(&client, &req.username, req.email, req.password)
        .await?;
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
        Locked, AuthErrors, BodyProblems))]
pub async fn login(
    State(state): State<AppState>,
    Caller(client): Caller,
    jar: CookieJar,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<(CookieJar, Json<LoginResponse>), AppError> {
    let device = cookies::value(&jar, DEVICE);
    let outcome = state
        .auth
        .login(&client, &req.username, req.password, device)
        .await?;
    Ok(answers::outcome(&state.auth.settings, jar, outcome))
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

impl VerifyRequest {
    /// The one factor sent.
    fn factor(&self) -> Result<Factor, AppError> {
        match (&self.code, &self.backup_code, &self.email_code) {
            (Some(c), None, None) => Ok(Factor::Totp(c.clone())),
            (None, Some(c), None) => Ok(Factor::BackupCode(c.clone())),
            (None, None, Some(c)) => Ok(Factor::EmailCode(c.clone())),
            _ => Err(AppError::field(
                "code",
                "send exactly one of `code`, `backup_code`, `email_code`",
            )),
        }
    }
}

/// Complete a login with a second factor.
#[utoipa::path(post, path = "/auth/2fa/verify", tag = "auth", request_body = VerifyRequest,
    responses((status = 200, description = "Success", body = LoginResponse),
        (status = 401, description = "invalid_code or mfa_session_expired", body = Problem, content_type = "application/problem+json"),
        Locked, AuthErrors, BodyProblems))]
pub async fn verify(
    State(state): State<AppState>,
    Caller(client): Caller,
    jar: CookieJar,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<(CookieJar, Json<LoginResponse>), AppError> {
    let factor = req.factor()?;
    let challenge = cookies::value(&jar, CHALLENGE);
    let signed_in = state
        .auth
        .verify(&client, &req.mfa_token, challenge, factor)
        .await?;
    Ok(answers::signed_in(&state.auth.settings, jar, signed_in))
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
        AuthErrors, BodyProblems))]
pub async fn email_send(
    State(state): State<AppState>,
    jar: CookieJar,
    ApiJson(req): ApiJson<MfaTokenRequest>,
) -> Result<(StatusCode, Json<SentResponse>), AppError> {
    let challenge = cookies::value(&jar, CHALLENGE);
    state
        .auth
        .send_login_code(&req.mfa_token, challenge)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(SentResponse { sent: true })))
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
    let user = state.auth.me(cookies::value(&jar, SESSION)).await?;
    Ok(Json(Me {
        username: user.username,
        email: user.email,
        totp_enabled: user.totp_enabled,
        email_otp_enabled: user.email_otp_enabled,
    }))
}

/// End the session.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses((status = 204, description = "Signed out; the session cookie is cleared"),
        AuthErrors, BodyProblems))]
pub async fn logout(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<(CookieJar, StatusCode), AppError> {
    state.auth.logout(cookies::value(&jar, SESSION)).await?;
    Ok((
        jar.remove(cookies::removal(SESSION)),
        StatusCode::NO_CONTENT,
    ))
}
