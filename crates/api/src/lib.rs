//! Tessera's HTTP service.
//!
//! [`Application::build`] opens the stores named by the configuration, checks (or
//! applies) the schema, and binds the listener; [`Application::run_until_stopped`] serves
//! until the shutdown future resolves, finishing requests in flight, with the periodic
//! purge running beside it. [`router`] builds the routes on an [`AppState`], so tests drive
//! them without a socket.
//!
//! # Layout
//!
//! - [`config`]: every setting, as clap arguments with `TESSERA_*` environment variables.
//! - [`startup`]: [`Application`], backend selection, schema checks, the purge task.
//! - [`error`]: [`AppError`] and the one table from it (and tessera-auth's
//!   [`AuthError`](tessera_auth::AuthError)) to status, stable code and problem+json.
//! - [`http`]: what every route shares: the JSON extractor, the client's address, service
//!   keys, cookies and CSRF, telemetry.
//! - [`openapi`]: the generated OpenAPI document and `/docs`.
//! - `routes`: `/v1` (tokens, rate limits, admin), `/auth` (login, TOTP, email codes,
//!   reset, OIDC), health; each group exposes `router()`.
//!
//! The login domain itself is tessera-auth; handlers extract, make one call, respond.

pub mod config;
pub mod error;
pub mod http;
pub mod openapi;
mod routes;
pub mod startup;

pub use config::{DatabaseArgs, ServeConfig};
pub use error::AppError;
pub use http::client_ip::{ClientIp, TrustedProxies};
pub use http::service_key::ApiKeys;
pub use startup::{Application, StartupError};
pub use tessera_auth::{Auth, AuthSettings};

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::{Router, middleware};
use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::DatabaseConnection;
use std::time::Duration;
use tessera_limiter::Limiter;
use tessera_store::Tokens;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

/// Limits every request is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub body_bytes: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What every handler can reach. Cheap to clone: everything inside is shared.
#[derive(Clone)]
pub struct AppState {
    /// The login domain, with the database, the token store and the limiter.
    pub auth: Auth,
    /// The service keys of `/v1`.
    pub api_keys: ApiKeys,
    /// The Prometheus recorder, rendered at `/metrics`.
    pub metrics: PrometheusHandle,
    /// Body size and time limits.
    pub limits: Limits,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub proxies: TrustedProxies,
}

impl AppState {
    /// A state over `db`, `tokens` and `limiter`, with `api_keys`, default limits, and
    /// login flows on a throwaway secret key with mail to `./outbox` ([`AuthSettings::ephemeral`]).
    pub fn new(
        db: DatabaseConnection,
        tokens: Tokens,
        limiter: Limiter,
        api_keys: ApiKeys,
    ) -> Self {
        let settings = AuthSettings::ephemeral("./outbox".into());
        AppState {
            auth: Auth::new(db, tokens, limiter, settings),
            api_keys,
            metrics: http::telemetry::metrics_handle(),
            limits: Limits::default(),
            proxies: TrustedProxies::default(),
        }
    }
}

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
        .merge(openapi::router())
        .fallback(http::telemetry::not_found)
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(middleware::from_fn(move |req, next| {
            http::telemetry::timeout(limits.request_timeout, req, next)
        }))
        .layer(middleware::from_fn(http::telemetry::record_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |req: &Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    let client = proxies
                        .client_ip(req)
                        .map_or_else(|| "-".to_owned(), |ip| ip.to_string());
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id, client_ip = %client)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(middleware::from_fn(http::telemetry::sanitize_request_id))
        .with_state(state)
}
