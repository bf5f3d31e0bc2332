//! Self-service for the signed-in holder of an account: a new password, a new mail
//! address (confirmed by a link mailed there), email codes off, the account deleted. Each
//! asks for proof beyond the session: the password, or, for an account without one (made
//! by an OIDC login), a current TOTP code.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tessera_entity::{AccountName, AuthEphemeralToken, EventType, TokenType, users};
use tessera_store::UserToken;

use super::common::Client;
use crate::accounts::{self, Deleted};
use crate::audit::{self, Event, Outcome};
use crate::error::{AuthError, Conflict, token_error};
use crate::factors::totp;
use crate::handle::Auth;
use crate::hashing::{self, Password, Priority};
use crate::mail;
use crate::sessions;
use crate::throttle;

/// What proves the holder of a session: the password, or a TOTP code for an account
/// without one.
#[derive(Debug, Default)]
pub struct Proof {
    /// The account's password.
    pub password: Option<String>,
    /// A current TOTP code (accounts without a password).
    pub code: Option<String>,
}

impl Proof {
    /// The password, or a TOTP code.
    pub fn new(password: Option<String>, code: Option<String>) -> Self {
        Proof { password, code }
    }
}

impl Auth {
    /// The signed-in account, proven again by `proof`. A wrong password counts like a
    /// sign-in's (the per-username throttle, never a lock); a wrong code counts toward the
    /// lockout like every second-factor check.
    pub(crate) async fn holder(
        &self,
        session: Option<&str>,
        proof: Proof,
    ) -> Result<users::Model, AuthError> {
        let user = sessions::session_user(&self.db, session).await?;
        match (&user.password_hash, proof.password, proof.code) {
            (Some(_), Some(given), _) => {
                // The key the login route counts this account under: one budget for both,
                // and never a key shared with another account.
                let key = AccountName::parse(&user.username)
                    .map(|n| n.key().to_owned())
                    .unwrap_or_else(|_| user.username.clone());
                throttle::throttle(&self.limiter, EventType::LoginAttempt, &key).await?;
                let place = hashing::reserve(Priority::Anyone)?;
                if !hashing::verify(place, given, user.password_hash.clone()).await? {
                    return Err(AuthError::InvalidCredentials);
                }
                throttle::clear(&self.limiter, EventType::LoginAttempt, &key).await?;
                Ok(user)
            }
            (Some(_), None, _) => Err(AuthError::invalid(
                "password",
                "send the account's password",
            )),
            (None, Some(_), _) => Err(AuthError::invalid(
                "password",
                "this account has no password: send a current TOTP code as `code`",
            )),
            (None, None, Some(code)) if user.totp_enabled => {
                let check = totp::check_totp(&self.db, &self.settings, &user, &code);
                self.second_factor(&user, check).await?;
                Ok(user)
            }
            (None, None, Some(_)) => Err(AuthError::conflict(
                Conflict::TotpNotEnabled,
                "an account without a password proves itself with a TOTP code, and TOTP is off",
            )),
            (None, None, None) => Err(AuthError::invalid(
                "code",
                "this account has no password: send a current TOTP code",
            )),
        }
    }

    /// Sets a new password for the signed-in holder; every other session, the reset links
    /// and the logins in flight end. Answers how many sessions ended.
    pub async fn change_password(
        &self,
        session: Option<&str>,
        proof: Proof,
        new_password: String,
    ) -> Result<u64, AuthError> {
        let new = Password::parse(new_password).map_err(|_| {
            AuthError::invalid("new_password", "a password is 8 to 1024 characters")
        })?;
        let user = self.holder(session, proof).await?;
        let hash = hashing::hash(new).await?;
        let ended =
            accounts::replace_password(&self.db, &self.tokens, &user, hash, session).await?;
        audit::record(Event::PasswordChanged, Outcome::Success, &user.username);
        Ok(ended)
    }

    /// Mails a link to `email` that makes it the signed-in holder's address once opened
    /// (`PUBLIC_URL/account/email#token=...`); until then nothing changes.
    pub async fn request_email_change(
        &self,
        session: Option<&str>,
        proof: Proof,
        email: String,
    ) -> Result<(), AuthError> {
        let email = email.trim().to_owned();
        if email.len() > 320 || !email.contains('@') {
            return Err(AuthError::invalid("email", "not a mail address"));
        }
        let user = self.holder(session, proof).await?;
        accounts::address_has_room(&self.db, &email).await?;
        throttle::throttle(&self.limiter, EventType::EmailSend, &user.username).await?;
        throttle::mail_slot(&self.limiter, &email).await?;
        let token =
            AuthEphemeralToken::new_email_change(accounts::username_of(&user)?, email.clone());
        let issued = self.tokens.issue(token).await?;
        let token = issued.token.expose();
        let link = format!("{}/account/email#token={token}", self.settings.public_url);
        let body = mail::messages::email_change(&user.username, &link, token);
        self.settings
            .mailer
            .send(&email, "Confirm your new address", body)
            .await?;
        audit::record(
            Event::EmailChangeRequested,
            Outcome::Success,
            &user.username,
        );
        Ok(())
    }

    /// Confirms a new address with the mailed token: it becomes the account's, and reset
    /// links sent to the old one stop working. Answers the new address.
    pub async fn confirm_email_change(
        &self,
        client: &Client,
        token: &str,
    ) -> Result<String, AuthError> {
        throttle::throttle(&self.limiter, EventType::PasswordResetIp, &client.key).await?;
        let consumed = self
            .tokens
            .consume(TokenType::EmailChange, token, None)
            .await
            .and_then(UserToken::try_from)
            .map_err(|e| token_error(e, AuthError::TokenRejected))?;
        let email = consumed
            .payload
            .data
            .as_ref()
            .and_then(|d| d.get("email"))
            .and_then(|e| e.as_str())
            .map(str::to_owned)
            .ok_or(AuthError::TokenRejected)?;
        let user = accounts::token_user(&self.db, &consumed)
            .await?
            .ok_or(AuthError::TokenRejected)?;
        if user.email.as_deref() != Some(email.as_str()) {
            accounts::address_has_room(&self.db, &email).await?;
        }
        users::Entity::update_many()
            .col_expr(users::Column::Email, Expr::value(Some(email.clone())))
            .filter(users::Column::Id.eq(user.id))
            .exec(&self.db)
            .await?;
        self.tokens
            .revoke(TokenType::PasswordReset, &accounts::username_of(&user)?)
            .await?;
        audit::record(Event::EmailChanged, Outcome::Success, &user.username);
        Ok(email)
    }

    /// Stops mailed codes being a second factor of the signed-in holder; the logins in
    /// flight end.
    pub async fn email_otp_disable(
        &self,
        session: Option<&str>,
        proof: Proof,
    ) -> Result<(), AuthError> {
        let user = self.holder(session, proof).await?;
        if !user.email_otp_enabled {
            return Err(AuthError::conflict(
                Conflict::EmailOtpNotEnabled,
                "email codes are not enabled",
            ));
        }
        users::Entity::update_many()
            .col_expr(users::Column::EmailOtpEnabled, Expr::value(false))
            .filter(users::Column::Id.eq(user.id))
            .exec(&self.db)
            .await?;
        accounts::revoke_pending(&self.tokens, &accounts::username_of(&user)?).await?;
        audit::record(Event::EmailOtpDisabled, Outcome::Success, &user.username);
        Ok(())
    }

    /// Deletes the signed-in holder's account with everything that hangs on it (see
    /// [`accounts::delete`]).
    pub async fn delete_account(
        &self,
        session: Option<&str>,
        proof: Proof,
    ) -> Result<Deleted, AuthError> {
        let user = self.holder(session, proof).await?;
        let username = user.username.clone();
        let deleted = accounts::delete_user(&self.db, &self.tokens, user).await?;
        audit::record(Event::AccountDeleted, Outcome::Success, &username);
        Ok(deleted)
    }
}
