//! `oidc_identities`: which local account a (provider, subject) signs in as.

use sea_orm::entity::prelude::*;

/// One link.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "oidc_identities")]
pub struct Model {
    /// Surrogate key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The provider (`oidc_providers.id`).
    pub provider_id: i64,
    /// The provider's `sub` claim; unique per provider.
    pub subject: String,
    /// The local account (`users.id`).
    pub user_id: i64,
    /// The address the provider gave at the first login.
    pub email: Option<String>,
    /// When the link was made.
    pub created_at: DateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
