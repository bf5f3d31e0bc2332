//! `backup_codes`: single-use recovery codes, stored as argon2id hashes.

use sea_orm::entity::prelude::*;

/// One backup code.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "backup_codes")]
pub struct Model {
    /// Surrogate key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The user (`users.id`).
    pub user_id: i64,
    /// argon2id PHC string of the normalised code.
    pub code_hash: String,
    /// When it was used; a used code never counts again.
    pub used_at: Option<DateTimeUtc>,
    /// When it was generated.
    pub created_at: DateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
