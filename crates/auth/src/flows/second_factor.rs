//! The second-factor step of a pending login, and the rule every second-factor check
//! follows wherever it is asked for.

use tessera_entity::{EventType, TokenType, users};

use super::common::{Client, SignedIn, challenge_of};
use tessera_store::UserToken;

use crate::accounts;
use crate::audit::{self, Event, Outcome};
use crate::error::AuthError;
use crate::error::{Conflict, token_error};
use crate::factors::{backup, email, totp};
use crate::handle::Auth;
use crate::lockout;
use crate::throttle;

/// One second factor, as the person typed it.
#[derive(Debug, Clone)]
pub enum Factor {
    /// A TOTP code.
    Totp(String),
    /// A backup code.
    BackupCode(String),
    /// A mailed code.
    EmailCode(String),
    /// A passkey's answer (the WebAuthn JSON form) to the ceremony that the
    /// `tessera_webauthn` cookie (`ceremony`) names.
    Passkey {
        /// The assertion.
        credential: serde_json::Value,
        /// The cookie's value.
        ceremony: Option<String>,
    },
}

impl Auth {
    /// Completes a pending login (`mfa_token` and its `challenge` cookie) with a second
    /// factor.
    pub async fn verify(
        &self,
        client: &Client,
        mfa_token: &str,
        challenge: Option<&str>,
        factor: Factor,
    ) -> Result<SignedIn, AuthError> {
        let kind = TokenType::PreAuth;
        let user = self.pending_user(kind, mfa_token, challenge).await?;
        let (db, settings) = (&self.db, &self.settings);
        let check = async {
            Ok(match &factor {
                Factor::Totp(code) => {
                    user.totp_enabled && totp::check_totp(db, settings, &user, code).await?
                }
                Factor::BackupCode(code) => {
                    user.totp_enabled && backup::use_backup_code(db, user.id, code).await?
                }
                Factor::EmailCode(code) => {
                    user.email_otp_enabled && email::use_login_code(db, user.id, code).await?
                }
                Factor::Passkey {
                    credential,
                    ceremony,
                } => {
                    self.check_passkey_factor(&user, ceremony.as_deref(), credential.clone())
                        .await?
                }
            })
        };
        let attempt = self.second_factor(&user, check);
        self.on_pending(kind, mfa_token, challenge, attempt).await?;
        // The pending login is spent only now, on success; a concurrent success already
        // spent it.
        self.spend_pending(kind, mfa_token, challenge).await?;
        self.signed_in(&user, client, true).await
    }

    /// Mails a sign-in code to the user of a pending login.
    pub async fn send_login_code(
        &self,
        mfa_token: &str,
        challenge: Option<&str>,
    ) -> Result<(), AuthError> {
        let user = self
            .pending_user(TokenType::PreAuth, mfa_token, challenge)
            .await?;
        if !user.email_otp_enabled {
            return Err(AuthError::conflict(
                Conflict::EmailOtpNotEnabled,
                "email codes are not enabled for this account",
            ));
        }
        throttle::throttle(&self.limiter, EventType::EmailSend, &user.username).await?;
        email::send_login_code(&self.db, &self.limiter, &self.settings, &user).await
    }

    /// The user of a pending login and its cookie, usable (not disabled) and unlocked.
    pub(crate) async fn pending_user(
        &self,
        kind: TokenType,
        mfa_token: &str,
        challenge: Option<&str>,
    ) -> Result<users::Model, AuthError> {
        let challenge = challenge_of(challenge)?;
        let pending = self
            .tokens
            .peek(kind, mfa_token, Some(&challenge))
            .await
            .and_then(UserToken::try_from)
            .map_err(expired)?;
        let mut user = accounts::token_user(&self.db, &pending)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::PendingLoginExpired)?;
        lockout::ensure_unlocked(&self.settings, &user)?;
        // A login begun by a magic link came through the mailbox: a mailed code is not its
        // second factor.
        let via = pending.payload.data.as_ref().and_then(|d| d.get("via"));
        if via.and_then(|v| v.as_str()) == Some(super::magic::VIA_MAGIC_LINK) {
            user.email_otp_enabled = false;
        }
        Ok(user)
    }

    /// Checks one second factor of `user`, wherever it is asked for (sign-in, enforced
    /// setup, turning a factor on, re-authentication): throttled per user, counted toward
    /// the lockout before it is checked ([`lockout::second_factor_attempt`]),
    /// `invalid_code` when `check` answers false.
    pub(crate) async fn second_factor(
        &self,
        user: &users::Model,
        check: impl Future<Output = Result<bool, AuthError>>,
    ) -> Result<(), AuthError> {
        throttle::throttle(&self.limiter, EventType::TwoFaAttempt, &user.username).await?;
        lockout::second_factor_attempt(&self.db, &self.settings, user).await?;
        if check.await? {
            // A factor the account holder controls was proven: the failures were theirs.
            lockout::record_success(&self.db, user.id).await?;
            throttle::clear(&self.limiter, EventType::TwoFaAttempt, &user.username).await?;
            audit::record(Event::SecondFactor, Outcome::Success, &user.username);
            Ok(())
        } else {
            lockout::second_factor_failed(&self.db, &self.settings, user).await?;
            metrics::counter!("tessera_logins_total", "outcome" => "failure").increment(1);
            audit::record(Event::SecondFactor, Outcome::Failure, &user.username);
            Err(AuthError::InvalidCode)
        }
    }

    /// `attempt` (a second-factor check) on a pending login: of all attempts on one
    /// `mfa_token`, on any workers, at most the `mfa_token_attempt` limit are checked; the
    /// one past it, and a wrong code that reaches it, spend the token.
    pub(crate) async fn on_pending<T>(
        &self,
        kind: TokenType,
        mfa_token: &str,
        challenge: Option<&str>,
        attempt: impl Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        let key = throttle::token_key(mfa_token);
        let event = throttle::event_of(EventType::MfaTokenAttempt);
        let decision = throttle::hit(&self.limiter, &event, &key).await?;
        if !decision.allowed {
            self.spend_pending(kind, mfa_token, challenge).await.ok();
            return Err(AuthError::PendingLoginExpired);
        }
        let result = attempt.await;
        if decision.remaining == 0 && matches!(result, Err(AuthError::InvalidCode)) {
            self.spend_pending(kind, mfa_token, challenge).await.ok();
        }
        result
    }

    /// Spends a pending login (`pre_auth` or `mfa_enforce`) with its cookie, on success
    /// only; a concurrent success that spent it first leaves `pending_login_expired`.
    pub(crate) async fn spend_pending(
        &self,
        kind: TokenType,
        mfa_token: &str,
        challenge: Option<&str>,
    ) -> Result<(), AuthError> {
        let challenge = challenge_of(challenge)?;
        self.tokens
            .consume(kind, mfa_token, Some(&challenge))
            .await
            .map_err(expired)?;
        Ok(())
    }
}

fn expired(e: tessera_store::StoreError) -> AuthError {
    token_error(e, AuthError::PendingLoginExpired)
}
