//! Sessions as others see them: `GET /auth/verify` for a proxy in front of a protected app,
//! and the sessions a signed-in person lists and ends.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tessera_auth::AuthError;
use utoipa::ToSchema;

use super::answers::AuthErrors;
use super::call::Call;
use crate::error::AppError;
use crate::error::{BodyProblems, Problem};
use crate::http::cookies::SESSION;
use crate::http::extract::ApiJson;
use crate::state::AppState;

/// Whether a visitor of a protected app is signed in: 200 with `Remote-User`,
/// `Remote-Email` and `Remote-Second-Factor`, or 401 `unauthenticated` (with `?redirect=1`
/// and `X-Forwarded-Uri` / `X-Original-URI`, a 302 to `/login?return_to=THAT_PATH`).
/// One session lookup; it writes only `last_seen_at`, at most once a minute.
#[utoipa::path(get, path = "/auth/verify", tag = "auth",
    params(("redirect" = Option<String>, Query, description = "`1`: answer an unauthenticated visitor with a redirect to the sign-in page")),
    responses((status = 200, description = "Signed in: `Remote-User`, `Remote-Email`, `Remote-Second-Factor` headers, empty body"),
        (status = 302, description = "Not signed in, `redirect=1`: to `/login?return_to=PATH`"),
        (status = 401, description = "unauthenticated", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "store_unavailable or timeout", body = Problem, content_type = "application/problem+json")))]
pub async fn forward_auth(State(state): State<AppState>, req: Request) -> Response {
    // Only what the check needs is read from the request (no cookie jar, no copied
    // headers): this route is asked once per request to every protected app.
    let headers = req.headers();
    let checked = match state.auth.check_session(session_cookie(headers)).await {
        Ok(checked) => checked,
        Err(AuthError::NotSignedIn) => return unauthenticated(req.uri().query(), headers),
        Err(e) => return AppError::from(e).into_response(),
    };
    let mut answer = StatusCode::OK.into_response();
    let remote = [
        ("remote-user", Some(checked.username)),
        ("remote-email", checked.email),
        (
            "remote-second-factor",
            Some(checked.second_factor.to_string()),
        ),
    ];
    for (name, value) in remote {
        if let Some(v) = value.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
            answer
                .headers_mut()
                .insert(HeaderName::from_static(name), v);
        }
    }
    answer
}

/// The session cookie's value among the request's cookies, read as the cookie jar of the
/// other `/auth` routes reads it: the last cookie of that name wins, its value as sent
/// (session values hold nothing a jar would decode), so forward auth and `/auth/me` never
/// disagree about who is signed in.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .rfind(|(name, _)| *name == SESSION)
        .map(|(_, value)| value)
}

/// 401, or the redirect to the sign-in page a proxy that passes 302s on asked for.
fn unauthenticated(query: Option<&str>, headers: &HeaderMap) -> Response {
    let asked = query
        .unwrap_or("")
        .split('&')
        .any(|p| p == "redirect=1" || p == "redirect=true");
    let path = ["x-forwarded-uri", "x-original-uri"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .filter(|p| tessera_auth::oidc::is_relative_path(p));
    match path {
        Some(path) if asked => {
            let to = format!("/login?return_to={}", percent_encode(path));
            (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
        }
        _ => AppError::Unauthenticated.into_response(),
    }
}

/// `s` with everything but unreserved characters and `/` percent-encoded.
pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One session of the signed-in person.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionItem {
    /// Its public id (never the cookie or its hash).
    pub id: String,
    /// When it began.
    pub created_at: DateTime<Utc>,
    /// When a protected app last saw it (`/auth/verify`, at most once a minute).
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The address it began from.
    pub ip: Option<String>,
    /// The browser it began in.
    pub user_agent: Option<String>,
    /// It is the session asking.
    pub current: bool,
}

/// The signed-in person's live sessions, oldest first.
#[utoipa::path(get, path = "/auth/sessions", tag = "auth",
    responses((status = 200, description = "Success", body = [SessionItem]),
        (status = 401, description = "not_authenticated", body = Problem, content_type = "application/problem+json")))]
pub async fn list_sessions(call: Call) -> Result<Json<Vec<SessionItem>>, AppError> {
    let all = call.auth().list_sessions(call.cookie(SESSION)).await?;
    let items = all.into_iter().map(|(s, current)| SessionItem {
        id: tessera_auth::sessions::public_id(&s),
        created_at: s.created_at,
        last_seen_at: s.last_seen_at,
        ip: s.ip,
        user_agent: s.user_agent,
        current,
    });
    Ok(Json(items.collect()))
}

/// A session to end.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeSession {
    /// Its id from `GET /auth/sessions`.
    pub id: String,
}

/// End one of the signed-in person's sessions (that browser is signed out).
#[utoipa::path(post, path = "/auth/sessions/revoke", tag = "auth", request_body = RevokeSession,
    responses((status = 204, description = "Ended"),
        (status = 401, description = "not_authenticated", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn revoke_session(
    call: Call,
    ApiJson(req): ApiJson<RevokeSession>,
) -> Result<StatusCode, AppError> {
    call.auth()
        .revoke_session(call.cookie(SESSION), &req.id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many sessions ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    /// Sessions ended.
    pub revoked: u64,
}

/// End every session of the signed-in person but this one.
#[utoipa::path(post, path = "/auth/sessions/revoke-others", tag = "auth",
    responses((status = 200, description = "Success", body = Revoked),
        (status = 401, description = "not_authenticated", body = Problem, content_type = "application/problem+json"),
        AuthErrors, BodyProblems))]
pub async fn revoke_other_sessions(call: Call) -> Result<Json<Revoked>, AppError> {
    let revoked = call
        .auth()
        .revoke_other_sessions(call.cookie(SESSION))
        .await?;
    Ok(Json(Revoked { revoked }))
}
