//! The closed sets of token kinds and rate-limit event kinds.

use serde::{Deserialize, Serialize};
use strum::{AsRefStr, Display, EnumIter, EnumString, IntoStaticStr};

/// The kind of an ephemeral token, stored as its snake_case name.
///
/// A row of one kind can never be consumed as another: the kind is part of every lookup.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Display,
    EnumString,
    AsRefStr,
    IntoStaticStr,
    EnumIter,
    Serialize,
    Deserialize,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
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
}

impl TokenType {
    /// The readable prefix of tokens of this kind, so secret scanners recognise a leak.
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
            TokenType::Download => 5 * 60,
            TokenType::MagicLink => 15 * 60,
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use strum::IntoEnumIterator;

    #[test]
    fn token_types_are_stored_as_their_design_names() {
        let names: Vec<String> = TokenType::iter().map(|t| t.to_string()).collect();
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
                "magic_link"
            ]
        );
        for t in TokenType::iter() {
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
                "magic_link_ip"
            ]
        );
        for e in EventType::iter() {
            assert_eq!(e.to_string().parse::<EventType>().unwrap(), e);
        }
    }

    #[test]
    fn prefixes_are_distinct() {
        let prefixes: HashSet<&str> = TokenType::iter().map(TokenType::prefix).collect();
        assert_eq!(prefixes.len(), TokenType::iter().count());
    }
}
