//! Every route, in the layers every request goes through.

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::{Router, middleware};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::http::telemetry;
use crate::state::AppState;
use crate::{openapi, pages, routes};

/// All routes on `state`, in the layers every request goes through: a request id (taken
/// from `x-request-id` or made), a log line per request carrying it, metrics, the timeout
/// and the body limit.
pub fn router(state: AppState) -> Router {
    let limits = state.limits;
    let proxies = state.proxies.clone();
    Router::new()
        .merge(routes::health::router())
        .merge(routes::v1::router(state.clone()))
        .merge(routes::auth::router(state.clone()))
        .merge(pages::router())
        .merge(openapi::router())
        .fallback(telemetry::not_found)
        .layer(middleware::from_fn(telemetry::method_not_allowed))
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(middleware::from_fn(move |req, next| {
            telemetry::timeout(limits.request_timeout, req, next)
        }))
        .layer(middleware::from_fn(telemetry::record_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |req: &Request<_>| {
                    // The fields are worked out only when the span is logged.
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id = %req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-"),
                        client_ip = %proxies
                            .client_ip(req)
                            .map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
                    )
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(middleware::from_fn(telemetry::sanitize_request_id))
        .with_state(state)
}
