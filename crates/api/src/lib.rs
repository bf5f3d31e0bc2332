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
//! - [`state`]: [`AppState`], what every handler can reach, and the request [`Limits`].
//! - [`router`](router()): every route in the layers every request goes through.
//! - [`openapi`]: the generated OpenAPI document and `/docs`.
//! - `routes`: `/v1` (tokens, rate limits, admin), `/auth` (login, TOTP, email codes,
//!   reset, OIDC), health; each group exposes `router()`.
//!
//! The login domain itself is tessera-auth; handlers extract, make one call, respond.

pub mod config;
pub mod error;
pub mod http;
pub mod openapi;
mod pages;
mod router;
mod routes;
pub mod startup;
pub mod state;

pub use config::{DatabaseArgs, ServeConfig};
pub use error::AppError;
pub use http::client_ip::{ClientIp, TrustedProxies};
pub use http::service_key::ApiKeys;
pub use router::router;
pub use startup::{Application, StartupError};
pub use state::{AppState, Limits};
pub use tessera_auth::{Auth, AuthSettings};
