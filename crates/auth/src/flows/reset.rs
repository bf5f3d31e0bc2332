//! Password reset: a single-use link mailed to the accounts of an address, and the new
//! password set with it.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tessera_entity::{AuthEphemeralToken, EventType, TokenType, users};

use super::common::Client;
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

impl Auth {
    /// Mails a reset link to the accounts with this address. The answer says nothing about
    /// whether an account exists, and its timing neither: the lookup and the mail happen
    /// in a task of their own, after the caller has its answer.
    pub async fn request_password_reset(
        &self,
        client: &Client,
        email: String,
    ) -> Result<(), AuthError> {
        if email.len() > 320 || !email.contains('@') {
            return Err(AuthError::invalid("email", "not a mail address"));
        }
        throttle::throttle(&self.limiter, EventType::PasswordResetIp, &client.key).await?;
        let auth = self.clone();
        // In the request's span, so its log lines carry the request's id and address.
        let task = async move {
            if let Err(e) = auth.send_reset_links(&email).await {
                tracing::warn!(error = %e, "password reset mail not sent");
            }
        };
        tokio::spawn(tracing::Instrument::in_current_span(task));
        Ok(())
    }

    async fn send_reset_links(&self, email: &str) -> Result<(), AuthError> {
        let accounts = users::Entity::find()
            .filter(users::Column::Email.eq(email))
            .filter(users::Column::Disabled.eq(false))
            .all(&self.db)
            .await?;
        for user in accounts {
            // The per-user limit never shows: over it, the answer was 202 all the same and
            // no mail goes out.
            if let Err(e) =
                throttle::throttle(&self.limiter, EventType::PasswordResetSend, &user.username)
                    .await
            {
                tracing::info!(error = %e, "password reset mail withheld");
                continue;
            }
            if let Err(e) = throttle::mail_slot(&self.limiter, email).await {
                tracing::info!(error = %e, "password reset mail withheld: the address had its share");
                continue;
            }
            let username = accounts::username_of(&user)?;
            let issued = self
                .tokens
                .issue(AuthEphemeralToken::new_password_reset(username))
                .await?;
            let token = issued.token.expose();
            let link = format!("{}/reset-password#token={token}", self.settings.public_url);
            let body = mail::messages::password_reset(&user.username, &link, token);
            self.settings
                .mailer
                .send(email, "Reset your password", body)
                .await?;
            audit::record(
                Event::PasswordResetRequested,
                Outcome::Success,
                &user.username,
            );
        }
        Ok(())
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
