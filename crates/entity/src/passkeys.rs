//! `passkeys`: the WebAuthn credentials of an account.

use sea_orm::entity::prelude::*;

/// One registered passkey.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "passkeys")]
pub struct Model {
    /// The public id (the list and `remove` name it by this).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The account (`users.id`).
    pub user_id: i64,
    /// The credential id, base64url without padding; unique.
    pub credential_id: String,
    /// The WebAuthn user handle it was registered under.
    pub user_handle: Uuid,
    /// The credential as webauthn-rs serialises it (public key, flags): JSON, not secret.
    pub credential: String,
    /// The highest signature counter seen; a sign-in must raise it (unless both are 0).
    pub sign_count: i64,
    /// What the holder calls it.
    pub name: String,
    /// When it was registered.
    pub created_at: DateTimeUtc,
    /// When it last signed in.
    pub last_used_at: Option<DateTimeUtc>,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
