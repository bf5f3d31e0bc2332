//! `totp_usage`: the TOTP windows already used, one row per user and window, so that a code
//! is accepted once (RFC 6238 §5.2).

use sea_orm::entity::prelude::*;

/// One accepted TOTP code.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "totp_usage")]
pub struct Model {
    /// Surrogate key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The user (`users.id`).
    pub user_id: i64,
    /// The accepted code (spent: worthless once recorded).
    pub code: String,
    /// The 30-second window the code belongs to (Unix time / 30); unique per user.
    pub time_step: i64,
    /// When it was accepted; purge keeps rows well past the accepted skew.
    pub used_at: DateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
