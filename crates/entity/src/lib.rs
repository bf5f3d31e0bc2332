//! Tessera's data model: the sea-orm entities of the account tables, the closed
//! sets of token and event kinds, and the secret-handling of tokens themselves.
//!
//! What this crate guarantees:
//!
//! - A token is 32 bytes from the operating system's generator, base64url-encoded behind a
//!   short readable prefix per kind (`tsr_pa_` for `pre_auth`, ...), so that a leaked token
//!   is recognisable by secret scanners. [`Token`] never prints its secret.
//! - Only the SHA-256 of a token ([`TokenHash`]) is meant to be stored.
//! - Each kind of token has exactly one constructor on [`AuthEphemeralToken`], taking exactly
//!   the fields that kind needs: a `pre_auth` token without a username, or an `oidc_state`
//!   without its PKCE verifier, does not compile.
//!
//! # Layout
//!
//! - [`kinds`]: [`TokenType`] and [`EventType`], stored as their snake_case names.
//! - [`token`]: [`Token`] generation and parsing, [`TokenHash`], [`Challenge`].
//! - [`new_token`]: [`AuthEphemeralToken`], the typed constructors, [`Username`].
//! - [`account`]: [`AccountName`], an account's name normalised, and the key it is found by.
//! - [`users`], [`sessions`], [`totp_usage`], [`backup_codes`], [`email_otp_codes`],
//!   [`oidc_providers`], [`oidc_identities`]: the sea-orm entities of the login state.
//!   The token and rate-limit tables have none: their stores reach them with SQL of their
//!   own (`tessera-store`, `tessera-limiter`).

pub mod account;
pub mod backup_codes;
pub mod email_otp_codes;
pub mod kinds;
pub mod new_token;
pub mod oidc_identities;
pub mod oidc_providers;
pub mod passkeys;
pub mod sessions;
pub mod token;
pub mod totp_usage;
pub mod users;

pub use account::{AccountName, InvalidAccountName};
pub use kinds::{CustomKind, EventType, TokenType, UnknownTokenType};
pub use new_token::{AuthEphemeralToken, InvalidUsername, Payload, Username};
pub use token::{Challenge, ChallengeHash, Token, TokenHash, hex};
