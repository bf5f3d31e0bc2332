//! Turning mailed sign-in codes on: a code mailed to the account's address, confirmed
//! with an `email_otp_setup` token.

use std::time::Duration;
use tessera_entity::{AuthEphemeralToken, EventType, TokenType, users};

use tessera_store::UserToken;

use crate::accounts;
use crate::audit::{self, Event, Outcome};
use crate::error::AuthError;
use crate::error::token_error;
use crate::factors::{codes, email};
use crate::handle::Auth;
use crate::hashing;
use crate::mail;
use crate::sessions;
use crate::throttle;

/// An email-code setup in progress: the token for the browser's cookie (and the page).
#[derive(Debug)]
pub struct EmailOtpSetup {
    /// The `email_otp_setup` token.
    pub setup_token: String,
    /// How long it lives.
    pub ttl: Duration,
}

impl Auth {
    /// Mails a code to the signed-in user's address to turn email codes on.
    pub async fn email_otp_enable(
        &self,
        session: Option<&str>,
    ) -> Result<EmailOtpSetup, AuthError> {
        let user = sessions::session_user(&self.db, session).await?;
        let to = email::mail_address(&user)?.to_owned();
        throttle::throttle(&self.limiter, EventType::EmailSend, &user.username).await?;
        throttle::mail_slot(&self.limiter, &to).await?;
        let code = codes::new_email_code();
        let hash = hashing::hash_code(code.clone()).await?;
        let username = accounts::username_of(&user)?;
        let issued = self
            .tokens
            .issue(AuthEphemeralToken::new_email_otp_setup(username, hash))
            .await?;
        self.settings
            .mailer
            .send(
                &to,
                "Confirm email sign-in codes",
                mail::messages::code(&code, "turn on email sign-in codes"),
            )
            .await?;
        Ok(EmailOtpSetup {
            setup_token: issued.token.expose().to_owned(),
            ttl: Duration::from_secs(TokenType::EmailOtpSetup.default_ttl_seconds()),
        })
    }

    /// Confirms the mailed code with its setup token: email codes become a second factor.
    pub async fn email_otp_confirm(
        &self,
        session: Option<&str>,
        setup_token: Option<&str>,
        code: &str,
    ) -> Result<(), AuthError> {
        let user = sessions::session_user(&self.db, session).await?;
        let token = setup_token.ok_or(AuthError::InvalidCode)?;
        let check = async {
            let pending = self
                .tokens
                .peek(TokenType::EmailOtpSetup, token, None)
                .await
                .and_then(UserToken::try_from)
                .map_err(|e| token_error(e, AuthError::InvalidCode))?;
            let hash = pending.payload.code_hash.clone().unwrap_or_default();
            let matches = pending.username.as_str() == user.username
                && codes::is_email_code(code)
                && hashing::code_matches(code.trim().to_owned(), hash).await?;
            // Spent by exactly one of several concurrent right answers.
            Ok(matches
                && self
                    .tokens
                    .consume(TokenType::EmailOtpSetup, token, None)
                    .await
                    .is_ok())
        };
        self.second_factor(&user, check).await?;
        email::enable_factor(&self.db, user.id, users::Column::EmailOtpEnabled).await?;
        audit::record(Event::EmailOtpEnabled, Outcome::Success, &user.username);
        Ok(())
    }
}
