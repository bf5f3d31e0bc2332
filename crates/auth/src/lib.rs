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
pub mod error;
pub mod factors;
pub mod flows;
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
pub mod throttle;

pub use error::{AuthError, Conflict};
pub use flows::{Client, LoginOutcome, Pending, SignedIn};
pub use purge::Purged;
pub use settings::AuthSettings;

use sea_orm::DatabaseConnection;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tessera_limiter::Limiter;
use tessera_store::Tokens;

/// The login domain's handle: the database, the token store, the limiter and the settings.
/// Cheap to clone: everything inside is shared.
#[derive(Clone)]
pub struct Auth {
    /// Accounts, sessions and the rest of the login flows' rows (and tokens and limits
    /// too, unless they live in Redis).
    pub db: DatabaseConnection,
    /// The token store.
    pub tokens: Tokens,
    /// The rate limiter.
    pub limiter: Limiter,
    /// Settings and secrets.
    pub settings: Arc<AuthSettings>,
}

impl Auth {
    /// A handle over these parts.
    pub fn new(
        db: DatabaseConnection,
        tokens: Tokens,
        limiter: Limiter,
        settings: AuthSettings,
    ) -> Self {
        Auth {
            db,
            tokens,
            limiter,
            settings: Arc::new(settings),
        }
    }

    /// The one purge ([`purge::purge`]).
    pub async fn purge(&self) -> Result<Purged, AuthError> {
        purge::purge(&self.db, &self.tokens, &self.limiter).await
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}
