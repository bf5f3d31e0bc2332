//! `/auth/oidc/...`: sign-in through an OpenID provider. The flow is tessera-auth's;
//! here are its redirects and the two cookies that bind it to one browser.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;
use tessera_auth::flows::OidcStart;
use tessera_entity::{Challenge, TokenType};
use utoipa::ToSchema;

use super::answers::{self, AuthErrors, SignIn, SignInStep};
use super::call::Call;
use crate::error::AppError;
use crate::error::{BodyProblems, Problem};
use crate::http::cookies::{self, OIDC, OIDC_EXCHANGE, OIDC_PATH};
use crate::http::extract::ApiJson;
use crate::state::AppState;

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

/// How long the calls to a provider may take: three fifths of the request timeout, so a
/// slow provider ends in `#oidc_error=provider_unavailable` (a page can say what
/// happened), not in the request's own 503 `timeout`.
fn provider_budget(state: &AppState) -> Duration {
    state.limits.request_timeout.mul_f64(0.6)
}

/// A cookie of the OIDC flow carrying `value`, living as long as tokens of `kind`.
fn flow_cookie(
    state: &AppState,
    name: &'static str,
    value: &Challenge,
    kind: TokenType,
) -> axum_extra::extract::cookie::Cookie<'static> {
    let ttl = Duration::from_secs(kind.default_ttl_seconds());
    let value = value.expose().to_owned();
    cookies::on_path(&state.auth.settings, name, value, ttl, OIDC_PATH)
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
    call: Call,
    name: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let return_to = query.get("return_to").cloned();
    // A name that is not even UTF-8 (`%FF`) names no provider.
    let name = name.ok().map(|Path(n)| n);
    let budget = provider_budget(&call.state);
    let start = call
        .auth()
        .oidc_start(&call.client, name.as_deref(), return_to, budget)
        .await?;
    Ok(match start {
        OidcStart::Provider { url, browser } => {
            let cookie = flow_cookie(&call.state, OIDC, &browser, TokenType::OidcState);
            found(&url, call.jar.add(cookie))
        }
        OidcStart::Failed { to } => found(&to, call.jar),
    })
}

/// The provider's redirect back: consumes the state, exchanges the code, checks the ID
/// token, links the user, and sends the browser on with `#oidc_exchange=<token>` — or
/// `#oidc_error=<code>` for any failure, never an error page and never a session.
#[utoipa::path(get, path = "/auth/oidc/{name}/callback", tag = "auth",
    params(("name" = String, Path, description = "The provider")),
    responses((status = 302, description = "To TESSERA_OIDC_RETURN_URL (or return_to on its origin) with #oidc_exchange=TOKEN or #oidc_error=CODE")))]
pub async fn callback(
    call: Call,
    name: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    // A name that is not even UTF-8 (`%FF`) names no provider: the same redirect as any
    // unknown one.
    let name = name.map(|Path(n)| n).unwrap_or_default();
    let budget = provider_budget(&call.state);
    let done = call
        .auth()
        .oidc_callback(&name, &query, call.cookie(OIDC), budget)
        .await;
    let Call { state, mut jar, .. } = call;
    if let Some(binding) = &done.exchange_binding {
        let kind = TokenType::OidcExchange;
        jar = jar.add(flow_cookie(&state, OIDC_EXCHANGE, binding, kind));
    }
    // The browser's login in flight ends only with its own state: a callback forced on it
    // with someone else's state (or none) leaves its cookie, and its login, alone.
    if done.own_state {
        jar = jar.remove(cookies::removal_on(&state.auth.settings, OIDC, OIDC_PATH));
    }
    found(&done.to, jar)
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
    responses(SignInStep,
        (status = 400, description = "invalid_or_expired_token", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn exchange(mut call: Call, ApiJson(req): ApiJson<ExchangeRequest>) -> SignIn {
    let binding = call.cookie(OIDC_EXCHANGE);
    let outcome = call
        .auth()
        .oidc_exchange(&call.client, &req.token, binding)
        .await;
    // Spent or refused, the binding has done its work.
    call.jar = call.jar.remove(cookies::removal_on(
        &call.state.auth.settings,
        OIDC_EXCHANGE,
        OIDC_PATH,
    ));
    answers::outcome(call, outcome?)
}
