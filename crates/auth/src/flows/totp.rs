//! TOTP for a signed-in user (setup, confirmation, status, turning it off, new backup
//! codes) and for a login an admin holds until a second factor is set up.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use std::time::Duration;
use tessera_entity::{Challenge, TokenType, backup_codes, users};

use super::common::{Client, SignedIn, challenge_of};
use crate::accounts;
use crate::audit::{self, Event, Outcome};
use crate::error::AuthError;
use crate::error::Conflict;
use crate::factors::{backup, codes, totp};
use crate::handle::Auth;
use crate::hashing::{self, Priority};
use crate::sessions;

/// A TOTP setup in progress: what the authenticator app needs, the backup codes (shown
/// once), and the setup token for the browser's cookie.
pub struct TotpSetup {
    /// The `totp_setup` token, bound to the caller's session or pending login.
    pub setup_token: String,
    /// How long it lives.
    pub ttl: Duration,
    /// Secret, `otpauth://` URI and QR code.
    pub enrolment: codes::Enrolment,
    /// 10 single-use backup codes.
    pub backup_codes: Vec<String>,
}

/// TOTP state of an account.
#[derive(Debug, Clone, Copy)]
pub struct TotpStatus {
    /// TOTP is required at sign-in.
    pub enabled: bool,
    /// Unused backup codes.
    pub backup_codes_remaining: u64,
}

impl Auth {
    /// Starts (or, for the same session, repeats) a TOTP setup for the signed-in user;
    /// `presented` is the setup cookie the browser sent.
    pub async fn totp_setup(
        &self,
        session: Option<&str>,
        presented: Option<&str>,
    ) -> Result<TotpSetup, AuthError> {
        let user = sessions::session_user(&self.db, session).await?;
        let challenge = session_challenge(session)?;
        self.setup_for(&user, &challenge, presented).await
    }

    /// Confirms the signed-in user's setup with a code of its secret: TOTP is then on.
    pub async fn totp_confirm(
        &self,
        session: Option<&str>,
        presented: Option<&str>,
        code: &str,
    ) -> Result<TotpStatus, AuthError> {
        let user = sessions::session_user(&self.db, session).await?;
        let challenge = session_challenge(session)?;
        self.enable_totp(&user, &challenge, presented, code).await?;
        self.status_of(user.id, true).await
    }

    /// TOTP state of the signed-in user.
    pub async fn totp_status(&self, session: Option<&str>) -> Result<TotpStatus, AuthError> {
        let user = sessions::session_user(&self.db, session).await?;
        self.status_of(user.id, user.totp_enabled).await
    }

    /// Turns TOTP off (and drops the backup codes), after the password and a code.
    pub async fn totp_disable(
        &self,
        session: Option<&str>,
        password: Option<String>,
        code: &str,
    ) -> Result<TotpStatus, AuthError> {
        let user = self.reauthenticate(session, password, code).await?;
        users::Entity::update_many()
            .col_expr(users::Column::TotpEnabled, Expr::value(false))
            .col_expr(
                users::Column::TotpSecret,
                Expr::value(Option::<Vec<u8>>::None),
            )
            .filter(users::Column::Id.eq(user.id))
            .exec(&self.db)
            .await?;
        backup_codes::Entity::delete_many()
            .filter(backup_codes::Column::UserId.eq(user.id))
            .exec(&self.db)
            .await?;
        accounts::revoke_pending(&self.tokens, &accounts::username_of(&user)?).await?;
        audit::record(Event::TotpDisabled, Outcome::Success, &user.username);
        self.status_of(user.id, false).await
    }

    /// Replaces the backup codes, after the password and a code; answers the new ones.
    pub async fn regenerate_backup_codes(
        &self,
        session: Option<&str>,
        password: Option<String>,
        code: &str,
    ) -> Result<Vec<String>, AuthError> {
        let user = self.reauthenticate(session, password, code).await?;
        let codes = backup::replace_backup_codes(&self.db, user.id).await?;
        audit::record(
            Event::BackupCodesRegenerated,
            Outcome::Success,
            &user.username,
        );
        Ok(codes)
    }

    /// Starts the setup an admin requires, on a pending login (`mfa_setup_required`).
    pub async fn enforce_setup(
        &self,
        mfa_token: &str,
        challenge: Option<&str>,
        presented: Option<&str>,
    ) -> Result<TotpSetup, AuthError> {
        let user = self
            .pending_user(TokenType::MfaEnforce, mfa_token, challenge)
            .await?;
        self.setup_for(&user, &challenge_of(challenge)?, presented)
            .await
    }

    /// Confirms the enforced setup: TOTP is on and the user signed in.
    pub async fn enforce_confirm(
        &self,
        client: &Client,
        mfa_token: &str,
        challenge: Option<&str>,
        presented: Option<&str>,
        code: &str,
    ) -> Result<SignedIn, AuthError> {
        let kind = TokenType::MfaEnforce;
        let user = self.pending_user(kind, mfa_token, challenge).await?;
        let bound = challenge_of(challenge)?;
        let attempt = self.enable_totp(&user, &bound, presented, code);
        self.on_pending(kind, mfa_token, challenge, attempt).await?;
        self.spend_pending(kind, mfa_token, challenge).await?;
        self.signed_in(&user, client, true).await
    }

    /// Starts (or, for the same caller, repeats) a TOTP setup bound to `challenge`.
    async fn setup_for(
        &self,
        user: &users::Model,
        challenge: &Challenge,
        presented: Option<&str>,
    ) -> Result<TotpSetup, AuthError> {
        if user.totp_enabled {
            return Err(AuthError::conflict(
                Conflict::TotpAlreadyEnabled,
                "TOTP is already enabled; disable it first",
            ));
        }
        let (setup_token, pending) =
            totp::start_totp_setup(&self.tokens, user, challenge, presented).await?;
        let enrolment =
            codes::enrolment(&pending.secret, &self.settings.totp_issuer, &user.username)
                .map_err(AuthError::internal)?;
        Ok(TotpSetup {
            setup_token,
            ttl: Duration::from_secs(TokenType::TotpSetup.default_ttl_seconds()),
            enrolment,
            backup_codes: pending.backup_codes,
        })
    }

    /// Confirms the caller's setup (`presented`, bound to `challenge`) with a code of its
    /// secret: a second-factor check like any other, then TOTP is on.
    async fn enable_totp(
        &self,
        user: &users::Model,
        challenge: &Challenge,
        presented: Option<&str>,
        code: &str,
    ) -> Result<(), AuthError> {
        if user.totp_enabled {
            return Err(AuthError::conflict(
                Conflict::TotpAlreadyEnabled,
                "TOTP is already enabled",
            ));
        }
        let presented = presented.unwrap_or_default();
        let pending = totp::open_totp_setup(&self.tokens, user, presented, challenge).await?;
        let check = totp::check_totp_with(&self.db, &self.settings, user.id, &pending.secret, code);
        self.second_factor(user, check).await?;
        totp::finish_totp_setup(
            &self.db,
            &self.settings,
            &self.tokens,
            user,
            presented,
            challenge,
            pending,
        )
        .await?;
        audit::record(Event::TotpEnabled, Outcome::Success, &user.username);
        Ok(())
    }

    /// Checks the password and a TOTP code of the signed-in user (to turn TOTP off or
    /// replace the backup codes). An account with a password must send it; an account
    /// without one (created by an OIDC login) must not, and proves itself with the code.
    async fn reauthenticate(
        &self,
        session: Option<&str>,
        password: Option<String>,
        code: &str,
    ) -> Result<users::Model, AuthError> {
        let user = sessions::session_user(&self.db, session).await?;
        if !user.totp_enabled {
            return Err(AuthError::conflict(
                Conflict::TotpNotEnabled,
                "TOTP is not enabled",
            ));
        }
        // Password and code are one attempt, counted toward the lockout like a sign-in's.
        let check = async {
            let password_ok = match (password, &user.password_hash) {
                (Some(given), Some(_)) => {
                    let place = hashing::reserve(Priority::Anyone)?;
                    hashing::verify(place, given, user.password_hash.clone()).await?
                }
                (None, None) => true,
                _ => false,
            };
            if !password_ok {
                return Err(AuthError::InvalidCredentials);
            }
            totp::check_totp(&self.db, &self.settings, &user, code).await
        };
        self.second_factor(&user, check).await?;
        Ok(user)
    }

    pub(super) async fn status_of(
        &self,
        user_id: i64,
        enabled: bool,
    ) -> Result<TotpStatus, AuthError> {
        Ok(TotpStatus {
            enabled,
            backup_codes_remaining: if enabled {
                backup::backup_codes_remaining(&self.db, user_id).await?
            } else {
                0
            },
        })
    }
}

/// The challenge a TOTP setup of a signed-in user is bound to: the session cookie itself.
fn session_challenge(session: Option<&str>) -> Result<Challenge, AuthError> {
    session.map(Challenge::new).ok_or(AuthError::NotSignedIn)
}
