//! The OpenAPI document, generated from the handlers and types, served at `/openapi.json`,
//! and a Swagger UI at `/docs`.

use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::error::Problem;
use crate::routes::auth::{
    account, email_otp, login, magic, oidc, passkeys, reset, sessions, totp,
};
use crate::routes::v1::{admin, ratelimit, tokens};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera",
        description = "Single-use tokens and sliding-window rate limits shared by every worker of a web deployment. Errors are RFC 7807 problem+json with a stable `code`."
    ),
    paths(
        tokens::issue, tokens::consume, tokens::peek, tokens::revoke,
        ratelimit::hit, ratelimit::ratelimit_peek, ratelimit::reset, admin::purge,
        crate::routes::health::healthz, crate::routes::health::readyz,
        login::register, login::login, login::verify, login::email_send,
        totp::totp_setup, totp::totp_confirm, totp::totp_status, totp::totp_disable,
        totp::regenerate_backup_codes, totp::enforce_setup, totp::enforce_confirm,
        email_otp::email_otp_enable, email_otp::email_otp_confirm, email_otp::email_otp_disable,
        account::change_password, account::change_email, account::confirm_email,
        account::delete_account, sessions::forward_auth, sessions::list_sessions, sessions::revoke_session,
        sessions::revoke_other_sessions, crate::routes::v1::sessions::introspect,
        crate::routes::v1::once::once, magic::magic_link_request, magic::magic_link_consume,
        reset::reset_request, reset::reset_confirm, login::me, login::logout,
        oidc::start, oidc::callback, oidc::exchange,
        passkeys::register_start, passkeys::register_finish, passkeys::list, passkeys::remove,
        passkeys::login_start, passkeys::login_finish, passkeys::second_factor_start,
    ),
    components(schemas(Problem)),
    modifiers(&ServiceKey),
    tags(
        (name = "tokens", description = "Single-use tokens"),
        (name = "ratelimit", description = "Sliding-window rate limits"),
        (name = "admin", description = "Maintenance"),
        (name = "sessions", description = "Sessions of /auth, for backends"),
        (name = "health", description = "Probes"),
        (name = "auth", description = "End-user login flows (cookies; JSON only; Origin must be the public URL's)"),
    )
)]
pub struct ApiDoc;

struct ServiceKey;

impl Modify for ServiceKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "service_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

pub fn router() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
