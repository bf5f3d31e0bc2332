//! `/v1/tokens`: single-use tokens for other services, in a namespace of their own.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use tessera_entity::{AuthEphemeralToken, Challenge, TokenType, Username};
use tessera_store::{ConsumedToken, StoreError};
use utoipa::ToSchema;

use super::answers::{APP_NAMESPACE, ServiceErrors};
use crate::error::AppError;
use crate::error::{BodyProblems, Problem};
use crate::http::extract::ApiJson;
use crate::state::AppState;

/// The longest lifetime a token may be issued with: 30 days.
pub const MAX_TTL_SECONDS: u64 = 30 * 24 * 3600;

/// The OpenAPI view of a [`TokenType`]: one of the built-in kinds' snake_case names, listed
/// from the type itself so the document cannot fall behind it, or an application's own kind
/// `x_NAME`. (The data-model crate knows no OpenAPI.)
pub struct TokenKind;

impl utoipa::PartialSchema for TokenKind {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use tessera_entity::CustomKind;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let builtin: Vec<&str> = TokenType::BUILTIN.iter().map(|t| t.as_str()).collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The kind of a token: a built-in kind, or an application's own `x_NAME`.",
            ))
            .pattern(Some(format!(
                "^({}|{})$",
                builtin.join("|"),
                CustomKind::PATTERN
            )))
            .into()
    }
}

impl ToSchema for TokenKind {
    fn name() -> std::borrow::Cow<'static, str> {
        "TokenType".into()
    }
}

/// A token to issue: `kind` and exactly the fields that kind carries.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// The kind of token.
    #[schema(value_type = TokenKind)]
    pub kind: TokenType,
    /// The user (every kind but `oidc_state`; optional for an application's own `x_NAME`).
    pub username: Option<String>,
    /// The OIDC provider (`oidc_state`): a string or an integer, answered as given.
    pub provider_id: Option<ProviderId>,
    /// The OIDC nonce (`oidc_state`).
    pub nonce: Option<String>,
    /// The PKCE verifier (`oidc_state`).
    pub code_verifier: Option<String>,
    /// A value the token is bound to (required for `mfa_enforce`); consume and peek must
    /// present it.
    pub challenge: Option<String>,
    /// Hash of a mailed code (`email_otp_setup`).
    pub code_hash: Option<String>,
    /// Free-form data (required for `download`: the resource).
    pub data: Option<Value>,
    /// Lifetime in seconds (1 to 2592000); the kind's default otherwise.
    pub ttl_seconds: Option<u64>,
}

/// A freshly issued token.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedResponse {
    /// The token: shown once, stored only as its hash.
    pub token: String,
    /// Its kind.
    #[schema(value_type = TokenKind)]
    pub kind: TokenType,
    /// When it expires, by the store's clock.
    pub expires_at: DateTime<Utc>,
}

/// A token to consume or peek at.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The kind the token must be.
    #[schema(value_type = TokenKind)]
    pub kind: TokenType,
    /// The token.
    pub token: String,
    /// The challenge, for a token bound to one.
    pub challenge: Option<String>,
}

/// What a token carried.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenRecord {
    /// Its kind.
    #[schema(value_type = TokenKind)]
    pub kind: TokenType,
    /// The user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The OIDC provider, as it was given (a string or an integer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<ProviderId>,
    /// The OIDC nonce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The PKCE verifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_verifier: Option<String>,
    /// The hash of a mailed code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_hash: Option<String>,
    /// Free-form data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// When it expires (or would have), by the store's clock.
    pub expires_at: DateTime<Utc>,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
}

/// An OIDC provider's id as an app gives it: a string, or an integer (the seed apps' type).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ProviderId {
    /// An integer id.
    Number(i64),
    /// A string id.
    Text(String),
}

impl ProviderId {
    /// The id as the store keeps it (text), and whether it was a number.
    fn into_stored(self) -> (String, bool) {
        match self {
            ProviderId::Number(n) => (n.to_string(), true),
            ProviderId::Text(s) => (s, false),
        }
    }

    /// The id the store kept, in the type it was given.
    fn stored(text: String, was_number: bool) -> Self {
        match text.parse::<i64>() {
            Ok(n) if was_number => ProviderId::Number(n),
            _ => ProviderId::Text(text),
        }
    }
}

impl From<ConsumedToken> for TokenRecord {
    fn from(t: ConsumedToken) -> Self {
        TokenRecord {
            kind: t.kind,
            username: t.username,
            provider_id: t
                .provider_id
                .map(|p| ProviderId::stored(p, t.payload.provider_id_is_number)),
            nonce: t.payload.nonce,
            code_verifier: t.payload.code_verifier,
            code_hash: t.payload.code_hash,
            data: t.payload.data,
            expires_at: t.expires_at,
            created_at: t.created_at,
        }
    }
}

/// Tokens of one kind for one user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// The kind.
    #[schema(value_type = TokenKind)]
    pub kind: TokenType,
    /// The user.
    pub username: String,
}

/// How many tokens were revoked.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokeResponse {
    /// The number removed.
    pub revoked: u64,
}

fn username(value: Option<String>, kind: TokenType) -> Result<Username, AppError> {
    let v = value.ok_or_else(|| AppError::field("username", format!("required for {kind}")))?;
    Username::parse(v).map_err(|e| AppError::field("username", e.to_string()))
}

fn required<T>(value: Option<T>, name: &str, kind: TokenType) -> Result<T, AppError> {
    value.ok_or_else(|| AppError::field(name, format!("required for {kind}")))
}

fn forbid(present: bool, name: &str, kind: TokenType) -> Result<(), AppError> {
    if present {
        Err(AppError::field(name, format!("not used by {kind}")))
    } else {
        Ok(())
    }
}

/// Builds the typed token of the request's kind, refusing missing and foreign fields.
fn new_token(r: IssueRequest) -> Result<AuthEphemeralToken, AppError> {
    use TokenType as K;
    let kind = r.kind;
    if kind != K::OidcState {
        forbid(r.provider_id.is_some(), "provider_id", kind)?;
        forbid(r.nonce.is_some(), "nonce", kind)?;
        forbid(r.code_verifier.is_some(), "code_verifier", kind)?;
    }
    if kind != K::EmailOtpSetup {
        forbid(r.code_hash.is_some(), "code_hash", kind)?;
    }
    let mut data = r.data;
    let mut challenge = r.challenge.map(Challenge::new);
    let token = match kind {
        K::PreAuth => {
            AuthEphemeralToken::new_pre_auth(username(r.username, kind)?, challenge.take())
        }
        K::OidcState => {
            forbid(r.username.is_some(), "username", kind)?;
            let (provider, numeric) = required(r.provider_id, "provider_id", kind)?.into_stored();
            let token = AuthEphemeralToken::new_oidc_state(
                provider,
                required(r.nonce, "nonce", kind)?,
                required(r.code_verifier, "code_verifier", kind)?,
            );
            if numeric {
                token.with_numeric_provider_id()
            } else {
                token
            }
        }
        K::OidcExchange => AuthEphemeralToken::new_oidc_exchange(username(r.username, kind)?),
        K::PasswordReset => AuthEphemeralToken::new_password_reset(username(r.username, kind)?),
        K::MagicLink => AuthEphemeralToken::new_magic_link(username(r.username, kind)?),
        K::Webauthn => AuthEphemeralToken::new_webauthn(
            r.username.map(|u| username(Some(u), kind)).transpose()?,
            data.take()
                .ok_or_else(|| AppError::field("data", format!("required for {kind}")))?,
        ),
        K::EmailOtpSetup => AuthEphemeralToken::new_email_otp_setup(
            username(r.username, kind)?,
            required(r.code_hash, "code_hash", kind)?,
        ),
        K::Download => AuthEphemeralToken::new_download(
            username(r.username, kind)?,
            data.take()
                .ok_or_else(|| AppError::field("data", format!("required for {kind}")))?,
        ),
        K::TotpSetup => AuthEphemeralToken::new_totp_setup(
            username(r.username, kind)?,
            challenge
                .take()
                .ok_or_else(|| AppError::field("challenge", format!("required for {kind}")))?,
            data.take()
                .ok_or_else(|| AppError::field("data", format!("required for {kind}")))?,
        ),
        K::EmailChange => {
            let email = data
                .take()
                .and_then(|d| d.get("email").and_then(|e| e.as_str()).map(str::to_owned))
                .ok_or_else(|| {
                    AppError::field("data", format!("`{{\"email\": ...}}` required for {kind}"))
                })?;
            AuthEphemeralToken::new_email_change(username(r.username, kind)?, email)
        }
        K::Custom(custom) => AuthEphemeralToken::new_custom(
            custom,
            r.username.map(|u| username(Some(u), kind)).transpose()?,
        ),
        K::MfaEnforce => AuthEphemeralToken::new_mfa_enforce(
            username(r.username, kind)?,
            challenge
                .take()
                .ok_or_else(|| AppError::field("challenge", format!("required for {kind}")))?,
        ),
    };
    let mut token = match challenge {
        Some(c) => token.with_challenge(c),
        None => token,
    };
    if let Some(d) = data {
        token = token.with_data(d);
    }
    if let Some(ttl) = r.ttl_seconds {
        if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
            return Err(AppError::field(
                "ttl_seconds",
                format!("between 1 and {MAX_TTL_SECONDS}"),
            ));
        }
        token = token.with_ttl(Duration::from_secs(ttl));
    }
    Ok(token)
}

fn count_token(kind: TokenType, op: &'static str, result: &Result<impl Sized, StoreError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(StoreError::InvalidOrExpired) => "invalid",
        Err(_) => "error",
    };
    // Every application kind counts under one label, so the series stay few.
    let kind = kind.builtin_name().unwrap_or("custom");
    metrics::counter!("tessera_tokens_total", "kind" => kind, "op" => op, "outcome" => outcome)
        .increment(1);
}

/// Issue a token.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = IssueRequest,
    security(("service_key" = [])),
    responses(
        (status = 201, description = "Issued", body = IssuedResponse),
        ServiceErrors, BodyProblems,
    ))]
pub async fn issue(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<IssueRequest>,
) -> Result<(StatusCode, Json<IssuedResponse>), AppError> {
    let kind = req.kind;
    let new = new_token(req)?;
    let issued = app_tokens(&state).issue(new).await;
    count_token(kind, "issue", &issued);
    let issued = issued?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedResponse {
            token: issued.token.expose().to_owned(),
            kind,
            expires_at: issued.expires_at,
        }),
    ))
}

/// Consume a token: once, on any worker.
#[utoipa::path(post, path = "/v1/tokens/consume", tag = "tokens", request_body = TokenRequest,
    security(("service_key" = [])),
    responses(
        (status = 200, description = "Consumed: what the token carried", body = TokenRecord),
        (status = 404, description = "Unknown, expired, used, other kind or wrong challenge: `invalid_or_expired_token`", body = Problem, content_type = "application/problem+json"),
        ServiceErrors, BodyProblems,
    ))]
pub async fn consume(State(state): State<AppState>, ApiJson(req): ApiJson<TokenRequest>) -> Read {
    read_token(&state, req, true).await
}

/// What a consume or a peek answers.
type Read = Result<Json<TokenRecord>, AppError>;

/// Consume (or only peek at) the token of `req`, counting the outcome.
async fn read_token(state: &AppState, req: TokenRequest, consume: bool) -> Read {
    let challenge = req.challenge.map(Challenge::new);
    let tokens = app_tokens(state);
    let (got, op) = if consume {
        let got = tokens
            .consume(req.kind, &req.token, challenge.as_ref())
            .await;
        (got, "consume")
    } else {
        let got = tokens.peek(req.kind, &req.token, challenge.as_ref()).await;
        (got, "peek")
    };
    count_token(req.kind, op, &got);
    Ok(Json(got?.into()))
}

/// Read a token without consuming it.
#[utoipa::path(post, path = "/v1/tokens/peek", tag = "tokens", request_body = TokenRequest,
    security(("service_key" = [])),
    responses(
        (status = 200, description = "What the token carries", body = TokenRecord),
        (status = 404, description = "`invalid_or_expired_token`", body = Problem, content_type = "application/problem+json"),
        ServiceErrors, BodyProblems,
    ))]
pub async fn peek(State(state): State<AppState>, ApiJson(req): ApiJson<TokenRequest>) -> Read {
    read_token(&state, req, false).await
}

/// Revoke every token of a kind for a user.
#[utoipa::path(post, path = "/v1/tokens/revoke", tag = "tokens", request_body = RevokeRequest,
    security(("service_key" = [])),
    responses(
        (status = 200, description = "Revoked", body = RevokeResponse),
        ServiceErrors, BodyProblems,
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> Result<Json<RevokeResponse>, AppError> {
    let user =
        Username::parse(req.username).map_err(|e| AppError::field("username", e.to_string()))?;
    let revoked = app_tokens(&state).revoke(req.kind, &user).await;
    count_token(req.kind, "revoke", &revoked);
    Ok(Json(RevokeResponse { revoked: revoked? }))
}

/// The tokens of `/v1`: a namespace of their own, so a service key can neither mint nor
/// read nor revoke a token that the `/auth` flows accept, whatever its kind.
pub(super) fn app_tokens(state: &AppState) -> tessera_store::Tokens {
    state.auth.tokens.in_namespace(APP_NAMESPACE)
}
