//! The sets of token kinds and rate-limit event kinds.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use strum::{Display, EnumIter, EnumString, IntoStaticStr};

/// The kind of an ephemeral token, stored as its snake_case name.
///
/// The built-in kinds are the ones the login flows use; [`TokenType::Custom`] is an
/// application's own kind (`x_NAME`), issued and consumed through `/v1` only. A row of one
/// kind can never be consumed as another: the kind is part of every lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// Password accepted, second factor pending: carries the username and a challenge.
    PreAuth,
    /// An OIDC login in flight: provider, nonce and PKCE verifier.
    OidcState,
    /// Hands a finished OIDC login from the callback to the application.
    OidcExchange,
    /// A password-reset link.
    PasswordReset,
    /// An email second factor being set up: the hash of the mailed code.
    EmailOtpSetup,
    /// A one-time download link for a resource.
    Download,
    /// Login stopped until the user sets up the second factor an admin enforces.
    MfaEnforce,
    /// A TOTP setup in progress: the pending secret and backup codes, bound to the session
    /// (or enforcement login) that asked for it, so nobody else can confirm or read them.
    TotpSetup,
    /// A new mail address waiting for its owner to confirm it: the address in `data`.
    EmailChange,
    /// A sign-in link mailed to an account's address.
    MagicLink,
    /// A WebAuthn ceremony in flight (a passkey being registered, or a sign-in with one):
    /// the ceremony state in `data`, bound to the browser's `tessera_webauthn` cookie.
    Webauthn,
    /// An application's own kind, `x_` and 1 to 32 of `[a-z0-9_]`: it carries a username, a
    /// challenge and data, nothing else.
    Custom(CustomKind),
}

/// The name of an application's own token kind: `x_` followed by 1 to 32 characters of
/// `[a-z0-9_]`, kept inline so that [`TokenType`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CustomKind {
    len: u8,
    name: [u8; CustomKind::MAX_LEN],
}

impl CustomKind {
    /// The prefix every custom kind's name starts with.
    pub const NAME_PREFIX: &'static str = "x_";
    /// The longest name: the prefix and 32 characters.
    pub const MAX_LEN: usize = 2 + 32;
    /// The name's pattern, for documents that describe it.
    pub const PATTERN: &'static str = "x_[a-z0-9_]{1,32}";

    /// Checks and keeps a custom kind's name (`x_NAME`).
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(Self::NAME_PREFIX)?;
        let valid = (1..=Self::MAX_LEN - 2).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return None;
        }
        let mut kind = CustomKind {
            len: name.len() as u8,
            name: [0; Self::MAX_LEN],
        };
        kind.name[..name.len()].copy_from_slice(name.as_bytes());
        Some(kind)
    }

    /// The name, `x_` included.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (see `parse`), so this never falls back.
        std::str::from_utf8(&self.name[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Debug for CustomKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomKind({})", self.as_str())
    }
}

/// Why a string names no token kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a token kind: one of {} or {}",
    TokenType::builtin_names(),
    CustomKind::PATTERN
)]
pub struct UnknownTokenType;

impl TokenType {
    /// The kinds Tessera itself knows, in the order DESIGN lists them.
    pub const BUILTIN: [TokenType; 11] = [
        TokenType::PreAuth,
        TokenType::OidcState,
        TokenType::OidcExchange,
        TokenType::PasswordReset,
        TokenType::EmailOtpSetup,
        TokenType::Download,
        TokenType::MfaEnforce,
        TokenType::TotpSetup,
        TokenType::EmailChange,
        TokenType::MagicLink,
        TokenType::Webauthn,
    ];

    /// The kind's stored name.
    pub fn as_str(&self) -> &str {
        match self {
            TokenType::Custom(c) => c.as_str(),
            builtin => builtin.builtin_name().unwrap_or_default(),
        }
    }

    /// The name of a built-in kind, for labels that must be static; `None` for an
    /// application's own kind.
    pub const fn builtin_name(self) -> Option<&'static str> {
        Some(match self {
            TokenType::PreAuth => "pre_auth",
            TokenType::OidcState => "oidc_state",
            TokenType::OidcExchange => "oidc_exchange",
            TokenType::PasswordReset => "password_reset",
            TokenType::EmailOtpSetup => "email_otp_setup",
            TokenType::Download => "download",
            TokenType::MfaEnforce => "mfa_enforce",
            TokenType::TotpSetup => "totp_setup",
            TokenType::EmailChange => "email_change",
            TokenType::MagicLink => "magic_link",
            TokenType::Webauthn => "webauthn",
            TokenType::Custom(_) => return None,
        })
    }

    /// Whether this is an application's own kind.
    pub const fn is_custom(&self) -> bool {
        matches!(self, TokenType::Custom(_))
    }

    fn builtin_names() -> String {
        let names: Vec<&str> = Self::BUILTIN.iter().map(|t| t.as_str()).collect();
        names.join(", ")
    }

    /// The readable prefix of tokens of this kind, so secret scanners recognise a leak.
    /// Every custom kind shares `tsr_x_`; the kind still takes part in every lookup.
    pub const fn prefix(self) -> &'static str {
        match self {
            TokenType::PreAuth => "tsr_pa_",
            TokenType::OidcState => "tsr_os_",
            TokenType::OidcExchange => "tsr_ox_",
            TokenType::PasswordReset => "tsr_pr_",
            TokenType::EmailOtpSetup => "tsr_eo_",
            TokenType::Download => "tsr_dl_",
            TokenType::MfaEnforce => "tsr_me_",
            TokenType::TotpSetup => "tsr_ts_",
            TokenType::EmailChange => "tsr_ec_",
            TokenType::MagicLink => "tsr_ml_",
            TokenType::Webauthn => "tsr_wa_",
            TokenType::Custom(_) => "tsr_x_",
        }
    }

    /// How long a token of this kind lives unless the issuer says otherwise.
    pub const fn default_ttl_seconds(self) -> u64 {
        match self {
            TokenType::PreAuth | TokenType::MfaEnforce => 5 * 60,
            TokenType::OidcState => 10 * 60,
            TokenType::OidcExchange => 60,
            TokenType::PasswordReset | TokenType::EmailChange => 60 * 60,
            TokenType::EmailOtpSetup | TokenType::TotpSetup => 10 * 60,
            TokenType::Download | TokenType::Webauthn => 5 * 60,
            TokenType::MagicLink => 15 * 60,
            TokenType::Custom(_) => 10 * 60,
        }
    }
}

impl AsRef<str> for TokenType {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for TokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TokenType {
    type Err = UnknownTokenType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::BUILTIN
            .into_iter()
            .find(|t| t.as_str() == s)
            .or_else(|| CustomKind::parse(s).map(TokenType::Custom))
            .ok_or(UnknownTokenType)
    }
}

impl Serialize for TokenType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TokenType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The kind of a rate-limited event, named as the limiter and `TESSERA_RATE_LIMITS` know
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Display, EnumString, IntoStaticStr, EnumIter)]
pub enum EventType {
    /// A failed second-factor check, per user.
    #[strum(serialize = "2fa_attempt")]
    TwoFaAttempt,
    /// A mail with a code sent to a user.
    #[strum(serialize = "email_send")]
    EmailSend,
    /// A failed password check, per username.
    #[strum(serialize = "login_attempt")]
    LoginAttempt,
    /// Every login request, per client IP.
    #[strum(serialize = "login_ip")]
    LoginIp,
    /// A password-reset mail, per user.
    #[strum(serialize = "password_reset_send")]
    PasswordResetSend,
    /// A password-reset request, per client IP.
    #[strum(serialize = "password_reset_ip")]
    PasswordResetIp,
    /// A failed password check, per username and client IP.
    #[strum(serialize = "login_user_ip")]
    LoginUserIp,
    /// A second-factor attempt on one pending login (`mfa_token`), keyed by the token's
    /// hash: the pending login is spent when its policy is exhausted.
    #[strum(serialize = "mfa_token_attempt")]
    MfaTokenAttempt,
    /// Any mail Tessera sends, per destination address (several accounts may share one).
    #[strum(serialize = "mail_to_address")]
    MailToAddress,
    /// An OIDC login started, per client IP (each one stores an `oidc_state` row).
    #[strum(serialize = "oidc_start_ip")]
    OidcStartIp,
    /// A magic link asked for, per client IP.
    #[strum(serialize = "magic_link_ip")]
    MagicLinkIp,
    /// A passkey ceremony started, per client IP (each one stores a `webauthn` row).
    #[strum(serialize = "passkey_ip")]
    PasskeyIp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use strum::IntoEnumIterator;

    #[test]
    fn token_types_are_stored_as_their_design_names() {
        let names: Vec<String> = TokenType::BUILTIN.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            names,
            [
                "pre_auth",
                "oidc_state",
                "oidc_exchange",
                "password_reset",
                "email_otp_setup",
                "download",
                "mfa_enforce",
                "totp_setup",
                "email_change",
                "magic_link",
                "webauthn"
            ]
        );
        for t in TokenType::BUILTIN {
            assert!(!t.is_custom());
            assert_eq!(t.to_string().parse::<TokenType>().unwrap(), t);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{t}\""));
        }
    }

    #[test]
    fn event_types_are_stored_as_their_design_names() {
        let names: Vec<&str> = EventType::iter().map(<&str>::from).collect();
        assert_eq!(
            names,
            [
                "2fa_attempt",
                "email_send",
                "login_attempt",
                "login_ip",
                "password_reset_send",
                "password_reset_ip",
                "login_user_ip",
                "mfa_token_attempt",
                "mail_to_address",
                "oidc_start_ip",
                "magic_link_ip",
                "passkey_ip"
            ]
        );
        for e in EventType::iter() {
            assert_eq!(e.to_string().parse::<EventType>().unwrap(), e);
        }
    }

    #[test]
    fn prefixes_are_distinct() {
        let custom = TokenType::Custom(CustomKind::parse("x_a").unwrap());
        let all: Vec<TokenType> = TokenType::BUILTIN.into_iter().chain([custom]).collect();
        let prefixes: HashSet<&str> = all.iter().map(|t| t.prefix()).collect();
        assert_eq!(prefixes.len(), all.len());
    }

    #[test]
    fn custom_kinds_are_x_and_1_to_32_of_a_z_0_9_underscore() {
        for name in [
            "x_a",
            "x_invite",
            "x_2fa_step_2",
            &format!("x_{}", "z".repeat(32)),
        ] {
            let kind: TokenType = name.parse().unwrap();
            assert_eq!(kind, TokenType::Custom(CustomKind::parse(name).unwrap()));
            assert_eq!(kind.to_string(), name);
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<TokenType>(&format!("\"{name}\"")).unwrap(),
                kind
            );
            assert!(kind.is_custom());
        }
        let too_long = format!("x_{}", "z".repeat(33));
        for name in [
            "x_", "x", "y_a", "x_A", "x_a-b", "x_é", "X_a", " x_a", &too_long,
        ] {
            assert!(name.parse::<TokenType>().is_err(), "{name:?} was accepted");
        }
        assert_ne!(
            "x_a".parse::<TokenType>().unwrap(),
            "x_b".parse::<TokenType>().unwrap()
        );
    }
}
