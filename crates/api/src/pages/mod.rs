//! The pages a person signs in with, served on the same origin as `/auth`: sign in (with
//! the second-factor step, the sign-in link and the OIDC return), create account, reset
//! password, the account page. Templates are askama's, checked when the crate builds;
//! every action on a page is a JSON call to an `/auth` route made by the one small script
//! served beside them, so each rule (throttles, lockout, CSRF, cookies) lives once, in
//! tessera-auth and the `/auth` routes.

mod views;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

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
