//! What the flows share: the client, the outcomes, and the steps every sign-in ends with.

use std::time::Duration;
use tessera_entity::{AuthEphemeralToken, Challenge, TokenType, users};

use crate::accounts;
use crate::audit::{self, Event, Outcome};
use crate::error::AuthError;
use crate::handle::Auth;
use crate::sessions;

/// What the HTTP layer knows of the client.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The limiter key of its address (an IPv6 address by its prefix).
    pub key: String,
    /// Its address, stored with a session.
    pub addr: Option<String>,
    /// Its `User-Agent`, stored with a session.
    pub user_agent: Option<String>,
}

/// A complete sign-in: the values of the session and device cookies.
#[derive(Debug)]
pub struct SignedIn {
    /// The account's name as stored.
    pub username: String,
    /// The session cookie's value (only its hash is stored).
    pub session: String,
    /// The device cookie's value ([`sessions::device_token`]).
    pub device: String,
}

/// A login waiting for its next step: the token for the page and the challenge for the
/// browser's cookie; neither works without the other.
#[derive(Debug)]
pub struct Pending {
    /// The `mfa_token`.
    pub mfa_token: String,
    /// The challenge cookie's value.
    pub challenge: Challenge,
    /// How long both live.
    pub ttl: Duration,
}

/// Where a correct first step leads.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Signed in.
    Session(SignedIn),
    /// A second factor is needed: one of `methods` (`totp`, `backup_code`, `email_otp`,
    /// `passkey`).
    SecondFactor {
        /// The pending login.
        pending: Pending,
        /// The factors on offer.
        methods: Vec<&'static str>,
    },
    /// An admin requires a second factor: it must be set up first.
    EnforceSetup {
        /// The pending login.
        pending: Pending,
    },
}

impl Auth {
    /// Signs `user` in, with a second factor passed or not: a session row, and the cookie
    /// values.
    pub(crate) async fn signed_in(
        &self,
        user: &users::Model,
        client: &Client,
        second_factor: bool,
    ) -> Result<SignedIn, AuthError> {
        let seen = (client.addr.clone(), client.user_agent.clone());
        let session =
            sessions::start_session(&self.db, &self.settings, user.id, second_factor, seen).await?;
        metrics::counter!("tessera_logins_total", "outcome" => "session").increment(1);
        audit::record(Event::SignIn, Outcome::Success, &user.username);
        Ok(SignedIn {
            username: user.username.clone(),
            session,
            device: sessions::device_token(&self.settings, &user.username),
        })
    }

    /// After a correct password (or any first step): a session, the second-factor step, or
    /// the enforced setup.
    pub(crate) async fn after_first_factor(
        &self,
        user: &users::Model,
        client: &Client,
    ) -> Result<LoginOutcome, AuthError> {
        self.after_first_factor_via(user, client, None).await
    }

    /// [`Auth::after_first_factor`], the pending login marked with how it began (`via`),
    /// which [`Auth::pending_user`] reads back.
    pub(crate) async fn after_first_factor_via(
        &self,
        user: &users::Model,
        client: &Client,
        via: Option<&str>,
    ) -> Result<LoginOutcome, AuthError> {
        let mark = |t: AuthEphemeralToken| match via {
            Some(v) => t.with_data(serde_json::json!({ "via": v })),
            None => t,
        };
        let mut methods = accounts::methods(user);
        if crate::factors::passkey::has_passkey(&self.db, user.id).await? {
            methods.push("passkey");
        }
        let username = accounts::username_of(user)?;
        let challenge = Challenge::generate();
        if !methods.is_empty() || user.mfa_enforce_pending {
            audit::record(Event::SignIn, Outcome::Pending, &user.username);
        }
        if !methods.is_empty() {
            let token = mark(AuthEphemeralToken::new_pre_auth(
                username,
                Some(challenge.clone()),
            ));
            let pending = self.pending(token, challenge).await?;
            Ok(LoginOutcome::SecondFactor { pending, methods })
        } else if user.mfa_enforce_pending {
            let token = mark(AuthEphemeralToken::new_mfa_enforce(
                username,
                challenge.clone(),
            ));
            let pending = self.pending(token, challenge).await?;
            Ok(LoginOutcome::EnforceSetup { pending })
        } else {
            Ok(LoginOutcome::Session(
                self.signed_in(user, client, false).await?,
            ))
        }
    }

    /// Issues the token of a pending login bound to `challenge`.
    async fn pending(
        &self,
        token: AuthEphemeralToken,
        challenge: Challenge,
    ) -> Result<Pending, AuthError> {
        let issued = self.tokens.issue(token).await?;
        metrics::counter!("tessera_logins_total", "outcome" => "second_factor").increment(1);
        Ok(Pending {
            mfa_token: issued.token.expose().to_owned(),
            challenge,
            ttl: Duration::from_secs(TokenType::PreAuth.default_ttl_seconds()),
        })
    }
}

/// The challenge cookie's value, or `pending_login_expired` without one.
pub(super) fn challenge_of(cookie: Option<&str>) -> Result<Challenge, AuthError> {
    cookie
        .map(Challenge::new)
        .ok_or(AuthError::PendingLoginExpired)
}
