//! `/auth/totp/...`: TOTP for a signed-in user, and the setup an admin requires.

use axum::Json;
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};
use tessera_auth::flows::{TotpSetup, TotpStatus as Status};
use utoipa::ToSchema;

use super::answers::{self, AuthErrors, LoginResponse, MfaTokenRequest, SignIn};
use super::call::Call;
use crate::error::AppError;
use crate::error::{BodyProblems, Problem};
use crate::http::cookies::{self, CHALLENGE, SESSION, TOTP_SETUP};
use crate::http::extract::ApiJson;

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

/// The setup's cookie and what the page shows.
fn setup_answer(call: Call, setup: TotpSetup) -> (CookieJar, Json<SetupResponse>) {
    let s = &call.state.auth.settings;
    let cookie = cookies::new(s, TOTP_SETUP, setup.setup_token, setup.ttl);
    (
        call.jar.add(cookie),
        Json(SetupResponse {
            secret: setup.enrolment.secret,
            otpauth_uri: setup.enrolment.otpauth_uri,
            qr_png_base64: setup.enrolment.qr_png_base64,
            backup_codes: setup.backup_codes,
        }),
    )
}

/// Start TOTP setup for the signed-in user; repeated calls from the same session give the
/// same secret and backup codes until it is confirmed, another session gets its own.
#[utoipa::path(post, path = "/auth/totp/setup", tag = "auth",
    responses((status = 200, description = "Success", body = SetupResponse),
        (status = 401, description = "not_authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "totp_already_enabled", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn totp_setup(call: Call) -> Result<(CookieJar, Json<SetupResponse>), AppError> {
    let (session, presented) = (call.cookie(SESSION), call.cookie(TOTP_SETUP));
    let setup = call.auth().totp_setup(session, presented).await?;
    Ok(setup_answer(call, setup))
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

impl From<Status> for TotpStatus {
    fn from(s: Status) -> Self {
        TotpStatus {
            enabled: s.enabled,
            backup_codes_remaining: s.backup_codes_remaining,
        }
    }
}

/// Confirm TOTP setup with a current code: TOTP is then required at sign-in.
#[utoipa::path(post, path = "/auth/totp/confirm", tag = "auth", request_body = CodeRequest,
    responses((status = 200, description = "Success", body = TotpStatus),
        (status = 401, description = "invalid_code", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn totp_confirm(
    call: Call,
    ApiJson(req): ApiJson<CodeRequest>,
) -> Result<(CookieJar, Json<TotpStatus>), AppError> {
    let (session, presented) = (call.cookie(SESSION), call.cookie(TOTP_SETUP));
    let status = call
        .auth()
        .totp_confirm(session, presented, &req.code)
        .await?;
    Ok((
        call.jar
            .remove(cookies::removal(&call.state.auth.settings, TOTP_SETUP)),
        Json(status.into()),
    ))
}

/// TOTP state of the signed-in user.
#[utoipa::path(get, path = "/auth/totp/status", tag = "auth",
    responses((status = 200, description = "Success", body = TotpStatus),
        (status = 401, description = "not_authenticated", body = Problem, content_type = "application/problem+json")))]
pub async fn totp_status(call: Call) -> Result<Json<TotpStatus>, AppError> {
    let status = call.auth().totp_status(call.cookie(SESSION)).await?;
    Ok(Json(status.into()))
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

/// Turn TOTP off (and drop the backup codes).
#[utoipa::path(post, path = "/auth/totp/disable", tag = "auth", request_body = PasswordCodeRequest,
    responses((status = 200, description = "Success", body = TotpStatus),
        (status = 401, description = "invalid_credentials or invalid_code", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn totp_disable(
    call: Call,
    ApiJson(req): ApiJson<PasswordCodeRequest>,
) -> Result<Json<TotpStatus>, AppError> {
    let status = call
        .auth()
        .totp_disable(call.cookie(SESSION), req.password, &req.code)
        .await?;
    Ok(Json(status.into()))
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
        AuthErrors, BodyProblems))]
pub async fn regenerate_backup_codes(
    call: Call,
    ApiJson(req): ApiJson<PasswordCodeRequest>,
) -> Result<Json<BackupCodesResponse>, AppError> {
    let backup_codes = call
        .auth()
        .regenerate_backup_codes(call.cookie(SESSION), req.password, &req.code)
        .await?;
    Ok(Json(BackupCodesResponse { backup_codes }))
}

/// Set up TOTP with an enforcement token (an admin requires a second factor).
#[utoipa::path(post, path = "/auth/totp/enforce-setup", tag = "auth", request_body = MfaTokenRequest,
    responses((status = 200, description = "Success", body = SetupResponse),
        (status = 401, description = "mfa_session_expired", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn enforce_setup(
    call: Call,
    ApiJson(req): ApiJson<MfaTokenRequest>,
) -> Result<(CookieJar, Json<SetupResponse>), AppError> {
    let (challenge, presented) = (call.cookie(CHALLENGE), call.cookie(TOTP_SETUP));
    let setup = call
        .auth()
        .enforce_setup(&req.mfa_token, challenge, presented)
        .await?;
    Ok(setup_answer(call, setup))
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
        AuthErrors, BodyProblems))]
pub async fn enforce_confirm(
    mut call: Call,
    ApiJson(req): ApiJson<EnforceConfirmRequest>,
) -> SignIn {
    let (challenge, presented) = (call.cookie(CHALLENGE), call.cookie(TOTP_SETUP));
    let signed_in = call
        .auth()
        .enforce_confirm(
            &call.client,
            &req.mfa_token,
            challenge,
            presented,
            &req.code,
        )
        .await?;
    call.jar = call
        .jar
        .remove(cookies::removal(&call.state.auth.settings, TOTP_SETUP));
    answers::signed_in(call, signed_in)
}
