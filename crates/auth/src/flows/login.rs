//! Registration, the password step, the signed-in account and signing out.

use tessera_entity::{AccountName, EventType, users};

use super::common::{Client, LoginOutcome};
use crate::accounts::{self, UserSummary};
use crate::audit::{self, Event, Outcome};
use crate::error::AuthError;
use crate::handle::Auth;
use crate::hashing::{self, Password, Priority};
use crate::lockout;
use crate::sessions;
use crate::throttle;

impl Auth {
    /// Creates an account (sign in next with [`Auth::login`]).
    pub async fn register(
        &self,
        client: &Client,
        username: &str,
        email: String,
        password: String,
    ) -> Result<UserSummary, AuthError> {
        if !self.settings.registration {
            return Err(AuthError::RegistrationDisabled);
        }
        let username = AccountName::parse(username)
            .map_err(|e| AuthError::invalid("username", e.to_string()))?;
        let password = Password::parse(password)?;
        // As at login: the hashing place first, so an overloaded worker writes nothing.
        let place = hashing::reserve(Priority::Anyone)?;
        throttle::throttle(&self.limiter, EventType::LoginIp, &client.key).await?;
        let created =
            accounts::create(&self.db, username, Some(email), password, Some(place)).await?;
        audit::record(Event::Register, Outcome::Success, &created.username);
        Ok(created)
    }

    /// The password step. `device` is the device cookie the browser sent, if any.
    pub async fn login(
        &self,
        client: &Client,
        username: &str,
        password: String,
        device: Option<&str>,
    ) -> Result<LoginOutcome, AuthError> {
        let account = AccountName::parse(username).ok();
        // A device that completed a sign-in to this name before: its sealed cookie names it.
        let own_device = account
            .as_ref()
            .is_some_and(|a| device.is_some_and(|d| sessions::is_device_of(&self.settings, d, a)));
        // A place in the hashing queue first, before any other work: an overloaded worker
        // refuses at once, without a database write. Known devices have a lane of their
        // own, so a flood cannot queue in front of them.
        let place = hashing::reserve(if own_device {
            Priority::KnownDevice
        } else {
            Priority::Anyone
        })?;
        throttle::throttle(&self.limiter, EventType::LoginIp, &client.key).await?;
        let user = match &account {
            Some(a) => accounts::find_account(&self.db, a).await?,
            None => None,
        };
        // Wrong passwords are throttled, never locked, and the same way for a name that
        // exists and one that does not: per username (except from the owner's own device,
        // so a stranger cannot keep the owner out), per username and address, per address
        // (above). Counted by the name's key, so no spelling of it has a budget of its own.
        let user_ip = account
            .as_ref()
            .map(|a| format!("{}|{}", a.key(), client.key));
        if let (Some(a), Some(user_ip)) = (&account, &user_ip) {
            if !own_device {
                throttle::throttle(&self.limiter, EventType::LoginAttempt, a.key()).await?;
            }
            throttle::throttle(&self.limiter, EventType::LoginUserIp, user_ip).await?;
        }
        // An unknown user costs one argon2id check too (against a decoy), like a wrong
        // password.
        let stored = user.as_ref().and_then(|u| u.password_hash.clone());
        let good = hashing::verify(place, password, stored).await?;
        let (user, account, user_ip) = match (user, account, user_ip) {
            (Some(u), Some(a), Some(k)) if good && !u.disabled => (u, a, k),
            _ => {
                metrics::counter!("tessera_logins_total", "outcome" => "failure").increment(1);
                audit::record(Event::SignIn, Outcome::Failure, username);
                return Err(AuthError::InvalidCredentials);
            }
        };
        // Only now, after the right password, may the answer say the account is locked.
        lockout::ensure_unlocked(&self.settings, &user)?;
        throttle::clear(&self.limiter, EventType::LoginAttempt, account.key()).await?;
        throttle::clear(&self.limiter, EventType::LoginUserIp, &user_ip).await?;
        self.after_first_factor(&user, client).await
    }

    /// The account of a session cookie's value; `not_signed_in` otherwise.
    pub async fn me(&self, session: Option<&str>) -> Result<users::Model, AuthError> {
        sessions::session_user(&self.db, session).await
    }

    /// Ends the session of a cookie's value (nothing to do without one).
    pub async fn logout(&self, session: Option<&str>) -> Result<(), AuthError> {
        let Some(value) = session else {
            return Ok(());
        };
        if let Ok(user) = sessions::session_user(&self.db, Some(value)).await {
            audit::record(Event::SessionEnded, Outcome::Success, &user.username);
        }
        sessions::end_session(&self.db, value).await
    }
}
