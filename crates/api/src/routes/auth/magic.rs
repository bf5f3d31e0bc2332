//! `/auth/magic-link/...`: a sign-in link by mail, and signing in with it.

use axum::Json;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::answers::{self, AcceptedResponse, AuthErrors, SignIn, SignInStep};
use super::call::Call;
use crate::error::AppError;
use crate::error::{BodyProblems, Problem};
use crate::http::extract::ApiJson;

/// The address to mail sign-in links to.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MagicLinkRequest {
    /// The account's mail address.
    pub email: String,
}

/// Mail a sign-in link (`PUBLIC_URL/login/magic#token=tsr_ml_...`, 15 minutes, single use)
/// to each account with this address. Always 202: the answer says nothing about whether
/// one exists.
#[utoipa::path(post, path = "/auth/magic-link/request", tag = "auth", request_body = MagicLinkRequest,
    responses((status = 202, description = "Success", body = AcceptedResponse),
        (status = 403, description = "magic_links_disabled", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn magic_link_request(
    call: Call,
    ApiJson(req): ApiJson<MagicLinkRequest>,
) -> Result<(StatusCode, Json<AcceptedResponse>), AppError> {
    call.auth()
        .request_magic_link(&call.client, req.email)
        .await?;
    let accepted = AcceptedResponse { accepted: true };
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// The token from the link's fragment.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MagicLinkConsume {
    /// The `magic_link` token.
    pub token: String,
}

/// Sign in with a link's token, as with a password: a session, or the second-factor step
/// (never a mailed code) when the account has one.
#[utoipa::path(post, path = "/auth/magic-link/consume", tag = "auth", request_body = MagicLinkConsume,
    responses(SignInStep,
        (status = 400, description = "invalid_or_expired_token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "magic_links_disabled", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn magic_link_consume(call: Call, ApiJson(req): ApiJson<MagicLinkConsume>) -> SignIn {
    let outcome = call
        .auth()
        .consume_magic_link(&call.client, &req.token)
        .await?;
    answers::outcome(call, outcome)
}
