//! Second factors: TOTP ([`totp`]), backup codes ([`backup`]) and mailed codes
//! ([`email`]), with the codes themselves in [`codes`].

pub mod backup;
pub mod codes;
pub mod email;
pub mod totp;
