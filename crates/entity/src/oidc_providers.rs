//! `oidc_providers`: the OpenID providers users may sign in with.

use sea_orm::entity::prelude::*;

/// One provider.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "oidc_providers")]
pub struct Model {
    /// Surrogate key; the `provider_id` of `oidc_state` tokens.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The name in the routes (`/auth/oidc/{name}/start`), unique.
    #[sea_orm(unique)]
    pub name: String,
    /// The issuer URL; discovery is fetched from it.
    pub issuer: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// The client secret, encrypted; `None` for a public client.
    pub client_secret: Option<Vec<u8>>,
    /// Scopes asked for, space-separated.
    pub scopes: String,
    /// Trust the provider's authentication: no local second factor after it.
    pub skip_local_mfa: bool,
    /// When it was added.
    pub created_at: DateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
