//! Tessera's HTTP service.
//!
//! [`Application::build`] opens the store named by the configuration, checks (or applies)
//! the schema, and binds the listener; [`Application::run_until_stopped`] serves until the
//! shutdown future resolves, finishing requests in flight, with the periodic purge running
//! beside it. [`router`] builds the routes on an [`AppState`], so tests drive them without a
//! socket.
//!
//! # Layout
//!
//! - [`config`]: every setting, as clap arguments with `TESSERA_*` environment variables.
//! - [`error`]: [`AppError`], the one error type, rendered as RFC 7807 problem+json.
//! - [`startup`]: [`Application`], schema checks, the purge task.
//! - `routes`: one module per group of routes, each exposing `router()`.

pub mod config;
pub mod error;
mod routes;
pub mod startup;

pub use config::{DatabaseArgs, ServeConfig};
pub use error::AppError;
pub use startup::{Application, StartupError};

use axum::Router;
use tessera_limiter::Limiter;
use tessera_store::Tokens;

/// What every handler can reach. Cheap to clone: everything inside is shared.
#[derive(Clone)]
pub struct AppState {
    /// The token store.
    pub tokens: Tokens,
    /// The rate limiter.
    pub limiter: Limiter,
}

/// All routes on `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::health::router())
        .with_state(state)
}
