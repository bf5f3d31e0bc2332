//! Self-service for the signed-in holder: `/auth/password/change`, `/auth/email/change`
//! and `/auth/email/confirm`, `/auth/account/delete`. Each asks for the password (or, for
//! an account without one, a current TOTP code) besides the session.

use axum::Json;
use axum::http::StatusCode;
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};
use tessera_auth::flows::Proof;
use utoipa::ToSchema;

use super::answers::{AuthErrors, PasswordChanged, SentResponse};
use super::call::Call;
use crate::error::AppError;
use crate::error::{BodyProblems, Problem};
use crate::http::cookies::{self, SESSION};
use crate::http::extract::ApiJson;

/// The proof a step asks for besides the session.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProofRequest {
    /// The account's password.
    pub password: Option<String>,
    /// A current TOTP code, for an account without a password (made by an OIDC login).
    pub code: Option<String>,
}

impl From<ProofRequest> for Proof {
    fn from(r: ProofRequest) -> Self {
        Proof::new(r.password, r.code)
    }
}

/// A new password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The current password.
    pub password: Option<String>,
    /// A current TOTP code, for an account without a password.
    pub code: Option<String>,
    /// 8 to 1024 characters.
    pub new_password: String,
}

/// Change the signed-in user's password; every other session ends, this one stays.
#[utoipa::path(post, path = "/auth/password/change", tag = "auth", request_body = ChangePasswordRequest,
    responses((status = 200, description = "Success", body = PasswordChanged),
        (status = 401, description = "not_authenticated, invalid_credentials or invalid_code", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn change_password(
    call: Call,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> Result<Json<PasswordChanged>, AppError> {
    let proof = Proof::new(req.password, req.code);
    let ended = call
        .auth()
        .change_password(call.cookie(SESSION), proof, req.new_password)
        .await?;
    Ok(Json(PasswordChanged {
        password_changed: true,
        sessions_ended: ended,
    }))
}

/// A new mail address.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailChangeRequest {
    /// The new address.
    pub email: String,
    /// The account's password.
    pub password: Option<String>,
    /// A current TOTP code, for an account without a password.
    pub code: Option<String>,
}

/// Mail a confirmation link (`PUBLIC_URL/account/email#token=tsr_ec_...`) to a new
/// address; it becomes the account's once confirmed with `/auth/email/confirm`.
#[utoipa::path(post, path = "/auth/email/change", tag = "auth", request_body = EmailChangeRequest,
    responses((status = 202, description = "Success", body = SentResponse),
        (status = 401, description = "not_authenticated, invalid_credentials or invalid_code", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn change_email(
    call: Call,
    ApiJson(req): ApiJson<EmailChangeRequest>,
) -> Result<(StatusCode, Json<SentResponse>), AppError> {
    let proof = Proof::new(req.password, req.code);
    call.auth()
        .request_email_change(call.cookie(SESSION), proof, req.email)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(SentResponse { sent: true })))
}

/// The token from the confirmation link.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailConfirm {
    /// The `email_change` token (single use, 1 hour).
    pub token: String,
}

/// The account's address now.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmailChanged {
    /// The new address.
    pub email: String,
}

/// Confirm a new address with the token from its link; reset links sent to the old address
/// stop working.
#[utoipa::path(post, path = "/auth/email/confirm", tag = "auth", request_body = EmailConfirm,
    responses((status = 200, description = "Success", body = EmailChanged),
        (status = 400, description = "invalid_or_expired_token", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn confirm_email(
    call: Call,
    ApiJson(req): ApiJson<EmailConfirm>,
) -> Result<Json<EmailChanged>, AppError> {
    let email = call
        .auth()
        .confirm_email_change(&call.client, &req.token)
        .await?;
    Ok(Json(EmailChanged { email }))
}

/// The account is gone.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountDeleted {
    /// Always true.
    pub deleted: bool,
}

/// Delete the signed-in user's account with its sessions, second factors and links; the
/// session cookie is cleared.
#[utoipa::path(post, path = "/auth/account/delete", tag = "auth", request_body = ProofRequest,
    responses((status = 200, description = "Success", body = AccountDeleted),
        (status = 401, description = "not_authenticated, invalid_credentials or invalid_code", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn delete_account(
    call: Call,
    ApiJson(req): ApiJson<ProofRequest>,
) -> Result<(CookieJar, Json<AccountDeleted>), AppError> {
    call.auth()
        .delete_account(call.cookie(SESSION), req.into())
        .await?;
    Ok((
        call.jar
            .remove(cookies::removal(&call.state.auth.settings, SESSION)),
        Json(AccountDeleted { deleted: true }),
    ))
}
