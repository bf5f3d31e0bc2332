//! The OpenAPI document, generated from the handlers and types, served at `/openapi.json`,
//! and a Swagger UI at `/docs`.

use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::routes::v1;
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
    ),
    components(schemas(Problem)),
    modifiers(&ServiceKey),
    tags(
        (name = "tokens", description = "Single-use tokens"),
        (name = "ratelimit", description = "Sliding-window rate limits"),
        (name = "admin", description = "Maintenance"),
        (name = "health", description = "Probes"),
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
