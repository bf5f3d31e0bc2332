//! `/auth`: the end-user login flows over HTTP. Each handler extracts the body and the
//! cookies, makes one call into tessera-auth, and answers its outcome as JSON and cookies.

pub mod account;
pub mod answers;
pub mod call;
pub mod email_otp;
pub mod login;
pub mod magic;
pub mod oidc;
pub mod passkeys;
pub mod reset;
pub mod sessions;
pub mod totp;

use axum::http::{HeaderValue, Method, header};
use axum::routing::{get, post};
use axum::{Router, middleware};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::http::cookies;
use crate::state::AppState;

pub fn router(state: AppState) -> Router<AppState> {
    let cors = cors(&state.auth.settings.cors_origins);
    let routes = Router::new()
        .route("/auth/register", post(login::register))
        .route("/auth/login", post(login::login))
        .route("/auth/2fa/verify", post(login::verify))
        .route("/auth/2fa/email/send", post(login::email_send))
        .route(
            "/auth/2fa/passkey/start",
            post(passkeys::second_factor_start),
        )
        .route("/auth/passkeys", get(passkeys::list))
        .route(
            "/auth/passkeys/register/start",
            post(passkeys::register_start),
        )
        .route(
            "/auth/passkeys/register/finish",
            post(passkeys::register_finish),
        )
        .route("/auth/passkeys/remove", post(passkeys::remove))
        .route("/auth/passkeys/login/start", post(passkeys::login_start))
        .route("/auth/passkeys/login/finish", post(passkeys::login_finish))
        .route("/auth/totp/setup", post(totp::totp_setup))
        .route("/auth/totp/confirm", post(totp::totp_confirm))
        .route("/auth/totp/status", get(totp::totp_status))
        .route("/auth/totp/disable", post(totp::totp_disable))
        .route(
            "/auth/totp/backup-codes/regenerate",
            post(totp::regenerate_backup_codes),
        )
        .route("/auth/totp/enforce-setup", post(totp::enforce_setup))
        .route("/auth/totp/enforce-confirm", post(totp::enforce_confirm))
        .route("/auth/email-otp/enable", post(email_otp::email_otp_enable))
        .route(
            "/auth/email-otp/confirm",
            post(email_otp::email_otp_confirm),
        )
        .route(
            "/auth/email-otp/disable",
            post(email_otp::email_otp_disable),
        )
        .route("/auth/password/change", post(account::change_password))
        .route("/auth/email/change", post(account::change_email))
        .route("/auth/email/confirm", post(account::confirm_email))
        .route("/auth/account/delete", post(account::delete_account))
        .route("/auth/magic-link/request", post(magic::magic_link_request))
        .route("/auth/magic-link/consume", post(magic::magic_link_consume))
        .route("/auth/password-reset/request", post(reset::reset_request))
        .route("/auth/password-reset/confirm", post(reset::reset_confirm))
        .route("/auth/me", get(login::me))
        .route("/auth/sessions", get(sessions::list_sessions))
        .route("/auth/sessions/revoke", post(sessions::revoke_session))
        .route(
            "/auth/sessions/revoke-others",
            post(sessions::revoke_other_sessions),
        )
        .route("/auth/logout", post(login::logout))
        .route("/auth/oidc/exchange", post(oidc::exchange))
        .route_layer(middleware::from_fn_with_state(
            state.auth.settings.clone(),
            cookies::csrf,
        ))
        .route("/auth/verify", get(sessions::forward_auth))
        .route("/auth/oidc/{name}/start", get(oidc::start))
        .route("/auth/oidc/{name}/callback", get(oidc::callback));
    match cors {
        Some(cors) => routes.layer(cors),
        None => routes,
    }
}

/// Browser apps on `origins` may call `/auth` with credentials: their preflights are
/// answered (POST and GET, `Content-Type`), and `Access-Control-Allow-Origin` names them
/// exactly, never `*`. No origin configured: no CORS at all.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::CONTENT_TYPE])
            .max_age(Duration::from_secs(600)),
    )
}
