//! `/auth/passkeys/...` and `/auth/2fa/passkey/start`: passkeys added, listed, removed,
//! and used to sign in (alone, or as the second factor). A ceremony's start sets the
//! HttpOnly cookie `tessera_webauthn` that names it; its finish, on any worker, reads it.

use axum::Json;
use axum::http::StatusCode;
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};
use tessera_auth::flows::{Ceremony, PasskeyInfo};
use utoipa::ToSchema;

use super::account::ProofRequest;
use super::answers::{self, AuthErrors, MfaTokenRequest, SignIn, SignInStep};
use super::call::Call;
use crate::error::{AppError, BodyProblems, Problem};
use crate::http::cookies::{self, CHALLENGE, SESSION, WEBAUTHN};
use crate::http::extract::ApiJson;

/// Options for `navigator.credentials.create()` or `.get()`, in the WebAuthn JSON form
/// (`PublicKeyCredential.parseCreationOptionsFromJSON` / `parseRequestOptionsFromJSON`
/// read `publicKey`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CeremonyOptions {
    /// The creation or request options.
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object)]
    pub public_key: serde_json::Value,
}

/// A passkey.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyItem {
    /// Its public id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it was added.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it last signed in.
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<PasskeyInfo> for PasskeyItem {
    fn from(p: PasskeyInfo) -> Self {
        PasskeyItem {
            id: p.id.to_string(),
            name: p.name,
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        }
    }
}

/// The options and the cookie of a ceremony begun.
fn begun(call: Call, c: Ceremony) -> Result<(CookieJar, Json<CeremonyOptions>), AppError> {
    let settings = &call.state.auth.settings;
    let cookie = cookies::on_path(settings, WEBAUTHN, c.cookie, c.ttl, cookies::AUTH_PATH);
    let public_key = match c.options {
        serde_json::Value::Object(mut o) => o.remove("publicKey").unwrap_or_default(),
        other => other,
    };
    Ok((call.jar.add(cookie), Json(CeremonyOptions { public_key })))
}

/// The ceremony's cookie, once it is finished.
fn finished(call: &Call) -> CookieJar {
    let settings = &call.state.auth.settings;
    call.jar
        .clone()
        .remove(cookies::removal_on(settings, WEBAUTHN, cookies::AUTH_PATH))
}

/// Begin adding a passkey to the signed-in account.
#[utoipa::path(post, path = "/auth/passkeys/register/start", tag = "auth",
    responses((status = 200, description = "Success; sets the `tessera_webauthn` cookie", body = CeremonyOptions),
        (status = 401, description = "not_authenticated", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn register_start(call: Call) -> Result<(CookieJar, Json<CeremonyOptions>), AppError> {
    let ceremony = call
        .auth()
        .passkey_register_start(&call.client, call.cookie(SESSION))
        .await?;
    begun(call, ceremony)
}

/// The authenticator's answer to a registration.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterFinish {
    /// `PublicKeyCredential.toJSON()` of `navigator.credentials.create()`.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
    /// A name for it (1 to 64 characters; "Passkey" when absent).
    pub name: Option<String>,
}

/// Finish adding a passkey (the ceremony named by the `tessera_webauthn` cookie).
#[utoipa::path(post, path = "/auth/passkeys/register/finish", tag = "auth", request_body = RegisterFinish,
    responses((status = 201, description = "Success", body = PasskeyItem),
        (status = 400, description = "ceremony_expired", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not_authenticated", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn register_finish(
    call: Call,
    ApiJson(req): ApiJson<RegisterFinish>,
) -> Result<(StatusCode, CookieJar, Json<PasskeyItem>), AppError> {
    let info = call
        .auth()
        .passkey_register_finish(
            call.cookie(SESSION),
            call.cookie(WEBAUTHN),
            req.credential,
            req.name,
        )
        .await?;
    Ok((StatusCode::CREATED, finished(&call), Json(info.into())))
}

/// The signed-in account's passkeys, oldest first.
#[utoipa::path(get, path = "/auth/passkeys", tag = "auth",
    responses((status = 200, description = "Success", body = [PasskeyItem]),
        (status = 401, description = "not_authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "store_unavailable", body = Problem, content_type = "application/problem+json")))]
pub async fn list(call: Call) -> Result<Json<Vec<PasskeyItem>>, AppError> {
    let all = call.auth().passkeys(call.cookie(SESSION)).await?;
    Ok(Json(all.into_iter().map(PasskeyItem::from).collect()))
}

/// A passkey to remove, and the proof of the account's holder.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    /// The passkey's id.
    pub id: String,
    /// The account's password.
    pub password: Option<String>,
    /// A current TOTP code, for an account without a password.
    pub code: Option<String>,
}

/// Remove a passkey of the signed-in account.
#[utoipa::path(post, path = "/auth/passkeys/remove", tag = "auth", request_body = RemoveRequest,
    responses((status = 204, description = "Removed"),
        (status = 401, description = "not_authenticated, invalid_credentials or invalid_code", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "passkey_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 423, description = "account_locked (a wrong code counts toward the lockout)", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn remove(
    call: Call,
    ApiJson(req): ApiJson<RemoveRequest>,
) -> Result<StatusCode, AppError> {
    let proof = ProofRequest {
        password: req.password,
        code: req.code,
    };
    call.auth()
        .remove_passkey(call.cookie(SESSION), &req.id, proof.into())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whose passkeys to ask for, if known.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct LoginStart {
    /// The account's name; without it, the authenticator offers the passkeys it holds.
    pub username: Option<String>,
}

/// Begin signing in with a passkey.
#[utoipa::path(post, path = "/auth/passkeys/login/start", tag = "auth", request_body = LoginStart,
    responses((status = 200, description = "Success; sets the `tessera_webauthn` cookie", body = CeremonyOptions),
        AuthErrors, BodyProblems))]
pub async fn login_start(
    call: Call,
    ApiJson(req): ApiJson<LoginStart>,
) -> Result<(CookieJar, Json<CeremonyOptions>), AppError> {
    let ceremony = call
        .auth()
        .passkey_login_start(&call.client, req.username.as_deref())
        .await?;
    begun(call, ceremony)
}

/// The authenticator's answer to a sign-in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginFinish {
    /// `PublicKeyCredential.toJSON()` of `navigator.credentials.get()`.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

/// Finish signing in with a passkey: a passkey checked with user verification is both
/// factors, so the answer is a session.
#[utoipa::path(post, path = "/auth/passkeys/login/finish", tag = "auth", request_body = LoginFinish,
    responses(SignInStep,
        (status = 400, description = "ceremony_expired", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "invalid_credentials", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn login_finish(call: Call, ApiJson(req): ApiJson<LoginFinish>) -> SignIn {
    let signed_in = call
        .auth()
        .passkey_login_finish(&call.client, call.cookie(WEBAUTHN), req.credential)
        .await;
    let call = Call {
        jar: finished_on_success(&call, signed_in.is_ok()),
        ..call
    };
    answers::signed_in(call, signed_in?)
}

/// Begin the passkey step of a pending login.
#[utoipa::path(post, path = "/auth/2fa/passkey/start", tag = "auth", request_body = MfaTokenRequest,
    responses((status = 200, description = "Success; sets the `tessera_webauthn` cookie", body = CeremonyOptions),
        (status = 401, description = "mfa_session_expired", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn second_factor_start(
    call: Call,
    ApiJson(req): ApiJson<MfaTokenRequest>,
) -> Result<(CookieJar, Json<CeremonyOptions>), AppError> {
    let ceremony = call
        .auth()
        .passkey_second_factor_start(&call.client, &req.mfa_token, call.cookie(CHALLENGE))
        .await?;
    begun(call, ceremony)
}

/// The jar after a finish: the ceremony's cookie goes once the ceremony is spent.
pub fn finished_on_success(call: &Call, success: bool) -> CookieJar {
    if success {
        finished(call)
    } else {
        call.jar.clone()
    }
}
