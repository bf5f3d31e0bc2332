//! The OpenAPI document, generated from the handlers and types, served at `/openapi.json`,
//! and a Swagger UI at `/docs`.

use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::routes::{auth, oidc, v1};
use crate::{AppState, error::Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera",
        description = "Single-use tokens and sliding-window rate limits shared by every worker of a web deployment. Errors are RFC 7807 problem+json with a stable `code`."
    ),
    paths(
        v1::issue, v1::consume, v1::peek, v1::revoke,
        v1::hit, v1::ratelimit_peek, v1::reset, v1::purge,
        crate::routes::health::healthz, crate::routes::health::readyz,
        auth::register, auth::login, auth::verify, auth::email_send,
        auth::totp_setup, auth::totp_confirm, auth::totp_status, auth::totp_disable,
        auth::regenerate_backup_codes, auth::enforce_setup, auth::enforce_confirm,
        auth::email_otp_enable, auth::email_otp_confirm,
        auth::reset_request, auth::reset_confirm, auth::me, auth::logout,
        oidc::start, oidc::callback, oidc::exchange,
    ),
    components(schemas(Problem)),
    modifiers(&ServiceKey),
    tags(
        (name = "tokens", description = "Single-use tokens"),
        (name = "ratelimit", description = "Sliding-window rate limits"),
        (name = "admin", description = "Maintenance"),
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
