//! `/auth/oidc`: sign-in through an OpenID provider, across workers.
//!
//! `start` on one worker, the provider's pages, `callback` on another, `exchange` on a
//! third: everything that must survive the trip is in the `oidc_state` token (sealed) and
//! the `tessera_oidc` cookie it is bound to.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use tessera_entity::{AuthEphemeralToken, Challenge, EventType, TokenType};
use utoipa::ToSchema;

use crate::client_ip::ClientIp;
use crate::error::Problem;
use crate::extract::ApiJson;
use crate::oidc::{self, OidcFailure};
use crate::routes::auth::{AuthErrors, LoginResponse, after_first_factor, signed_in};
use crate::{AppError, AppState, login};

/// The cookie that binds an `oidc_state` to the browser that started the flow.
pub const OIDC_COOKIE: &str = "tessera_oidc";
/// Binds an `oidc_exchange` token to the browser the callback sent it to: a token posted
/// from anywhere else (an attacker's own login planted in a victim's page) is refused.
pub const OIDC_EXCHANGE_COOKIE: &str = "tessera_oidc_exchange";
const COOKIE_PATH: &str = "/auth/oidc";

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/auth/oidc/{name}/start", axum::routing::get(start))
        .route("/auth/oidc/{name}/callback", axum::routing::get(callback))
}

fn redirect_uri(state: &AppState, name: &str) -> String {
    format!("{}/auth/oidc/{name}/callback", state.auth.public_url)
}

/// Where the browser goes after the callback: `return_to` on the return URL's origin, or
/// the return URL itself.
fn landing(state: &AppState, return_to: Option<&str>) -> String {
    match return_to.filter(|r| oidc::is_relative_path(r)) {
        Some(path) => {
            let origin = login::origin_of(&state.auth.oidc_return_url)
                .unwrap_or_else(|_| state.auth.public_origin.clone());
            format!("{origin}{path}")
        }
        None => state.auth.oidc_return_url.clone(),
    }
}

fn found(location: &str, jar: CookieJar) -> Response {
    (
        StatusCode::FOUND,
        jar,
        [
            (header::LOCATION, location.to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// Begin a login at the provider `name`.
#[utoipa::path(get, path = "/auth/oidc/{name}/start", tag = "auth",
    params(("name" = String, Path, description = "The provider"),
        ("return_to" = Option<String>, Query, description = "A path on the app (relative only) to land on afterwards")),
    responses((status = 302, description = "To the provider's authorization endpoint, with state, nonce and PKCE S256; sets the tessera_oidc cookie"),
        (status = 404, description = "unknown_provider", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "return_to is not a relative path", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited (oidc_start_ip, per client address)", body = Problem, content_type = "application/problem+json")))]
pub async fn start(
    State(state): State<AppState>,
    ip: ClientIp,
    name: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
    jar: CookieJar,
) -> Result<Response, AppError> {
    let return_to = query.get("return_to").cloned();
    if let Some(r) = &return_to
        && !oidc::is_relative_path(r)
    {
        return Err(AppError::field(
            "return_to",
            "return_to must be a path on this site (starting with one `/`), never an absolute URL",
        ));
    }
    // Each start stores an `oidc_state` row for ten minutes: anonymous GETs are bounded per
    // address.
    login::throttle(&state.limiter, EventType::OidcStartIp, &ip.key()).await?;
    // A name that is not even UTF-8 (`%FF`) names no provider.
    let Ok(Path(name)) = name else {
        return Err(AppError::UnknownProvider);
    };
    let provider = oidc::find_provider(&state.db, &name)
        .await?
        .ok_or(AppError::UnknownProvider)?;
    let back = redirect_uri(&state, &name);
    let ready = state
        .auth
        .oidc
        .ready(&provider, &state.auth.keys, &back, None);
    let ready = match within_provider_budget(&state, ready).await {
        Ok(r) => r,
        Err(f) => {
            tracing::warn!(provider = %name, code = f.code(), "OIDC start failed");
            count(&name, f.code());
            let to = format!(
                "{}#oidc_error={}",
                landing(&state, return_to.as_deref()),
                f.code()
            );
            return Ok(found(&to, jar));
        }
    };
    let nonce = crate::secrets::random_key();
    let (challenge, verifier) = oidc::new_pkce();
    let browser = Challenge::generate();
    let issued = state
        .tokens
        .issue(
            AuthEphemeralToken::new_oidc_state(provider.id.to_string(), nonce.clone(), verifier)
                .with_challenge(browser.clone())
                .with_data(json!({ "return_to": return_to })),
        )
        .await?;
    let url = ready.authorize(
        issued.token.expose().to_owned(),
        nonce,
        &provider.scopes,
        challenge,
    );
    let cookie = flow_cookie(
        state.auth.secure_cookies,
        OIDC_COOKIE,
        &browser,
        TokenType::OidcState,
    );
    Ok(found(&url, jar.add(cookie)))
}

/// Runs the calls to a provider within three fifths of the request timeout, so a slow
/// provider ends in `#oidc_error=provider_unavailable` (a page can say what happened), not
/// in the request's own 503 `timeout`.
async fn within_provider_budget<T>(
    state: &AppState,
    calls: impl std::future::Future<Output = Result<T, OidcFailure>>,
) -> Result<T, OidcFailure> {
    let budget = state.limits.request_timeout.mul_f64(0.6);
    tokio::time::timeout(budget, calls)
        .await
        .unwrap_or_else(|_| {
            tracing::warn!(?budget, "the OpenID provider did not answer in time");
            Err(OidcFailure::ProviderUnavailable)
        })
}

/// A cookie of the OIDC flow carrying `value`, living as long as tokens of `kind`.
fn flow_cookie(
    secure: bool,
    name: &'static str,
    value: &Challenge,
    kind: TokenType,
) -> Cookie<'static> {
    Cookie::build((name, value.expose().to_owned()))
        .http_only(true)
        // Lax: the provider's top-level redirect back carries it; a cross-site POST does not.
        .same_site(SameSite::Lax)
        .secure(secure)
        .path(COOKIE_PATH)
        .max_age(cookie::time::Duration::seconds(
            kind.default_ttl_seconds() as i64
        ))
        .build()
}

fn count(provider: &str, outcome: &'static str) {
    metrics::counter!("tessera_oidc_logins_total", "provider" => provider.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// The provider's redirect back: consumes the state, exchanges the code, checks the ID
/// token, links the user, and sends the browser on with `#oidc_exchange=<token>` — or
/// `#oidc_error=<code>` for any failure, never an error page and never a session.
#[utoipa::path(get, path = "/auth/oidc/{name}/callback", tag = "auth",
    params(("name" = String, Path, description = "The provider")),
    responses((status = 302, description = "To TESSERA_OIDC_RETURN_URL (or return_to on its origin) with #oidc_exchange=TOKEN or #oidc_error=CODE")))]
pub async fn callback(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
    jar: CookieJar,
) -> Response {
    let mut return_to = None;
    let mut own_state = false;
    // A name that is not even UTF-8 (`%FF`) names no provider: the same redirect as any
    // unknown one.
    let name = name.map(|Path(n)| n).unwrap_or_default();
    let provider = oidc::find_provider(&state.db, &name).await;
    let label = match &provider {
        Ok(Some(_)) => name.as_str(),
        _ => "unknown",
    };
    let outcome = match provider {
        Ok(Some(p)) => finish(&state, p, &query, &jar, &mut return_to, &mut own_state).await,
        Ok(None) => Err(OidcFailure::UnknownProvider),
        Err(e) => {
            tracing::error!(error = %e, "OIDC callback: store failure");
            Err(OidcFailure::ServerError)
        }
    };
    let base = landing(&state, return_to.as_deref());
    let mut jar = jar;
    let to = match outcome {
        Ok((token, binding)) => {
            count(label, "success");
            tracing::info!(provider = %label, "OIDC login");
            jar = jar.add(flow_cookie(
                state.auth.secure_cookies,
                OIDC_EXCHANGE_COOKIE,
                &binding,
                TokenType::OidcExchange,
            ));
            format!("{base}#oidc_exchange={token}")
        }
        Err(f) => {
            count(label, f.code());
            tracing::warn!(provider = %label, code = f.code(), "OIDC callback refused");
            format!("{base}#oidc_error={}", f.code())
        }
    };
    // The browser's login in flight ends only with its own state: a callback forced on it
    // with someone else's state (or none) leaves its cookie, and its login, alone.
    if own_state {
        jar = jar.remove(Cookie::build((OIDC_COOKIE, "")).path(COOKIE_PATH).build());
    }
    found(&to, jar)
}

async fn finish(
    state: &AppState,
    provider: tessera_entity::oidc_providers::Model,
    query: &HashMap<String, String>,
    jar: &CookieJar,
    return_to: &mut Option<String>,
    own_state: &mut bool,
) -> Result<(String, Challenge), OidcFailure> {
    let server = |e: AppError| {
        tracing::error!(error = %e, "OIDC callback: store failure");
        OidcFailure::ServerError
    };
    let cookie = jar.get(OIDC_COOKIE).map(|c| Challenge::new(c.value()));
    let presented = query.get("state");
    // The state is spent whatever happens next: a callback is never retried.
    let consumed = match (presented, &cookie) {
        (Some(s), Some(c)) => Some(
            state
                .tokens
                .consume(TokenType::OidcState, s, Some(c))
                .await
                .map_err(|e| match AppError::from(e) {
                    AppError::InvalidOrExpiredToken => OidcFailure::InvalidState,
                    other => server(other),
                }),
        ),
        _ => None,
    };
    if let Some(Ok(t)) = &consumed {
        *own_state = true;
        *return_to = t
            .payload
            .data
            .as_ref()
            .and_then(|d| d.get("return_to"))
            .and_then(|r| r.as_str())
            .map(str::to_owned);
    }
    if let Some(error) = query.get("error") {
        return Err(if error == "access_denied" {
            OidcFailure::AccessDenied
        } else {
            OidcFailure::ProviderError
        });
    }
    if presented.is_none() {
        return Err(OidcFailure::InvalidState);
    }
    if cookie.is_none() {
        return Err(OidcFailure::MissingCookie);
    }
    let record = consumed.expect("state and cookie are present")?;
    if record.provider_id.as_deref() != Some(provider.id.to_string().as_str()) {
        return Err(OidcFailure::InvalidState);
    }
    if let Some(iss) = query.get("iss")
        && iss.trim_end_matches('/') != provider.issuer.trim_end_matches('/')
    {
        return Err(OidcFailure::IssuerMismatch);
    }
    let code = query.get("code").cloned().ok_or(OidcFailure::MissingCode)?;
    let payload = record.payload;
    let back = redirect_uri(state, &provider.name);
    let identity = state.auth.oidc.finish(
        &provider,
        &state.auth.keys,
        &back,
        code,
        payload.code_verifier.unwrap_or_default(),
        payload.nonce.unwrap_or_default(),
    );
    let identity = within_provider_budget(state, identity).await?;
    let user = oidc::link_or_create(
        &state.db,
        &provider,
        &identity,
        state.auth.oidc_create_users,
    )
    .await
    .map_err(server)??;
    if user.disabled {
        return Err(OidcFailure::AccountDisabled);
    }
    let username = login::username_of(&user).map_err(server)?;
    let binding = Challenge::generate();
    let issued = state
        .tokens
        .issue(
            AuthEphemeralToken::new_oidc_exchange(username)
                .with_challenge(binding.clone())
                .with_data(json!({ "provider": provider.name })),
        )
        .await
        .map_err(|e| server(e.into()))?;
    Ok((issued.token.expose().to_owned(), binding))
}

/// The token from `#oidc_exchange=`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// The `oidc_exchange` token (single use, 60 s).
    pub token: String,
}

/// Trade the token from the callback for a session, or for the second-factor step when the
/// user has one and the provider is not trusted to replace it.
#[utoipa::path(post, path = "/auth/oidc/exchange", tag = "auth", request_body = ExchangeRequest,
    responses((status = 200, description = "Success", body = LoginResponse),
        (status = 400, description = "invalid_or_expired_token", body = Problem, content_type = "application/problem+json"),
        (status = 423, description = "account_locked", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn exchange(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    ApiJson(req): ApiJson<ExchangeRequest>,
) -> Result<(CookieJar, Json<LoginResponse>), AppError> {
    // Only from the browser the callback sent the token to.
    let binding = jar
        .get(OIDC_EXCHANGE_COOKIE)
        .map(|c| Challenge::new(c.value()))
        .ok_or(AppError::TokenRejected)?;
    let consumed = state
        .tokens
        .consume(TokenType::OidcExchange, &req.token, Some(&binding))
        .await
        .map_err(|e| login::token_error(e, AppError::TokenRejected))?;
    let jar = jar.remove(
        Cookie::build((OIDC_EXCHANGE_COOKIE, ""))
            .path(COOKIE_PATH)
            .build(),
    );
    let user = login::token_user(&state.db, &consumed)
        .await?
        .filter(|u| !u.disabled)
        .ok_or(AppError::TokenRejected)?;
    login::ensure_unlocked(&state.auth, &user)?;
    // Whether this login may skip the local second factor is the provider's setting, read
    // from its row now; the token only names the provider.
    let provider = consumed
        .payload
        .data
        .as_ref()
        .and_then(|d| d.get("provider"))
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let skip_local_mfa = oidc::find_provider(&state.db, provider)
        .await?
        .is_some_and(|p| p.skip_local_mfa);
    if skip_local_mfa {
        signed_in(&state, jar, &user, &ip, &headers).await
    } else {
        after_first_factor(&state, jar, &user, &ip, &headers).await
    }
}
