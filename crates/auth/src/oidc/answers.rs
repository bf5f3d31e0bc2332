//! What a provider's answer comes to: who signed in, or why the callback failed.

/// Who the provider says signed in.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `sub`.
    pub subject: String,
    /// `email`.
    pub email: Option<String>,
    /// `preferred_username`.
    pub preferred_username: Option<String>,
}

/// Why a callback failed: the stable code after `#oidc_error=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum OidcFailure {
    /// The provider answered `error=access_denied` (the user declined).
    AccessDenied,
    /// The provider answered another `error=`.
    ProviderError,
    /// No such provider.
    UnknownProvider,
    /// No `state`, or a state that is unknown, expired, used, or bound to another browser.
    InvalidState,
    /// The `tessera_oidc` cookie is missing.
    MissingCookie,
    /// The callback's `iss` is not the provider's issuer (mix-up defence, RFC 9207).
    IssuerMismatch,
    /// No `code` in the callback.
    MissingCode,
    /// The provider refused the code.
    CodeRejected,
    /// The ID token failed a check (signature, iss, aud, exp, nonce) or was missing.
    InvalidIdToken,
    /// The provider did not answer in time, or its discovery document is unusable.
    ProviderUnavailable,
    /// No account is linked and creating one is switched off.
    UserCreationDisabled,
    /// The linked account is disabled.
    AccountDisabled,
    /// Tessera's own store failed.
    ServerError,
}

impl OidcFailure {
    /// The code.
    pub fn code(self) -> &'static str {
        self.into()
    }
}
