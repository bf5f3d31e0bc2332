//! `auth_ephemeral_tokens`: one row per live single-use token.
//!
//! The plaintext token is never stored: `token_hash` is its SHA-256, and `sealed` holds the
//! kind's secret payload as one AEAD ciphertext under a key derived from the token itself.

use sea_orm::entity::prelude::*;

/// A stored token.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "auth_ephemeral_tokens")]
pub struct Model {
    /// Surrogate key; purge deletes by it in bounded batches.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// SHA-256 of the token (unique).
    #[sea_orm(unique)]
    pub token_hash: Vec<u8>,
    /// [`crate::TokenType`] as its snake_case name.
    pub token_type: String,
    /// The user the token speaks for.
    pub username: Option<String>,
    /// The OIDC provider of an `oidc_state` token.
    pub provider_id: Option<String>,
    /// SHA-256 of the challenge the token is bound to.
    pub challenge_hash: Option<Vec<u8>>,
    /// The sealed payload (nonce, code_verifier, code_hash, data).
    pub sealed: Vec<u8>,
    /// After this instant, by the database's clock, the token is dead.
    pub expires_at: DateTimeUtc,
    /// When it was issued, by the database's clock.
    pub created_at: DateTimeUtc,
}

/// No relations: tokens stand alone.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
