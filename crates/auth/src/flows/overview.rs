//! What the sign-in and account pages show, each read in one call: the ways to sign in
//! offered here, and a signed-in person's account at a glance.

use tessera_entity::{sessions as rows, users};

use super::passkeys::PasskeyInfo;
use super::totp::TotpStatus;
use crate::error::AuthError;
use crate::factors::passkey;
use crate::handle::Auth;
use crate::{oidc, sessions};

/// The ways to sign in this deployment offers.
#[derive(Debug, Clone)]
pub struct SignInOptions {
    /// The OIDC providers' names, in order.
    pub providers: Vec<String>,
    /// Anyone may create an account.
    pub registration: bool,
    /// Sign-in links by mail are on.
    pub magic_links: bool,
    /// Passkeys work here (the public URL names a host).
    pub passkeys: bool,
}

/// A signed-in person's account as their account page shows it.
#[derive(Debug, Clone)]
pub struct AccountOverview {
    /// The account.
    pub user: users::Model,
    /// Its authenticator app.
    pub totp: TotpStatus,
    /// Its live sessions, oldest first, each with whether it is the one asking.
    pub sessions: Vec<(rows::Model, bool)>,
    /// Its passkeys, oldest first.
    pub passkeys: Vec<PasskeyInfo>,
}

impl Auth {
    /// The ways to sign in offered here.
    pub async fn sign_in_options(&self) -> Result<SignInOptions, AuthError> {
        let providers = oidc::list_providers(&self.db)
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect();
        Ok(SignInOptions {
            providers,
            registration: self.settings.registration,
            magic_links: self.settings.magic_links,
            passkeys: self.webauthn.is_some(),
        })
    }

    /// The account of the session `cookie`; `not_signed_in` without a live one.
    pub async fn account_overview(
        &self,
        cookie: Option<&str>,
    ) -> Result<AccountOverview, AuthError> {
        let (current, user) = sessions::session_of(&self.db, cookie).await?;
        let totp = self.status_of(user.id, user.totp_enabled).await?;
        let sessions = sessions::live_sessions(&self.db, user.id)
            .await?
            .into_iter()
            .map(|s| {
                let mine = s.id == current.id;
                (s, mine)
            })
            .collect();
        let passkeys = passkey::of_user(&self.db, user.id)
            .await?
            .iter()
            .map(|k| PasskeyInfo::from(&k.row))
            .collect();
        Ok(AccountOverview {
            user,
            totp,
            sessions,
            passkeys,
        })
    }
}
