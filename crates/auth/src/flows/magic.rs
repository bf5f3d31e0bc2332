//! Magic links: a sign-in link mailed to each account of an address, used once within 15
//! minutes. The link carries the token in its fragment, so a mail scanner that fetches it
//! spends nothing: only the page's POST consumes. A magic link is the first factor; the
//! second is never a mailed code (the same mailbox), so an account whose only second
//! factor is mailed codes signs in with its password instead.

use tessera_entity::{AuthEphemeralToken, EventType, TokenType, users};
use tessera_store::UserToken;

use super::common::{Client, LoginOutcome};
use crate::accounts;
use crate::audit::{self, Event, Outcome};
use crate::error::{AuthError, Conflict, token_error};
use crate::handle::Auth;
use crate::lockout;
use crate::mail;
use crate::throttle;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

/// What a pending login begun by a magic link carries, so that its second factor is never
/// a mailed code.
pub(crate) const VIA_MAGIC_LINK: &str = "magic_link";

impl Auth {
    fn magic_links_on(&self) -> Result<(), AuthError> {
        if self.settings.magic_links {
            Ok(())
        } else {
            Err(AuthError::MagicLinksDisabled)
        }
    }

    /// Mails a sign-in link to each account with `email`. The answer says nothing about
    /// whether one exists, and its timing neither: the lookup and the mail happen in a task
    /// of their own, after the caller has its answer.
    pub async fn request_magic_link(
        &self,
        client: &Client,
        email: String,
    ) -> Result<(), AuthError> {
        self.magic_links_on()?;
        let email = email.trim().to_owned();
        if email.len() > 320 || !email.contains('@') {
            return Err(AuthError::invalid("email", "not a mail address"));
        }
        throttle::throttle(&self.limiter, EventType::MagicLinkIp, &client.key).await?;
        let auth = self.clone();
        let task = async move {
            if let Err(e) = auth.send_magic_links(&email).await {
                tracing::warn!(error = %e, "magic link mail not sent");
            }
        };
        tokio::spawn(tracing::Instrument::in_current_span(task));
        Ok(())
    }

    async fn send_magic_links(&self, email: &str) -> Result<(), AuthError> {
        let accounts = users::Entity::find()
            .filter(users::Column::Email.eq(email))
            .filter(users::Column::Disabled.eq(false))
            .all(&self.db)
            .await?;
        for user in accounts {
            // Over a limit, the answer was 202 all the same and no mail goes out.
            let send = throttle::throttle(&self.limiter, EventType::EmailSend, &user.username);
            if let Err(e) = send.await {
                tracing::info!(error = %e, "magic link withheld");
                continue;
            }
            if let Err(e) = throttle::mail_slot(&self.limiter, email).await {
                tracing::info!(error = %e, "magic link withheld: the address had its share");
                continue;
            }
            let token = AuthEphemeralToken::new_magic_link(accounts::username_of(&user)?);
            let issued = self.tokens.issue(token).await?;
            let token = issued.token.expose();
            let link = format!("{}/login/magic#token={token}", self.settings.public_url);
            let body = mail::messages::magic_link(&user.username, &link, token);
            self.settings
                .mailer
                .send(email, "Your sign-in link", body)
                .await?;
            audit::record(Event::MagicLinkRequested, Outcome::Success, &user.username);
        }
        Ok(())
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
