//! `/auth/password-reset/...`: a reset link by mail, and the new password set with it.

use axum::Json;
use axum::http::StatusCode;
use axum_extra::extract::CookieJar;
use serde::Deserialize;
use utoipa::ToSchema;

use super::answers::{AcceptedResponse, AuthErrors, PasswordChanged};
use super::call::Call;
use crate::error::AppError;
use crate::error::{BodyProblems, Problem};
use crate::http::cookies;
use crate::http::extract::ApiJson;

/// A reset request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The account's mail address.
    pub email: String,
}

/// Mail a reset link to the accounts with this address. Always 202: the answer says
/// nothing about whether an account exists, and its timing neither, because the lookup and
/// the mail happen after the answer.
#[utoipa::path(post, path = "/auth/password-reset/request", tag = "auth", request_body = ResetRequest,
    responses((status = 202, description = "Success", body = AcceptedResponse),
        (status = 429, description = "rate_limited (per client IP)", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn reset_request(
    call: Call,
    ApiJson(req): ApiJson<ResetRequest>,
) -> Result<(StatusCode, Json<AcceptedResponse>), AppError> {
    call.auth()
        .request_password_reset(&call.client, req.email)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(AcceptedResponse { accepted: true }),
    ))
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

/// Set a new password with a reset token: the token is used up, the user's other reset
/// tokens are revoked and every session of theirs ends.
#[utoipa::path(post, path = "/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirm,
    responses((status = 200, description = "Success", body = PasswordChanged),
        (status = 400, description = "invalid_or_expired_token", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn reset_confirm(
    call: Call,
    ApiJson(req): ApiJson<ResetConfirm>,
) -> Result<(CookieJar, Json<PasswordChanged>), AppError> {
    let done = call
        .auth()
        .confirm_password_reset(&call.client, &req.token, req.new_password)
        .await?;
    let device = cookies::device(&call.state.auth.settings, done.device);
    Ok((
        call.jar.add(device),
        Json(PasswordChanged {
            password_changed: true,
            sessions_ended: done.sessions_ended,
        }),
    ))
}
