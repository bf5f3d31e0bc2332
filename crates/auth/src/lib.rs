//! Tessera's login domain, without HTTP: accounts and lockout, password and code hashing,
//! secrets at rest, second factors, sessions, mail, OpenID providers, the one purge, and
//! the flows that put them together.
//!
//! Nothing here lives in a worker's memory: a login in progress is a token in the store,
//! an attempt count is a limiter event or a row, a session is a row. Any worker can take
//! any step. The flows are methods of [`Auth`] that take plain values (the cookie values a
//! browser sent, the client's limiter key) and answer outcomes such as [`LoginOutcome`];
//! the HTTP service turns those into cookies and JSON, and [`AuthError`] into problem
//! answers.
//!
//! # Layout
//!
//! - [`handle`]: [`Auth`], the handle the flows are methods of.
//! - [`settings`]: [`AuthSettings`] and the clock locks, sessions and TOTP windows read.
//! - [`error`]: [`AuthError`] and [`Conflict`].
//! - [`accounts`]: finding an account by any spelling of its name, administration.
//! - [`lockout`]: second-factor failures counted before each check, and the locks.
//! - [`throttle`]: the login flows' rate limits and their default policies.
//! - [`hashing`]: argon2id on blocking threads, in lanes that refuse when full.
//! - [`secrets`] and [`rotation`]: secrets sealed at rest, re-sealed under a new key.
//! - [`factors`]: TOTP, backup codes, mailed codes.
//! - [`sessions`]: session rows and the device cookie.
//! - [`mail`]: SMTP or the outbox folder, and every message text.
//! - [`oidc`]: OpenID providers, discovery and ID-token checks, account linking.
//! - [`open`]: opening the database (schema checked), the stores and the key ring.
//! - [`purge`]: the one purge.
//! - [`flows`]: login, second factor, TOTP and email-code setup, password reset, OIDC.

pub mod accounts;
pub mod audit;
pub mod error;
pub mod factors;
pub mod flows;
pub mod handle;
pub mod hashing;
pub mod lockout;
pub mod mail;
pub mod oidc;
pub mod open;
pub mod purge;
pub mod rotation;
pub mod secrets;
pub mod sessions;
pub mod settings;
pub mod shared;
pub mod throttle;

pub use error::{AuthError, Conflict};
pub use flows::{Client, LoginOutcome, Pending, SignedIn};
pub use handle::Auth;
pub use purge::Purged;
pub use settings::AuthSettings;
