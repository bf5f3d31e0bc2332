//! Password reset: a single-use link mailed to the accounts of an address, and the new
//! password set with it.

use tessera_entity::{AuthEphemeralToken, EventType, TokenType};

use super::common::Client;
use super::links::LinkMail;
use tessera_store::UserToken;

use crate::accounts;
use crate::audit::{self, Event, Outcome};
use crate::error::AuthError;
use crate::error::token_error;
use crate::handle::Auth;
use crate::hashing::{self, Password};
use crate::mail;
use crate::sessions;
use crate::throttle;

/// A password set with a reset link.
#[derive(Debug)]
pub struct PasswordReset {
    /// Sessions ended.
    pub sessions_ended: u64,
    /// The device cookie's value for the browser that did it.
    pub device: String,
}

/// The password-reset link.
static RESET: LinkMail = LinkMail {
    what: "password reset",
    per_address: EventType::PasswordResetIp,
    per_account: EventType::PasswordResetSend,
    token: AuthEphemeralToken::new_password_reset,
    page: "/reset-password",
    subject: "Reset your password",
    body: mail::messages::password_reset,
    event: Event::PasswordResetRequested,
};

impl Auth {
    /// Mails a reset link (`PUBLIC_URL/reset-password#token=...`) to the accounts with this
    /// address; see [`LinkMail`].
    pub async fn request_password_reset(
        &self,
        client: &Client,
        email: String,
    ) -> Result<(), AuthError> {
        self.mail_links(client, email, &RESET).await
    }

    /// Sets a new password with a reset token: the token is used up, the user's other
    /// reset tokens and pending logins are revoked and every session of theirs ends.
    pub async fn confirm_password_reset(
        &self,
        client: &Client,
        token: &str,
        new_password: String,
    ) -> Result<PasswordReset, AuthError> {
        // Checked before the token is spent, so a too-short password does not burn the link.
        let password = Password::parse(new_password).map_err(|_| {
            AuthError::invalid("new_password", "a password is 8 to 1024 characters")
        })?;
        throttle::throttle(&self.limiter, EventType::PasswordResetIp, &client.key).await?;
        // The cheap checks first: no argon2 work for a token that is not live.
        self.tokens
            .peek(TokenType::PasswordReset, token, None)
            .await
            .map_err(|e| token_error(e, AuthError::TokenRejected))?;
        let hash = hashing::hash(password).await?;
        let consumed = self
            .tokens
            .consume(TokenType::PasswordReset, token, None)
            .await
            .and_then(UserToken::try_from)
            .map_err(|e| token_error(e, AuthError::TokenRejected))?;
        let user = accounts::token_user(&self.db, &consumed)
            .await?
            .ok_or(AuthError::TokenRejected)?;
        audit::record(Event::PasswordReset, Outcome::Success, &user.username);
        // The mailbox's owner is back in: the lock and the failure count end (and this
        // browser may sign in beyond the per-username throttle that strangers may have
        // filled: the device cookie below); so do the other links, the logins in flight
        // and the sessions the old password opened.
        let sessions_ended =
            accounts::replace_password(&self.db, &self.tokens, &user, hash, None).await?;
        // Whoever failed the second factor before the reset no longer has the password:
        // their throttled attempts do not hold the owner back either.
        throttle::clear(&self.limiter, EventType::TwoFaAttempt, &user.username).await?;
        Ok(PasswordReset {
            sessions_ended,
            device: sessions::device_token(&self.settings, &user.username),
        })
    }
}
