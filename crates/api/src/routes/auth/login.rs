//! Registration, the password step, the second-factor step, the signed-in user, signing
//! out.

use axum::Json;
use axum::http::StatusCode;
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};
use tessera_auth::flows::Factor;
use utoipa::ToSchema;

use super::answers::{self, AuthErrors, MfaTokenRequest, SentResponse, SignIn, SignInStep};
use super::call::Call;
use crate::error::AppError;
use crate::error::{BodyProblems, Problem};
use crate::http::cookies::{self, CHALLENGE, DEVICE, SESSION, WEBAUTHN};
use crate::http::extract::ApiJson;

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
    call: Call,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), AppError> {
    let user = call
        .auth()
        .register(&call.client, &req.username, req.email, req.password)
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
    responses(SignInStep,
        (status = 401, description = "invalid_credentials", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn login(call: Call, ApiJson(req): ApiJson<LoginRequest>) -> SignIn {
    let device = call.cookie(DEVICE);
    let outcome = call
        .auth()
        .login(&call.client, &req.username, req.password, device)
        .await?;
    answers::outcome(call, outcome)
}

/// A second factor: exactly one of `code`, `backup_code`, `email_code`, `passkey`.
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
    /// A passkey's answer (`PublicKeyCredential.toJSON()`) to the ceremony begun by
    /// `/auth/2fa/passkey/start`, whose `tessera_webauthn` cookie goes with it.
    #[schema(value_type = Option<Object>)]
    pub passkey: Option<serde_json::Value>,
}

impl VerifyRequest {
    /// The one factor sent.
    fn factor(&mut self, ceremony: Option<&str>) -> Result<Factor, AppError> {
        match (
            &self.code,
            &self.backup_code,
            &self.email_code,
            &self.passkey,
        ) {
            (Some(c), None, None, None) => Ok(Factor::Totp(c.clone())),
            (None, Some(c), None, None) => Ok(Factor::BackupCode(c.clone())),
            (None, None, Some(c), None) => Ok(Factor::EmailCode(c.clone())),
            (None, None, None, Some(_)) => Ok(Factor::Passkey {
                credential: self.passkey.take().unwrap_or_default(),
                ceremony: ceremony.map(str::to_owned),
            }),
            _ => Err(AppError::field(
                "code",
                "send exactly one of `code`, `backup_code`, `email_code`, `passkey`",
            )),
        }
    }
}

/// Complete a login with a second factor.
#[utoipa::path(post, path = "/auth/2fa/verify", tag = "auth", request_body = VerifyRequest,
    responses(SignInStep,
        (status = 401, description = "invalid_code or mfa_session_expired", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn verify(call: Call, ApiJson(mut req): ApiJson<VerifyRequest>) -> SignIn {
    let factor = req.factor(call.cookie(WEBAUTHN))?;
    let passkey = matches!(factor, Factor::Passkey { .. });
    let challenge = call.cookie(CHALLENGE);
    let signed_in = call
        .auth()
        .verify(&call.client, &req.mfa_token, challenge, factor)
        .await;
    let call = Call {
        jar: super::passkeys::finished_on_success(&call, passkey && signed_in.is_ok()),
        ..call
    };
    answers::signed_in(call, signed_in?)
}

/// Mail a 6-digit sign-in code to the pending user.
#[utoipa::path(post, path = "/auth/2fa/email/send", tag = "auth", request_body = MfaTokenRequest,
    responses((status = 202, description = "Success", body = SentResponse),
        (status = 401, description = "mfa_session_expired", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn email_send(
    call: Call,
    ApiJson(req): ApiJson<MfaTokenRequest>,
) -> Result<(StatusCode, Json<SentResponse>), AppError> {
    let challenge = call.cookie(CHALLENGE);
    call.auth()
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
pub async fn me(call: Call) -> Result<Json<Me>, AppError> {
    let user = call.auth().me(call.cookie(SESSION)).await?;
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
pub async fn logout(call: Call) -> Result<(CookieJar, StatusCode), AppError> {
    call.auth().logout(call.cookie(SESSION)).await?;
    Ok((
        call.jar
            .remove(cookies::removal(&call.state.auth.settings, SESSION)),
        StatusCode::NO_CONTENT,
    ))
}
