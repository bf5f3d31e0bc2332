//! The login flows as methods of [`Auth`]: each takes what a browser sent (cookie values,
//! a token, a code) and answers an outcome; the HTTP service sets the cookies.
//!
//! Every step may land on a different worker: what one step hands to the next is a token
//! in the store (`pre_auth`, `mfa_enforce`, `totp_setup`, `email_otp_setup`,
//! `password_reset`, `email_change`, `oidc_state`, `oidc_exchange`, `webauthn`), bound to a challenge the browser
//! holds in an HttpOnly cookie where a script could otherwise steal it.

mod account;
mod common;
mod email_otp;
mod links;
mod login;
mod magic;
pub mod oidc;
mod overview;
mod passkeys;
mod reset;
mod second_factor;
mod totp;
mod visits;

pub use crate::sessions::SessionCheck;
pub use account::Proof;
pub use common::{Client, LoginOutcome, Pending, SignedIn};
pub use email_otp::EmailOtpSetup;
pub use oidc::{CallbackOutcome, OidcStart};
pub use overview::{AccountOverview, SignInOptions};
pub use passkeys::{Ceremony, PasskeyInfo};
pub use reset::PasswordReset;
pub use second_factor::Factor;
pub use totp::{TotpSetup, TotpStatus};
