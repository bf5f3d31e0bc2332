//! Second factors: TOTP ([`totp`]), backup codes ([`backup`]), mailed codes ([`email`])
//! and passkeys ([`passkey`]), with the codes themselves in [`codes`].

pub mod backup;
pub mod codes;
pub mod email;
pub mod passkey;
pub mod totp;
