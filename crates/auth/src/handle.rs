//! [`Auth`]: the login domain's handle, on which the flows are methods.

use sea_orm::DatabaseConnection;
use std::sync::Arc;
use tessera_limiter::Limiter;
use tessera_store::Tokens;

use crate::error::AuthError;
use crate::purge::{self, Purged};
use crate::sessions::Found;
use crate::settings::AuthSettings;
use crate::shared::Shared;

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
    /// Settings and secrets (replaced only through [`Auth::set_settings`]).
    pub settings: Arc<AuthSettings>,
    /// The session checks in flight, which concurrent checks of one session share.
    pub(crate) checks: Arc<Shared<Found>>,
    /// The passkeys' relying party; `None` when the public URL names no host.
    pub(crate) webauthn: Option<Arc<webauthn_rs::Webauthn>>,
}

impl Auth {
    /// A handle over these parts.
    pub fn new(
        db: DatabaseConnection,
        tokens: Tokens,
        limiter: Limiter,
        settings: AuthSettings,
    ) -> Self {
        let webauthn = relying_party(&settings);
        Auth {
            db,
            tokens,
            limiter,
            settings: Arc::new(settings),
            checks: Arc::default(),
            webauthn,
        }
    }

    /// Replaces the settings (and with them the passkeys' relying party, which is the
    /// public URL's).
    pub fn set_settings(&mut self, settings: AuthSettings) {
        self.webauthn = relying_party(&settings);
        self.settings = Arc::new(settings);
    }

    /// The one purge ([`purge::purge`]), at full speed.
    pub async fn purge(&self) -> Result<Purged, AuthError> {
        purge::purge(&self.db, &self.tokens, &self.limiter).await
    }

    /// The background purge ([`purge::purge_in_background`]): paced, `None` while another
    /// worker's is running.
    pub async fn purge_in_background(&self) -> Result<Option<Purged>, AuthError> {
        purge::purge_in_background(&self.db, &self.tokens, &self.limiter).await
    }
}

/// The passkeys' relying party of `settings`, or `None` (logged) when there is none.
fn relying_party(settings: &AuthSettings) -> Option<Arc<webauthn_rs::Webauthn>> {
    match crate::factors::passkey::relying_party(&settings.public_url) {
        Ok(w) => Some(Arc::new(w)),
        Err(why) => {
            tracing::warn!("passkeys are off: {why}");
            None
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
