//! Passkeys across workers: a ceremony starts on one worker and finishes on any other,
//! once. Its state (the challenge, the user, the credentials allowed) is a `webauthn`
//! token, sealed like every payload; the browser holds the token only in an HttpOnly cookie.
//! A finish reads the state, checks the browser's answer with webauthn-rs and spends the
//! token only when the answer is right, so a finish sent with another browser's cookie
//! spends nothing, and of two finishes of one ceremony one wins.

use sea_orm::EntityTrait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tessera_entity::{AuthEphemeralToken, EventType, TokenType, users};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, PasskeyAuthentication, PasskeyRegistration, Uuid, Webauthn,
    WebauthnError,
};

use super::account::Proof;
use super::common::{Client, SignedIn};
use crate::accounts;
use crate::audit::{self, Event, Outcome};
use crate::error::{AuthError, Conflict, token_error};
use crate::factors::passkey::{self, MAX_NAME, MAX_PASSKEYS, Stored};
use crate::handle::Auth;
use crate::lockout;
use crate::sessions;
use crate::throttle;

/// A ceremony begun: the options for `navigator.credentials` (the WebAuthn JSON form,
/// `{publicKey}`) and the value of the cookie that names the ceremony.
#[derive(Debug)]
pub struct Ceremony {
    /// `{publicKey: ...}`.
    pub options: serde_json::Value,
    /// The `webauthn` token, for the browser's HttpOnly cookie only.
    pub cookie: String,
    /// How long the ceremony lives.
    pub ttl: Duration,
}

/// A passkey as its holder sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PasskeyInfo {
    /// The public id (`remove` takes it).
    pub id: Uuid,
    /// The holder's name for it.
    pub name: String,
    /// When it was registered.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it last signed in.
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&tessera_entity::passkeys::Model> for PasskeyInfo {
    fn from(p: &tessera_entity::passkeys::Model) -> Self {
        PasskeyInfo {
            id: p.id,
            name: p.name.clone(),
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        }
    }
}

/// What a ceremony's token carries (sealed).
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum State {
    /// A passkey being added to the account the token names.
    Register {
        handle: Uuid,
        state: PasskeyRegistration,
    },
    /// A sign-in without a password: with whichever credential the authenticator holds,
    /// or (a username given) one of `allowed`, the credential ids the request named.
    SignIn {
        state: DiscoverableAuthentication,
        allowed: Vec<String>,
    },
    /// The second factor of the pending login of the account the token names.
    SecondFactor { state: PasskeyAuthentication },
}

/// A ceremony read back: its state and the account it is for, if any.
struct Open {
    state: State,
    username: Option<String>,
}

impl Auth {
    /// Whether passkeys work here (the public URL names a host).
    pub fn passkeys_on(&self) -> bool {
        self.webauthn.is_some()
    }

    fn webauthn(&self) -> Result<&Arc<Webauthn>, AuthError> {
        self.webauthn.as_ref().ok_or_else(|| {
            AuthError::conflict(
                Conflict::PasskeysUnavailable,
                "passkeys need TESSERA_PUBLIC_URL to name a host (not an IP address)",
            )
        })
    }

    /// Stores a ceremony's state and answers its options.
    async fn begin(
        &self,
        client: &Client,
        username: Option<&users::Model>,
        options: serde_json::Value,
        state: State,
    ) -> Result<Ceremony, AuthError> {
        // Each start stores a row for five minutes: anonymous starts are bounded per address.
        throttle::throttle(&self.limiter, EventType::PasskeyIp, &client.key).await?;
        let username = username.map(accounts::username_of).transpose()?;
        let data = serde_json::to_value(&state).map_err(AuthError::internal)?;
        let issued = self
            .tokens
            .issue(AuthEphemeralToken::new_webauthn(username, data))
            .await?;
        Ok(Ceremony {
            options,
            cookie: issued.token.expose().to_owned(),
            ttl: Duration::from_secs(TokenType::Webauthn.default_ttl_seconds()),
        })
    }

    /// Reads the ceremony a cookie names, without spending it.
    async fn open(&self, cookie: Option<&str>) -> Result<Open, AuthError> {
        let cookie = cookie.ok_or(AuthError::CeremonyExpired)?;
        let token = self
            .tokens
            .peek(TokenType::Webauthn, cookie, None)
            .await
            .map_err(|e| token_error(e, AuthError::CeremonyExpired))?;
        let data = token.payload.data.ok_or(AuthError::CeremonyExpired)?;
        let state = serde_json::from_value(data).map_err(|_| AuthError::CeremonyExpired)?;
        Ok(Open {
            state,
            username: token.username,
        })
    }

    /// Spends the ceremony a cookie names: only one finish of it gets past this.
    async fn spend(&self, cookie: Option<&str>) -> Result<(), AuthError> {
        let cookie = cookie.ok_or(AuthError::CeremonyExpired)?;
        self.tokens
            .consume(TokenType::Webauthn, cookie, None)
            .await
            .map_err(|e| token_error(e, AuthError::CeremonyExpired))?;
        Ok(())
    }

    /// Begins adding a passkey to the signed-in account.
    pub async fn passkey_register_start(
        &self,
        client: &Client,
        session: Option<&str>,
    ) -> Result<Ceremony, AuthError> {
        let webauthn = self.webauthn()?;
        let user = sessions::session_user(&self.db, session).await?;
        let existing = passkey::of_user(&self.db, user.id).await?;
        if existing.len() >= MAX_PASSKEYS {
            return Err(AuthError::conflict(
                Conflict::TooManyPasskeys,
                format!("an account holds at most {MAX_PASSKEYS} passkeys: remove one first"),
            ));
        }
        // One user handle per account, so an authenticator keeps one passkey for it.
        let handle = existing
            .first()
            .map(|p| p.row.user_handle)
            .unwrap_or_else(Uuid::new_v4);
        let exclude = existing
            .iter()
            .map(|p| p.passkey.cred_id().clone())
            .collect();
        let (options, state) = webauthn
            .start_passkey_registration(handle, &user.username, &user.username, Some(exclude))
            .map_err(AuthError::internal)?;
        let mut options = serde_json::to_value(&options).map_err(AuthError::internal)?;
        // A passkey that lives on the authenticator (discoverable) signs in without a
        // username; one that cannot still works as a second factor. The state does not
        // depend on this preference.
        if let Some(selection) = options
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(|s| s.as_object_mut())
        {
            selection.insert("residentKey".into(), "preferred".into());
        }
        self.begin(
            client,
            Some(&user),
            options,
            State::Register { handle, state },
        )
        .await
    }

    /// Finishes adding a passkey: the browser's answer to the ceremony its cookie names,
    /// on the account that began it.
    pub async fn passkey_register_finish(
        &self,
        session: Option<&str>,
        cookie: Option<&str>,
        credential: serde_json::Value,
        name: Option<String>,
    ) -> Result<PasskeyInfo, AuthError> {
        let webauthn = self.webauthn()?;
        let user = sessions::session_user(&self.db, session).await?;
        let name = passkey_name(name)?;
        let credential = passkey::registration(credential)?;
        let open = self.open(cookie).await?;
        let (handle, state) = match open.state {
            State::Register { handle, state } if open.username.as_ref() == Some(&user.username) => {
                (handle, state)
            }
            _ => return Err(AuthError::CeremonyExpired),
        };
        let key = webauthn
            .finish_passkey_registration(&credential, &state)
            .map_err(|e| {
                AuthError::invalid("credential", format!("the passkey was not accepted: {e}"))
            })?;
        self.spend(cookie).await?;
        let row =
            passkey::insert(&self.db, user.id, handle, &key, name, self.settings.now()).await?;
        audit::record(Event::PasskeyAdded, Outcome::Success, &user.username);
        Ok(PasskeyInfo::from(&row))
    }

    /// The passkeys of the signed-in account, oldest first.
    pub async fn passkeys(&self, session: Option<&str>) -> Result<Vec<PasskeyInfo>, AuthError> {
        let user = sessions::session_user(&self.db, session).await?;
        let keys = passkey::of_user(&self.db, user.id).await?;
        Ok(keys.iter().map(|k| PasskeyInfo::from(&k.row)).collect())
    }

    /// Removes a passkey of the signed-in account, proven again by `proof` (the password,
    /// or a TOTP code for an account without one).
    pub async fn remove_passkey(
        &self,
        session: Option<&str>,
        id: &str,
        proof: Proof,
    ) -> Result<(), AuthError> {
        let id = Uuid::parse_str(id).map_err(|_| AuthError::UnknownPasskey)?;
        let user = self.holder(session, proof).await?;
        if !passkey::remove(&self.db, user.id, id).await? {
            return Err(AuthError::UnknownPasskey);
        }
        audit::record(Event::PasskeyRemoved, Outcome::Success, &user.username);
        Ok(())
    }

    /// Begins a sign-in without a password. Without a username the authenticator offers
    /// the passkeys it holds; with one, the request names that account's credentials, and
    /// for a name without passkeys (or no account) a decoy derived from the name with the
    /// secret key, the same at every call: the answer does not tell which names exist.
    pub async fn passkey_login_start(
        &self,
        client: &Client,
        username: Option<&str>,
    ) -> Result<Ceremony, AuthError> {
        let webauthn = self.webauthn()?;
        let name = username.and_then(|u| tessera_entity::AccountName::parse(u).ok());
        let mut allowed = Vec::new();
        if let Some(name) = &name {
            if let Some(u) = accounts::find_account(&self.db, name).await?
                && !u.disabled
            {
                for k in passkey::of_user(&self.db, u.id).await? {
                    allowed.push(k.row.credential_id);
                }
            }
            if allowed.is_empty() {
                allowed.push(passkey::decoy(&self.settings.keys, name.key()));
            }
        }
        let (mut options, state) = webauthn
            .start_discoverable_authentication()
            .map_err(AuthError::internal)?;
        // A button press, not an autofill prompt.
        options.mediation = None;
        let mut options = serde_json::to_value(&options).map_err(AuthError::internal)?;
        if let Some(list) = options.pointer_mut("/publicKey/allowCredentials") {
            *list = allowed
                .iter()
                .map(|id| json!({ "type": "public-key", "id": id }))
                .collect();
        }
        self.begin(client, None, options, State::SignIn { state, allowed })
            .await
    }

    /// Finishes a sign-in without a password: a passkey checked with user verification is
    /// both factors, so the answer is a session. Every finish counts against the address
    /// (`login_ip`); a refusal never counts against the account (see below), and a locked
    /// account stays locked.
    pub async fn passkey_login_finish(
        &self,
        client: &Client,
        cookie: Option<&str>,
        credential: serde_json::Value,
    ) -> Result<SignedIn, AuthError> {
        let webauthn = self.webauthn()?.clone();
        throttle::throttle(&self.limiter, EventType::LoginIp, &client.key).await?;
        let credential = passkey::assertion(credential)?;
        let open = self.open(cookie).await?;
        let State::SignIn { state, allowed } = open.state else {
            return Err(AuthError::CeremonyExpired);
        };
        let found = passkey::by_credential(&self.db, credential.get_credential_id()).await?;
        let Some(mut stored) = found else {
            audit::record(Event::SignIn, Outcome::Failure, "");
            return Err(AuthError::InvalidCredentials);
        };
        let user = users::Entity::find_by_id(stored.row.user_id)
            .one(&self.db)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::InvalidCredentials)?;
        // A passkey does not open a locked account.
        lockout::ensure_unlocked(&self.settings, &user)?;
        let check = async {
            // The authenticator names the account (a discoverable passkey), or the request
            // named the credential.
            let named = match credential.get_user_unique_id() {
                Some(handle) => Uuid::from_slice(handle).ok() == Some(stored.row.user_handle),
                None => allowed.contains(&stored.row.credential_id),
            };
            if !named {
                return Ok(false);
            }
            let checked =
                webauthn.finish_discoverable_authentication_v2(&credential, state, &stored.passkey);
            self.passkey_checked(cookie, &mut stored, checked).await
        };
        // Without a first factor a refusal is not counted against the account: anyone can
        // learn a name's credential ids (the request names them), and a stranger's bad
        // assertions must not lock the owner out or spend the owner's second-factor budget.
        // They count per address (`login_ip`, above); a signature cannot be guessed.
        if !check.await? {
            metrics::counter!("tessera_logins_total", "outcome" => "failure").increment(1);
            audit::record(Event::SignIn, Outcome::Failure, &user.username);
            return Err(AuthError::InvalidCredentials);
        }
        // Both factors at once: a complete sign-in, which ends the count of failures.
        lockout::record_success(&self.db, user.id).await?;
        throttle::clear(&self.limiter, EventType::TwoFaAttempt, &user.username).await?;
        self.signed_in(&user, client, true).await
    }

    /// Begins the passkey step of a pending login (`mfa_token` and its challenge cookie).
    pub async fn passkey_second_factor_start(
        &self,
        client: &Client,
        mfa_token: &str,
        challenge: Option<&str>,
    ) -> Result<Ceremony, AuthError> {
        let webauthn = self.webauthn()?;
        let user = self
            .pending_user(TokenType::PreAuth, mfa_token, challenge)
            .await?;
        let keys: Vec<_> = passkey::of_user(&self.db, user.id)
            .await?
            .into_iter()
            .map(|k| k.passkey)
            .collect();
        if keys.is_empty() {
            return Err(AuthError::conflict(
                Conflict::NoPasskey,
                "this account has no passkey",
            ));
        }
        let (options, state) = webauthn
            .start_passkey_authentication(&keys)
            .map_err(AuthError::internal)?;
        let options = serde_json::to_value(&options).map_err(AuthError::internal)?;
        self.begin(client, Some(&user), options, State::SecondFactor { state })
            .await
    }

    /// The passkey check of a pending login's second factor: the browser's answer to the
    /// ceremony its cookie names, begun for `user`. True when it is right (the ceremony is
    /// then spent); false when it is not (it counts like a wrong code).
    pub(crate) async fn check_passkey_factor(
        &self,
        user: &users::Model,
        cookie: Option<&str>,
        credential: serde_json::Value,
    ) -> Result<bool, AuthError> {
        let webauthn = self.webauthn()?.clone();
        let credential = passkey::assertion(credential)?;
        let open = self.open(cookie).await?;
        let state = match open.state {
            State::SecondFactor { state } if open.username.as_ref() == Some(&user.username) => {
                state
            }
            _ => return Err(AuthError::CeremonyExpired),
        };
        let found = passkey::by_credential(&self.db, credential.get_credential_id()).await?;
        let Some(mut stored) = found.filter(|k| k.row.user_id == user.id) else {
            return Ok(false);
        };
        let checked = webauthn.finish_passkey_authentication(&credential, &state);
        self.passkey_checked(cookie, &mut stored, checked).await
    }

    /// After webauthn-rs checked an assertion of `stored`: on success the ceremony is
    /// spent and the new signature counter kept; a counter that went back (a copy of the
    /// authenticator, maybe) is refused and logged.
    async fn passkey_checked(
        &self,
        cookie: Option<&str>,
        stored: &mut Stored,
        checked: Result<webauthn_rs::prelude::AuthenticationResult, WebauthnError>,
    ) -> Result<bool, AuthError> {
        match checked {
            Ok(result) => {
                self.spend(cookie).await?;
                stored.passkey.update_credential(&result);
                passkey::record_use(&self.db, stored, result.counter(), self.settings.now())
                    .await?;
                Ok(true)
            }
            Err(e) if passkey::counter_went_back(&e) => {
                tracing::warn!(
                    passkey = %stored.row.id,
                    user_id = stored.row.user_id,
                    stored_count = stored.row.sign_count,
                    "passkey refused: its signature counter went back (a cloned authenticator?)"
                );
                Ok(false)
            }
            Err(e) => {
                tracing::info!(passkey = %stored.row.id, error = %e, "passkey assertion refused");
                Ok(false)
            }
        }
    }
}

/// The name a passkey is given: trimmed, 1 to 64 characters, "Passkey" when none.
fn passkey_name(name: Option<String>) -> Result<String, AuthError> {
    let name = name.map(|n| n.trim().to_owned()).unwrap_or_default();
    if name.is_empty() {
        return Ok("Passkey".to_owned());
    }
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(AuthError::invalid(
            "name",
            format!("a passkey's name is 1 to {MAX_NAME} characters, without control characters"),
        ));
    }
    Ok(name)
}
