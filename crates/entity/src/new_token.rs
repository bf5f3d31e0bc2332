//! Tokens about to be issued, with one typed constructor per kind.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

use crate::{Challenge, CustomKind, TokenType};

/// A user name: 1 to 255 characters, none of them a control character.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(String);

/// Why a string is not a [`Username`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a username is 1 to 255 characters without control characters")]
pub struct InvalidUsername;

impl Username {
    /// Checks and wraps a user name.
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidUsername> {
        let value = value.into();
        let len = value.chars().count();
        if (1..=255).contains(&len) && !value.chars().any(char::is_control) {
            Ok(Username(value))
        } else {
            Err(InvalidUsername)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Username {
    type Error = InvalidUsername;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Username::parse(value)
    }
}

impl<'de> Deserialize<'de> for Username {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Username::parse(s).map_err(serde::de::Error::custom)
    }
}

/// The secret part of a token's record. The store seals it (AEAD, under a key derived from
/// the token) before it reaches any backend, so a dump of the store shows none of it.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// OIDC nonce (`oidc_state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// PKCE code verifier (`oidc_state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_verifier: Option<String>,
    /// Hash of a mailed code (`email_otp_setup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_hash: Option<String>,
    /// Free-form data (`download`: the resource; `oidc_state`: `return_to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// The issuer gave `provider_id` as a number: it is answered as one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub provider_id_is_number: bool,
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Payload(<sealed>)")
    }
}

/// A token to issue: its kind and exactly the fields that kind carries.
///
/// The only way to build one is the constructor of its kind, so a token can never miss a
/// field its consumer relies on:
///
/// ```
/// use tessera_entity::{AuthEphemeralToken, Challenge, Username};
/// let alice = Username::parse("alice").unwrap();
/// let t = AuthEphemeralToken::new_pre_auth(alice, Some(Challenge::generate()));
/// assert_eq!(t.kind().to_string(), "pre_auth");
/// ```
///
/// A `pre_auth` token without a username does not compile:
///
/// ```compile_fail
/// use tessera_entity::AuthEphemeralToken;
/// let t = AuthEphemeralToken::new_pre_auth(None);
/// ```
///
/// nor does an `oidc_state` without its PKCE verifier:
///
/// ```compile_fail
/// use tessera_entity::AuthEphemeralToken;
/// let t = AuthEphemeralToken::new_oidc_state("1", "nonce".to_string());
/// ```
///
/// nor a record built field by field:
///
/// ```compile_fail
/// use tessera_entity::{AuthEphemeralToken, TokenType};
/// let t = AuthEphemeralToken { kind: TokenType::PreAuth, ..Default::default() };
/// ```
#[derive(Debug, Clone)]
pub struct AuthEphemeralToken {
    kind: TokenType,
    username: Option<Username>,
    provider_id: Option<String>,
    challenge: Option<Challenge>,
    payload: Payload,
    ttl: Option<Duration>,
}

impl AuthEphemeralToken {
    fn base(kind: TokenType) -> Self {
        AuthEphemeralToken {
            kind,
            username: None,
            provider_id: None,
            challenge: None,
            payload: Payload::default(),
            ttl: None,
        }
    }

    /// Password accepted, second factor pending. The challenge, when given, is the value of
    /// the HttpOnly cookie the token is bound to.
    pub fn new_pre_auth(username: Username, challenge: Option<Challenge>) -> Self {
        AuthEphemeralToken {
            username: Some(username),
            challenge,
            ..Self::base(TokenType::PreAuth)
        }
    }

    /// An OIDC login in flight: the provider, the nonce expected in the ID token and the PKCE
    /// verifier for the code exchange.
    pub fn new_oidc_state(
        provider_id: impl Into<String>,
        nonce: String,
        code_verifier: String,
    ) -> Self {
        let mut t = Self::base(TokenType::OidcState);
        t.provider_id = Some(provider_id.into());
        t.payload.nonce = Some(nonce);
        t.payload.code_verifier = Some(code_verifier);
        t
    }

    /// A finished OIDC login, to be exchanged for a session.
    pub fn new_oidc_exchange(username: Username) -> Self {
        AuthEphemeralToken {
            username: Some(username),
            ..Self::base(TokenType::OidcExchange)
        }
    }

    /// A password-reset link.
    pub fn new_password_reset(username: Username) -> Self {
        AuthEphemeralToken {
            username: Some(username),
            ..Self::base(TokenType::PasswordReset)
        }
    }

    /// Email OTP being set up: the hash of the code that was mailed.
    pub fn new_email_otp_setup(username: Username, code_hash: String) -> Self {
        let mut t = Self::base(TokenType::EmailOtpSetup);
        t.username = Some(username);
        t.payload.code_hash = Some(code_hash);
        t
    }

    /// A one-time download of `resource`.
    pub fn new_download(username: Username, resource: serde_json::Value) -> Self {
        let mut t = Self::base(TokenType::Download);
        t.username = Some(username);
        t.payload.data = Some(resource);
        t
    }

    /// MFA enforced by an admin: opens enforce-setup and enforce-confirm, nothing else.
    pub fn new_mfa_enforce(username: Username, challenge: Challenge) -> Self {
        AuthEphemeralToken {
            username: Some(username),
            challenge: Some(challenge),
            ..Self::base(TokenType::MfaEnforce)
        }
    }

    /// A TOTP setup in progress: the pending secret and backup codes in `data` (sealed like
    /// every payload), bound to `challenge`, the value of the session or enforcement cookie
    /// of whoever asked for it.
    pub fn new_totp_setup(
        username: Username,
        challenge: Challenge,
        data: serde_json::Value,
    ) -> Self {
        let mut t = Self::base(TokenType::TotpSetup);
        t.username = Some(username);
        t.challenge = Some(challenge);
        t.payload.data = Some(data);
        t
    }

    /// A change of `username`'s mail address to `email`, confirmed by a link mailed there.
    pub fn new_email_change(username: Username, email: String) -> Self {
        let mut t = Self::base(TokenType::EmailChange);
        t.username = Some(username);
        t.payload.data = Some(serde_json::json!({ "email": email }));
        t
    }

    /// A sign-in link for `username`.
    pub fn new_magic_link(username: Username) -> Self {
        let mut t = Self::base(TokenType::MagicLink);
        t.username = Some(username);
        t
    }

    /// A WebAuthn ceremony in flight: its state in `data` (sealed like every payload), for
    /// `username` when the ceremony is for a known account (a registration, a second
    /// factor), none for a passwordless sign-in.
    pub fn new_webauthn(username: Option<Username>, data: serde_json::Value) -> Self {
        let mut t = Self::base(TokenType::Webauthn);
        t.username = username;
        t.payload.data = Some(data);
        t
    }

    /// A token of an application's own kind: a username if the application wants to revoke
    /// its tokens by user; a challenge and data are added with [`Self::with_challenge`] and
    /// [`Self::with_data`].
    pub fn new_custom(kind: CustomKind, username: Option<Username>) -> Self {
        AuthEphemeralToken {
            username,
            ..Self::base(TokenType::Custom(kind))
        }
    }

    /// Binds the token to a challenge: consuming or peeking then requires the same value.
    pub fn with_challenge(mut self, challenge: Challenge) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// Records that `provider_id` was given as a number, so it is answered as one.
    pub fn with_numeric_provider_id(mut self) -> Self {
        self.payload.provider_id_is_number = true;
        self
    }

    /// Attaches free-form data (for example `return_to` of an OIDC login).
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.payload.data = Some(data);
        self
    }

    /// Sets the lifetime; without it the kind's default applies.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The kind.
    pub fn kind(&self) -> TokenType {
        self.kind
    }

    /// The user the token speaks for, if the kind has one.
    pub fn username(&self) -> Option<&Username> {
        self.username.as_ref()
    }

    /// The OIDC provider (`oidc_state`).
    pub fn provider_id(&self) -> Option<&str> {
        self.provider_id.as_deref()
    }

    /// The challenge the token is bound to, if any.
    pub fn challenge(&self) -> Option<&Challenge> {
        self.challenge.as_ref()
    }

    /// The secret payload, sealed by the store.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The lifetime: the one given, or the kind's default.
    pub fn ttl(&self) -> Duration {
        self.ttl
            .unwrap_or(Duration::from_secs(self.kind.default_ttl_seconds()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_checked() {
        assert!(Username::parse("alice").is_ok());
        assert!(Username::parse("").is_err());
        assert!(Username::parse("a\nb").is_err());
        assert!(Username::parse("x".repeat(256)).is_err());
        assert!(Username::parse("é".repeat(255)).is_ok());
    }

    #[test]
    fn constructors_fill_exactly_their_kind() {
        let u = || Username::parse("bob").unwrap();
        let s = AuthEphemeralToken::new_oidc_state("7", "n".into(), "v".into());
        assert_eq!(s.kind(), TokenType::OidcState);
        assert_eq!(s.provider_id(), Some("7"));
        assert!(s.username().is_none());
        assert_eq!(s.payload().code_verifier.as_deref(), Some("v"));
        let e = AuthEphemeralToken::new_mfa_enforce(u(), Challenge::new("c"));
        assert_eq!(e.kind(), TokenType::MfaEnforce);
        assert!(e.challenge().is_some());
        let d = AuthEphemeralToken::new_download(u(), serde_json::json!("/r"));
        assert_eq!(d.payload().data, Some(serde_json::json!("/r")));
        assert_eq!(d.ttl(), Duration::from_secs(300));
        assert_eq!(
            d.with_ttl(Duration::from_secs(5)).ttl(),
            Duration::from_secs(5)
        );
    }
}
