//! [`AppState`]: what every handler can reach.

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use std::time::Duration;
use tessera_auth::{Auth, AuthSettings};
use tessera_limiter::Limiter;
use tessera_store::Tokens;

use crate::http::client_ip::TrustedProxies;
use crate::http::service_key::ApiKeys;
use crate::http::telemetry;

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

/// What every handler can reach: one shared [`Shared`], so a clone (axum makes several
/// per request) is one reference count. Its fields read through `state.field`; before the
/// state is shared (at startup, in tests) they can be set the same way.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl std::ops::DerefMut for AppState {
    /// The fields to change: in place while this is the only handle, as at startup.
    fn deref_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }
}

/// The parts of [`AppState`].
#[derive(Clone)]
pub struct Shared {
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
        AppState(Arc::new(Shared {
            auth: Auth::new(db, tokens, limiter, settings),
            api_keys,
            metrics: telemetry::metrics_handle(),
            limits: Limits::default(),
            proxies: TrustedProxies::default(),
        }))
    }
}

impl FromRef<AppState> for TrustedProxies {
    fn from_ref(state: &AppState) -> Self {
        state.proxies.clone()
    }
}

impl FromRef<AppState> for ApiKeys {
    fn from_ref(state: &AppState) -> Self {
        state.api_keys.clone()
    }
}

impl FromRef<AppState> for Arc<AuthSettings> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.settings.clone()
    }
}
