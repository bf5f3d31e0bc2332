//! [`AuthError`]: everything the login domain can answer besides success. The HTTP layer
//! maps each variant to a status and a stable code in one table; nothing here knows HTTP.

use std::time::Duration;
use tessera_limiter::{Decision, LimiterError};
use tessera_store::StoreError;

/// A state that does not allow the step now. Each has a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum Conflict {
    /// An account of that name exists.
    UsernameTaken,
    /// The address has its share of accounts ([`crate::accounts::ACCOUNTS_PER_ADDRESS`]).
    TooManyAccountsForAddress,
    /// TOTP is on already.
    TotpAlreadyEnabled,
    /// No TOTP setup in progress for this caller.
    TotpNotSetUp,
    /// TOTP is off.
    TotpNotEnabled,
    /// Email codes are off.
    EmailOtpNotEnabled,
    /// The account has no mail address.
    EmailMissing,
    /// An OpenID provider of that name exists.
    ProviderExists,
    /// A magic link cannot sign in an account whose only second factor is mailed codes.
    MagicLinkNotAllowed,
    /// The public URL names no host a browser accepts as a passkey's relying party.
    PasskeysUnavailable,
    /// That passkey is registered already.
    PasskeyExists,
    /// The account holds [`crate::factors::passkey::MAX_PASSKEYS`] passkeys.
    TooManyPasskeys,
    /// The account has no passkey.
    NoPasskey,
}

impl Conflict {
    /// The stable code (`username_taken`, ...).
    pub fn code(self) -> &'static str {
        self.into()
    }
}

/// Everything the login domain can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password or disabled account: one answer for all.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many second-factor failures: locked for `seconds` more.
    #[error("account locked for {seconds} s")]
    Locked {
        /// Seconds until the lock ends.
        seconds: u64,
    },
    /// A rate limit refused the attempt.
    #[error("rate limited ({event})")]
    RateLimited {
        /// The limited event.
        event: String,
        /// The limiter's decision.
        decision: Decision,
        /// The policy's window.
        window: Duration,
    },
    /// A wrong, expired or replayed second-factor code.
    #[error("invalid code")]
    InvalidCode,
    /// The pending login (`mfa_token` and its challenge) is unknown, expired, used or
    /// missing.
    #[error("pending login expired")]
    PendingLoginExpired,
    /// The passkey ceremony (its `webauthn` token and the cookie that names it) is unknown,
    /// expired, finished, or another browser's.
    #[error("passkey ceremony expired")]
    CeremonyExpired,
    /// A passkey the account does not have (by its public id).
    #[error("no such passkey")]
    UnknownPasskey,
    /// No live session.
    #[error("not signed in")]
    NotSignedIn,
    /// A token handed to a browser (password reset, OIDC exchange) that is unknown,
    /// expired or used.
    #[error("invalid or expired token")]
    TokenRejected,
    /// The state does not allow this now.
    #[error("{detail}")]
    Conflict {
        /// Which conflict.
        kind: Conflict,
        /// Why, for a person.
        detail: String,
    },
    /// An input the domain refuses (a name, an address, a password).
    #[error("invalid `{field}`: {detail}")]
    Invalid {
        /// The field it came in.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// Registration is switched off.
    #[error("registration is switched off (TESSERA_REGISTRATION=false)")]
    RegistrationDisabled,
    /// Magic links are switched off.
    #[error("magic links are switched off (TESSERA_MAGIC_LINKS=false)")]
    MagicLinksDisabled,
    /// No OpenID provider of that name.
    #[error("unknown provider")]
    UnknownProvider,
    /// The hashing queue is full: refused before any work.
    #[error("overloaded")]
    Overloaded,
    /// The database, the token store or the limiter cannot be reached.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] tessera_backend::BackendError),
    /// Mail could not be sent.
    #[error("mail unavailable: {0}")]
    MailUnavailable(#[from] crate::mail::MailError),
    /// Anything else; the cause is for the log.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AuthError {
    /// A refused input.
    pub fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        AuthError::Invalid {
            field,
            detail: detail.into(),
        }
    }

    /// A conflict with its explanation.
    pub fn conflict(kind: Conflict, detail: impl Into<String>) -> Self {
        AuthError::Conflict {
            kind,
            detail: detail.into(),
        }
    }

    /// An internal failure described by `message`.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        AuthError::Internal(message.to_string().into())
    }
}

impl From<sea_orm::DbErr> for AuthError {
    fn from(e: sea_orm::DbErr) -> Self {
        match tessera_backend::BackendError::from(e) {
            e if e.is_unreachable() => AuthError::Unavailable(e),
            e => AuthError::Internal(Box::new(e)),
        }
    }
}

impl From<StoreError> for AuthError {
    /// A token that does not hold is [`AuthError::TokenRejected`] unless the caller names
    /// what it means there ([`token_error`]).
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidOrExpired => AuthError::TokenRejected,
            StoreError::Unavailable(m) => AuthError::Unavailable(m),
            e @ StoreError::Backend(_) => AuthError::Internal(Box::new(e)),
        }
    }
}

impl From<LimiterError> for AuthError {
    fn from(e: LimiterError) -> Self {
        match e {
            LimiterError::Unavailable(m) => AuthError::Unavailable(m),
            // The domain's own events and keys: anything else is a bug here.
            e => AuthError::Internal(Box::new(e)),
        }
    }
}

/// A token store error where "invalid or expired" means `instead` to this step.
pub fn token_error(e: StoreError, instead: AuthError) -> AuthError {
    match e {
        StoreError::InvalidOrExpired => instead,
        other => other.into(),
    }
}
