//! The pages a person signs in with, served on the same origin as `/auth`: sign in (with
//! the second-factor step, the sign-in link and the OIDC return), create account, reset
//! password, the account page. Templates are askama's, checked when the crate builds;
//! every action on a page is a JSON call to an `/auth` route made by the one small script
//! served beside them, so each rule (throttles, lockout, CSRF, cookies) lives once, in
//! tessera-auth and the `/auth` routes.

mod views;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

/// What every page is sent with: only its own origin's scripts, styles and images (and
/// `data:` images for the QR code), never framed, never sniffed, never cached.
const PAGE_HEADERS: [(HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CACHE_CONTROL, "no-store"),
    (header::REFERRER_POLICY, "same-origin"),
    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
];

/// The page routes and their two assets.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(views::login))
        .route("/login/magic", get(views::magic))
        .route("/register", get(views::register))
        .route("/reset-password", get(views::reset_password))
        .route("/account", get(views::account))
        .route("/account/email", get(views::email_confirm))
        .route("/auth/assets/tessera.js", get(script))
        .route("/auth/assets/tessera.css", get(style))
}

/// An HTML page with [`PAGE_HEADERS`].
fn html(status: axum::http::StatusCode, body: String) -> Response {
    let mut answer = (status, body).into_response();
    let headers = answer.headers_mut();
    for (name, value) in PAGE_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    answer
}

/// A served asset: cached for an hour, never sniffed.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/tessera.js"),
    )
}

async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/tessera.css"),
    )
}
