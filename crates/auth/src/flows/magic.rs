//! Magic links: a sign-in link mailed to each account of an address, used once within 15
//! minutes. The link carries the token in its fragment, so a mail scanner that fetches it
//! spends nothing: only the page's POST consumes. A magic link is the first factor; the
//! second is never a mailed code (the same mailbox), so an account whose only second
//! factor is mailed codes signs in with its password instead.

use tessera_entity::{AuthEphemeralToken, EventType, TokenType};
use tessera_store::UserToken;

use super::common::{Client, LoginOutcome};
use super::links::LinkMail;
use crate::accounts;
use crate::audit::{self, Event, Outcome};
use crate::error::{AuthError, Conflict, token_error};
use crate::handle::Auth;
use crate::lockout;
use crate::mail;

/// What a pending login begun by a magic link carries, so that its second factor is never
/// a mailed code.
pub(crate) const VIA_MAGIC_LINK: &str = "magic_link";

/// The sign-in link.
static MAGIC: LinkMail = LinkMail {
    what: "magic link",
    per_address: EventType::MagicLinkIp,
    per_account: EventType::EmailSend,
    token: AuthEphemeralToken::new_magic_link,
    page: "/login/magic",
    subject: "Your sign-in link",
    body: mail::messages::magic_link,
    event: Event::MagicLinkRequested,
};

impl Auth {
    fn magic_links_on(&self) -> Result<(), AuthError> {
        if self.settings.magic_links {
            Ok(())
        } else {
            Err(AuthError::MagicLinksDisabled)
        }
    }

    /// Mails a sign-in link (`PUBLIC_URL/login/magic#token=...`) to each account with
    /// `email`; see [`LinkMail`].
    pub async fn request_magic_link(
        &self,
        client: &Client,
        email: String,
    ) -> Result<(), AuthError> {
        self.magic_links_on()?;
        self.mail_links(client, email, &MAGIC).await
    }

    /// Signs in with a magic link's token, like a password step: a session, or the
    /// second-factor step (TOTP or a backup code) when the account has one.
    pub async fn consume_magic_link(
        &self,
        client: &Client,
        token: &str,
    ) -> Result<LoginOutcome, AuthError> {
        self.magic_links_on()?;
        let consumed = self
            .tokens
            .consume(TokenType::MagicLink, token, None)
            .await
            .and_then(UserToken::try_from)
            .map_err(|e| token_error(e, AuthError::TokenRejected))?;
        let mut user = accounts::token_user(&self.db, &consumed)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::TokenRejected)?;
        lockout::ensure_unlocked(&self.settings, &user)?;
        if user.email_otp_enabled && !user.totp_enabled {
            audit::record(Event::SignIn, Outcome::Failure, &user.username);
            return Err(AuthError::conflict(
                Conflict::MagicLinkNotAllowed,
                "this account's second factor is mailed codes, which a link from the same \
                 mailbox cannot stand for: sign in with the password",
            ));
        }
        // The mailbox was the first factor: it is not the second.
        user.email_otp_enabled = false;
        self.after_first_factor_via(&user, client, Some(VIA_MAGIC_LINK))
            .await
    }
}
