//! The cookies of the login flows, and the CSRF rule of the routes they authorize.
//!
//! Every cookie is HttpOnly and SameSite=Lax, `Secure` when the public URL is https. What
//! they carry is made by tessera-auth (a session, a challenge, a setup token); here they
//! are only set, read and removed.

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use std::sync::Arc;
use std::time::Duration;
use tessera_auth::{AuthSettings, Pending, SignedIn};

use crate::error::AppError;
use crate::http::extract::is_json;

/// The session cookie.
pub const SESSION: &str = "tessera_session";
/// Binds an `mfa_token` to the browser it was issued to.
pub const CHALLENGE: &str = "tessera_challenge";
/// Carries an email-OTP setup token.
pub const EMAIL_OTP: &str = "tessera_email_otp";
/// Carries a TOTP setup in progress (a `totp_setup` token).
pub const TOTP_SETUP: &str = "tessera_totp_setup";
/// Left by a complete sign-in: this device may try passwords for that account beyond the
/// per-username throttle that strangers share.
pub const DEVICE: &str = "tessera_device";
/// Binds an `oidc_state` to the browser that started the flow.
pub const OIDC: &str = "tessera_oidc";
/// Binds an `oidc_exchange` token to the browser the callback sent it to: a token posted
/// from anywhere else (an attacker's own login planted in a victim's page) is refused.
pub const OIDC_EXCHANGE: &str = "tessera_oidc_exchange";
/// Names the passkey ceremony (a `webauthn` token) this browser began.
pub const WEBAUTHN: &str = "tessera_webauthn";
/// The path of the cookies only `/auth` routes read.
pub const AUTH_PATH: &str = "/auth";
/// The path of the OIDC flow's cookies.
pub const OIDC_PATH: &str = "/auth/oidc";

/// A cookie named `name` carrying `value` for `max_age`, on `path`.
pub fn on_path(
    settings: &AuthSettings,
    name: &'static str,
    value: String,
    max_age: Duration,
    path: &'static str,
) -> Cookie<'static> {
    let cookie = Cookie::build((name, value))
        .http_only(true)
        // Lax: a provider's top-level redirect back carries it; a cross-site POST does not.
        .same_site(SameSite::Lax)
        .secure(settings.secure_cookies)
        .path(path)
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        ));
    match &settings.cookie_domain {
        Some(domain) => cookie.domain(domain.clone()).build(),
        None => cookie.build(),
    }
}

/// A cookie named `name` carrying `value` for `max_age`, on `/`.
pub fn new(
    settings: &AuthSettings,
    name: &'static str,
    value: String,
    max_age: Duration,
) -> Cookie<'static> {
    on_path(settings, name, value, max_age, "/")
}

/// Removes the cookie `name` set on `path` (and on the cookie domain, when there is one).
pub fn removal_on(
    settings: &AuthSettings,
    name: &'static str,
    path: &'static str,
) -> Cookie<'static> {
    let cookie = Cookie::build((name, "")).path(path);
    match &settings.cookie_domain {
        Some(domain) => cookie.domain(domain.clone()).build(),
        None => cookie.build(),
    }
}

/// Removes the cookie `name` set on `/`.
pub fn removal(settings: &AuthSettings, name: &'static str) -> Cookie<'static> {
    removal_on(settings, name, "/")
}

/// The value of the cookie `name`, if the browser sent it.
pub fn value<'j>(jar: &'j CookieJar, name: &str) -> Option<&'j str> {
    jar.get(name).map(|c| c.value())
}

/// The device cookie of an account.
pub fn device(settings: &AuthSettings, value: String) -> Cookie<'static> {
    new(settings, DEVICE, value, tessera_auth::sessions::DEVICE_TTL)
}

/// A complete sign-in: the session and device cookies set, the challenge gone.
pub fn signed_in(settings: &AuthSettings, jar: CookieJar, s: &SignedIn) -> CookieJar {
    jar.add(new(
        settings,
        SESSION,
        s.session.clone(),
        settings.session_ttl,
    ))
    .add(device(settings, s.device.clone()))
    .remove(removal(settings, CHALLENGE))
}

/// A pending login: its challenge cookie set.
pub fn pending(settings: &AuthSettings, jar: CookieJar, p: &Pending) -> CookieJar {
    jar.add(new(
        settings,
        CHALLENGE,
        p.challenge.expose().to_owned(),
        p.ttl,
    ))
}

/// Refuses cross-site state changes: a POST must come from the public origin (or one of
/// `TESSERA_CORS_ORIGINS`) when it names one, and must be JSON (a cross-site form cannot
/// send JSON without a CORS preflight, which only those origins are granted).
pub async fn csrf(State(settings): State<Arc<AuthSettings>>, req: Request, next: Next) -> Response {
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS];
    if !safe.contains(req.method()) {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let same = origin.to_str().is_ok_and(|o| settings.accepts_origin(o));
            if !same {
                return AppError::CsrfRejected.into_response();
            }
        }
        // Only a POST carries a body here; any other method is answered 405.
        if req.method() == Method::POST && !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return AppError::UnsupportedMediaType.into_response();
        }
    }
    next.run(req).await
}
