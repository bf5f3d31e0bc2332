//! `/auth/email-otp/...`: turning mailed sign-in codes on.

use axum::Json;
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::account::ProofRequest;
use super::answers::AuthErrors;
use super::call::Call;
use crate::error::AppError;
use crate::error::{BodyProblems, Problem};
use crate::http::cookies::{self, EMAIL_OTP, SESSION};
use crate::http::extract::ApiJson;

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
        AuthErrors, BodyProblems))]
pub async fn email_otp_enable(
    call: Call,
) -> Result<(CookieJar, Json<SetupTokenResponse>), AppError> {
    let setup = call.auth().email_otp_enable(call.cookie(SESSION)).await?;
    let s = &call.state.auth.settings;
    let cookie = cookies::new(s, EMAIL_OTP, setup.setup_token.clone(), setup.ttl);
    Ok((
        call.jar.add(cookie),
        Json(SetupTokenResponse {
            setup_token: setup.setup_token,
        }),
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
        AuthErrors, BodyProblems))]
pub async fn email_otp_confirm(
    call: Call,
    ApiJson(req): ApiJson<EmailConfirmRequest>,
) -> Result<(CookieJar, Json<EmailOtpStatus>), AppError> {
    let token = req
        .setup_token
        .as_deref()
        .or_else(|| call.cookie(EMAIL_OTP));
    call.auth()
        .email_otp_confirm(call.cookie(SESSION), token, &req.code)
        .await?;
    Ok((
        call.jar
            .remove(cookies::removal(&call.state.auth.settings, EMAIL_OTP)),
        Json(EmailOtpStatus {
            email_otp_enabled: true,
        }),
    ))
}

/// Stop mailed codes being a second factor (the password, or a TOTP code for an account
/// without one).
#[utoipa::path(post, path = "/auth/email-otp/disable", tag = "auth", request_body = ProofRequest,
    responses((status = 200, description = "Success", body = EmailOtpStatus),
        (status = 401, description = "not_authenticated, invalid_credentials or invalid_code", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn email_otp_disable(
    call: Call,
    ApiJson(req): ApiJson<ProofRequest>,
) -> Result<Json<EmailOtpStatus>, AppError> {
    call.auth()
        .email_otp_disable(call.cookie(SESSION), req.into())
        .await?;
    Ok(Json(EmailOtpStatus {
        email_otp_enabled: false,
    }))
}
